"""Shared fixtures: tiny generated scans, and the shared real data where present."""

from pathlib import Path

import numpy as np
import pytest
import torch

from dejitter.reconstruction import reproject
from dejitter.training.synthesis import phantom

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

torch.set_num_threads(2)
torch.use_deterministic_algorithms(True)


@pytest.fixture(scope="session")
def tooth_path():
    path = SHARED_DATA / "tooth.h5"
    if not path.exists():
        pytest.skip(f"real data {path} is absent (it lives in the project's sibling folder shared/data)")
    return path


@pytest.fixture(scope="session")
def small_volume():
    """A 32^3 particle phantom with internal structure."""
    return phantom(32, "particle", np.random.default_rng(3))


@pytest.fixture(scope="session")
def theta_small():
    return np.deg2rad(np.linspace(0, 180, 61))


@pytest.fixture(scope="session")
def small_projections(small_volume, theta_small):
    return reproject(small_volume, theta_small, device="cpu")
