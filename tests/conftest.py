"""Shared fixtures: tiny generated scans, and the shared real data where present."""

from pathlib import Path

import os

import numpy as np
import pytest
import torch

from dejitter.pipeline.common import deterministic_torch
from dejitter.reconstruction import reproject
from dejitter.training.synthesis import phantom

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# `make test` runs the tests in parallel (pytest-xdist, one worker per core): the in-process tests
# share the cores among the workers rather than oversubscribing them.
torch.set_num_threads(max(1, (os.cpu_count() or 2) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
deterministic_torch(torch, warn_only=False)


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


def pytest_collection_modifyitems(items):
    """Run the end-to-end tests first: under `make test`'s parallel workers the long runs start at
    once and the many short tests fill the gaps, rather than one long module running alone last."""
    items.sort(key=lambda item: not (item.get_closest_marker("workflow") or item.get_closest_marker("slurm")))
