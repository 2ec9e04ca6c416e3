"""``xcca.loki.utils.postproc_legendre``: LOKI's Legendre projection of correlations, LOKI's import path.

The functions are written in ``xcca._loki_legendre`` (the Legendre work, issue 13); this module only re-exports
them so that ``from loki.utils.postproc_legendre import ...`` becomes ``from xcca.loki.utils.postproc_legendre
import ...``.
"""
# ---- MERGE SPOT (lead): re-export LOKI's postproc_legendre from python/xcca/_loki_legendre.py ----
# Replace the guarded import below by the plain line once _loki_legendre.py is on the branch:
#     from ..._loki_legendre import *  # noqa: F401,F403
#     from ..._loki_legendre import __all__  # noqa: F401
try:
    from ..._loki_legendre import *  # noqa: F401,F403
    from ..._loki_legendre import __all__  # noqa: F401
except ImportError as _exc:  # not merged yet on this branch
    raise ImportError("xcca.loki.utils.postproc_legendre needs xcca._loki_legendre, which is not in this build "
                      "(the Legendre work lands separately)") from _exc
