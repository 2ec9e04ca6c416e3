"""Shared test fixtures: the real LOKI data beside the repository and the hypothesis profiles."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# XCCA_DATA_DIR overrides where the real detector data lives (default: ../shared/data beside the repository).
DATA_DIR = Path(os.environ.get("XCCA_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data"))

settings.register_profile(
    "default", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", deadline=None, max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("XCCA_HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Directory with test_img.npy, test_mask.npy and bragg_rings.hdf5 (skips when it is absent)."""
    if not (DATA_DIR / "test_img.npy").exists():
        msg = f"real LOKI data not found in {DATA_DIR} (set XCCA_DATA_DIR)"
        if os.environ.get("CI"):  # CI always has shared/ beside the clone: a missing file there is a failure
            pytest.fail(msg)
        pytest.skip(msg)
    return DATA_DIR
