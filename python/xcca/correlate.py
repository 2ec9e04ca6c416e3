"""correlate kernels of xcca (filled in by the correlate issue)."""
from __future__ import annotations

__all__: list[str] = []
