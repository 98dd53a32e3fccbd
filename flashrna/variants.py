"""``flashrna score-variants``: SED and logSED of variants on the genes around them, as Borzoi
computes them (calico/borzoi ``src/scripts/borzoi_sed.py``), written as Borzoi writes them.

The protocol (:class:`Protocol`; ``--protocol borzoi``, the default, or ``legacy``, each part
overridable) follows calico/borzoi ``src/scripts/borzoi_sed.py`` and calico/baskerville
``vcf.py``/``dna.py``/``dataset.py``/``gene.py``:

1. Windows (``--window``): ``borzoi``: L bp with the variant's first base at index L/2 − 1,
   built as ``vcf.snp_seq1`` + ``dna_length_1hot`` build them (:meth:`Genome.variant_windows`:
   deletions fetch the bases they pull in, the edited sequence is trimmed or N-padded back to L
   around its centre, N beyond the contig ends); ``centred``: the variant at index L/2 (flashrna
   0.1).
2. REF mismatch (``--ref-mismatch``): ``swap``: when the genome holds ALT instead of REF, REF is
   written in its place as ``snp_seq1`` does, and the score still measures ALT against REF as
   given (so a variant given with its alleles exchanged scores as the negation of the correct
   one); a genome matching neither is skipped (``ref_mismatch``). ``skip``: every mismatch is
   skipped.
3. Predictions of both windows, forward and reverse complement, in one batch with the other
   variants' windows; the reverse-complement prediction is mapped back (bins reversed, strand
   pairs swapped) and averaged with the forward one in the model's squashed space, as
   ``borzoi_sed.py --rc``; ``crop_bins`` dropped at each end.
4. Track selection, the inverse transform (:func:`flashrna.tracks.unsquash`) and, with ``--units
   scaled`` (Borzoi's ``dataset.untransform_preds1``, the default), the multiplication by the
   track's ``scale`` again; ``counts`` leaves it out (flashrna 0.1). Borzoi's pseudocount 1 acts
   in the scaled units (GTEx tracks: scale 0.01).
5. Genes: those with an exon bin in either allele's output window; exons merged over the
   gene's transcripts; bins by ``--exon-bins``: ``majority`` (Borzoi's ``map_snpseq_genes``,
   ``majority_overlap=True``: bins ``round(start/32)`` .. ``round(end/32)`` with NumPy's rounding,
   in output-window coordinates) or ``any`` (every bin an exon touches; flashrna 0.1) — see
   :mod:`flashrna.annotation`.
6. Per gene and track ``REF = Σ ref``, ``ALT = Σ alt`` over its exon bins, ``SED = ALT − REF``,
   ``logSED = log2(ALT + 1) − log2(REF + 1)``. Sums accumulate in float64 on the device, a few
   tracks at a time (no float64 copy of whole windows); only (genes × tracks) leave the device.
7. Strands (Borzoi's ``targets_prep_strand``): a strand pair of tracks is one target, named by
   its ``+`` track; a gene on ``+`` is scored with the ``+`` track, any other gene with the ``-``
   track; unstranded tracks score every gene. Selecting either track of a pair selects the pair.

Indels and MNVs (``--indels``). Borzoi's ``borzoi_sed.py`` does not align them: it slices the
same bins from both predictions, those its BED arithmetic gives (for a deletion of ``d`` bases,
``make_snpseq_bedt`` extends the interval by ``d`` and ``map_snpseq_genes``' left-overhang
correction then takes exon coordinates relative to ``pos − out/2 + d``). Yet the windows move:
``dna_length_1hot``'s centring starts a deletion's reference window ``d // 2`` bases later and
drops ``i // 2`` bases from the start of an insertion's alternative window, and beyond the
variant the alternative's bases sit ``len(ALT) − len(REF)`` bp from their genome place.
baskerville's ``snps.py`` (``hound_snp``/``hound_snpgene --indel_stitch``) aligns by predicting
shifted copies and stitching them at the variant (``stitch_preds``), at the cost of extra
predictions. Our rule, ``aligned`` (default), needs none: each merged exon is mapped into each
allele's own window through its :class:`~flashrna.genome.AlleleLayout` (bases left of the
variant move with the window's centring, bases right of it also by the length change, an exon
end inside the replaced bases lands inside the allele, at most at its end) and the same bin
rule is applied there. REF then sums the bins that hold the gene's exons in the reference
window and ALT those in the alternative window — each allele's predicted exon coverage of the
gene, which is what logSED compares; the alignment is of the bins summed, not a resampling of
the prediction. For SNPs both maps are one and the bins are Borzoi's. ``unaligned`` reproduces
``borzoi_sed.py`` (its bins, for both alleles); ``skip`` skips indels and MNVs (``not_snv``;
flashrna 0.1).

Ensembles (``--ensemble``): ``scores`` (default) scores each member and averages the statistics,
as Borzoi averages its replicates' ``sed.h5`` (``borzoi_bench_gtex_folds_sed.py``
``ensemble_h5``); ``predictions`` averages the members' squashed predictions first (one score of
the mean model; flashrna 0.1).

Variants are never an error: malformed VCF lines, contigs missing from the FASTA, alleles other
than A/C/G/T, REF mismatches, and variants without genes are skipped, counted, and listed.
Multi-allelic VCF lines are split, each ALT scored as a biallelic variant (``borzoi_sed.py``
scores only the first ALT of a line). Variants come from a VCF (``--vcf``) or from fine-mapped
eQTL tables (``--eqtls``: the distinct ``variant`` ids such as ``chr1_13550_G_A_b38`` of the
rows with PIP above ``--min-pip``, read as :func:`read_eqtls` does).

Outputs in ``--out`` (``--format``, several allowed):

- ``tsv``/``parquet``: ``scores.tsv``/``scores.parquet``; ``--layout long`` (default): one row
  per variant, gene and track: ``variant chrom pos ref alt gene_id gene_name gene_strand
  exon_bins track`` and one column per statistic of ``--stats``; ``wide``: one row per variant
  and gene, a ``<stat>:<track>`` column per statistic and track (NaN for the other strand's
  track of a pair). ``exon_bins`` counts the gene's bins in the reference window.
- ``h5``: ``sed.h5`` in ``borzoi_sed.py``'s layout, for Borzoi's downstream scripts
  (``borzoi_gtex_coef_sed.py``): per scored variant ``snp chr pos ref_allele alt_allele``
  (byte strings; ``pos`` uint32), per score row (variant x gene) ``si`` (int64 index into the
  variant datasets) and ``gene``, per target ``target_ids target_labels`` (byte strings, the
  strand-collapsed targets), and per statistic a float16 array (scores, targets), clipped to
  float16's finite range.
- ``vcf`` (with ``--vcf``): ``scores.vcf``, the input VCF with an INFO field ``FLASHRNA`` per
  line: ``ALT|gene|track|value`` of the gene's top track by |first statistic| for each gene.

Always: ``tracks.tsv`` (the scored tracks: ``identifier assay description strand scale``),
``skipped.tsv`` (``line variant chrom pos ref alt reason detail``) and ``summary.json``
(counts per outcome, swapped REF/ALT, variants/s, the protocol and settings).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
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

from flashrna.annotation import BIN_RULES, Annotation, Gene, interval_bins
from flashrna.genome import AlleleLayout, Genome, ReferenceMismatchError, VariantWindows
from flashrna.model import BIN_SIZE, Ensemble, autocast_dtype, reverse_complement
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
from flashrna.zoo import TrackModel, add_model_arguments, load_track_model

log = logging.getLogger(__name__)

STATS = ("SED", "logSED", "REF", "ALT")
FORMATS = ("tsv", "parquet", "h5", "vcf")
LAYOUTS = ("long", "wide")
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
# float64 elements of one exon-sum chunk on the device (32 MiB): bounds the extra memory.
SUM_CHUNK = 2**22


# --------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Protocol:
    """How variants are scored (module docstring); the defaults are Borzoi's."""

    window: str = "borzoi"
    ref_mismatch: str = "swap"
    units: str = "scaled"
    exon_bins: str = "majority"
    indels: str = "aligned"
    ensemble: str = "scores"

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value, choices = getattr(self, field.name), PROTOCOL_CHOICES[field.name]
            if value not in choices:
                raise FlashRNAError(f"{field.name} '{value}' is not one of {choices}")

    def describe(self) -> str:
        """``borzoi`` or ``legacy`` when the protocol is one of them, else the differences from
        Borzoi's, e.g. ``borzoi except units=counts``."""
        for name, preset in PROTOCOLS.items():
            if self == preset:
                return name
        changed = [
            f"{f.name}={getattr(self, f.name)}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(PROTOCOLS["borzoi"], f.name)
        ]
        return "borzoi except " + ", ".join(changed)

    def words(self) -> str:
        """:meth:`describe` and every setting, e.g. ``legacy (window=centred, ...)``."""
        settings = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(self).items())
        return f"{self.describe()} ({settings})"


PROTOCOL_CHOICES = {
    "window": ("borzoi", "centred"),
    "ref_mismatch": ("swap", "skip"),
    "units": ("scaled", "counts"),
    "exon_bins": BIN_RULES,
    "indels": ("aligned", "unaligned", "skip"),
    "ensemble": ("scores", "predictions"),
}
PROTOCOLS = {
    "borzoi": Protocol(),
    # flashrna 0.1: what score-variants did before Borzoi's protocol became the default.
    "legacy": Protocol("centred", "skip", "counts", "any", "skip", "predictions"),
}
_PROTOCOL_HELP = {
    "window": "borzoi: the variant at index L/2-1 (snp_seq1); centred: at L/2",
    "ref_mismatch": "swap: a genome holding ALT gets REF written in (snp_seq1); skip: skip it",
    "units": "scaled: inverse transform times the track's scale (Borzoi); counts: without it",
    "exon_bins": "majority: bins round(start/32)..round(end/32) (Borzoi); any: any overlap",
    "indels": "aligned: exons mapped into each allele's window; unaligned: borzoi_sed.py's "
    "bins for both; skip: not scored",
    "ensemble": "scores: mean of members' scores (Borzoi); predictions: score of the mean",
}


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """``--protocol`` and one option per part of it (default: the protocol's choice)."""
    group = parser.add_argument_group(
        "protocol",
        "how variants are scored: --protocol, and any part of it changed by the options after it",
    )
    group.add_argument(
        "--protocol",
        choices=sorted(PROTOCOLS),
        default="borzoi",
        help="borzoi: as calico/borzoi borzoi_sed.py (indels aligned); legacy: flashrna 0.1",
    )
    for field in dataclasses.fields(Protocol):
        group.add_argument(
            f"--{field.name.replace('_', '-')}",
            choices=PROTOCOL_CHOICES[field.name],
            default=argparse.SUPPRESS,  # absent: the --protocol's choice
            help=_PROTOCOL_HELP[field.name],
        )


def protocol_from_args(args: argparse.Namespace) -> Protocol:
    """The :class:`Protocol` of :func:`add_protocol_arguments`' options."""
    names = [f.name for f in dataclasses.fields(Protocol)]
    chosen = {name: getattr(args, name) for name in names if hasattr(args, name)}
    return dataclasses.replace(PROTOCOLS[args.protocol], **chosen)


def as_protocol(protocol: Protocol | str) -> Protocol:
    """``protocol`` itself, or the one of :data:`PROTOCOLS` it names."""
    if isinstance(protocol, Protocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise FlashRNAError(f"protocol '{protocol}' is not one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[protocol]


# --------------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------------


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
# Targets: tracks as Borzoi scores them
# --------------------------------------------------------------------------------------------


def track_strands(tracks: TrackTable) -> np.ndarray:
    """Per track '+', '-' (stranded, from the identifier's last character) or '.'."""
    stranded = tracks.strand_pair != np.arange(len(tracks))
    last = np.array([ident[-1:] for ident in tracks.identifier])
    return np.where(stranded & np.isin(last, ["+", "-"]), last, ".")


@dataclass(frozen=True)
class Targets:
    """The strand-collapsed targets of a track selection (module docstring, 7): target ``j``
    is scored with head output ``plus[j]`` on genes on ``+`` and ``minus[j]`` on the others
    (equal for unstranded tracks); ``computed`` are the head outputs predicted (table order)."""

    plus: np.ndarray
    minus: np.ndarray
    computed: np.ndarray

    @classmethod
    def of(cls, tracks: TrackTable, columns: Sequence[int] | np.ndarray) -> Targets:
        columns = np.asarray(columns, dtype=np.int64)
        strands, pair = track_strands(tracks), tracks.strand_pair
        plus = np.unique(np.where(strands[columns] == "-", pair[columns], columns))
        minus = np.where(strands[plus] == "+", pair[plus], plus)
        return cls(plus, minus, np.union1d(plus, minus))

    def __len__(self) -> int:
        return len(self.plus)

    def for_strand(self, strand: str) -> np.ndarray:
        """Positions in :attr:`computed` of the outputs scoring a gene on ``strand``."""
        rows = self.plus if strand == "+" else self.minus
        return np.searchsorted(self.computed, rows)


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


@dataclass
class _Prepared:
    variant: Variant
    windows: VariantWindows
    genes: list[Gene]
    ref_bins: list[np.ndarray]
    alt_bins: list[np.ndarray]


@dataclass
class VariantScores:
    """The scores of one variant: per gene (row) and target (column, :class:`Targets` order)
    one float64 array (genes, targets) per statistic; ``exon_bins`` per gene in the reference
    window; ``swapped`` when the genome holds ALT."""

    variant: Variant
    swapped: bool
    genes: list[Gene]
    exon_bins: np.ndarray
    values: dict[str, np.ndarray]


class VariantScorer:
    """Scores variants with one :class:`TrackModel` (a model, an ensemble or a baseline) on the
    output ``columns`` of its head (default all), by :class:`Protocol` ``protocol``."""

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
        stats: Sequence[str] = ("logSED",),
        protocol: Protocol = PROTOCOLS["borzoi"],
        device: str | torch.device | None = None,
    ) -> None:
        if length % BIN_SIZE or not 0 <= 2 * crop_bins < length // BIN_SIZE:
            raise FlashRNAError(
                f"input length {length} bp with {crop_bins} bins cropped at each end leaves no "
                f"output bins (length must be a multiple of {BIN_SIZE})"
            )
        unknown = [s for s in stats if s not in STATS]
        if unknown or not stats:
            raise FlashRNAError(f"stats {list(stats)}: choose from {STATS}")
        self.model, self.genome, self.annotation = model, genome, annotation
        self.length, self.crop_bins, self.batch_size = length, crop_bins, batch_size
        self.stats, self.protocol = list(stats), protocol
        self.device = resolve_device(device)
        self.num_bins = length // BIN_SIZE - 2 * crop_bins
        self.left = length // 2 - (1 if protocol.window == "borzoi" else 0)
        tracks = model.tracks
        selected = np.arange(len(tracks)) if columns is None else np.asarray(columns)
        self.targets = Targets.of(tracks, selected)
        cols = self.targets.computed
        self.identifiers = tracks.identifier[cols]
        self.strands = track_strands(tracks)[cols]
        module = model.module.eval().to(self.device)
        split = protocol.ensemble == "scores" and isinstance(module, Ensemble)
        self._members = list(module.members) if split else [module]
        to_device = {"device": self.device}
        self._columns = torch.as_tensor(cols, **to_device)
        self._pairs = module.strand_pair(model.head).to(self.device)[self._columns]
        scale = tracks.scale[cols] if protocol.units == "scaled" else np.ones(len(cols))
        self._transform = (tracks.clip_soft[cols], tracks.scale[cols], tracks.sum_stat[cols])
        self._scale = torch.as_tensor(scale, dtype=torch.float32, **to_device)

    # -- genes and windows ----------------------------------------------------------------------

    def prepare(self, item: Variant | Skipped) -> _Prepared | Skipped:
        """Windows and per-allele gene bins of a variant, or why it cannot be scored."""
        if isinstance(item, Skipped):
            return item
        v = item
        if v.chrom not in self.genome.lengths:
            return Skipped("contig_missing", f"{v.chrom} is not in {self.genome.path.name}", v)
        if not (_BASES.fullmatch(v.ref) and _BASES.fullmatch(v.alt)):
            return Skipped("unsupported_allele", f"alleles {v.ref}>{v.alt} are not A/C/G/T", v)
        if self.protocol.indels == "skip" and (len(v.ref) != 1 or len(v.alt) != 1):
            return Skipped("not_snv", f"{v.ref}>{v.alt} is not a single-nucleotide variant", v)
        try:
            windows = self.genome.variant_windows(
                v.chrom,
                v.pos,
                v.ref,
                v.alt,
                self.length,
                left=self.left,
                swap=self.protocol.ref_mismatch == "swap",
            )
        except ReferenceMismatchError as err:
            return Skipped("ref_mismatch", str(err), v)
        layouts = [windows.reference_layout, windows.alternative_layout]
        if self.protocol.indels == "unaligned":
            extra = max(0, len(v.ref) - len(v.alt))
            layouts = [AlleleLayout(v.pos - 1 - self.left + extra, v.pos - 1, 0, 0)] * 2
        crop = BIN_SIZE * self.crop_bins
        # Genome span of either allele's output window, widened by the length change.
        change = abs(len(v.ref) - len(v.alt))
        lo = min(layout.start for layout in layouts) + crop - change
        hi = max(layout.start for layout in layouts) + crop + BIN_SIZE * self.num_bins + change
        genes, ref_bins, alt_bins = [], [], []
        for gene in self.annotation.overlapping(v.chrom, lo, hi):
            bins = [
                interval_bins(
                    layout.index(gene.exons) - crop, self.num_bins, self.protocol.exon_bins
                )
                for layout in layouts[: 1 if layouts[0] == layouts[1] else 2]
            ]
            if any(len(b) for b in bins):
                genes.append(gene)
                ref_bins.append(bins[0])
                alt_bins.append(bins[-1])
        if not genes:
            return Skipped("no_genes", f"no exon bin in the windows of {v.chrom}:{v.pos}", v)
        return _Prepared(v, windows, genes, ref_bins, alt_bins)

    # -- the device part ----------------------------------------------------------------------

    def _exon_masks(self, batch: Sequence[_Prepared]) -> torch.Tensor:
        """(2B, max genes, bins) float64 0/1 on the device: row 2i the REF bins of variant i's
        genes, row 2i + 1 the ALT bins."""
        most = max(len(p.genes) for p in batch)
        rows, genes, bins = [], [], []
        for i, prepared in enumerate(batch):
            for allele, per_gene in enumerate((prepared.ref_bins, prepared.alt_bins)):
                for g, gene_bins in enumerate(per_gene):
                    rows.append(np.full(len(gene_bins), 2 * i + allele))
                    genes.append(np.full(len(gene_bins), g))
                    bins.append(gene_bins)
        shape = (2 * len(batch), most, self.num_bins)
        masks = torch.zeros(shape, dtype=torch.float64, device=self.device)
        index = [
            torch.as_tensor(np.concatenate(x), device=self.device) for x in (rows, genes, bins)
        ]
        masks[tuple(index)] = 1.0
        return masks

    def _exon_sums(self, member: torch.nn.Module, sequences: torch.Tensor, masks: torch.Tensor):
        """Per window and gene, the exon-bin sums of the selected tracks in the protocol's
        units: (2B, max genes, computed tracks) float64 on the device. ``sequences`` (2B, L)."""
        both = torch.cat((sequences, reverse_complement(sequences)))
        dtype = autocast_dtype(self.model.precision, self.device)
        with torch.autocast(self.device.type, dtype=dtype or torch.bfloat16, enabled=bool(dtype)):
            out = member(both, self.model.head, self.crop_bins)
        forward, reverse = out.float().chunk(2)
        # unreverse_prediction on the selected tracks only: their partners, bins reversed.
        pred = (forward[..., self._columns] + reverse[..., self._pairs].flip(1)) / 2
        values = unsquash(pred, *self._transform) * self._scale  # (2B, bins, tracks) fp32
        rows, _, tracks = values.shape
        sums = masks.new_empty(rows, masks.shape[1], tracks)
        step = max(1, SUM_CHUNK // (rows * self.num_bins))
        for k in range(0, tracks, step):
            sums[..., k : k + step] = torch.bmm(masks, values[..., k : k + step].double())
        return sums

    @torch.no_grad()
    def score_batch(self, batch: Sequence[_Prepared]) -> list[VariantScores]:
        """The :class:`VariantScores` of prepared variants, their windows in one batch."""
        windows = [w for p in batch for w in (p.windows.reference, p.windows.alternative)]
        sequences = torch.as_tensor(np.stack(windows)).to(self.device)
        masks = self._exon_masks(batch)
        totals: list[dict[str, np.ndarray]] = [{} for _ in batch]
        for member in self._members:
            sums = self._exon_sums(member, sequences, masks).cpu().numpy()
            for i, prepared in enumerate(batch):
                chosen = np.stack([self.targets.for_strand(g.strand) for g in prepared.genes])
                count = len(prepared.genes)
                ref = np.take_along_axis(sums[2 * i, :count], chosen, axis=1)
                alt = np.take_along_axis(sums[2 * i + 1, :count], chosen, axis=1)
                for stat, value in statistics(ref, alt, self.stats).items():
                    totals[i][stat] = totals[i].get(stat, 0.0) + value
        return [
            VariantScores(
                p.variant,
                p.windows.swapped,
                p.genes,
                np.array([len(b) for b in p.ref_bins]),
                {s: v / len(self._members) for s, v in total.items()},
            )
            for p, total in zip(batch, totals, strict=True)
        ]

    def run(
        self, variants: Iterable[Variant | Skipped], progress: bool = False
    ) -> Iterator[tuple[list[VariantScores], list[Skipped]]]:
        """Score ``variants`` batch by batch: yields (the batch's scores, possibly empty; the
        variants skipped since the previous yield). Logs variants/s every 30 s."""
        from tqdm.auto import tqdm

        pending: list[_Prepared] = []
        skipped: list[Skipped] = []
        started = last_log = time.perf_counter()
        scored = 0
        total = len(variants) if isinstance(variants, Sequence) else None
        bar = tqdm(desc="score-variants", unit="variant", total=total, disable=not progress)
        for item in variants:
            prepared = self.prepare(item)
            bar.update(1)
            if isinstance(prepared, Skipped):
                skipped.append(prepared)
                continue
            pending.append(prepared)
            if len(pending) == self.batch_size:
                yield self.score_batch(pending), skipped
                scored += len(pending)
                pending, skipped = [], []
                if time.perf_counter() - last_log > 30:
                    last_log = time.perf_counter()
                    rate = scored / (last_log - started)
                    log.info("scored %d variants (%.2f variants/s)", scored, rate)
        if pending or skipped:
            yield (self.score_batch(pending) if pending else []), skipped
        bar.close()


def statistics(ref: np.ndarray, alt: np.ndarray, stats: Sequence[str]) -> dict[str, np.ndarray]:
    """The ``stats`` of exon-bin sums ``ref`` and ``alt`` (same shape)."""
    formulas = {
        "SED": lambda: alt - ref,
        "logSED": lambda: np.log2(alt + 1) - np.log2(ref + 1),
        "REF": lambda: ref,
        "ALT": lambda: alt,
    }
    return {stat: formulas[stat]() for stat in stats}


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
# Output
# --------------------------------------------------------------------------------------------


def long_frame(scorer: VariantScorer, scores: Sequence[VariantScores]) -> pd.DataFrame:
    """One row per variant, gene and target: :data:`META_COLUMNS`, ``track`` (the identifier of
    the track that scored the gene) and one column per statistic."""
    meta, tracks = [], []
    blocks: dict[str, list[np.ndarray]] = {s: [] for s in scorer.stats}
    for item in scores:
        for g, gene in enumerate(item.genes):
            meta.append(_meta_row(item, g))
            tracks.append(scorer.identifiers[scorer.targets.for_strand(gene.strand)])
        for stat in scorer.stats:
            blocks[stat].append(item.values[stat].reshape(-1))
    frame = pd.DataFrame(meta, columns=list(META_COLUMNS)).loc[
        np.repeat(np.arange(len(meta)), len(scorer.targets))
    ]
    frame = frame.reset_index(drop=True).assign(
        track=np.concatenate(tracks) if tracks else np.zeros(0, dtype=str)
    )
    for stat in scorer.stats:
        frame[stat] = np.concatenate(blocks[stat]) if blocks[stat] else np.zeros(0)
    return frame


def wide_columns(scorer: VariantScorer) -> list[str]:
    """The score columns of the wide layout: ``<stat>:<identifier>`` per computed track."""
    return [f"{stat}:{ident}" for stat in scorer.stats for ident in scorer.identifiers]


def wide_frame(scorer: VariantScorer, scores: Sequence[VariantScores]) -> pd.DataFrame:
    """One row per variant and gene: :data:`META_COLUMNS` and :func:`wide_columns` (NaN where
    a track does not score the gene: the other strand's track of a pair)."""
    meta, rows = [], []
    width = len(scorer.identifiers)
    for item in scores:
        for g, gene in enumerate(item.genes):
            meta.append(_meta_row(item, g))
            where = scorer.targets.for_strand(gene.strand)
            row = np.full((len(scorer.stats), width), np.nan)
            for s, stat in enumerate(scorer.stats):
                row[s, where] = item.values[stat][g]
            rows.append(row.reshape(-1))
    values = np.stack(rows) if rows else np.zeros((0, len(scorer.stats) * width))
    frame = pd.DataFrame(meta, columns=list(META_COLUMNS))
    return pd.concat([frame, pd.DataFrame(values, columns=wide_columns(scorer))], axis=1)


def _meta_row(item: VariantScores, g: int) -> tuple:
    v, gene = item.variant, item.genes[g]
    return (
        v.id, v.chrom, v.pos, v.ref, v.alt, gene.gene_id, gene.name, gene.strand,
        int(item.exon_bins[g]),
    )  # fmt: skip


def _parquet_schema(pa, layout: str, scorer: VariantScorer):
    integers = ("pos", "exon_bins")
    fields = [(c, pa.int64() if c in integers else pa.string()) for c in META_COLUMNS]
    if layout == "long":
        return pa.schema(
            [*fields, ("track", pa.string())] + [(s, pa.float64()) for s in scorer.stats]
        )
    return pa.schema(fields + [(c, pa.float64()) for c in wide_columns(scorer)])


def _bytes(values: Iterable[str]) -> np.ndarray:
    """Byte strings as ``np.array(..., "S")`` makes them (Borzoi's HDF5 strings), UTF-8."""
    return np.array([str(v).encode() for v in values], dtype="S")


class H5Scores:
    """Collects scores and writes them in ``borzoi_sed.py``'s ``sed.h5`` layout (module
    docstring) with :meth:`write`."""

    def __init__(self, scorer: VariantScorer) -> None:
        self.scorer = scorer
        self.variants: list[Variant] = []
        self.variant_index: list[np.ndarray] = []
        self.genes: list[str] = []
        self.values: dict[str, list[np.ndarray]] = {s: [] for s in scorer.stats}

    def add(self, scores: Sequence[VariantScores]) -> None:
        finite = np.finfo(np.float16)
        for item in scores:
            self.variant_index.append(np.full(len(item.genes), len(self.variants)))
            self.variants.append(item.variant)
            self.genes += [g.gene_id for g in item.genes]
            for stat, value in item.values.items():
                clipped = np.clip(value, float(finite.min), float(finite.max))
                self.values[stat].append(clipped.astype(np.float16))

    def write(self, path: Path) -> None:
        import h5py

        tracks = self.scorer.model.tracks
        plus = self.scorer.targets.plus
        targets = len(plus)
        with h5py.File(path, "w") as h5:
            index = np.concatenate(self.variant_index) if self.variant_index else []
            h5.create_dataset("si", data=np.asarray(index, dtype=np.int64))
            h5.create_dataset("gene", data=_bytes(self.genes))
            h5.create_dataset("snp", data=_bytes(v.id for v in self.variants))
            h5.create_dataset("chr", data=_bytes(v.chrom for v in self.variants))
            h5.create_dataset("pos", data=np.array([v.pos for v in self.variants], "uint32"))
            h5.create_dataset("ref_allele", data=_bytes(v.ref for v in self.variants))
            h5.create_dataset("alt_allele", data=_bytes(v.alt for v in self.variants))
            h5.create_dataset("target_ids", data=_bytes(tracks.identifier[plus]))
            h5.create_dataset("target_labels", data=_bytes(tracks.frame["description"].iloc[plus]))
            for stat, blocks in self.values.items():
                data = np.concatenate(blocks) if blocks else np.zeros((0, targets), np.float16)
                h5.create_dataset(stat, data=data, dtype="float16")


def write_vcf_scores(
    source: Path, path: Path, scorer: VariantScorer, top: dict[int, list[str]]
) -> None:
    """Copy the VCF ``source`` to ``path`` with an INFO field ``FLASHRNA`` on each line that has
    scores: ``top[line]`` (``ALT|gene|track|value`` entries), after a header line describing
    it."""
    stat = scorer.stats[0]
    header = (
        f'##INFO=<ID=FLASHRNA,Number=.,Type=String,Description="flashrna score-variants: per '
        f"ALT and gene, the track with the largest |{stat}| ({scorer.protocol.describe()} "
        f'protocol): ALT|gene|track|{stat}">\n'
    )
    with open_text(source) as handle, atomic_file(path) as out:
        for line_no, line in enumerate(handle, start=1):
            if header and not line.startswith("##"):  # after the meta lines
                out.write(header)
                header = ""
            if line.startswith("#") or not line.strip() or line_no not in top:
                out.write(line)
                continue
            fields = line.rstrip("\n").split("\t")
            fields += ["."] * (8 - len(fields))
            entry = "FLASHRNA=" + ",".join(top[line_no])
            fields[7] = entry if fields[7] in ("", ".") else f"{fields[7]};{entry}"
            out.write("\t".join(fields) + "\n")


def top_entries(scorer: VariantScorer, item: VariantScores) -> list[str]:
    """``ALT|gene|track|value`` per gene: its track with the largest |first statistic|."""
    values = item.values[scorer.stats[0]]
    entries = []
    for g, gene in enumerate(item.genes):
        best = int(np.argmax(np.abs(values[g])))
        track = scorer.identifiers[scorer.targets.for_strand(gene.strand)[best]]
        entries.append(f"{item.variant.alt}|{gene.gene_id}|{track}|{values[g, best]:.6g}")
    return entries


def write_scores(
    scorer: VariantScorer,
    variants: Iterable[Variant | Skipped],
    out: Path,
    *,
    formats: Sequence[str] = ("tsv", "parquet"),
    layout: str = "long",
    vcf: Path | None = None,
    progress: bool = False,
) -> dict:
    """Run ``scorer`` and write ``formats`` (module docstring), ``skipped.tsv`` and
    ``tracks.tsv`` into ``out``, each atomically; returns the summary's counts and settings."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or layout not in LAYOUTS:
        raise FlashRNAError(
            f"formats {unknown} / layout {layout}: choose from {FORMATS}, {LAYOUTS}"
        )
    if "vcf" in formats and vcf is None:
        raise FlashRNAError("--format vcf needs the variants from --vcf")
    tracks = scorer.model.tracks.frame.iloc[scorer.targets.computed]
    listed = pd.DataFrame(
        {
            "identifier": tracks["identifier"].to_numpy(),
            "assay": scorer.model.tracks.assay[scorer.targets.computed],
            "description": tracks["description"].to_numpy(),
            "strand": scorer.strands,
            "scale": tracks["scale"].to_numpy(),
        }
    )
    if scorer.model.tracks.gtex_tissue is not None:  # eqtl-benchmark --scores reads it
        listed["gtex_tissue"] = scorer.model.tracks.gtex_tissue[scorer.targets.computed]
    with atomic_file(out / "tracks.tsv") as handle:
        listed.to_csv(handle, sep="\t", index=False)
    frame_of = long_frame if layout == "long" else wide_frame
    skipped: Counter = Counter({reason: 0 for reason in SKIP_REASONS})
    scored = rows = swapped = 0
    h5 = H5Scores(scorer) if "h5" in formats else None
    top: dict[int, list[str]] = {}
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        skips = stack.enter_context(atomic_file(out / "skipped.tsv"))
        skips.write("\t".join(SKIP_COLUMNS) + "\n")
        table = parquet = None
        header = list(META_COLUMNS) + (
            ["track", *scorer.stats] if layout == "long" else wide_columns(scorer)
        )
        if "tsv" in formats:
            table = stack.enter_context(atomic_file(out / "scores.tsv"))
            table.write("\t".join(header) + "\n")
        if "parquet" in formats:
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = _parquet_schema(pa, layout, scorer)
            parquet_path = stack.enter_context(atomic_path(out / "scores.parquet"))
            parquet = stack.enter_context(pq.ParquetWriter(parquet_path, schema))
        h5_path = stack.enter_context(atomic_path(out / "sed.h5")) if h5 else None
        for batch, skips_batch in scorer.run(variants, progress):
            for item in skips_batch:
                skipped[item.reason] += 1
                skips.write("\t".join(str(x) for x in item.row()) + "\n")
            if not batch:
                continue
            scored += len(batch)
            swapped += sum(item.swapped for item in batch)
            rows += sum(len(item.genes) for item in batch)
            if table is not None or parquet is not None:
                frame = frame_of(scorer, batch)
                if table is not None:
                    frame.to_csv(table, sep="\t", header=False, index=False, float_format="%.6g")
                if parquet is not None:
                    parquet.write_table(pa.Table.from_pandas(frame, schema, preserve_index=False))
            if h5 is not None:
                h5.add(batch)
            if vcf is not None and "vcf" in formats:
                for item in batch:
                    top.setdefault(item.variant.line, []).extend(top_entries(scorer, item))
        if h5 is not None:
            h5.write(h5_path)
    if "vcf" in formats:
        write_vcf_scores(vcf, out / "scores.vcf", scorer, top)
    elapsed = time.perf_counter() - started
    return {
        "scored": scored,
        "variant_genes": rows,
        "swapped": swapped,
        "skipped": dict(skipped),
        "seconds": elapsed,
        "variants_per_second": scored / elapsed if elapsed else 0.0,
        "protocol": scorer.protocol.describe(),
        "protocol_settings": dataclasses.asdict(scorer.protocol),
        "stats": scorer.stats,
        "formats": list(formats),
        "layout": layout,
        "tracks": len(scorer.identifiers),
        "targets": len(scorer.targets),
        "length": scorer.length,
        "crop_bins": scorer.crop_bins,
        "batch_size": scorer.batch_size,
        "device": str(scorer.device),
    }


# --------------------------------------------------------------------------------------------
# score-variants
# --------------------------------------------------------------------------------------------


def add_scoring_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """Genome, genes, window, batching and protocol options shared with ``eqtl-benchmark``."""
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
    group.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="variants per batch (each brings 4 windows: REF, ALT and their reverse complements)",
    )
    add_protocol_arguments(parser)


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
        help="score only these track identifiers, or the identifiers of these track tables "
        "(a stranded track brings its strand partner)",
    )
    parser.add_argument("--assays", nargs="+", help="score only tracks of these assays")
    parser.add_argument(
        "--stats", nargs="+", choices=STATS, default=["SED", "logSED"], help="statistics to write"
    )
    parser.add_argument(
        "--format",
        nargs="+",
        choices=FORMATS,
        default=["tsv", "parquet"],
        help="scores.tsv, scores.parquet, sed.h5 (Borzoi's layout), scores.vcf (--vcf with an "
        "INFO field per line)",
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="long",
        help="tsv/parquet: long (a row per variant, gene, track) or wide (a column per "
        "statistic and track)",
    )
    parser.set_defaults(run=_run_score_variants)


def _run_score_variants(args: argparse.Namespace) -> None:
    score_variants(
        args.model,
        args.fasta,
        args.gtf,
        args.out,
        vcf=args.vcf,
        eqtls=args.eqtls,
        min_pip=args.min_pip,
        head=args.head,
        targets=args.targets,
        identifiers=read_identifiers(args.tracks),
        assays=args.assays,
        stats=args.stats,
        formats=args.format,
        layout=args.layout,
        length=args.length,
        crop_bins=args.crop_bins,
        allow_length=args.allow_length,
        batch_size=args.batch_size,
        protocol=protocol_from_args(args),
        device=args.device,
        precision=args.precision,
        progress=args.progress,
    )


def load_scorer(
    models: Sequence[str | Path],
    fasta: str | Path,
    gtf: str | Path,
    *,
    head: str | None = None,
    targets: str | Path | None = None,
    identifiers: Sequence[str] | None = None,
    assays: Sequence[str] | None = None,
    in_order: bool = False,
    length: int | None = None,
    crop_bins: int | None = None,
    allow_length: bool = False,
    batch_size: int = 1,
    stats: Sequence[str] = ("SED", "logSED"),
    protocol: Protocol | str = "borzoi",
    device: str | torch.device | None = "auto",
    precision: str = "auto",
) -> VariantScorer:
    """The :class:`VariantScorer` of ``models`` (:func:`flashrna.zoo.load_track_model`) on
    ``fasta`` and ``gtf``, at the models' own input length and crop unless given (see
    :func:`score_variants` for the parameters). It scores the head's tracks of ``assays`` and
    ``identifiers`` in table order (:func:`select_columns`), or with ``in_order`` exactly the
    tracks ``identifiers`` in that order, each one output (:meth:`TrackModel.columns`)."""
    model = load_track_model(
        models,
        head=head,
        targets=targets,
        identifiers=identifiers,
        device=device,
        precision=precision,
    )
    length, crop_bins = model.geometry(length, crop_bins, allow_length)
    columns = model.columns(identifiers) if in_order else select_columns(model, assays, identifiers)
    return VariantScorer(
        model,
        Genome(fasta),
        Annotation.read_gtf(gtf),
        columns=columns,
        length=length,
        crop_bins=crop_bins,
        batch_size=batch_size,
        stats=stats,
        protocol=as_protocol(protocol),
        device=device,
    )


def score_variants(
    models: Sequence[str | Path],
    fasta: str | Path,
    gtf: str | Path,
    out: str | Path,
    *,
    vcf: str | Path | None = None,
    eqtls: Sequence[str | Path] | None = None,
    min_pip: float = 0.9,
    head: str | None = None,
    targets: str | Path | None = None,
    identifiers: Sequence[str] | None = None,
    assays: Sequence[str] | None = None,
    stats: Sequence[str] = ("SED", "logSED"),
    formats: Sequence[str] = ("tsv", "parquet"),
    layout: str = "long",
    length: int | None = None,
    crop_bins: int | None = None,
    allow_length: bool = False,
    batch_size: int = 1,
    protocol: Protocol | str = "borzoi",
    device: str | torch.device | None = "auto",
    precision: str = "auto",
    progress: bool = False,
) -> dict:
    """Score the variants of ``vcf`` or of the fine-mapped ``eqtls`` tables (one of the two) on
    the genes around them with ``models`` (several: an ensemble) and write the scores into
    ``out`` (module docstring); returns the ``summary.json`` content.

    Each variant brings four windows of ``length`` base codes, REF and ALT forward and
    reverse-complemented, predicted as (4, length/32 - 2 crop_bins, tracks); per gene the
    statistics are (genes, targets) arrays over the gene's exon bins.

    Args:
        models: ``--model`` values (:func:`flashrna.zoo.resolve_model`); several form an
            ensemble, scored by ``protocol.ensemble``.
        fasta: indexed genome FASTA (plain or bgzip).
        gtf: gene annotation GTF (its exon lines).
        out: output directory.
        vcf: variants (VCF, plain or gzip); multi-allelic lines are split.
        eqtls: instead of ``vcf``: fine-mapped eQTL tables, whose distinct variants with PIP
            above ``min_pip`` are scored (:func:`read_eqtls`).
        min_pip: with ``eqtls``: the PIP threshold.
        head: model head (default: human, else the model's first).
        targets: track table of the head's outputs (default: the model's own).
        identifiers: score only these tracks (a stranded track brings its partner).
        assays: score only tracks of these assays.
        stats: statistics of :data:`STATS` to write.
        formats: outputs of :data:`FORMATS` (``vcf`` needs ``vcf``).
        layout: ``long`` or ``wide`` (:data:`LAYOUTS`) for the TSV and Parquet tables.
        length: input length in bp (default: the model's own, else 524,288).
        crop_bins: output bins dropped at each end (default: the model's own, else 5,120).
        allow_length: run the model on a length it was not built for.
        batch_size: variants per batch.
        protocol: a :class:`Protocol`, or the name of one of :data:`PROTOCOLS`.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        precision: inference precision (:func:`flashrna.model.autocast_dtype`).
        progress: show a progress bar.

    Returns:
        The summary: counts per outcome (``scored``, ``skipped`` by reason, ``swapped``),
        variants/s, the protocol and the settings, the variants' source, FASTA, GTF, model
        and head.
    """
    if (vcf is None) == (eqtls is None):
        raise FlashRNAError("give the variants as a VCF or as eQTL tables (one of the two)")
    scorer = load_scorer(
        models,
        fasta,
        gtf,
        head=head,
        targets=targets,
        identifiers=identifiers,
        assays=assays,
        length=length,
        crop_bins=crop_bins,
        allow_length=allow_length,
        batch_size=batch_size,
        stats=stats,
        protocol=protocol,
        device=device,
        precision=precision,
    )
    out = Path(out)
    if vcf is not None:
        variants = list(read_vcf(vcf))
        source = {"vcf": str(vcf)}
    else:
        variants = eqtl_variants(read_eqtls(eqtls, min_pip))
        source = {"eqtls": [str(p) for p in eqtls], "min_pip": min_pip}
    summary = write_scores(
        scorer,
        variants,
        out,
        formats=formats,
        layout=layout,
        vcf=Path(vcf) if vcf is not None else None,
        progress=progress,
    )
    summary.update(
        source, fasta=str(fasta), gtf=str(gtf), model=scorer.model.name, head=scorer.model.head
    )
    write_json(out / "summary.json", summary)
    log.info(
        "%d variants scored (%d with REF written in), %d skipped %s; %.2f variants/s; %s",
        summary["scored"],
        summary["swapped"],
        sum(summary["skipped"].values()),
        summary["skipped"],
        summary["variants_per_second"],
        out,
    )
    return summary


# --------------------------------------------------------------------------------------------
# flashrna bench variants
# --------------------------------------------------------------------------------------------


def register_bench(parser: argparse.ArgumentParser) -> None:
    from flashrna.model import PRESETS

    parser.description = (
        "Score random SNVs on a random genome with genes every 25 kb (10 exons each) with a "
        "randomly initialised model, through score-variants' own code (windows, genes, the "
        "device reduction, the output files); print variants/s per wall-clock and per CPU "
        "second. The inputs are kept in --workdir when given, to time other versions on them."
    )
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--length", type=int, default=16_384, help="input bp")
    parser.add_argument(
        "--crop-bins", type=int, help="bins cropped at each end (default: Borzoi's share, 5/16)"
    )
    parser.add_argument("--variants", type=int, default=16, help="variants to score (timed)")
    parser.add_argument("--batch-size", type=int, default=1, help="variants per batch")
    parser.add_argument("--tracks", type=int, default=89, help="tracks scored (GTEx: 89)")
    parser.add_argument(
        "--head-tracks", type=int, help="model outputs (default: the preset's, at least --tracks)"
    )
    parser.add_argument("--format", nargs="+", choices=FORMATS[:3], default=["tsv"])
    parser.add_argument("--layout", choices=LAYOUTS, default="long")
    add_protocol_arguments(parser)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--workdir", type=Path, help="keep the inputs and outputs here")
    parser.add_argument("--output", type=Path, help="write the result as JSON here")
    parser.set_defaults(run=_run_bench)


def write_bench_inputs(
    directory: Path, preset: str, length: int, variants: int, tracks: int, head_tracks: int | None
) -> dict[str, Path]:
    """A random genome (``genome.fa``), genes every 25 kb with 10 exons of 150 bp 1.5 kb apart
    (``genes.gtf``), SNVs within 250 bp of an exon (``variants.vcf``) and a random ``preset``
    model whose first ``tracks`` outputs are GTEx-like RNA tracks (``model/``) in
    ``directory``."""
    from flashrna.model import build_model, model_config, save_model

    rng = np.random.default_rng(0)
    size = length + 25_000 * (variants // 2 + 1)
    bases = np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, size)].tobytes().decode()
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / name for name in ("genome.fa", "genes.gtf", "variants.vcf")}
    (directory / "genome.fa.fai").unlink(missing_ok=True)  # a stale index would be trusted
    lines = [bases[k : k + 80] for k in range(0, size, 80)]
    paths["genome.fa"].write_text(">chrB\n" + "\n".join(lines) + "\n")
    starts = range(length // 2, size - length // 2 - 15_000, 25_000)
    exons = [
        f"chrB\tb\texon\t{start + 1500 * k + 1}\t{start + 1500 * k + 150}\t.\t{'+-'[g % 2]}\t.\t"
        f'gene_id "G{g}"; transcript_id "T{g}";'
        for g, start in enumerate(starts)
        for k in range(10)
    ]
    paths["genes.gtf"].write_text("\n".join(exons) + "\n")
    exon_starts = [start + 1500 * k for start in starts for k in range(10)]
    chosen = rng.choice(exon_starts, variants, replace=len(exon_starts) < variants)
    positions = np.sort(chosen + rng.integers(-100, 250, variants))
    records = []
    for k, pos in enumerate(positions):
        ref = bases[pos - 1]
        records.append(f"chrB\t{pos}\tv{k}\t{ref}\t{'C' if ref != 'C' else 'T'}")
    paths["variants.vcf"].write_text("\n".join(records) + "\n")
    heads = {"human": head_tracks or max(tracks, model_config(preset).heads["human"])}
    torch.manual_seed(0)
    model = build_model(preset, heads=heads)
    paths["model"] = directory / "model"
    save_model(model, paths["model"])
    count = heads["human"]
    TrackTable(
        pd.DataFrame(
            {
                "identifier": [f"GTEX-{k}" if k < tracks else f"OTHER-{k}" for k in range(count)],
                "file": "x.bw",
                "clip": 768,
                "clip_soft": 384,
                "scale": 0.01,
                "sum_stat": "sum_sqrt",
                "strand_pair": range(count),
                "description": "RNA:bench",
                "source_index": range(count),
            }
        ),
        source="bench tracks",
    ).write(paths["model"] / "targets-human.txt")
    return paths


def _run_bench(args: argparse.Namespace) -> None:
    import tempfile

    from flashrna.bench.timing import device_description

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    crop = args.crop_bins if args.crop_bins is not None else (args.length // BIN_SIZE) * 5 // 16
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        paths = write_bench_inputs(
            workdir, args.preset, args.length, args.variants + args.batch_size, args.tracks,
            args.head_tracks,
        )  # fmt: skip
        model = load_track_model([paths["model"]], head="human", device=device)
        scorer = VariantScorer(
            model,
            Genome(paths["genome.fa"]),
            Annotation.read_gtf(paths["genes.gtf"]),
            columns=np.arange(args.tracks),
            length=args.length,
            crop_bins=crop,
            batch_size=args.batch_size,
            stats=["logSED"],
            protocol=protocol_from_args(args),
            device=device,
        )
        variants = list(read_vcf(paths["variants.vcf"]))
        warmup, timed = variants[: args.batch_size], variants[args.batch_size :]
        write_scores(scorer, warmup, workdir / "warmup", formats=args.format)
        cpu = time.process_time()
        summary = write_scores(scorer, timed, workdir / "out", formats=args.format,
                               layout=args.layout)  # fmt: skip
        cpu = time.process_time() - cpu
    result = {
        "benchmark": "variants",
        "device": device_description(device),
        "torch": torch.__version__,
        "preset": args.preset,
        "length": args.length,
        "crop_bins": crop,
        "tracks": args.tracks,
        "head_tracks": len(model.tracks),
        "variants": summary["scored"],
        "variant_genes": summary["variant_genes"],
        "batch_size": args.batch_size,
        "protocol": summary["protocol"],
        "formats": args.format,
        "layout": args.layout,
        "seconds": summary["seconds"],
        "cpu_seconds": cpu,
        "variants_per_s": summary["variants_per_second"],
        "variants_per_cpu_s": summary["scored"] / cpu if cpu else None,
    }
    print(
        f"{result['device']}: preset {args.preset}, {args.length:,} bp, {args.tracks} of "
        f"{result['head_tracks']} tracks, batch {args.batch_size}: "
        f"{result['variants_per_s']:.3f} variants/s ({result['variants_per_cpu_s']:.3f} per CPU s)"
    )
    if args.output:
        write_json(args.output, result)
