"""Figures a scientist can read: an exact q axis, colour bars with units, mathtext that renders."""
from __future__ import annotations

import numpy as np
import pytest

from xcca import plot
from xcca.simulate import RunGeometry, q_of_radius, radius_of_q

GEOM = RunGeometry()


def _tick_positions(ax):
    """(q value, parent-axis radius) of every labelled tick of the secondary q axis, from the rendered figure."""
    fig = ax.figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    (sec,) = [c for c in ax.child_axes if c.get_xlabel().startswith("q")]
    out = []
    for tick in sec.xaxis.get_major_ticks():
        label = tick.label2.get_text() or tick.label1.get_text()
        if not label or not tick.get_visible():
            continue
        x_disp = sec.transData.transform((tick.get_loc(), 0))[0]
        r = ax.transData.inverted().transform((x_disp, 0))[0]
        lo, hi = ax.get_xlim()
        if lo <= r <= hi:
            out.append((float(label.replace("−", "-")), r))
    return out


def test_q_axis_ticks_sit_where_the_geometry_puts_them():
    radii = np.arange(115.0, 186.0)
    q = GEOM.q(radii)
    ax = plot.plot_radial_profile(radii, np.ones_like(radii), q=q)
    ax.set_xlim(100, 200)  # beyond the data: a clamped interpolation would pile the ticks up at the ends
    ticks = _tick_positions(ax)
    assert len(ticks) >= 3
    for qt, r in ticks:
        expect = radius_of_q(qt, GEOM.wavelength, GEOM.pixel_size, GEOM.distance)
        assert r == pytest.approx(expect, abs=0.02), (qt, r, expect)
    # The Au 111 peak reads q111 on the top axis.
    fwd, inv = plot.q_axis_functions(radii, q)
    assert fwd(GEOM.r111) == pytest.approx(2 * np.pi * np.sqrt(3) / 4.078, rel=1e-9)
    assert inv(fwd(np.array([50.0, 140.0, 250.0]))) == pytest.approx([50.0, 140.0, 250.0], rel=1e-9)


def test_q_axis_other_geometry_extrapolates_linearly():
    r = np.arange(10.0, 20.0)
    q = 0.1 * r + 0.01 * r ** 1.5  # not a flat detector
    fwd, inv = plot.q_axis_functions(r, q)
    assert fwd(r) == pytest.approx(q)
    slope = (q[-1] - q[-2]) / (r[-1] - r[-2])
    assert fwd(25.0) == pytest.approx(q[-1] + 6 * slope)  # not clamped at q[-1]
    assert inv(fwd(np.array([5.0, 15.5, 30.0]))) == pytest.approx([5.0, 15.5, 30.0])


def test_colour_bars_have_units_and_mathtext_renders():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    c = np.random.default_rng(0).normal(size=(5, 36))
    ax = plot.plot_correlation_map(c, np.arange(5.0), units="dimensionless")
    fig = ax.figure
    FigureCanvasAgg(fig).draw()  # mathtext that does not parse raises here
    labels = [a.get_ylabel() for a in fig.axes if a is not ax]
    assert any("dimensionless" in lab and r"\langle" in lab and "_{\\Delta}" in lab for lab in labels), labels
    assert not any("_Δ" in lab for lab in labels)
    ax = plot.plot_polar(np.ones((4, 10)), units="counts")
    assert any("(counts)" in a.get_ylabel() for a in ax.figure.axes if a is not ax)


def test_ring_fit_and_mean_ring_figures(tmp_path):
    img = np.random.default_rng(0).poisson(5, (64, 64)).astype(float)
    ax = plot.plot_ring_fit(img, (30.0, 31.0), 20.0, mask=img > 0)
    assert "centre (30.00, 31.00)" in [t.get_text() for t in ax.get_legend().get_texts()][1]
    phi = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    ax = plot.plot_mean_rings(phi, {"mean ring": np.cos(phi)}, fits={"fit": np.cos(phi)})
    p = plot.save_figure(ax.figure, tmp_path / "x.png")
    assert p.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError):
        plot.save_figure(ax.figure, p, inputs=[p])
    assert q_of_radius(0, 1, 1, 1) == 0
