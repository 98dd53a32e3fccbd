"""``flashrna score-variants``: SED and logSED of variants on the genes around them (DESIGN §6).

For each variant of a VCF:

1. reference and alternative windows of the model's input length L, the variant's base at index
   L // 2, N-padded beyond the contig ends, REF checked against the genome
   (:meth:`flashrna.genome.Genome.variant_windows`);
2. predictions of both, forward + reverse-complement averaged (:func:`flashrna.model.predict`; a
   batch holds the windows of several variants), ``crop_bins`` dropped at each end, inverse-
   transformed with the head's track table (:func:`flashrna.tracks.unsquash`);
3. the genes with an exon in the output window, which starts at ``pos - 1 - L // 2 + 32 crop_bins``
   (0-based) and spans ``L / 32 - 2 crop_bins`` bins, and for each gene the bins overlapping its
   exons, union over transcripts (:meth:`flashrna.annotation.Gene.exon_bins`);
4. per gene and track: ``REF = Σ ref``, ``ALT = Σ alt`` over those bins, ``SED = ALT - REF`` and
   ``logSED = log2(ALT + 1) - log2(REF + 1)``.

Units (``--units``): ``counts`` (default) sums the inverse transform's output, i.e. pooled coverage
per 32-bp bin without the track's ``scale`` (read counts x read length for ``sum`` tracks), so the
pseudocount 1 is one unit of coverage. ``scaled`` multiplies by ``scale`` first, as Borzoi's SED
code does; its pseudocount then acts in scale x coverage units (GTEx tracks: scale 0.01).

Strands: a stranded track (``strand_pair`` not itself, identifier ending in ``+`` or ``-``) scores
only genes on its own strand; for genes on the other strand its scores are NaN. (Borzoi keeps the
gene-strand track of each pair in the same way.)

Variants are never an error: malformed VCF lines, contigs missing from the FASTA, variants that are
not single-nucleotide (indels and MNVs: the windows would shift the bins after the variant),
alleles other than A/C/G/T, REF mismatches, and variants with no gene in the window are skipped,
counted, and listed.

Variants come from a VCF (``--vcf``: ``CHROM POS ID REF ALT``, one variant per ALT allele) or from
fine-mapped eQTL tables (``--eqtls``: the distinct ``variant`` ids such as ``chr1_13550_G_A_b38`` of
the rows with PIP above ``--min-pip``, read as :func:`read_eqtls` does).

Outputs in ``--out``: ``scores.tsv`` (and ``scores.parquet`` when pyarrow is installed), one row per
variant and gene: ``variant chrom pos ref alt gene_id gene_name gene_strand exon_bins`` then
``<stat>:<track identifier>`` for each stat of ``--stats`` and each track; ``tracks.tsv`` (the
scored tracks: ``identifier assay description strand scale``); ``skipped.tsv`` (``line variant
chrom pos ref alt reason detail``); ``summary.json`` (counts per outcome, variants/s, units,
settings).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from flashrna.annotation import Annotation, Gene
from flashrna.genome import Genome, ReferenceMismatchError
from flashrna.model import BIN_SIZE, predict
from flashrna.tracks import TrackTable, unsquash
from flashrna.utils import (
    FlashRNAError,
    atomic_file,
    atomic_path,
    open_text,
    resolve_device,
    tab_separated_lines,
    write_json,
)
from flashrna.zoo import TrackModel, add_model_arguments, track_model_from_args

log = logging.getLogger(__name__)

STATS = ("SED", "logSED", "REF", "ALT")
UNITS = ("counts", "scaled")
META_COLUMNS = (
    "variant",
    "chrom",
    "pos",
    "ref",
    "alt",
    "gene_id",
    "gene_name",
    "gene_strand",
    "exon_bins",
)
_BASES = re.compile("[ACGT]+")
SKIP_COLUMNS = ("line", "variant", "chrom", "pos", "ref", "alt", "reason", "detail")
SKIP_REASONS = (
    "malformed",
    "contig_missing",
    "not_snv",
    "unsupported_allele",
    "ref_mismatch",
    "no_genes",
)


@dataclass(frozen=True)
class Variant:
    """A biallelic variant: 1-based ``pos``, alleles as given, ``id`` (``chrom_pos_ref_alt``
    when the VCF has none), ``line`` in its source file (0 when not from a file)."""

    chrom: str
    pos: int
    ref: str
    alt: str
    id: str
    line: int = 0


@dataclass(frozen=True)
class Skipped:
    """A variant (or unreadable line) that was not scored, and why."""

    reason: str
    detail: str
    variant: Variant | None = None
    line: int = 0

    def row(self) -> list:
        v = self.variant
        fields = [v.id, v.chrom, v.pos, v.ref, v.alt] if v else ["", "", "", "", ""]
        return [v.line if v else self.line, *fields, self.reason, self.detail]


def read_vcf(path: str | Path) -> Iterator[Variant | Skipped]:
    """Variants of a VCF (plain or gzip): ``CHROM POS ID REF ALT`` of each data line, one
    :class:`Variant` per ALT allele; an unreadable line becomes a :class:`Skipped`."""
    path = Path(path)
    try:
        with open_text(path) as handle:
            for line_no, fields in tab_separated_lines(handle):
                if len(fields) < 5 or not fields[1].isdigit():
                    yield Skipped(
                        "malformed",
                        f"{path.name}:{line_no}: need CHROM, integer POS, ID, REF, ALT",
                        line=line_no,
                    )
                    continue
                chrom, pos, vid, ref = fields[0], int(fields[1]), fields[2], fields[3].upper()
                for alt in fields[4].upper().split(","):
                    name = vid if vid not in ("", ".") else f"{chrom}_{pos}_{ref}_{alt}"
                    yield Variant(chrom, pos, ref, alt, name, line_no)
    except FileNotFoundError:
        raise FlashRNAError(f"{path}: VCF file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise FlashRNAError(f"{path}: unreadable VCF ({err})") from None


def parse_variant_id(text: str) -> Variant | None:
    """``chr1_13550_G_A_b38`` (GTEx) or ``chr1_13550_G_A`` -> a Variant; None if malformed."""
    parts = text.split("_")
    if parts and parts[-1].startswith("b3"):
        parts = parts[:-1]
    if len(parts) < 4 or not parts[-3].isdigit():
        return None
    chrom = "_".join(parts[:-3])  # contig names may contain '_'
    return Variant(chrom, int(parts[-3]), parts[-2].upper(), parts[-1].upper(), text)


# --------------------------------------------------------------------------------------------
# Fine-mapped eQTL tables
# --------------------------------------------------------------------------------------------

EQTL_COLUMNS = ("variant", "gene", "pip", "beta_posterior", "allele1")


def trim_version(gene_id: str) -> str:
    """``ENSG00000227232.5`` -> ``ENSG00000227232``."""
    return gene_id.rsplit(".", 1)[0] if "." in gene_id else gene_id


def read_eqtls(paths: Sequence[str | Path], min_pip: float = 0.9) -> pd.DataFrame:
    """Fine-mapped eQTL tables (format: :mod:`flashrna.evaluate.eqtl`) -> columns
    ``tissue variant gene pip beta_posterior allele1`` with ``pip > min_pip``; ``gene`` without
    its version."""
    frames = []
    for path in map(Path, paths):
        compression = "gzip" if path.suffix in (".gz", ".bgz") else None
        try:
            frame = pd.read_csv(path, sep="\t", compression=compression, low_memory=False)
        except FileNotFoundError:
            raise FlashRNAError(f"{path}: eQTL table not found") from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as err:
            raise FlashRNAError(f"{path}: not a tab-separated eQTL table ({err})") from None
        missing = [c for c in EQTL_COLUMNS if c not in frame.columns]
        if missing:
            raise FlashRNAError(
                f"{path}: missing column(s) {', '.join(missing)} (need {', '.join(EQTL_COLUMNS)})"
            )
        if "method" in frame.columns:
            frame = frame[frame["method"].astype(str).str.upper() == "SUSIE"]
        if "tissue" not in frame.columns:
            frame = frame.assign(tissue=path.name.split(".")[0])
        frame = frame[["tissue", *EQTL_COLUMNS]].copy()
        for column in ("pip", "beta_posterior"):
            values = pd.to_numeric(frame[column], errors="coerce")
            if values.isna().any():
                row = int(np.flatnonzero(values.isna())[0])
                raise FlashRNAError(f"{path}: data row {row + 1}: {column} is not a number")
            frame[column] = values
        frames.append(frame)
    eqtls = pd.concat(frames, ignore_index=True)
    eqtls = eqtls[eqtls["pip"] > min_pip].reset_index(drop=True)
    eqtls["gene"] = eqtls["gene"].astype(str).map(trim_version)
    eqtls["allele1"] = eqtls["allele1"].astype(str).str.upper()
    return eqtls


def eqtl_variants(eqtls: pd.DataFrame) -> list[Variant | Skipped]:
    """The distinct variants of an eQTL table's ``variant`` ids, in order of first appearance; a
    malformed id becomes a :class:`Skipped` whose variant carries only the id."""
    out: list[Variant | Skipped] = []
    for name in dict.fromkeys(eqtls["variant"]):
        variant = parse_variant_id(name)
        malformed = Skipped("malformed", f"variant id '{name}'", Variant("", 0, "", "", name))
        out.append(variant or malformed)
    return out


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def track_strands(tracks: TrackTable) -> np.ndarray:
    """Per track '+', '-' (stranded, from the identifier's last character) or '.'."""
    stranded = tracks.strand_pair != np.arange(len(tracks))
    last = np.array([ident[-1:] for ident in tracks.identifier])
    return np.where(stranded & np.isin(last, ["+", "-"]), last, ".")


@dataclass
class _Prepared:
    variant: Variant
    windows: np.ndarray  # (2, L) uint8: reference, alternative
    genes: list[Gene]
    bins: list[np.ndarray]


class VariantScorer:
    """Scores variants with one :class:`TrackModel` (a model, an ensemble or a baseline) on the
    output ``columns`` of its head (default all)."""

    def __init__(
        self,
        model: TrackModel,
        genome: Genome,
        annotation: Annotation,
        *,
        columns: Sequence[int] | None = None,
        length: int = 524_288,
        crop_bins: int = 5120,
        batch_size: int = 1,
        units: str = "counts",
        stats: Sequence[str] = ("SED", "logSED"),
        device: str | torch.device | None = None,
    ) -> None:
        if length % BIN_SIZE or not 0 <= 2 * crop_bins < length // BIN_SIZE:
            raise FlashRNAError(
                f"input length {length} bp with {crop_bins} bins cropped at each end leaves no "
                f"output bins (length must be a multiple of {BIN_SIZE})"
            )
        if units not in UNITS:
            raise FlashRNAError(f"units '{units}' is not one of {UNITS}")
        unknown = [s for s in stats if s not in STATS]
        if unknown or not stats:
            raise FlashRNAError(f"stats {list(stats)}: choose from {STATS}")
        self.model, self.genome, self.annotation = model, genome, annotation
        self.columns = np.arange(len(model.tracks)) if columns is None else np.asarray(columns)
        self.length, self.crop_bins, self.batch_size = length, crop_bins, batch_size
        self.units, self.stats = units, list(stats)
        self.device = resolve_device(device)
        self.num_bins = length // BIN_SIZE - 2 * crop_bins
        tracks = model.tracks
        cols = self.columns
        self._transform = (tracks.clip_soft[cols], tracks.scale[cols], tracks.sum_stat[cols])
        self._scale = tracks.scale[cols] if units == "scaled" else None
        self.identifiers = tracks.identifier[cols]
        self.strands = track_strands(tracks)[cols]

    @property
    def score_columns(self) -> list[str]:
        return [f"{stat}:{ident}" for stat in self.stats for ident in self.identifiers]

    def output_start(self, variant: Variant) -> int:
        """0-based genomic start of the first output bin of the variant's window."""
        return variant.pos - 1 - self.length // 2 + BIN_SIZE * self.crop_bins

    def prepare(self, item: Variant | Skipped) -> _Prepared | Skipped:
        """Windows and gene bins of a variant, or why it cannot be scored."""
        if isinstance(item, Skipped):
            return item
        v = item
        if v.chrom not in self.genome.lengths:
            return Skipped("contig_missing", f"{v.chrom} is not in {self.genome.path.name}", v)
        if not (_BASES.fullmatch(v.ref) and _BASES.fullmatch(v.alt)):
            return Skipped("unsupported_allele", f"alleles {v.ref}>{v.alt} are not A/C/G/T", v)
        if len(v.ref) != 1 or len(v.alt) != 1:
            return Skipped("not_snv", f"{v.ref}>{v.alt} is not a single-nucleotide variant", v)
        start = self.output_start(v)
        end = start + BIN_SIZE * self.num_bins
        genes, bins = [], []
        for gene in self.annotation.overlapping(v.chrom, start, end):
            genes.append(gene)
            bins.append(gene.exon_bins(start, self.num_bins))
        if not genes:
            return Skipped("no_genes", f"no exon in {v.chrom}:{start + 1}-{end}", v)
        try:
            windows = self.genome.variant_windows(v.chrom, v.pos, v.ref, v.alt, self.length)
        except ReferenceMismatchError as err:
            return Skipped("ref_mismatch", str(err), v)
        return _Prepared(v, np.stack(windows), genes, bins)

    def score_batch(self, batch: Sequence[_Prepared]) -> pd.DataFrame:
        """One row per variant and gene (columns ``META_COLUMNS`` + :attr:`score_columns`)."""
        sequences = np.concatenate([p.windows for p in batch])  # (2B, L): ref, alt, ref, alt, ...
        pred = predict(
            self.model.module,
            sequences,
            self.model.head,
            batch_size=len(sequences),
            device=self.device,
            crop_bins=self.crop_bins,
        )[..., torch.as_tensor(self.columns)]
        counts = unsquash(pred, *self._transform).double()  # (2B, bins, tracks)
        if self._scale is not None:
            counts = counts * torch.as_tensor(self._scale, dtype=torch.float64)
        meta, blocks = [], []
        for i, prepared in enumerate(batch):
            v = prepared.variant
            masks = torch.zeros(len(prepared.genes), self.num_bins, dtype=torch.float64)
            for g, bins in enumerate(prepared.bins):
                masks[g, torch.as_tensor(bins)] = 1.0
            ref, alt = (masks @ counts[2 * i]).numpy(), (masks @ counts[2 * i + 1]).numpy()
            values = {
                "SED": alt - ref,
                "logSED": np.log2(alt + 1) - np.log2(ref + 1),
                "REF": ref,
                "ALT": alt,
            }
            block = np.concatenate([values[s] for s in self.stats], axis=1)  # (genes, S*T)
            for g, gene in enumerate(prepared.genes):
                # A stranded track measures only the genes on its strand.
                other = (self.strands != ".") & (self.strands != gene.strand)
                block[g, np.tile(other, len(self.stats))] = np.nan
                meta.append(
                    (v.id, v.chrom, v.pos, v.ref, v.alt, gene.gene_id, gene.name, gene.strand,
                     len(prepared.bins[g]))
                )  # fmt: skip
            blocks.append(block)
        frame = pd.DataFrame(meta, columns=list(META_COLUMNS))
        scores = pd.DataFrame(np.concatenate(blocks), columns=self.score_columns)
        return pd.concat([frame, scores], axis=1)

    def run(
        self, variants: Iterable[Variant | Skipped], progress: bool = False
    ) -> Iterator[tuple[pd.DataFrame | None, list[Skipped]]]:
        """Score ``variants`` batch by batch: yields (rows of the batch or None, the variants
        skipped since the previous yield). Logs variants/s every 30 s."""
        from tqdm.auto import tqdm

        pending: list[_Prepared] = []
        skipped: list[Skipped] = []
        started, scored, last_log = time.perf_counter(), 0, time.perf_counter()
        bar = tqdm(desc="score-variants", unit="variant", disable=not progress)
        for item in variants:
            prepared = self.prepare(item)
            if isinstance(prepared, Skipped):
                skipped.append(prepared)
                continue
            pending.append(prepared)
            if len(pending) == self.batch_size:
                yield self.score_batch(pending), skipped
                scored += len(pending)
                bar.update(len(pending))
                pending, skipped = [], []
                if time.perf_counter() - last_log > 30:
                    last_log = time.perf_counter()
                    rate = scored / (last_log - started)
                    log.info("scored %d variants (%.2f variants/s)", scored, rate)
        if pending:
            yield self.score_batch(pending), skipped
            scored += len(pending)
            bar.update(len(pending))
        elif skipped:
            yield None, skipped
        bar.close()


# --------------------------------------------------------------------------------------------
# Track selection shared by the steps that score variants
# --------------------------------------------------------------------------------------------


def read_identifiers(values: Sequence[str] | None) -> list[str] | None:
    """``--tracks`` values: identifiers, or paths of track tables whose identifiers are meant."""
    if not values:
        return None
    identifiers: list[str] = []
    for value in values:
        path = Path(value)
        identifiers += list(TrackTable.read(path).identifier) if path.is_file() else [value]
    return identifiers


def select_columns(
    model: TrackModel, assays: Sequence[str] | None, identifiers: Sequence[str] | None
) -> np.ndarray:
    """Output indices of the head's tracks of ``assays`` and ``identifiers`` (None: all)."""
    return model.tracks.find(assays, identifiers)


# --------------------------------------------------------------------------------------------
# score-variants
# --------------------------------------------------------------------------------------------


def add_scoring_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """Genome, genes, window, batching and unit options shared with ``eqtl-benchmark``."""
    group = parser.add_argument_group("scoring")
    group.add_argument("--fasta", required=required, help="genome FASTA (indexed; bgzip or plain)")
    group.add_argument("--gtf", required=required, help="gene annotation GTF (exon lines used)")
    group.add_argument(
        "--length",
        type=int,
        help="model input length in bp (default: the model's own, else 524,288)",
    )
    group.add_argument(
        "--crop-bins",
        type=int,
        help="output bins dropped at each end before genes are matched (default: the model's "
        "own, else Borzoi's 5,120)",
    )
    group.add_argument("--batch-size", type=int, default=1, help="variants per batch")
    group.add_argument(
        "--units",
        choices=UNITS,
        default="counts",
        help="counts: inverse-transformed coverage; scaled: times the track's scale (Borzoi)",
    )


def register_score_variants(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--vcf", help="variants (VCF, plain or gzip)")
    source.add_argument(
        "--eqtls", nargs="+", help="or: the variants of fine-mapped eQTL tables (eqtl-benchmark)"
    )
    parser.add_argument(
        "--min-pip", type=float, default=0.9, help="with --eqtls: variants with PIP above"
    )
    parser.add_argument("--out", required=True, help="output directory")
    add_scoring_arguments(parser)
    add_model_arguments(parser)
    parser.add_argument(
        "--tracks",
        nargs="+",
        metavar="ID_OR_TABLE",
        help="score only these track identifiers, or the identifiers of these track tables",
    )
    parser.add_argument("--assays", nargs="+", help="score only tracks of these assays")
    parser.add_argument(
        "--stats", nargs="+", choices=STATS, default=["SED", "logSED"], help="statistics to write"
    )
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    parser.set_defaults(run=_run_score_variants)


def _run_score_variants(args: argparse.Namespace) -> None:
    identifiers = read_identifiers(args.tracks)
    genome = Genome(args.fasta)
    annotation = Annotation.read_gtf(args.gtf)
    model = track_model_from_args(args, identifiers)
    length, crop_bins = model.geometry(args.length, args.crop_bins, args.allow_length)
    scorer = VariantScorer(
        model,
        genome,
        annotation,
        columns=select_columns(model, args.assays, identifiers),
        length=length,
        crop_bins=crop_bins,
        batch_size=args.batch_size,
        units=args.units,
        stats=args.stats,
        device=args.device,
    )
    out = Path(args.out)
    variants = (
        read_vcf(args.vcf) if args.vcf else eqtl_variants(read_eqtls(args.eqtls, args.min_pip))
    )
    summary = write_scores(scorer, variants, out, progress=args.progress)
    source = {"vcf": args.vcf} if args.vcf else {"eqtls": args.eqtls, "min_pip": args.min_pip}
    summary.update(source, fasta=args.fasta, gtf=args.gtf, model=model.name, head=model.head)
    write_json(out / "summary.json", summary)
    log.info(
        "%d variants scored, %d skipped %s; %.2f variants/s; %s",
        summary["scored"],
        sum(summary["skipped"].values()),
        summary["skipped"],
        summary["variants_per_second"],
        out,
    )


def write_scores(
    scorer: VariantScorer, variants: Iterable[Variant | Skipped], out: Path, progress=False
) -> dict:
    """Run ``scorer`` and write ``scores.tsv`` (+ ``.parquet``), ``skipped.tsv`` and
    ``tracks.tsv`` into ``out``, each atomically; returns the summary's counts and settings."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        pa = pq = None
    columns = [*META_COLUMNS, *scorer.score_columns]
    tracks = scorer.model.tracks.frame.iloc[scorer.columns]
    listed = pd.DataFrame(
        {
            "identifier": tracks["identifier"].to_numpy(),
            "assay": scorer.model.tracks.assay[scorer.columns],
            "description": tracks["description"].to_numpy(),
            "strand": scorer.strands,
            "scale": tracks["scale"].to_numpy(),
        }
    )
    if scorer.model.tracks.gtex_tissue is not None:  # eqtl-benchmark --scores reads it
        listed["gtex_tissue"] = scorer.model.tracks.gtex_tissue[scorer.columns]
    with atomic_file(out / "tracks.tsv") as handle:
        listed.to_csv(handle, sep="\t", index=False)
    skipped: Counter = Counter({reason: 0 for reason in SKIP_REASONS})
    scored = rows = 0
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        scores = stack.enter_context(atomic_file(out / "scores.tsv"))
        skips = stack.enter_context(atomic_file(out / "skipped.tsv"))
        scores.write("\t".join(columns) + "\n")
        skips.write("\t".join(SKIP_COLUMNS) + "\n")
        parquet = None
        if pq is not None:
            parquet_path = stack.enter_context(atomic_path(out / "scores.parquet"))
            schema = _parquet_schema(pa, scorer.score_columns)
            parquet = stack.enter_context(pq.ParquetWriter(parquet_path, schema))
        for frame, skips_batch in scorer.run(variants, progress):
            for item in skips_batch:
                skipped[item.reason] += 1
                skips.write("\t".join(str(x) for x in item.row()) + "\n")
            if frame is None:
                continue
            scored += len(frame[["variant", "chrom", "pos", "ref", "alt"]].drop_duplicates())
            rows += len(frame)
            frame.to_csv(scores, sep="\t", header=False, index=False, float_format="%.6g")
            if parquet is not None:
                parquet.write_table(pa.Table.from_pandas(frame, schema, preserve_index=False))
    elapsed = time.perf_counter() - started
    return {
        "scored": scored,
        "rows": rows,
        "skipped": dict(skipped),
        "seconds": elapsed,
        "variants_per_second": scored / elapsed if elapsed else 0.0,
        "units": scorer.units,
        "stats": scorer.stats,
        "tracks": len(scorer.identifiers),
        "length": scorer.length,
        "crop_bins": scorer.crop_bins,
        "device": str(scorer.device),
    }


def _parquet_schema(pa, score_columns: list[str]):
    integers = ("pos", "exon_bins")
    fields = [(c, pa.int64() if c in integers else pa.string()) for c in META_COLUMNS]
    return pa.schema(fields + [(c, pa.float64()) for c in score_columns])
