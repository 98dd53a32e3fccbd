"""ChIP-seq fine-tuning (Table 3): a new head on a pretrained trunk, trained by
:mod:`flashrna.training` (see :mod:`flashrna.finetune` for the settings and why)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence

from flashrna.utils import FlashRNAError

CHIP_MODES = ("head", "full")
TRUNK_DROPOUTS = ("attention_dropout", "mlp_dropout", "residual_dropout")


def chip_settings(
    model: str,
    shards: Sequence[str],
    mode: str = "head",
    head: str = "chip",
    assays: Sequence[str] | None = ("CHIP",),
    genome: str | None = None,
    epochs: float = 3,
    learning_rate: float = 5e-4,
    warmup_steps: int = 1000,
    trunk_lr_scale: float = 0.1,
) -> list[str]:
    """The training-config keys of a ChIP fine-tuning run (module docstring), as ``--set``
    strings for :func:`flashrna.training.config.load_config` (values JSON: paths stay strings)."""
    if mode not in CHIP_MODES:
        raise FlashRNAError(f"mode '{mode}' is not one of {CHIP_MODES}")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", head):
        raise FlashRNAError(f"head name '{head}' must be letters, digits, '_' or '-'")
    values = {
        "model.init": str(model),
        f"data.species.{head}.shards": [str(path) for path in shards],
        f"data.species.{head}.assays": None if assays is None else list(assays),
        f"data.species.{head}.genome": None if genome is None else str(genome),
        "train.epochs": epochs,
        "train.learning_rate": learning_rate,
        "train.warmup_steps": warmup_steps,
        "train.trunk_lr_scale": 0.0 if mode == "head" else trunk_lr_scale,
    }
    if mode == "head":
        # Frozen trunk without dropout: its eval-mode function, whatever mode the loop sets.
        values.update({f"model.overrides.{name}": 0.0 for name in TRUNK_DROPOUTS})
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def chip_config(
    model: str | os.PathLike,
    shards: Sequence[str | os.PathLike],
    *,
    mode: str = "head",
    head: str = "chip",
    assays: Sequence[str] | None = ("CHIP",),
    genome: str | os.PathLike | None = None,
    epochs: float = 3,
    learning_rate: float = 5e-4,
    warmup_steps: int = 1000,
    trunk_lr_scale: float = 0.1,
    config: str | os.PathLike | None = None,
    config_key: str | None = None,
    overrides: Sequence[str] = (),
    seed: int | None = None,
) -> dict:
    """The resolved training config of a ChIP fine-tuning run: the training defaults, then
    ``config`` (its section ``config_key``), then :func:`chip_settings`, then ``overrides``
    (``--set`` strings), then ``seed``."""
    from flashrna.training.config import load_config

    settings = chip_settings(
        str(model),
        [str(s) for s in shards],
        mode,
        head,
        assays,
        None if genome is None else str(genome),
        epochs,
        learning_rate,
        warmup_steps,
        trunk_lr_scale,
    )
    return load_config(config, config_key, [*settings, *overrides], seed)


def finetune_chip(
    model: str | os.PathLike,
    shards: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    device: str | None = None,
    stop_at_step: int | None = None,
    **settings,
):
    """Fine-tune a new ChIP head on the trunk of the model directory ``model`` with the
    ``shards``' tracks of the chosen assays: a ``flashrna train`` run directory in ``out``
    (resumable) whose ``model/`` is the fine-tuned model. ``settings``: the keywords of
    :func:`chip_config`. Returns the :class:`~flashrna.training.trainer.TrainResult`."""
    from flashrna.training.trainer import train

    return train(chip_config(model, shards, **settings), out, device, stop_at_step)
