"""The training config: defaults (the paper's recipe and documented choices), loading, checks.

PyTorch-free, so the workflow can check configs while Snakemake parses the DAG.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any

from flashrna.utils import (
    FlashRNAError,
    load_yaml,
    merge_config,
)

# Every key a training config may set. Paper values where the paper gives them (the FlashRNA
# paper: AdamW, weight decay 0.1, dropouts, shifts of ±1,024 bp and reverse complements, bf16);
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


def normalise_species(config: dict[str, Any], where: str) -> dict[str, Any]:
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
    config = normalise_species(copy.deepcopy(DEFAULTS), where)
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
        config = normalise_species(merge_config(config, data, where), where)
    if not isinstance(overrides, Mapping):
        overrides = parse_set(overrides)
    config = normalise_species(merge_config(config, overrides, "--set"), "--set")
    if seed is not None:
        config["seed"] = int(seed)
    check_config(config)
    return config


def check_config(config: dict[str, Any]) -> None:
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


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two configs, apart from
    :data:`RESUMABLE_CHANGES`."""
    a, b = flatten_config(stored), flatten_config(current)
    return [
        key
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
        and not any(key == p or (p.endswith(".") and key.startswith(p)) for p in RESUMABLE_CHANGES)
    ]
