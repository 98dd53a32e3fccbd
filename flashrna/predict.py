"""``flashrna predict`` and ``flashrna ensemble-predict``: a model's or an ensemble's tracks for
windows, forward and reverse-complement averaged.

An ensemble predicts the mean of its members' (forward + reverse-complement averaged)
predictions. Members are either held together (an :class:`~flashrna.model.Ensemble`, one pass per
batch) or, with ``--one-at-a-time``, kept on the CPU and moved to the device in turn, so device
memory holds one member whatever the ensemble's size.

``flashrna predict --out DIR`` writes a directory (atomically)::

    predictions.npy  float16 (or --dtype float32) [N, bins, tracks]: window k's predictions,
                     bin-major like targets; bin j covers windows.bed start + 32j ... + 32
    windows.bed      chrom, start, end (the genomic span of the predicted bins), name
                     (shard:<example index>, or the BED row's name, else bed:<row>), one row per
                     window in order
    targets.txt      the head's track table (from the model directory or the shards), when known
    meta.json        models, head, seq_length, crop_bins, bin_size, reverse_complement, dtype,
                     number of windows, formats
    bigwig/          with --format bigwig: one bigWig per selected track (--tracks, --assays),
                     <identifier>.<space>.bw, and tracks.json (its sidecar)

Windows: the examples of a shard set (their stored input; by default the prediction is cropped
to their target window, so it lines up with their targets) followed by the rows of a BED file
(each an input of --seq-length bp centred on the row, from the FASTA, N beyond contig ends).

bigWig output (for a genome browser): one entry per predicted 32-bp bin, on the chromosomes and
with the lengths of the FASTA (--fasta, needed for shards too). Values are in ``counts`` space
(default: the model's squashed output inverse-transformed through the head's track table,
:func:`flashrna.tracks.unsquash` — pooled coverage per bin for ``sum`` tracks, mean per-bp
coverage for ``mean`` tracks, without the track's ``scale``) or ``squashed`` space (the model's
output as is, the value space of the Borzoi targets). bigWig has no free-text header, so the
space is in each file's name and in ``bigwig/tracks.json``, which also lists every file's track
(row, identifier, description, sum_stat, units). Where windows overlap, each base takes the
value of the window whose centre is nearest (predictions are best away from window edges);
bases beyond a chromosome's end are left out. Values are those of ``predictions.npy`` (at
--dtype), which is not kept unless ``npy`` is among the formats.

``flashrna ensemble-predict`` writes, for each input shard holding training or validation
windows, a shard of the same name in exactly the target shard format (:mod:`flashrna.data`):
the same sequences, windows, labels and track table, with the ensemble's predictions over the
target window as targets (float16). It is what ``flashrna distill`` trains on. Each shard is
written atomically and skipped when already written from the same input and models, so an
interrupted run resumes shard by shard.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from flashrna.data import ShardSet, find_shards, open_shard, read_bed, split_labels
from flashrna.genome import Genome
from flashrna.model import BIN_SIZE, Ensemble, check_input_length, predict
from flashrna.tracks import TrackTable, unsquash
from flashrna.utils import FlashRNAError, atomic_directory, read_json, resolve_device, write_json
from flashrna.zoo import add_model_arguments, resolve_model

log = logging.getLogger(__name__)

PREDICTION_FORMAT = "flashrna-predictions"
PREDICTION_VERSION = 1
FORMATS = ("npy", "bigwig")
BIGWIG_SPACES = ("counts", "squashed")


# --------------------------------------------------------------------------------------------
# Members and ensembles
# --------------------------------------------------------------------------------------------


def load_members(directories: Sequence[str | os.PathLike]) -> list[nn.Module]:
    """The models named by ``directories`` (any ``--model`` value:
    :func:`flashrna.zoo.resolve_model`) on the CPU; they must share heads and strand pairs."""
    if not directories:
        raise FlashRNAError("give at least one --model")
    members = [resolve_model(d).load("cpu") for d in directories]
    Ensemble(members)  # checks that the heads agree
    for head in members[0].config.heads:
        pairs = members[0].strand_pair(head)
        for directory, member in zip(directories[1:], members[1:], strict=True):
            if not torch.equal(member.strand_pair(head), pairs):
                raise FlashRNAError(
                    f"{directory}: head '{head}' pairs strands differently from {directories[0]}"
                )
    return members


def predict_members(
    members: Sequence[nn.Module],
    sequences: Tensor | np.ndarray,
    head: str,
    *,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    reverse_complement_average: bool = True,
    crop_bins: int = 0,
    one_at_a_time: bool = False,
    precision: str = "auto",
    progress: bool = False,
) -> Tensor:
    """The members' mean prediction for (N, L) base indices: (N, L/32 - 2*crop_bins, tracks)
    fp32 on the CPU. Each member's prediction is forward+RC averaged (:func:`predict`).
    ``one_at_a_time`` moves one member at a time to ``device`` (and back to the CPU);
    ``precision``: :func:`flashrna.model.predict`'s; ``progress`` shows a bar over each
    member's batches."""
    options = {
        "batch_size": batch_size,
        "device": device,
        "reverse_complement_average": reverse_complement_average,
        "crop_bins": crop_bins,
        "precision": precision,
        "progress": progress,
    }
    if not one_at_a_time:
        model = members[0] if len(members) == 1 else Ensemble(list(members))
        return predict(model, sequences, head, **options)
    total = None
    for member in members:
        out = predict(member, sequences, head, **options)
        member.to("cpu")
        total = out if total is None else total + out
    return total / len(members)


def _tracks_of(model: str | os.PathLike, head: str) -> TrackTable | None:
    """The head's track table stored with the model (``flashrna train``, ``import-model``)."""
    try:
        return resolve_model(model).track_table(head)
    except FlashRNAError:
        return None


def _default_head(members: Sequence[nn.Module], species: str | None) -> str:
    heads = list(members[0].config.heads)
    return species if species in heads else "human" if "human" in heads else heads[0]


def _check_head(members: Sequence[nn.Module], head: str, tracks: int | None, where: str) -> None:
    heads = members[0].config.heads
    if head not in heads:
        raise FlashRNAError(f"the model has no head '{head}' (heads: {', '.join(heads)})")
    if tracks is not None and heads[head] != tracks:
        raise FlashRNAError(
            f"{where}: {tracks} tracks, but the model's head '{head}' predicts {heads[head]}"
        )


# --------------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------------


def predict_windows(
    model_dirs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    shards: Sequence[str | os.PathLike] = (),
    split: str | None = None,
    bed: str | os.PathLike | None = None,
    fasta: str | os.PathLike | None = None,
    seq_length: int | None = None,
    head: str | None = None,
    crop_bins: int | None = None,
    batch_size: int = 4,
    chunk: int = 64,
    device: str | torch.device | None = None,
    reverse_complement_average: bool = True,
    one_at_a_time: bool = False,
    dtype: str = "float16",
    allow_length: bool = False,
    precision: str = "auto",
    formats: Sequence[str] = ("npy",),
    space: str = "counts",
    identifiers: Sequence[str] | None = None,
    assays: Sequence[str] | None = None,
    progress: bool = True,
) -> Path:
    """Predict the windows of ``shards`` (optionally one split) and then of ``bed`` (with
    ``fasta``) and write the directory ``out`` described in the module docstring. The models'
    own input length and crop (their description) are the defaults for BED windows; an input
    length a model was not built for is refused unless ``allow_length``; ``precision``:
    :func:`flashrna.model.predict`'s.

    ``formats``: ``npy`` (``predictions.npy``, every track) and/or ``bigwig`` (one file per
    track of the head's table selected by track ``identifiers`` and ``assays``; all
    when neither is given) in ``space`` (``counts`` or ``squashed``). ``progress``: bars with
    totals and ETAs over the windows and the bigWig tracks."""
    if not shards and bed is None:
        raise FlashRNAError("give windows: --shards and/or --bed with --fasta")
    if bed is not None and fasta is None:
        raise FlashRNAError("--bed needs --fasta (the genome to read the windows from)")
    if dtype not in ("float16", "float32"):
        raise FlashRNAError(f"--dtype {dtype}: float16 or float32")
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise FlashRNAError(f"--format {' '.join(formats)}: choose from {', '.join(FORMATS)}")
    if space not in BIGWIG_SPACES:
        raise FlashRNAError(f"--space {space}: one of {', '.join(BIGWIG_SPACES)}")
    if "bigwig" not in formats and (identifiers or assays):
        raise FlashRNAError("--tracks and --assays choose the bigWig tracks: add --format bigwig")
    if "bigwig" in formats and fasta is None:
        raise FlashRNAError(
            "--format bigwig needs --fasta: a bigWig's header holds the chromosome lengths"
        )
    members = load_members(model_dirs)
    described = resolve_model(model_dirs[0]).description
    shard_set = ShardSet(shards, split=split) if shards else None
    head = head or _default_head(members, shard_set.species if shard_set else None)
    _check_head(members, head, len(shard_set.tracks) if shard_set else None, f"shards {shards}")
    tracks = _tracks_of(model_dirs[0], head)
    # Every window as (chrom, input start, name, a function returning its input sequence).
    windows: list[tuple[str, int, str, Any]] = []
    if shard_set is not None:
        if seq_length not in (None, shard_set.seq_length):
            raise FlashRNAError(
                f"--seq-length {seq_length} differs from the shards' {shard_set.seq_length}"
            )
        seq_length = shard_set.seq_length
        if crop_bins is None:
            crop_bins = (seq_length // BIN_SIZE - shard_set.target_length) // 2
        tracks = tracks or shard_set.tracks
        for i in range(len(shard_set)):
            chrom, start = str(shard_set.chrom[i]), shard_set.input_start(i)
            windows.append((chrom, start, f"shard:{i}", partial(shard_set.sequence, i)))
    if bed is not None:
        if seq_length is None and described["input_length"] is None:
            raise FlashRNAError("--bed needs --seq-length (the model input in bp)")
        if seq_length is None:
            seq_length = described["input_length"]
            crop_bins = described["crop_bins"] if crop_bins is None else crop_bins
        genome = Genome(fasta)
        for k, row in enumerate(read_bed(bed).itertuples(index=False)):
            start = (row.start + row.end) // 2 - seq_length // 2
            fetch = partial(genome.fetch, row.chrom, start, start + seq_length)
            windows.append((row.chrom, start, row.label or f"bed:{k}", fetch))
    check_input_length(described, seq_length, f"model {model_dirs[0]}", allow_length)
    crop_bins = crop_bins or 0
    bins = seq_length // BIN_SIZE - 2 * crop_bins
    if bins <= 0:
        raise FlashRNAError(f"--crop-bins {crop_bins} leaves no bins of {seq_length} bp")

    num_tracks = members[0].config.heads[head]
    if "bigwig" in formats:
        if tracks is None:
            raise FlashRNAError(
                f"--format bigwig names each file after its track, but {model_dirs[0]} has no "
                f"targets-{head}.txt (give --shards, whose track table is used then)"
            )
        bigwig_rows = tracks.find(assays, identifiers)  # checked before any prediction
        chrom_sizes = Genome(fasta).lengths

    out = Path(out)
    with atomic_directory(out) as tmp:
        array = np.lib.format.open_memmap(
            tmp / "predictions.npy", "w+", np.dtype(dtype), (len(windows), bins, num_tracks)
        )
        bar = tqdm(total=len(windows), desc="predict", unit="window", disable=not progress)
        for first in range(0, len(windows), chunk):
            part = windows[first : first + chunk]
            sequences = np.stack([fetch() for *_, fetch in part])
            array[first : first + len(part)] = predict_members(
                members,
                sequences,
                head,
                batch_size=batch_size,
                device=device,
                reverse_complement_average=reverse_complement_average,
                crop_bins=crop_bins,
                one_at_a_time=one_at_a_time,
                precision=precision,
                progress=progress and len(part) > batch_size,
            ).numpy()
            bar.update(len(part))
        bar.close()
        array.flush()
        if "bigwig" in formats:
            first_bins = [(chrom, start + crop_bins * BIN_SIZE) for chrom, start, *_ in windows]
            write_bigwigs(
                tmp / "bigwig",
                array,
                bigwig_intervals(first_bins, bins, chrom_sizes),
                chrom_sizes,
                tracks,
                bigwig_rows,
                space,
                progress=progress,
            )
        del array
        if "npy" not in formats:
            (tmp / "predictions.npy").unlink()
        with open(tmp / "windows.bed", "w") as handle:
            for chrom, start, name, _ in windows:
                begin = start + crop_bins * BIN_SIZE
                handle.write(f"{chrom}\t{begin}\t{begin + bins * BIN_SIZE}\t{name}\n")
        if tracks is not None:
            tracks.write(tmp / "targets.txt")
        write_json(
            tmp / "meta.json",
            {
                "format": PREDICTION_FORMAT,
                "version": PREDICTION_VERSION,
                "models": [_model_name(d) for d in model_dirs],
                "head": head,
                "num_windows": len(windows),
                "seq_length": seq_length,
                "crop_bins": crop_bins,
                "bin_size": BIN_SIZE,
                "reverse_complement": reverse_complement_average,
                "dtype": dtype,
                "formats": list(formats),
                "shards": [str(Path(s).resolve()) for s in shards],
                "split": split,
                "bed": str(Path(bed).resolve()) if bed is not None else None,
            },
        )
    return out


def _model_name(model: str | os.PathLike) -> str:
    """A model as meta.json records it: a directory's absolute path, else the name given."""
    path = Path(model)
    return str(path.resolve()) if path.exists() else str(model)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, targets=False)
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    parser.add_argument(
        "--one-at-a-time",
        action="store_true",
        help="move one member at a time to the device (bounded memory for big ensembles)",
    )


def register_predict(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Predict tracks with a model or an ensemble (the mean of the members), forward and "
        "reverse-complement averaged, for the examples of a shard set and/or the rows of a BED "
        "file. Writes --out DIR: predictions.npy [windows, bins, tracks], windows.bed (the "
        "genomic span of the bins), targets.txt and meta.json; with --format bigwig, "
        "bigwig/<track>.<space>.bw for a genome browser and bigwig/tracks.json (space, units, "
        "each file's track)."
    )
    _add_model_arguments(parser)
    parser.add_argument("--shards", nargs="+", default=[], help="shard folders (windows)")
    parser.add_argument("--split", choices=("train", "valid", "test"), help="only this split")
    parser.add_argument("--bed", type=Path, help="windows: a BED (inputs centred on each row)")
    parser.add_argument("--fasta", type=Path, help="genome FASTA for --bed")
    parser.add_argument(
        "--seq-length",
        type=int,
        help="model input bp (default: the shards', else the model's own input length)",
    )
    parser.add_argument(
        "--crop-bins",
        type=int,
        help="drop this many output bins at each end (default: shards -> their target window, "
        "else the model's own crop, else 0)",
    )
    parser.add_argument("--no-rc", action="store_true", help="forward strand only")
    parser.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    parser.add_argument(
        "--format",
        dest="formats",
        nargs="+",
        choices=FORMATS,
        default=["npy"],
        help="npy: predictions.npy, every track; bigwig: bigwig/<track>.<space>.bw, one per "
        "selected track, for a genome browser (needs --fasta for the chromosome lengths)",
    )
    parser.add_argument(
        "--space",
        choices=BIGWIG_SPACES,
        default="counts",
        help="bigWig values: counts (the model's output inverse-transformed through the track "
        "table: coverage per 32-bp bin) or squashed (the model's output, as the Borzoi targets)",
    )
    parser.add_argument(
        "--tracks", nargs="+", metavar="ID", help="bigWig: only these track identifiers"
    )
    parser.add_argument(
        "--assays", nargs="+", help="bigWig: only tracks of these assays (RNA, DNASE, ATAC, ...)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.set_defaults(run=_run_predict)


def _run_predict(args: argparse.Namespace) -> None:
    predict_windows(
        args.model,
        args.out,
        shards=args.shards,
        split=args.split,
        bed=args.bed,
        fasta=args.fasta,
        seq_length=args.seq_length,
        head=args.head,
        crop_bins=args.crop_bins,
        batch_size=args.batch_size,
        device=resolve_device(args.device),
        reverse_complement_average=not args.no_rc,
        one_at_a_time=args.one_at_a_time,
        dtype=args.dtype,
        allow_length=args.allow_length,
        precision=args.precision,
        formats=args.formats,
        space=args.space,
        identifiers=args.tracks,
        assays=args.assays,
        progress=args.progress,
    )


# --------------------------------------------------------------------------------------------
# ensemble-predict
# --------------------------------------------------------------------------------------------


def ensemble_predict_shards(
    model_dirs: Sequence[str | os.PathLike],
    shards: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    splits: Sequence[str] = ("train", "valid"),
    head: str | None = None,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    one_at_a_time: bool = False,
    allow_length: bool = False,
    precision: str = "auto",
) -> list[Path]:
    """Write ``out/<shard name>`` for every input shard holding windows of ``splits``: the
    ensemble's forward+RC predictions over each example's target window, in the target shard
    format. Shards already written from the same input and models are skipped. Shards of an
    input length the models were not built for are refused unless ``allow_length``;
    ``precision``: :func:`flashrna.model.predict`'s (recorded, as it changes the targets)."""
    members = load_members(model_dirs)
    described = resolve_model(model_dirs[0]).description
    models = [_model_name(d) for d in model_dirs]
    written = []
    names: dict[str, Path] = {}
    for path in find_shards(shards):
        if path.name in names:
            raise FlashRNAError(f"{path}: name clashes with {names[path.name]} in {out}")
        names[path.name] = path
        shard = ShardSet(path)
        labels = set(shard.label)
        if not any(split_labels(split, list(labels)) for split in splits):
            continue
        name = head or _default_head(members, shard.species)
        _check_head(members, name, len(shard.tracks), str(path))
        check_input_length(described, shard.seq_length, f"model {model_dirs[0]}", allow_length)
        target = Path(out) / path.name
        source = {
            "ensemble_of": models,
            "head": name,
            "input": str(path.resolve()),
            "input_source": read_json(path / "meta.json").get("source", {}),
            "precision": precision,
        }
        done = target / "meta.json"
        if done.is_file() and read_json(done).get("source") == source:
            log.info("%s is up to date", target)
            written.append(target)
            continue
        crop = (shard.seq_length // BIN_SIZE - shard.target_length) // 2
        with open_shard(
            target,
            num_examples=len(shard),
            seq_length=shard.seq_length,
            target_length=shard.target_length,
            tracks=shard.tracks,
            species=shard.species,
            genome=shard.genome,
            pool_width=shard.pool_width,
            source=source,
        ) as writer:
            for first in range(0, len(shard), batch_size):
                indices = range(first, min(first + batch_size, len(shard)))
                sequences = np.stack([shard.sequence(i) for i in indices])
                prediction = predict_members(
                    members,
                    sequences,
                    name,
                    batch_size=batch_size,
                    device=device,
                    crop_bins=crop,
                    one_at_a_time=one_at_a_time,
                    precision=precision,
                )
                for k, i in enumerate(indices):
                    writer.add(
                        sequences[k],
                        prediction[k],
                        *shard.window(i),
                        str(shard.label[i]),
                    )
        log.info("wrote %s (%d windows)", target, len(shard))
        written.append(target)
    if not written:
        raise FlashRNAError(f"no shards with {'/'.join(splits)} windows under {shards}")
    return written


def register_ensemble_predict(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write an ensemble's predictions over the training (and validation) windows as shards in "
        "exactly the target format: for each input shard with windows of --splits, OUT/<shard "
        "name> with the same sequences, windows and tracks and the ensemble's forward+RC "
        "predictions as targets. Resumable: finished shards are skipped. Train a student on "
        "them with 'flashrna distill --teacher SPECIES=OUT'."
    )
    _add_model_arguments(parser)
    parser.add_argument("--shards", nargs="+", required=True, help="target shard folders")
    parser.add_argument(
        "--splits",
        nargs="+",
        default=["train", "valid"],
        choices=("train", "valid", "test"),
        help="splits whose shards to predict",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder of teacher shards")
    parser.set_defaults(run=_run_ensemble_predict)


def _run_ensemble_predict(args: argparse.Namespace) -> None:
    ensemble_predict_shards(
        args.model,
        args.shards,
        args.out,
        splits=args.splits,
        head=args.head,
        batch_size=args.batch_size,
        device=resolve_device(args.device),
        one_at_a_time=args.one_at_a_time,
        allow_length=args.allow_length,
        precision=args.precision,
    )


# --------------------------------------------------------------------------------------------
# bigWig output
# --------------------------------------------------------------------------------------------

SPACE_UNITS = {
    "counts": "the model's output inverse-transformed through the track table "
    "(flashrna.tracks.unsquash): coverage, without the track's scale",
    "squashed": "the model's output as is: the Borzoi targets' value space (pooled, 3/4 power "
    "for *_sqrt tracks, soft-clipped, times scale)",
}
TRACK_VALUE = {
    "counts": {
        "sum": "per-bp coverage summed over the 32-bp bin",
        "mean": "per-bp coverage averaged over the 32-bp bin",
    },
    "squashed": {"sum": "squashed value of the bin", "mean": "squashed value of the bin"},
}


@dataclass(frozen=True)
class BigWigSpan:
    """The bigWig entries of one window: output bins ``bins`` (int64 (k,)) of window ``window``
    stand for ``chrom:[starts[j], ends[j])`` (int64 (k,) each)."""

    window: int
    chrom: str
    bins: np.ndarray
    starts: np.ndarray
    ends: np.ndarray


def bigwig_intervals(
    windows: Sequence[tuple[str, int]],
    num_bins: int,
    chrom_sizes: Mapping[str, int],
    bin_size: int = BIN_SIZE,
) -> list[BigWigSpan]:
    """The entries a bigWig holds for windows of ``num_bins`` bins that start at ``(chrom,
    start)`` (0-based, the first bin's start), in bigWig order (chromosomes in the order of
    ``chrom_sizes``, then by start): each base belongs to the window whose centre is nearest
    (ties: the window that starts first) and lies within its chromosome; a bin partly given to a
    neighbour or partly past a chromosome end is clipped, and windows left with no base are
    left out."""
    rank = {chrom: k for k, chrom in enumerate(chrom_sizes)}
    missing = sorted({chrom for chrom, _ in windows} - set(rank))
    if missing:
        raise FlashRNAError(f"chromosome(s) {', '.join(missing[:5])} are not in the genome FASTA")
    span = num_bins * bin_size
    order = sorted(range(len(windows)), key=lambda i: (rank[windows[i][0]], windows[i][1], i))
    spans = []
    for chrom, group in groupby(order, key=lambda i: windows[i][0]):
        indices = list(group)
        starts = np.array([windows[i][1] for i in indices], dtype=np.int64)
        # The midpoint between neighbouring centres, as every window has the same length.
        middle = (starts[:-1] + starts[1:] + span) // 2
        lo = np.concatenate([starts[:1], np.maximum(starts[1:], middle)])
        hi = np.concatenate([np.minimum(starts[:-1] + span, middle), starts[-1:] + span])
        lo, hi = lo.clip(0, chrom_sizes[chrom]), hi.clip(0, chrom_sizes[chrom])
        for window, start, first, last in zip(indices, starts, lo, hi, strict=True):
            if last <= first:
                continue
            bins = np.arange((first - start) // bin_size, -((start - last) // bin_size))
            edges = start + bins * bin_size
            spans.append(
                BigWigSpan(
                    window,
                    chrom,
                    bins,
                    np.maximum(edges, first),
                    np.minimum(edges + bin_size, last),
                )
            )
    return spans


def bigwig_name(identifier: str, space: str) -> str:
    """``<identifier>.<space>.bw``, characters other than letters, digits and ``._+-`` as
    ``_``."""
    return f"{re.sub(r'[^A-Za-z0-9._+-]', '_', identifier)}.{space}.bw"


def write_bigwigs(
    directory: str | os.PathLike,
    predictions: np.ndarray,
    spans: Sequence[BigWigSpan],
    chrom_sizes: Mapping[str, int],
    tracks: TrackTable,
    rows: Sequence[int] | np.ndarray,
    space: str = "counts",
    *,
    progress: bool = True,
    memory_bytes: int = 256 << 20,
) -> list[Path]:
    """Write ``directory/<identifier>.<space>.bw`` for each track row of ``rows`` and
    ``directory/tracks.json`` (the sidecar: space, units, bin size and each file's track).

    ``predictions``: squashed model outputs [windows, bins, tracks] (e.g. the memory-mapped
    ``predictions.npy``), read for at most ``memory_bytes`` of float32 at a time; ``spans``:
    :func:`bigwig_intervals` of the windows; ``space``: ``counts`` (inverse-transformed with
    ``tracks``) or ``squashed``. Returns the bigWig paths."""
    import pyBigWig

    if space not in BIGWIG_SPACES:
        raise FlashRNAError(f"bigWig space {space}: one of {', '.join(BIGWIG_SPACES)}")
    if not spans:
        raise FlashRNAError("no predicted bin lies on its chromosome: no bigWig to write")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows = np.asarray(rows, dtype=np.int64)
    names, files = set(), []
    for row in rows:
        name = bigwig_name(tracks.identifier[row], space)
        if name in names:  # two identifiers alike once sanitised
            name = name.replace(f".{space}.bw", f".row{row}.{space}.bw")
        names.add(name)
        files.append(directory / name)
    header = list(chrom_sizes.items())
    chroms = [span.chrom for span in spans for _ in span.bins]
    starts = np.concatenate([span.starts for span in spans])
    ends = np.concatenate([span.ends for span in spans])
    windows, bins = predictions.shape[:2]
    per_block = max(1, memory_bytes // (4 * windows * bins))
    bar = tqdm(total=len(rows), desc="bigWig", unit="track", disable=not progress)
    for first in range(0, len(rows), per_block):
        block_rows = rows[first : first + per_block]
        values = np.asarray(predictions[:, :, block_rows], dtype=np.float32)
        if space == "counts":
            values = unsquash(
                values,
                tracks.clip_soft[block_rows],
                tracks.scale[block_rows],
                tracks.sum_stat[block_rows],
            )
        entries = np.concatenate([values[span.window, span.bins] for span in spans])
        for k, path in enumerate(files[first : first + per_block]):
            bigwig = pyBigWig.open(str(path), "w")
            try:
                bigwig.addHeader(header)
                bigwig.addEntries(chroms, starts, ends=ends, values=entries[:, k].astype(float))
            finally:
                bigwig.close()
            bar.update()
    bar.close()
    write_json(
        directory / "tracks.json",
        {
            "format": "flashrna-bigwig-predictions",
            "space": space,
            "units": SPACE_UNITS[space],
            "bin_size": BIN_SIZE,
            "overlaps": "each base takes the value of the window whose centre is nearest",
            "tracks": [
                {
                    "file": path.name,
                    "row": int(row),
                    "identifier": str(tracks.identifier[row]),
                    "description": str(tracks.frame["description"][row]),
                    "sum_stat": str(tracks.sum_stat[row]),
                    "scale": float(tracks.scale[row]),
                    "value": TRACK_VALUE[space][str(tracks.sum_stat[row]).split("_")[0]],
                }
                for path, row in zip(files, rows, strict=True)
            ],
        },
    )
    return files
