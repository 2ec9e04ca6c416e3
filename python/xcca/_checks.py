"""Argument checks shared by every public function (one rule each, one wording each).

Every check raises TypeError (wrong kind of object) or ValueError (right kind, bad value) with a message that
starts with the argument's name, so that the CLI can translate it into its flag.
"""
from __future__ import annotations

import numbers
import os
from typing import Any, Mapping, Optional

import numpy as np

__all__ = ["n_threads", "positive_int", "finite_real", "real_array", "no_overlap", "fill_value", "check_memory",
           "memory_limit"]

_TooHard = getattr(getattr(np, "exceptions", np), "TooHardError", Exception)

#: Largest accepted n_threads (the C++ core takes an int); values above the usable cores are capped at them.
MAX_THREADS = 2**31 - 1


def _type_name(value: Any) -> str:
    return type(value).__name__


def positive_int(value: Any, name: str, *, minimum: int = 1, maximum: Optional[int] = None) -> int:
    """`value` as an int in [minimum, maximum]; bool, float (even 2.0), str and other types are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r} ({_type_name(value)})")
    v = int(value)
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {v}")
    return v


def n_threads(value: Any, name: str = "n_threads") -> Optional[int]:
    """The one n_threads rule: None (all usable cores) or an int 1 .. 2**31 - 1 (capped at the usable cores by the
    core); bool, float, str and larger ints are refused."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be None or a positive int, got {value!r} ({_type_name(value)})")
    v = int(value)
    if v < 1:
        raise ValueError(f"{name} must be None or a positive int, got {v}")
    if v > MAX_THREADS:
        raise ValueError(f"{name} must be at most {MAX_THREADS} (more threads than cores are capped at the "
                         f"usable cores anyway), got {v}")
    return v


def finite_real(value: Any, name: str, *, positive: bool = False, allow_nan: bool = False) -> float:
    """A real number (not bool, complex or str) that is finite (and > 0 with positive=True)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {value!r} ({_type_name(value)})")
    v = float(value)
    if np.isnan(v) and allow_nan:
        return v
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if positive and not v > 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    return v


def real_array(value: Any, name: str) -> np.ndarray:
    """np.asarray(value), refusing complex, object, string and other non-numeric dtypes (never silently cast)."""
    try:
        a = np.asarray(value)
    except ValueError as exc:  # ragged nested sequences
        raise ValueError(f"{name} must be a rectangular numeric array: {exc}") from None
    if a.dtype.kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {a.dtype}")
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    return a


def no_overlap(out: Any, inputs: Mapping[str, Any], name: str = "out") -> None:
    """Refuse an output array that shares memory with an input: the kernels read their input while writing out,
    so an overlap silently computes from overwritten values. (xcca refuses rather than copies: out= exists to avoid
    allocations, and a hidden copy of the input would defeat it.)"""
    if not isinstance(out, np.ndarray):
        return
    for what, a in inputs.items():
        if not isinstance(a, np.ndarray):
            continue
        try:
            overlap = np.shares_memory(out, a, max_work=100_000)
        except _TooHard:  # pragma: no cover
            overlap = True  # cannot prove they are disjoint: refuse
        if overlap:
            raise ValueError(f"{name} overlaps the input {what} (they share memory); pass a separate output array "
                             f"or out=None")


def fill_value(value: Any, dtype: np.dtype, name: str = "fill") -> Any:
    """A fill value that the output dtype can hold exactly enough: NaN and +-inf are kept for floats, but a finite
    value beyond the dtype's range (1e300 into float32 would become inf) or a non-integer / out-of-range value for
    an integer dtype is refused."""
    dtype = np.dtype(dtype)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {value!r} ({_type_name(value)})")
    if dtype.kind == "f":
        v = float(value)
        if np.isfinite(v) and abs(v) > float(np.finfo(dtype).max):
            raise ValueError(f"{name}={v!r} does not fit the {dtype.name} output (largest {np.finfo(dtype).max:g}); "
                             "use a smaller value, +-inf or NaN")
        return v
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if isinstance(value, (float, np.floating)):
            if not np.isfinite(value) or float(value) != int(value):
                raise ValueError(f"{name}={value!r} is not an integer, the output is {dtype.name}")
            value = int(value)
        v = int(value)
        if not info.min <= v <= info.max:
            raise ValueError(f"{name}={v} is outside the range of the {dtype.name} output [{info.min}, {info.max}]")
        return v
    return value


def memory_limit() -> int:
    """Bytes of physical memory of this machine (the bound of check_memory); XCCA_MEMORY_LIMIT overrides it."""
    env = os.environ.get("XCCA_MEMORY_LIMIT")
    if env:
        try:
            return int(float(env))
        except ValueError:
            pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return 1 << 40


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000.0
    return f"{n:.3g} EB"  # pragma: no cover


def check_memory(n_bytes: float, what: str) -> None:
    """Refuse up front a request whose arrays cannot fit in this machine's memory (instead of a MemoryError after
    minutes, or the OOM killer). `what` names the argument(s) responsible, e.g. ``"nphi=1099511627776"``."""
    limit = memory_limit()
    if not n_bytes <= limit:
        raise ValueError(f"{what} needs {_fmt_bytes(float(n_bytes))} of memory, more than this machine's "
                         f"{_fmt_bytes(float(limit))}")
