"""``xcca.loki.utils.postproc_legendre``: LOKI's Legendre projection of correlations, LOKI's import path.

The functions are written in ``xcca._loki_legendre`` (the Legendre work, issue 13); this module only re-exports
them so that ``from loki.utils.postproc_legendre import ...`` becomes ``from xcca.loki.utils.postproc_legendre
import ...``.
"""
from ..._loki_legendre import *  # noqa: F401,F403
from ..._loki_legendre import __all__  # noqa: F401
