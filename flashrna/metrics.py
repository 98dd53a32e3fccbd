"""Streaming correlation statistics shared by validation and evaluation.

:class:`StreamingPearson` keeps, per track, the float64 count, means, sums of squared
deviations and co-deviation, merged batch by batch with the parallel update of Chan, Golub and
LeVeque (1979). Memory is constant in the number of windows, batches may have any size, the
state can live on the GPU beside the predictions, and two states merge exactly (DDP ranks).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class StreamingPearson:
    """Per-track Pearson correlation over every bin of every example seen.

    ``update(prediction, target)`` takes tensors or arrays of shape (..., tracks); all leading
    axes are pooled. ``compute()`` returns (tracks,) float64, NaN where a side is constant."""

    def __init__(self, num_tracks: int, device: str | torch.device = "cpu"):
        self.state = torch.zeros(6, num_tracks, dtype=torch.float64, device=device)

    @property
    def count(self) -> Tensor:
        return self.state[0]

    def update(self, prediction: Tensor | np.ndarray, target: Tensor | np.ndarray) -> None:
        x = torch.as_tensor(prediction, device=self.state.device)
        y = torch.as_tensor(target, device=self.state.device)
        if x.shape != y.shape or x.shape[-1] != self.state.shape[1]:
            raise ValueError(
                f"prediction {tuple(x.shape)} and target {tuple(y.shape)} must "
                f"match and end in {self.state.shape[1]} tracks"
            )
        x = x.reshape(-1, x.shape[-1]).to(torch.float64)
        y = y.reshape(-1, y.shape[-1]).to(torch.float64)
        n = x.shape[0]
        if n == 0:
            return
        mean_x, mean_y = x.mean(0), y.mean(0)
        dx, dy = x - mean_x, y - mean_y
        batch = torch.stack(
            [
                torch.full_like(mean_x, n),
                mean_x,
                mean_y,
                (dx * dx).sum(0),
                (dy * dy).sum(0),
                (dx * dy).sum(0),
            ]
        )
        self._merge_state(batch)

    def merge(self, other: StreamingPearson) -> None:
        """Fold another accumulator (another rank, another shard) into this one."""
        self._merge_state(other.state.to(self.state.device))

    def _merge_state(self, other: Tensor) -> None:
        n_a, mx_a, my_a, sxx_a, syy_a, sxy_a = self.state
        n_b, mx_b, my_b, sxx_b, syy_b, sxy_b = other
        n = n_a + n_b
        weight = torch.where(n > 0, n_a * n_b / n.clamp(min=1), torch.zeros_like(n))
        share_b = torch.where(n > 0, n_b / n.clamp(min=1), torch.zeros_like(n))
        delta_x, delta_y = mx_b - mx_a, my_b - my_a
        self.state = torch.stack(
            [
                n,
                mx_a + delta_x * share_b,
                my_a + delta_y * share_b,
                sxx_a + sxx_b + delta_x * delta_x * weight,
                syy_a + syy_b + delta_y * delta_y * weight,
                sxy_a + sxy_b + delta_x * delta_y * weight,
            ]
        )

    def compute(self) -> np.ndarray:
        _, _, _, sxx, syy, sxy = self.state.cpu().numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            r = sxy / np.sqrt(sxx * syy)
        r[(sxx <= 0) | (syy <= 0)] = np.nan
        return r


def per_group_mean(values: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Mean of ``values`` (tracks,) within each group label (tracks,), ignoring NaN; groups in
    order of first appearance."""
    out = {}
    for group in dict.fromkeys(groups.tolist()):
        selected = values[groups == group]
        out[str(group)] = float(np.nanmean(selected)) if np.isfinite(selected).any() else np.nan
    return out


def finite_or_none(value: float) -> float | None:
    """``value`` as a float, or None when it is NaN or infinite (JSON has no NaN)."""
    return float(value) if np.isfinite(value) else None
