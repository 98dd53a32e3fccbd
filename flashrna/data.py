"""Training data: Borzoi TFRecords → shards, shards from bigWigs, the dataset and its loader.

Shard format (one directory per shard, written atomically; ``N`` examples, input length ``L``,
``T`` tracks, ``B`` bins of ``pool_width`` bp)::

    <shard>/sequences.npy   uint8   [N, L]     base indices A0 C1 G2 T3 N4 of the input window
    <shard>/targets.npy     float16 [N, T, B]  squashed targets, track-major
    <shard>/targets.txt     the shard's track table (row k = track k; source_index = record channel)
    <shard>/meta.json       format, version, species, genome, seq_length, pool_width,
                            target_length, num_examples, num_tracks, per-example chrom/start/end
                            (the *target* window) and label, and the source (TFRecord file and size,
                            records_per_file, file index, track selection)

The arrays are opened with ``mmap``: an example is a random access, and a track subset reads only
its rows of ``targets.npy`` (each row is one track's ``B`` bins, contiguous). The input window is
the target window ± ``(L − B·pool_width) / 2`` bp (Borzoi: 196,608 bp ± 163,840 → 524,288 bp).
:func:`write_shard` / :func:`open_shard` write this format (``ensemble-predict`` stores
predictions exactly like targets with them); :class:`ShardSet` reads one or many shards.

Borzoi's ``fold3-7.tfr`` holds the rows ``7·16 … 7·16+15`` of the ``sequences.bed`` rows labelled
``fold3``, in file order; :func:`convert_tfrecord` converts one such file into one shard.
Splits come from the labels: ``test`` = fold3 (or a label ``test``), ``valid`` = fold4 (or
``valid``), ``train`` = every other label (:func:`split_labels`).

Batch contract of :class:`TrackDataset` and :func:`make_loader` (a dict of tensors)::

    sequence    uint8   (batch, L)             base indices, the model input (L: multiple of 128)
    targets     float16 (batch, bins, tracks)  squashed values as stored
    crop_start  int64   (batch,)               the model-output bin (of L/32) of targets[:, 0]
    index       int64   (batch,)               example index in the dataset

Augmentation, drawn per example from ``(seed, epoch, index)`` so it does not depend on the number
of workers: a shift ``s`` uniform in ``[−max_shift, max_shift]`` bp moves the input window by
``s`` (flanks from the genome FASTA, else N) and sets ``crop_start = crop0 − round(s/32)``; a
reverse complement (probability 0.5) reverses and complements the sequence, reverses the bins,
swaps each track with its strand pair and mirrors ``crop_start → L/32 − bins − crop_start``.
:func:`make_loader`'s :class:`EpochSampler` shuffles from ``(seed, epoch)``, shards for DDP and
resumes mid-epoch; its workers build each batch in place in shared memory.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import platform
import re
import resource
import signal
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from flashrna.genome import Genome, reverse_complement
from flashrna.tfrecord import read_examples, write_examples
from flashrna.tracks import DEFAULT_ASSAYS, POOL_WIDTH, TrackTable
from flashrna.utils import FlashRNAError, atomic_directory, read_json, write_json

log = logging.getLogger(__name__)

SHARD_FORMAT = "flashrna-shard"
SHARD_VERSION = 1
TEST_FOLDS = ("fold3",)
VALID_FOLDS = ("fold4",)
SPECIES_OF_GENOME = {"hg38": "human", "hg19": "human", "mm10": "mouse", "mm39": "mouse"}
_TFR_NAME = re.compile(r"^(?P<label>.+)-(?P<index>\d+)\.tfr$")


# ---------------------------------------------------------------------------------------------
# Windows and splits
# ---------------------------------------------------------------------------------------------


def read_bed(path: str | os.PathLike) -> pd.DataFrame:
    """A window BED (``chrom start end [label]``, optionally ``.gz``) as a DataFrame with columns
    chrom, start, end, label (label ``""`` when absent)."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, sep="\t", header=None, comment="#", dtype={0: str, 3: str})
    except FileNotFoundError:
        raise FlashRNAError(f"{path}: file not found") from None
    except pd.errors.EmptyDataError:
        raise FlashRNAError(f"{path}: the BED file is empty") from None
    if frame.shape[1] < 3:
        raise FlashRNAError(f"{path}: a BED needs at least 3 columns (chrom, start, end)")
    frame = frame.iloc[:, :4]
    frame.columns = ["chrom", "start", "end", "label"][: frame.shape[1]]
    if "label" not in frame:
        frame["label"] = ""
    for column in ("start", "end"):
        values = pd.to_numeric(frame[column], errors="coerce")
        if values.isna().any():
            row = int(np.flatnonzero(values.isna())[0])
            raise FlashRNAError(f"{path}: row {row + 1}: {column} is not an integer")
        frame[column] = values.astype(np.int64)
    if (frame["end"] <= frame["start"]).any():
        row = int(np.flatnonzero(frame["end"] <= frame["start"])[0])
        raise FlashRNAError(f"{path}: row {row + 1}: end is not after start")
    frame["label"] = frame["label"].fillna("").astype(str)
    return frame


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


# ---------------------------------------------------------------------------------------------
# Writing shards
# ---------------------------------------------------------------------------------------------


class ShardWriter:
    """Fills one shard's arrays example by example; made by :func:`open_shard`."""

    def __init__(self, tmp: Path, directory: Path, meta: dict[str, Any], tracks: TrackTable):
        self.directory = directory
        self.meta = meta
        self.tracks = tracks
        n, length, bins = meta["num_examples"], meta["seq_length"], meta["target_length"]
        self._tmp = tmp
        self._sequences = np.lib.format.open_memmap(
            tmp / "sequences.npy", "w+", np.uint8, (n, length)
        )
        self._targets = np.lib.format.open_memmap(
            tmp / "targets.npy", "w+", np.float16, (n, len(tracks), bins)
        )
        self.windows: list[tuple[str, int, int, str]] = []

    def add(
        self,
        sequence: np.ndarray,
        targets: np.ndarray | torch.Tensor,
        chrom: str,
        start: int,
        end: int,
        label: str = "",
        tracks_major: bool = False,
    ) -> None:
        """Append one example: ``sequence`` uint8 ``[L]``, ``targets`` ``[bins, tracks]``
        (``[tracks, bins]`` with ``tracks_major``), its target window ``chrom:start-end`` and
        its label."""
        k = len(self.windows)
        n, tracks, bins = self._targets.shape
        length = self._sequences.shape[1]
        if k >= n:
            raise FlashRNAError(f"{self.directory}: more than the declared {n} examples")
        expected = (tracks, bins) if tracks_major else (bins, tracks)
        if tuple(sequence.shape) != (length,) or tuple(targets.shape) != expected:
            raise FlashRNAError(
                f"{self.directory}: example {k}: sequence {tuple(sequence.shape)} and targets "
                f"{tuple(targets.shape)}, expected ({length},) and {expected}"
            )
        self._sequences[k] = sequence
        values = torch.as_tensor(targets, dtype=torch.float16)
        torch.from_numpy(self._targets[k]).copy_(values if tracks_major else values.T)
        self.windows.append((str(chrom), int(start), int(end), str(label)))

    def _finish(self) -> None:
        if len(self.windows) != len(self._sequences):
            raise FlashRNAError(
                f"{self.directory}: {len(self.windows)} examples written, "
                f"{len(self._sequences)} declared"
            )
        self._sequences.flush()
        self._targets.flush()
        del self._sequences, self._targets
        columns = list(zip(*self.windows, strict=True)) or [(), (), (), ()]
        for name, values in zip(("chrom", "start", "end", "label"), columns, strict=True):
            self.meta[name] = list(values)
        self.tracks.write(self._tmp / "targets.txt")
        write_json(self._tmp / "meta.json", self.meta)


@contextlib.contextmanager
def open_shard(
    directory: str | os.PathLike,
    *,
    num_examples: int,
    seq_length: int,
    target_length: int,
    tracks: TrackTable,
    species: str,
    genome: str = "",
    pool_width: int = POOL_WIDTH,
    source: dict[str, Any] | None = None,
) -> Iterator[ShardWriter]:
    """Write one shard directory example by example (``writer.add(...)``); the directory
    appears, replacing any old one, only when ``num_examples`` examples were added and the
    ``with`` block ends without error."""
    meta: dict[str, Any] = {
        "format": SHARD_FORMAT,
        "version": SHARD_VERSION,
        "species": species,
        "genome": genome,
        "seq_length": seq_length,
        "pool_width": pool_width,
        "target_length": target_length,
        "num_examples": num_examples,
        "num_tracks": len(tracks),
        "source": source or {},
    }
    with atomic_directory(directory) as tmp:
        writer = ShardWriter(tmp, Path(directory), meta, tracks)
        yield writer
        writer._finish()


def write_shard(
    directory: str | os.PathLike,
    sequences: np.ndarray,
    targets: np.ndarray | torch.Tensor,
    windows: pd.DataFrame,
    tracks: TrackTable,
    species: str,
    **metadata: Any,
) -> Path:
    """Write a whole shard at once: ``sequences`` uint8 ``[N, L]``, ``targets`` ``[N, bins,
    tracks]`` (bin-major, as batches and predictions are), ``windows`` with columns chrom,
    start, end, label (the target windows); ``metadata``: :func:`open_shard`'s keywords
    (genome, pool_width, source)."""
    n, length = sequences.shape
    with open_shard(
        directory,
        num_examples=n,
        seq_length=length,
        target_length=targets.shape[1],
        tracks=tracks,
        species=species,
        **metadata,
    ) as writer:
        for k, row in enumerate(windows.itertuples(index=False)):
            writer.add(sequences[k], targets[k], row.chrom, row.start, row.end, row.label)
    return Path(directory)


# ---------------------------------------------------------------------------------------------
# Reading shards
# ---------------------------------------------------------------------------------------------


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def find_shards(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Shard directories named by ``paths``: a shard itself, or a folder whose subfolders are
    shards (in natural name order: ``fold3-2`` before ``fold3-10``)."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / "meta.json").is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted((p.parent for p in path.glob("*/meta.json")), key=_natural_key)
        else:
            raise FlashRNAError(f"{path}: no such shard or folder of shards")
    if not found:
        raise FlashRNAError(
            f"no shards (folders with meta.json) under {', '.join(map(str, paths))}"
        )
    return found


@dataclass
class _Shard:
    path: Path
    meta: dict[str, Any]
    sequences: np.ndarray | None = None
    targets: np.ndarray | None = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``sequences.npy`` ``[N, L]`` and ``targets.npy`` ``[N, T, B]``, memory-mapped on first
        use."""
        if self.sequences is None or self.targets is None:
            self.sequences = np.load(self.path / "sequences.npy", mmap_mode="r")
            self.targets = np.load(self.path / "targets.npy", mmap_mode="r")
        return self.sequences, self.targets


class ShardSet:
    """The examples of one or more shards, in shard order, optionally only one split.

    ``tracks`` is the shards' common :class:`TrackTable`; ``chrom``, ``start``, ``end`` (target
    windows) and ``label`` are arrays over the examples.
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        split: str | None = None,
        test_folds: Sequence[str] = TEST_FOLDS,
        valid_folds: Sequence[str] = VALID_FOLDS,
    ) -> None:
        self._shards: list[_Shard] = []
        table_text = None
        for path in find_shards(paths):
            meta = read_json(path / "meta.json")
            if meta.get("format") != SHARD_FORMAT or meta.get("version") != SHARD_VERSION:
                raise FlashRNAError(
                    f"{path}: not a version-{SHARD_VERSION} {SHARD_FORMAT} (convert it again)"
                )
            text = (path / "targets.txt").read_bytes()
            if not self._shards:
                table_text, self.meta = text, meta
                self.tracks = TrackTable.read(path / "targets.txt")
            for key in ("species", "seq_length", "target_length", "pool_width"):
                if meta[key] != self.meta[key]:
                    raise FlashRNAError(
                        f"{path}: {key} {meta[key]} differs from {self._shards[0].path}'s "
                        f"{self.meta[key]}"
                    )
            if text != table_text:
                raise FlashRNAError(
                    f"{path}: its tracks (targets.txt) differ from {self._shards[0].path}'s"
                )
            self._shards.append(_Shard(path, meta))
        metas = [s.meta for s in self._shards]
        self.shard_of = np.concatenate(
            [np.full(m["num_examples"], k, np.int64) for k, m in enumerate(metas)]
        )
        self.row_of = np.concatenate([np.arange(m["num_examples"]) for m in metas])
        self.chrom = np.array([c for m in metas for c in m["chrom"]], dtype=object)
        self.start = np.array([c for m in metas for c in m["start"]], dtype=np.int64)
        self.end = np.array([c for m in metas for c in m["end"]], dtype=np.int64)
        self.label = np.array([c for m in metas for c in m["label"]], dtype=object)
        if split is not None:
            keep = np.isin(
                self.label, list(split_labels(split, self.label, test_folds, valid_folds))
            )
            for name in ("shard_of", "row_of", "chrom", "start", "end", "label"):
                setattr(self, name, getattr(self, name)[keep])

    def __len__(self) -> int:
        return len(self.row_of)

    def __repr__(self) -> str:
        return (
            f"ShardSet({len(self)} examples in {len(self._shards)} shards, {self.species}, "
            f"{self.seq_length} bp, {self.target_length} bins × {len(self.tracks)} tracks)"
        )

    @property
    def species(self) -> str:
        return self.meta["species"]

    @property
    def genome(self) -> str:
        return self.meta["genome"]

    @property
    def seq_length(self) -> int:
        return self.meta["seq_length"]

    @property
    def target_length(self) -> int:
        return self.meta["target_length"]

    @property
    def pool_width(self) -> int:
        return self.meta["pool_width"]

    @property
    def shards(self) -> list[Path]:
        return [s.path for s in self._shards]

    def _arrays(self, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"example {index} of {len(self)}")
        sequences, targets = self._shards[self.shard_of[index]].arrays()
        return sequences, targets, int(self.row_of[index])

    def window(self, index: int) -> tuple[str, int, int]:
        """The target window ``(chrom, start, end)`` of example ``index``."""
        return str(self.chrom[index]), int(self.start[index]), int(self.end[index])

    def input_start(self, index: int) -> int:
        """Genome coordinate of the stored sequence's first base."""
        target_bp = self.target_length * self.pool_width
        return int(self.start[index]) - (self.seq_length - target_bp) // 2

    def sequence(self, index: int) -> np.ndarray:
        """uint8 ``[L]`` base indices of the stored input window (a copy)."""
        sequences, _, row = self._arrays(index)
        return np.array(sequences[row])

    def target_rows(self, index: int, rows: np.ndarray | None = None) -> np.ndarray:
        """float16 ``[len(rows), bins]``: the given tracks (table positions; all when ``None``),
        track-major, reading only those rows."""
        _, targets, row = self._arrays(index)
        return np.array(targets[row]) if rows is None else targets[row][rows]

    def targets(self, index: int, tracks: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """float16 ``[bins, tracks]`` of example ``index`` (``tracks``: table positions)."""
        rows = None if tracks is None else np.asarray(tracks, dtype=np.int64)
        return np.ascontiguousarray(self.target_rows(index, rows).T)


# ---------------------------------------------------------------------------------------------
# Converting Borzoi TFRecords
# ---------------------------------------------------------------------------------------------


def infer_species(path: str | os.PathLike) -> str:
    """``human``/``mouse`` from a genome name (hg38, mm10, …) among the parts of ``path``."""
    for part in reversed(Path(path).resolve().parts):
        if part in SPECIES_OF_GENOME:
            return SPECIES_OF_GENOME[part]
    raise FlashRNAError(f"{path}: cannot tell the species from the path; give it explicitly")


def _readonly_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor view of a read-only array that is only ever read (no copy, no warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def _decode_sequence_bytes(
    data: bytes, seq_length: int | None, where: str
) -> tuple[np.ndarray, str]:
    """Record ``sequence`` bytes → (uint8 base indices ``[L]``, encoding name). One byte per bp
    holds a base index; 4 bytes per bp a legacy one-hot row (all-zero row = N)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    one_hot_shape = len(raw) % 4 == 0 and raw.max(initial=0) <= 1
    if seq_length is None:  # no statistics.json: tell the encodings apart by content
        seq_length = (
            len(raw) // 4 if one_hot_shape and raw.reshape(-1, 4).sum(1).max() <= 1 else len(raw)
        )
    if len(raw) == seq_length:
        if raw.max(initial=0) > 4:
            raise FlashRNAError(f"{where}: sequence bytes above 4 are not base indices")
        return raw, "index"
    if len(raw) == 4 * seq_length and one_hot_shape:
        rows = raw.reshape(seq_length, 4)
        return np.where(rows.any(1), rows.argmax(1), 4).astype(np.uint8), "one-hot"
    raise FlashRNAError(
        f"{where}: sequence has {len(raw)} bytes; expected {seq_length} (uint8 base indices) or "
        f"{4 * seq_length} (legacy uint8 one-hot) for seq_length {seq_length}"
    )


def _decode_target_bytes(data: bytes, bins: int, channels: int, where: str) -> np.ndarray:
    """Record ``target`` bytes → float16 ``[bins, channels]`` (legacy float32 is converted)."""
    if len(data) == 2 * bins * channels:
        return np.frombuffer(data, dtype="<f2").reshape(bins, channels)
    if len(data) == 4 * bins * channels:
        values = np.frombuffer(data, dtype="<f4").reshape(bins, channels)
        finfo = np.finfo(np.float16)
        return np.clip(values, finfo.min, finfo.max).astype(np.float16)
    raise FlashRNAError(
        f"{where}: target has {len(data)} bytes; expected float16 (or legacy float32) "
        f"[{bins}, {channels}] = {2 * bins * channels} (or {4 * bins * channels}) bytes"
    )


def convert_tfrecord(
    tfr_path: str | os.PathLike,
    sequences_bed: str | os.PathLike,
    targets_txt: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    records_per_file: int = 16,
    assays: Sequence[str] | None = DEFAULT_ASSAYS,
    identifiers: Sequence[str] | None = None,
    statistics: str | os.PathLike | None = None,
    species: str | None = None,
    genome: Genome | None = None,
    force: bool = False,
) -> Path:
    """Convert one Borzoi TFRecord file ``<label>-<i>.tfr`` into the shard directory
    ``out_dir``, keeping the tracks of ``assays`` (``None``: all) and ``identifiers``.

    The file's records are the rows ``i·records_per_file …`` of the ``sequences.bed`` rows
    labelled ``<label>``. ``statistics`` (Borzoi's ``statistics.json``) fixes seq_length,
    target_length, num_targets and pool_width; without it they are inferred from the bed, the
    track table and the records. With ``genome``, each record's sequence is checked against the
    FASTA. A finished shard of the same source and selection is left alone unless ``force``.
    """
    tfr, out = Path(tfr_path), Path(out_dir)
    name = _TFR_NAME.match(tfr.name)
    if name is None:
        raise FlashRNAError(f"{tfr}: expected a file named <label>-<index>.tfr (e.g. fold3-0.tfr)")
    label, file_index = name["label"], int(name["index"])
    if not tfr.is_file():
        raise FlashRNAError(f"{tfr}: file not found")
    bed = read_bed(sequences_bed)
    labelled = bed[bed["label"] == label]
    if labelled.empty:
        known = ", ".join(sorted(set(bed["label"])))
        raise FlashRNAError(f"{sequences_bed}: no rows labelled '{label}' (labels: {known})")
    windows = labelled.iloc[file_index * records_per_file : (file_index + 1) * records_per_file]
    table = TrackTable.read(targets_txt)
    selected = table.take(table.find(assays, identifiers))
    stats = read_json(statistics) if statistics is not None else {}
    pool_width = int(stats.get("pool_width", POOL_WIDTH))
    target_bp = labelled["end"] - labelled["start"]
    if target_bp.nunique() != 1:
        raise FlashRNAError(f"{sequences_bed}: the '{label}' windows differ in length")
    target_length = int(stats.get("target_length", int(target_bp.iloc[0]) // pool_width))
    if int(target_bp.iloc[0]) != target_length * pool_width:
        raise FlashRNAError(
            f"{sequences_bed}: windows of {int(target_bp.iloc[0])} bp do not match "
            f"target_length {target_length} × pool_width {pool_width}"
        )
    if "num_targets" in stats:
        channels = int(stats["num_targets"])
    elif table.is_identity_subset():
        channels = len(table)
    else:
        raise FlashRNAError(f"{targets_txt}: a subset table needs --statistics (num_targets)")
    if selected.source_index.max() >= channels:
        raise FlashRNAError(
            f"{targets_txt}: channel {selected.source_index.max()} is beyond the records' "
            f"{channels} targets"
        )
    source = {
        "file": str(tfr.resolve()),
        "size": tfr.stat().st_size,
        "label": label,
        "file_index": file_index,
        "records_per_file": records_per_file,
        "bed": str(Path(sequences_bed).resolve()),
        "assays": None if assays is None else list(assays),
        "identifiers": None if identifiers is None else list(identifiers),
    }
    if not force and (out / "meta.json").is_file():
        old = read_json(out / "meta.json")
        if old.get("version") == SHARD_VERSION and old.get("source") == source:
            log.info("%s is up to date (from %s)", out, tfr.name)
            return out

    examples = read_examples(tfr)
    first = next(examples, None)
    if first is None and len(windows):
        raise FlashRNAError(f"{tfr}: no records, but the bed has {len(windows)} rows for it")
    seq_length = stats.get("seq_length")
    if first is not None:
        if "sequence" not in first or "target" not in first:
            raise FlashRNAError(
                f"{tfr}: record 0: features {sorted(first)}; expected 'sequence' and 'target'"
            )
        seq_length = len(
            _decode_sequence_bytes(first["sequence"], seq_length, f"{tfr}: record 0")[0]
        )
    seq_length = int(seq_length or target_length * pool_width)
    flank = (seq_length - target_length * pool_width) // 2
    identity = np.array_equal(selected.source_index, np.arange(channels))
    encodings: set[str] = set()
    with open_shard(
        out,
        num_examples=len(windows),
        seq_length=seq_length,
        target_length=target_length,
        tracks=selected,
        species=species or infer_species(tfr),
        genome=Path(genome.path).name if genome is not None else "",
        pool_width=pool_width,
        source=source,
    ) as writer:
        records = itertools.chain([first], examples) if first is not None else iter(())
        progress = tqdm(records, total=len(windows), desc=tfr.name, unit="rec", disable=None)
        for k, example in enumerate(progress):
            where = f"{tfr}: record {k}"
            if k >= len(windows):
                raise FlashRNAError(
                    f"{tfr}: more records than the {len(windows)} bed rows for it "
                    f"(records_per_file {records_per_file}?)"
                )
            for key in ("sequence", "target"):
                if not isinstance(example.get(key), bytes):
                    raise FlashRNAError(f"{where}: missing bytes feature '{key}'")
            sequence, encoding = _decode_sequence_bytes(example["sequence"], seq_length, where)
            encodings.add(encoding)
            values = _decode_target_bytes(example["target"], target_length, channels, where)
            if not identity:
                values = np.take(values, selected.source_index, axis=1)
            window = windows.iloc[k]
            if genome is not None:
                _verify_sequence(genome, sequence, window.chrom, window.start - flank, where)
            writer.add(
                sequence, _readonly_tensor(values), window.chrom, window.start, window.end, label
            )
        if len(writer.windows) < len(windows):
            raise FlashRNAError(
                f"{tfr}: {len(writer.windows)} records, but the bed has {len(windows)} rows for it"
            )
        writer.meta["sequence_encoding"] = sorted(encodings)
    if "one-hot" in encodings:
        log.warning("%s: legacy one-hot sequences were decoded to base indices", tfr)
    return out


def _verify_sequence(genome: Genome, sequence: np.ndarray, chrom: str, start: int, where: str):
    """Error when more than 0.1% of the bases known in both differ from the FASTA."""
    expected = genome.fetch(chrom, start, start + len(sequence))
    known = (expected < 4) & (sequence < 4)
    mismatch = float((expected[known] != sequence[known]).mean()) if known.any() else 0.0
    if mismatch > 1e-3:
        raise FlashRNAError(
            f"{where}: sequence differs from {genome.path.name} at {mismatch:.1%} of bases of "
            f"{chrom}:{start}-{start + len(sequence)} (wrong genome, bed or file order?)"
        )


# ---------------------------------------------------------------------------------------------
# Shards from bigWig files
# ---------------------------------------------------------------------------------------------


def _bigwig_coverage(bigwig, path: Path, chrom: str, start: int, end: int) -> np.ndarray:
    """float32 per-bp values of ``chrom:[start, end)``; missing data and off-contig bases are 0."""
    out = np.zeros(end - start, dtype=np.float32)
    size = bigwig.chroms().get(chrom)
    if size is None:
        log.warning("%s has no contig %s; its coverage there is 0", path, chrom)
        return out
    lo, hi = max(start, 0), min(end, size)
    if lo < hi:
        out[lo - start : hi - start] = np.nan_to_num(
            bigwig.values(chrom, lo, hi, numpy=True), nan=0.0
        )
    return out


def make_dataset(
    genome: str | os.PathLike,
    windows_bed: str | os.PathLike,
    targets_txt: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    seq_length: int,
    pool_width: int = POOL_WIDTH,
    examples_per_shard: int = 16,
    species: str = "human",
    default_label: str = "train",
) -> list[Path]:
    """Build shards ``out_dir/<label>-<i>`` from a genome FASTA, a BED of target windows
    (``chrom start end [label]``, all the same length) and the bigWig files named in the
    ``file`` column of ``targets_txt`` (relative paths are relative to the table), with each
    track's pool/clip/scale transform. The input window is the target window ± (seq_length −
    window) / 2. Finished shards of the same inputs are left alone."""
    import pyBigWig

    fasta = Genome(genome)
    bed = read_bed(windows_bed)
    bed["label"] = bed["label"].replace("", default_label)
    table = TrackTable.read(targets_txt)
    target_bp = int((bed["end"] - bed["start"]).iloc[0])
    if ((bed["end"] - bed["start"]) != target_bp).any() or target_bp % pool_width:
        raise FlashRNAError(
            f"{windows_bed}: windows must all have one length, a multiple of {pool_width} bp"
        )
    if seq_length < target_bp or (seq_length - target_bp) % (2 * pool_width):
        raise FlashRNAError(
            f"seq_length {seq_length} must be the window ({target_bp} bp) plus equal flanks of "
            f"a multiple of {pool_width} bp"
        )
    flank = (seq_length - target_bp) // 2
    files = [
        Path(f) if Path(f).is_absolute() else Path(targets_txt).parent / f
        for f in table.frame["file"]
    ]
    for identifier, path in zip(table.identifier, files, strict=True):
        if not path.is_file():
            raise FlashRNAError(f"{targets_txt}: track {identifier}: bigWig {path} not found")
    written = []
    bigwigs = [pyBigWig.open(str(path)) for path in files]
    try:
        for label, rows in bed.groupby("label", sort=False):
            for shard_index, first in enumerate(range(0, len(rows), examples_per_shard)):
                chunk = rows.iloc[first : first + examples_per_shard]
                out = Path(out_dir) / f"{label}-{shard_index}"
                source = {
                    "genome": str(fasta.path.resolve()),
                    "bed": str(Path(windows_bed).resolve()),
                    "targets": str(Path(targets_txt).resolve()),
                    "bed_rows": chunk.index.tolist(),
                    "bigwig_sizes": [p.stat().st_size for p in files],
                }
                written.append(out)
                if (out / "meta.json").is_file() and read_json(out / "meta.json").get(
                    "source"
                ) == source:
                    log.info("%s is up to date", out)
                    continue
                with open_shard(
                    out,
                    num_examples=len(chunk),
                    seq_length=seq_length,
                    target_length=target_bp // pool_width,
                    tracks=table,
                    species=species,
                    genome=fasta.path.name,
                    pool_width=pool_width,
                    source=source,
                ) as writer:
                    for row in tqdm(
                        chunk.itertuples(), total=len(chunk), desc=out.name, disable=None
                    ):
                        coverage = np.stack(
                            [
                                _bigwig_coverage(bw, path, row.chrom, row.start, row.end)
                                for bw, path in zip(bigwigs, files, strict=True)
                            ],
                            axis=-1,
                        )
                        targets = table.squash(table.pool(coverage, pool_width))
                        sequence = fasta.fetch(row.chrom, row.start - flank, row.end + flank)
                        writer.add(sequence, targets, row.chrom, row.start, row.end, label)
    finally:
        for bw in bigwigs:
            bw.close()
    return written


# ---------------------------------------------------------------------------------------------
# Dataset, sampler, loader
# ---------------------------------------------------------------------------------------------


class TrackDataset(Dataset):
    """Examples of a :class:`ShardSet` as batch-contract dicts (module docstring), with shift
    and reverse-complement augmentation.

    ``dataset[i]`` uses the epoch set by :meth:`set_epoch`; ``dataset[(epoch, i)]`` (what
    :class:`EpochSampler` yields) names it, so worker copies need no updates. ``seq_length`` (the
    model input, default: as stored) may differ from the stored length; missing flank bases come
    from ``genome`` when given, else N. ``assays``/``identifiers`` pick a subset of the stored
    tracks (default: all); ``tracks`` is its table (strand pairs re-indexed). Attributes:
    ``tracks``, ``species``, ``seq_length``, ``target_length``, ``pool_width``, ``crop0``.
    """

    def __init__(
        self,
        shards: ShardSet | str | os.PathLike | Sequence[str | os.PathLike],
        *,
        split: str | None = None,
        assays: Sequence[str] | None = None,
        identifiers: Sequence[str] | None = None,
        genome: Genome | str | os.PathLike | None = None,
        seq_length: int | None = None,
        max_shift: int = 0,
        reverse_complement: bool = False,
        seed: int = 0,
    ) -> None:
        if isinstance(shards, ShardSet) and split is not None:
            raise FlashRNAError("give split= to the ShardSet, or paths instead of a ShardSet")
        self.shards = shards if isinstance(shards, ShardSet) else ShardSet(shards, split=split)
        self._rows = self.shards.tracks.find(assays, identifiers)  # None, None: every track
        self.tracks = self.shards.tracks.take(self._rows)
        self._rows_rc = self._rows[self.tracks.strand_pair]
        self.genome = Genome(genome) if isinstance(genome, str | os.PathLike) else genome
        self.species = self.shards.species
        self.pool_width = self.shards.pool_width
        self.target_length = self.shards.target_length
        self.seq_length = int(seq_length or self.shards.seq_length)
        target_bp = self.target_length * self.pool_width
        extra = self.seq_length - target_bp
        if extra < 0 or extra % (2 * self.pool_width):
            raise FlashRNAError(
                f"seq_length {self.seq_length} must exceed the {target_bp}-bp target window by "
                f"equal flanks of a multiple of {self.pool_width} bp"
            )
        self.crop0 = extra // (2 * self.pool_width)
        if round(max_shift / self.pool_width) > self.crop0:
            raise FlashRNAError(
                f"max_shift {max_shift} bp moves the targets outside the model output "
                f"(at most {self.crop0 * self.pool_width} bp for seq_length {self.seq_length})"
            )
        self.max_shift = int(max_shift)
        self.reverse_complement = reverse_complement
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.shards)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def augmentation(self, index: int, epoch: int) -> tuple[int, bool]:
        """The ``(shift, reverse_complement)`` of example ``index`` in ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch, index])
        shift = int(rng.integers(-self.max_shift, self.max_shift + 1)) if self.max_shift else 0
        return shift, bool(self.reverse_complement and rng.random() < 0.5)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        return self.example(index, *self.augmentation(index, epoch))

    def input_sequence(self, index: int, shift: int = 0) -> np.ndarray:
        """uint8 ``[seq_length]``: the input window of example ``index`` moved by ``shift`` bp."""
        stored_start = self.shards.input_start(index)
        start = stored_start + (self.shards.seq_length - self.seq_length) // 2 + shift
        lo = max(start, stored_start)
        hi = min(start + self.seq_length, stored_start + self.shards.seq_length)
        if lo == start and hi == start + self.seq_length:
            return self.shards.sequence(index)[start - stored_start : hi - stored_start]
        chrom = str(self.shards.chrom[index])
        if self.genome is not None:
            out = self.genome.fetch(chrom, start, start + self.seq_length)
        else:
            out = np.full(self.seq_length, 4, dtype=np.uint8)
        if lo < hi:
            out[lo - start : hi - start] = self.shards.sequence(index)[
                lo - stored_start : hi - stored_start
            ]
        return out

    def example(self, index: int, shift: int = 0, rc: bool = False) -> dict[str, torch.Tensor]:
        """Example ``index`` with a given augmentation (batch contract, without the batch axis)."""
        batch = self.batch([(index, shift, rc)])
        return {key: value[0] for key, value in batch.items()}

    def batch(
        self, items: Sequence[tuple[int, int, bool]], shared: bool = False
    ) -> dict[str, torch.Tensor]:
        """The batch of ``(index, shift, rc)`` items, written straight into its output tensors
        (in shared memory when ``shared``, so a loader worker hands them over without a copy)."""
        n, bins, length = len(items), self.target_length, self.seq_length
        sequences = _empty((n, length), torch.uint8, shared)
        targets = _empty((n, bins, len(self.tracks)), torch.float16, shared)
        crops = torch.empty(n, dtype=torch.int64)
        for b, (index, shift, rc) in enumerate(items):
            sequence = self.input_sequence(index, shift)
            crop = self.crop0 - round(shift / self.pool_width)
            block = self.shards.target_rows(index, self._rows_rc if rc else self._rows)
            targets[b].copy_(torch.from_numpy(block).T)  # [tracks, bins] -> [bins, tracks]
            if rc:
                sequence = reverse_complement(sequence)
                targets[b] = targets[b].flip(0)
                crop = length // self.pool_width - bins - crop
            sequences[b] = torch.from_numpy(sequence)
            crops[b] = crop
        index = torch.tensor([item[0] for item in items], dtype=torch.int64)
        return {"sequence": sequences, "targets": targets, "crop_start": crops, "index": index}


def _empty(shape: tuple[int, ...], dtype: torch.dtype, shared: bool) -> torch.Tensor:
    if not shared:
        return torch.empty(shape, dtype=dtype)
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(int(np.prod(shape)))
    return torch.empty(0, dtype=dtype).new(storage).view(shape)


class _Batches(Dataset):
    """``TrackDataset`` seen one batch at a time: item = a list of ``(epoch, index)`` keys."""

    def __init__(self, dataset: TrackDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, keys: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        items = [(index, *self.dataset.augmentation(index, epoch)) for epoch, index in keys]
        in_worker = torch.utils.data.get_worker_info() is not None
        return self.dataset.batch(items, shared=in_worker)


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` keys, or lists of ``batch_size`` keys: a permutation of
    ``range(size)`` drawn from ``(seed, epoch)`` (the identity without ``shuffle``), this rank's
    share ``order[rank::world_size]``, from position ``start`` on (to resume mid-epoch:
    ``start`` = examples this rank already used in the epoch).

    With ``even_shards`` (for training under DDP) the epoch's last ``size % world_size``
    examples of the permutation are left out, so every rank has the same length; shards are
    always disjoint, and without ``even_shards`` they cover the whole epoch.
    """

    def __init__(
        self,
        size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
        even_shards: bool = True,
        batch_size: int | None = None,
        drop_last: bool = False,
    ) -> None:
        if not 0 <= rank < world_size:
            raise FlashRNAError(f"rank {rank} is not in 0..{world_size - 1}")
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size, self.even_shards = rank, world_size, even_shards
        self.batch_size, self.drop_last = batch_size, drop_last
        self.set_epoch(epoch, start)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def indices(self) -> np.ndarray:
        """This rank's example indices for the current epoch, from ``start`` on."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        else:
            order = np.arange(self.size)
        if self.even_shards:
            order = order[: self.size - self.size % self.world_size]
        return order[self.rank :: self.world_size][self.start :]

    def __iter__(self) -> Iterator[tuple[int, int] | list[tuple[int, int]]]:
        keys = [(self.epoch, int(i)) for i in self.indices()]
        if self.batch_size is None:
            return iter(keys)
        stop = len(self) * self.batch_size
        return (keys[k : k + self.batch_size] for k in range(0, stop, self.batch_size))

    def __len__(self) -> int:
        count = len(self.indices())
        if self.batch_size is None:
            return count
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)
    # A scheduler's SIGTERM/SIGINT goes to the whole process group: workers must outlive it
    # so the trainer can finish its step and write the preemption checkpoint.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(
    dataset: TrackDataset,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    start: int = 0,
    rank: int = 0,
    world_size: int = 1,
    even_shards: bool = True,
    num_workers: int = 0,
    pin_memory: bool = False,
    drop_last: bool = False,
    prefetch_factor: int = 2,
) -> DataLoader:
    """A DataLoader of batch-contract dicts over ``dataset``, driven by an
    :class:`EpochSampler` (``loader.sampler``; call ``loader.sampler.set_epoch(e)`` before each
    epoch, ``set_epoch(e, start)`` to resume). ``start`` counts this rank's examples already
    used in ``epoch`` (batches done × batch_size). The sampler yields whole batches, so
    ``loader.batch_size`` is None. Batches do not depend on ``num_workers``."""
    sampler = EpochSampler(
        len(dataset),
        shuffle=shuffle,
        seed=seed,
        epoch=epoch,
        start=start,
        rank=rank,
        world_size=world_size,
        even_shards=even_shards,
        batch_size=batch_size,
        drop_last=drop_last,
    )
    return DataLoader(
        _Batches(dataset),
        batch_size=None,  # the sampler yields whole batches, built in place by the dataset
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init,
        prefetch_factor=prefetch_factor if num_workers else None,
        persistent_workers=False,
    )


# ---------------------------------------------------------------------------------------------
# Command line: convert, make-dataset, bench data
# ---------------------------------------------------------------------------------------------


def _assays_argument(values: list[str]) -> list[str] | None:
    return None if [v.lower() for v in values] == ["all"] else values


def register_convert(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Convert one Borzoi TFRecord file (<label>-<i>.tfr, e.g. fold3-0.tfr) into one shard "
        "directory: uint8 sequences, float16 track-major targets of the selected tracks, the "
        "track table and metadata (windows from the bed rows labelled <label>, rows "
        "i*records-per-file onwards). Re-running on a finished shard does nothing."
    )
    parser.add_argument("tfrecord", type=Path, help="the TFRecord file")
    parser.add_argument("--bed", type=Path, required=True, help="sequences.bed of the data set")
    parser.add_argument("--targets", type=Path, required=True, help="targets.txt of the data set")
    parser.add_argument("--out", type=Path, required=True, help="shard directory to write")
    parser.add_argument(
        "--statistics",
        type=Path,
        default=None,
        help="statistics.json; when not given, the one beside --bed is used if present",
    )
    parser.add_argument(
        "--records-per-file", type=int, default=16, help="records per TFRecord (Borzoi: 16)"
    )
    parser.add_argument(
        "--assays",
        nargs="+",
        default=list(DEFAULT_ASSAYS),
        help="assays to keep (description text before ':'), or 'all'",
    )
    parser.add_argument(
        "--identifiers-from",
        type=Path,
        default=None,
        help="a track table (e.g. targets_gtex.txt): keep only its identifiers",
    )
    parser.add_argument(
        "--species", default=None, help="human/mouse (None: from hg38/mm10 in the path)"
    )
    parser.add_argument(
        "--verify-genome", type=Path, default=None, help="FASTA to check each sequence against"
    )
    parser.add_argument("--force", action="store_true", help="convert even if up to date")
    parser.set_defaults(run=_run_convert)


def _run_convert(args: argparse.Namespace) -> None:
    statistics = args.statistics
    if statistics is None and (args.bed.parent / "statistics.json").is_file():
        statistics = args.bed.parent / "statistics.json"
    identifiers = None
    if args.identifiers_from is not None:
        identifiers = list(TrackTable.read(args.identifiers_from).identifier)
    convert_tfrecord(
        args.tfrecord,
        args.bed,
        args.targets,
        args.out,
        records_per_file=args.records_per_file,
        assays=_assays_argument(args.assays),
        identifiers=identifiers,
        statistics=statistics,
        species=args.species,
        genome=Genome(args.verify_genome) if args.verify_genome else None,
        force=args.force,
    )


def register_make_dataset(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Build training shards from a genome FASTA, a BED of target windows (chrom start end "
        "[label]; labels become splits: fold3/test, fold4/valid, the rest train) and the bigWig "
        "files named in the 'file' column of a targets.txt, pooled, clipped and scaled per "
        "track like the Borzoi data. Shards are written as <out>/<label>-<i>."
    )
    parser.add_argument("--genome", type=Path, required=True, help="FASTA (plain or bgzip)")
    parser.add_argument("--bed", type=Path, required=True, help="target windows, one length")
    parser.add_argument("--targets", type=Path, required=True, help="targets.txt with bigWigs")
    parser.add_argument("--out", type=Path, required=True, help="folder of shards to write")
    parser.add_argument("--seq-length", type=int, default=524_288, help="model input bp")
    parser.add_argument("--pool-width", type=int, default=POOL_WIDTH, help="bp per target bin")
    parser.add_argument("--examples-per-shard", type=int, default=16, help="windows per shard")
    parser.add_argument("--species", default="human", help="species (model head) of the data")
    parser.add_argument("--default-label", default="train", help="label of unlabelled rows")
    parser.set_defaults(run=_run_make_dataset)


def _run_make_dataset(args: argparse.Namespace) -> None:
    make_dataset(
        args.genome,
        args.bed,
        args.targets,
        args.out,
        seq_length=args.seq_length,
        pool_width=args.pool_width,
        examples_per_shard=args.examples_per_shard,
        species=args.species,
        default_label=args.default_label,
    )


def register_bench(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write a synthetic full-size Borzoi TFRecord (random genome and targets) in a temporary "
        "folder, time its conversion (MB/s) and the loader with shift and reverse-complement "
        "augmentation (examples/s), per wall-clock second and per CPU second (robust to other "
        "load on the machine)."
    )
    parser.add_argument("--records", type=int, default=4, help="records in the TFRecord")
    parser.add_argument("--items", type=int, default=32, help="examples to load (timed)")
    parser.add_argument("--workers", type=int, default=1, help="loader worker processes")
    parser.add_argument("--batch-size", type=int, default=1, help="loader batch size")
    parser.add_argument("--seq-length", type=int, default=524_288, help="input bp")
    parser.add_argument("--target-length", type=int, default=6_144, help="target bins")
    parser.add_argument("--num-tracks", type=int, default=7_611, help="tracks in the record")
    parser.add_argument("--max-shift", type=int, default=1_024, help="shift augmentation, bp")
    parser.add_argument("--workdir", type=Path, default=None, help="temporary folder location")
    parser.add_argument("--output", type=Path, default=None, help="JSON file of the results")
    parser.set_defaults(run=_run_bench)


def synthetic_track_table(num_tracks: int) -> TrackTable:
    """A table shaped like Borzoi's human one (RNA, DNASE, ATAC, CAGE, CHIP in its
    proportions; RNA tracks in +/- pairs)."""
    shares = {"RNA": 1543, "DNASE": 674, "ATAC": 232, "CAGE": 1276, "CHIP": 3886}
    counts = {a: max(1, round(num_tracks * n / 7611)) for a, n in shares.items()}
    counts["CHIP"] += num_tracks - sum(counts.values())
    rows = []
    for assay, count in counts.items():
        for k in range(count):
            index = len(rows)
            stranded = assay == "RNA" and k < count - count % 2
            pair = index + (1 if k % 2 == 0 else -1) if stranded else index
            stat = ("sum_sqrt", 768, 384, 0.3) if assay == "RNA" else ("sum", 256, 64, 1.0)
            rows.append(
                {
                    "identifier": f"{assay}{k}",
                    "file": f"{assay}{k}.bw",
                    "clip": stat[1],
                    "clip_soft": stat[2],
                    "scale": stat[3],
                    "sum_stat": stat[0],
                    "strand_pair": pair,
                    "description": f"{assay}:synthetic",
                    "source_index": index,
                }
            )
    return TrackTable(pd.DataFrame(rows), source="synthetic table")


def _run_bench(args: argparse.Namespace) -> None:
    results = bench_data(
        records=args.records,
        items=args.items,
        workers=args.workers,
        batch_size=args.batch_size,
        seq_length=args.seq_length,
        target_length=args.target_length,
        num_tracks=args.num_tracks,
        max_shift=args.max_shift,
        workdir=args.workdir,
    )
    print(json.dumps(results, indent=2))
    if args.output is not None:
        write_json(args.output, results)


def bench_data(
    *,
    records: int = 4,
    items: int = 32,
    workers: int = 1,
    batch_size: int = 1,
    seq_length: int = 524_288,
    target_length: int = 6_144,
    num_tracks: int = 7_611,
    max_shift: int = 1_024,
    workdir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Conversion and loader throughput on synthetic data of the given size (see
    :func:`register_bench`); returns the measurements."""
    rng = np.random.default_rng(0)
    table = synthetic_track_table(num_tracks)
    target_bp = target_length * POOL_WIDTH
    flank = (seq_length - target_bp) // 2
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        contig = seq_length * (records + 2)
        bases = np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, contig)].tobytes()
        with open(root / "genome.fa", "wb") as handle:
            handle.write(b">chr1\n")
            for offset in range(0, contig, 60):
                handle.write(bases[offset : offset + 60] + b"\n")
        genome = Genome(root / "genome.fa")
        starts = [seq_length * (k + 1) + flank for k in range(records)]
        with open(root / "sequences.bed", "w") as handle:
            for start in starts:
                handle.write(f"chr1\t{start}\t{start + target_bp}\tfold0\n")
        table.write(root / "targets.txt")

        def example(start: int) -> dict[str, bytes]:
            # Sparse, 2-decimal values compress like real coverage tracks.
            values = rng.gamma(0.3, 2.0, size=(target_length, num_tracks)).astype(np.float32)
            targets = np.round(values * (rng.random(values.shape) < 0.5), 2).astype(np.float16)
            sequence = genome.fetch("chr1", start - flank, start - flank + seq_length)
            return {"sequence": sequence.tobytes(), "target": targets.tobytes()}

        tfr = root / "hg38" / "fold0-0.tfr"
        tfr.parent.mkdir()
        write_examples(tfr, (example(s) for s in starts), level=1)
        record_bytes = records * (seq_length + 2 * target_length * num_tracks)
        file_bytes = tfr.stat().st_size

        began = _clock()
        shard = convert_tfrecord(
            tfr,
            root / "sequences.bed",
            root / "targets.txt",
            root / "shards" / "fold0-0",
            records_per_file=records,
        )
        convert_wall, convert_cpu, _ = _clock(began)

        dataset = TrackDataset(
            shard, genome=genome, max_shift=max_shift, reverse_complement=True, seed=0
        )
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        began = _clock()
        for k in range(items):
            dataset[(k // len(dataset), k % len(dataset))]
        single_wall, single_cpu, _ = _clock(began)
        torch.set_num_threads(threads)

        loader = make_loader(dataset, batch_size, num_workers=workers, seed=0)
        children = _clock()[2]
        loaded, epoch, began = 0, 0, None
        while loaded < items + batch_size:
            loader.sampler.set_epoch(epoch)
            for batch in loader:
                if began is None:  # the first batch pays for worker start-up
                    began = _clock()
                else:
                    loaded += len(batch["index"])
            epoch += 1
        loader_wall, loader_cpu, _ = _clock(began)
        # Workers' CPU time is known once they exit: all of it, start-up included.
        loader_cpu += _clock()[2] - children
    return {
        "device": f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores",
        "shape": {
            "seq_length": seq_length,
            "target_length": target_length,
            "record_tracks": num_tracks,
            "loaded_tracks": len(dataset.tracks),
        },
        "conversion": {
            "records": records,
            "file_mb": file_bytes / 1e6,
            "record_mb": record_bytes / 1e6,
            "seconds": convert_wall,
            "cpu_seconds": convert_cpu,
            "record_mb_per_s": record_bytes / 1e6 / convert_wall,
            "record_mb_per_cpu_s": record_bytes / 1e6 / convert_cpu,
        },
        "loader": {
            "workers": workers,
            "batch_size": batch_size,
            "max_shift": max_shift,
            "reverse_complement": True,
            "examples": loaded,
            "seconds": loader_wall,
            "cpu_seconds": loader_cpu,
            "examples_per_s": loaded / loader_wall,
            "examples_per_cpu_s": loaded / loader_cpu,
        },
        "dataset_single_thread": {
            "examples": items,
            "seconds": single_wall,
            "cpu_seconds": single_cpu,
            "examples_per_s": items / single_wall,
            "examples_per_cpu_s": items / single_cpu,
        },
    }


def _clock(since: tuple[float, float, float] | None = None) -> tuple[float, float, float]:
    """(wall, this process's CPU, finished children's CPU) seconds, or their change ``since``."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    now = (time.perf_counter(), time.process_time(), children.ru_utime + children.ru_stime)
    return now if since is None else tuple(a - b for a, b in zip(now, since, strict=True))
