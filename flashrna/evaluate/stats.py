"""Classification and correlation statistics of the benchmarks, with bootstrap confidence intervals.

NumPy only (no scikit-learn at run time); the definitions are scikit-learn's, so the numbers
match ``sklearn.metrics.roc_auc_score`` and ``average_precision_score`` (tested):

- AUROC: the probability that a random positive scores above a random negative, ties counting
  one half (the Mann-Whitney U statistic over n_pos x n_neg).
- AUPRC (average precision): sum over the distinct score thresholds, from the highest, of
  (recall_k - recall_{k-1}) x precision_k, where a threshold takes every example scoring at
  least it (tied scores enter together). Its chance level is the fraction of positives.
- Bootstrap (Borzoi's CRISPR benchmark, calico/borzoi-paper ``analysis/crispr``): ``n`` resamples
  of the examples with replacement, the statistic on each, the 2.5 % and 97.5 % quantiles
  (NumPy's linear interpolation) of the resamples where it is defined (a resample without a
  positive, or with a constant side, has none and is left out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Statistic = Callable[..., float]


def _labels_scores(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y, s


def auroc(labels, scores) -> float:
    """Area under the ROC curve of ``scores`` (n,) for boolean ``labels`` (n,); NaN without
    both classes."""
    from scipy.stats import rankdata

    y, s = _labels_scores(labels, scores)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(s)  # average ranks of ties: a tied pair counts one half
    u = ranks[y].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def average_precision(labels, scores) -> float:
    """Area under the precision-recall curve as average precision (module docstring) of
    ``scores`` (n,) for boolean ``labels`` (n,); NaN without a positive."""
    y, s = _labels_scores(labels, scores)
    positives = int(y.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # end of each tied block
    true_positives = np.cumsum(y)[last]
    precision = true_positives / (last + 1)
    recall = true_positives / positives
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def pearson(x, y) -> float:
    """Pearson r of two (n,) arrays; NaN when either is constant or n < 2."""
    a, b = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"{a.size} values against {b.size}")
    if a.size < 2:
        return float("nan")
    da, db = a - a.mean(), b - b.mean()
    denominator = np.sqrt((da * da).sum() * (db * db).sum())
    return float((da * db).sum() / denominator) if denominator > 0 else float("nan")


@dataclass(frozen=True)
class Estimate:
    """A statistic on all examples and its bootstrap interval (NaN when undefined)."""

    value: float
    low: float
    high: float
    n: int  # examples
    resamples: int  # bootstrap resamples where the statistic was defined

    def row(self, prefix: str) -> dict[str, float | int]:
        """``{prefix: value, prefix_low: low, prefix_high: high}`` for a results table."""
        return {prefix: self.value, f"{prefix}_low": self.low, f"{prefix}_high": self.high}


def bootstrap(
    statistic: Statistic,
    *arrays,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """``statistic(*arrays)`` and its ``level`` bootstrap interval (module docstring).

    ``arrays`` are (n,) arrays resampled together (the same indices for each); draws come from
    ``np.random.default_rng(seed).integers(0, n, size=(resamples, n))``."""
    columns = [np.asarray(a) for a in arrays]
    n = len(columns[0])
    if any(len(c) != n for c in columns):
        raise ValueError("arrays to bootstrap must have the same length")
    value = statistic(*columns) if n else float("nan")
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n)) if n else []
    values = np.array([statistic(*(c[d] for c in columns)) for d in draws], dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return Estimate(value, float("nan"), float("nan"), n, 0)
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return Estimate(float(value), float(low), float(high), n, len(values))
