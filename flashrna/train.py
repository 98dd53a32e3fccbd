"""``flashrna train`` and ``flashrna distill``: training from scratch, resumable, on one or many
devices.

Configuration. One YAML mapping (or a section of a bigger one, ``--config-key``) merged over
:data:`DEFAULTS`; ``--set a.b=value`` overrides single keys (values parsed as YAML). Unknown keys
are errors that name the key. The defaults are the paper's values where it gives them and
documented choices where it does not (see the comments in :data:`DEFAULTS`).

Data. Each entry of ``data.species`` names a model head and a folder of shards
(:mod:`flashrna.data`); training uses the windows labelled train (all but fold3/fold4), validation
the ones labelled valid (fold4). With two species, optimiser steps alternate between them in the
configured order (every micro-batch of one step comes from the same species). Batch sizes are
global: ``train.batch_size`` examples per optimiser step whatever the number of processes, split
into ``micro_batch_size`` per process and accumulated, so one config gives the same optimisation
on one GPU or eight.

Loss (Borzoi ``poisson_mn``, :func:`poisson_multinomial`) on the target bins, cropped per example
at the loader's ``crop_start`` (the shift augmentation moves it). Optimiser AdamW, weight decay on
matrices and kernels only, linear warm-up then cosine (or linear) decay, gradient clipping, bf16
autocast on CUDA and fp32 on the CPU.

Output directory (``--out``)::

    config.yaml               the resolved config of the run
    metrics.jsonl             one JSON record per log interval ("kind": "train") and validation
                              ("kind": "valid"), rank 0
    checkpoints/step-NNNNNNNN/  model/ (save_model), optimizer.safetensors, rng.safetensors,
                              state.json; the last ``checkpoint.keep`` are kept
    best/                     model directory of the best validation score so far
    metrics.json              summary of the finished run
    model/                    the final model (best validation, or last): marks the run finished;
                              holds targets-<species>.txt, the tracks of each head

Resume. Restarting the same command continues from the newest checkpoint: weights, optimiser
moments, the step (the learning-rate schedule is a function of it), the torch/CUDA/NumPy/Python
RNG states of every rank and each species' data position (epoch, examples used), so the run
continues exactly as if never stopped. SIGTERM or SIGINT (cluster preemption, Ctrl-C) finishes the
current step, writes a checkpoint and exits with 128 + the signal number. A non-finite loss or
gradient norm stops the run with :class:`NonFiniteLossError` before the optimiser step; no
checkpoint is written then, so the last good one stays. A finished run (``model/`` and
``metrics.json`` present) is not run again.

Multi-GPU: ``torchrun --nproc-per-node N $(which flashrna) train ...`` (or ``python -m
torch.distributed.run ... -m flashrna.cli train ...``) runs DistributedDataParallel, NCCL on CUDA,
gloo on the CPU. Only one head is used per step, so DDP runs with ``find_unused_parameters`` when
the model has several heads (the unused head keeps ``grad=None``, as in one process).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import itertools
import json
import logging
import math
import os
import random
import shutil
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset

from flashrna.bench import peak_memory_bytes, reset_peak_memory
from flashrna.data import ShardSet, TrackDataset, make_loader
from flashrna.metrics import StreamingPearson, per_group_mean
from flashrna.model import (
    FlashRNA,
    ModelConfig,
    build_model,
    load_model,
    model_config,
    read_model_config,
    save_model,
    take_bins,
)
from flashrna.tracks import TrackTable
from flashrna.utils import (
    FlashRNAError,
    atomic_directory,
    atomic_file,
    load_yaml,
    merge_config,
    read_json,
    resolve_device,
    seed_everything,
    write_json,
)

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "flashrna-train-checkpoint"
CHECKPOINT_VERSION = 1
LOSS_EPSILON = 1e-7  # baskerville metrics.poisson_multinomial default

# Every key a training config may set. Paper values where the paper gives them (DESIGN §1, §4);
# the rest are choices, sized for about one day on one H100 with the `paper` preset at
# 524,288 bp (about 16 TFLOP per training example; we assume about 6 examples/s).
DEFAULTS: dict[str, Any] = {
    "seed": 0,  # replicate seed: initialisation, dropout, data order and augmentation
    "model": {
        "preset": "paper",
        # ModelConfig fields over the preset: dropouts (paper 0.2 attention, 0.3 MLP and
        # residual, 0.1 head), attention_backend, gradient_checkpointing, heads. Heads default
        # to {species: number of tracks in its shards}.
        "overrides": {},
        # Fine-tuning (flashrna finetune): a model directory whose trunk initialises the run;
        # its architecture replaces the preset's, the shared head and heads start fresh.
        "init": None,
    },
    "data": {
        # {head name: SPECIES_DEFAULTS}; steps alternate between species in this order.
        "species": {},
        "seq_length": None,  # model input in bp; default: as stored in the shards
        "max_shift": 1024,  # paper: shifts up to ±1,024 bp
        "reverse_complement": True,  # paper
        "num_workers": 4,  # loader processes per training process
    },
    "train": {
        "steps": 60_000,  # choice: 480k examples at batch 8, about a day at ~6 examples/s
        "epochs": None,  # instead of steps: passes over the first species' training windows
        "batch_size": 8,  # choice (paper: larger than Borzoi's 2); global, per optimiser step
        "micro_batch_size": None,  # per process and forward pass; default batch/processes
        "learning_rate": 2e-4,  # choice (paper: larger than Borzoi's 6e-5); peak
        "warmup_steps": 5_000,  # choice: 40k examples, as Borzoi's 20k steps x batch 2
        "schedule": "cosine",  # cosine | linear | constant (after the warm-up)
        "min_learning_rate_ratio": 0.01,  # choice: the decay ends at this fraction of the peak
        "weight_decay": 0.1,  # paper; on matrices and kernels, none on norms and biases
        "trunk_lr_scale": 1.0,  # x learning rate for trunk.* parameters; 0 freezes the trunk
        "adam_betas": [0.9, 0.999],  # Borzoi's Adam
        "adam_eps": 1e-8,
        "clip_grad_norm": 0.2,  # Borzoi clips at 0.15-0.2; null: no clipping
        "loss_total_weight": 0.2,  # Borzoi poisson_mn total_weight
        "precision": "auto",  # auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32
        "compile": False,  # torch.compile the training forward
    },
    "validation": {
        "every_steps": 2_000,  # also after the last step
        # A fixed random subset of the valid windows (the same for every seed): the whole of
        # fold4 (6,910) would cost about 6 min per validation. null: all.
        "max_examples": 1_024,
        "batch_size": None,  # per process; default micro_batch_size
        "patience": None,  # stop after this many validations without improvement
        "final_model": "best",  # best | last: which weights become model/
    },
    "checkpoint": {
        "every_steps": 1_000,  # about 20 min at batch 8; also on SIGTERM/SIGINT and at the end
        "keep": 2,  # newest checkpoints kept
    },
    "log": {
        "every_steps": 50,
        "progress": True,  # tqdm bar on rank 0
        "tensorboard": "auto",  # auto (when installed) | true | false
    },
    "distill": {
        # Targets = (1 - w) x teacher + w x real (the loss is linear in the targets, so this is
        # also (1 - w) x loss(teacher) + w x loss(real)). Used when a species names a teacher.
        "target_weight": 0.0,
    },
}

SPECIES_DEFAULTS: dict[str, Any] = {
    "shards": None,  # folder(s) of shards; required (validation reads its valid windows)
    "assays": None,  # only these assays' tracks (default: all tracks of the shards)
    "genome": None,  # FASTA for shifted-out flanks (default: N)
    "teacher": None,  # distillation: ensemble-predict shards of the same windows
}

# Keys that may differ when a run resumes; everything else must match the checkpoint.
RESUMABLE_CHANGES = (
    "train.steps",
    "train.epochs",
    "train.compile",
    "data.num_workers",
    "validation.every_steps",
    "validation.patience",
    "checkpoint.",
    "log.",
)


class NonFiniteLossError(FlashRNAError):
    """The loss or the gradient norm of a step is NaN or infinite."""


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


def parse_set(assignments: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c=[1, 2]"]`` -> ``{"a": {"b": 1}, "c": [1, 2]}`` (values parsed as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise FlashRNAError(f"--set '{item}': expected key.subkey=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise FlashRNAError(f"--set '{item}': value is not valid YAML ({err})") from None
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise FlashRNAError(f"--set '{item}': '{part}' is set both as a value and a map")
        node[leaf] = value
    return out


def _normalise_species(config: dict[str, Any], where: str) -> dict[str, Any]:
    species = config["data"]["species"]
    if not isinstance(species, Mapping):
        raise FlashRNAError(f"{where}.data.species: expected a mapping of species to settings")
    config["data"]["species"] = {
        str(name): merge_config(SPECIES_DEFAULTS, entry or {}, f"{where}.data.species.{name}")
        for name, entry in species.items()
    }
    return config


def load_config(
    path: str | os.PathLike | None = None,
    key: str | None = None,
    overrides: Mapping[str, Any] | Sequence[str] = (),
    seed: int | None = None,
) -> dict[str, Any]:
    """The training config: :data:`DEFAULTS`, then the YAML file (or its section ``key``, a
    dotted path), then ``overrides`` (a mapping, or ``--set`` strings), then ``seed``."""
    where = "config"
    config = _normalise_species(copy.deepcopy(DEFAULTS), where)
    if path is not None:
        data: Any = load_yaml(path)
        where = str(path)
        for part in key.split(".") if key else []:
            if not isinstance(data, Mapping) or part not in data:
                raise FlashRNAError(f"{path}: no section '{key}' (missing key '{part}')")
            data = data[part]
            where = f"{path}:{key}"
        if not isinstance(data, Mapping):
            raise FlashRNAError(f"{where}: expected a mapping")
        config = _normalise_species(merge_config(config, data, where), where)
    if not isinstance(overrides, Mapping):
        overrides = parse_set(overrides)
    config = _normalise_species(merge_config(config, overrides, "--set"), "--set")
    if seed is not None:
        config["seed"] = int(seed)
    _check_config(config)
    return config


def _check_config(config: dict[str, Any]) -> None:
    train, valid = config["train"], config["validation"]
    choices = {
        "train.schedule": (train["schedule"], ("cosine", "linear", "constant")),
        "train.precision": (train["precision"], ("auto", "bf16", "fp32")),
        "validation.final_model": (valid["final_model"], ("best", "last")),
        "log.tensorboard": (config["log"]["tensorboard"], ("auto", True, False)),
    }
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise FlashRNAError(f"config {name}: '{value}' is not one of {list(allowed)}")
    positive = {
        "train.batch_size": train["batch_size"],
        "train.micro_batch_size": train["micro_batch_size"],
        "train.steps": train["steps"],
        "validation.every_steps": valid["every_steps"],
        "validation.batch_size": valid["batch_size"],
        "checkpoint.every_steps": config["checkpoint"]["every_steps"],
        "checkpoint.keep": config["checkpoint"]["keep"],
        "log.every_steps": config["log"]["every_steps"],
    }
    for name, value in positive.items():
        if value is not None and (not isinstance(value, int) or value < 1):
            raise FlashRNAError(f"config {name}: expected a positive integer, got {value!r}")
    if not 0.0 <= float(config["distill"]["target_weight"]) <= 1.0:
        raise FlashRNAError("config distill.target_weight: expected a number in [0, 1]")
    for name, entry in config["data"]["species"].items():
        if not entry["shards"]:
            raise FlashRNAError(f"config data.species.{name}.shards: a folder of shards is needed")


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two configs, apart from
    :data:`RESUMABLE_CHANGES`."""
    a, b = _flatten(stored), _flatten(current)
    return [
        key
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
        and not any(key == p or (p.endswith(".") and key.startswith(p)) for p in RESUMABLE_CHANGES)
    ]


# --------------------------------------------------------------------------------------------
# Loss, optimiser, schedule
# --------------------------------------------------------------------------------------------


def poisson_multinomial(
    prediction: Tensor,
    target: Tensor,
    total_weight: float = 0.2,
    epsilon: float = LOSS_EPSILON,
) -> Tensor:
    """Borzoi's Poisson-multinomial loss, the mean over examples and tracks.

    prediction, target (B, L, T), L bins. Per example and track, with ``y = target + ε``,
    ``ŷ = prediction + ε``, ``s = Σ_L y``, ``ŝ = Σ_L ŷ``::

        poisson     = (ŝ − s·log ŝ) / L
        multinomial = −Σ_L y·log(ŷ / ŝ) / L
        loss        = mean_{B,T}(multinomial + total_weight · poisson)

    ε = 1e-7 as baskerville's ``poisson_multinomial``. Baskerville sums before adding ε
    (so its ŷ/ŝ sum to 1 + Lε/ŝ); we add ε first, so ŷ/ŝ is a distribution and the loss is
    exactly minimal (zero gradient) at ŷ = y. Computed in fp32."""
    y = target.float() + epsilon
    y_hat = prediction.float() + epsilon
    length = y.shape[-2]
    total = y.sum(-2)
    total_hat = y_hat.sum(-2)
    log_total_hat = torch.log(total_hat)
    poisson = (total_hat - total * log_total_hat) / length
    multinomial = (total * log_total_hat - (y * torch.log(y_hat)).sum(-2)) / length
    return (multinomial + total_weight * poisson).mean()


def parameter_groups(
    model: nn.Module, weight_decay: float, trunk_lr_scale: float = 1.0
) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on parameters of two or more dimensions (linear and conv
    weights), none on 1-D ones (norm scales, biases). A group's ``lr_scale`` multiplies the
    scheduled learning rate: ``trunk_lr_scale`` for ``trunk.*`` parameters, 1 for the others.
    Parameters without gradients, and the trunk when ``trunk_lr_scale`` is 0, are left out."""
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        scale = float(trunk_lr_scale) if name.startswith("trunk.") else 1.0
        if parameter.requires_grad and scale > 0:
            groups.setdefault((scale, parameter.ndim >= 2), []).append(parameter)
    return [
        {"params": params, "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale}
        for (scale, decay), params in groups.items()
    ]


def build_optimizer(model: nn.Module, train_config: Mapping[str, Any]) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups`; the learning rate is set before each step."""
    return torch.optim.AdamW(
        parameter_groups(
            model, float(train_config["weight_decay"]), float(train_config["trunk_lr_scale"])
        ),
        lr=float(train_config["learning_rate"]),
        betas=tuple(float(b) for b in train_config["adam_betas"]),
        eps=float(train_config["adam_eps"]),
    )


def learning_rate(step: int, total_steps: int, train_config: Mapping[str, Any]) -> float:
    """The learning rate of optimiser step ``step`` (0-based): linear warm-up to the peak over
    ``warmup_steps``, then ``schedule`` down to ``min_learning_rate_ratio`` x peak at the last
    step. A pure function of the step, so resuming needs no scheduler state."""
    peak = float(train_config["learning_rate"])
    warmup = int(train_config["warmup_steps"])
    if step < warmup:
        return peak * (step + 1) / warmup
    floor = float(train_config["min_learning_rate_ratio"])
    progress = min(1.0, (step - warmup) / max(1, total_steps - 1 - warmup))
    if train_config["schedule"] == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif train_config["schedule"] == "linear":
        factor = 1.0 - progress
    else:
        factor = 1.0
    return peak * (floor + (1.0 - floor) * factor)


class CroppedModel(nn.Module):
    """The training forward as one module call, so DDP sees it: trunk, per-example bins
    ``crop_start[b] … + bins`` of the embeddings, then the head (cheaper than the head over all
    bins). sequence (B, L), crop_start (B,) -> (B, bins, tracks)."""

    def __init__(self, model: FlashRNA):
        super().__init__()
        self.model = model

    def forward(self, sequence: Tensor, head: str, crop_start: Tensor, bins: int) -> Tensor:
        return self.model.head(take_bins(self.model.embed(sequence), crop_start, bins), head)


def batch_loss(
    runnable: nn.Module,
    batch: Mapping[str, Tensor],
    head: str,
    device: torch.device,
    bf16: bool,
    total_weight: float,
) -> Tensor:
    """Forward a batch (the data layer's batch contract) through ``runnable`` (a
    :class:`CroppedModel`, maybe wrapped in DDP or compiled) and return the loss."""
    sequence = batch["sequence"].to(device, non_blocking=True)
    targets = batch["targets"].to(device, non_blocking=True)
    crop_start = batch["crop_start"].to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        prediction = runnable(sequence, head, crop_start, targets.shape[1])
    return poisson_multinomial(prediction.float(), targets, total_weight)


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


@dataclass
class Distributed:
    """This process's place among the training processes (torchrun's environment)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # we initialised the process group, so we tear it down

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def setup_distributed(device: str | torch.device | None) -> Distributed:
    """One process, or one of torchrun's (``WORLD_SIZE`` > 1): on CUDA each takes the GPU
    ``LOCAL_RANK`` and NCCL, on the CPU gloo."""
    device = resolve_device(device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1 and not (dist.is_available() and dist.is_initialized()):
        return Distributed(device=device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), device, owns)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


class DistillDataset(Dataset):
    """A teacher's shards (ensemble-predict output over the same windows as the real shards) with
    targets ``(1 - weight) x teacher + weight x real``; the TrackDataset interface that
    :func:`flashrna.data.make_loader` uses (``augmentation``, ``batch``). Both datasets come
    from one config, so they draw the same augmentation from (seed, epoch, index)."""

    def __init__(self, teacher: TrackDataset, real: TrackDataset, weight: float):
        where = f"teacher shards {teacher.shards.shards[0].parent}"
        if teacher.tracks != real.tracks:
            raise FlashRNAError(f"{where}: tracks differ from the real shards' tracks")
        same = len(teacher) == len(real) and all(
            (getattr(teacher.shards, name) == getattr(real.shards, name)).all()
            for name in ("chrom", "start", "end")
        )
        if not same:
            raise FlashRNAError(
                f"{where}: windows differ from the real shards' (teacher shards must be "
                "ensemble-predict output over the same shards)"
            )
        self.teacher, self.real, self.weight = teacher, real, float(weight)
        self.tracks = teacher.tracks

    def __len__(self) -> int:
        return len(self.teacher)

    def augmentation(self, index: int, epoch: int) -> tuple[int, bool]:
        return self.teacher.augmentation(index, epoch)

    def batch(self, items: Sequence[tuple[int, int, bool]], shared: bool = False):
        out = self.teacher.batch(items, shared)
        if self.weight > 0:
            real = self.real.batch(items)["targets"].float()
            mixed = (1 - self.weight) * out["targets"].float() + self.weight * real
            out["targets"].copy_(mixed)  # in place: the tensor may live in shared memory
        return out

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Tensor]:
        epoch, index = key
        batch = self.batch([(index, *self.augmentation(index, epoch))])
        return {name: value[0] for name, value in batch.items()}


@dataclass
class SpeciesData:
    """One species' training and validation datasets."""

    name: str
    train: Dataset
    valid: TrackDataset | None
    tracks: TrackTable


def build_species_data(
    name: str, entry: Mapping[str, Any], config: Mapping[str, Any]
) -> SpeciesData:
    data, seed = config["data"], int(config["seed"])

    def dataset(paths, split: str, augment: bool) -> TrackDataset | None:
        shards = ShardSet(paths, split=split)
        if len(shards) == 0:
            return None
        if shards.species != name:
            log.warning("data.species.%s: shards %s hold species '%s'", name, paths, shards.species)
        return TrackDataset(
            shards,
            assays=entry["assays"],
            genome=entry["genome"],
            seq_length=data["seq_length"],
            max_shift=int(data["max_shift"]) if augment else 0,
            reverse_complement=bool(data["reverse_complement"]) and augment,
            seed=seed,
        )

    train = dataset(entry["shards"], "train", augment=True)
    if train is None:
        raise FlashRNAError(f"data.species.{name}: no training windows in {entry['shards']}")
    tracks = train.tracks
    if entry["teacher"]:
        teacher = dataset(entry["teacher"], "train", augment=True)
        if teacher is None:
            raise FlashRNAError(f"data.species.{name}: no training windows in {entry['teacher']}")
        train = DistillDataset(teacher, train, config["distill"]["target_weight"])
    valid = dataset(entry["shards"], "valid", augment=False)
    if valid is None:
        log.warning("data.species.%s: no valid windows; no validation for it", name)
    return SpeciesData(name, train, valid, tracks)


@dataclass
class Position:
    """Where a species' training data stands: the epoch and the examples (over all processes)
    used in it."""

    epoch: int = 0
    examples: int = 0


def training_batches(
    dataset: Dataset,
    position: Position,
    *,
    batch_size: int,
    micro_batch_size: int,
    seed: int,
    world: Distributed,
    num_workers: int,
) -> Iterator[dict[str, Tensor]]:
    """This process's micro-batches from ``position`` on, forever, updating ``position``.

    An epoch is the first ``len // batch_size * batch_size`` examples of the epoch's
    permutation, so every step's batch lies in one epoch, whatever the number of processes.
    Creating a DataLoader iterator draws a seed from the global torch RNG; we shield that draw,
    so dropout masks do not depend on where epochs begin or runs resume."""
    per_epoch = len(dataset) // batch_size * batch_size
    if per_epoch == 0:
        raise FlashRNAError(
            f"{len(dataset)} training windows are fewer than train.batch_size {batch_size}"
        )
    while True:
        loader = make_loader(
            dataset,
            micro_batch_size,
            shuffle=True,
            seed=seed,
            epoch=position.epoch,
            start=position.examples // world.world_size,
            rank=world.rank,
            world_size=world.world_size,
            even_shards=True,
            num_workers=num_workers,
            pin_memory=world.device.type == "cuda",
            drop_last=True,
        )
        with torch.random.fork_rng(devices=[]):
            batches = iter(loader)
        for batch in batches:
            if position.examples >= per_epoch:
                break
            position.examples += micro_batch_size * world.world_size
            yield batch
        del batches
        position.epoch, position.examples = position.epoch + 1, 0


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def checkpoint_dirs(out: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``out/checkpoints``, oldest first."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def optimizer_state_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    """An optimizer's state dict as tensors (for safetensors) plus JSON-able rest."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{name}"] = value
    groups = [
        {k: list(v) if isinstance(v, tuple) else v for k, v in group.items()}
        for group in state["param_groups"]
    ]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_state_from_files(tensors: Mapping[str, Tensor], rest: Mapping[str, Any]) -> dict:
    """Inverse of :func:`optimizer_state_to_files`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in itertools.chain(tensors.items(), rest["scalars"].items()):
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = [
        {k: tuple(v) if k == "betas" else v for k, v in group.items()}
        for group in rest["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def _rng_state(device: torch.device) -> dict[str, Any]:
    """This process's RNG states: torch (CPU and its CUDA device) as uint8 tensors, NumPy and
    Python as JSON-able values."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """How a call to :func:`train` ended: ``finished``, ``early-stopped``, ``stopped`` (at
    ``stop_at_step``), ``interrupted`` (a signal; ``signal`` is its number) or
    ``already-finished``."""

    status: str
    step: int
    out: Path
    signal: int | None = None
    best_score: float | None = None


class Trainer:
    """One training run in ``out``: see the module docstring. Use :func:`train`."""

    def __init__(
        self,
        config: Mapping[str, Any],
        out: str | os.PathLike,
        device: str | torch.device | None = None,
    ):
        self.config = json.loads(json.dumps(config))  # a plain, private copy
        self.out = Path(out)
        self.world = setup_distributed(device)
        self.device = self.world.device
        cfg = self.config
        if not cfg["data"]["species"]:
            raise FlashRNAError("config data.species is empty: name at least one species")
        train = cfg["train"]
        world = self.world.world_size
        self.batch_size = int(train["batch_size"])
        self.micro_batch_size = int(train["micro_batch_size"] or self.batch_size // world)
        per_step = self.micro_batch_size * world
        if self.micro_batch_size < 1 or self.batch_size % per_step:
            raise FlashRNAError(
                f"train.batch_size {self.batch_size} is not a multiple of micro_batch_size "
                f"{self.micro_batch_size} x {world} processes"
            )
        self.accumulate = self.batch_size // per_step
        precision = train["precision"]
        if precision == "bf16" and self.device.type != "cuda":
            raise FlashRNAError("train.precision bf16 needs a CUDA device; use auto or fp32")
        self.bf16 = self.device.type == "cuda" and precision in ("auto", "bf16")
        self.species = list(cfg["data"]["species"])
        self.data = {
            name: build_species_data(name, entry, cfg)
            for name, entry in cfg["data"]["species"].items()
        }
        self.total_steps = self._total_steps()
        self.model_config = self._model_config()
        self.stop_signal: int | None = None
        self.tensorboard = None
        self.batches: dict[str, Iterator[dict[str, Tensor]]] = {}

    # -- setup ---------------------------------------------------------------------------------

    def _total_steps(self) -> int:
        epochs = self.config["train"]["epochs"]
        if epochs is None:
            return int(self.config["train"]["steps"])
        first = self.data[self.species[0]].train
        return math.ceil(float(epochs) * len(first) / self.batch_size) * len(self.species)

    def _model_config(self) -> ModelConfig:
        """The preset's (or the ``model.init`` model's) architecture with ``model.overrides``;
        heads default to {species: tracks of its shards}."""
        overrides = dict(self.config["model"]["overrides"])
        tracks = {name: len(d.tracks) for name, d in self.data.items()}
        heads = overrides.setdefault("heads", tracks)
        for name, count in tracks.items():
            if heads.get(name) != count:
                raise FlashRNAError(
                    f"config model.overrides.heads: head '{name}' has {heads.get(name)} tracks, "
                    f"its shards {count}"
                )
        init = self.config["model"]["init"]
        if init:
            base = read_model_config(init)[0].to_dict()
            return ModelConfig.from_dict({**base, **overrides}, f"model.init {init} + overrides")
        return model_config(self.config["model"]["preset"], **overrides)

    def _new_model(self) -> FlashRNA:
        torch.manual_seed(int(self.config["seed"]))  # the same initial weights on every rank
        model = build_model(self.model_config)
        init = self.config["model"]["init"]
        if init:
            # Loading checks that the pretrained model has this run's trunk (heads may differ).
            stored = self.model_config.replace(heads=read_model_config(init)[0].heads)
            model.trunk.load_state_dict(load_model(init, stored).trunk.state_dict())
        for name, data in self.data.items():
            model.set_strand_pair(name, np.array(data.tracks.strand_pair))
        return model

    def _freeze(self, model: FlashRNA) -> FlashRNA:
        """A trunk whose learning rate is 0 gets no gradients (the backward stops at the head)
        and stays bit-identical."""
        if float(self.config["train"]["trunk_lr_scale"]) == 0:
            model.trunk.requires_grad_(False)
        return model

    def _seed_process(self) -> None:
        """Seed all RNGs from (seed, rank): the ranks draw different dropout masks."""
        seed = int(
            np.random.SeedSequence([int(self.config["seed"]), self.world.rank]).generate_state(1)[0]
        )
        seed_everything(seed)

    # -- run -----------------------------------------------------------------------------------

    def run(self, stop_at_step: int | None = None) -> TrainResult:
        handlers: dict[int, Any] = {}
        try:
            self._start()
            handlers = self._install_signal_handlers()
            status = self._loop(stop_at_step)
            if status in ("finished", "early-stopped"):
                self._finish(status)
            return TrainResult(
                status,
                self.step,
                self.out,
                self.stop_signal if status == "interrupted" else None,
                self.best["score"],
            )
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            for batches in self.batches.values():
                batches.close()  # shuts down loader workers
            if self.tensorboard is not None:
                self.tensorboard.close()
            if self.world.owns_group:
                dist.destroy_process_group()

    def _start(self) -> None:
        """Build or restore the model, optimiser and state; wrap for DDP; open the logs."""
        checkpoints = checkpoint_dirs(self.out)
        self.positions = {name: Position() for name in self.species}
        self.best: dict[str, Any] = {"score": None, "step": None, "since": 0}
        self.step = 0
        self.examples_seen = 0
        if checkpoints:
            self._restore(checkpoints[-1])
        else:
            self.model = self._freeze(self._new_model()).to(self.device)
            self.optimizer = build_optimizer(self.model, self.config["train"])
            self._seed_process()
        self.cropped = CroppedModel(self.model)
        runnable: nn.Module = self.cropped
        if self.world.active:
            runnable = nn.parallel.DistributedDataParallel(
                self.cropped,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=len(self.model_config.heads) > 1,
            )
        self.ddp = runnable if self.world.active else None
        self.runnable = torch.compile(runnable) if self.config["train"]["compile"] else runnable
        seed = int(self.config["seed"])
        self.batches = {
            name: training_batches(
                self.data[name].train,
                self.positions[name],
                batch_size=self.batch_size,
                micro_batch_size=self.micro_batch_size,
                seed=seed,
                world=self.world,
                num_workers=int(self.config["data"]["num_workers"]),
            )
            for name in self.species
        }
        if self.world.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._write_config()
            self._trim_metrics()
            self.tensorboard = self._open_tensorboard()
        log.info(
            "training %s on %s x %d: %s steps, batch %d (%d x %d processes x %d accumulated), "
            "heads %s",
            self.out,
            self.device,
            self.world.world_size,
            self.total_steps,
            self.batch_size,
            self.micro_batch_size,
            self.world.world_size,
            self.accumulate,
            self.model_config.heads,
        )

    def _write_config(self) -> None:
        import yaml

        with atomic_file(self.out / "config.yaml") as handle:
            yaml.safe_dump(self.config, handle, sort_keys=False)

    def _open_tensorboard(self):
        wanted = self.config["log"]["tensorboard"]
        if wanted is False:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            if wanted is True:
                raise FlashRNAError(
                    "log.tensorboard is true but tensorboard is not installed "
                    "(pip install 'flashrna[tensorboard]')"
                ) from None
            return None
        return SummaryWriter(str(self.out / "tensorboard"), purge_step=self.step + 1)

    def _install_signal_handlers(self) -> dict[int, Any]:
        """SIGTERM/SIGINT ask for a checkpoint after the current step; a second SIGINT stops at
        once."""

        def handler(signum, frame):
            if self.stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.stop_signal = signum
            log.warning("signal %d: checkpointing after this step, then exiting", signum)

        old = {}
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            for signum in (signal.SIGTERM, signal.SIGINT):
                old[signum] = signal.signal(signum, handler)
        return old

    def _loop(self, stop_at_step: int | None) -> str:
        from tqdm.auto import tqdm

        cfg = self.config
        progress = tqdm(
            total=self.total_steps,
            initial=self.step,
            unit="step",
            desc="train",
            disable=not (self.world.main and cfg["log"]["progress"]),
            dynamic_ncols=True,
        )
        interval = {"loss": [], "species": [], "examples": 0, "time": time.perf_counter()}
        reset_peak_memory(self.device)
        status = "finished"
        self.model.train()
        while self.step < self.total_steps:
            species = self.species[self.step % len(self.species)]
            loss, grad_norm, stop = self._train_step(species)
            self.step += 1
            self.examples_seen += self.batch_size
            interval["loss"].append(loss)
            interval["species"].append(species)
            interval["examples"] += self.batch_size
            progress.update()
            progress.set_postfix(loss=f"{loss:.4f}", species=species, refresh=False)
            last = self.step == self.total_steps
            logged = self.step % cfg["log"]["every_steps"] == 0 or last
            if logged:
                self._log_train(interval, grad_norm)
            if self.step % cfg["validation"]["every_steps"] == 0 or last:
                self._validate()
                patience = cfg["validation"]["patience"]
                if patience is not None and self.best["since"] >= patience:
                    log.info("no improvement in %d validations: stopping early", patience)
                    status = "early-stopped"
            if stop:
                status = "interrupted"
            elif stop_at_step is not None and self.step >= stop_at_step and not last:
                status = "stopped"
            if status != "finished" or last or self.step % cfg["checkpoint"]["every_steps"] == 0:
                self._save_checkpoint()
            if status != "finished":
                break
            if logged:  # the next interval's speed leaves out validation and checkpoints
                interval = {"loss": [], "species": [], "examples": 0, "time": time.perf_counter()}
        progress.close()
        return status

    def _train_step(self, species: str) -> tuple[float, float, bool]:
        """One optimiser step on ``species``; returns the loss (mean over the global batch),
        the gradient norm before clipping, and whether any process asked to stop."""
        train = self.config["train"]
        losses = []
        for micro in range(self.accumulate):
            batch = next(self.batches[species])
            syncing = self.ddp is None or micro == self.accumulate - 1
            with contextlib.nullcontext() if syncing else self.ddp.no_sync():
                loss = batch_loss(
                    self.runnable,
                    batch,
                    species,
                    self.device,
                    self.bf16,
                    float(train["loss_total_weight"]),
                )
                (loss / self.accumulate).backward()
            losses.append(loss.detach())
        stats = torch.stack(
            [
                torch.stack(losses).mean(),
                torch.tensor(float(self.stop_signal is not None), device=self.device),
            ]
        )
        if self.world.active:
            dist.all_reduce(stats)
            stats[0] /= self.world.world_size
        loss_value, stop = float(stats[0]), bool(stats[1] > 0)
        if not math.isfinite(loss_value):
            self._non_finite(f"the loss is {loss_value}", species)
        clip = train["clip_grad_norm"]
        grad_norm = float(
            nn.utils.clip_grad_norm_(self.model.parameters(), float(clip) if clip else math.inf)
        )
        if not math.isfinite(grad_norm):
            self._non_finite(f"the gradient norm is {grad_norm}", species)
        lr = learning_rate(self.step, self.total_steps, train)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_value, grad_norm, stop

    def _non_finite(self, what: str, species: str) -> None:
        checkpoints = checkpoint_dirs(self.out)
        last = (
            f"the last good checkpoint is {checkpoints[-1]}" if checkpoints else "no checkpoint yet"
        )
        raise NonFiniteLossError(
            f"{self.out}: step {self.step + 1} ({species} batch): {what}; stopped without "
            f"updating the weights or writing a checkpoint ({last}). Lower "
            "train.learning_rate or train.clip_grad_norm, or check the shards for bad targets."
        )

    # -- logging -------------------------------------------------------------------------------

    def _record(self, record: dict[str, Any]) -> None:
        if not self.world.main:
            return
        with open(self.out / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record, default=float) + "\n")
        if self.tensorboard is not None:
            for key, value in _flatten(record).items():
                if isinstance(value, int | float) and key not in ("step",):
                    self.tensorboard.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    def _trim_metrics(self) -> None:
        """Drop records past the step we resume from: those steps run again."""
        path = self.out / "metrics.jsonl"
        if not path.is_file():
            return
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line).get("step", 0) <= self.step]
        if len(kept) != len(lines):
            with atomic_file(path) as handle:
                handle.write("".join(line + "\n" for line in kept))

    def _log_train(self, interval: dict[str, Any], grad_norm: float) -> None:
        seconds = time.perf_counter() - interval["time"]
        by_species = {
            name: float(
                np.mean(
                    [
                        x
                        for x, s in zip(interval["loss"], interval["species"], strict=True)
                        if s == name
                    ]
                )
            )
            for name in dict.fromkeys(interval["species"])
        }
        self._record(
            {
                "kind": "train",
                "step": self.step,
                "examples": self.examples_seen,
                "loss": float(np.mean(interval["loss"])),
                "loss_by_species": by_species,
                "lr": learning_rate(self.step - 1, self.total_steps, self.config["train"]),
                "grad_norm": grad_norm,
                "examples_per_s": interval["examples"] / max(seconds, 1e-9),
                "peak_memory_bytes": peak_memory_bytes(self.device),
            }
        )
        reset_peak_memory(self.device)

    # -- validation ----------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, dict[str, float]]:
        """Per-species, per-assay mean of the track Pearson R over the validation windows'
        target bins (values as stored, forward strand), pooled over all processes."""
        cfg = self.config["validation"]
        batch_size = int(cfg["batch_size"] or self.micro_batch_size)
        limit = cfg["max_examples"]
        was_training = self.model.training
        self.model.eval()
        results = {}
        for name, data in self.data.items():
            if data.valid is None:
                continue
            size = len(data.valid) if limit is None else min(int(limit), len(data.valid))
            # A fixed permutation (seed 0) picks the same subset for every replicate.
            loader = make_loader(
                data.valid,
                batch_size,
                shuffle=limit is not None,
                seed=0,
                rank=self.world.rank,
                world_size=self.world.world_size,
                even_shards=False,
                num_workers=min(int(self.config["data"]["num_workers"]), 2),
            )
            remaining = len(range(self.world.rank, size, self.world.world_size))
            pearson = StreamingPearson(len(data.tracks), self.device)
            with torch.random.fork_rng(devices=[]):
                batches = iter(loader)
            for batch in batches:
                if remaining <= 0:
                    break
                batch = {k: v[:remaining] for k, v in batch.items()}
                remaining -= len(batch["index"])
                targets = batch["targets"].to(self.device)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    prediction = self.cropped(
                        batch["sequence"].to(self.device),
                        name,
                        batch["crop_start"],
                        targets.shape[1],
                    )
                pearson.update(prediction.float(), targets.float())
            del batches
            if self.world.active:
                states = [torch.zeros_like(pearson.state) for _ in range(self.world.world_size)]
                dist.all_gather(states, pearson.state)
                pearson = StreamingPearson(len(data.tracks), self.device)
                for state in states:
                    part = StreamingPearson(len(data.tracks), self.device)
                    part.state = state
                    pearson.merge(part)
            results[name] = per_group_mean(pearson.compute(), data.tracks.assay)
        self.model.train(was_training)
        return results

    def _validate(self) -> None:
        results = self.evaluate()
        if not results:
            return
        score = float(np.nanmean([np.nanmean(list(r.values())) for r in results.values()]))
        improved = math.isfinite(score) and (
            self.best["score"] is None or score > self.best["score"]
        )
        if improved:
            self.best.update(score=score, step=self.step, since=0)
            if self.world.main:
                self._save_model_dir(self.out / "best")
        else:
            self.best["since"] += 1
        self._record(
            {
                "kind": "valid",
                "step": self.step,
                "pearson": results,
                "score": score,
                "best_score": self.best["score"],
                "best_step": self.best["step"],
            }
        )
        log.info(
            "step %d: validation Pearson %s (score %.4f, best %.4f at step %s)",
            self.step,
            {n: {a: round(v, 4) for a, v in r.items()} for n, r in results.items()},
            score,
            self.best["score"] if self.best["score"] is not None else float("nan"),
            self.best["step"],
        )

    # -- saving --------------------------------------------------------------------------------

    def _save_model_dir(self, path: Path, model: FlashRNA | None = None) -> None:
        """A model directory (save_model) plus each head's track table, atomically."""
        with atomic_directory(path) as tmp:
            save_model(
                model or self.model,
                tmp,
                {"step": self.step, "seed": self.config["seed"], "train_config": self.config},
            )
            for name, data in self.data.items():
                data.tracks.write(tmp / f"targets-{name}.txt")

    def _save_checkpoint(self) -> None:
        from safetensors.torch import save_file

        states = [_rng_state(self.device)]
        if self.world.active:
            states = [None] * self.world.world_size
            dist.all_gather_object(states, _rng_state(self.device))
        if self.world.main:
            path = self.out / "checkpoints" / f"step-{self.step:08d}"
            tensors, rest = optimizer_state_to_files(self.optimizer)
            rng_tensors = {
                f"{kind}.{rank}": state[kind]
                for rank, state in enumerate(states)
                for kind in ("torch", "cuda")
                if kind in state
            }
            with atomic_directory(path) as tmp:
                save_model(self.model, tmp / "model", {"step": self.step})
                save_file(tensors, str(tmp / "optimizer.safetensors"))
                save_file(rng_tensors, str(tmp / "rng.safetensors"))
                write_json(
                    tmp / "state.json",
                    {
                        "format": CHECKPOINT_FORMAT,
                        "version": CHECKPOINT_VERSION,
                        "step": self.step,
                        "examples_seen": self.examples_seen,
                        "world_size": self.world.world_size,
                        "positions": {n: dataclasses.asdict(p) for n, p in self.positions.items()},
                        "best": self.best,
                        "optimizer": rest,
                        "rng": [{k: s[k] for k in ("python", "numpy")} for s in states],
                        "config": self.config,
                    },
                )
            for old in checkpoint_dirs(self.out)[: -int(self.config["checkpoint"]["keep"])]:
                shutil.rmtree(old, ignore_errors=True)
            log.info("checkpoint %s", path)
        self.world.barrier()

    def _restore(self, path: Path) -> None:
        from safetensors.torch import load_file

        state = read_json(path / "state.json")
        if state.get("format") != CHECKPOINT_FORMAT or state.get("version") != CHECKPOINT_VERSION:
            raise FlashRNAError(f"{path}: not a version-{CHECKPOINT_VERSION} training checkpoint")
        differ = config_differences(state["config"], self.config)
        if differ:
            stored, current = _flatten(state["config"]), _flatten(self.config)
            detail = "; ".join(f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in differ[:8])
            raise FlashRNAError(
                f"{path}: the config differs from the one this run started with ({detail}); "
                "use a new --out directory for a new run"
            )
        self.model = self._freeze(
            load_model(path / "model", expected_config=self.model_config, device=self.device)
        )
        self.optimizer = build_optimizer(self.model, self.config["train"])
        self.optimizer.load_state_dict(
            optimizer_state_from_files(
                load_file(str(path / "optimizer.safetensors")), state["optimizer"]
            )
        )
        self.step = int(state["step"])
        self.examples_seen = int(state["examples_seen"])
        self.best = state["best"]
        for name, value in state["positions"].items():
            self.positions[name] = Position(**value)
        rank = self.world.rank
        if state["world_size"] == self.world.world_size:
            rng = load_file(str(path / "rng.safetensors"))
            own = {"torch": rng[f"torch.{rank}"], **state["rng"][rank]}
            if f"cuda.{rank}" in rng:
                own["cuda"] = rng[f"cuda.{rank}"]
            _set_rng_state(own, self.device)
        else:
            log.warning(
                "%s was written by %d processes, this run has %d: the data order continues, "
                "dropout masks are drawn afresh",
                path,
                state["world_size"],
                self.world.world_size,
            )
            self._seed_process()
        log.info("resuming from %s (step %d)", path, self.step)

    def _finish(self, status: str) -> None:
        if not self.world.main:
            return
        final = self.model
        use_best = self.config["validation"]["final_model"] == "best"
        if use_best and self.best["step"] is not None and (self.out / "best").is_dir():
            final = load_model(self.out / "best", expected_config=self.model_config)
        summary = {
            "status": status,
            "steps": self.step,
            "examples_seen": self.examples_seen,
            "final_model": "best" if final is not self.model else "last",
            "best_step": self.best["step"],
            "best_score": self.best["score"],
            "validation": self._last_validation(),
            "world_size": self.world.world_size,
            "batch_size": self.batch_size,
            "seed": self.config["seed"],
        }
        write_json(self.out / "metrics.json", summary)
        self._save_model_dir(self.out / "model", final)  # written last: marks the run finished
        log.info("finished %s: model/ from step %s", self.out, self.best["step"] or self.step)

    def _last_validation(self) -> dict | None:
        path = self.out / "metrics.jsonl"
        if not path.is_file():
            return None
        records = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        valid = [r for r in records if r["kind"] == "valid"]
        best = [r for r in valid if r["step"] == self.best["step"]]
        return (best or valid or [None])[-1]


def train(
    config: Mapping[str, Any],
    out: str | os.PathLike,
    device: str | torch.device | None = None,
    stop_at_step: int | None = None,
) -> TrainResult:
    """Train (or resume, or skip a finished) run of ``config`` (:func:`load_config`) in ``out``.
    ``stop_at_step`` checkpoints and returns at that step, as a preemption would."""
    if (Path(out) / "model" / "config.json").is_file() and (Path(out) / "metrics.json").is_file():
        log.info("%s: finished before (model/, metrics.json); nothing to do", out)
        return TrainResult("already-finished", -1, Path(out))
    return Trainer(config, out, device).run(stop_at_step)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


_TRAIN_HELP = """\
Train a FlashRNA model from scratch.

The run is described by a YAML config (defaults: the paper's values; print them with
--print-config). The smallest config names the shards of each species:

    data:
      species:
        human: {shards: results/shards/hg38}
        mouse: {shards: results/shards/mm10}

Outputs in --out: config.yaml, metrics.jsonl (training and validation records),
checkpoints/step-N/, best/ (best validation model), and when done metrics.json and model/
(the final model, which marks the run finished). Re-running the same command resumes from the
newest checkpoint exactly; SIGTERM/SIGINT write a checkpoint and exit (code 128+signal); a
finished run is not run again. Replicates: the same config with another --seed.

Several GPUs: torchrun --nproc-per-node N $(which flashrna) train <same options>.
"""


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = _HelpFormatter
    parser.add_argument("--config", type=Path, help="YAML training config")
    parser.add_argument(
        "--config-key",
        help="take the config from this (dotted) section of the YAML file, e.g. 'train'",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key (dotted path, value as YAML), e.g. train.steps=1000; "
        "repeatable",
    )
    parser.add_argument("--seed", type=int, help="replicate seed (overrides the config's seed)")
    parser.add_argument("--out", type=Path, help="run directory (outputs and checkpoints)")
    parser.add_argument(
        "--device", default="auto", help="auto, cpu, cuda (torchrun: cuda:LOCAL_RANK)"
    )
    parser.add_argument(
        "--stop-at-step",
        type=int,
        help="write a checkpoint and exit at this step (a later run resumes), e.g. to fit a "
        "job's time limit",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config as YAML and exit"
    )


def register_train(parser: argparse.ArgumentParser) -> None:
    parser.description = _TRAIN_HELP
    _add_common_arguments(parser)
    parser.set_defaults(run=_run_train)


def _run(args: argparse.Namespace, config: dict[str, Any]) -> int:
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config, sort_keys=False), end="")
        return 0
    if args.out is None:
        raise FlashRNAError("--out is required: the run directory")
    result = train(config, args.out, args.device, args.stop_at_step)
    if result.status == "interrupted":
        return 128 + int(result.signal or 0)
    return 0


def _run_train(args: argparse.Namespace) -> int:
    return _run(args, load_config(args.config, args.config_key, args.overrides, args.seed))


_DISTILL_HELP = """\
Distil an ensemble into one student with the training code of 'flashrna train'.

The teacher is an ensemble's predictions over the training windows, written by
'flashrna ensemble-predict' in the shard format of the targets (same windows, same order).
The student trains on teacher targets, optionally mixed with the real ones:
targets = (1 - w) x teacher + w x real, w = --target-weight (config distill.target_weight).
Validation compares the student with the real validation targets. Everything else (config,
outputs, resume, torchrun) is as for 'flashrna train'.
"""


def register_distill(parser: argparse.ArgumentParser) -> None:
    parser.description = _DISTILL_HELP
    _add_common_arguments(parser)
    parser.add_argument(
        "--teacher",
        action="append",
        default=[],
        metavar="SPECIES=DIR",
        help="teacher shards of a species (config data.species.SPECIES.teacher); repeatable",
    )
    parser.add_argument(
        "--target-weight",
        type=float,
        help="weight w of the real targets (config distill.target_weight)",
    )
    parser.set_defaults(run=_run_distill)


def _run_distill(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    for item in args.teacher:
        species, sep, path = item.partition("=")
        if not sep:
            raise FlashRNAError(f"--teacher '{item}': expected SPECIES=DIR")
        overrides.setdefault("data", {}).setdefault("species", {})[species] = {"teacher": path}
    if args.target_weight is not None:
        overrides["distill"] = {"target_weight": args.target_weight}
    config = load_config(args.config, args.config_key, args.overrides, args.seed)
    config = _normalise_species(merge_config(config, overrides, "command line"), "command line")
    _check_config(config)
    species = config["data"]["species"]
    missing = [name for name, entry in species.items() if not entry["teacher"]]
    if missing or not species:
        raise FlashRNAError(
            f"distill: species {missing or '(none)'} name no teacher shards; give --teacher "
            "SPECIES=DIR or data.species.SPECIES.teacher"
        )
    return _run(args, config)
