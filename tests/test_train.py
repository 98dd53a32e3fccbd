"""Training: the loss against its formula, optimiser groups and schedule, config handling, a
planted signal learnt by `tiny`, exact resume (in process and after SIGTERM), two-process DDP
against one process, and the non-finite-loss stop."""

from __future__ import annotations

import hashlib
import json
import os
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
    assert_same_weights,
    tiny_config,
    train_losses,
    weights,
    write_planted_shards,
)

from flashrna.cli import main as cli_main
from flashrna.data import EpochSampler, ShardSet
from flashrna.model import build_model, load_model, predict
from flashrna.training.checkpoint import checkpoint_dirs
from flashrna.training.config import config_differences, load_config
from flashrna.training.objective import (
    CroppedModel,
    batch_loss,
    build_optimizer,
    learning_rate,
    parameter_groups,
    poisson_multinomial,
)
from flashrna.training.trainer import NonFiniteLossError, train
from flashrna.utils import FlashRNAError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    return write_planted_shards(tmp_path_factory.mktemp("planted"))


# --------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------


def numpy_poisson_multinomial(pred, target, weight, eps):
    """Borzoi's poisson_mn (baskerville metrics.py, total_weight 0.2), per example and track, in
    float64 loops over examples."""
    losses = []
    for b in range(pred.shape[0]):
        y, y_hat = target[b].astype(np.float64) + eps, pred[b].astype(np.float64) + eps
        length = y.shape[0]
        s, s_hat = y.sum(0), y_hat.sum(0)
        poisson = (s_hat - s * np.log(s_hat)) / length
        multinomial = -(y * np.log(y_hat / s_hat)).sum(0) / length
        losses.append(multinomial + weight * poisson)
    return float(np.mean(losses))


def test_loss_equals_numpy_formula():
    rng = np.random.default_rng(0)
    pred = rng.gamma(1.0, 2.0, size=(3, 50, 4)).astype(np.float32)
    target = (rng.gamma(0.5, 3.0, size=(3, 50, 4)) * (rng.random((3, 50, 4)) < 0.7)).astype(
        np.float32
    )
    for weight in (0.2, 1.0):
        got = poisson_multinomial(torch.from_numpy(pred), torch.from_numpy(target), weight)
        expected = numpy_poisson_multinomial(pred, target, weight, 1e-7)
        assert got.item() == pytest.approx(expected, rel=1e-5)


def test_loss_is_minimal_at_the_truth():
    rng = np.random.default_rng(1)
    target = torch.from_numpy(rng.gamma(1.0, 2.0, size=(2, 40, 3))).double()
    pred = target.clone().requires_grad_(True)
    loss = poisson_multinomial(pred, target)
    loss.backward()
    assert pred.grad.abs().max().item() < 1e-9
    for scale in (0.9, 1.1):  # a wrong total: the Poisson term grows
        assert poisson_multinomial(target * scale, target).item() > loss.item()
    for k in range(5):  # a wrong shape with the right total: the multinomial term grows
        noise = torch.from_numpy(np.random.default_rng(k).lognormal(0, 0.2, target.shape))
        other = target * noise
        other = other * target.sum(1, keepdim=True) / other.sum(1, keepdim=True)
        assert poisson_multinomial(other, target).item() > loss.item()


# --------------------------------------------------------------------------------------------
# Optimiser, schedule, config
# --------------------------------------------------------------------------------------------


def test_weight_decay_only_on_matrices_and_kernels():
    model = build_model("tiny")
    decay, no_decay = parameter_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert "trunk.stem.weight" in decayed
    assert "trunk.transformer.0.attention.qkv.weight" in decayed
    assert "heads.human.linear.weight" in decayed
    undecayed = {names[id(p)] for p in no_decay["params"]}
    assert "trunk.transformer.0.attention_norm.weight" in undecayed
    assert "trunk.tower.0.block.norm.bias" in undecayed
    assert "heads.human.linear.bias" in undecayed
    assert len(decayed) + len(undecayed) == len(names)
    assert decay["lr_scale"] == no_decay["lr_scale"] == 1.0
    # Fine-tuning: the trunk at a tenth of the rate, or frozen (left out).
    groups = parameter_groups(model, 0.1, trunk_lr_scale=0.1)
    trunk = {id(p) for p in model.trunk.parameters()}
    for group in groups:
        in_trunk = {id(p) in trunk for p in group["params"]}
        assert in_trunk == {group["lr_scale"] == 0.1}
    assert sum(len(g["params"]) for g in groups) == len(names)
    frozen = parameter_groups(model, 0.1, trunk_lr_scale=0.0)
    assert not any(id(p) in trunk for g in frozen for p in g["params"])
    assert sum(len(g["params"]) for g in frozen) == len(names) - len(trunk)


def test_learning_rate_schedule():
    config = {
        "learning_rate": 1.0,
        "warmup_steps": 10,
        "schedule": "cosine",
        "min_learning_rate_ratio": 0.1,
    }
    assert learning_rate(0, 110, config) == pytest.approx(0.1)
    assert learning_rate(9, 110, config) == pytest.approx(1.0)
    assert learning_rate(10, 110, config) == pytest.approx(1.0)
    # Halfway through the decay, cosine is at the midpoint between peak and floor.
    assert learning_rate(10 + 99 // 2, 110, {**config}) == pytest.approx(
        0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 49 / 99))
    )
    assert learning_rate(109, 110, config) == pytest.approx(0.1)
    linear = {**config, "schedule": "linear"}
    assert learning_rate(109, 110, linear) == pytest.approx(0.1)
    assert learning_rate(59, 110, linear) == pytest.approx(0.1 + 0.9 * (1 - 49 / 99))
    assert learning_rate(80, 110, {**config, "schedule": "constant"}) == 1.0


def test_config_file_section_overrides_and_unknown_keys(tmp_path):
    path = tmp_path / "workflow.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "other": {"x": 1},
                "train": {
                    "seed": 3,
                    "data": {"species": {"human": {"shards": "s/hg38"}}},
                    "train": {"learning_rate": 1e-3},
                },
            }
        )
    )
    config = load_config(path, "train", ["train.steps=12", "data.species.human.assays=[RNA]"], 5)
    assert config["seed"] == 5
    assert config["train"]["learning_rate"] == 1e-3 and config["train"]["steps"] == 12
    assert config["train"]["batch_size"] == 8  # a default
    assert config["data"]["species"]["human"] == {
        "shards": "s/hg38",
        "assays": ["RNA"],
        "genome": None,
        "teacher": None,
    }
    with pytest.raises(FlashRNAError, match="unknown key 'lerning_rate'"):
        load_config(path, "train", ["train.lerning_rate=1"])
    with pytest.raises(FlashRNAError, match=r"data\.species\.human: unknown key 'shard'"):
        load_config(overrides={"data": {"species": {"human": {"shard": "x"}}}})
    with pytest.raises(FlashRNAError, match="no section 'training'"):
        load_config(path, "training")
    with pytest.raises(FlashRNAError, match=r"train\.schedule"):
        load_config(path, "train", ["train.schedule=step"])
    with pytest.raises(FlashRNAError, match=r"key\.subkey=value"):
        load_config(path, "train", ["train.steps"])


def test_resume_config_check_ignores_cadence_only():
    a = load_config(overrides={"data": {"species": {"human": {"shards": "x"}}}})
    b = load_config(
        overrides={
            "data": {"species": {"human": {"shards": "x"}}, "num_workers": 1},
            "log": {"every_steps": 5},
            "train": {"steps": 10, "learning_rate": 1.0},
        }
    )
    assert config_differences(a, b) == ["train.learning_rate"]


def test_cli_help_and_print_config(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--config-key" in text and "--set" in text and "torchrun" in text
    assert cli_main(["train", "--set", "train.steps=7", "--seed", "2", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["steps"] == 7 and printed["seed"] == 2
    assert cli_main(["train", "--set", "train.nope=1", "--out", str(tmp_path)]) == 1
    assert "unknown key 'nope'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Training runs
# --------------------------------------------------------------------------------------------


def test_tiny_learns_the_planted_signal(planted, tmp_path):
    config = tiny_config(
        planted,
        train={"steps": 150, "learning_rate": 3e-3, "warmup_steps": 10, "clip_grad_norm": 1.0},
        validation={"every_steps": 50, "max_examples": None, "final_model": "best"},
        log={"every_steps": 25, "progress": False, "tensorboard": False},
    )
    out = tmp_path / "run"
    result = train(config, out, "cpu")
    assert result.status == "finished" and result.step == 150
    summary = json.loads((out / "metrics.json").read_text())
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "valid"] == [50, 100, 150]
    assert all(r["examples_per_s"] > 0 and r["peak_memory_bytes"] > 0 for r in records[:1])

    # Independent check: the final (best) model's forward predictions on the valid windows,
    # Pearson per track over all bins with NumPy. The motif alone sets the targets, so a
    # perfect model reaches 1; an untrained one is near 0.
    model = load_model(out / "model")
    valid = ShardSet(planted, split="valid")
    sequences = np.stack([valid.sequence(i) for i in range(len(valid))])
    targets = np.stack([valid.targets(i) for i in range(len(valid))]).astype(np.float64)
    crop = (sequences.shape[1] // 32 - targets.shape[1]) // 2
    prediction = predict(
        model, sequences, "human", batch_size=16, reverse_complement_average=False, crop_bins=crop
    ).double()
    r = [
        np.corrcoef(prediction[..., t].numpy().ravel(), targets[..., t].ravel())[0, 1]
        for t in range(3)
    ]
    assert r[2] > 0.75  # DNASE: either strand
    assert min(r[0], r[1]) > 0.35  # RNA+/RNA-: one bin, one strand
    recorded = summary["validation"]["pearson"]["human"]
    assert recorded["DNASE"] == pytest.approx(r[2], abs=1e-4)
    assert recorded["RNA"] == pytest.approx((r[0] + r[1]) / 2, abs=1e-4)
    assert summary["best_score"] == pytest.approx((recorded["RNA"] + recorded["DNASE"]) / 2)
    assert (out / "model" / "targets-human.txt").is_file()
    # The strand pairs of the shards' track table are stored in the model.
    assert model.strand_pair("human").tolist() == [1, 0, 2]

    # A finished run does nothing when run again.
    before = (out / "metrics.jsonl").read_text()
    assert train(config, out, "cpu").status == "already-finished"
    assert (out / "metrics.jsonl").read_text() == before


@pytest.fixture(scope="module")
def two_species_config(planted):
    """Two heads alternating, shift and reverse-complement augmentation, dropout, gradient
    accumulation (batch 8 as 2 x 4): everything a resume must reproduce."""
    return tiny_config(
        planted,
        species=("human", "mouse"),
        train={"steps": 6, "micro_batch_size": 4, "warmup_steps": 2},
    )


@pytest.fixture(scope="module")
def uninterrupted(two_species_config, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    assert train(two_species_config, out, "cpu").status == "finished"
    return out


def test_resume_after_stop_equals_uninterrupted_run(two_species_config, uninterrupted, tmp_path):
    out = tmp_path / "resumed"
    first = train(two_species_config, out, "cpu", stop_at_step=3)
    assert first.status == "stopped" and first.step == 3
    assert [p.name for p in checkpoint_dirs(out)] == ["step-00000003"]
    assert not (out / "model").exists()
    second = train(two_species_config, out, "cpu")
    assert second.status == "finished" and second.step == 6
    assert_same_weights(uninterrupted / "model", out / "model")
    assert train_losses(out) == train_losses(uninterrupted)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    losses = [r["loss_by_species"] for r in records if r["kind"] == "train"]
    assert [next(iter(x)) for x in losses] == ["human", "mouse"] * 3  # alternating heads


def test_resume_refuses_a_changed_config(two_species_config, uninterrupted, tmp_path):
    out = tmp_path / "run"
    train(two_species_config, out, "cpu", stop_at_step=1)
    changed = json.loads(json.dumps(two_species_config))
    changed["train"]["learning_rate"] = 0.5
    with pytest.raises(FlashRNAError, match=r"train\.learning_rate"):
        train(changed, out, "cpu")


def _run_cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs
    )


def test_sigterm_checkpoints_and_resume_is_exact(planted, tmp_path):
    # A constant learning rate, so the first steps do not depend on train.steps.
    config = tiny_config(
        planted,
        train={"steps": 10_000, "schedule": "constant", "warmup_steps": 0},
        data={"num_workers": 1},
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    process = _run_cli(
        [sys.executable, "-m", "flashrna.cli", "train", "--config", str(path), "--out", str(out)]
    )
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 2):
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline, "no training steps within 120 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0].decode()
    assert process.returncode == 128 + signal.SIGTERM, output
    (checkpoint,) = checkpoint_dirs(out)
    stopped = json.loads((checkpoint / "state.json").read_text())["step"]
    assert stopped >= 2
    assert not (out / "model").exists()

    # Resume two more steps; compare with a run that was never stopped. One thread, as in the
    # subprocess: CPU kernels sum in a thread-count-dependent order.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        resumed = train(config, out, "cpu", stop_at_step=stopped + 2)
        reference = tmp_path / "reference"
        train(config, reference, "cpu", stop_at_step=stopped + 2)
    finally:
        torch.set_num_threads(threads)
    assert resumed.status == "stopped"
    assert_same_weights(
        checkpoint_dirs(reference)[-1] / "model", checkpoint_dirs(out)[-1] / "model"
    )
    assert train_losses(out) == train_losses(reference)


def test_two_process_ddp_equals_one_process(planted, tmp_path):
    """torchrun with 2 gloo processes x micro-batch 1 x 2 accumulated = one process with the
    whole batch of 4, over three steps alternating two heads (dropout off; the augmentation is
    a function of the example). Adam's eps is 1, far above the gradients, so its update follows
    the gradient instead of normalising near-zero gradients to +-lr, where rounding noise
    would decide the sign."""
    no_dropout = {
        "attention_dropout": 0.0,
        "mlp_dropout": 0.0,
        "residual_dropout": 0.0,
        "head_dropout": 0.0,
    }
    config = tiny_config(
        planted,
        species=("human", "mouse"),
        model={"preset": "tiny", "overrides": no_dropout},
        train={
            "steps": 3,
            "batch_size": 4,
            "warmup_steps": 1,
            "learning_rate": 1.0,
            "adam_eps": 1.0,
            "clip_grad_norm": None,
        },
        validation={"every_steps": 1000, "max_examples": 8, "final_model": "last"},
    )
    single = tmp_path / "single"
    train(config, single, "cpu")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    ddp = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "flashrna.cli",
        "train",
        "--config",
        str(path),
        "--set",
        "train.micro_batch_size=1",
        "--out",
        str(ddp),
        "--device",
        "cpu",
    ]
    process = _run_cli(command)
    output = process.communicate(timeout=300)[0].decode()
    assert process.returncode == 0, output
    state = json.loads((checkpoint_dirs(ddp)[-1] / "state.json").read_text())
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    a, b = weights(single / "model"), weights(ddp / "model")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(train_losses(ddp), train_losses(single), rtol=1e-5)
    summary = json.loads((ddp / "metrics.json").read_text())
    single_summary = json.loads((single / "metrics.json").read_text())
    assert summary["validation"]["pearson"]["human"] == pytest.approx(
        single_summary["validation"]["pearson"]["human"], abs=1e-4
    )


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path):
    shards = write_planted_shards(tmp_path / "shards", {"train": 32, "valid": 8})
    config = tiny_config(shards, train={"steps": 8, "batch_size": 4}, checkpoint={"every_steps": 2})
    # Poison the first example of step 4: the sampler's permutation of epoch 0.
    train_set = ShardSet(shards, split="train")
    order = EpochSampler(len(train_set), seed=config["seed"]).indices()
    bad = int(order[3 * 4])
    targets = np.load(train_set.shards[train_set.shard_of[bad]] / "targets.npy", mmap_mode="r+")
    targets[train_set.row_of[bad], 0, 5] = np.nan
    targets.flush()
    del targets

    out = tmp_path / "run"
    assert train(config, out, "cpu", stop_at_step=2).status == "stopped"
    (good,) = checkpoint_dirs(out)

    def digest() -> dict[str, str]:
        return {
            str(p.relative_to(good)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(good.rglob("*"))
            if p.is_file()
        }

    before = digest()
    with pytest.raises(
        NonFiniteLossError, match=r"step 4 \(human batch\): the loss is nan"
    ) as info:
        train(config, out, "cpu")
    assert "step-00000002" in str(info.value)
    shard, row = train_set.shards[train_set.shard_of[bad]], train_set.row_of[bad]
    assert f"non-finite targets in 1 example(s): {shard} record {row} (chrP:" in str(info.value)
    assert checkpoint_dirs(out) == [good] and digest() == before
    assert not (out / "model").exists() and not (out / "metrics.json").exists()


# --------------------------------------------------------------------------------------------
# GPU
# --------------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_paper_training_step_in_bf16_on_gpu(capsys):
    """One paper-preset optimiser step (131,072 bp, batch 1, bf16 autocast) through the
    training code; prints examples/s and peak memory."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model("paper", heads={"human": 2449}).to(device)
    runnable = CroppedModel(model)
    config = load_config()["train"]
    optimizer = build_optimizer(model, config)
    length, bins = 131_072, 1536
    batch = {
        "sequence": torch.randint(0, 4, (1, length), dtype=torch.uint8),
        "targets": torch.rand(1, bins, 2449).half(),
        "crop_start": torch.tensor([(length // 32 - bins) // 2]),
    }
    torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(3):
        torch.cuda.synchronize(device)
        began = time.perf_counter()
        loss = batch_loss(runnable, batch, "human", device, True, 0.2)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize(device)
        times.append(time.perf_counter() - began)
        assert torch.isfinite(loss)
    peak = torch.cuda.max_memory_allocated(device)
    with capsys.disabled():
        print(
            f"\npaper preset, {length:,} bp, batch 1, bf16: {1 / min(times):.2f} examples/s, "
            f"peak {peak / 2**30:.1f} GiB"
        )


def test_epochs_set_the_number_of_steps(planted):
    from flashrna.training.trainer import Trainer

    config = tiny_config(planted, species=("human", "mouse"), train={"epochs": 2})
    # 64 training windows, batch 8: 16 steps per species over two epochs, alternating.
    assert Trainer(config, "unused", "cpu").total_steps == 32


def test_early_stopping_after_validations_without_improvement(planted, tmp_path):
    # A zero learning rate: the weights and the validation score never change.
    config = tiny_config(
        planted,
        train={"steps": 20, "learning_rate": 0.0},
        validation={"every_steps": 2, "max_examples": 8, "patience": 1, "final_model": "best"},
    )
    result = train(config, tmp_path, "cpu")
    assert result.status == "early-stopped" and result.step == 4
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["status"] == "early-stopped" and summary["best_step"] == 2
    assert_same_weights(tmp_path / "model", tmp_path / "best")
