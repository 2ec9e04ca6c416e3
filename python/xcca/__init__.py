"""xcca: fast X-ray cross-correlation analysis (XCCA / correlated X-ray scattering) and detector thumbnails.

Masks everywhere follow LOKI's convention: True = valid pixel.
"""
from __future__ import annotations

import logging as _logging

from . import _core

__version__: str = _core.version()

_logging.getLogger(__name__).addHandler(_logging.NullHandler())

from . import datasets, io  # noqa: E402
from .binning import __all__ as _binning_all  # noqa: E402
from .binning import bin_max, bin_sum, dilate_max  # noqa: E402,F401
from .thumbnail import make_thumbnail, thumbnail_file  # noqa: E402,F401

from .polar import *  # noqa: E402,F401,F403
from .polar import __all__ as _polar_all  # noqa: E402
from .correlate import *  # noqa: E402,F401,F403
from .correlate import __all__ as _correlate_all  # noqa: E402
from .pairing import *  # noqa: E402,F401,F403
from .pairing import __all__ as _pairing_all  # noqa: E402
from .rings import *  # noqa: E402,F401,F403
from .rings import __all__ as _rings_all  # noqa: E402
from .ringfit import RingFitResult, fit_ring  # noqa: E402,F401
from .pipeline import AnalysisResult, analyze  # noqa: E402,F401
from .runcorr import RunCorrelation, RunCorrelator  # noqa: E402,F401
from .geometry import Geometry, GeometryPolarGrid  # noqa: E402,F401
from .legendre import (LegendreResult, legendre_decompose, legendre_exclude_mask, legendre_from_analysis,  # noqa: E402,F401
                       legendre_synthesize, write_legendre)

__all__ = [
    "__version__", "io", "datasets", *_binning_all, "make_thumbnail", "thumbnail_file",
    *_polar_all, *_correlate_all, *_pairing_all, *_rings_all,
    "fit_ring", "RingFitResult", "analyze", "AnalysisResult",
    "RunCorrelator", "RunCorrelation",
    "Geometry", "GeometryPolarGrid",
    "legendre_synthesize", "legendre_decompose", "legendre_exclude_mask", "LegendreResult", "legendre_from_analysis",
    "write_legendre",
]
