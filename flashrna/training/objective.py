"""The objective: Borzoi's Poisson-multinomial loss, AdamW parameter groups, the learning-rate
schedule, and the loss of a batch on cropped targets.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from flashrna.model import (
    FlashRNA,
    take_bins,
)

log = logging.getLogger(__name__)

LOSS_EPSILON = 1e-7  # baskerville metrics.poisson_multinomial default

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
    """AdamW over :func:`parameter_groups`; the learning rate is set before each step. The fused
    kernel when every parameter is on a CUDA device (one launch per step instead of several per
    tensor)."""
    fused = all(p.is_cuda for p in model.parameters()) or None
    return torch.optim.AdamW(
        parameter_groups(
            model, float(train_config["weight_decay"]), float(train_config["trunk_lr_scale"])
        ),
        lr=float(train_config["learning_rate"]),
        betas=tuple(float(b) for b in train_config["adam_betas"]),
        eps=float(train_config["adam_eps"]),
        fused=fused,
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
