"""Writing files without ever losing the user's data (public: facility code that writes next to raw data reuses it).

Everything in xcca that writes a file goes through these two helpers:

- :func:`check_not_input` refuses an output that is the same file as an input -- by name, through a symlink or a hard
  link (:func:`os.path.samefile`) -- before anything is written;
- :func:`atomic_write` writes into a temporary file in the output's directory and renames it into place only when
  the writer succeeded, so a failed or interrupted run leaves the previous file (or nothing) behind, never half a
  file.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

__all__ = ["OutputIsInputError", "InputFiles", "check_not_input", "check_outputs_distinct", "atomic_write"]

PathLike = Union[str, "os.PathLike[str]"]


class OutputIsInputError(ValueError):
    """An output path names the same file as one of the inputs (refused: writing would destroy the input)."""


def _file_part(path: Any) -> Optional[str]:
    """The file of a path-like (``"run.h5::/entry/data"`` -> ``"run.h5"``); None for anything that is not a path."""
    if isinstance(path, (bytes, bytearray)):
        path = os.fsdecode(bytes(path))
    if not isinstance(path, (str, os.PathLike)):
        return None
    s = os.fspath(path)
    if isinstance(s, bytes):
        s = os.fsdecode(s)
    return s.split("::", 1)[0] if "::" in s else s


def _flatten(inputs: Any) -> Iterator[Any]:
    if inputs is None:
        return
    if _file_part(inputs) is not None:
        yield inputs
        return
    if isinstance(inputs, dict):
        inputs = inputs.values()
    try:
        items = iter(inputs)
    except TypeError:  # an array, a frame source, ...: not a file
        return
    if hasattr(inputs, "shape"):  # NumPy arrays are iterable but hold data, not paths
        return
    for item in items:
        yield from _flatten(item)


class InputFiles:
    """Inputs to check against many outputs, identified once (e.g. `xcca thumbnail` over a directory).

    The (st_dev, st_ino) of the existing input files are taken when this is made; passed as `inputs` to
    :func:`check_not_input` (or :func:`atomic_write`, :func:`xcca.thumbnail.write_png`), each check costs one stat of
    the output instead of two or three per input, which made checking N outputs against N inputs quadratic. Same
    rule as :func:`os.path.samefile` (same path, symlink or hard link), for the files as they were when this was
    made.

    Parameters
    ----------
    inputs : path-like, or a (nested) sequence or dict of them
        As for :func:`check_not_input`.
    """

    def __init__(self, inputs: Any) -> None:
        self.ids = {}
        for inp in _flatten(inputs):
            file = _file_part(inp)
            try:
                st = os.stat(file) if file else None
            except OSError:
                continue
            if st is not None:
                self.ids.setdefault((st.st_dev, st.st_ino), (file, inp))


def check_not_input(output: PathLike, inputs: Any, *, name: str = "output") -> None:
    """Refuse an output that is the same file as any of the inputs, before anything is written.

    Parameters
    ----------
    output : str or path-like
        The file about to be written (``"file.h5::/dataset"`` means ``file.h5``).
    inputs : path-like, or a (nested) sequence or dict of them, or InputFiles
        Every file the operation reads. Entries that are not paths (arrays, None, open objects) are ignored, as are
        inputs that do not exist. An :class:`InputFiles` is checked by file identity in one stat.
    name : str
        How the output is named in the error (``"output"``, ``"-o"``, ...).

    Raises
    ------
    OutputIsInputError
        (a ValueError) `output` is one of the inputs: the same path, a symlink to it or a hard link of it.
    """
    out = _file_part(output)
    if out is None:
        raise TypeError(f"{name} must be a path, got {type(output).__name__}")
    if isinstance(inputs, InputFiles):
        try:
            st = os.stat(out)
        except OSError:
            return  # a file that does not exist yet cannot be an input
        hit = inputs.ids.get((st.st_dev, st.st_ino))
        if hit is not None:
            _refuse(output, out, *hit, name)
        return
    if not os.path.exists(out):
        return  # a file that does not exist yet cannot be an input
    for inp in _flatten(inputs):
        file = _file_part(inp)
        if not file or not os.path.exists(file):
            continue
        try:
            same = os.path.samefile(out, file)
        except OSError:
            continue
        if same:
            _refuse(output, out, file, inp, name)


def _refuse(output: Any, out: str, file: str, inp: Any, name: str) -> None:
    how = "" if os.path.abspath(out) == os.path.abspath(file) else " (a link to it)"
    raise OutputIsInputError(
        f"{name} {os.fspath(output)!r} is the input file {os.fspath(inp)!r}{how}: refusing to overwrite an "
        f"input; choose another output path")


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask() would change it for every thread for a moment)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: PathLike, *, inputs: Any = None, name: str = "output") -> Iterator[Path]:
    """Context manager yielding a temporary path to write instead of `path`; renamed onto `path` on success.

    The temporary file lives in the destination's directory (so the final :func:`os.replace` is atomic on POSIX) and
    keeps the destination's suffix (so writers that infer the format from it, or append one, behave the same). On an
    exception it is removed and `path` is untouched. A symlink at `path` is written through (its target is
    replaced). The new file gets the usual permissions (``0o666`` minus the umask).

    Parameters
    ----------
    path : str or path-like
        The final file.
    inputs : optional
        Files the operation reads; :func:`check_not_input` is applied first.
    name : str
        How the output is named in errors.

    Yields
    ------
    Path
        The temporary file to write.

    Raises
    ------
    OutputIsInputError
        `path` is one of `inputs`.
    IsADirectoryError, FileNotFoundError, PermissionError
        `path` is a directory, its directory does not exist, or is not writable.
    """
    check_not_input(path, inputs, name=name)
    final = Path(os.path.realpath(os.fspath(path)))
    if final.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{name} is a directory, not a file", os.fspath(path))
    if not final.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, f"directory of the {name} does not exist", str(final.parent))
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".part{final.suffix}", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def check_outputs_distinct(outputs: Iterable[PathLike], name: str = "output") -> None:
    """Refuse two outputs that are the same file (the second would overwrite the first).

    Parameters
    ----------
    outputs : iterable of path-like
        The files about to be written.
    name : str
        How the outputs are named in the error.

    Raises
    ------
    ValueError
        Two entries resolve to the same path.
    """
    seen = {}
    for o in outputs:
        if _file_part(o) is None:
            raise TypeError(f"{name} must be a path, got {type(o).__name__}")
        key = os.path.normcase(os.path.realpath(os.fspath(o)))
        if key in seen:
            raise ValueError(f"{name}: {os.fspath(o)!r} and {seen[key]!r} are the same file")
        seen[key] = os.fspath(o)
