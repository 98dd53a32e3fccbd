"""``flashrna plot-locus``: predicted tracks around a gene, a region or a variant, with the GTF's
exons beneath; PNG and PDF.

Where to look (:func:`locate`):

- ``--region chr1:1,000-2,000``: 1-based and inclusive, as a genome browser shows it;
- ``--gene NAME_OR_ID`` (with ``--gtf``): the span of the gene's exons, ± ``--flank`` bp;
- ``--variant chr1:13550:G:A`` (1-based position, as in a VCF; or a GTEx id
  ``chr1_13550_G_A_b38``): REF and ALT are both predicted; with ``--gene`` the view is the
  gene's, widened to the variant ± ``--flank`` bp, with ``--region`` the region's, alone the
  model's whole output.

The model input of ``--length`` bp (default: the model's own) is centred on the variant (its first
base at index L // 2 - 1, as ``score-variants`` places it, REF checked against the FASTA) or else on
the middle of the region. The model predicts the ``L / 32 - 2 crop_bins`` bins of 32 bp in the
middle of its input; a region wider than that is cut to it (with a warning).

The figure: a row per track (``--tracks``/``--assays``, at most :data:`MAX_TRACKS`) and a column per
model (the ensemble of the ``--model`` values, as in every step; with ``--side-by-side`` a column
for each ``--model``), rows sharing their y axis; beneath them the genes with an exon in view (exons
as boxes on a line spanning the gene, chevrons for its strand). Each panel shows the predicted bins
(REF and ALT for a variant, with a dotted line at the variant) in front of the observed coverage
(grey) when given:

- ``--observed-shards DIR ...``: the targets of the shard example whose target window overlaps the
  view most, matched to the plotted tracks by identifier;
- ``--observed-bigwig TRACK=FILE ...``: per-bp coverage (the bigWigs ``make-dataset`` reads),
  pooled to the predicted bins with the track's ``sum_stat``.

Values (``--space``): ``counts`` (default) puts the model's output through the inverse transform
of its track table (:func:`flashrna.tracks.unsquash`: coverage per 32-bp bin for ``sum`` tracks,
mean per-bp coverage for ``mean`` tracks, without the track's scale), the shard targets likewise,
and bigWig coverage as pooled; ``squashed`` shows the model's output as is, shard targets as
stored and bigWig coverage squashed as the targets are. Every curve of a panel is in one space.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flashrna.annotation import Annotation, Gene
from flashrna.genome import Genome
from flashrna.model import BIN_SIZE, predict
from flashrna.tracks import pool_coverage, squash, unsquash
from flashrna.utils import FlashRNAError, resolve_device, save_figure
from flashrna.variants import Variant, parse_variant_id, trim_version
from flashrna.zoo import TrackModel, add_model_arguments, load_track_model

log = logging.getLogger(__name__)

SPACES = ("counts", "squashed")
MAX_TRACKS = 12
COLOURS = {"predicted": "#1f77b4", "REF": "#1f77b4", "ALT": "#d62728", "observed": "0.8"}
_REGION = re.compile(r"(?P<chrom>[^:\s]+):(?P<start>[\d,]+)-(?P<end>[\d,]+)")


# --------------------------------------------------------------------------------------------
# Where to look
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Locus:
    """The view ``chrom:[start, end)`` (0-based; ``None``: the model's whole output around the
    variant), its title, and the variant whose REF and ALT are predicted, if any."""

    chrom: str
    start: int | None
    end: int | None
    title: str
    variant: Variant | None = None


def parse_region(text: str) -> tuple[str, int, int]:
    """``chr1:1,000-2,000`` (1-based, inclusive) -> ``("chr1", 999, 2000)`` (0-based,
    half-open)."""
    match = _REGION.fullmatch(text.strip())
    if match is None:
        raise FlashRNAError(
            f"region '{text}': expected CHROM:START-END, 1-based and inclusive (chr1:1,000-2,000)"
        )
    start, end = int(match["start"].replace(",", "")) - 1, int(match["end"].replace(",", ""))
    if start < 0 or end <= start:
        raise FlashRNAError(f"region '{text}': START must be at least 1 and END after it")
    return match["chrom"], start, end


def parse_variant(text: str) -> Variant:
    """``chr1:13550:G:A`` (1-based position) or a GTEx id ``chr1_13550_G_A_b38`` -> a
    :class:`~flashrna.variants.Variant`."""
    parts = text.strip().split(":")
    if len(parts) == 4 and parts[1].isdigit():
        chrom, pos, ref, alt = parts
        return Variant(chrom, int(pos), ref.upper(), alt.upper(), text)
    variant = parse_variant_id(text.strip())
    if variant is None:
        raise FlashRNAError(
            f"variant '{text}': expected CHROM:POS:REF:ALT (1-based POS, as in a VCF) or a GTEx "
            f"id such as chr1_13550_G_A_b38"
        )
    return variant


def find_gene(annotation: Annotation, name: str) -> Gene:
    """The gene of ``annotation`` whose gene_id (with or without its version) or gene_name is
    ``name``; an error when none is, or when a name is shared."""
    found = [
        gene
        for gene in annotation.genes.values()
        if name in (gene.gene_id, trim_version(gene.gene_id), gene.name)
    ]
    if not found:
        raise FlashRNAError(f"{annotation.source}: no gene with the name or id '{name}'")
    if len(found) > 1:
        ids = ", ".join(gene.gene_id for gene in found[:5])
        raise FlashRNAError(f"{annotation.source}: '{name}' names {len(found)} genes ({ids})")
    return found[0]


def locate(
    *,
    region: str | None = None,
    gene: str | None = None,
    variant: str | None = None,
    annotation: Annotation | None = None,
    flank: int = 1000,
) -> Locus:
    """The :class:`Locus` of a ``region`` or a ``gene`` of ``annotation`` (its exons' span ±
    ``flank`` bp, widened to a ``variant`` ± ``flank``), and/or a ``variant`` (module docstring
    for the formats)."""
    if region and gene:
        raise FlashRNAError("give --region or --gene, not both")
    parsed = parse_variant(variant) if variant else None
    if gene:
        if annotation is None:
            raise FlashRNAError("--gene needs --gtf (the gene annotation)")
        found = find_gene(annotation, gene)
        chrom, start, end = found.chrom, max(found.start - flank, 0), found.end + flank
        title = f"{found.name} ({found.gene_id}, {found.strand} strand)"
    elif region:
        chrom, start, end = parse_region(region)
        title = region
    elif parsed is not None:
        chrom, start, end, title = parsed.chrom, None, None, ""
    else:
        raise FlashRNAError("say where to look: --region, --gene or --variant")
    if parsed is not None:
        if parsed.chrom != chrom:
            raise FlashRNAError(f"variant {variant} is on {parsed.chrom}, not on {chrom}")
        if gene:  # the view shows the variant too
            start, end = min(start, max(parsed.pos - 1 - flank, 0)), max(end, parsed.pos + flank)
        elif region and not start < parsed.pos <= end:
            log.warning("variant %s lies outside the region %s", variant, region)
        change = f"variant {parsed.chrom}:{parsed.pos:,} {parsed.ref}>{parsed.alt}"
        title = f"{title}; {change}" if title else change
    return Locus(chrom, start, end, title, parsed)


# --------------------------------------------------------------------------------------------
# Predictions and observations
# --------------------------------------------------------------------------------------------


@dataclass
class LocusTracks:
    """What a locus plot shows.

    ``edges``: int64 (bins + 1,) genomic edges of the predicted bins that overlap the view;
    ``predictions``: per model label, float32 (alleles, bins, tracks) in ``space`` — alleles
    :attr:`alleles`, tracks ``identifiers`` in order; ``observed``: per track identifier, its
    bin edges (k + 1,) and values (k,); ``genes``: the genes with an exon in view."""

    locus: Locus
    identifiers: list[str]
    descriptions: list[str]
    space: str
    edges: np.ndarray
    predictions: dict[str, np.ndarray]
    observed: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    genes: list[Gene] = field(default_factory=list)

    @property
    def alleles(self) -> list[str]:
        return ["REF", "ALT"] if self.locus.variant else ["predicted"]


def model_label(model: TrackModel) -> str:
    """A short column title: each member's directory name (its parent's for ``.../model``)."""
    names = []
    for member in model.name.split("+"):
        path = Path(member)
        names.append(path.parent.name if path.name == "model" and path.parent.name else path.name)
    return "+".join(names)


def predict_locus(
    models: Sequence[TrackModel],
    genome: Genome,
    locus: Locus,
    *,
    identifiers: Sequence[str] | None = None,
    assays: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    length: int | None = None,
    crop_bins: int | None = None,
    allow_length: bool = False,
    space: str = "counts",
    device: str | torch.device | None = None,
) -> LocusTracks:
    """Predict ``locus`` with each model (forward + reverse-complement averaged) on an input of
    ``length`` bp with ``crop_bins`` (default: the first model's own; a length a model was not built
    for is refused unless ``allow_length``; module docstring), and keep the bins in view of the
    tracks ``identifiers`` and ``assays`` (of the first model's table; every model must have them),
    in ``space``. ``labels``: a column title per model (default :func:`model_label`)."""
    if not models:
        raise FlashRNAError("give a model to plot (--model)")
    if space not in SPACES:
        raise FlashRNAError(f"space '{space}': one of {', '.join(SPACES)}")
    length, crop_bins = models[0].geometry(length, crop_bins, allow_length)
    for model in models[1:]:
        model.geometry(length, crop_bins, allow_length)
    if length % BIN_SIZE or not 0 <= 2 * crop_bins < length // BIN_SIZE:
        raise FlashRNAError(
            f"input length {length} bp with {crop_bins} bins cropped at each end leaves no "
            f"output bins (the length must be a multiple of {BIN_SIZE})"
        )
    labels = list(labels) if labels else [model_label(m) for m in models]
    if len(labels) != len(models) or len(set(labels)) != len(labels):
        raise FlashRNAError(f"labels {labels}: one distinct label per model ({len(models)})")
    tracks = models[0].tracks
    if identifiers is None and assays is None:
        some = ", ".join(tracks.identifier[:5])
        raise FlashRNAError(
            f"choose the tracks to plot with --tracks or --assays ({models[0].name} has "
            f"{len(tracks)} tracks: {some}, ...)"
        )
    rows = tracks.find(assays, identifiers)
    if len(rows) > MAX_TRACKS:
        raise FlashRNAError(
            f"{len(rows)} tracks chosen; a locus plot shows at most {MAX_TRACKS} "
            f"(narrow --tracks or --assays)"
        )
    names = [str(i) for i in tracks.identifier[rows]]

    variant = locus.variant
    if variant is not None:
        pair = genome.variant_windows(variant.chrom, variant.pos, variant.ref, variant.alt, length)
        windows = np.stack([pair.reference, pair.alternative])
        input_start = variant.pos - 1 - (length // 2 - 1)  # score-variants' placement
    else:
        input_start = (locus.start + locus.end) // 2 - length // 2
        windows = genome.fetch(locus.chrom, input_start, input_start + length)[None]
    output_start = input_start + BIN_SIZE * crop_bins
    output_end = input_start + length - BIN_SIZE * crop_bins
    if locus.start is None:
        start, end = output_start, output_end
    else:
        start, end = max(locus.start, output_start), min(locus.end, output_end)
        if (start, end) != (locus.start, locus.end):
            log.warning(
                "%s:%d-%d reaches beyond the model's output (%d bp around the centre): showing "
                "%s:%d-%d",
                locus.chrom,
                locus.start + 1,
                locus.end,
                output_end - output_start,
                locus.chrom,
                start + 1,
                end,
            )
    first = (start - output_start) // BIN_SIZE
    last = -((output_start - end) // BIN_SIZE)  # ceil division
    edges = output_start + BIN_SIZE * np.arange(first, last + 1)

    predictions = {}
    for label, model in zip(labels, models, strict=True):
        columns = model.columns(names)
        output = predict(
            model.module,
            windows,
            model.head,
            batch_size=len(windows),
            device=resolve_device(device),
            crop_bins=crop_bins,
            precision=model.precision,
        )[:, first:last][..., torch.as_tensor(columns)].numpy()
        if space == "counts":
            output = unsquash(
                output,
                model.tracks.clip_soft[columns],
                model.tracks.scale[columns],
                model.tracks.sum_stat[columns],
            )
        predictions[label] = output
    return LocusTracks(
        locus=replace(locus, start=start, end=end),
        identifiers=names,
        descriptions=[str(d) for d in tracks.frame["description"].iloc[rows]],
        space=space,
        edges=edges,
        predictions=predictions,
    )


def observed_from_shards(
    paths: Sequence[str | os.PathLike], locus: Locus, identifiers: Sequence[str], space: str
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Observed coverage of ``identifiers`` (those in the shards' table) in the bins of the
    shard example whose target window overlaps ``locus`` most that overlap it: per identifier,
    bin edges (k + 1,) and values (k,) in ``space``."""
    from flashrna.data import ShardSet

    shards = ShardSet(paths)
    overlap = np.minimum(shards.end, locus.end) - np.maximum(shards.start, locus.start)
    overlap[shards.chrom != locus.chrom] = 0
    if len(overlap) == 0 or overlap.max() <= 0:
        raise FlashRNAError(
            f"no example of the shards {', '.join(map(str, paths))} overlaps "
            f"{locus.chrom}:{locus.start + 1}-{locus.end}"
        )
    index = int(np.argmax(overlap))
    position = {ident: k for k, ident in enumerate(shards.tracks.identifier)}
    present = [ident for ident in identifiers if ident in position]
    if not present:
        raise FlashRNAError(f"the shards' track table has none of {', '.join(identifiers)}")
    missing = [ident for ident in identifiers if ident not in position]
    if missing:
        log.warning("the shards have no track %s: nothing observed there", ", ".join(missing))
    rows = np.array([position[ident] for ident in present])
    values = shards.targets(index, rows).astype(np.float32)  # (bins, tracks), squashed
    if space == "counts":
        table = shards.tracks
        values = unsquash(values, table.clip_soft[rows], table.scale[rows], table.sum_stat[rows])
    _, start, _ = shards.window(index)
    edges = start + shards.pool_width * np.arange(values.shape[0] + 1)
    keep = (edges[1:] > locus.start) & (edges[:-1] < locus.end)  # the bins in view
    edges = edges[np.flatnonzero(keep).min() : np.flatnonzero(keep).max() + 2]
    return {ident: (edges, values[keep, k]) for k, ident in enumerate(present)}


def observed_from_bigwigs(
    files: Mapping[str, str | os.PathLike], data: LocusTracks, model: TrackModel
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Observed per-bp coverage of bigWig ``files`` (track identifier -> path) pooled to the
    predicted bins of ``data`` with the sum_stat of ``model``'s table, squashed in ``squashed``
    space: per identifier, the bin edges and values."""
    import pyBigWig

    from flashrna.data.convert import bigwig_coverage

    observed = {}
    for ident, path in files.items():
        if ident not in data.identifiers:
            raise FlashRNAError(
                f"--observed-bigwig {ident}={path}: {ident} is not a plotted track "
                f"({', '.join(data.identifiers)})"
            )
        if not Path(path).is_file():
            raise FlashRNAError(f"{path}: bigWig file not found")
        (row,) = model.columns([ident])
        bigwig = pyBigWig.open(str(path))
        try:
            coverage = bigwig_coverage(
                bigwig, Path(path), data.locus.chrom, int(data.edges[0]), int(data.edges[-1])
            )
        finally:
            bigwig.close()
        table = model.tracks
        values = pool_coverage(coverage[:, None], table.sum_stat[[row]], BIN_SIZE)
        if data.space == "squashed":
            values = squash(
                values,
                table.clip[[row]],
                table.clip_soft[[row]],
                table.scale[[row]],
                table.sum_stat[[row]],
            ).astype(np.float32)
        observed[ident] = (data.edges, values[:, 0])
    return observed


# --------------------------------------------------------------------------------------------
# The figure
# --------------------------------------------------------------------------------------------

SPACE_LABELS = {"counts": "coverage", "squashed": "squashed"}


def draw_locus(data: LocusTracks) -> Any:
    """The locus figure of ``data`` (module docstring): a matplotlib Figure whose axes are
    ``figure.axes[row * models + column]``, rows the tracks then the genes."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    labels, tracks = list(data.predictions), len(data.identifiers)
    figure = Figure(figsize=(1.8 + 4.4 * len(labels), 1.4 + 1.3 * tracks), layout="constrained")
    axes = figure.subplots(
        tracks + 1,
        len(labels),
        sharex=True,
        sharey="row",
        squeeze=False,
        gridspec_kw={"height_ratios": [1.0] * tracks + [0.9]},
    )
    locus, variant = data.locus, data.locus.variant
    for column, label in enumerate(labels):
        for row, ident in enumerate(data.identifiers):
            ax = axes[row, column]
            if ident in data.observed:
                edges, values = data.observed[ident]
                ax.stairs(values, edges, fill=True, color=COLOURS["observed"], label="observed")
            for allele, values in zip(data.alleles, data.predictions[label], strict=True):
                style = "--" if allele == "ALT" else "-"  # REF stays visible where they agree
                ax.stairs(
                    values[:, row],
                    data.edges,
                    color=COLOURS[allele],
                    lw=1.1,
                    ls=style,
                    label=allele,
                )
            if variant is not None:
                ax.axvline(variant.pos - 0.5, color="0.25", ls=":", lw=0.9, label="variant")
            ax.text(
                0.01,
                0.98,
                data.descriptions[row],
                transform=ax.transAxes,
                va="top",
                fontsize=7,
                color="0.35",
                bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0, "pad": 1},
            )
            ax.spines[["top", "right"]].set_visible(False)
            ax.tick_params(labelsize=7)
            if column == 0:
                ax.set_ylabel(f"{ident}\n{SPACE_LABELS[data.space]}", fontsize=8)
        axes[0, column].set_title(label, fontsize=10)
        _draw_genes(axes[-1, column], data.genes, locus)
        axes[-1, column].set_xlabel(f"{locus.chrom} position (bp)", fontsize=8)
    axes[0, -1].legend(loc="upper right", fontsize=7, frameon=False)
    axes[-1, 0].set_xlim(locus.start, locus.end)
    axes[-1, 0].xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    space = "counts (inverse-transformed)" if data.space == "counts" else "squashed"
    figure.suptitle(
        f"{locus.title}\n{locus.chrom}:{locus.start + 1:,}-{locus.end:,}, 32-bp bins, {space}",
        fontsize=10,
    )
    return figure


def _draw_genes(ax: Any, genes: Sequence[Gene], locus: Locus) -> None:
    """Genes as lines with exon boxes and strand chevrons, packed into lanes."""
    from matplotlib.patches import Rectangle

    gap = 0.02 * (locus.end - locus.start)  # room for a name between genes of one lane
    lane_ends: list[float] = []
    for gene in sorted(genes, key=lambda g: g.start):
        lane = next((k for k, e in enumerate(lane_ends) if gene.start > e + gap), len(lane_ends))
        if lane == len(lane_ends):
            lane_ends.append(gene.end)
        lane_ends[lane] = gene.end
        y = -lane
        ax.plot([gene.start, gene.end], [y, y], color="0.25", lw=1)
        for start, end in gene.exons:
            ax.add_patch(Rectangle((start, y - 0.25), end - start, 0.5, color="0.25", lw=0))
        chevrons = np.linspace(gene.start, gene.end, 7)[1:-1]
        marker = ">" if gene.strand == "+" else "<"
        ax.plot(chevrons, [y] * len(chevrons), ls="none", marker=marker, ms=3, color="0.25")
        name_at = min(max(gene.start, locus.start), locus.end)
        ax.text(name_at, y + 0.32, f"{gene.name} ({gene.strand})", fontsize=7, va="bottom")
    lanes = max(len(lane_ends), 1)
    ax.set_ylim(-lanes + 0.4, 0.9)
    ax.set_yticks([])
    ax.tick_params(labelsize=7)
    ax.spines[["top", "right", "left"]].set_visible(False)
    if not genes:
        ax.text(0.5, 0.5, "no exon in view", transform=ax.transAxes, ha="center", fontsize=8)


# --------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------


def plot_locus(
    models: Sequence[TrackModel],
    fasta: str | os.PathLike,
    out: str | os.PathLike,
    *,
    region: str | None = None,
    gene: str | None = None,
    variant: str | None = None,
    gtf: str | os.PathLike | None = None,
    flank: int = 1000,
    identifiers: Sequence[str] | None = None,
    assays: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    length: int | None = None,
    crop_bins: int | None = None,
    allow_length: bool = False,
    space: str = "counts",
    observed_shards: Sequence[str | os.PathLike] = (),
    observed_bigwigs: Mapping[str, str | os.PathLike] | None = None,
    device: str | torch.device | None = None,
) -> list[Path]:
    """Plot a locus (module docstring) as ``out`` with the suffix ``.png`` and as PDF beside
    it; returns both paths. The options are those of :func:`locate`, :func:`predict_locus`,
    :func:`observed_from_shards` and :func:`observed_from_bigwigs`."""
    annotation = Annotation.read_gtf(gtf) if gtf else None
    locus = locate(region=region, gene=gene, variant=variant, annotation=annotation, flank=flank)
    data = predict_locus(
        models,
        Genome(fasta),
        locus,
        identifiers=identifiers,
        assays=assays,
        labels=labels,
        length=length,
        crop_bins=crop_bins,
        allow_length=allow_length,
        space=space,
        device=device,
    )
    if observed_shards:
        data.observed |= observed_from_shards(observed_shards, data.locus, data.identifiers, space)
    if observed_bigwigs:
        data.observed |= observed_from_bigwigs(observed_bigwigs, data, models[0])
    if annotation is not None:
        data.genes = annotation.overlapping(data.locus.chrom, data.locus.start, data.locus.end)
    return save_figure(draw_locus(data), out)


def _bigwig_argument(values: Sequence[str] | None) -> dict[str, str]:
    files = {}
    for value in values or []:
        ident, sep, path = value.rpartition("=")
        if not sep or not ident or not path:
            raise FlashRNAError(f"--observed-bigwig {value}: expected TRACK=FILE")
        files[ident] = path
    return files


def register_plot_locus(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Plot predicted tracks around a region, a gene or a variant (REF and ALT), a column per "
        "model and a row per track, with the GTF's exons beneath and observed coverage from "
        "shards or bigWigs behind the predictions; writes OUT.png and OUT.pdf."
    )
    where = parser.add_argument_group("where")
    where.add_argument("--region", help="CHROM:START-END, 1-based and inclusive (chr1:1,000-2,000)")
    where.add_argument("--gene", help="a gene_name or gene_id of --gtf: its exons' span ± --flank")
    where.add_argument(
        "--variant",
        help="CHROM:POS:REF:ALT (1-based POS, as in a VCF) or a GTEx id (chr1_13550_G_A_b38): "
        "REF and ALT predicted on an input centred on it",
    )
    where.add_argument("--flank", type=int, default=1000, help="bp shown each side of --gene")
    parser.add_argument("--fasta", required=True, help="genome FASTA (indexed; bgzip or plain)")
    parser.add_argument("--gtf", help="genes to draw beneath the tracks (exon lines); for --gene")
    add_model_arguments(parser)
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="a column for each --model instead of one for their ensemble",
    )
    parser.add_argument("--labels", nargs="+", help="column titles, one per column in order")
    tracks = parser.add_argument_group("tracks")
    tracks.add_argument("--tracks", nargs="+", metavar="ID", help="track identifiers to plot")
    tracks.add_argument("--assays", nargs="+", help="plot the tracks of these assays")
    tracks.add_argument(
        "--space",
        choices=SPACES,
        default="counts",
        help="counts: the model's output inverse-transformed through its track table "
        "(coverage); squashed: the model's output as is",
    )
    tracks.add_argument(
        "--length", type=int, help="model input length in bp (default: the model's own)"
    )
    tracks.add_argument(
        "--crop-bins", type=int, help="output bins dropped at each end (default: the model's own)"
    )
    observed = parser.add_argument_group("observed coverage")
    observed.add_argument(
        "--observed-shards", nargs="+", metavar="DIR", help="shards whose targets to draw"
    )
    observed.add_argument(
        "--observed-bigwig",
        nargs="+",
        metavar="TRACK=FILE",
        help="per-bp coverage bigWig of a plotted track",
    )
    parser.add_argument("--out", required=True, help="the figure: OUT.png, and OUT.pdf beside it")
    parser.set_defaults(run=_run_plot_locus)


def _run_plot_locus(args: argparse.Namespace) -> None:
    columns = [[m] for m in args.model] if args.side_by_side else [args.model]
    models = [
        load_track_model(
            members,
            head=args.head,
            targets=args.targets,
            identifiers=args.tracks,
            device=args.device,
            precision=args.precision,
        )
        for members in columns
    ]
    plot_locus(
        models,
        args.fasta,
        args.out,
        region=args.region,
        gene=args.gene,
        variant=args.variant,
        gtf=args.gtf,
        flank=args.flank,
        identifiers=args.tracks,
        assays=args.assays,
        labels=args.labels,
        length=args.length,
        crop_bins=args.crop_bins,
        allow_length=args.allow_length,
        space=args.space,
        observed_shards=args.observed_shards or (),
        observed_bigwigs=_bigwig_argument(args.observed_bigwig),
        device=args.device,
    )
