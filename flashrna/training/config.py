"""The training config: defaults (the paper's recipe and documented choices), loading, checks.

One validation layer (:func:`check_config`: every key known, of its type and in its range)
serves ``flashrna train``, the Python API (:func:`load_config`, :func:`resolve_config`,
:func:`flashrna.training.trainer.train`) and the workflow's dry run. PyTorch-free, so the
workflow can check configs while Snakemake parses the DAG.
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
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
        # Loader processes per training process; null: what the machine has,
        # min(4, CPUs / processes on this node - 1), so 0 on one CPU (default_num_workers).
        "num_workers": None,
    },
    "train": {
        "steps": 60_000,  # choice: 480k examples at batch 8, about a day at ~6 examples/s
        "epochs": None,  # instead of steps: passes over the first species' training windows
        "batch_size": 8,  # choice (paper: larger than Borzoi's 2); global, per optimiser step
        "micro_batch_size": None,  # per process; default batch/processes, on a GPU what fits
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
    for name in species:
        if not _HEAD_NAME.fullmatch(str(name)):
            raise FlashRNAError(
                f"{where}.data.species: '{name}' is not a plain name (letters, digits, '_', '-'): "
                "it names a model head and its files"
            )
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
    dotted path), then ``overrides`` (a mapping, or ``--set`` strings), then ``seed``; checked
    and normalised by :func:`check_config`."""
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
    if isinstance(overrides, str) or not isinstance(overrides, Mapping):
        overrides = parse_set([overrides] if isinstance(overrides, str) else overrides)
    config = normalise_species(merge_config(config, overrides, "--set"), "--set")
    if seed is not None:
        config["seed"] = seed
    return check_config(config)


def resolve_config(config: Mapping[str, Any], where: str = "config") -> dict[str, Any]:
    """``config`` (complete, or only the keys that differ from :data:`DEFAULTS`) merged over the
    defaults and checked (:func:`check_config`): what
    :func:`flashrna.training.trainer.train` runs."""
    merged = merge_config(normalise_species(copy.deepcopy(DEFAULTS), where), config, where)
    return check_config(normalise_species(merged, where))


# --------------------------------------------------------------------------------------------
# Checks: the type and range of every key
# --------------------------------------------------------------------------------------------

_HEAD_NAME = re.compile(r"[A-Za-z0-9_-]+")


class _Invalid(ValueError):
    """A value that does not fit its rule (the message says what was expected)."""


def _number(value: Any) -> float:
    # YAML 1.1 (PyYAML) reads 1e-3 as a string: numeric strings are numbers.
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _Invalid("a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Invalid("a finite number")
    return value


def _integer(low: int, null: str = "") -> Callable[[Any], Any]:
    words = {0: "a whole number ≥ 0", 1: "a positive whole number"}[low]
    expected = f"{words}{f', or null ({null})' if null else ''}"

    def check(value: Any) -> Any:
        if value is None and null:
            return None
        try:
            number = _number(value)
        except _Invalid:
            raise _Invalid(expected) from None
        if number != int(number) or number < low:
            raise _Invalid(expected)
        return int(number)

    return check


def _real(low: float, high: float | None = None, *, open_low=False, null: str = "") -> Callable:
    bounds = f"in [{low}, {high}]" if high is not None else f"{'>' if open_low else '≥'} {low}"
    expected = f"a number {bounds}{f', or null ({null})' if null else ''}"

    def check(value: Any) -> Any:
        if value is None and null:
            return None
        try:
            number = float(_number(value))
        except _Invalid:
            raise _Invalid(expected) from None
        if number < low or (open_low and number == low) or (high is not None and number > high):
            raise _Invalid(expected)
        return number

    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("true or false (unquoted)")
    return value


def _choice(*allowed: Any) -> Callable[[Any], Any]:
    names = ", ".join(str(a).lower() if isinstance(a, bool) else a for a in allowed)

    def check(value: Any) -> Any:
        # By type too: 1 == True in Python, but `tensorboard: 1` is not a choice.
        if not any(value == a and type(value) is type(a) for a in allowed):
            raise _Invalid(f"one of {names}")
        return value

    return check


def _text(null: str = "") -> Callable[[Any], Any]:
    expected = f"a non-empty string{f', or null ({null})' if null else ''}"

    def check(value: Any) -> Any:
        if value is None and null:
            return None
        if not isinstance(value, str) or not value:
            raise _Invalid(expected)
        return value

    return check


def _paths(null: str = "") -> Callable[[Any], Any]:
    """One path, or a non-empty list of them."""
    expected = f"a folder or a list of folders{f', or null ({null})' if null else ''}"

    def check(value: Any) -> Any:
        if value is None and null:
            return None
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) and v for v in items):
            raise _Invalid(expected)
        return value

    return check


def _names(value: Any) -> Any:
    """Assay names: a list of strings (one string is a list of one), or null for all."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) for v in items):
        raise _Invalid("a list of assay names, or null (all the shards' tracks)")
    return items


def _mapping(value: Any) -> Any:
    if not isinstance(value, Mapping):
        raise _Invalid("a mapping")
    return dict(value)


def _betas(value: Any) -> list[float]:
    expected = "two numbers in [0, 1), e.g. [0.9, 0.999]"
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise _Invalid(expected)
    try:
        betas = [float(_number(v)) for v in value]
    except _Invalid:
        raise _Invalid(expected) from None
    if not all(0 <= b < 1 for b in betas):
        raise _Invalid(expected)
    return betas


# The rule of every leaf key of DEFAULTS (a test keeps the two in step).
RULES: dict[str, Callable[[Any], Any]] = {
    "seed": _integer(0),
    "model.preset": _text(),
    "model.overrides": _mapping,
    "model.init": _text("no pretrained trunk"),
    "data.species": _mapping,
    "data.seq_length": _integer(1, "as stored in the shards"),
    "data.max_shift": _integer(0),
    "data.reverse_complement": _boolean,
    "data.num_workers": _integer(0, "what the machine has"),
    "train.steps": _integer(1),
    "train.epochs": _real(0, open_low=True, null="train.steps decides"),
    "train.batch_size": _integer(1),
    "train.micro_batch_size": _integer(1, "batch_size / processes"),
    "train.learning_rate": _real(0),
    "train.warmup_steps": _integer(0),
    "train.schedule": _choice("cosine", "linear", "constant"),
    "train.min_learning_rate_ratio": _real(0, 1),
    "train.weight_decay": _real(0),
    "train.trunk_lr_scale": _real(0),
    "train.adam_betas": _betas,
    "train.adam_eps": _real(0, open_low=True),
    "train.clip_grad_norm": _real(0, open_low=True, null="no clipping"),
    "train.loss_total_weight": _real(0),
    "train.precision": _choice("auto", "bf16", "fp32"),
    "train.compile": _boolean,
    "validation.every_steps": _integer(1),
    "validation.max_examples": _integer(1, "all valid windows"),
    "validation.batch_size": _integer(1, "micro_batch_size"),
    "validation.patience": _integer(1, "no early stopping"),
    "validation.final_model": _choice("best", "last"),
    "checkpoint.every_steps": _integer(1),
    "checkpoint.keep": _integer(1),
    "log.every_steps": _integer(1),
    "log.progress": _boolean,
    "log.tensorboard": _choice("auto", True, False),
    "distill.target_weight": _real(0, 1),
}
SPECIES_RULES: dict[str, Callable[[Any], Any]] = {
    "shards": _paths(),
    "assays": _names,
    "genome": _text("flanks beyond the stored sequence are N"),
    "teacher": _paths("no distillation"),
}


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """Check every key of a merged config against :data:`RULES` (type and range) and normalise
    it in place (numbers written as strings, such as YAML's ``1e-3``, become numbers); return
    it. A bad value is a :class:`FlashRNAError` naming the key, the value and what is expected."""

    def apply(node: dict[str, Any], key: str, rule: Callable[[Any], Any], name: str) -> None:
        try:
            node[key] = rule(node[key])
        except _Invalid as err:
            raise FlashRNAError(f"config {name}: expected {err}, got {node[key]!r}") from None

    for name, rule in RULES.items():
        *parents, leaf = name.split(".")
        node = config
        for part in parents:
            node = node[part]
        apply(node, leaf, rule, name)
    for species, entry in config["data"]["species"].items():
        for key, rule in SPECIES_RULES.items():
            apply(entry, key, rule, f"data.species.{species}.{key}")
    return config


def default_num_workers(processes_on_node: int | None = None) -> int:
    """Loader workers per training process when ``data.num_workers`` is null: the CPUs this
    process may use (its affinity mask) shared among the training processes on this node
    (torchrun's ``LOCAL_WORLD_SIZE``), minus one for the process itself, at most 4; 0 (load in
    the training process) on one CPU."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    processes = processes_on_node or int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, min(4, (cpus or 1) // max(1, processes) - 1))


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(
    stored: Mapping[str, Any],
    current: Mapping[str, Any],
    neutral: Sequence[str] = RESUMABLE_CHANGES,
) -> list[str]:
    """Dotted keys whose values differ between two configs, apart from the ``neutral`` ones
    (a key, or a prefix ending in ``.``; default :data:`RESUMABLE_CHANGES`)."""
    a, b = flatten_config(stored), flatten_config(current)
    return [
        key
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
        and not any(key == p or (p.endswith(".") and key.startswith(p)) for p in neutral)
    ]
