"""Faults and bad input in training (issues 17 and 18): one checked config, one run per folder,
finished runs that name what changed, resumes that survive damaged checkpoints, full disks and
torn logs, loader errors that end the run, and a warning before the paper model crawls on a CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import (
    ROOT,
    assert_same_weights,
    tiny_config,
    train_losses,
    write_planted_shards,
)

from flashrna.cli import main as cli_main
from flashrna.model import flop_counts, model_config
from flashrna.training import trainer as trainer_module
from flashrna.training.checkpoint import checkpoint_dirs
from flashrna.training.config import (
    DEFAULTS,
    RULES,
    default_num_workers,
    flatten_config,
    load_config,
    resolve_config,
)
from flashrna.training.trainer import Trainer, train
from flashrna.utils import FlashRNAError


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    return write_planted_shards(tmp_path_factory.mktemp("planted"), {"train": 32, "valid": 8})


def digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def resumable(planted) -> dict:
    """Six steps of batch 4 with a checkpoint every two (the newest two kept); dropout and
    augmentation on, so a resume must restore RNGs and data positions exactly."""
    return tiny_config(
        planted,
        train={"steps": 6, "batch_size": 4, "warmup_steps": 2},
        checkpoint={"every_steps": 2, "keep": 2},
    )


@pytest.fixture(scope="module")
def uninterrupted(resumable, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    assert train(resumable, out, "cpu").status == "finished"
    return out


@pytest.fixture(scope="module")
def stopped_at_4(resumable, tmp_path_factory) -> Path:
    """A run stopped at step 4: checkpoints step-2 and step-4."""
    out = tmp_path_factory.mktemp("stopped")
    assert train(resumable, out, "cpu", stop_at_step=4).status == "stopped"
    assert [p.name for p in checkpoint_dirs(out)] == ["step-00000002", "step-00000004"]
    return out


# --------------------------------------------------------------------------------------------
# One validation layer
# --------------------------------------------------------------------------------------------

BAD_VALUES = [
    ("train.clip_grad_norm", -1, "a number > 0, or null"),
    ("train.clip_grad_norm", 0, "a number > 0, or null"),
    ("train.epochs", 0, "a number > 0, or null"),
    ("train.epochs", -2, "a number > 0, or null"),
    ("train.steps", 0, "a positive whole number"),
    ("train.steps", 2.5, "a positive whole number"),
    ("data.reverse_complement", "no", "true or false"),
    ("data.reverse_complement", 1, "true or false"),
    ("train.compile", "yes", "true or false"),
    ("train.weight_decay", -0.1, "a number ≥ 0"),
    ("train.warmup_steps", -1, "a whole number ≥ 0"),
    ("train.min_learning_rate_ratio", -0.5, r"a number in \[0, 1\]"),
    ("train.min_learning_rate_ratio", 1.5, r"a number in \[0, 1\]"),
    ("validation.patience", -1, "a positive whole number, or null"),
    ("validation.patience", 0, "a positive whole number, or null"),
    ("validation.max_examples", -5, "a positive whole number, or null"),
    ("train.learning_rate", "fast", "a number ≥ 0"),
    ("train.learning_rate", -1e-3, "a number ≥ 0"),
    ("train.learning_rate", float("nan"), "a number ≥ 0"),
    ("train.adam_betas", [0.9], r"two numbers in \[0, 1\)"),
    ("train.adam_betas", [0.9, 1.0], r"two numbers in \[0, 1\)"),
    ("train.adam_eps", 0, "a number > 0"),
    ("train.batch_size", True, "a positive whole number"),
    ("data.max_shift", -64, "a whole number ≥ 0"),
    ("data.num_workers", -1, "a whole number ≥ 0, or null"),
    ("seed", -1, "a whole number ≥ 0"),
    ("log.tensorboard", 1, "one of auto, true, false"),
    ("train.schedule", "step", "one of cosine, linear, constant"),
    ("distill.target_weight", 2, r"a number in \[0, 1\]"),
    ("data.species.human.shards", 5, "a folder or a list of folders"),
    ("data.species.human.assays", [1], "a list of assay names"),
    ("model.overrides", "dropout", "a mapping"),
]


@pytest.mark.parametrize(("key", "value", "expected"), BAD_VALUES)
def test_config_types_and_ranges_are_checked_naming_the_key(key, value, expected):
    config: dict = {"data": {"species": {"human": {"shards": "x"}}}}
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    pattern = rf"config {re.escape(key)}: expected {expected}.*got {re.escape(repr(value))}"
    with pytest.raises(FlashRNAError, match=pattern):  # the Python API
        resolve_config(config)
    # --set, as the CLI and the workflow pass values (YAML text; NaN arrives as a string)
    settings = ["data.species.human.shards=x", f"{key}={json.dumps(value)}"]
    with pytest.raises(FlashRNAError, match=rf"config {re.escape(key)}: expected {expected}"):
        load_config(overrides=settings)


def test_numbers_written_as_strings_are_numbers():
    config = load_config(overrides=["train.learning_rate=1e-3", "train.steps=1e4"])
    assert config["train"]["learning_rate"] == 0.001 and config["train"]["steps"] == 10_000
    assert isinstance(config["train"]["steps"], int)


def test_every_default_has_a_rule():
    assert set(flatten_config(DEFAULTS)) == set(RULES)


def test_bad_configs_are_refused_before_anything_is_written(planted, tmp_path, capsys):
    out = tmp_path / "run"
    config = {"data": {"species": {"human": {"shards": str(planted)}}}}
    with pytest.raises(FlashRNAError, match=r"config train\.clip_grad_norm: expected"):
        train({**config, "train": {"clip_grad_norm": -1}}, out, "cpu")
    with pytest.raises(FlashRNAError, match=r"config\.train: unknown key 'stpes'"):
        train({**config, "train": {"stpes": 5}}, out, "cpu")
    args = ["train", "--set", f"data.species.human.shards={planted}", "--out", str(out)]
    assert cli_main([*args, "--set", "train.epochs=0"]) == 1
    assert "config train.epochs: expected a number > 0" in capsys.readouterr().err
    assert not out.exists()
    missing = {"data": {"species": {"human": {"shards": str(tmp_path / "none")}}}}
    with pytest.raises(FlashRNAError, match=r"none: no such shard or folder of shards"):
        train(missing, out, "cpu")
    assert not out.exists()  # no empty run folder left behind


def test_num_workers_default_to_what_the_machine_has(monkeypatch):
    for cpus, processes, expected in ((1, 1, 0), (2, 1, 1), (8, 1, 4), (16, 4, 3), (8, 8, 0)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _, n=cpus: set(range(n)))
        assert default_num_workers(processes) == expected
    assert DEFAULTS["data"]["num_workers"] is None


# --------------------------------------------------------------------------------------------
# One run per folder; finished runs
# --------------------------------------------------------------------------------------------


def test_a_finished_run_under_another_config_names_the_changed_keys(
    resumable, uninterrupted, tmp_path, capsys
):
    before = digest(uninterrupted)
    assert train(resumable, uninterrupted, "cpu").status == "already-finished"
    quieter = {**resumable, "log": {**resumable["log"], "every_steps": 3}}
    assert train(quieter, uninterrupted, "cpu").status == "already-finished"
    changed = {**resumable, "seed": 1, "train": {**resumable["train"], "steps": 8}}
    with pytest.raises(
        FlashRNAError,
        match=r"finished under another config \(seed: 0 -> 1; train\.steps: 6 -> 8\)\. .* use "
        r"another --out",
    ):
        train(changed, uninterrupted, "cpu")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(resumable))
    args = ["train", "--config", str(path), "--out", str(uninterrupted), "--seed", "3"]
    assert cli_main(args) == 1
    assert "seed: 0 -> 3" in capsys.readouterr().err
    assert digest(uninterrupted) == before


def _run_cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def test_second_run_refused_and_kill_9_then_rerun_is_bit_identical(planted, tmp_path, caplog):
    # A constant learning rate and many steps: the run is still going when it is killed.
    config = tiny_config(
        planted,
        data={"num_workers": 1},
        train={"steps": 10_000, "batch_size": 4, "schedule": "constant", "warmup_steps": 0},
        checkpoint={"every_steps": 2, "keep": 2},
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    process = _run_cli(
        [sys.executable, "-m", "flashrna.cli", "train", "--config", str(path), "--out", str(out)]
    )
    deadline = time.monotonic() + 180
    try:
        while not checkpoint_dirs(out):
            assert process.poll() is None, process.stdout.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.05)
        with pytest.raises(
            FlashRNAError,
            match=rf"training run folder .*run is in use by another flashrna process \(pid "
            rf"{process.pid} on .*, started .*flashrna",
        ):
            train(config, out, "cpu")
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    assert process.returncode == -9 and not (out / "model").exists()
    stopped = json.loads((checkpoint_dirs(out)[-1] / "state.json").read_text())["step"]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the subprocess: CPU sums depend on the thread count
    try:
        with caplog.at_level("WARNING", logger="flashrna"):
            assert train(config, out, "cpu", stop_at_step=stopped + 2).status == "stopped"
        reference = tmp_path / "reference"
        train(config, reference, "cpu", stop_at_step=stopped + 2)
    finally:
        torch.set_num_threads(threads)
    assert f"taking over a stale lock (pid {process.pid} on" in caplog.text
    assert_same_weights(
        checkpoint_dirs(reference)[-1] / "model", checkpoint_dirs(out)[-1] / "model"
    )
    assert train_losses(out) == train_losses(reference)
    assert not any(p.name.startswith(".") for p in (out / "checkpoints").iterdir())


# --------------------------------------------------------------------------------------------
# Resume after damage
# --------------------------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def _wrong_type(path: Path) -> None:
    state = json.loads(path.read_text())
    path.write_text(json.dumps({**state, "examples_seen": "16"}))


DAMAGE = {
    "optimizer.safetensors": (_truncate, r"optimizer\.safetensors: unreadable"),
    "rng.safetensors": (_truncate, r"rng\.safetensors: unreadable"),
    "state.json": (_wrong_type, r"state\.json: 'examples_seen' is '16', expected a whole"),
}


@pytest.mark.parametrize("damaged", list(DAMAGE))
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_intact_one(
    resumable, uninterrupted, stopped_at_4, tmp_path, caplog, damaged
):
    out = tmp_path / "run"
    shutil.copytree(stopped_at_4, out)
    damage, reason = DAMAGE[damaged]
    damage(out / "checkpoints" / "step-00000004" / damaged)
    with caplog.at_level("WARNING", logger="flashrna"):
        assert train(resumable, out, "cpu").status == "finished"
    assert re.search(rf"checkpoint .*step-00000004 is damaged \(.*{reason}", caplog.text)
    assert re.search(r"resuming from .*step-00000002, the newest intact checkpoint", caplog.text)
    assert (out / "checkpoints" / "damaged-step-00000004").is_dir()
    assert_same_weights(uninterrupted / "model", out / "model")
    assert train_losses(out) == train_losses(uninterrupted)


def test_no_intact_checkpoint_is_a_clear_error(resumable, stopped_at_4, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(stopped_at_4, out)
    for checkpoint in checkpoint_dirs(out):
        _truncate(checkpoint / "optimizer.safetensors")
    with pytest.raises(FlashRNAError, match=r"no intact checkpoint to resume from .* move "):
        train(resumable, out, "cpu")


def test_a_torn_last_metrics_line_is_ignored_on_resume(
    resumable, uninterrupted, stopped_at_4, tmp_path, caplog
):
    out = tmp_path / "run"
    shutil.copytree(stopped_at_4, out)
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write('{"kind": "train", "step": 5, "lo')  # a run killed mid-write
    with caplog.at_level("WARNING", logger="flashrna"):
        assert train(resumable, out, "cpu").status == "finished"
    assert "metrics.jsonl: ignoring its incomplete last line" in caplog.text
    assert train_losses(out) == train_losses(uninterrupted)


def test_disk_full_while_checkpointing_stops_cleanly_and_resumes(
    resumable, uninterrupted, tmp_path, monkeypatch
):
    import safetensors.torch
    from safetensors import SafetensorError

    save_file = safetensors.torch.save_file

    def full_at_step_4(tensors, filename, metadata=None):
        if ".step-00000004." in filename:
            raise SafetensorError(
                "Error while serializing: I/O error: No space left on device (os error 28)"
            )
        return save_file(tensors, filename, metadata=metadata)

    out = tmp_path / "run"
    monkeypatch.setattr(safetensors.torch, "save_file", full_at_step_4)
    with pytest.raises(
        FlashRNAError,
        match=r"step-00000004: could not be written \(No space left on device\); the run "
        r"stopped at step 4 and the last checkpoint, .*step-00000002, is intact: once space",
    ):
        train(resumable, out, "cpu")
    (good,) = checkpoint_dirs(out)
    intact = digest(good)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000002"]
    assert not (out / "model").exists() and not (out / ".flashrna.lock").exists()
    monkeypatch.setattr(safetensors.torch, "save_file", save_file)  # space freed
    assert digest(good) == intact
    assert train(resumable, out, "cpu").status == "finished"
    assert_same_weights(uninterrupted / "model", out / "model")


# --------------------------------------------------------------------------------------------
# Errors during the loop
# --------------------------------------------------------------------------------------------


def test_nan_loss_names_the_shard_and_record(tmp_path):
    shards = write_planted_shards(tmp_path / "shards", {"train": 8, "valid": 4})
    target = shards / "train-0" / "targets.npy"
    values = np.load(target, mmap_mode="r+")
    values[5, 1, 7] = np.inf
    values.flush()
    del values
    config = tiny_config(shards, train={"steps": 2, "batch_size": 8})
    with pytest.raises(
        FlashRNAError,
        match=rf"step 1 \(human batch\): the loss is (nan|inf); .* Cause: non-finite targets in 1 "
        rf"example\(s\): {re.escape(str(shards / 'train-0'))} record 5 \(chrP:",
    ):
        train(config, tmp_path / "run", "cpu")


def test_a_loader_worker_error_ends_the_training_promptly(tmp_path):
    shards = write_planted_shards(tmp_path / "shards", {"train": 16, "valid": 4}, per_shard=8)
    np.save(shards / "train-1" / "targets.npy", np.array([None] * 8), allow_pickle=True)
    config = tiny_config(shards, data={"num_workers": 2}, train={"steps": 4, "batch_size": 4})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    process = _run_cli(
        [sys.executable, "-m", "flashrna.cli", "train", "--config", str(path), "--out",
         str(tmp_path / "run")]
    )  # fmt: skip
    output = process.communicate(timeout=180)[0].decode()  # before the fix: hung forever
    assert process.returncode == 1, output
    assert re.search(
        r"flashrna train: error: .*train-1/targets\.npy: holds Python objects .* \(raised in "
        r"DataLoader worker process \d\)",
        output,
    ), output


def test_the_paper_preset_on_a_cpu_warns_with_the_time_per_step(planted, caplog, monkeypatch):
    monkeypatch.setattr(trainer_module, "cpu_matmul_rate", lambda: 1e11)
    config = tiny_config(planted, model={"preset": "paper"}, data={"seq_length": 524_288})
    with caplog.at_level("WARNING", logger="flashrna"):
        Trainer(config, "unused", "cpu")
    found = re.search(
        r"about (\d+) s per step, (\d+) h for 6 steps\. Estimate: ([\d.]+) TFLOP per training "
        r"example .* up to 16,384 bp and extrapolated to 524,288 bp\) x batch 8, at the 100 "
        r"GFLOP/s",
        caplog.text,
    )
    assert found, caplog.text
    per_example = float(found.group(3))
    # The design's figure for the paper preset at 524,288 bp: about 16 TFLOP per example.
    assert 12 < per_example < 20
    assert int(found.group(1)) == pytest.approx(per_example * 1e12 * 8 / 1e11, rel=0.01)
    # Linear and quadratic parts from the counts at 8,192 and 16,384 bp (attention is
    # quadratic); for this architecture that equals the full-length count (15.3 TFLOP, checked
    # once by hand: counting at 524,288 bp takes a while).
    config_paper = model_config("paper", heads={"human": 3})
    f1, f2 = (flop_counts(config_paper, n)["total"] for n in (8_192, 16_384))
    b = (f2 / 16_384 - f1 / 8_192) / 8_192
    forward = (f1 / 8_192 - b * 8_192) * 524_288 + b * 524_288**2
    assert per_example == pytest.approx(3 * forward / 1e12, abs=0.05)
    caplog.clear()
    with caplog.at_level("WARNING", logger="flashrna"):
        Trainer(tiny_config(planted), "unused", "cpu")  # tiny: no estimate, no warning
    assert "per step" not in caplog.text
