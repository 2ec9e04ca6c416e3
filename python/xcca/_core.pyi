"""Type stubs for the compiled module xcca._core (pybind11 over the C++ core)."""
from __future__ import annotations

def version() -> str: ...
def usable_cores() -> int: ...

# --- polar (issue 3) ---

# --- correlate (issue 4) ---

# --- pairing (issue 5) ---
