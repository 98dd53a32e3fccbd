"""ChIP-seq fine-tuning: a fresh head on a pretrained trunk through the training code, with the
trunk frozen (bit-identical) or trained, learning planted ChIP tracks; resume; the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import centre_bins, planted_text, reverse_complement_text, write_window_shard
from safetensors.torch import load_file

from flashrna.cli import main as cli_main
from flashrna.data import ShardSet
from flashrna.finetune.chip import chip_settings
from flashrna.genome import encode_sequence
from flashrna.model import build_model, load_model, predict, save_model
from flashrna.tracks import TrackTable
from flashrna.training.config import load_config
from flashrna.training.trainer import train
from flashrna.utils import FlashRNAError

SEQ_LENGTH = 1024
CROP_BINS = 8
MOTIF = "CCTAGGTC"  # not its own reverse complement


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: the tiny model gains nothing from two, and on a busy 2-core machine
    OpenMP's spinning threads would slow it several-fold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_chip_shards(root: Path, counts=None, seed: int = 0) -> Path:
    """Random windows with a motif planted three times in each orientation.

    Tracks (unstranded, 32-bp bins; targets: the central 16 of 32 bins): ``DNASE`` is 2 in the
    bin of each occurrence's centre and 1 in the bins beside it (the pretraining track);
    ``CHIP_centre`` is 3 in the centre bins only, ``CHIP_flank`` 1 in the bins beside them only
    (the fine-tuning tracks: new readouts of what the trunk learnt). Occurrences are found by
    scanning, so the targets are an exact function of the sequence."""
    counts = counts or {"train": 96, "valid": 32, "test": 32}
    rng = np.random.default_rng(seed)
    names = ["DNASE", "CHIP_centre", "CHIP_flank"]
    table = TrackTable(
        pd.DataFrame(
            {
                "identifier": names,
                "file": [f"{n}.bw" for n in names],
                "clip": 384.0,
                "clip_soft": 320.0,
                "scale": 1.0,
                "sum_stat": "sum",
                "strand_pair": range(3),
                "description": [f"{n.split('_')[0]}:planted {n}" for n in names],
                "source_index": range(3),
            }
        ),
        source="planted ChIP tracks",
    )
    bins = SEQ_LENGTH // 32
    words = (MOTIF, reverse_complement_text(MOTIF))
    start = 0
    for label, n in counts.items():
        sequences = np.empty((n, SEQ_LENGTH), np.uint8)
        centre = np.zeros((n, bins), bool)
        for k in range(n):
            text = planted_text(rng, SEQ_LENGTH, words)
            sequences[k] = encode_sequence(text)
            for word in words:
                centre[k, list(centre_bins(text, word))] = True
        beside = np.zeros_like(centre)
        beside[:, 1:] |= centre[:, :-1]
        beside[:, :-1] |= centre[:, 1:]
        beside &= ~centre
        targets = np.stack([2.0 * centre + beside, 3.0 * centre, 1.0 * beside], axis=-1)
        start = write_window_shard(
            root / f"{label}-0",
            sequences,
            targets,
            table,
            label=label,
            start=start,
            crop_bins=CROP_BINS,
        )
    return root


QUIET = [
    "data.num_workers=0",
    "data.max_shift=32",
    "log.progress=false",
    "log.tensorboard=false",
    "log.every_steps=10",
]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_chip_shards(tmp_path_factory.mktemp("chip-shards"))


@pytest.fixture(scope="module")
def pretrained(shards, tmp_path_factory) -> Path:
    """A tiny model trained briefly on the DNASE track only."""
    config = load_config(
        overrides=[
            "model.preset=tiny",
            f"data.species.human.shards={json.dumps(str(shards))}",
            'data.species.human.assays=["DNASE"]',
            "train.steps=120",
            "train.batch_size=8",
            "train.learning_rate=3e-3",
            "train.warmup_steps=10",
            "train.clip_grad_norm=1.0",
            "validation.every_steps=120",
            "validation.final_model=last",
            *QUIET,
        ]
    )
    out = tmp_path_factory.mktemp("pretrained")
    assert train(config, out, "cpu").status == "finished"
    return out / "model"


FINETUNE = [
    "train.batch_size=8",
    "train.learning_rate=3e-3",
    "train.clip_grad_norm=1.0",
    "validation.every_steps=40",
    "validation.max_examples=null",
    *QUIET,
]


def chip_config(pretrained: Path, shards: Path, mode: str) -> dict:
    """10 epochs of the 96 training windows (120 steps)."""
    settings = chip_settings(str(pretrained), [str(shards)], mode, epochs=10, warmup_steps=5)
    return load_config(overrides=[*settings, *FINETUNE])


def trunk_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    weights = load_file(str(model_dir / "model.safetensors"))
    return {k: v for k, v in weights.items() if k.startswith("trunk.")}


def test_settings_per_mode():
    head = load_config(overrides=chip_settings("pre/model", ["s"], "head"))
    assert head["model"]["init"] == "pre/model"
    assert head["train"]["trunk_lr_scale"] == 0.0
    assert head["train"]["epochs"] == 3
    assert head["data"]["species"]["chip"]["assays"] == ["CHIP"]
    dropouts = head["model"]["overrides"]
    assert dropouts == {"attention_dropout": 0.0, "mlp_dropout": 0.0, "residual_dropout": 0.0}
    full = load_config(overrides=chip_settings("pre/model", ["s"], "full", head="tf"))
    assert full["train"]["trunk_lr_scale"] == 0.1
    assert full["model"]["overrides"] == {}
    assert full["data"]["species"]["tf"]["shards"] == ["s"]
    with pytest.raises(FlashRNAError, match="head name"):
        chip_settings("m", ["s"], head="a.b")
    with pytest.raises(FlashRNAError, match="mode"):
        chip_settings("m", ["s"], mode="trunk")


def test_pretrained_trunk_learnt_the_motif(pretrained):
    """The pretraining worked (else the head-only result below would prove little)."""
    summary = json.loads((pretrained.parent / "metrics.json").read_text())
    assert summary["validation"]["pearson"]["human"]["DNASE"] > 0.6


def chip_pearson(model_dir: Path, shards: Path, head: str = "chip") -> list[float]:
    """Independent check: forward + reverse-complement averaged predictions for the test
    windows, Pearson per CHIP track over all their target bins, with NumPy."""
    test = ShardSet(shards, split="test")
    sequences = np.stack([test.sequence(i) for i in range(len(test))])
    targets = np.stack([test.targets(i) for i in range(len(test))]).astype(np.float64)
    model = load_model(model_dir)
    prediction = predict(model, sequences, head, batch_size=16, crop_bins=CROP_BINS).double()
    chip = np.flatnonzero(test.tracks.assay == "CHIP")
    return [
        np.corrcoef(prediction[..., k].numpy().ravel(), targets[..., t].ravel())[0, 1]
        for k, t in enumerate(chip)
    ]


@pytest.fixture(scope="module")
def head_run(pretrained, shards, tmp_path_factory) -> Path:
    """Head-only fine-tuning through the command line."""
    out = tmp_path_factory.mktemp("head") / "run"
    argv = ["finetune", "chip", "--model", str(pretrained), "--shards", str(shards)]
    argv += ["--out", str(out), "--epochs", "10", "--warmup-steps", "5", "--device", "cpu"]
    assert cli_main(argv + [f"--set={s}" for s in FINETUNE]) == 0
    return out


def test_head_mode_learns_chip_on_a_frozen_trunk(head_run, pretrained, shards):
    """A fresh head on the frozen pretrained trunk learns both CHIP tracks; the trunk is
    bit-identical. Threshold 0.7: the targets are exact functions of the sequence (a perfect
    model reaches 1) and the same head on a random trunk stays near 0 (next test)."""
    model_dir = head_run / "model"
    before, after = trunk_weights(pretrained), trunk_weights(model_dir)
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    assert min(chip_pearson(model_dir, shards)) > 0.7
    summary = json.loads((head_run / "metrics.json").read_text())
    assert summary["steps"] == 120  # 10 epochs of 96 windows at batch 8
    assert summary["validation"]["pearson"]["chip"]["CHIP"] > 0.6
    model = load_model(model_dir)
    assert model.config.heads == {"chip": 2}
    table = TrackTable.read(model_dir / "targets-chip.txt")
    assert table.identifier.tolist() == ["CHIP_centre", "CHIP_flank"]
    # The shared projection started fresh, not from the pretrained one.
    pretrained_head = load_file(str(pretrained / "model.safetensors"))["shared_head.0.weight"]
    assert not torch.equal(model.shared_head[0].weight.detach(), pretrained_head)


def test_head_mode_on_a_random_trunk_learns_little(shards, tmp_path):
    """Control for the threshold above: the same head-only run on an untrained trunk."""
    torch.manual_seed(0)
    save_model(build_model("tiny"), tmp_path / "random")
    config = chip_config(tmp_path / "random", shards, "head")
    assert train(config, tmp_path / "run", "cpu").status == "finished"
    assert max(chip_pearson(tmp_path / "run" / "model", shards)) < 0.4


def test_full_mode_trains_the_trunk(pretrained, shards, tmp_path):
    config = chip_config(pretrained, shards, "full")
    assert train(config, tmp_path, "cpu").status == "finished"
    before, after = trunk_weights(pretrained), trunk_weights(tmp_path / "model")
    changed = [key for key in before if not torch.equal(before[key], after[key])]
    assert len(changed) == len(before)  # every trunk tensor moved
    assert min(chip_pearson(tmp_path / "model", shards)) > 0.7


def test_head_mode_resumes_exactly(head_run, pretrained, shards, tmp_path):
    """Stopped at step 50 and restarted (the trunk frozen again on restore), the run ends with
    the weights of the uninterrupted one."""
    config = chip_config(pretrained, shards, "head")
    assert train(config, tmp_path, "cpu", stop_at_step=50).status == "stopped"
    assert train(config, tmp_path, "cpu").status == "finished"
    a = load_file(str(tmp_path / "model" / "model.safetensors"))
    b = load_file(str(head_run / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_evaluate_tracks_scores_the_chip_model(head_run, shards, tmp_path):
    """``evaluate-tracks`` reads the fine-tuned model directory and agrees with NumPy."""
    model_dir = head_run / "model"
    argv = ["evaluate-tracks", "--data", str(shards), "--split", "test", "--out", str(tmp_path)]
    argv += ["--model", str(model_dir), "--head", "chip", "--assays", "CHIP"]
    argv += ["--targets", str(model_dir / "targets-chip.txt"), "--num-workers", "0"]
    assert cli_main([*argv, "--device", "cpu", "--batch-size", "8"]) == 0
    tracks = pd.read_csv(tmp_path / "tracks.csv")
    np.testing.assert_allclose(
        tracks["pearson_squashed"], chip_pearson(model_dir, shards), atol=1e-4
    )


def test_print_config_names_the_pretrained_trunk(tmp_path, capsys):
    argv = ["finetune", "chip", "--model", "pre/model", "--shards", "a", "b", "--mode", "full"]
    assert cli_main([*argv, "--assays", "all", "--print-config"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["init"] == "pre/model"
    assert config["data"]["species"]["chip"] == {
        "shards": ["a", "b"],
        "assays": None,
        "genome": None,
        "teacher": None,
    }
    assert config["train"]["trunk_lr_scale"] == 0.1
