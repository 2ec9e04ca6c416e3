"""Every module gap of a Pilatus 6M frame is visible in its thumbnail, at any size from 200 to 1000 px."""
from __future__ import annotations

import numpy as np
import pytest

from xcca import make_thumbnail
from xcca.datasets import pilatus6m, pilatus_gap_mask
from xcca.thumbnail import _runs

BLUE = (40, 110, 200)
FRAME = pilatus6m(0)
GAPS = pilatus_gap_mask()
ROW_GAPS = _runs(~GAPS.any(axis=1))  # 11 horizontal gaps (17 rows each)
COL_GAPS = _runs(~GAPS.any(axis=0))  # 4 vertical gaps (7 columns each)

# Every size would take minutes; these cover all binning factors 2..12 and the awkward resampling ratios.
SIZES = sorted({200, 201, 211, 229, 240, 250, 256, 280, 299, 300, 301, 317, 337, 360, 400, 421, 450, 486, 500,
                512, 600, 633, 700, 768, 800, 843, 900, 999, 1000})


def _masked_lines(rgb, axis):
    """Runs of thumbnail rows (axis=0) or columns (axis=1) that are entirely the masked colour."""
    blue = np.all(rgb == np.array(BLUE, np.uint8), axis=2)
    return _runs(blue.all(axis=1 - axis))


def _check(rgb, n_det, gaps, axis):
    n_out = rgb.shape[axis]
    lines = _masked_lines(rgb, axis)
    assert len(lines) == len(gaps), (len(lines), len(gaps))
    for (a, b), (la, lb) in zip(gaps, lines):
        # The masked line lies where the gap is: within the thumbnail span of detector rows [a, b), ±1 pixel.
        lo, hi = a * n_out / n_det, b * n_out / n_det
        assert lo - 1 <= la and lb - 1 <= hi + 1, ((a, b), (la, lb), n_out)


def test_gap_census():
    assert len(ROW_GAPS) == 11 and len(COL_GAPS) == 4
    assert set(ROW_GAPS[:, 1] - ROW_GAPS[:, 0]) == {17} and set(COL_GAPS[:, 1] - COL_GAPS[:, 0]) == {7}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dilate", [None, 3])
def test_every_gap_visible(size, dilate):
    rgb = make_thumbnail(FRAME, size=size, dilate=dilate)
    assert max(rgb.shape[:2]) == size
    _check(rgb, FRAME.shape[0], ROW_GAPS, 0)
    _check(rgb, FRAME.shape[1], COL_GAPS, 1)


@pytest.mark.parametrize("size, dilate", [(256, 10), (300, 5), (733, 10)])
def test_gaps_survive_strong_dilation_and_sum_mode(size, dilate):
    for mode in ("max", "sum"):
        rgb = make_thumbnail(FRAME, size=size, dilate=dilate, mode=mode)
        _check(rgb, FRAME.shape[0], ROW_GAPS, 0)
        _check(rgb, FRAME.shape[1], COL_GAPS, 1)


def test_show_gaps_false_is_the_plain_binning():
    rgb = make_thumbnail(FRAME, size=300, show_gaps=False)
    assert len(_masked_lines(rgb, 1)) < 4  # 7-px gaps vanish under max-binning by 8: why show_gaps exists


def test_no_gap_lines_without_gaps():
    img = np.random.default_rng(0).integers(0, 100, (500, 400)).astype(np.int32)
    rgb = make_thumbnail(img, size=200)
    assert not len(_masked_lines(rgb, 0)) and not len(_masked_lines(rgb, 1))
    img[:, 100:103] = -1  # one 3-column gap, narrower than a thumbnail pixel (2.5 px)
    rgb = make_thumbnail(img, size=160)
    assert len(_masked_lines(rgb, 1)) == 1 and not len(_masked_lines(rgb, 0))
