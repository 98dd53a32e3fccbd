"""Training data: the shard format, conversion into it, and the dataset and loader over it.

- :mod:`flashrna.data.shards`: the shard format (one directory per shard), window BEDs and
  splits, writing (:func:`open_shard`, :func:`write_shard`) and reading (:class:`ShardSet`).
- :mod:`flashrna.data.convert`: Borzoi TFRecords -> shards (``flashrna convert``), shards from a
  FASTA, a BED and bigWigs (``flashrna make-dataset``).
- :mod:`flashrna.data.loader`: the augmenting :class:`TrackDataset`, :class:`EpochSampler`,
  :func:`make_loader`, and the distillation dataset.
- :mod:`flashrna.data.benchmark`: ``flashrna bench data``.
"""

from flashrna.data.convert import convert_tfrecord, make_dataset
from flashrna.data.loader import DistillDataset, EpochSampler, TrackDataset, make_loader
from flashrna.data.shards import (
    ShardSet,
    find_shards,
    infer_species,
    open_shard,
    read_bed,
    split_labels,
    write_shard,
)

__all__ = [
    "DistillDataset",
    "EpochSampler",
    "ShardSet",
    "TrackDataset",
    "convert_tfrecord",
    "find_shards",
    "infer_species",
    "make_dataset",
    "make_loader",
    "open_shard",
    "read_bed",
    "split_labels",
    "write_shard",
]
