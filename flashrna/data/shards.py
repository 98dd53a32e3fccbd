"""Shards: the on-disk training data format, its windows and splits, writing and reading.

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

Splits come from the labels: ``test`` = fold3 (or a label ``test``), ``valid`` = fold4 (or
``valid``), ``train`` = every other label (:func:`split_labels`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from flashrna.data.splits import TEST_FOLDS, VALID_FOLDS, split_labels
from flashrna.tracks import POOL_WIDTH, TrackTable
from flashrna.utils import FlashRNAError, atomic_directory, read_json, write_json

log = logging.getLogger(__name__)

SHARD_FORMAT = "flashrna-shard"
SHARD_VERSION = 1
SPECIES_OF_GENOME = {"hg38": "human", "hg19": "human", "mm10": "mouse", "mm39": "mouse"}


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
    appears, replacing any old shard, only when ``num_examples`` examples were added and the
    ``with`` block ends without error. A folder there that is not a shard (no meta.json) is
    refused, never replaced; a second writer of the same directory is refused while this one
    runs (:func:`flashrna.utils.atomic_directory`)."""
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
    with atomic_directory(directory, marker="meta.json") as tmp:
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
    shards (in natural name order: ``fold3-2`` before ``fold3-10``). Hidden subfolders are not
    shards: they are the temporary ``.name.*.partial`` directories of unfinished writes."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / "meta.json").is_file():
            found.append(path)
        elif path.is_dir():
            shards = (p.parent for p in path.glob("*/meta.json") if p.parent.name[0] != ".")
            found += sorted(shards, key=_natural_key)
        else:
            raise FlashRNAError(f"{path}: no such shard or folder of shards")
    if not found:
        raise FlashRNAError(
            f"no shards (folders with meta.json) under {', '.join(map(str, paths))}"
        )
    return found


def expected_arrays(meta: dict[str, Any]) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """``{file name: (dtype, shape)}`` of a shard's arrays, from its ``meta.json``."""
    n = meta["num_examples"]
    return {
        "sequences.npy": (np.dtype(np.uint8), (n, meta["seq_length"])),
        "targets.npy": (np.dtype(np.float16), (n, meta["num_tracks"], meta["target_length"])),
    }


def check_array(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    """Error unless ``path`` is a complete ``.npy`` of ``dtype`` and ``shape`` (its header and
    size are read, nothing is loaded or unpickled)."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            found_shape, fortran, found = read_header(handle)
            offset = handle.tell()
    except FileNotFoundError:
        raise FlashRNAError(f"{path}: missing (convert the shard again)") from None
    except (ValueError, OSError) as err:
        raise FlashRNAError(
            f"{path}: not a NumPy .npy file ({err}); convert the shard again"
        ) from None
    if found.hasobject:
        raise FlashRNAError(
            f"{path}: holds Python objects (dtype {found}), which are never unpickled; a shard "
            f"stores {dtype} {list(shape)}: convert the shard again"
        )
    if found != dtype or tuple(found_shape) != tuple(shape) or fortran:
        raise FlashRNAError(
            f"{path}: {found} {list(found_shape)}{' (Fortran order)' if fortran else ''}, but its "
            f"meta.json describes {dtype} {list(shape)}: convert the shard again"
        )
    size = path.stat().st_size
    if size != offset + dtype.itemsize * int(np.prod(shape)):
        raise FlashRNAError(
            f"{path}: {size} bytes, {offset + dtype.itemsize * int(np.prod(shape))} expected "
            "(truncated?): convert the shard again"
        )


@dataclass
class _Shard:
    path: Path
    meta: dict[str, Any]
    sequences: np.ndarray | None = None
    targets: np.ndarray | None = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``sequences.npy`` ``[N, L]`` and ``targets.npy`` ``[N, T, B]``, checked against
        ``meta.json`` and memory-mapped on first use."""
        if self.sequences is None or self.targets is None:
            arrays = []
            for name, (dtype, shape) in expected_arrays(self.meta).items():
                check_array(self.path / name, dtype, shape)
                arrays.append(np.load(self.path / name, mmap_mode="r", allow_pickle=False))
            self.sequences, self.targets = arrays
        return self.sequences, self.targets


META_TYPES = {
    "species": str,
    "genome": str,
    "seq_length": int,
    "pool_width": int,
    "target_length": int,
    "num_examples": int,
    "num_tracks": int,
    "chrom": list,
    "start": list,
    "end": list,
    "label": list,
}


def read_shard_meta(path: Path) -> dict[str, Any]:
    """A shard's ``meta.json``, its format, version and field types checked."""
    meta = read_json(path / "meta.json")
    if not isinstance(meta, dict) or meta.get("format") != SHARD_FORMAT:
        raise FlashRNAError(f"{path}/meta.json: not a {SHARD_FORMAT} (convert it again)")
    if meta.get("version") != SHARD_VERSION:
        raise FlashRNAError(
            f"{path}: not a version-{SHARD_VERSION} {SHARD_FORMAT} (convert it again)"
        )
    for key, kind in META_TYPES.items():
        value = meta.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise FlashRNAError(
                f"{path}/meta.json: '{key}' is {value!r}, expected {kind.__name__} "
                "(convert the shard again)"
            )
    n = meta["num_examples"]
    if any(len(meta[key]) != n for key in ("chrom", "start", "end", "label")):
        raise FlashRNAError(
            f"{path}/meta.json: chrom/start/end/label do not all have num_examples {n} entries"
        )
    return meta


def shard_is_current(
    path: str | os.PathLike, source: dict[str, Any], tracks: TrackTable, **fields: Any
) -> bool:
    """Whether ``path`` is a complete shard written from ``source`` with ``tracks`` and the
    given meta ``fields`` (species, genome, seq_length, ...): everything that determines its
    content. A damaged or different shard is not current (it is written again)."""
    path = Path(path)
    if not (path / "meta.json").is_file():
        return False
    try:
        meta = read_shard_meta(path)
        if meta.get("source") != source or any(meta.get(k) != v for k, v in fields.items()):
            return False
        if (path / "targets.txt").read_text() != tracks.to_text():
            return False
        for name, (dtype, shape) in expected_arrays(meta).items():
            check_array(path / name, dtype, shape)
    except (FlashRNAError, OSError) as err:
        log.warning("%s is incomplete or damaged (%s); writing it again", path, err)
        return False
    return True


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
            meta = read_shard_meta(path)
            try:
                text = (path / "targets.txt").read_bytes()
            except FileNotFoundError:
                raise FlashRNAError(f"{path}: targets.txt missing (convert it again)") from None
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

    def describe(self, index: int) -> str:
        """Where example ``index`` is stored: ``<shard> record <row> (chrom:start-end)``."""
        chrom, start, end = self.window(index)
        shard = self.shards[self.shard_of[index]]
        return f"{shard} record {self.row_of[index]} ({chrom}:{start}-{end})"

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


def infer_species(path: str | os.PathLike) -> str:
    """``human``/``mouse`` from a genome name (hg38, mm10, …) among the parts of ``path``."""
    for part in reversed(Path(path).resolve().parts):
        if part in SPECIES_OF_GENOME:
            return SPECIES_OF_GENOME[part]
    raise FlashRNAError(f"{path}: cannot tell the species from the path; give it explicitly")
