"""Training checkpoints without pickles: weights, optimiser moments and RNG states as
safetensors, the rest as JSON.

A checkpoint is the directory ``checkpoints/step-NNNNNNNN`` (written atomically)::

    model/                  save_model
    optimizer.safetensors   AdamW moments, ``<param index>.<name>``
    rng.safetensors         torch (and CUDA) RNG states, ``<kind>.<rank>``
    state.json              format, version, step, examples_seen, world_size, positions, best,
                            optimizer (param groups, scalars), rng (Python, NumPy), config
"""

from __future__ import annotations

import itertools
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flashrna.utils import FlashRNAError, read_json

CHECKPOINT_FORMAT = "flashrna-train-checkpoint"
CHECKPOINT_VERSION = 1
_STEP_DIR = re.compile(r"step-(\d+)")

# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


class DamagedCheckpoint(FlashRNAError):
    """A checkpoint that cannot be read back (truncated file, wrong-typed field, ...)."""


def checkpoint_dirs(out: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``out/checkpoints``, oldest first."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.glob("step-*")
        if _STEP_DIR.fullmatch(p.name) and (p / "state.json").is_file()
    ]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _whole(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _number_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def read_state(path: Path) -> dict[str, Any]:
    """``path/state.json`` with every field's type checked; :class:`DamagedCheckpoint` names a
    bad one."""
    try:
        state = read_json(path / "state.json")
    except FlashRNAError as err:
        raise DamagedCheckpoint(str(err)) from None

    def bad(field: str, value: Any, expected: str) -> DamagedCheckpoint:
        return DamagedCheckpoint(f"{path}/state.json: '{field}' is {value!r}, expected {expected}")

    if not isinstance(state, dict):
        raise bad("(top level)", state, "an object")
    if state.get("format") != CHECKPOINT_FORMAT or state.get("version") != CHECKPOINT_VERSION:
        raise DamagedCheckpoint(f"{path}: not a version-{CHECKPOINT_VERSION} training checkpoint")
    for field, low in (("step", 0), ("examples_seen", 0), ("world_size", 1)):
        if not _whole(state.get(field), low):
            raise bad(field, state.get(field), f"a whole number ≥ {low}")
    positions = state.get("positions")
    if not isinstance(positions, dict):
        raise bad("positions", positions, "an object of species")
    for name, position in positions.items():
        if not (
            isinstance(position, dict)
            and set(position) == {"epoch", "examples"}
            and all(_whole(v) for v in position.values())
        ):
            raise bad(f"positions.{name}", position, "{epoch, examples} whole numbers")
    best = state.get("best")
    if not (
        isinstance(best, dict)
        and _number_or_none(best.get("score"))
        and (best.get("step") is None or _whole(best.get("step")))
        and _whole(best.get("since"))
    ):
        raise bad("best", best, "{score, step, since}")
    optimizer = state.get("optimizer")
    if not (
        isinstance(optimizer, dict)
        and isinstance(optimizer.get("param_groups"), list)
        and all(isinstance(g, dict) for g in optimizer["param_groups"])
        and isinstance(optimizer.get("scalars"), dict)
    ):
        raise bad("optimizer", optimizer, "{param_groups: [...], scalars: {...}}")
    rng = state.get("rng")
    if not (
        isinstance(rng, list)
        and all(isinstance(r, dict) and {"python", "numpy"} <= set(r) for r in rng)
    ):
        raise bad("rng", rng, "one {python, numpy} object per process")
    if not isinstance(state.get("config"), dict):
        raise bad("config", state.get("config"), "the run's config")
    return state


def read_tensors(path: Path) -> dict[str, Tensor]:
    """A safetensors file; :class:`DamagedCheckpoint` when it is missing or cannot be read."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise DamagedCheckpoint(f"{path}: missing") from None
    except Exception as err:  # safetensors raises its own error types for truncated files
        raise DamagedCheckpoint(f"{path}: unreadable ({err})") from None


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


def rng_state(device: torch.device) -> dict[str, Any]:
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


def set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
