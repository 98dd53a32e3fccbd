"""Shards from elsewhere: Borzoi TFRecords (``flashrna convert``) and bigWig files
(``flashrna make-dataset``).

Borzoi's ``fold3-7.tfr`` holds the rows ``7·16 … 7·16+15`` of the ``sequences.bed`` rows labelled
``fold3``, in file order; :func:`convert_tfrecord` converts one such file into one shard.

:func:`make_dataset` builds shards from a FASTA, a BED of target windows and one bigWig per track
(pooled and squashed as the track table says).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from flashrna.data.shards import (
    find_shards,
    infer_species,
    open_shard,
    read_bed,
    read_shard_meta,
    shard_is_current,
)
from flashrna.genome import Genome
from flashrna.tfrecord import read_examples
from flashrna.tracks import DEFAULT_ASSAYS, POOL_WIDTH, TrackTable
from flashrna.utils import FlashRNAError, read_json

log = logging.getLogger(__name__)

_TFR_NAME = re.compile(r"^(?P<label>.+)-(?P<index>\d+)\.tfr$")
_PLAIN_LABEL = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]*")


# ---------------------------------------------------------------------------------------------
# Converting Borzoi TFRecords
# ---------------------------------------------------------------------------------------------


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


TARGET_DTYPES = ("auto", "float16", "float32")


def _decode_target_bytes(
    data: bytes, bins: int, channels: int, dtype: str, where: str
) -> np.ndarray:
    """Record ``target`` bytes of ``dtype`` (``float16``, or ``float32`` in legacy files) →
    float16 ``[bins, channels]``."""
    itemsize = {"float16": 2, "float32": 4}[dtype]
    if len(data) != itemsize * bins * channels:
        other = "float32" if dtype == "float16" else "float16"
        hint = ""
        if len(data) == {"float16": 4, "float32": 2}[dtype] * bins * channels:
            hint = (
                f". That is the size of {other} [{bins}, {channels}] — or of {dtype} with a "
                "different number of bins or tracks: check num_targets and target_length "
                f"(statistics.json) and the track table; if the file does store {other} "
                f"targets, say so with --target-dtype {other}"
            )
        raise FlashRNAError(
            f"{where}: target has {len(data)} bytes; {dtype} [{bins} bins, {channels} targets] "
            f"is {itemsize * bins * channels} bytes{hint}"
        )
    values = np.frombuffer(data, dtype="<f2" if dtype == "float16" else "<f4")
    values = values.reshape(bins, channels)
    if dtype == "float32":
        limit = float(np.finfo(np.float16).max)
        beyond = np.abs(values) > limit
        if beyond.any():
            b, t = np.argwhere(beyond)[0]
            raise FlashRNAError(
                f"{where}: float32 target {values[b, t]} (bin {b}, channel {t}) is beyond "
                f"float16's range (±{limit:g}); stored targets are squashed values far below "
                "it, so these bytes are not float32 targets (check --target-dtype)"
            )
        values = values.astype(np.float16)
    return values


def _check_finite(values: np.ndarray, tracks: TrackTable, where: str) -> None:
    """Error naming the first bin and track when ``values`` [bins, tracks] holds NaN or inf."""
    bad = ~np.isfinite(values)
    if bad.any():
        b, t = np.argwhere(bad)[0]
        raise FlashRNAError(
            f"{where}: {int(bad.sum())} target value(s) are NaN or infinite, the first "
            f"{values[b, t]} at bin {b} of track {tracks.identifier[t]} (channel "
            f"{tracks.source_index[t]}); training on them would stop with a NaN loss. The file "
            "is damaged or was written wrongly: download or regenerate it"
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
    target_dtype: str = "auto",
    force: bool = False,
    extra_outputs: Mapping[str | os.PathLike, Sequence[str] | None] | None = None,
) -> Path:
    """Convert one Borzoi TFRecord file ``<label>-<i>.tfr`` into the shard directory
    ``out_dir``, keeping the tracks of ``assays`` (``None``: all) and ``identifiers``.

    ``extra_outputs`` maps further shard directories to their own assays (e.g. the ChIP-seq
    tracks for fine-tuning, ``{"chip_shards/fold3-0": ["CHIP"]}``): they are written from the
    same read, so the file is decompressed once for all of them.

    The file's records are the rows ``i·records_per_file …`` of the ``sequences.bed`` rows
    labelled ``<label>``. ``statistics`` (Borzoi's ``statistics.json``) fixes seq_length,
    target_length, num_targets and pool_width; without it they are inferred from the bed, the
    track table and the records. With ``genome``, each record's sequence is checked against the
    FASTA.

    Records carry no dtype, so ``target_dtype`` ``auto`` decides it from the file's layout:
    float16 (Borzoi) in files of base-index sequences; float16 or legacy float32 (by size) in
    Basenji-era files of one-hot sequences. A target twice the expected size in a Borzoi-layout
    file is refused, not read as float32: it may as well be float16 with twice the tracks or
    bins. ``float16``/``float32`` state the dtype. NaN or infinite targets are refused, naming
    the record.

    A finished shard is left alone unless ``force`` when everything that determines it is
    unchanged: the TFRecord (path, size), bed rows, selected tracks (their table text),
    statistics, species, genome and target dtype, and its arrays are complete.
    """
    if target_dtype not in TARGET_DTYPES:
        raise FlashRNAError(f"target_dtype '{target_dtype}' is not one of {TARGET_DTYPES}")
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
    selections = [(Path(out_dir), assays, identifiers)]
    selections += [(Path(d), a, None) for d, a in (extra_outputs or {}).items()]
    if len({d for d, *_ in selections}) < len(selections):
        raise FlashRNAError(f"{tfr}: two outputs of one conversion are the same directory")
    stats = _read_statistics(statistics) if statistics is not None else {}
    pool_width = stats.get("pool_width", POOL_WIDTH)
    target_bp = labelled["end"] - labelled["start"]
    if target_bp.nunique() != 1:
        raise FlashRNAError(f"{sequences_bed}: the '{label}' windows differ in length")
    target_length = stats.get("target_length", int(target_bp.iloc[0]) // pool_width)
    if int(target_bp.iloc[0]) != target_length * pool_width:
        raise FlashRNAError(
            f"{sequences_bed}: windows of {int(target_bp.iloc[0])} bp do not match "
            f"target_length {target_length} × pool_width {pool_width}"
        )
    if "num_targets" in stats:
        channels = stats["num_targets"]
    elif table.is_identity_subset():
        channels = len(table)
    else:
        raise FlashRNAError(f"{targets_txt}: a subset table needs --statistics (num_targets)")
    species = species or infer_species(tfr)
    genome_name = Path(genome.path).name if genome is not None else ""
    fields = _window_fields(windows)
    outputs = []  # (directory, selected tracks, source) of each shard still to write
    for directory, kept_assays, kept_identifiers in selections:
        selected = table.take(table.find(kept_assays, kept_identifiers))
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
            "assays": None if kept_assays is None else list(kept_assays),
            "identifiers": None if kept_identifiers is None else list(kept_identifiers),
            "statistics": stats,
            "target_dtype": target_dtype,
        }
        if not force and shard_is_current(
            directory, source, selected, species=species, genome=genome_name, **fields
        ):
            log.info("%s is up to date (from %s)", directory, tfr.name)
        else:
            outputs.append((directory, selected, source))
    out = Path(out_dir)
    if not outputs:
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
    identity = np.arange(channels)
    kept_channels = [  # None: every channel, in order
        None if np.array_equal(selected.source_index, identity) else selected.source_index
        for _, selected, _ in outputs
    ]
    encodings: set[str] = set()
    with contextlib.ExitStack() as stack:
        writers = [
            stack.enter_context(
                open_shard(
                    directory,
                    num_examples=len(windows),
                    seq_length=seq_length,
                    target_length=target_length,
                    tracks=selected,
                    species=species,
                    genome=genome_name,
                    pool_width=pool_width,
                    source=source,
                )
            )
            for directory, selected, source in outputs
        ]
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
            if len(encodings) > 1:
                raise FlashRNAError(f"{where}: sequence encodings {sorted(encodings)} mixed")
            dtype = target_dtype
            if dtype == "auto":  # float32 only in legacy (one-hot) files, and then by size
                float32_size = len(example["target"]) == 4 * target_length * channels
                dtype = "float32" if encoding == "one-hot" and float32_size else "float16"
            values = _decode_target_bytes(example["target"], target_length, channels, dtype, where)
            window = windows.iloc[k]
            if genome is not None:
                _verify_sequence(genome, sequence, window.chrom, window.start - flank, where)
            for writer, (_, selected, _), channels_kept in zip(
                writers, outputs, kept_channels, strict=True
            ):
                kept = values if channels_kept is None else np.take(values, channels_kept, axis=1)
                _check_finite(kept, selected, where)
                writer.add(
                    sequence, _readonly_tensor(kept), window.chrom, window.start, window.end, label
                )
        for writer in writers:
            if len(writer.windows) < len(windows):
                raise FlashRNAError(
                    f"{tfr}: {len(writer.windows)} records, but the bed has {len(windows)} rows "
                    "for it"
                )
            writer.meta["sequence_encoding"] = sorted(encodings)
    if "one-hot" in encodings:
        log.warning("%s: legacy one-hot sequences were decoded to base indices", tfr)
    return out


def _read_statistics(path: str | os.PathLike) -> dict[str, Any]:
    """Borzoi's ``statistics.json``, the sizes this module uses checked to be positive integers."""
    stats = read_json(path)
    if not isinstance(stats, dict):
        raise FlashRNAError(f"{path}: expected a JSON object of statistics")
    for key in ("num_targets", "seq_length", "pool_width", "target_length"):
        value = stats.get(key)
        if key in stats and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise FlashRNAError(f"{path}: {key} is {value!r}, expected a positive integer")
    return stats


def _window_fields(windows: pd.DataFrame) -> dict[str, list]:
    """A shard meta's per-example chrom, start, end and label lists for ``windows``."""
    return {
        "chrom": [str(c) for c in windows["chrom"]],
        "start": [int(x) for x in windows["start"]],
        "end": [int(x) for x in windows["end"]],
        "label": [str(x) for x in windows["label"]],
    }


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


def bigwig_coverage(bigwig, path: Path, chrom: str, start: int, end: int) -> np.ndarray:
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
    window) / 2.

    Labels name the shard folders, so a label must be a plain name (letters, digits, ``_``,
    ``-``, ``.``, ``+``; not starting with ``.``): nothing is written outside ``out_dir``. A
    finished shard is left alone when everything that determines it is unchanged (genome,
    windows, track table, bigWig sizes, species, lengths) and its arrays are complete. Shards of
    ``out_dir`` that this BED does not produce (from an earlier run) are named in a warning:
    training reads every shard of the folder."""
    import pyBigWig

    for name, value in (
        ("seq_length", seq_length),
        ("pool_width", pool_width),
        ("examples_per_shard", examples_per_shard),
    ):
        if not isinstance(value, int) or value < 1:
            raise FlashRNAError(f"{name} must be a positive integer, got {value!r}")
    fasta = Genome(genome)
    bed = read_bed(windows_bed)
    bed["label"] = bed["label"].replace("", default_label)
    for row, label in enumerate(bed["label"]):
        if not _PLAIN_LABEL.fullmatch(label):
            raise FlashRNAError(
                f"{windows_bed}: row {row + 1}: label '{label}' is not a plain name (letters, "
                "digits, '_', '-', '.', '+', not starting with '.'): labels name the shard "
                f"folders {Path(out_dir)}/<label>-<i>, so nothing may point outside --out"
            )
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
    bigwigs = []
    try:
        for path in files:
            try:
                bigwigs.append(pyBigWig.open(str(path)))
            except RuntimeError:
                raise FlashRNAError(f"{targets_txt}: {path} is not a readable bigWig") from None
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
                fields = {
                    "species": species,
                    "genome": fasta.path.name,
                    "seq_length": seq_length,
                    "pool_width": pool_width,
                    "target_length": target_bp // pool_width,
                    **_window_fields(chunk),
                }
                if shard_is_current(out, source, table, **fields):
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
                                bigwig_coverage(bw, path, row.chrom, row.start, row.end)
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
    others = sorted(set(find_shards(out_dir)) - set(written), key=str)
    if others:
        log.warning(
            "%s also holds %d shard(s) that %s does not produce (%s): training reads every "
            "shard of the folder; remove them if they are left from an earlier data set",
            out_dir,
            len(others),
            windows_bed,
            ", ".join(p.name for p in others[:5]) + (" …" if len(others) > 5 else ""),
        )
    return written


def shards_summary(paths: Sequence[Path], unchanged: Sequence[Path]) -> str:
    """One line on shards just made: how many written or up to date (``unchanged``),
    examples, tracks, where."""
    metas = [read_shard_meta(p) for p in paths]
    examples = sum(m["num_examples"] for m in metas)
    first = metas[0]
    where = paths[0].parent if len(paths) > 1 else paths[0]
    kept = len(set(paths) & set(unchanged))
    return (
        f"{len(paths) - kept} shard(s) written, {kept} up to date: "
        f"{examples:,} examples × {first['num_tracks']:,} tracks ({first['seq_length']:,}-bp "
        f"inputs, {first['target_length']:,} bins of {first['pool_width']} bp, "
        f"{first['species']}) in {where}"
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
    parser.add_argument(
        "--target-dtype",
        choices=TARGET_DTYPES,
        default="auto",
        help="dtype of the records' targets: auto = float16 (Borzoi) in files of base-index "
        "sequences, float16 or float32 by size in legacy files of one-hot sequences",
    )
    parser.add_argument(
        "--extra-out",
        type=Path,
        help="a second shard directory written from the same read (the file is decompressed "
        "once), with the tracks of --extra-assays, e.g. the ChIP-seq tracks for fine-tuning",
    )
    parser.add_argument(
        "--extra-assays", nargs="+", default=["CHIP"], help="assays of --extra-out, or 'all'"
    )
    parser.add_argument("--force", action="store_true", help="convert even if up to date")
    parser.set_defaults(run=_run_convert)


def _directory_ids(paths: Sequence[Path]) -> dict[Path, int]:
    """Inode of each existing directory: a shard rewritten by atomic_directory gets a new one."""
    return {p: p.stat().st_ino for p in paths if p.is_dir()}


def _unchanged(before: dict[Path, int], paths: Sequence[Path]) -> list[Path]:
    return [p for p in paths if p in before and _directory_ids([p]).get(p) == before[p]]


def _run_convert(args: argparse.Namespace) -> None:
    statistics = args.statistics
    if statistics is None and (args.bed.parent / "statistics.json").is_file():
        statistics = args.bed.parent / "statistics.json"
    identifiers = None
    if args.identifiers_from is not None:
        identifiers = list(TrackTable.read(args.identifiers_from).identifier)
    outputs = [args.out, *([args.extra_out] if args.extra_out else [])]
    before = _directory_ids(outputs)
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
        target_dtype=args.target_dtype,
        force=args.force,
        extra_outputs={args.extra_out: _assays_argument(args.extra_assays)}
        if args.extra_out
        else None,
    )
    summary = shards_summary(outputs, _unchanged(before, outputs))
    print(f"convert {args.tfrecord.name}: {summary}")


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
    before = _directory_ids(list(args.out.iterdir()) if args.out.is_dir() else [])
    shards = make_dataset(
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
    print(f"make-dataset: {shards_summary(shards, _unchanged(before, shards))}")
