"""pairing kernels of xcca (filled in by the pairing issue)."""
from __future__ import annotations

__all__: list[str] = []
