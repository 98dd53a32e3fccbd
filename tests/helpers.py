"""Helpers the tests share (imported as ``from helpers import ...``): paths to the real reference
files, and planted-signal shards and models that tiny models learn in seconds on a CPU."""

from __future__ import annotations

import os
from collections.abc import Iterator
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


# Planted-signal shards for the training, prediction and fine-tuning tests (tests/test_train.py,
# tests/test_predict.py, tests/test_finetune.py): short inputs, so tiny models learn them in
# seconds on a CPU.
PLANTED_MOTIF = "GATTACAG"  # not its own reverse complement, so strands differ


def reverse_complement_text(word: str) -> str:
    return word[::-1].translate(str.maketrans("ACGT", "TGCA"))


def planted_text(rng, length: int, words: tuple[str, ...], copies: int = 3) -> str:
    """Random DNA of ``length`` bp with each of ``words`` written over it ``copies`` times at
    random places (in the order ``words * copies``; later copies may overwrite earlier ones)."""
    text = ["ACGT"[i] for i in rng.integers(0, 4, length)]
    for word in words * copies:
        at = int(rng.integers(0, length - len(word)))
        text[at : at + len(word)] = word
    return "".join(text)


def centre_bins(text: str, word: str) -> Iterator[int]:
    """The 32-bp bin of the centre of every occurrence of ``word`` in ``text`` (found by
    scanning, overlapping and chance occurrences included)."""
    at = text.find(word)
    while at >= 0:
        yield (at + len(word) // 2) // 32
        at = text.find(word, at + 1)


def write_window_shard(
    path: Path, sequences, targets, table, *, label: str, start: int, crop_bins: int
) -> int:
    """Write ``sequences`` (N, L) and uncropped ``targets`` (N, L/32, T) as a human shard of
    windows on ``chrP`` placed 2·L apart from ``start``, keeping the targets' central bins
    (``crop_bins`` dropped each side); returns the start of the next shard's windows."""
    import numpy as np
    import pandas as pd

    from flashrna.data import write_shard

    count, seq_length = sequences.shape
    bins = seq_length // 32
    starts = start + np.arange(count) * seq_length * 2 + crop_bins * 32
    windows = pd.DataFrame(
        {
            "chrom": "chrP",
            "start": starts,
            "end": starts + (bins - 2 * crop_bins) * 32,
            "label": label,
        }
    )
    crop = slice(crop_bins, bins - crop_bins)
    write_shard(path, sequences, targets[:, crop], windows, table, "human")
    return start + count * seq_length * 2


def write_planted_shards(
    root: Path,
    counts: dict[str, int] | None = None,
    *,
    seq_length: int = 2048,
    crop_bins: int = 8,
    seed: int = 0,
    per_shard: int = 32,
) -> Path:
    """Shards ``root/<label>-<i>`` of random DNA with the motif planted on both strands.

    Tracks (bins of 32 bp; targets cover the input minus ``crop_bins`` bins each side):
    ``RNA+``/``RNA-`` (a strand pair) are 3 in the bins holding the motif's centre on the
    forward/reverse strand; ``DNASE`` is 2 there (either strand) and 1 in the neighbouring bins.
    Occurrences are found by scanning, so chance ones count too: the targets are an exact
    function of the sequence."""
    import numpy as np
    import pandas as pd

    from flashrna.genome import encode_sequence
    from flashrna.tracks import TrackTable

    counts = counts or {"train": 64, "valid": 32, "test": 32}
    rng = np.random.default_rng(seed)
    bins = seq_length // 32
    words = (PLANTED_MOTIF, reverse_complement_text(PLANTED_MOTIF))
    table = TrackTable(
        pd.DataFrame(
            {
                "identifier": ["RNA+", "RNA-", "DNASE"],
                "file": ["rna+.bw", "rna-.bw", "dnase.bw"],
                "clip": [384.0] * 3,
                "clip_soft": [320.0] * 3,
                "scale": [1.0] * 3,
                "sum_stat": ["sum"] * 3,
                "strand_pair": [1, 0, 2],
                "description": ["RNA:planted +", "RNA:planted -", "DNASE:planted"],
                "source_index": [0, 1, 2],
            }
        ),
        source="planted tracks",
    )
    start = 0
    for label, count in counts.items():
        for shard, first in enumerate(range(0, count, per_shard)):
            n = min(per_shard, count - first)
            sequences = np.empty((n, seq_length), np.uint8)
            targets = np.zeros((n, bins, 3), np.float32)
            for k in range(n):
                text = planted_text(rng, seq_length, words)
                sequences[k] = encode_sequence(text)
                for track, word in enumerate(words):
                    for b in centre_bins(text, word):
                        targets[k, b, track] = 3.0
                        targets[k, max(b - 1, 0) : b + 2, 2] += 1.0
                        targets[k, b, 2] += 1.0
            targets[..., 2] = np.minimum(targets[..., 2], 2.0)
            start = write_window_shard(
                root / f"{label}-{shard}",
                sequences,
                targets,
                table,
                label=label,
                start=start,
                crop_bins=crop_bins,
            )
    return root


# A small, fast training config over planted shards (test_train.py, test_train_guards.py).
def tiny_config(shards: Path, species=("human",), **sections) -> dict:
    """A small, fast config: tiny preset, no workers, no progress bar; ``sections`` override."""
    from flashrna.training.config import load_config

    base = {
        "model": {"preset": "tiny"},
        "data": {
            "species": {name: {"shards": str(shards)} for name in species},
            "max_shift": 64,
            "num_workers": 0,
        },
        "train": {"steps": 6, "batch_size": 8, "learning_rate": 2e-3, "warmup_steps": 2},
        "validation": {"every_steps": 1000, "max_examples": 16, "final_model": "last"},
        "checkpoint": {"every_steps": 1000},
        "log": {"every_steps": 1, "progress": False, "tensorboard": False},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            base.setdefault(section, {}).update(values)
        else:
            base[section] = values
    return load_config(overrides=base)


# Comparing training runs (test_train.py, test_train_guards.py).
def weights(directory: Path) -> dict[str, torch.Tensor]:
    """The tensors of a model directory's model.safetensors."""
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def train_losses(out: Path) -> list[float]:
    """The training losses a run logged in metrics.jsonl, in order."""
    import json

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["kind"] == "train"]


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


# Import names of the third-party packages a job env may or may not hold (conda/pip name ->
# import name), for running a step with only its env's packages importable.
IMPORT_NAMES = {
    "pytorch-gpu": "torch",
    "numpy": "numpy",
    "pandas": "pandas",
    "scipy": "scipy",
    "safetensors": "safetensors",
    "pyyaml": "yaml",
    "jsonschema": "jsonschema",
    "pyfaidx": "pyfaidx",
    "biopython": "Bio",
    "pybigwig": "pyBigWig",
    "crc32c": "crc32c",
    "tqdm": "tqdm",
    "matplotlib": "matplotlib",
    "pyarrow": "pyarrow",
    "h5py": "h5py",
    "borzoi-pytorch": "borzoi_pytorch",
    "scikit-learn": "sklearn",
}

_BLOCKING_RUNNER = """
import importlib.abc, sys
blocked = set(sys.argv[1].split(",")) - {""}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is not in this step's job env (blocked by the test)")
        return None
sys.meta_path.insert(0, Block())
from flashrna.cli import main
sys.exit(main(sys.argv[2:]))
"""


def env_packages(env_file: Path) -> set[str]:
    """Import names of the packages a conda env file (``workflow/envs/*.yaml``) installs."""
    import re

    import yaml

    spec = yaml.safe_load(env_file.read_text())
    names = []
    for entry in spec["dependencies"]:
        for item in entry["pip"] if isinstance(entry, dict) else [entry]:
            names.append(re.match(r"[A-Za-z0-9_.-]+", item).group(0).lower())
    return {IMPORT_NAMES[n] for n in names if n in IMPORT_NAMES}


def run_in_env(env_file: Path, argv: list[str], cwd: Path | None = None):
    """Run ``flashrna <argv>`` in a subprocess in which only the third-party packages of
    ``env_file`` can be imported (every other package of :data:`IMPORT_NAMES` raises
    ImportError): what the step imports on this path must be in its job env."""
    import subprocess
    import sys

    blocked = set(IMPORT_NAMES.values()) - env_packages(env_file)
    return subprocess.run(
        [sys.executable, "-c", _BLOCKING_RUNNER, ",".join(sorted(blocked)), *argv],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
