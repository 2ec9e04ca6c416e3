"""``xcca demo``: the LOKI tutorial on a simulated gold-nanoparticle run, plus a Pilatus 6M thumbnail.

The demo is a list of steps, :data:`STEPS`, run in order by :func:`run_demo`. Each step is a function taking the
shared :class:`DemoContext` (output directory, options, and everything earlier steps computed) and returning the
files it wrote, by name. To add a step (a PONI geometry, Legendre coefficients, ...), write such a function and
insert it into ``STEPS`` -- with :func:`add_step` from a module, or by editing the list here.

Every file is written atomically (a temporary file renamed into place). The steps:

1. ``pilatus``: a synthetic Pilatus 6M frame, written as ``pilatus6m.cbf``, and its thumbnail
   ``pilatus6m_thumbnail.png`` (module gaps in blue, Bragg spots kept by max-binning).
2. ``simulate``: the simulated run ``run.h5`` (frames at ``/entry/data/data``, mask at ``/entry/mask``, geometry as
   attributes of ``/entry``) and one of its frames alone as a 2-D dataset, ``image.h5::/entry/data``.
   ``poni``: its geometry as a pyFAI PONI file, ``run.poni``.
3. ``ring_fit``: the beam centre fitted on the Au 111 Bragg ring of the mean frame (``ring_fit.png``).
4. ``analysis``: :func:`xcca.analyze` over the whole run (``result.h5``): polar remap, outliers, Chebyshev fits of
   the 111 ring, pairing, difference correlations, cos ψ.
   ``analysis_q``: the same analysis on ``run.poni`` (``result_q.h5``): rings of constant q (1/Å), polarisation
   and solid-angle corrections during the remap, exact cos ψ per ring.
   ``legendre``: B_l(q, q) of the result (even l <= 16), added to ``result.h5`` as ``/entry/legendre``.
5. ``figures``: the tutorial's figures of the result (polar image, radial profile with its q axis, correlation maps,
   correlations against cos ψ, an overview).
6. ``bragg_ring``: the 111 ring of one shot with its Chebyshev fit, and the mean ring against the mean difference
   ring of the pairs (``bragg_ring.png``).
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

__all__ = ["DemoContext", "STEPS", "add_step", "run_demo"]

_log = logging.getLogger(__name__)


@dataclass
class DemoContext:
    """What the demo steps share.

    Parameters
    ----------
    out : Path
        Output directory.
    n_frames : int
        Frames of the simulated run.
    seed : int
        Seed of the synthetic data.
    quiet : bool
        No progress bars.
    backend : str
        Kernel backend of the analysis ("xcca", or "numpy" for the NumPy baseline).
    data : dict
        Results of earlier steps by name (e.g. ``"geometry"``, ``"center"``, ``"result"``).
    files : dict
        Files written so far, by name.
    log : list of str
        One line per step, printed by the CLI.
    """

    out: Path
    n_frames: int = 100
    seed: int = 0
    quiet: bool = False
    backend: str = "xcca"
    data: Dict[str, Any] = field(default_factory=dict)
    files: Dict[str, Path] = field(default_factory=dict)
    log: List[str] = field(default_factory=list)

    def path(self, name: str) -> Path:
        """The path of output file `name` in the output directory.

        Parameters
        ----------
        name : str
            File name.

        Returns
        -------
        Path
        """
        return self.out / name


Step = Callable[[DemoContext], Dict[str, Path]]


def _size(shape) -> str:
    """Sizes are printed rows × columns (H×W), the order of NumPy shapes, everywhere in xcca."""
    return "×".join(str(int(v)) for v in shape)


def step_pilatus(ctx: DemoContext) -> Dict[str, Path]:
    """Synthetic Pilatus 6M frame (CBF) and its thumbnail.

    Parameters
    ----------
    ctx : DemoContext
        The demo's state.

    Returns
    -------
    dict of str to Path
    """
    import fabio.cbfimage

    from .files import atomic_write
    from .datasets import pilatus6m
    from .thumbnail import make_thumbnail, write_png

    t0 = time.perf_counter()
    frame = pilatus6m(ctx.seed)
    cbf = ctx.path("pilatus6m.cbf")
    with atomic_write(cbf) as tmp:
        fabio.cbfimage.CbfImage(data=frame).write(str(tmp))
    t1 = time.perf_counter()
    rgb = make_thumbnail(frame)
    t2 = time.perf_counter()
    png = ctx.path("pilatus6m_thumbnail.png")
    write_png(rgb, png, inputs=[cbf])
    ctx.log.append(f"synthetic Pilatus 6M frame {_size(frame.shape)} px (rows × columns) "
                   f"({1e3 * (t1 - t0):.0f} ms with the CBF write), thumbnail {_size(rgb.shape[:2])} px "
                   f"in {1e3 * (t2 - t1):.1f} ms")
    return {"pilatus_cbf": cbf, "pilatus_thumbnail": png}


def step_simulate(ctx: DemoContext) -> Dict[str, Path]:
    """Simulated gold-nanoparticle run and a single-image HDF5 file.

    Parameters
    ----------
    ctx : DemoContext
        The demo's state.

    Returns
    -------
    dict of str to Path
    """
    import h5py

    from .files import atomic_write
    from .simulate import RunGeometry, simulate_frames, simulate_run

    geom = RunGeometry()
    run = ctx.path("run.h5")
    corrupt = (ctx.n_frames // 3,) if ctx.n_frames > 3 else ()
    with atomic_write(run) as tmp:
        simulate_run(tmp, ctx.n_frames, geom, seed=ctx.seed, corrupt=corrupt)
    image = ctx.path("image.h5")
    frame = next(iter(simulate_frames(1, geom, seed=ctx.seed + 1)))
    with atomic_write(image) as tmp:
        with h5py.File(tmp, "w") as f:
            d = f.create_dataset("/entry/data", data=frame, compression="lzf")
            d.attrs["units"] = "counts"
            f["/entry/mask"] = run_mask(geom)
            f["/entry"].attrs.update(center_x=geom.center[0], center_y=geom.center[1], wavelength=geom.wavelength,
                                     r111=geom.r111, r200=geom.r200)
    ctx.data["geometry"] = geom
    ctx.log.append(f"simulated {ctx.n_frames} frames of {_size(geom.shape)} px (Au 111 ring at {geom.r111:.1f} px, "
                   f"200 at {geom.r200:.1f} px), {len(corrupt)} of them corrupt")
    return {"run": run, "image": image}


def step_poni(ctx: DemoContext) -> Dict[str, Path]:
    """The simulated run's geometry as a pyFAI PONI file (``run.poni``), read back by :class:`xcca.Geometry`.

    Parameters
    ----------
    ctx : DemoContext
        The demo's state.

    Returns
    -------
    dict of str to Path
    """
    from .files import atomic_write
    from .geometry import Geometry

    g = ctx.data["geometry"]
    geo = Geometry.from_beam(g.center, distance=g.distance, pixel_size=g.pixel_size, wavelength=g.wavelength * 1e-10,
                             shape=g.shape)
    poni = ctx.path("run.poni")
    with atomic_write(poni) as tmp:
        tmp.write_text(geo.to_poni())
    ctx.data["poni_geometry"] = Geometry.from_poni(poni)
    return {"poni": poni}


def run_mask(geom) -> np.ndarray:
    """The detector mask of a simulated run (True = valid pixel).

    Parameters
    ----------
    geom : xcca.simulate.RunGeometry
        The run's geometry.

    Returns
    -------
    ndarray of bool, shape geom.shape
    """
    from .simulate import _detector_mask

    return _detector_mask(geom)


def step_ring_fit(ctx: DemoContext) -> Dict[str, Path]:
    """Beam centre from the Au 111 Bragg ring of the mean frame (the tutorial's RingFit step).

    Parameters
    ----------
    ctx : DemoContext
        The demo's state.

    Returns
    -------
    dict of str to Path
    """
    import h5py

    from .plot import plot_ring_fit, save_figure
    from .ringfit import fit_ring

    geom = ctx.data["geometry"]
    with h5py.File(ctx.files["run"], "r") as f:
        ds = f["/entry/data/data"]
        mean = np.zeros(ds.shape[1:])
        for i in range(min(len(ds), 20)):
            mean += ds[i]
        mean /= min(len(ds), 20)
        mask = f["/entry/mask"][()]
    h, w = geom.shape
    fit = fit_ring(mean, guess=(w / 2, h / 2, geom.r111), mask=mask, width=30, n_iter=5)
    ctx.data["center"] = fit.center
    ctx.data["ring_fit"] = fit
    ax = plot_ring_fit(mean, fit.center, fit.radius, mask=mask, points=getattr(fit, "points", None),
                       title="Au 111 ring fit on the mean frame")
    png = save_figure(ax.figure, ctx.path("ring_fit.png"), inputs=[ctx.files["run"]])
    ctx.log.append(f"ring fit: centre ({fit.center[0]:.2f}, {fit.center[1]:.2f}) px (true {geom.center[0]}, "
                   f"{geom.center[1]}), r = {fit.radius:.2f} px (true {geom.r111:.2f})")
    return {"ring_fit": png}


def step_analysis(ctx: DemoContext) -> Dict[str, Path]:
    """The whole correlation analysis of the run with :func:`xcca.analyze`.

    Parameters
    ----------
    ctx : DemoContext
        The demo's state.

    Returns
    -------
    dict of str to Path
    """
    from . import analyze

    geom = ctx.data["geometry"]
    run = ctx.files["run"]
    qmin = float(np.floor(geom.r111 - 25))
    qmax = float(np.ceil(geom.r200 + 15))
    radii = np.arange(qmin, qmax)
    out = ctx.path("result.h5")
    res = analyze(run, dataset="/entry/data/data", mask=f"{run}::/entry/mask", center="auto", qmin=qmin, qmax=qmax,
                  nphi=360, wavelength=geom.wavelength, q=geom.q(radii), ring_for_pairing=round(geom.r111),
                  backend=ctx.backend, output=out, progress=not ctx.quiet)
    ctx.data["result"] = res
    cx, cy = res.parameters["center"]
    ctx.log.append(f"analysis: centre fitted at ({cx:.2f}, {cy:.2f}), {len(res.frames)} good frames, "
                   f"{len(res.skipped)} corrupt skipped, {len(res.pairs)} pairs")
    return {"result": out}


def step_analysis_q(ctx: DemoContext) -> Dict[str, Path]:
    """The same analysis on the run's PONI geometry (``result_q.h5``): rings of constant q in 1/Å.

    ``xcca.analyze(geometry="run.poni", q=(qmin, qmax, nq))`` samples each ring at its exact (q, φ) positions (on
    this untilted detector: circles, the pixel-radius remap itself), with the polarisation (0.99) and solid-angle
    corrections applied during the remap; cos ψ from the exact θ of each ring.

    Parameters
    ----------
    ctx : DemoContext
        The demo's state.

    Returns
    -------
    dict of str to Path
    """
    from . import analyze

    geom = ctx.data["geometry"]
    run = ctx.files["run"]
    qmin = float(geom.q(np.floor(geom.r111 - 25)))
    qmax = float(geom.q(np.ceil(geom.r200 + 15)))
    nq = int(np.ceil(geom.r200 + 15) - np.floor(geom.r111 - 25))
    out = ctx.path("result_q.h5")
    res = analyze(run, dataset="/entry/data/data", mask=f"{run}::/entry/mask", geometry=ctx.files["poni"],
                  q=(qmin, qmax, nq), nphi=360, ring_for_pairing=float(geom.q(geom.r111)), polarization_factor=0.99,
                  solid_angle=True, backend=ctx.backend, output=out, progress=not ctx.quiet)
    ctx.data["result_q"] = res
    ctx.log.append(f"analysis on run.poni: {nq} rings q {qmin:.3f}..{qmax:.3f} 1/Å ({res.parameters['remap_engine']} "
                   f"remap, polarisation 0.99, solid angle), {len(res.pairs)} pairs")
    return {"result_q": out}


def step_legendre(ctx: DemoContext) -> Dict[str, Path]:
    """Legendre coefficients B_l(q, q) (even l <= 16) of the run, stored in ``result.h5`` as ``/entry/legendre``.

    Parameters
    ----------
    ctx : DemoContext
        The demo's state.

    Returns
    -------
    dict of str to Path
    """
    from .legendre import legendre_from_analysis, write_legendre

    write_legendre(ctx.files["result"], legendre_from_analysis(ctx.data["result"], 16))
    return {}


def step_figures(ctx: DemoContext) -> Dict[str, Path]:
    """The tutorial's figures of the analysis result.

    Parameters
    ----------
    ctx : DemoContext
        The demo's state.

    Returns
    -------
    dict of str to Path
    """
    from .plot import save_figures

    geom = ctx.data["geometry"]
    figs = save_figures(ctx.data["result"], ctx.out, ring=round(geom.r111))
    return {p.stem: p for p in figs}


def step_bragg_ring(ctx: DemoContext) -> Dict[str, Path]:
    """The 111 ring of one shot with its Chebyshev fit; mean ring against mean difference ring of the pairs.

    Parameters
    ----------
    ctx : DemoContext
        The demo's state.

    Returns
    -------
    dict of str to Path
    """
    import h5py

    from .plot import _mpl, plot_mean_rings, save_figure
    from .polar import PolarGrid
    from .rings import fit_periodic, is_outlier

    geom = ctx.data["geometry"]
    res = ctx.data["result"]
    center = tuple(res.parameters["center"])
    r = float(round(geom.r111))
    nphi = len(res.phi)
    with h5py.File(ctx.files["run"], "r") as f:
        good = np.asarray(res.frames)
        frames = f["/entry/data/data"][np.sort(good)]
        mask = f["/entry/mask"][()]
    grid = PolarGrid(center, radii=[r], nphi=nphi, shape=frames.shape[1:])
    polar, pmask = grid.remap(frames, mask=mask)
    rings, rmask = polar[:, 0], np.array(np.broadcast_to(pmask, polar.shape)[:, 0])
    # Per-ring outliers (hot pixels, a large crystallite's spot) dropped as in the analysis (threshold 6).
    for k in range(len(rings)):
        v = rmask[k]
        rmask[k, v] = ~is_outlier(rings[k, v], 6.0)
    vals = np.where(rmask, rings, 0.0)
    fit = fit_periodic(vals, rmask, deg=15)
    phi = np.asarray(res.phi)
    index = {int(g): k for k, g in enumerate(np.sort(good))}
    pairs = np.array([[index[int(a)], index[int(b)]] for a, b in res.pairs if int(a) in index and int(b) in index])
    diff = rings[pairs[:, 0]] - rings[pairs[:, 1]]
    dmask = rmask[pairs[:, 0]] & rmask[pairs[:, 1]]
    with warnings.catch_warnings():  # all-masked columns (panel gaps) give NaN, as intended
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_ring = np.where(rmask.any(0), np.nanmean(np.where(rmask, rings, np.nan), 0), np.nan)
        mean_diff = np.nanmean(np.where(dmask, diff, np.nan), 0)
        rms_diff = np.sqrt(np.nanmean(np.where(dmask, diff, np.nan) ** 2, 0))
    Figure = _mpl()
    fig = Figure(figsize=(11, 4), layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    shot = 0
    plot_mean_rings(phi, {f"shot {int(np.sort(good)[shot])}": np.where(rmask[shot], rings[shot], np.nan)},
                    fits={"Chebyshev fit (deg 15)": np.where(rmask[shot], fit.curves[shot], np.nan)}, ax=a1,
                    title=f"Au 111 ring (r = {r:g} px) of one shot, outliers removed")
    plot_mean_rings(phi, {"mean ring": mean_ring, "mean difference ring (pairs)": mean_diff,
                          "rms difference ring": rms_diff}, ax=a2,
                    title="Mean ring vs mean difference ring")
    a2.axhline(0, color="0.3", lw=0.6)
    png = save_figure(fig, ctx.path("bragg_ring.png"), inputs=[ctx.files["run"]])
    # The point of pairing: the detector/beam anisotropy in the mean ring cancels in the differences.
    ctx.data["bragg_ring"] = dict(mean_ring=mean_ring, mean_difference=mean_diff, rms_difference=rms_diff)
    return {"bragg_ring": png}


#: The demo's steps, in order: (name, function).
STEPS: List[Tuple[str, Step]] = [
    ("pilatus", step_pilatus),
    ("simulate", step_simulate),
    ("poni", step_poni),
    ("ring_fit", step_ring_fit),
    ("analysis", step_analysis),
    ("analysis_q", step_analysis_q),
    ("legendre", step_legendre),
    ("figures", step_figures),
    ("bragg_ring", step_bragg_ring),
]


def add_step(name: str, func: Step, *, after: Optional[str] = None) -> None:
    """Add a step to the demo (at the end, or right after step `after`).

    Parameters
    ----------
    name : str
        Name of the step (unique).
    func : callable
        ``func(ctx: DemoContext) -> dict`` of the files it wrote, by name.
    after : str, optional
        Name of the step it follows.
    """
    if any(n == name for n, _ in STEPS):
        raise ValueError(f"demo step {name!r} exists already")
    if after is None:
        STEPS.append((name, func))
        return
    names = [n for n, _ in STEPS]
    if after not in names:
        raise ValueError(f"no demo step {after!r}; steps: {names}")
    STEPS.insert(names.index(after) + 1, (name, func))


def run_demo(out_dir: Union[str, Path] = "xcca-demo", *, n_frames: int = 100, seed: int = 0, quiet: bool = False,
             backend: str = "xcca", steps: Optional[List[str]] = None,
             report: Optional[Callable[[str], None]] = None) -> Dict[str, Path]:
    """Run the demo's steps into a directory.

    Parameters
    ----------
    out_dir : str or Path
        Output directory (created if needed).
    n_frames : int
        Frames of the simulated run (at least 2).
    seed : int
        Seed of the synthetic data.
    quiet : bool
        No progress bars.
    backend : str
        "xcca" (default) or "numpy" (the NumPy baseline of the analysis).
    steps : list of str, optional
        Run only these steps (and nothing they depend on is added automatically).
    report : callable, optional
        Called with one line of text after each step (the CLI prints them).

    Returns
    -------
    dict of str to Path
        Every file written, by name; ``"_summary"`` holds the joined step lines (a str).
    """
    if int(n_frames) != n_frames or n_frames < 2:
        raise ValueError(f"n_frames must be an integer >= 2, got {n_frames}")
    from .plot import _mpl

    _mpl()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(out=out, n_frames=int(n_frames), seed=int(seed), quiet=quiet, backend=backend)
    for name, func in list(STEPS):
        if steps is not None and name not in steps:
            continue
        t0 = time.perf_counter()
        n_log = len(ctx.log)
        files = func(ctx) or {}
        ctx.files.update(files)
        dt = time.perf_counter() - t0
        _log.info("demo step %s: %.2f s, wrote %s", name, dt, ", ".join(str(p) for p in files.values()))
        if report is not None:
            for line in ctx.log[n_log:]:
                report(f"{line} ({dt:.1f} s)")
    paths: Dict[str, Any] = dict(ctx.files)
    paths["_summary"] = "; ".join(ctx.log)
    paths["_context"] = ctx
    return paths
