"""The Dask driver (xcca.distributed, xcca.analyze(client=)) against the local driver, on a LocalCluster of worker
processes on loopback; and the chunk protocol both drivers share (xcca.stages)."""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

import xcca
from xcca import stages
from xcca.simulate import RunGeometry, simulate_frames, simulate_run

distributed = pytest.importorskip("distributed")

GEOM = RunGeometry(shape=(120, 128), center=(63.4, 58.7), distance=0.00559)
KW = dict(qmin=25, qmax=50, nphi=64)
ARRAYS = ("raw_correlation", "difference_correlation", "difference_correlation_norm", "mean_polar", "radial_profile",
          "pairs", "pair_distances", "unpaired", "frames", "fit_rms", "fit_ok", "ring_intensity", "n_outliers")


class _Sym:
    """A symbolic sum: records the grouping."""

    def __init__(self, s):
        self.s = s

    def __add__(self, other):
        return _Sym(f"({self.s}+{other.s})")


@pytest.mark.parametrize("n", list(range(1, 40)) + [64, 100, 257])
def test_streaming_tree_sum_groups_like_tree_sum(n):
    items = [_Sym(str(i)) for i in range(n)]
    t = stages.TreeSum()
    for it in items:
        t.push(it)
    assert t.result().s == stages.tree_sum(items).s


def test_tree_sum_folds_blocks_of_binary_trees():
    # 130 items: blocks of 64, 64, 2; each a binary tree, the block sums added in order
    items = [_Sym(str(i)) for i in range(130)]

    def tree(xs):
        while len(xs) > 1:
            xs = [xs[i] + xs[i + 1] for i in range(0, len(xs) - 1, 2)] + ([xs[-1]] if len(xs) % 2 else [])
        return xs[0]

    want = (tree(items[:64]) + tree(items[64:128])) + tree(items[128:])
    assert stages.tree_sum(items).s == want.s
    # any aligned power-of-two group of at most 64 items is a subtree
    for g in (1, 2, 8, 64):
        groups = [stages.tree_sum(items[i:i + g]) for i in range(0, 130, g)]
        blocks = [stages.tree_sum(groups[i:i + 64 // g]) for i in range(0, len(groups), 64 // g)]
        acc = blocks[0]
        for b in blocks[1:]:
            acc = acc + b
        assert acc.s == want.s


def test_streaming_tree_sum_holds_a_bounded_number_of_partials():
    t = stages.TreeSum()
    for i in range(5000):
        t.push(_Sym(str(i)))
        assert len(t._stack) <= 7
    assert t.result().s == stages.tree_sum([_Sym(str(i)) for i in range(5000)]).s


def test_chunk_results_add_in_chunk_order():
    a = stages.ChunkResult({"x": stages.Accumulator.of(np.ones((2, 3)))}, {"frames": np.array([0, 1])},
                           [(2, "all zero")], timings={"polar": 1.0})
    b = stages.ChunkResult({"y": 5}, {"frames": np.array([3])}, [(4, "bad")], timings={"polar": 2.0, "fit": 1.0})
    c = a + b
    assert c.shots["frames"].tolist() == [0, 1, 3] and c.skipped == [(2, "all zero"), (4, "bad")]
    assert c.accumulators["y"] == 5 and c.accumulators["x"].count.tolist() == [2, 2, 2]
    assert c.timings == {"polar": 3.0, "fit": 1.0} and a.timings == {"polar": 1.0}  # operands unchanged


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    return simulate_run(tmp_path_factory.mktemp("drun") / "run.h5", 30, GEOM, seed=7, corrupt=(4, 17))


def _assert_identical(a, b):
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and x.dtype == y.dtype, name
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f"{name} differs"
    assert a.skipped == b.skipped
    assert a.parameters["center"] == b.parameters["center"]


def test_dask_run_is_bit_identical_to_local(client, run_file):
    kw = dict(dataset="/entry/data/data", mask=f"{run_file}::/entry/mask", center="auto", chunk=4,
              wavelength=1.3, q=GEOM.q(np.arange(25, 50)), **KW)
    local = xcca.analyze(run_file, **kw)
    steps = []
    dist = xcca.analyze(run_file, client=client, progress=lambda *a: steps.append(a), **kw)
    _assert_identical(local, dist)
    assert [i for i, _ in dist.skipped] == [4, 17] and len(dist.pairs) >= 10
    assert dist.parameters["driver"] == "dask" and steps[-1][1] == steps[-1][2] == 60
    np.testing.assert_array_equal(local.cos_psi, dist.cos_psi)


def test_outliers_in_the_first_frame_do_not_change_the_fits(client, tmp_path):
    # Regression: the local driver built the profile projector from the first frame's valid samples *after* outlier
    # removal, the Dask driver from the geometry alone, so fits (fit_rms, pair distances) differed between them.
    import h5py

    run = simulate_run(tmp_path / "run.h5", 12, GEOM, seed=11)
    r = 37.0
    with h5py.File(run, "r+") as f:
        d = f["/entry/data/data"]
        fr = d[0]
        yy, xx = np.indices(fr.shape)
        rr = np.hypot(yy - GEOM.center[1], xx - GEOM.center[0])
        hot = np.flatnonzero(np.abs(rr - r) < 0.5)[::7]
        fr.reshape(-1)[hot] = np.iinfo(fr.dtype).max if fr.dtype.kind in "ui" else 1e6
        d[0] = fr
    kw = dict(dataset="/entry/data/data", mask=f"{run}::/entry/mask", center=GEOM.center, chunk=4,
              ring_for_pairing=r, **KW)
    local = xcca.analyze(run, **kw)
    dist = xcca.analyze(run, client=client, **kw)
    assert local.n_outliers[0] > 0
    _assert_identical(local, dist)


def test_group_size_is_a_power_of_two_leaving_four_tasks_per_thread():
    from xcca.distributed import group_size

    assert group_size(12, 2) == 1 and group_size(16, 2) == 2 and group_size(31, 2) == 2 and group_size(32, 2) == 4
    assert group_size(10**6, 64) == 64 and group_size(0, 2) == 1 and group_size(100, 0) == 16


def test_chunks_grouped_per_task_keep_the_bits(client, run_file):
    # 30 chunks of 1 frame on 2 worker threads: tasks of 2 chunks (pass 1) and of 2 pair chunks (pass 2), and the
    # tree over the groups is the local tree over the chunks.
    from xcca.distributed import group_size

    assert group_size(30, 2) == 2
    kw = dict(dataset="/entry/data/data", mask=f"{run_file}::/entry/mask", center=GEOM.center, chunk=1, **KW)
    _assert_identical(xcca.analyze(run_file, **kw), xcca.analyze(run_file, client=client, **kw))


def test_runs_of_more_than_one_reduction_block_keep_the_bits(client, tmp_path):
    # 80 chunks of one frame: two blocks of the reduction (64 + 16), tasks of 8 chunks on 2 worker threads
    run = simulate_run(tmp_path / "run.h5", 80, GEOM, seed=5)
    kw = dict(dataset="/entry/data/data", mask=f"{run}::/entry/mask", center=GEOM.center, chunk=1, **KW)
    _assert_identical(xcca.analyze(run, **kw), xcca.analyze(run, client=client, **kw))


def test_corrupt_frames_on_workers_are_reported_as_locally(client, tmp_path):
    import fabio

    frames = np.stack(list(simulate_frames(7, GEOM, seed=3)))
    paths = []
    for k, fr in enumerate(frames):
        p = tmp_path / f"f{k}.edf"
        data = fr.astype(np.float32)
        if k == 2:
            data[5, 7] = np.nan
        fabio.edfimage.EdfImage(data=data).write(str(p))
        paths.append(str(p))
    (tmp_path / "bad.edf").write_bytes(b"not an image at all")
    paths.insert(4, str(tmp_path / "bad.edf"))
    kw = dict(center=GEOM.center, chunk=3, **KW)
    local = xcca.analyze(paths, **kw)
    dist = xcca.analyze(paths, client=client, **kw)
    _assert_identical(local, dist)
    reasons = dict(dist.skipped)
    assert set(reasons) == {2, 4} and "unreadable" in reasons[4] and "non-finite" in reasons[2]


def test_a_worker_killed_mid_run_changes_nothing(client, tmp_path):
    path = simulate_run(tmp_path / "long.h5", 80, GEOM, seed=11)
    kw = dict(dataset="/entry/data/data", center=GEOM.center, chunk=1, **KW)
    local = xcca.analyze(path, **kw)
    pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    seen = {}

    def progress(stage, done, total):
        if "killed_at" not in seen and done >= 4:
            os.kill(victim, signal.SIGKILL)
            seen["killed_at"] = done
            seen["total"] = total

    dist = xcca.analyze(path, client=client, progress=progress, **kw)
    assert seen["killed_at"] < seen["total"] // 2  # the worker died during pass 1
    _assert_identical(local, dist)
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it: the cluster is whole for the next test


def test_a_plugged_in_stage_runs_on_the_workers(client, run_file, monkeypatch):
    # A new partial result that adds, registered before the run: neither driver knows about it.
    def n_valid(polar, valid, plan):
        return stages.Accumulator(valid.sum(axis=0, dtype=np.float64), np.full(valid.shape[1:], len(polar)))

    monkeypatch.setitem(stages.PASS1_STAGES, "n_valid", n_valid)
    kw = dict(dataset="/entry/data/data", mask=f"{run_file}::/entry/mask", center=GEOM.center, chunk=4, **KW)
    local = xcca.analyze(run_file, **kw)
    dist = xcca.analyze(run_file, client=client, **kw)
    for res in (local, dist):
        acc = res.extras["n_valid"]
        assert (acc.count == len(res.frames)).all()
    np.testing.assert_array_equal(local.extras["n_valid"].total, dist.extras["n_valid"].total)


def test_dask_needs_files_the_workers_can_open(client):
    frames = np.stack(list(simulate_frames(3, GEOM, seed=1)))
    with pytest.raises(ValueError, match="files"):
        xcca.analyze(frames, client=client, center=GEOM.center, **KW)


def test_make_client_arguments():
    from xcca.distributed import make_client

    with pytest.raises(ValueError, match="exactly one"):
        make_client()
    with pytest.raises(ValueError, match="exactly one"):
        make_client("tcp://127.0.0.1:1", 2)
    with pytest.raises(ValueError, match=">= 1"):
        make_client(workers=0)
    t0 = time.perf_counter()
    with pytest.raises(OSError, match="scheduler"):
        make_client("tcp://127.0.0.1:9", timeout=1)  # nothing listens on the discard port
    assert time.perf_counter() - t0 < 20


def test_cli_correlate_on_local_workers(run_file, tmp_path, monkeypatch, capsys):
    from xcca import cli_analysis, distributed as xd

    args = [str(run_file), "--dataset", "/entry/data/data", "--center", f"{GEOM.center[0]},{GEOM.center[1]}",
            "--qmin", "25", "--qmax", "50", "--nphi", "64", "--chunk", "4", "-q"]
    # exit status 1: done, but the corrupt frames 4 and 17 were skipped (issue 10's exit-code convention)
    assert cli_analysis.main(["correlate", *args, "-o", str(tmp_path / "local.h5")]) == 1
    assert cli_analysis.main(["correlate", *args, "--workers", "1", "-o", str(tmp_path / "dask.h5")]) == 1
    a = xcca.AnalysisResult.read(tmp_path / "local.h5")
    b = xcca.AnalysisResult.read(tmp_path / "dask.h5")
    _assert_identical(a, b)
    assert b.parameters["driver"] == "dask"
    with pytest.raises(SystemExit):  # --scheduler and --workers exclude each other: a usage error
        cli_analysis.main(["correlate", *args, "--workers", "1", "--scheduler", "tcp://x:1", "-o", "x.h5"])
    def unreachable(*a, **k):
        raise OSError("cannot connect to the Dask scheduler at tcp://127.0.0.1:9: timed out")

    monkeypatch.setattr(xd, "make_client", unreachable)
    capsys.readouterr()
    assert cli_analysis.main(["correlate", *args, "--scheduler", "tcp://127.0.0.1:9",
                              "-o", str(tmp_path / "no.h5")]) == 2  # nothing done
    assert "scheduler" in capsys.readouterr().err and not (tmp_path / "no.h5").exists()
