"""Shared test fixtures: paths to the real reference files and a device fixture."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"


def fixture_path(relative: str) -> Path:
    """Path of a file under ``../shared/fixtures``; the test is skipped when it is absent
    (a user's clone without the shared folder)."""
    path = FIXTURES / relative
    if not path.exists():
        pytest.skip(f"reference fixture {path} is not present (it is beside the repo in CI)")
    return path


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request) -> torch.device:
    """Runs a test on the CPU, and again on CUDA when a GPU is present."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device(request.param)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
