"""``flashrna attribute``: what a model's prediction for a gene or a track window owes to each base.

Targets: ``--genes`` (an input window of ``--length`` bp centred on the gene's TSS, the first
transcribed base of its merged exons; the attributed value sums its exon bins, exons merged over
transcripts) or ``--regions``/``--bed`` (a window centred on the region's midpoint; the value sums
the bins overlapping the region: a track window). Any model of the ``--model`` options: FlashRNA
directories, ensembles, imported releases, Borzoi/Flashzoi through :mod:`flashrna.zoo`.

The attributed value (Borzoi's gene saliency, calico/baskerville ``seqnn.gradients_func``): the
selected tracks' predictions (``--tracks``/``--assays``/``--description``), inverse-transformed
to counts (:func:`flashrna.tracks.unsquash`; ``--units squashed`` keeps the stored scale),
averaged over the tracks (for a gene, stranded tracks of the other strand are left out), summed
over the target's bins (bins within ``--crop-bins`` of either end never count), then
``log(sum + pseudo)`` (``--transform log``, Borzoi's) or the sum itself (``none``). With
reverse-complement averaging (default) the value is the mean of the value on the forward input
and on its reverse complement (that prediction mapped back through the strand pairs), and the
gradient and ISM below are those of the mean.

Methods (``--methods``):

- ``gradient``: d value / d one-hot input, (L, 4) per target; mean-subtracted over the four bases
  at each position (as Gschwind et al., Borzoi and Flashzoi do) and multiplied by the one-hot
  input, which gives the per-base score: the centred gradient at the reference base (0 at N).
- ``ism``: in-silico mutagenesis of a region (``--ism-width`` bp centred on the target, or
  ``--ism-region``): value(mutant) - value(reference) for each position and base, (W, 4), 0 at
  the reference base; its per-base score is minus the mean over the three alternatives (positive
  where the reference base raises the value; for small effects about 4/3 of the centred
  gradient).

Outputs in ``--out``: ``attributions.h5`` (``--array-format npz``: ``attributions.npz``) with, per
target ``k``, ``name chrom strand window_start center value`` and the arrays ``sequence`` (K, L)
uint8, ``gradient`` (K, L, 4) and ``score`` (K, L) float32, and for ISM ``ism_start`` (K,),
``ism`` (K, W, 4), ``ism_score`` (K, W); per target ``<name>.bw`` (the per-base gradient score over
the input window as a bigWig; ``<name>.ism.bw`` for ISM), ``<name>.bedGraph`` with
``--bedgraph``, and ``<name>.png`` (the whole window and a zoom around the target);
``targets.tsv`` (one row per target) and ``summary.json``.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flashrna.annotation import Annotation, Gene
from flashrna.data import read_bed
from flashrna.genome import Genome
from flashrna.model import BIN_SIZE, reverse_complement, unreverse_prediction
from flashrna.tracks import TrackTable, unsquash
from flashrna.utils import FlashRNAError, atomic_file, atomic_path, resolve_device, write_json
from flashrna.variants import read_identifiers, track_strands, trim_version
from flashrna.zoo import (
    TrackModel,
    add_model_arguments,
    load_track_model,
    load_track_table,
    track_table_from_args,
)

log = logging.getLogger(__name__)

UNITS = ("counts", "squashed")
TRANSFORMS = ("log", "none")
METHODS = ("gradient", "ism")
BASE_COLOURS = {"A": "#2ca02c", "C": "#1f77b4", "G": "#ff7f0e", "T": "#d62728"}


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """An input window and the genomic intervals whose bins make the attributed value.

    ``gene.exons`` holds those intervals (a region is a one-interval pseudo-gene, strand '.');
    the window is ``[center - length // 2, center - length // 2 + length)``."""

    name: str
    gene: Gene
    center: int  # 0-based position the window is centred on (TSS or region midpoint)

    def window_start(self, length: int) -> int:
        return self.center - length // 2

    def bins(self, length: int, crop_bins: int = 0) -> np.ndarray:
        """Output bins (int64) of the window that overlap the intervals, ``crop_bins`` from
        either end excluded."""
        num_bins = length // BIN_SIZE
        bins = self.gene.exon_bins(self.window_start(length), num_bins)
        return bins[(bins >= crop_bins) & (bins < num_bins - crop_bins)]


def tss(gene: Gene) -> int:
    """0-based first transcribed base of a gene's merged exons."""
    return gene.start if gene.strand != "-" else gene.end - 1


def gene_target(gene: Gene, center: int | None = None) -> Target:
    """A gene's target, centred on its TSS unless ``center`` is given."""
    return Target(gene.name, gene, tss(gene) if center is None else center)


def region_target(chrom: str, start: int, end: int, name: str | None = None) -> Target:
    """A track window ``chrom:[start, end)`` as a target centred on its midpoint."""
    if end <= start:
        raise FlashRNAError(f"region {chrom}:{start + 1}-{end} is empty")
    name = name or f"{chrom}_{start + 1}_{end}"
    pseudo = Gene(name, name, chrom, ".", np.array([[start, end]], dtype=np.int64))
    return Target(name, pseudo, (start + end) // 2)


_REGION = re.compile(r"^(?P<chrom>[^:\s]+):(?P<start>[\d,]+)-(?P<end>[\d,]+)$")


def parse_region(text: str) -> tuple[str, int, int]:
    """``chr1:1,001-2,000`` (1-based, inclusive, as a genome browser shows it) -> ``(chrom,
    start, end)`` 0-based half-open."""
    match = _REGION.match(text.strip())
    if match is None:
        raise FlashRNAError(f"region '{text}' is not chrom:start-end (e.g. chr1:1001-2000)")
    start, end = (int(match[k].replace(",", "")) for k in ("start", "end"))
    if end < start or start < 1:
        raise FlashRNAError(f"region '{text}': need 1 <= start <= end")
    return match["chrom"], start - 1, end


def find_gene(annotation: Annotation, key: str) -> Gene:
    """A gene by Ensembl id (with or without version) or by its unique name."""
    if key in annotation.genes:
        return annotation.genes[key]
    matches = [
        g for g in annotation.genes.values() if trim_version(g.gene_id) == trim_version(key)
    ] or [g for g in annotation.genes.values() if g.name == key]
    if len(matches) != 1:
        problem = "no gene" if not matches else f"{len(matches)} genes"
        raise FlashRNAError(f"{annotation.source}: {problem} with id or name '{key}'")
    return matches[0]


def read_bed_targets(path: str | Path) -> list[Target]:
    """Region targets from a BED file (``chrom start end [name]``)."""
    return [
        region_target(row.chrom, row.start, row.end, row.label or None)
        for row in read_bed(path).itertuples()
    ]


# --------------------------------------------------------------------------------------------
# The attributed value
# --------------------------------------------------------------------------------------------


@dataclass
class Readout:
    """How a head's predictions (B, N bins, tracks) become one value per example (module
    docstring): the outputs ``columns``, their units, the transform."""

    tracks: TrackTable  # the head's table (all outputs)
    columns: np.ndarray  # (C,) outputs that are read
    units: str = "counts"
    transform: str = "log"
    pseudo: float = 1e-6
    crop_bins: int = 0

    def __post_init__(self) -> None:
        if self.units not in UNITS:
            raise FlashRNAError(f"units '{self.units}' is not one of {UNITS}")
        if self.transform not in TRANSFORMS:
            raise FlashRNAError(f"transform '{self.transform}' is not one of {TRANSFORMS}")
        self.columns = np.asarray(self.columns, dtype=np.int64)
        if len(self.columns) == 0:
            raise FlashRNAError("no tracks selected for the attributed value")
        self.strands = track_strands(self.tracks)[self.columns]

    def weights_and_masks(
        self, targets: Sequence[Target], length: int, device: torch.device
    ) -> tuple[Tensor, Tensor]:
        """Per target the track weights (B, C) (mean over the tracks that measure it) and the
        bin mask (B, N) float32; a target without bins or tracks is an error naming it."""
        num_bins = length // BIN_SIZE
        weights = torch.zeros(len(targets), len(self.columns))
        masks = torch.zeros(len(targets), num_bins)
        for k, target in enumerate(targets):
            strand = target.gene.strand
            usable = (self.strands == ".") | (strand == ".") | (self.strands == strand)
            bins = target.bins(length, self.crop_bins)
            if not usable.any() or len(bins) == 0:
                what = "no selected track on its strand" if not usable.any() else "no bins"
                raise FlashRNAError(f"target {target.name}: {what} in the {length}-bp window")
            weights[k, torch.as_tensor(np.flatnonzero(usable))] = 1.0 / usable.sum()
            masks[k, torch.as_tensor(bins)] = 1.0
        return weights.to(device), masks.to(device)

    def __call__(self, predictions: Tensor, weights: Tensor, masks: Tensor) -> Tensor:
        """(B, N, tracks) predictions -> (B,) values."""
        x = predictions[..., torch.as_tensor(self.columns, device=predictions.device)].float()
        if self.units == "counts":
            rows = self.tracks.frame.iloc[self.columns]
            x = unsquash(x, rows["clip_soft"], rows["scale"], rows["sum_stat"])
        total = torch.einsum("bnc,bc,bn->b", x, weights, masks)
        return torch.log(total + self.pseudo) if self.transform == "log" else total


def one_hot(sequences: np.ndarray | Tensor) -> Tensor:
    """(B, L) base indices -> (B, L, 4) float32 one-hot, N an all-zero row."""
    indices = torch.as_tensor(np.asarray(sequences)).long()
    return torch.eye(5)[:, :4][indices]


def _values(model, inputs: Tensor, head: str, readout: Readout, weights, masks, rc: bool) -> Tensor:
    """The (reverse-complement averaged) value of (B, L) base indices or (B, L, 4) one-hots."""
    if not rc:
        return readout(model(inputs, head, 0), weights, masks)
    # One-hot channels A C G T reversed are T G C A: the complement.
    reverse = inputs.flip(1).flip(2) if inputs.is_floating_point() else reverse_complement(inputs)
    forward, backward = model(torch.cat((inputs, reverse)), head, 0).chunk(2)
    backward = unreverse_prediction(backward, model.strand_pair(head))
    return (readout(forward, weights, masks) + readout(backward, weights, masks)) / 2


def _prepare(model: torch.nn.Module, device: torch.device) -> bool:
    was_training = model.training
    model.eval().to(device)
    return was_training


def predicted_values(
    model: torch.nn.Module,
    sequences: np.ndarray,
    targets: Sequence[Target],
    readout: Readout,
    *,
    head: str = "human",
    batch_size: int = 4,
    device: str | torch.device | None = None,
    rc: bool = True,
    autocast: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """The attributed value (K,) float64 of each input (K, L) for its target (no gradients)."""
    from tqdm.auto import tqdm

    device = resolve_device(device)
    was_training = _prepare(model, device)
    out = []
    starts = range(0, len(sequences), batch_size)
    for start in tqdm(starts, desc="values", unit="batch", disable=not progress):
        batch = torch.as_tensor(np.asarray(sequences[start : start + batch_size])).to(device)
        weights, masks = readout.weights_and_masks(
            targets[start : start + batch_size], batch.shape[1], device
        )
        with (
            torch.no_grad(),
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast),
        ):
            out.append(_values(model, batch, head, readout, weights, masks, rc).double().cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0)


def input_gradients(
    model: torch.nn.Module,
    sequences: np.ndarray,
    targets: Sequence[Target],
    readout: Readout,
    *,
    head: str = "human",
    batch_size: int = 1,
    device: str | torch.device | None = None,
    rc: bool = True,
    autocast: bool = False,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Gradients (K, L, 4) float32 of each target's value with respect to the one-hot input
    (K, L) (not centred), and the values (K,) float64."""
    from tqdm.auto import tqdm

    device = resolve_device(device)
    was_training = _prepare(model, device)
    gradients, values = [], []
    starts = range(0, len(sequences), batch_size)
    for start in tqdm(starts, desc="gradients", unit="batch", disable=not progress):
        x = one_hot(sequences[start : start + batch_size]).to(device).requires_grad_(True)
        weights, masks = readout.weights_and_masks(
            targets[start : start + batch_size], x.shape[1], device
        )
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            value = _values(model, x, head, readout, weights, masks, rc)
        (gradient,) = torch.autograd.grad(value.sum(), x)
        gradients.append(gradient.float().cpu())
        values.append(value.detach().double().cpu())
    model.train(was_training)
    return torch.cat(gradients).numpy(), torch.cat(values).numpy()


def gradient_scores(gradients: np.ndarray, sequences: np.ndarray) -> np.ndarray:
    """Input x gradient, mean-subtracted per position: (K, L, 4) gradients and (K, L) base
    indices -> (K, L) float32 (0 at N)."""
    centred = gradients - gradients.mean(-1, keepdims=True)
    known = sequences < 4
    picked = np.take_along_axis(centred, np.minimum(sequences, 3)[..., None].astype(np.int64), -1)
    return np.where(known, picked[..., 0], 0.0).astype(np.float32)


def mutagenesis(
    model: torch.nn.Module,
    sequence: np.ndarray,
    target: Target,
    start: int,
    width: int,
    readout: Readout,
    *,
    head: str = "human",
    batch_size: int = 8,
    device: str | torch.device | None = None,
    rc: bool = True,
    autocast: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """ISM of positions ``start .. start + width`` of one input (L,): value(mutant) -
    value(reference), (width, 4) float64, 0 at the reference base (NaN rows at N)."""
    if start < 0 or start + width > len(sequence):
        raise FlashRNAError(f"ISM region {start}..{start + width} is outside the window")
    reference = np.asarray(sequence, dtype=np.uint8)
    mutants, where = [], []
    for offset in range(width):
        base = int(reference[start + offset])
        for alt in range(4):
            if base < 4 and alt != base:
                mutant = reference.copy()
                mutant[start + offset] = alt
                mutants.append(mutant)
                where.append((offset, alt))
    inputs = np.stack([reference, *mutants])
    values = predicted_values(
        model,
        inputs,
        [target] * len(inputs),
        readout,
        head=head,
        batch_size=batch_size,
        device=device,
        rc=rc,
        autocast=autocast,
        progress=progress,
    )
    effects = np.zeros((width, 4))
    effects[reference[start : start + width] >= 4] = np.nan
    for (offset, alt), value in zip(where, values[1:], strict=True):
        effects[offset, alt] = value - values[0]
    return effects


def ism_scores(effects: np.ndarray) -> np.ndarray:
    """Per-base ISM score (..., W): minus the mean effect of the three alternatives."""
    return -effects.sum(-1) / 3.0


# --------------------------------------------------------------------------------------------
# Track selection shared with the benchmarks that read genes
# --------------------------------------------------------------------------------------------


def add_track_arguments(parser: argparse.ArgumentParser, assays: Sequence[str] = ("RNA",)):
    """``--tracks``, ``--assays``, ``--description``: the outputs the attributed value reads."""
    group = parser.add_argument_group("tracks")
    group.add_argument(
        "--tracks",
        nargs="+",
        metavar="ID_OR_TABLE",
        help="track identifiers, or track tables whose identifiers are meant",
    )
    group.add_argument(
        "--assays", nargs="+", default=list(assays), help="tracks of these assays only"
    )
    group.add_argument(
        "--description",
        help="tracks whose description contains this text (case-insensitive), e.g. K562",
    )


def select_tracks(
    table: TrackTable,
    *,
    tracks: Sequence[str] | None = None,
    assays: Sequence[str] | None = ("RNA",),
    description: str | None = None,
) -> list[str]:
    """Identifiers of the rows of ``table`` of ``assays`` (None: any), among ``tracks``
    (identifiers, or paths of track tables whose identifiers are meant; None: all) and whose
    description contains ``description`` (case-insensitive; None: any)."""
    rows = table.find(assays, read_identifiers(tracks))
    if description:
        text = table.frame["description"].to_numpy()[rows].astype(str)
        rows = rows[np.char.find(np.char.lower(text), description.lower()) >= 0]
        if len(rows) == 0:
            raise FlashRNAError(
                f"{table.source}: no selected track's description contains '{description}'"
            )
    return list(table.identifier[rows])


def selected_identifiers(args: argparse.Namespace) -> list[str]:
    """:func:`select_tracks` of the ``--tracks``/``--assays``/``--description`` options."""
    return select_tracks(
        track_table_from_args(args),
        tracks=args.tracks,
        assays=args.assays,
        description=args.description,
    )


def load_readout(
    models: Sequence[str | Path],
    *,
    head: str | None = None,
    targets: str | Path | None = None,
    tracks: Sequence[str] | None = None,
    assays: Sequence[str] | None = ("RNA",),
    description: str | None = None,
    units: str = "counts",
    transform: str = "log",
    pseudo: float = 1e-6,
    crop_bins: int = 5120,
    device: str | torch.device | None = "auto",
) -> tuple[TrackModel, Readout]:
    """A model (an ensemble when several ``models`` are given; ``head`` and its track table
    ``targets`` as :func:`~flashrna.zoo.load_track_model` takes them) and the :class:`Readout`
    of its tracks chosen by :func:`select_tracks` (``tracks``, ``assays``, ``description``), in
    ``units``, with ``transform`` (``log``: log(sum + ``pseudo``)), never counting the
    ``crop_bins`` output bins at either end."""
    identifiers = select_tracks(
        load_track_table(models, head=head, targets=targets),
        tracks=tracks,
        assays=assays,
        description=description,
    )
    model = load_track_model(
        models, head=head, targets=targets, identifiers=identifiers, device=device
    )
    readout = Readout(
        model.tracks,
        model.columns(identifiers),
        units=units,
        transform=transform,
        pseudo=pseudo,
        crop_bins=crop_bins,
    )
    log.info("attributed value: %d tracks of %s", len(identifiers), model.name)
    return model, readout


def readout_options(args: argparse.Namespace) -> dict:
    """The :func:`load_readout` keywords (but ``device``) of the :func:`add_value_arguments`
    options."""
    names = ["head", "targets", "tracks", "assays", "description"]
    names += ["units", "transform", "pseudo", "crop_bins"]
    return {name: getattr(args, name) for name in names}


def load_model_and_readout(args: argparse.Namespace) -> tuple[TrackModel, Readout]:
    """:func:`load_readout` of the :func:`add_value_arguments` options."""
    return load_readout(args.model or [], **readout_options(args), device=args.device)


def add_value_arguments(parser: argparse.ArgumentParser, length: int = 524_288) -> None:
    """Window, value and batching options, the tracks read and the model: what attribute and
    the gene benchmarks share."""
    group = parser.add_argument_group("attributed value")
    group.add_argument("--length", type=int, default=length, help="model input length in bp")
    group.add_argument(
        "--crop-bins",
        type=int,
        default=5120,
        help="output bins at each end that never count (Borzoi: 5120 of 16,384)",
    )
    group.add_argument("--units", choices=UNITS, default="counts", help="prediction units")
    group.add_argument(
        "--transform", choices=TRANSFORMS, default="log", help="log(sum + pseudo) or the sum"
    )
    group.add_argument("--pseudo", type=float, default=1e-6, help="pseudocount of the log")
    group.add_argument(
        "--no-rc", action="store_true", help="no reverse-complement averaging (faster)"
    )
    group.add_argument("--batch-size", type=int, default=1, help="inputs per batch")
    group.add_argument(
        "--autocast", action="store_true", help="bf16 autocast on CUDA (faster, less exact)"
    )
    add_track_arguments(parser)
    add_model_arguments(parser, precision=False)  # --autocast: gradients are exact by default


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------


def write_bigwig(
    path: Path, chrom: str, size: int, start: int, values: np.ndarray, *, bedgraph: bool = False
) -> None:
    """Per-base ``values`` from 0-based ``start`` as a bigWig (one contig of ``size`` bp; the
    part beyond the contig is dropped), and as a bedGraph beside it with ``bedgraph``."""
    import pyBigWig

    lo, hi = max(start, 0), min(start + len(values), size)
    if hi <= lo:
        raise FlashRNAError(f"{path.name}: the window lies outside {chrom} (0..{size})")
    kept = np.asarray(values[lo - start : hi - start], dtype=np.float64)
    with atomic_path(path) as tmp:
        handle = pyBigWig.open(str(tmp), "w")
        handle.addHeader([(chrom, int(size))])
        handle.addEntries(chrom, lo, values=kept, span=1, step=1)
        handle.close()
    if bedgraph:
        with atomic_file(path.with_suffix(".bedGraph")) as out:
            for position, value in zip(range(lo, hi), kept, strict=True):
                out.write(f"{chrom}\t{position}\t{position + 1}\t{value:.6g}\n")


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``arrays`` as HDF5 datasets (``.h5``) or a NumPy archive (``.npz``), atomically."""
    with atomic_path(path) as tmp:
        if path.suffix == ".npz":
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, **arrays)
            return
        import h5py

        with h5py.File(tmp, "w") as handle:
            for key, value in arrays.items():
                if value.dtype.kind == "U":
                    value = value.astype(bytes)
                handle.create_dataset(
                    key, data=value, compression="gzip" if value.size > 1024 else None
                )


def plot_attribution(
    path: Path,
    target: Target,
    window_start: int,
    sequence: np.ndarray,
    scores: np.ndarray,
    *,
    zoom_center: int,
    zoom_width: int = 200,
    label: str = "input x gradient",
) -> list[Path]:
    """The per-base ``scores`` over the window (the target's intervals shaded) and a zoom of
    ``zoom_width`` bp around ``zoom_center`` with one bar per base, coloured by base."""
    from matplotlib.figure import Figure

    from flashrna.genome import decode_sequence

    figure = Figure(figsize=(10, 5), layout="constrained")
    whole, zoom = figure.subplots(2, 1, height_ratios=(1, 1.3))
    positions = window_start + np.arange(len(scores))
    whole.plot(positions, scores, lw=0.4, color="0.2")
    for a, b in target.gene.exons:
        whole.axvspan(a, b, color="#1f77b4", alpha=0.15, lw=0)
    whole.set_title(f"{target.name} ({target.gene.chrom}, strand {target.gene.strand})", fontsize=9)
    whole.set_ylabel(label, fontsize=8)
    lo = max(zoom_center - zoom_width // 2, window_start)
    hi = min(lo + zoom_width, window_start + len(scores))
    whole.axvspan(lo, hi, color="#d62728", alpha=0.15, lw=0)
    text = decode_sequence(sequence[lo - window_start : hi - window_start])
    values = scores[lo - window_start : hi - window_start]
    zoom.bar(
        np.arange(lo, hi),
        values,
        width=1.0,
        color=[BASE_COLOURS.get(b, "0.6") for b in text],
    )
    if hi - lo <= 120:
        for x, (base, value) in enumerate(zip(text, values, strict=True), start=lo):
            zoom.text(x, value, base, ha="center", va="bottom" if value >= 0 else "top", fontsize=6)
    zoom.axhline(0, color="0.5", lw=0.5)
    zoom.set_xlabel(f"{target.gene.chrom} position (0-based)", fontsize=8)
    zoom.set_ylabel(label, fontsize=8)
    from flashrna.utils import save_figure

    return save_figure(figure, path)


# --------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------


def attribute(
    model: TrackModel,
    readout: Readout,
    genome: Genome,
    targets: Sequence[Target],
    out: str | Path,
    *,
    length: int = 524_288,
    methods: Sequence[str] = ("gradient",),
    ism_width: int = 200,
    ism_regions: dict[str, tuple[int, int]] | None = None,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    rc: bool = True,
    autocast: bool = False,
    array_format: str = "h5",
    bedgraph: bool = False,
    plot_width: int = 200,
    progress: bool = False,
) -> dict:
    """Attribute ``targets`` and write the outputs of the module docstring into ``out``.

    ``ism_regions`` maps a target's name to the genomic ``[start, end)`` it mutates (default:
    ``ism_width`` bp centred on the target). Returns the summary written to ``summary.json``."""
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise FlashRNAError(f"methods {list(methods)}: choose from {METHODS}")
    if length % BIN_SIZE:
        raise FlashRNAError(f"input length {length} is not a multiple of {BIN_SIZE}")
    out = Path(out)
    names = [re.sub(r"[^A-Za-z0-9_.-]", "_", t.name) for t in targets]
    if len(set(names)) != len(names):
        raise FlashRNAError("two targets share a name; give regions distinct names")
    starts = np.array([t.window_start(length) for t in targets], dtype=np.int64)
    sequences = np.stack(
        [genome.fetch(t.gene.chrom, s, s + length) for t, s in zip(targets, starts, strict=True)]
    )
    common = {"head": model.head, "device": device, "rc": rc, "autocast": autocast}
    arrays: dict[str, np.ndarray] = {
        "name": np.array(names),
        "chrom": np.array([t.gene.chrom for t in targets]),
        "strand": np.array([t.gene.strand for t in targets]),
        "window_start": starts,
        "center": np.array([t.center for t in targets], dtype=np.int64),
        "sequence": sequences,
    }
    if "gradient" in methods:
        gradients, values = input_gradients(
            model.module,
            sequences,
            targets,
            readout,
            batch_size=batch_size,
            progress=progress,
            **common,
        )
        arrays.update(gradient=gradients, score=gradient_scores(gradients, sequences))
    else:
        values = predicted_values(
            model.module, sequences, targets, readout, batch_size=batch_size, **common
        )
    arrays["value"] = values
    if "ism" in methods:
        regions = [
            (ism_regions or {}).get(t.name)
            or (t.center - ism_width // 2, t.center - ism_width // 2 + ism_width)
            for t in targets
        ]
        if len({hi - lo for lo, hi in regions}) > 1:
            raise FlashRNAError("ISM regions of different widths: give one width for all")
        effects = np.stack(
            [
                mutagenesis(
                    model.module,
                    sequence,
                    target,
                    lo - int(start),
                    hi - lo,
                    readout,
                    batch_size=max(batch_size, 8),
                    progress=progress,
                    **common,
                )
                for target, start, sequence, (lo, hi) in zip(
                    targets, starts, sequences, regions, strict=True
                )
            ]
        )
        arrays.update(
            ism_start=np.array([lo for lo, _ in regions], dtype=np.int64),
            ism=effects,
            ism_score=ism_scores(effects),
        )
    write_arrays(out / f"attributions.{array_format}", arrays)
    rows = []
    for k, (target, name) in enumerate(zip(targets, names, strict=True)):
        size = genome.lengths[target.gene.chrom]
        start = int(starts[k])
        if "score" in arrays:
            write_bigwig(out / f"{name}.bw", target.gene.chrom, size, start, arrays["score"][k],
                         bedgraph=bedgraph)  # fmt: skip
            plot_attribution(
                out / f"{name}.png",
                target,
                start,
                sequences[k],
                arrays["score"][k],
                zoom_center=target.center,
                zoom_width=plot_width,
            )
        if "ism" in arrays:
            ism_start = int(arrays["ism_start"][k])
            write_bigwig(out / f"{name}.ism.bw", target.gene.chrom, size, ism_start,
                         np.nan_to_num(arrays["ism_score"][k]), bedgraph=bedgraph)  # fmt: skip
        rows.append(
            {
                "name": name,
                "chrom": target.gene.chrom,
                "strand": target.gene.strand,
                "center": target.center,
                "window_start": start,
                "window_end": start + length,
                "value": float(values[k]),
            }
        )
    import pandas as pd

    with atomic_file(out / "targets.tsv") as handle:
        pd.DataFrame(rows).to_csv(handle, sep="\t", index=False, float_format="%.6g")
    summary = {
        "model": model.name,
        "head": model.head,
        "tracks": list(readout.tracks.identifier[readout.columns]),
        "units": readout.units,
        "transform": readout.transform,
        "pseudo": readout.pseudo,
        "crop_bins": readout.crop_bins,
        "length": length,
        "methods": list(methods),
        "reverse_complement": rc,
        "targets": rows,
    }
    write_json(out / "summary.json", summary)
    return summary


def register_attribute(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Input x gradient and in-silico mutagenesis of a gene's exon-summed prediction or of a "
        "track window, for any model; per-base bigWig/bedGraph, HDF5/NumPy arrays and a plot. "
        "See flashrna.attribute for the definitions."
    )
    what = parser.add_argument_group("targets (at least one)")
    what.add_argument("--genes", nargs="+", default=[], help="gene ids or names (needs --gtf)")
    what.add_argument(
        "--regions", nargs="+", default=[], help="track windows chrom:start-end (1-based)"
    )
    what.add_argument("--bed", help="track windows from a BED file (chrom start end [name])")
    parser.add_argument("--fasta", required=True, help="genome FASTA (indexed; bgzip or plain)")
    parser.add_argument("--gtf", help="gene annotation GTF (for --genes)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--methods", nargs="+", choices=METHODS, default=["gradient"], help="what to compute"
    )
    parser.add_argument("--ism-width", type=int, default=200, help="ISM bp around the target")
    parser.add_argument("--ism-region", help="ISM region chrom:start-end instead (one target only)")
    parser.add_argument(
        "--array-format", choices=("h5", "npz"), default="h5", help="HDF5 or NumPy arrays"
    )
    parser.add_argument("--bedgraph", action="store_true", help="also write bedGraph files")
    parser.add_argument("--plot-width", type=int, default=200, help="bp in the plot's zoom")
    add_value_arguments(parser)
    parser.set_defaults(run=_run_attribute)


def _run_attribute(args: argparse.Namespace) -> None:
    if not (args.genes or args.regions or args.bed):
        raise FlashRNAError("give --genes, --regions or --bed")
    targets: list[Target] = []
    if args.genes:
        if not args.gtf:
            raise FlashRNAError("--genes needs --gtf")
        annotation = Annotation.read_gtf(args.gtf)
        targets += [gene_target(find_gene(annotation, key)) for key in args.genes]
    targets += [region_target(*parse_region(text)) for text in args.regions]
    if args.bed:
        targets += read_bed_targets(args.bed)
    ism_regions = None
    if args.ism_region:
        if len(targets) != 1:
            raise FlashRNAError("--ism-region needs exactly one target")
        _, lo, hi = parse_region(args.ism_region)
        ism_regions = {targets[0].name: (lo, hi)}
    model, readout = load_model_and_readout(args)
    summary = attribute(
        model,
        readout,
        Genome(args.fasta),
        targets,
        args.out,
        length=args.length,
        methods=args.methods,
        ism_width=args.ism_width,
        ism_regions=ism_regions,
        batch_size=args.batch_size,
        device=args.device,
        rc=not args.no_rc,
        autocast=args.autocast,
        array_format=args.array_format,
        bedgraph=args.bedgraph,
        plot_width=args.plot_width,
        progress=args.progress,
    )
    log.info("attributed %d target(s) into %s", len(summary["targets"]), args.out)
