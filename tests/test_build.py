"""The compiled modules are built and agree with the package metadata."""
from __future__ import annotations

import importlib.metadata
import os

import xcca
from xcca import _binning, _core


def test_version_matches_metadata():
    assert xcca.__version__ == importlib.metadata.version("xcca") == _core.version()


def test_usable_cores_is_affinity():
    assert _core.usable_cores() == len(os.sched_getaffinity(0))


def test_sources_not_shipped():
    pkg = os.path.dirname(xcca.__file__)
    assert not [f for f in os.listdir(pkg) if f.endswith((".pyx", ".cpp", ".hpp"))]
    assert _binning.__file__.endswith((".so", ".pyd"))
