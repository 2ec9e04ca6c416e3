"""polar kernels of xcca (filled in by the polar issue)."""
from __future__ import annotations

__all__: list[str] = []
