"""Command-line subcommands of the correlation analysis: ``xcca correlate``, ``xcca polar`` and the analysis part of
``xcca demo``.

:func:`add_analysis_commands` adds ``correlate`` and ``polar`` to an argparse subparsers object (``xcca.cli`` wires
them in); each sets ``func`` to a handler taking the parsed namespace and returning the exit status. Bad input gives a
one-line error on stderr and exit status 1, never a traceback. :func:`run_demo` simulates a gold-nanoparticle run and
analyses it (used by ``xcca demo``). ``python -m xcca.cli_analysis`` runs these subcommands on their own.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ["add_analysis_commands", "correlate_arguments", "run_correlate", "polar_arguments", "run_polar",
           "run_demo", "main", "CORRELATE_HELP", "POLAR_HELP", "EXIT_CODES"]

CORRELATE_HELP = "whole correlation analysis of a run (polar, outliers, fits, pairing, difference correlations)"
POLAR_HELP = "polar image of one detector image (PNG, or .npy array)"

_log = logging.getLogger(__name__)

# Errors that are the user's input, not a bug: reported in one line.
_USER_ERRORS = (OSError, ValueError, TypeError, KeyError, RuntimeError, ImportError)


def _center(text: str):
    if text.strip().lower() == "auto":
        return "auto"
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--center must be X,Y or auto, got {text!r}") from None
    return (x, y)


def _floats(text: str):
    if ":" in text:  # QMIN:QMAX:NQ, the rings of a geometry run (1/Å)
        parts = text.split(":")
        try:
            if len(parts) != 3:
                raise ValueError
            qmin, qmax, nq = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected QMIN:QMAX:NQ (1/Å, NQ an integer), got {text!r}") from None
        if nq < 1 or not qmin <= qmax:
            raise argparse.ArgumentTypeError(f"expected QMIN <= QMAX and NQ >= 1, got {text!r}")
        return (qmin, qmax, nq)
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or comma-separated numbers, got {text!r}") from None
    return vals[0] if len(vals) == 1 else np.asarray(vals)


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


#: The exit-code convention of every xcca command (shown in each --help).
EXIT_CODES = ("exit status: 0 = all done; 1 = done, but some inputs were skipped (each one reported); "
              "2 = usage error or unusable input (nothing written).")

# Library parameter -> CLI flag, so that errors name what the user typed.
_FLAGS = {"polarization_factor": "--polarization", "geometry": "--poni", "ring_for_pairing": "--ring", "nphi": "--nphi", "qmin": "--qmin", "qmax": "--qmax",
          "n_threads": "--threads", "outlier_thresh": "--outlier-thresh", "chunk": "--chunk", "center": "--center",
          "wavelength": "--wavelength", "dataset": "--dataset", "q": "--q", "frame": "--frame",
          "q_pairs": "--pairs", "flat": "--flat", "dark": "--dark"}


def _flagify(msg: str) -> str:
    """Replace library parameter names by CLI flags where the message names a parameter (``name=``,
    ``name must``, ``name (`` or at its start)."""
    import re

    for name, flag in _FLAGS.items():
        msg = re.sub(rf"(?<![\w\-'\"/.:]){name}(?=\s*=|\s+must\b|\s+\(|\s+is\b)|^{name}\b", flag, msg)
    return msg.replace("----", "--")


def _check_memory(n_bytes: float, what: str) -> None:
    """Refuse up front what cannot fit in this machine's physical memory (XCCA_MEMORY_LIMIT overrides it; the same
    bound as the library's own checks, kept here because the CLI uses only public API)."""
    import os

    limit = os.environ.get("XCCA_MEMORY_LIMIT")
    total = int(float(limit)) if limit else os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if not n_bytes <= total:
        raise ValueError(f"{what} needs {n_bytes / 1e9:.3g} GB of memory, more than this machine's "
                         f"{total / 1e9:.3g} GB")


def _err(cmd: str, exc: BaseException) -> int:
    """One-line error on stderr; exit status 2 (usage error or unusable input: nothing was done)."""
    msg = str(exc) or type(exc).__name__
    if isinstance(exc, KeyError):
        msg = str(exc.args[0]) if exc.args else msg
    print(f"xcca {cmd}: error: {_flagify(msg)}", file=sys.stderr)
    return 2


def add_analysis_commands(subparsers) -> None:
    """Add the ``correlate`` and ``polar`` subcommands to an ``argparse`` subparsers object.

    Parameters
    ----------
    subparsers : argparse subparsers action
        What ``ArgumentParser.add_subparsers()`` returned.
    """
    correlate_arguments(subparsers.add_parser("correlate", help=CORRELATE_HELP))
    polar_arguments(subparsers.add_parser("polar", help=POLAR_HELP))


def correlate_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``xcca correlate``.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The subcommand's parser.
    """
    p.description = ("Stream a run (an HDF5 stack or image files) through the correlation analysis and write an "
                     "HDF5 result: raw and difference correlations, q/radius, Δ and cos ψ axes, pairs, per-shot fit "
                     "quality, parameters and versions. Corrupt frames are skipped and listed.")
    p.add_argument("run", nargs="+", help="run file (HDF5 with --dataset, or file.h5::/dataset) or image files")
    p.add_argument("--dataset", help="HDF5 dataset of the (N, H, W) frame stack")
    p.add_argument("--center", type=_center, help="beam centre X,Y in pixels (X = column) or auto (required "
                   "without --poni)")
    p.add_argument("--qmin", type=float, help="smallest ring radius in pixels (required without --poni)")
    p.add_argument("--qmax", type=float, help="largest ring radius in pixels, exclusive (required without --poni)")
    p.add_argument("--nphi", type=int, required=True, help="angular samples per ring")
    p.add_argument("--mask", help="mask file (.npy, image, or file.h5::/dataset); True/nonzero = valid pixel")
    p.add_argument("--wavelength", type=float, help="wavelength (Å) for the cos ψ axis")
    p.add_argument("--q", type=_floats, help="q (1/Å) of the rings: one value or one per radius, comma-separated; "
                   "with --poni the rings themselves, QMIN:QMAX:NQ or comma-separated")
    p.add_argument("--poni", metavar="FILE", help="pyFAI PONI file of the detector geometry: rings of constant q "
                   "(1/Å, --q) sampled exactly on the (tilted) detector; replaces --center/--qmin/--qmax/--wavelength")
    p.add_argument("--polarization", type=float, metavar="FACTOR",
                   help="with --poni: polarisation correction with this factor (e.g. 0.99, pyFAI's convention)")
    p.add_argument("--solid-angle", action="store_true", help="with --poni: solid-angle correction")
    p.add_argument("--flat", metavar="FILE", help="with --poni: flat-field image (.npy, image, or file.h5::/dataset); "
                   "pixels are (I - dark) / flat during the remap, flat <= 0 or non-finite = masked")
    p.add_argument("--dark", metavar="FILE", help="with --poni: dark-current image (.npy, image, or "
                   "file.h5::/dataset), subtracted per pixel during the remap")
    p.add_argument("--precision", choices=("float64", "float32"), default="float64",
                   help="with --poni: arithmetic of the remap (default float64; float32: the same rule in single "
                        "precision, positions to ~5e-4 px, ~1.7x faster without AVX-512; not with --flat/--dark)")
    p.add_argument("--ring", type=float, help="radius (pixels) of the ring used for pairing, with --poni its q "
                   "(1/Å) (default: brightest)")
    p.add_argument("--pair-groups", metavar="DATASET",
                   help="pair shots only within equal keys: an HDF5 dataset of one key per frame in the run's file "
                        "(e.g. /entry/cell_id for AGIPD memory cells) or FILE.h5::/path")
    p.add_argument("--outlier-thresh", type=float, default=6.0,
                   help="per-ring modified z-score threshold (default 6; 0 disables)")
    p.add_argument("--chunk", type=_positive_int, default=16, help="frames per chunk (default 16)")
    p.add_argument("--threads", type=_positive_int, help="threads (default: all usable cores)")
    p.add_argument("--backend", choices=("xcca", "numpy"), default="xcca", help=argparse.SUPPRESS)
    cl = p.add_mutually_exclusive_group()
    cl.add_argument("--scheduler", metavar="ADDRESS",
                    help="run on the Dask cluster of this scheduler (e.g. tcp://host:8786; needs xcca[dask])")
    cl.add_argument("--workers", type=_positive_int, metavar="N",
                    help="run on a local Dask cluster of N single-threaded worker processes (needs xcca[dask])")
    p.add_argument("-o", "--output", required=True, help="result HDF5 file")
    p.add_argument("--plot", help="also write an overview figure (PNG)")
    p.add_argument("--legendre", type=_positive_int, metavar="L",
                   help="also decompose the difference correlations into Legendre B_l(q, q), even l <= L "
                        "(needs --wavelength and --q); stored in the result as /entry/legendre; with --pairs from the "
                        "pair differences' run correlation: B_l(q, q') of every selected pair, with jackknife errors")
    p.add_argument("--pairs", metavar="all|band:K|FILE",
                   help="also accumulate the run correlation C(q, q', Δφ) of these ring pairs, raw and of the pair "
                        "differences, with counts, harmonics C_n and jackknife errors (/entry/run_correlation...): "
                        "all (every q <= q'), band:K (q <= q' <= q+K) or a text/.npy file of (q, q') ring-index "
                        "pairs (0-based, one pair per row)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.epilog = EXIT_CODES
    p.set_defaults(func=run_correlate)


def polar_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``xcca polar``.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The subcommand's parser.
    """
    p.description = ("Remap one image to polar coordinates (rows = radius, columns = φ) and write it as a PNG "
                     "figure, or as an array if -o ends in .npy.")
    p.add_argument("image", help="image file (any detector format; HDF5 as file.h5::/dataset or with --dataset)")
    p.add_argument("--dataset", help="HDF5 dataset")
    p.add_argument("--frame", type=int, default=0, help="frame index in a stack (default 0)")
    p.add_argument("--center", type=_center, default="auto", help="beam centre X,Y in pixels or auto (default)")
    p.add_argument("--qmin", type=float, default=0.0, help="smallest radius in pixels (default 0)")
    p.add_argument("--qmax", type=float, help="largest radius in pixels (default: to the farthest image edge)")
    p.add_argument("--nphi", type=int, default=360, help="angular samples (default 360)")
    p.add_argument("--mask", help="mask file; True/nonzero = valid pixel")
    p.add_argument("--poni", metavar="FILE", help="pyFAI PONI file: rings of constant q (--q, 1/Å) sampled exactly "
                   "on the (tilted) detector instead of --center/--qmin/--qmax")
    p.add_argument("--q", type=_floats, help="with --poni: the rings' q in 1/Å, QMIN:QMAX:NQ or comma-separated")
    p.add_argument("--polarization", type=float, metavar="FACTOR", help="with --poni: polarisation correction")
    p.add_argument("--solid-angle", action="store_true", help="with --poni: solid-angle correction")
    p.add_argument("--flat", metavar="FILE", help="with --poni: flat-field image; pixels are (I - dark) / flat")
    p.add_argument("--dark", metavar="FILE", help="with --poni: dark-current image, subtracted per pixel")
    p.add_argument("--precision", choices=("float64", "float32"), default="float64",
                   help="with --poni: arithmetic of the remap (default float64; float32: the same rule in single "
                        "precision; not with --flat/--dark)")
    p.add_argument("--backend", choices=("xcca", "numpy"), default="xcca", help=argparse.SUPPRESS)
    p.add_argument("-o", "--output", required=True,
                   help="output .png (figure) or .npy (polar array); without a suffix .png is added")
    p.epilog = EXIT_CODES
    p.set_defaults(func=run_polar)


def run_correlate(args) -> int:
    """Run ``xcca correlate``; returns the exit status.

    0 done; 1 with a one-line error; 2 when an output is one of the inputs (refused before anything is written).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments.
    """
    from . import analyze

    source = args.run[0] if len(args.run) == 1 else list(args.run)
    t0 = time.perf_counter()
    from .files import OutputIsInputError, check_not_input

    try:  # before anything is read or written: no output may be an input (also via symlinks or hard links)
        check_not_input(args.output, [args.run, args.mask, args.flat, args.dark], name="-o")
        if args.plot:
            check_not_input(args.plot, [args.run, args.mask, args.flat, args.dark, args.output], name="--plot")
    except OutputIsInputError as exc:
        _err("correlate", exc)
        return 2
    client = None
    usage = _geometry_usage(args)
    if usage is not None:
        print(f"xcca correlate: error: {usage}", file=sys.stderr)
        return 2
    try:
        if args.legendre is not None and args.poni is None and (args.wavelength is None or args.q is None):
            raise ValueError("--legendre needs --wavelength and --q (cos ψ of every ring)")
        q_pairs = _pairs_arg(args.pairs) if getattr(args, "pairs", None) is not None else None
        if args.plot:  # fail before the analysis, not after it
            from .plot import require_matplotlib

            require_matplotlib()
        if getattr(args, "scheduler", None) or getattr(args, "workers", None):
            from .distributed import make_client

            client = make_client(args.scheduler, args.workers)
        res = analyze(
            source, dataset=args.dataset, center=args.center, qmin=args.qmin, qmax=args.qmax, nphi=args.nphi,
            mask=args.mask, wavelength=args.wavelength, q=args.q, ring_for_pairing=args.ring,
            pair_groups=args.pair_groups, chunk=args.chunk,
            outlier_thresh=args.outlier_thresh or None, backend=args.backend, n_threads=args.threads,
            output=args.output, progress=not args.quiet, client=client, **_pairs_kw(q_pairs),
            **_geometry_kwargs(args),
        )
        if args.legendre is not None:
            from .legendre import legendre_decompose, legendre_from_analysis, write_legendre

            if res.run_difference_correlation is not None:  # --pairs: B_l(q, q') of every selected pair
                leg = legendre_decompose(res.run_difference_correlation, None, res.parameters.get("wavelength"),
                                         l_max=args.legendre)
            else:
                leg = legendre_from_analysis(res, args.legendre)
            write_legendre(args.output, leg)
    except _USER_ERRORS + (MemoryError,) as exc:  # MemoryError: refused up front (e.g. --pairs all, too many rings)
        return _err("correlate", exc)
    finally:
        if client is not None:
            from .distributed import close_client

            close_client(client)
    dt = time.perf_counter() - t0
    n_good = len(res.frames)
    where = (f"q {res.q[0]:.4g}..{res.q[-1]:.4g} 1/Å ({len(res.q)} rings, {res.parameters.get('remap_engine')} "
             f"remap)" if args.poni is not None else
             f"centre ({res.parameters['center'][0]:.2f}, {res.parameters['center'][1]:.2f})")
    print(f"xcca correlate: {n_good} frames analysed ({n_good / dt:.1f} frames/s), {len(res.pairs)} pairs, "
          f"{where}; wrote {args.output}")
    _warn_empty_rings(res)
    if res.skipped:
        listed = "; ".join(f"{i}: {why}" for i, why in res.skipped[:10])
        more = f" (+{len(res.skipped) - 10} more, see /skipped in the result)" if len(res.skipped) > 10 else ""
        print(f"xcca correlate: warning: {len(res.skipped)} corrupt frames skipped: {listed}{more}",
              file=sys.stderr)
    if args.plot:
        try:
            from .plot import plot_result

            from .plot import save_figure

            save_figure(plot_result(res), args.plot, inputs=[args.run, args.mask, args.output])
        except _USER_ERRORS as exc:
            return _err("correlate", exc)
        print(f"xcca correlate: wrote {args.plot}")
    return 1 if res.skipped else 0


def _geometry_usage(args) -> Optional[str]:
    """The usage error of the geometry flags of ``xcca correlate`` (None if they are consistent)."""
    if getattr(args, "poni", None) is not None:
        for flag, val in (("--center", args.center), ("--qmin", args.qmin), ("--qmax", args.qmax),
                          ("--wavelength", args.wavelength)):
            if val is not None:
                return (f"{flag} does not apply with --poni (the PONI file fixes the beam centre and the wavelength; "
                        f"give the rings as --q QMIN:QMAX:NQ in 1/Å)")
        if args.q is None:
            return "--poni needs --q: the rings' q in 1/Å, QMIN:QMAX:NQ or comma-separated"
        if args.polarization is not None and not -1.0 <= args.polarization <= 1.0:
            return f"--polarization must lie in [-1, 1], got {args.polarization}"
        if getattr(args, "precision", "float64") == "float32" and (getattr(args, "flat", None) is not None or
                                                                   getattr(args, "dark", None) is not None):
            return "--precision float32 does not take --flat/--dark (they are applied in float64)"
        return None
    if args.polarization is not None or args.solid_angle:
        return "--polarization and --solid-angle need --poni (a detector geometry)"
    if getattr(args, "precision", "float64") != "float64":
        return "--precision float32 needs --poni (the pixel-radius remap runs in float64)"
    for flag, val in (("--flat", getattr(args, "flat", None)), ("--dark", getattr(args, "dark", None))):
        if val is not None:
            return f"{flag} needs --poni (flat-field and dark corrections run in the geometry remap)"
    if isinstance(args.q, tuple):
        return "--q QMIN:QMAX:NQ needs --poni (without it --q is one value or one per radius)"
    missing = [f for f, v in (("--center", args.center), ("--qmin", args.qmin), ("--qmax", args.qmax)) if v is None]
    if missing:
        return f"{', '.join(missing)} required (or give --poni and --q)"
    return None


def _geometry_kwargs(args) -> Dict[str, object]:
    """The geometry keywords of :func:`xcca.analyze` from the flags (none without --poni)."""
    if getattr(args, "poni", None) is None:
        return {}
    return dict(geometry=args.poni, polarization_factor=args.polarization, solid_angle=bool(args.solid_angle),
                flat=getattr(args, "flat", None), dark=getattr(args, "dark", None),
                precision=getattr(args, "precision", "float64"))

def _pairs_arg(text: str):
    """--pairs: "all", "band:K" (checked by analyze) or a file of (q, q') ring-index pairs (.npy or text)."""
    t = text.strip()
    if t == "all" or t.startswith("band:"):
        if t.startswith("band:") and not t[5:].strip().isdigit():
            raise ValueError(f"--pairs: band:K needs an integer K >= 0, got {text!r}")
        return t
    import os

    if not os.path.isfile(t):
        raise ValueError(f"--pairs must be all, band:K or a file of ring-index pairs; no file {text!r}")
    import warnings

    try:
        with warnings.catch_warnings():  # an empty file: refused below by its shape
            warnings.simplefilter("ignore", UserWarning)
            arr = np.load(t, allow_pickle=False) if t.endswith(".npy") else np.loadtxt(t, ndmin=2)
    except (OSError, ValueError) as exc:
        raise ValueError(f"--pairs: cannot read ring-index pairs from {text!r}: {exc}") from None
    arr = np.asarray(arr)
    if arr.ndim == 1 and arr.size == 2:
        arr = arr.reshape(1, 2)
    if arr.dtype.kind == "f" and not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
        raise ValueError(f"--pairs: {text!r} must hold integer ring indices")
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ValueError(f"--pairs: {text!r} must hold rows of two ring indices (q, q'), got shape {arr.shape}")
    return arr.astype(np.int64) if arr.dtype.kind in "fiu" else arr


def _pairs_kw(q_pairs) -> dict:
    return {} if q_pairs is None else {"q_pairs": q_pairs}


def _warn_empty_rings(res) -> None:
    """Warn when rings of --qmin..--qmax have no valid sample (radii beyond the detector), with the usable range."""
    prof = np.asarray(res.radial_profile)
    empty = ~np.isfinite(prof.reshape(-1, prof.shape[-1]) if prof.ndim > 1 else prof)
    if prof.ndim > 1:
        empty = empty.all(axis=0)
    if empty.any() and "geometry" in res.parameters and res.q is not None and len(res.q) == empty.size:
        ok = np.asarray(res.q)[~empty]
        usable = f"usable q range {ok.min():.4g}..{ok.max():.4g} 1/Å" if ok.size else "no usable ring"
        print(f"xcca correlate: warning: {int(empty.sum())} of {empty.size} rings have no valid sample "
              f"(--q beyond the detector or the mask); {usable}", file=sys.stderr)
    elif empty.any() and len(res.radii) == empty.size:
        ok = np.asarray(res.radii)[~empty]
        usable = f"usable radius range {ok.min():g}..{ok.max():g} px" if ok.size else "no usable radius"
        print(f"xcca correlate: warning: {int(empty.sum())} of {empty.size} rings have no valid sample "
              f"(--qmin/--qmax beyond the detector or the mask); {usable}", file=sys.stderr)


def _read_single(path: str, dataset: Optional[str], frame: int) -> np.ndarray:
    from .sources import open_source

    with open_source(path, dataset) as src:
        if not -len(src) <= frame < len(src):
            raise ValueError(f"--frame {frame} out of range: {path} holds {len(src)} frames")
        frames, errs = src.read_indices([frame % len(src)])
    if errs[0] is not None:
        raise OSError(f"{path}: {errs[0]}")
    return frames[0]


def run_polar(args) -> int:
    """Run ``xcca polar``; returns the exit status.

    0 done; 1 with a one-line error; 2 when an output is one of the inputs (refused before anything is written).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments.
    """
    from . import PolarGrid, reference
    from .sources import load_mask
    from .stages import find_center
    from .files import OutputIsInputError, atomic_write, check_not_input

    try:
        check_not_input(args.output, [args.image, args.mask, args.flat, args.dark], name="-o")
    except OutputIsInputError as exc:
        _err("polar", exc)
        return 2
    if args.poni is not None or args.q is not None or args.polarization is not None or args.solid_angle or \
            args.flat is not None or args.dark is not None or args.precision != "float64":
        return _polar_geometry(args)
    try:
        img = _read_single(args.image, args.dataset, args.frame)
        mask = load_mask(args.mask, img.shape)
        if args.center == "auto":
            center = find_center(img.astype(np.float64), mask).center
        else:
            center = args.center
        h, w = img.shape
        cx, cy = center
        if not (-0.5 <= cx < w - 0.5 and -0.5 <= cy < h - 0.5):
            raise ValueError(f"centre ({cx}, {cy}) is outside the {h}x{w} image")
        qmax = args.qmax if args.qmax is not None else max(
            np.hypot(x - cx, y - cy) for x in (0, w - 1) for y in (0, h - 1))
        if not 0 <= args.qmin < qmax:
            raise ValueError(f"need 0 <= qmin < qmax, got qmin={args.qmin}, qmax={qmax}")
        if args.nphi < 2:
            raise ValueError(f"--nphi must be >= 2, got {args.nphi}")
        _check_memory(8.0 * np.ceil(qmax - args.qmin) * args.nphi,
                      f"--qmin {args.qmin:g} --qmax {qmax:g} with --nphi {args.nphi}")
        radii = np.arange(args.qmin, qmax)
        if args.backend == "numpy":  # the executable specification (slow)
            polar, _ = reference.polar_remap(img, center, radii, args.nphi, mask=mask, method="bilinear")
        else:  # invalid samples are NaN (PolarGrid's default fill)
            polar, _ = PolarGrid(center, radii, args.nphi, img.shape).remap(img, mask=mask, method="bilinear")
        out = Path(args.output)
        if not out.suffix:
            out = out.with_name(out.name + ".png")  # what matplotlib would write anyway: say it
        if out.suffix.lower() == ".npy":
            with atomic_write(out, inputs=[args.image, args.mask], name="-o") as tmp:
                np.save(tmp, polar)
        else:
            from .plot import plot_polar, save_figure

            ax = plot_polar(polar, radii, title=f"{Path(args.image).name}: centre ({cx:.2f}, {cy:.2f})")
            save_figure(ax.figure, out, inputs=[args.image, args.mask])
    except _USER_ERRORS as exc:
        return _err("polar", exc)
    print(f"xcca polar: centre ({cx:.2f}, {cy:.2f}), {len(radii)} radii x {args.nphi} angles; wrote {out}")
    return 0


def _polar_geometry(args) -> int:
    """``xcca polar --poni FILE --q QMIN:QMAX:NQ``: the polar image of rings of constant q (1/Å)."""
    from . import Geometry
    from .files import atomic_write
    from .sources import load_mask

    if args.poni is None:
        print("xcca polar: error: --q, --polarization, --solid-angle, --flat, --dark and --precision need --poni",
              file=sys.stderr)
        return 2
    if args.precision == "float32" and (args.flat is not None or args.dark is not None):
        print("xcca polar: error: --precision float32 does not take --flat/--dark (they are applied in float64)",
              file=sys.stderr)
        return 2
    if args.q is None:
        print("xcca polar: error: --poni needs --q: the rings' q in 1/Å, QMIN:QMAX:NQ or comma-separated",
              file=sys.stderr)
        return 2
    for flag, val in (("--center", None if args.center == "auto" else args.center), ("--qmax", args.qmax),
                      ("--qmin", args.qmin or None)):
        if val is not None:
            print(f"xcca polar: error: {flag} does not apply with --poni (give --q in 1/Å)", file=sys.stderr)
            return 2
    try:
        img = _read_single(args.image, args.dataset, args.frame)
        mask = load_mask(args.mask, img.shape)
        q = args.q if isinstance(args.q, tuple) else np.atleast_1d(np.asarray(args.q, dtype=np.float64))
        if args.nphi < 2:
            raise ValueError(f"--nphi must be >= 2, got {args.nphi}")
        from .geometry_pipeline import load_flat_dark

        flat, _ = load_flat_dark(args.flat, img.shape, "flat")
        dark, _ = load_flat_dark(args.dark, img.shape, "dark")
        grid = Geometry.from_poni(args.poni).polar_grid(q, args.nphi, img.shape, solid_angle=args.solid_angle,
                                                        polarization_factor=args.polarization, flat=flat, dark=dark,
                                                        precision=args.precision)
        polar, _ = grid.remap(img, mask=mask, method="bilinear")
        out = Path(args.output)
        if not out.suffix:
            out = out.with_name(out.name + ".png")
        if out.suffix.lower() == ".npy":
            with atomic_write(out, inputs=[args.image, args.mask, args.poni, args.flat, args.dark], name="-o") as tmp:
                np.save(tmp, polar)
        else:
            from .plot import plot_polar, save_figure

            ax = plot_polar(polar, grid.q, title=f"{Path(args.image).name}: rings in q ({Path(args.poni).name})")
            ax.set_ylabel("q (1/Å)")
            save_figure(ax.figure, out, inputs=[args.image, args.mask, args.poni, args.flat, args.dark])
    except _USER_ERRORS as exc:
        msg = _flagify(str(exc)).replace("polarization_factor", "--polarization")
        print(f"xcca polar: error: {msg}", file=sys.stderr)
        return 2
    print(f"xcca polar: {len(grid.q)} rings q {grid.q[0]:.4g}..{grid.q[-1]:.4g} 1/Å x {args.nphi} angles "
          f"({grid.engine} remap); wrote {out}")
    return 0


def run_demo(out_dir="xcca-demo", *, n_frames: int = 100, seed: int = 0, quiet: bool = False,
             backend: str = "xcca") -> Dict[str, Path]:
    """Run the demo (kept for callers of the old location; the demo's steps live in :mod:`xcca.demo`).

    Parameters
    ----------
    out_dir : str or Path
        Output directory.
    n_frames : int
        Frames of the simulated run.
    seed : int
        Seed of the synthetic data.
    quiet : bool
        No progress bars.
    backend : str
        "xcca" or "numpy".

    Returns
    -------
    dict
        The written paths by name, and ``"_summary"`` (a str).
    """
    from .demo import run_demo as _run

    return _run(out_dir, n_frames=n_frames, seed=seed, quiet=quiet, backend=backend)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m xcca.cli_analysis {correlate,polar} ...`` (the same subcommands as ``xcca``).

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(prog="xcca", description="xcca correlation analysis")
    sub = parser.add_subparsers(dest="command", required=True)
    add_analysis_commands(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
