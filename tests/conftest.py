"""Shared test setup: marks (slow, workflow, gpu), the repository root, the artifacts folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)  # the test machines have 2 cores; more threads only contend

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    """Skip `gpu` tests where there is no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """`test-artifacts/`: files a test keeps for people to look at (screenshots, logs)."""
    path = REPO / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path
