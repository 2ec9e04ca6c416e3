"""xcca.io.read_image: fabio formats (CBF round trip, truncated CBF) and HDF5 path forms."""
from __future__ import annotations

import fabio
import h5py
import hdf5plugin
import numpy as np
import pytest

import xcca
from xcca.io import read_image, split_hdf5_path


@pytest.fixture(scope="module")
def pilatus_cbf(tmp_path_factory):
    frame = xcca.datasets.pilatus6m()
    path = tmp_path_factory.mktemp("cbf") / "frame_00001.cbf"
    fabio.cbfimage.CbfImage(data=frame).write(str(path))
    return path, frame


def test_cbf_round_trip(pilatus_cbf):
    path, frame = pilatus_cbf
    data = read_image(path)
    assert data.shape == frame.shape and data.dtype.kind == "i"
    np.testing.assert_array_equal(data, frame)
    np.testing.assert_array_equal(read_image(str(path), frame=0), frame)
    # ...and it makes the same thumbnail as the array it was written from
    np.testing.assert_array_equal(xcca.make_thumbnail(data), xcca.make_thumbnail(frame))


@pytest.mark.parametrize("keep", [0.5, 0.999, 0.3, 0.0])
def test_truncated_cbf(pilatus_cbf, tmp_path, keep):
    path, _ = pilatus_cbf
    raw = path.read_bytes()
    start = raw.find(b"\x0c\x1a\x04\xd5")
    cut = int(start + keep * (len(raw) - start)) if keep else start // 2  # 0.0: cut inside the header
    bad = tmp_path / "truncated.cbf"
    bad.write_bytes(raw[:cut])
    with pytest.raises(OSError, match="truncated.cbf"):
        read_image(bad)


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.cbf"):
        read_image(tmp_path / "nope.cbf")
    junk = tmp_path / "junk.edf"
    junk.write_bytes(b"this is not an image" * 3)
    with pytest.raises(OSError, match="junk.edf"):
        read_image(junk)
    with pytest.raises(OSError):
        read_image(tmp_path)  # a directory


@pytest.mark.parametrize("fmt, cls, dtype", [
    ("edf", "edfimage", np.float32),
    ("tif", "tifimage", np.uint16),
    ("cbf", "cbfimage", np.int32),
])
def test_fabio_formats(tmp_path, fmt, cls, dtype):
    data = (np.random.default_rng(3).integers(0, 5000, (37, 51))).astype(dtype)
    path = tmp_path / f"img.{fmt}"
    img = {"edfimage": fabio.edfimage.EdfImage, "tifimage": fabio.tifimage.TifImage,
           "cbfimage": fabio.cbfimage.CbfImage}[cls](data=data)
    img.write(str(path))
    got = read_image(path)
    np.testing.assert_array_equal(got, data)


@pytest.fixture()
def h5file(tmp_path):
    path = tmp_path / "eiger_master.h5"
    stack = np.random.default_rng(4).integers(0, 60000, (3, 40, 30)).astype(np.uint32)
    with h5py.File(path, "w") as f:
        f.create_dataset("/entry/data/data", data=stack, chunks=(1, 40, 30), **hdf5plugin.Bitshuffle(cname="lz4"))
        f.create_dataset("/entry/image", data=stack[0].astype(">f4"))
        f.create_dataset("/entry/vector", data=np.arange(5))
    return path, stack


def test_hdf5_path_forms(h5file):
    path, stack = h5file
    np.testing.assert_array_equal(read_image(f"{path}::/entry/data/data", frame=1), stack[1])
    np.testing.assert_array_equal(read_image(path, dataset="/entry/data/data", frame=-1), stack[2])
    np.testing.assert_array_equal(read_image(f"{path}::/entry/data/data"), stack)  # whole stack
    img = read_image(f"{path}::entry/image")
    np.testing.assert_array_equal(img, stack[0].astype(np.float32))
    np.testing.assert_array_equal(read_image(f"{path}::entry/image", frame=0), img)
    assert split_hdf5_path("a/b.h5::/x/y") == ("a/b.h5", "/x/y")
    assert split_hdf5_path("a/b.cbf") == ("a/b.cbf", None)


def test_hdf5_errors(h5file, tmp_path):
    path, _ = h5file
    with pytest.raises(ValueError, match="needs a dataset"):
        read_image(path)
    with pytest.raises(ValueError, match="no dataset"):
        read_image(f"{path}::/entry/missing")
    with pytest.raises(ValueError, match="group"):
        read_image(f"{path}::/entry/data")
    with pytest.raises(ValueError, match="shape"):
        read_image(f"{path}::/entry/vector")
    with pytest.raises(IndexError, match="frame"):
        read_image(f"{path}::/entry/data/data", frame=3)
    with pytest.raises(ValueError, match="twice"):
        read_image(f"{path}::/entry/image", dataset="/entry/data/data")
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.h5::/entry/data")
    fake = tmp_path / "fake.h5"
    fake.write_bytes(b"not hdf5 at all")
    with pytest.raises(OSError, match="fake.h5"):
        read_image(fake, dataset="/x")


def test_hdf5_without_suffix_is_detected(tmp_path):
    path = tmp_path / "data.bin"
    with h5py.File(path, "w") as f:
        f["d"] = np.ones((4, 4), np.int32)
    with pytest.raises(ValueError, match="needs a dataset"):
        read_image(path)
    np.testing.assert_array_equal(read_image(path, dataset="d"), np.ones((4, 4)))


def test_real_hdf5(data_dir):
    rings = read_image(data_dir / "bragg_rings.hdf5", dataset="111_Bragg_rings")
    assert rings.shape == (14, 5000) and rings.dtype == np.uint16
    with pytest.raises(ValueError, match="111_mask"):  # 1-D: not an image
        read_image(f"{data_dir / 'bragg_rings.hdf5'}::111_mask")
