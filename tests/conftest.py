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


def save_tiny_model(directory, tracks, seed: int = 0, **overrides):
    """Save a randomly initialised ``tiny`` FlashRNA model whose human head has one output per
    row of the TrackTable ``tracks`` (strand pairs set) and ``tracks`` as its
    ``targets-human.txt``, as ``flashrna train`` writes it."""
    from flashrna.model import build_model, save_model

    torch.manual_seed(seed)
    model = build_model("tiny", heads={"human": len(tracks)}, **overrides)
    model.set_strand_pair("human", tracks.strand_pair)
    save_model(model, directory)
    tracks.write(Path(directory) / "targets-human.txt")
    return Path(directory)
