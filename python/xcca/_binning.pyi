"""Type stubs for the compiled module xcca._binning (Cython)."""
from __future__ import annotations
