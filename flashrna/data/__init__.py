"""Training data: the shard format, conversion into it, and the dataset and loader over it.

- :mod:`flashrna.data.shards`: the shard format (one directory per shard), window BEDs,
  writing (:func:`open_shard`, :func:`write_shard`) and reading (:class:`ShardSet`).
- :mod:`flashrna.data.splits`: train/valid/test by window label (PyTorch-free).
- :mod:`flashrna.data.convert`: Borzoi TFRecords -> shards (``flashrna convert``), shards from a
  FASTA, a BED and bigWigs (``flashrna make-dataset``).
- :mod:`flashrna.data.loader`: the augmenting :class:`TrackDataset`, :class:`EpochSampler`,
  :func:`make_loader`, and the distillation dataset.
- :mod:`flashrna.data.benchmark`: ``flashrna bench data``.

The names below are importable from ``flashrna.data`` itself; each submodule is imported on
first use, so ``flashrna.data.splits`` stays PyTorch-free.
"""

import importlib

_HOMES = {
    "convert_tfrecord": "convert",
    "make_dataset": "convert",
    "DistillDataset": "loader",
    "EpochSampler": "loader",
    "TrackDataset": "loader",
    "make_loader": "loader",
    "ShardSet": "shards",
    "find_shards": "shards",
    "infer_species": "shards",
    "open_shard": "shards",
    "read_bed": "shards",
    "write_shard": "shards",
    "split_labels": "splits",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'flashrna.data' has no attribute '{name}'")
    return getattr(importlib.import_module(f"flashrna.data.{_HOMES[name]}"), name)
