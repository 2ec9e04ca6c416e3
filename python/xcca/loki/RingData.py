"""``xcca.loki.RingData``: LOKI's ``loki.RingData`` import path (``from loki.RingData import RingFit`` becomes
``from xcca.loki.RingData import RingFit``).

``RingFetch``, ``PolarTree`` and ``WeighAverage`` are not provided: RingFetch/PolarTree read LOKI's external
HDF5 neighbour-index files (use :class:`xcca.PolarGrid`, which samples rings exactly); WeighAverage (LOKI's
iterative re-weighting of interpolated correlations by a hand-tuned learning rate) is not ported.
"""
from . import DiffCorr, InterpSimple, RingFit  # noqa: F401
from ._radial import InterpCorr, RadialProfile  # noqa: F401

__all__ = ["InterpSimple", "DiffCorr", "RingFit", "RadialProfile", "InterpCorr"]
