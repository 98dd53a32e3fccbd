"""Splits of the Borzoi windows by label: test = fold3, valid = fold4, train = the other folds
(labels ``test``/``valid``/``train`` work too). PyTorch-free: the workflow uses it while Snakemake
parses the DAG."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flashrna.utils import FlashRNAError

TEST_FOLDS = ("fold3",)
VALID_FOLDS = ("fold4",)
SPLITS = ("train", "valid", "test")


def split_labels(
    split: str,
    labels: Sequence[str] | np.ndarray,
    test_folds: Sequence[str] = TEST_FOLDS,
    valid_folds: Sequence[str] = VALID_FOLDS,
) -> set[str]:
    """The labels among ``labels`` that make up ``split`` (``train``, ``valid`` or ``test``):
    test = ``test_folds`` or a label ``test``, valid = ``valid_folds`` or ``valid``, train =
    every other label."""
    test, valid = {*test_folds, "test"}, {*valid_folds, "valid"}
    present = set(labels)
    if split == "test":
        return present & test
    if split == "valid":
        return present & valid
    if split == "train":
        return present - test - valid
    raise FlashRNAError(f"unknown split '{split}' (train, valid or test)")


def split_of(label: str) -> str:
    """The split (``train``, ``valid`` or ``test``) a window label belongs to."""
    return next(split for split in SPLITS if split_labels(split, [label]))
