"""Streaming Pearson against scipy on the concatenated data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from flashrna.metrics import StreamingPearson, per_group_mean


def correlated(rng, shape, tracks):
    truth = rng.gamma(0.5, 3.0, size=(*shape, tracks))
    noise = rng.normal(0, 1 + np.arange(tracks), size=(*shape, tracks))
    return truth + noise + 50.0, truth


@pytest.mark.parametrize("batch_sizes", [[40], [1] * 40, [7, 13, 1, 19], [3, 0, 37]])
def test_streaming_pearson_equals_scipy_for_any_batching(batch_sizes):
    rng = np.random.default_rng(0)
    prediction, target = correlated(rng, (40, 25), 4)
    accumulator = StreamingPearson(4)
    start = 0
    for size in batch_sizes:
        accumulator.update(
            torch.from_numpy(prediction[start : start + size]), target[start : start + size]
        )
        start += size
    expected = [
        scipy.stats.pearsonr(prediction[..., t].ravel(), target[..., t].ravel())[0]
        for t in range(4)
    ]
    np.testing.assert_allclose(accumulator.compute(), expected, rtol=1e-10)
    assert accumulator.count[0] == 40 * 25


def test_merge_of_two_accumulators_equals_one():
    rng = np.random.default_rng(1)
    prediction, target = correlated(rng, (30, 8), 3)
    whole, first, second = StreamingPearson(3), StreamingPearson(3), StreamingPearson(3)
    whole.update(prediction, target)
    first.update(prediction[:11], target[:11])
    second.update(prediction[11:], target[11:])
    first.merge(second)
    np.testing.assert_allclose(first.compute(), whole.compute(), rtol=1e-12)


def test_float16_inputs_with_large_offset_stay_accurate():
    rng = np.random.default_rng(2)
    prediction, target = correlated(rng, (200, 64), 2)
    accumulator = StreamingPearson(2)
    for i in range(0, 200, 9):
        accumulator.update(prediction[i : i + 9].astype(np.float16), target[i : i + 9])
    reference = [
        scipy.stats.pearsonr(prediction[..., t].astype(np.float16).ravel(), target[..., t].ravel())[
            0
        ]
        for t in range(2)
    ]
    np.testing.assert_allclose(accumulator.compute(), reference, rtol=1e-9)


def test_constant_track_gives_nan():
    accumulator = StreamingPearson(2)
    accumulator.update(np.ones((5, 2)), np.arange(10.0).reshape(5, 2))
    assert np.isnan(accumulator.compute()).all()


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="must match"):
        StreamingPearson(2).update(np.ones((5, 2)), np.ones((4, 2)))


def test_per_group_mean():
    values = np.array([0.1, 0.3, np.nan, 0.5])
    groups = np.array(["RNA", "RNA", "ATAC", "DNASE"])
    means = per_group_mean(values, groups)
    assert means["RNA"] == pytest.approx(0.2) and means["DNASE"] == 0.5
    assert np.isnan(means["ATAC"]) and list(means) == ["RNA", "ATAC", "DNASE"]
