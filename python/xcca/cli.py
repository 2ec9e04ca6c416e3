"""The ``xcca`` command (also ``python -m xcca``).

Each subcommand is a pair (add_arguments, run) registered in ``COMMANDS``; later subcommands (correlate, polar)
register themselves the same way. ``run(args) -> int`` returns the exit code. The CLI prints; the library logs.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ["main", "COMMANDS", "register"]

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]

#: name -> (help, add_arguments, run)
COMMANDS: Dict[str, Tuple[str, AddArguments, Run]] = {}


def register(name: str, help: str, add_arguments: AddArguments, run: Run) -> None:
    """Add a subcommand to the ``xcca`` command.

    Parameters
    ----------
    name : str
        Subcommand name (``xcca NAME ...``).
    help : str
        One-line help shown by ``xcca --help``.
    add_arguments : callable
        ``add_arguments(parser)`` adds the subcommand's arguments to its ``argparse`` parser.
    run : callable
        ``run(args) -> int`` runs it and returns the exit code (0 done, 1 done with inputs skipped, 2 usage error).
    """
    COMMANDS[name] = (help, add_arguments, run)


def _err(msg: str) -> None:
    print(f"xcca: error: {msg}", file=sys.stderr)


def _save_png(rgb, path: Path, inputs=None, verify=None, n_threads=None) -> None:
    from .thumbnail import write_png

    write_png(rgb, path, inputs=inputs, verify=verify, n_threads=n_threads)


# ------------------------------------------------------------------------------------------------ thumbnail

def _thumbnail_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMG",
                   help="detector images (CBF, EDF, TIFF, ... or FILE.h5::/entry/data)")
    p.add_argument("-o", "--out", default=".",
                   help="output .png (one image) or directory (created if needed; default: current directory)")
    p.add_argument("--size", type=int, default=300, help="longest side in pixels (default 300)")
    p.add_argument("--mode", choices=("max", "sum"), default="max", help="block max or block sum (default max)")
    p.add_argument("--dilate", type=int, default=None, metavar="N", help="grey-dilate with an NxN square first")
    p.add_argument("--scale", choices=("log", "asinh", "linear"), default="log", help="intensity scale (default log)")
    p.add_argument("--dataset", default=None, help="HDF5 dataset for all inputs (instead of FILE::/path)")
    p.add_argument("--frame", type=int, default=0, help="frame of a stack (default 0)")
    p.add_argument("-j", "--workers", type=int, default=2,
                   help="images in flight: 1 = one image after the other (its MD5 check and half of its PNG "
                        "encoding on a second thread); N (default 2) = N images at once, each on one thread "
                        "(uses N cores)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    from .cli_analysis import EXIT_CODES

    p.epilog = EXIT_CODES


def _thumbnail_targets(images: Sequence[str], out: str) -> List[Tuple[str, Path]]:
    if out.lower().endswith(".png"):
        if len(images) != 1:
            raise ValueError(f"-o {out}: a .png output takes one image, got {len(images)} (give a directory)")
        return [(images[0], Path(out))]
    targets, seen = [], set()
    for img in images:
        file, dset = img.split("::", 1) if "::" in img else (img, None)
        stem = Path(file).name
        for suffix in (".gz", ".bz2", ".xz"):
            stem = stem[: -len(suffix)] if stem.endswith(suffix) else stem
        stem = Path(stem).stem + ("_" + dset.strip("/").replace("/", "_") if dset else "")
        name, i = stem, 1
        while name in seen:  # the same file name from two directories
            name, i = f"{stem}_{i}", i + 1
        seen.add(name)
        targets.append((img, Path(out) / f"{name}.png"))
    return targets


def _thumbnail_run(args: argparse.Namespace) -> int:
    from .thumbnail import thumbnail_file

    for opt, val in (("--size", args.size), ("--dilate", args.dilate), ("--workers", args.workers)):
        if val is not None and val <= 0:
            _err(f"{opt} must be positive, got {val}")
            return 2
    if not args.out.lower().endswith(".png") and os.path.exists(args.out) and not os.path.isdir(args.out):
        _err(f"-o {args.out}: is an existing file, not a directory; give an output directory, or a file name "
             f"ending in .png for a single image (the output is never written over an input)")
        return 2
    # Refused up front, not after reading the first image: a 10000000-pixel thumbnail needs petabytes (the float64
    # working arrays of make_thumbnail take ~40 bytes per output pixel; XCCA_MEMORY_LIMIT overrides the bound).
    limit = os.environ.get("XCCA_MEMORY_LIMIT")
    total = int(float(limit)) if limit else os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if 40.0 * args.size * args.size > total:
        _err(f"--size {args.size} needs {40.0 * args.size * args.size / 1e9:.3g} GB of memory, more than this "
             f"machine's {total / 1e9:.3g} GB")
        return 2
    try:
        targets = _thumbnail_targets(args.images, args.out)
        # Before anything is written: no thumbnail may replace one of the input images (also via links).
        from .files import InputFiles, check_not_input, check_outputs_distinct

        inputs = InputFiles(args.images)  # stat'ed once: each check below (and at each write) is one stat
        for _, dst in targets:
            check_not_input(dst, inputs, name="-o" if len(targets) == 1 else "thumbnail")
        check_outputs_distinct([dst for _, dst in targets], name="-o")
    except ValueError as e:
        _err(str(e))
        return 2
    if not args.out.lower().endswith(".png"):
        try:
            os.makedirs(args.out, exist_ok=True)
        except OSError as e:
            _err(f"{args.out}: cannot create output directory ({e.strerror or e})")
            return 2
    show = len(targets) > 1 and not args.quiet
    failed = 0
    items = targets
    if show:
        from tqdm import tqdm

        items = tqdm(targets, unit="image", file=sys.stderr)
    def make(src, dst, n_threads=None):
        # thumbnail_file: make_thumbnail(read_image(src)) exactly; a Pilatus CBF is decoded straight into the
        # binning (the frame is never stored). The PNG is renamed into place only after the CBF Content-MD5 check
        # passed (write_png's verify; with n_threads=None it runs on another thread meanwhile).
        rgb, verify = thumbnail_file(src, size=args.size, mode=args.mode, dilate=args.dilate, scale=args.scale,
                                     dataset=args.dataset, frame=args.frame, n_threads=n_threads)
        _save_png(rgb, dst, inputs=inputs, verify=verify, n_threads=n_threads)

    # With --workers N > 1, N images are in flight, each made start to finish on one worker thread (n_threads=1:
    # its MD5 and both PNG halves on that thread too), so N threads share N cores without oversubscription. Before,
    # -j 2 read ahead on one worker while the MD5 pool, the PNG's second half and this thread also ran: 4+ busy
    # threads on 2 cores (and GIL hand-offs between them) made it slower than -j 1 (55 vs 72 frames/s). The file
    # read, CBF decode, MD5, zlib and file writes release the GIL; results are reported in input order.
    pool = None
    pending: Dict[int, object] = {}
    if args.workers > 1 and len(targets) > 1:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="xcca-thumbnail")
    window = 2 * args.workers  # queued ahead, so that no worker waits for this thread to hand out the next image
    t0 = time.perf_counter()
    for k, (src, dst) in enumerate(items):
        try:
            if pool is not None:
                for n in range(k, min(k + window, len(targets))):
                    if n not in pending:
                        pending[n] = pool.submit(make, *targets[n], 1)
                pending.pop(k).result()  # type: ignore[attr-defined]
            else:
                make(src, dst)
        except Exception as e:  # one line per bad file, then carry on with the rest
            failed += 1
            if isinstance(e, OSError) and e.filename is not None:
                msg = f"{e.filename}: {e.strerror or e}"
            else:
                msg = str(e) or type(e).__name__
            if src not in msg:
                msg = f"{src}: {msg}"
            if show:
                items.write(f"xcca: error: {msg}", file=sys.stderr)  # type: ignore[union-attr]
            else:
                _err(msg)
    if pool is not None:
        pool.shutdown(wait=True)
    elapsed = time.perf_counter() - t0
    if not args.quiet:
        done = len(targets) - failed
        where = targets[0][1] if len(targets) == 1 else args.out
        rate = f" ({len(targets) / elapsed:.1f} frames/s)" if len(targets) > 1 and elapsed > 0 else ""
        print(f"wrote {done} thumbnail(s) to {where}" + (f"; {failed} failed" if failed else "") + rate)
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------ demo

def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="xcca-demo", help="output directory (default ./xcca-demo)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic frame and run")
    p.add_argument("--frames", type=int, default=100,
                   help="frames of the simulated gold-nanoparticle run (default 100)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    from .cli_analysis import EXIT_CODES

    p.epilog = EXIT_CODES


def _demo_run(args: argparse.Namespace) -> int:
    from .demo import STEPS, run_demo

    if args.frames < 2:
        _err(f"--frames must be at least 2, got {args.frames}")
        return 2
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _err(f"--out {out}: cannot create the output directory ({e.strerror or e})")
        return 2
    t0 = time.perf_counter()
    try:
        paths = run_demo(out, n_frames=args.frames, seed=args.seed, quiet=args.quiet, report=print)
    except (OSError, ValueError, RuntimeError, ImportError) as e:
        _err(f"demo: {e}")
        return 1
    print(f"demo: {len(STEPS)} steps in {time.perf_counter() - t0:.1f} s")
    for name, p in paths.items():
        if not name.startswith("_"):
            print(f"wrote {Path(p).resolve()}")
    return 0


register("thumbnail", "PNG thumbnails of detector images", _thumbnail_args, _thumbnail_run)
register("demo", "run the demo; writes into ./xcca-demo/ (or --out DIR)", _demo_args, _demo_run)

from .cli_analysis import (  # noqa: E402 - the correlation analysis subcommands (issue 6)
    CORRELATE_HELP, POLAR_HELP, correlate_arguments, polar_arguments, run_correlate, run_polar)

register("correlate", CORRELATE_HELP, correlate_arguments, run_correlate)
register("polar", POLAR_HELP, polar_arguments, run_polar)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="xcca", description="Fast X-ray cross-correlation analysis and "
                                     "detector thumbnails.")
    parser.add_argument("--version", action="version", version=f"xcca {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the library's log messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (help_, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_, description=help_))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``xcca`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code: 0 done, 1 done but inputs skipped or failed, 2 usage error, 130 interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits on --help, --version and usage errors
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    try:
        return COMMANDS[args.command][2](args)
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
