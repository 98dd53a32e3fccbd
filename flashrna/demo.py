"""``flashrna demo-data``: a small synthetic data set in the real formats and the real layout.

The demo lets the whole workflow run on two CPU cores in minutes: the same rules, readers and
file formats as the paper run, on a genome of a few Mbp. ``flashrna demo-data --out DIR`` writes a
*mirror* of the remote sources under ``DIR`` (what ``config/demo-manifest.tsv`` downloads from,
with ``download.source_root: DIR``), plus the ground truth of the planted grammar::

    borzoi-paper/data/{hg38,mm10}/          like gs://borzoi-paper/data/
        sequences.bed                       chrom start end foldK (the target windows)
        statistics.json                     num_targets, seq_length, seq_1hot, pool_width, crop_bp,
                                            target_length, fold{k}_seqs
        targets.txt                         the Borzoi track table (CAGE, DNASE, ATAC, CHIP, RNA)
        tfrecords/fold{k}-{i}.tfr           whole-file ZLIB, `sequence` uint8 [seq_length],
                                            `target` float16 [target_length, num_targets]
    seqnn-share/helper/dependencies/{hg38,mm10}.ml.fa.gz     gzip FASTA (as the real one)
    seqnn-share/helper/gencode41_basic_nort.gtf.gz           GENCODE-style GTF (human)
    gtex/GTEx_49tissues_release1.tsv.bgz    fine-mapped eQTLs, the columns of Wang et al. 2021
    zenodo/6326409/datasets.zip             Saluki half-life TFRecords:
        datasets/deeplearning/train_gru/f{F}_c0/data0/statistics.json
        datasets/deeplearning/train_gru/f{F}_c0/data0/tfrecords/{train,valid,test}-{i}.tfr
    ribonn/te_human.tsv                     RiboNN-format translation efficiency
    borzoi-paper/qtl/eqtl/susie_pip90/<tissue>_{pos,neg}.vcf   eQTL prioritisation pairs
    crispr_comparison/resources/crispr_data/EPCrisprBenchmark_ensemble_data_GRCh38.tsv.gz
    flowfish/variant_flowfish_ppif.tsv      Variant-FlowFISH-like edits of one gene
    ucsc/hg19ToHg38.over.chain.gz           a chain from the demo's "hg19" to its hg38
    truth/                                  the planted grammar's ground truth (not downloaded)

Sizes (default :data:`DEMO`): inputs of 16,384 bp, targets of 8,192 bp = 256 bins of 32 bp
(crop 4,096 bp each side), 16 records a TFRecord file; human 216 windows on 4 contigs (1.9 Mbp),
mouse 80 windows on 2 contigs (0.7 Mbp). Folds: test fold3, valid fold4. Human fold0 and fold4
and mouse fold3 hold a multiple of 16 windows, so each ends with an empty file (Borzoi's quirk).

Planted grammar (the rules the models should learn; everything below is exact in ``truth/``):

- Motifs (either strand): general activators ``ACT1`` TGACGTCATC and ``ACT2`` GGGGCGGGGC; a
  CTCF-like insulator CCGCGAGGTGGCAG (chromatin only); one enhancer motif per tissue
  (:data:`TISSUE_MOTIFS`). Motif counts come from scanning the final genome, so chance
  occurrences count too.
- Genes: compact (2-4 exons of 100-300 bp, introns of 100-300 bp), on either strand, up to two
  per target window (TSS ranges :data:`GENE_SLOTS`, so genes never overlap). Their structure is
  written into the sequence, so RNA coverage can be placed from sequence alone: exons are GC-rich
  (``EXON_GC``), a TATA box sits at TSS−31, and every internal exon boundary of a gene's first
  transcript has a splice donor (GTAAGT) after the exon and an acceptor (TTTTCTTTTCAG) before
  the next one, all in gene orientation.
- Gene expression (per-bp read depth over exons, per tissue ``t``)::

      log2 E[g, t] = 0.5 + 2.4 n_ACT1 + 1.5 n_ACT2 + 2.4 n_TIS_t + u_g,   u_g ~ N(0, 0.3²)

  n_ACT* counts motifs in the promoter, TSS−450 … TSS−120 (in gene orientation: upstream of the
  first exon, so a motif's own chromatin signal does not sit on the exons it regulates); n_TIS_t
  counts tissue t's motif within ±1.5 kb of the TSS. Effects are large and close to the genes
  on purpose: a tiny model learns them in a few hundred steps on a CPU (about 400; before that a
  model predicts the exons but not their level, and its eQTL ρ is near 0 or negative).
- Coverage: RNA over exons at depth E (introns 3 %), stranded tracks (``+``/``−`` pairs) see only
  their strand's genes, GTEx-like tracks (unstranded, scale 0.01) both; CAGE a peak at the TSS;
  DNASE/ATAC peaks (sd 60 bp) at promoters and at motif sites (a tissue motif opens chromatin only
  in its tissue's tracks); one CHIP track per motif with peaks at its sites. Multiplicative gamma
  noise (cv 0.3) and a small background; then Borzoi's pool/squash transform (``tracks.py``).
- eQTLs (human): SNPs that destroy a planted motif or complete a one-mismatch near-motif in a
  promoter (ACT1/ACT2: an eQTL in every tissue) or enhancer (tissue motif: in that tissue only).
  True effect = the change of log2 E; ``beta_posterior`` = 0.5 × effect + N(0, 0.1²); PIP > 0.9.
  Low-PIP null variants pad the table; rows exist for methods SUSIE and FINEMAP.
- Flashzoi's benchmarks (``write_flashzoi_benchmarks``; each added file is new, so the others
  keep their bytes): per GTEx tissue its fine-mapped eQTLs (SuSiE, PIP > 0.9) against as many
  negative SNVs at the same distance from a TSS (within ``negative_jitter``) that make or break no
  motif, as Borzoi's QTL VCFs; CRISPRi pairs of ``crispri_genes`` genes in the EPCrisprBenchmark
  layout, for genes half of which have a promoter activator: each gene's promoter-proximal element
  and distal elements 650-1,500 bp away (on motif sites, and motif-free), regulated when silencing
  removes planted regulators of the gene in the cell type ``CELL_TYPE`` (promoter activators, its
  enhancers; EffectSize 2^(-w) - 1); Variant-FlowFISH-like substitutions in
  and beside the promoter and enhancer motifs of one gene (the demo's PPIF) and a few indels,
  measured as 100 (2^delta - 1) % + noise, in "hg19" coordinates (hg38 + ``hg19_offset``) with a
  chain file.
- Half-life (Saluki format): target = 1 − 0.5 n_ATTTA(3′UTR) − 0.15 log2(len 3′UTR / 300) + noise.
- Translation efficiency (RiboNN format): TE = 0.5 + 0.9 [Kozak: A/G at −3 and G at +4]
  − 0.7 n_uATG(5′UTR) − 2 (GC(5′UTR) − 0.55) + a cell-type offset + noise (5′UTR GC drawn from
  0.35-0.75: structured, GC-rich 5′ UTRs are translated less; a composition a trunk pretrained
  on genomic tracks represents, unlike the start-codon context).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from flashrna.download import ManifestRow, tfrecord_names, write_manifest
from flashrna.genome import encode_sequence
from flashrna.tfrecord import write_examples
from flashrna.tracks import TrackTable
from flashrna.utils import FlashRNAError, atomic_directory, write_json

log = logging.getLogger(__name__)

BASES = "ACGT"
ACT_MOTIFS = {"ACT1": "TGACGTCATC", "ACT2": "GGGGCGGGGC"}
ACT_WEIGHTS = {"ACT1": 2.4, "ACT2": 1.5}
CTCF_MOTIF = "CCGCGAGGTGGCAG"
TISSUE_MOTIFS = {
    "adipose_tissue": "TCCTAGAACGTA",
    "blood": "AGATAAGGCA",
    "brain": "CAGCTGTCCGAT",
    "liver": "GTTAATCATTAAC",
}
TISSUE_WEIGHT = 2.4
# GTEx tissue (eQTL table) -> track description tissue (targets.txt "RNA:<tissue>").
GTEX_TISSUES = {
    "Adipose_Subcutaneous": "adipose_tissue",
    "Whole_Blood": "blood",
    "Brain_Cortex": "brain",
    "Liver": "liver",
}
PROMOTER = (-450, -120)  # relative to the TSS, in gene orientation
# Gene structure written into the genome (gene orientation), so RNA coverage can be placed from
# sequence: GC-rich exons, a TATA box at TSS-31, a splice donor after and an acceptor (a
# polypyrimidine tract + AG) before every internal exon boundary.
EXON_GC = 0.62
TATA_BOX = ("TATAAAAG", -31)
SPLICE_DONOR = "GTAAGT"
SPLICE_ACCEPTOR = "TTTTCTTTTCAG"
ENHANCER_REACH = 1500
# TSS ranges (bp into a target window) of its genes: two per window, 1.6 kb apart at least.
GENE_SLOTS = ((1200, 2600), (5400, 7000))
ARE_MOTIF = "ATTTA"
CELL_TYPE = "blood"  # the CRISPRi and Variant-FlowFISH cell type (its motif is the enhancer)
TE_CELL_TYPES = {"HEK293": 0.0, "HepG2": 0.2}
MARKER = ".flashrna-demo"
# Mirror paths of the Flashzoi benchmarks' sources (the real ones: config/manifest.tsv).
PRIORITISATION_DIR = "borzoi-paper/qtl/eqtl/susie_pip90"
CRISPRI_FILE = (
    "crispr_comparison/resources/crispr_data/EPCrisprBenchmark_ensemble_data_GRCh38.tsv.gz"
)
FLOWFISH_FILE = "flowfish/variant_flowfish_ppif.tsv"
CHAIN_FILE = "ucsc/hg19ToHg38.over.chain.gz"


@dataclass(frozen=True)
class SpeciesSpec:
    """One species of the demo bucket."""

    genome: str  # hg38 / mm10
    contigs: int
    fold_sizes: tuple[int, ...]  # windows per fold0..fold7
    tissues: tuple[str, ...]  # tissue names of the expression model
    gtex_samples: int  # unstranded GTEx-like tracks per tissue (0: none)
    rna_pairs: int  # stranded RNA +/- pairs
    cage_pairs: int
    dnase: int
    atac: int
    chip: bool


@dataclass(frozen=True)
class DemoSpec:
    """Sizes of the demo; :data:`DEMO` is the one the workflow and its manifest use."""

    seq_length: int = 16_384
    target_length: int = 256
    pool_width: int = 32
    records_per_file: int = 16
    margin: int = 16_384  # bp of genome beyond the outermost input windows
    species: dict[str, SpeciesSpec] = field(
        default_factory=lambda: {
            "human": SpeciesSpec(
                genome="hg38",
                contigs=4,
                fold_sizes=(32, 30, 28, 24, 16, 30, 29, 27),
                tissues=tuple(TISSUE_MOTIFS),
                gtex_samples=2,
                rna_pairs=4,
                cage_pairs=2,
                dnase=6,
                atac=4,
                chip=True,
            ),
            "mouse": SpeciesSpec(
                genome="mm10",
                contigs=2,
                fold_sizes=(10, 9, 8, 16, 8, 9, 10, 10),
                tissues=("brain", "liver"),
                gtex_samples=0,
                rna_pairs=2,
                cage_pairs=1,
                dnase=4,
                atac=2,
                chip=False,
            ),
        }
    )
    act_eqtls: int = 36  # promoter variants (an eQTL in every tissue)
    tissue_eqtls: int = 14  # enhancer variants per tissue
    null_eqtls: int = 60  # low-PIP rows
    transcripts: int = 400  # Saluki and RiboNN each
    saluki_length: int = 2048  # length_t: the padded length
    saluki_folds: int = 10
    saluki_per_file: int = 256
    # Flashzoi's benchmarks (module docstring).
    negative_jitter: int = 100  # bp: a negative's TSS distance is its positive's within this
    crispri_genes: int = 32  # genes of the CRISPRi table
    crispri_nearest: int = 650  # bp from the TSS of the nearest distal element's centre
    crispri_element: int = 300  # bp of a tested element
    crispri_random: int = 3  # motif-free distal elements per gene
    hg19_offset: int = 1000  # the demo's "hg19" coordinates are its hg38 ones plus this

    @property
    def crop_bp(self) -> int:
        return (self.seq_length - self.target_length * self.pool_width) // 2

    @property
    def target_bp(self) -> int:
        return self.target_length * self.pool_width


DEMO = DemoSpec()


# ---------------------------------------------------------------------------------------------
# The file list (the manifest) — a function of the spec alone
# ---------------------------------------------------------------------------------------------


def demo_manifest(spec: DemoSpec = DEMO) -> list[ManifestRow]:
    """Every file of the demo mirror: its path under ``--out`` (the source) and its destination
    under the workflow's data directory, in the layout of the paper manifest."""
    rows = []
    for sp in spec.species.values():
        src, dst = f"borzoi-paper/data/{sp.genome}", f"borzoi/{sp.genome}"
        for name in ("sequences.bed", "statistics.json", "targets.txt"):
            rows.append(ManifestRow(f"{src}/{name}", f"{dst}/{name}"))
        sizes = {f"fold{k}": n for k, n in enumerate(sp.fold_sizes)}
        for name in tfrecord_names(sizes, spec.records_per_file):
            rows.append(ManifestRow(f"{src}/tfrecords/{name}", f"{dst}/tfrecords/{name}"))
    for sp in spec.species.values():
        name = f"{sp.genome}.ml.fa.gz"
        rows.append(
            ManifestRow(
                f"seqnn-share/helper/dependencies/{name}", f"genome/{name}", unpack="gunzip"
            )
        )
    gtf = "gencode41_basic_nort.gtf.gz"
    rows.append(ManifestRow(f"seqnn-share/helper/{gtf}", f"genes/{gtf}", unpack="gunzip"))
    eqtl = "GTEx_49tissues_release1.tsv.bgz"
    rows.append(ManifestRow(f"gtex/{eqtl}", f"eqtl/{eqtl}", unpack="gunzip"))
    rows.append(
        ManifestRow(
            "zenodo/6326409/datasets.zip",
            "saluki/datasets.zip",
            unpack="unzip:datasets/deeplearning/train_gru/f*_c0/data0/*",
        )
    )
    rows.append(ManifestRow("ribonn/te_human.tsv", "ribonn/te_human.tsv"))
    human = spec.species["human"]
    for gtex, tissue in GTEX_TISSUES.items():
        if tissue in human.tissues:
            for kind in ("pos", "neg"):
                name = f"{gtex}_{kind}.vcf"
                rows.append(ManifestRow(f"{PRIORITISATION_DIR}/{name}", f"qtl/eqtl/{name}"))
    rows.append(ManifestRow(CRISPRI_FILE, f"crispri/{Path(CRISPRI_FILE).name}"))
    rows.append(ManifestRow(FLOWFISH_FILE, "flowfish/variant_flowfish.tsv"))
    rows.append(ManifestRow(CHAIN_FILE, "liftover/hg19ToHg38.over.chain.gz"))
    return rows


# ---------------------------------------------------------------------------------------------
# Sequence helpers
# ---------------------------------------------------------------------------------------------

_RC = str.maketrans("ACGTN", "TGCAN")


def revcomp(sequence: str) -> str:
    return sequence.translate(_RC)[::-1]


def random_dna(rng: np.random.Generator, n: int, gc: float = 0.41) -> str:
    p = np.array([1 - gc, gc, gc, 1 - gc]) / 2
    return np.frombuffer(b"ACGT", np.uint8)[rng.choice(4, size=n, p=p)].tobytes().decode()


def find_sites(sequence: str, motif: str) -> list[int]:
    """Start positions of ``motif`` on either strand (overlaps included)."""
    pattern = f"(?=({motif}|{revcomp(motif)}))" if motif != revcomp(motif) else f"(?={motif})"
    return [m.start() for m in re.finditer(pattern, sequence)]


def _mutate_away(rng: np.random.Generator, base: str) -> str:
    return rng.choice([b for b in BASES if b != base])


# ---------------------------------------------------------------------------------------------
# Genome, genes, motifs
# ---------------------------------------------------------------------------------------------


@dataclass
class Gene:
    gene_id: str
    name: str
    chrom: str
    strand: str
    tss: int  # 0-based position of the first transcribed base
    transcripts: list[list[tuple[int, int]]]  # per transcript: exons [start, end), genome order
    log2_expression: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def exons(self) -> list[tuple[int, int]]:
        """Union of the transcripts' exons, merged and sorted."""
        merged: list[list[int]] = []
        for start, end in sorted(e for t in self.transcripts for e in t):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        return [(a, b) for a, b in merged]

    @property
    def span(self) -> tuple[int, int]:
        exons = [e for t in self.transcripts for e in t]
        return min(a for a, _ in exons), max(b for _, b in exons)

    def promoter(self) -> tuple[int, int]:
        lo, hi = PROMOTER
        if self.strand == "+":
            return self.tss + lo, self.tss + hi
        return self.tss - hi + 1, self.tss - lo + 1


@dataclass
class Planted:
    """A motif written into the genome (for the eQTL picks)."""

    chrom: str
    start: int
    motif: str  # motif name
    gene: Gene
    near: int = -1  # index mutated away (a one-mismatch near-motif), -1 for an exact instance


class Occupancy:
    """Positions already written, so planted motifs never overlap."""

    def __init__(self, lengths: dict[str, int]) -> None:
        self.used = {c: np.zeros(n, bool) for c, n in lengths.items()}

    def mark(self, chrom: str, start: int, length: int) -> None:
        """Record positions written unconditionally (gene structure)."""
        self.used[chrom][max(start, 0) : start + length] = True

    def claim(self, chrom: str, start: int, length: int) -> bool:
        used = self.used[chrom]
        if start < 0 or start + length > len(used) or used[start - 2 : start + length + 2].any():
            return False
        used[start : start + length] = True
        return True


@dataclass
class SpeciesData:
    spec: SpeciesSpec
    chroms: dict[str, str]
    windows: pd.DataFrame  # chrom start end label (target windows, file order)
    genes: list[Gene]
    sites: dict[str, list[tuple[int, str]]]  # chrom -> [(start, motif name)]
    planted: list[Planted]
    tracks: TrackTable
    track_defs: list[dict]


def _layout_windows(
    rng: np.random.Generator, spec: DemoSpec, sp: SpeciesSpec
) -> tuple[dict[str, int], pd.DataFrame]:
    """Contig lengths and the target windows: folds are contiguous blocks of windows (so test
    windows do not sit between training windows), rows shuffled within each fold."""
    total = sum(sp.fold_sizes)
    per_contig = -(-total // sp.contigs)
    labels = np.repeat([f"fold{k}" for k in range(len(sp.fold_sizes))], sp.fold_sizes)
    rows = []
    lengths = {}
    for c in range(sp.contigs):
        chrom = f"chr{c + 1}"
        n = min(per_contig, total - c * per_contig)
        lengths[chrom] = 2 * spec.margin + n * spec.target_bp
        for w in range(n):
            start = spec.margin + w * spec.target_bp
            rows.append((chrom, start, start + spec.target_bp, labels[c * per_contig + w]))
    windows = pd.DataFrame(rows, columns=["chrom", "start", "end", "label"])
    order = []
    for label in dict.fromkeys(labels):
        index = np.flatnonzero(windows["label"].to_numpy() == label)
        order += list(rng.permutation(index))
    return lengths, windows.iloc[order].reset_index(drop=True)


def _place_genes(
    rng: np.random.Generator, sp: SpeciesSpec, windows: pd.DataFrame, prefix: str
) -> list[Gene]:
    """Compact genes (2-4 exons, at most ~1.2 kb), both strands: up to one per half of each
    target window (TSS 1.2-2.6 kb into the half... see GENE_SLOTS), so genes never overlap."""
    genes = []
    for row, (lo, hi) in (
        (row, slot)
        for row in windows.sort_values(["chrom", "start"]).itertuples()
        for slot in GENE_SLOTS
    ):
        if rng.random() > 0.85:
            continue
        strand = "+" if rng.random() < 0.5 else "-"
        tss = int(rng.integers(row.start + lo, row.start + hi))
        exons, pos = [], 0
        for _ in range(int(rng.integers(2, 5))):
            length = int(rng.integers(100, 300))
            exons.append((pos, pos + length))
            pos += length + int(rng.integers(100, 300))
        transcripts = [exons]
        if len(exons) > 2 and rng.random() < 0.25:  # an isoform skipping an inner exon
            skip = int(rng.integers(1, len(exons) - 1))
            transcripts.append([e for i, e in enumerate(exons) if i != skip])

        def to_genome(offsets, tss=tss, strand=strand):
            if strand == "+":
                return [(tss + a, tss + b) for a, b in offsets]
            return sorted((tss - b + 1, tss - a + 1) for a, b in offsets)

        number = len(genes) + 1
        genes.append(
            Gene(
                gene_id=f"{prefix}{number:011d}.{1 + number % 7}",
                name=f"DEMO{number}",
                chrom=row.chrom,
                strand=strand,
                tss=tss,
                transcripts=[to_genome(t) for t in transcripts],
            )
        )
    return genes


def _plant(
    rng: np.random.Generator,
    chroms: dict[str, bytearray],
    occupancy: Occupancy,
    chrom: str,
    lo: int,
    hi: int,
    sequence: str,
) -> int | None:
    """Write ``sequence`` (random orientation) at a free position in ``[lo, hi)``."""
    if rng.random() < 0.5:
        sequence = revcomp(sequence)
    for _ in range(30):
        if hi - len(sequence) <= lo:
            return None
        start = int(rng.integers(lo, hi - len(sequence)))
        if occupancy.claim(chrom, start, len(sequence)):
            chroms[chrom][start : start + len(sequence)] = sequence.encode()
            return start
    return None


def _build_species(rng: np.random.Generator, spec: DemoSpec, name: str) -> SpeciesData:
    sp = spec.species[name]
    lengths, windows = _layout_windows(rng, spec, sp)
    chroms = {c: bytearray(random_dna(rng, n).encode()) for c, n in lengths.items()}
    for c in chroms:  # a leading N run, as at real chromosome ends
        chroms[c][:2000] = b"N" * 2000
    prefix = "ENSG" if sp.genome.startswith("hg") else "ENSMUSG"
    genes = _place_genes(rng, sp, windows, prefix)
    occupancy = Occupancy(lengths)
    for gene in genes:
        _write_gene_structure(rng, chroms[gene.chrom], occupancy, gene)
    for gene in genes:  # keep TSS surroundings free of other genes' planted motifs
        occupancy.claim(gene.chrom, gene.tss - 1, 2)

    planted: list[Planted] = []
    for gene in genes:
        lo, hi = gene.promoter()
        for motif, sequence in ACT_MOTIFS.items():
            n = rng.choice([0, 1, 2], p=[0.35, 0.45, 0.2]) if motif == "ACT1" else rng.integers(2)
            for _ in range(int(n)):
                start = _plant(rng, chroms, occupancy, gene.chrom, lo, hi, sequence)
                if start is not None:
                    planted.append(Planted(gene.chrom, start, motif, gene))
            if rng.random() < 0.3:  # a near-motif that an eQTL can complete
                near = int(rng.integers(2, len(sequence) - 2))
                broken = sequence[:near] + _mutate_away(rng, sequence[near]) + sequence[near + 1 :]
                start = _plant(rng, chroms, occupancy, gene.chrom, lo, hi, broken)
                if start is not None:
                    planted.append(Planted(gene.chrom, start, motif, gene, near=near))
        for tissue in sp.tissues:
            sequence = TISSUE_MOTIFS[tissue]
            elo, ehi = gene.tss - ENHANCER_REACH, gene.tss + ENHANCER_REACH
            if rng.random() < 0.35:
                for _ in range(int(rng.integers(1, 3))):
                    start = _plant(rng, chroms, occupancy, gene.chrom, elo, ehi, sequence)
                    if start is not None:
                        planted.append(Planted(gene.chrom, start, tissue, gene))
            if rng.random() < 0.25:
                near = int(rng.integers(2, len(sequence) - 2))
                broken = sequence[:near] + _mutate_away(rng, sequence[near]) + sequence[near + 1 :]
                start = _plant(rng, chroms, occupancy, gene.chrom, elo, ehi, broken)
                if start is not None:
                    planted.append(Planted(gene.chrom, start, tissue, gene, near=near))
    for row in windows.itertuples():  # about one insulator per window
        _plant(rng, chroms, occupancy, row.chrom, row.start, row.end, CTCF_MOTIF)

    text = {c: s.decode() for c, s in chroms.items()}
    motifs = {**ACT_MOTIFS, "CTCF": CTCF_MOTIF, **{t: TISSUE_MOTIFS[t] for t in sp.tissues}}
    sites = {
        c: sorted((p, m) for m, seq in motifs.items() for p in find_sites(s, seq))
        for c, s in text.items()
    }
    for gene in genes:
        _express(rng, gene, sites[gene.chrom], sp.tissues)
    tracks, defs = _track_table(sp)
    return SpeciesData(sp, text, windows, genes, sites, planted, tracks, defs)


def _write_gene_structure(
    rng: np.random.Generator, chrom: bytearray, occupancy: Occupancy, gene: Gene
) -> None:
    """Write a gene's sequence signals (``EXON_GC`` exons, ``TATA_BOX``, splice sites of its
    first transcript) into ``chrom`` and mark the signals as used, so no motif lands on them."""
    for a, b in gene.exons:
        chrom[a:b] = random_dna(rng, b - a, gc=EXON_GC).encode()
    minus = gene.strand == "-"

    def put(offset: int, text: str) -> None:
        """``text`` (gene orientation) at ``offset`` bases from the TSS (gene orientation)."""
        start = gene.tss - offset - len(text) + 1 if minus else gene.tss + offset
        if start < 0 or start + len(text) > len(chrom):
            return
        chrom[start : start + len(text)] = (revcomp(text) if minus else text).encode()
        occupancy.mark(gene.chrom, start, len(text))

    # Exons in gene orientation as offsets [a, b) from the TSS.
    exons = sorted(
        (gene.tss - e + 1, gene.tss - s + 1) if minus else (s - gene.tss, e - gene.tss)
        for s, e in gene.transcripts[0]
    )
    text, offset = TATA_BOX
    put(offset, text)
    for k, (a, b) in enumerate(exons):
        if k > 0:
            put(a - len(SPLICE_ACCEPTOR), SPLICE_ACCEPTOR)
        if k < len(exons) - 1:
            put(b, SPLICE_DONOR)


def _motif_counts(gene: Gene, sites: list[tuple[int, str]], tissues: Iterable[str]) -> dict:
    lo, hi = gene.promoter()
    counts = dict.fromkeys([*ACT_MOTIFS, *tissues], 0)
    for start, motif in sites:
        if motif in ACT_MOTIFS:
            counts[motif] += lo <= start and start + len(ACT_MOTIFS[motif]) <= hi
        elif motif in counts:
            counts[motif] += abs(start - gene.tss) <= ENHANCER_REACH
    return counts


def _express(rng: np.random.Generator, gene: Gene, sites, tissues) -> None:
    gene.counts = _motif_counts(gene, sites, tissues)
    base = 0.5 + sum(ACT_WEIGHTS[m] * gene.counts[m] for m in ACT_MOTIFS) + rng.normal(0, 0.3)
    gene.log2_expression = {t: base + TISSUE_WEIGHT * gene.counts[t] for t in tissues}


# ---------------------------------------------------------------------------------------------
# Tracks and coverage
# ---------------------------------------------------------------------------------------------


def _track_table(sp: SpeciesSpec) -> tuple[TrackTable, list[dict]]:
    """The Borzoi table in real order (CAGE, DNASE, ATAC, CHIP, RNA) with real clip/scale
    settings, and a simulation recipe per track."""
    rows: list[tuple] = []  # identifier, file, clip, clip_soft, scale, sum_stat, description
    defs: list[dict] = []
    species = "human" if sp.genome.startswith("hg") else "mouse"
    root = f"/demo/{species}"
    tissues = sp.tissues

    def add(ident, path, clip, soft, scale, stat, desc, **recipe):
        rows.append((ident, f"{root}/{path}", clip, soft, scale, stat, desc))
        defs.append(recipe)

    for k in range(sp.cage_pairs):
        tissue = tissues[k % len(tissues)]
        for strand in "+-":
            add(
                f"CNhsDEMO{k}{strand}",
                f"cage/CNhsDEMO{k}/coverage{strand}.w5",
                768,
                384,
                1.0,
                "sum",
                f"CAGE:{tissue} demo",
                kind="cage",
                strand=strand,
                tissue=tissue,
            )
    for k in range(sp.dnase):
        tissue = tissues[k] if k < len(tissues) else None
        add(
            f"ENCFFDNS{k:03d}",
            f"dnase/ENCFFDNS{k:03d}.w5",
            128,
            32,
            2.0,
            "mean",
            f"DNASE:{tissue or 'mixed'} demo",
            kind="dnase",
            tissue=tissue,
            height=40.0,
        )
    for k in range(sp.atac):
        tissue = tissues[k] if k < len(tissues) else None
        # Most real ATAC tracks: scale 0.01, soft clip 96; a few: scale 1, soft clip 64.
        clip, soft, scale = (384, 96, 0.01) if k < sp.atac - 1 else (256, 64, 1.0)
        add(
            f"GSMATAC{k:03d}",
            f"atac/GSMATAC{k:03d}.w5",
            clip,
            soft,
            scale,
            "sum",
            f"ATAC:{tissue or 'mixed'} demo",
            kind="atac",
            tissue=tissue,
            height=4.0,
        )
    if sp.chip:
        for motif in (*ACT_MOTIFS, "CTCF", tissues[0]):
            add(
                f"ENCFFCHP{motif}",
                f"chip/{motif}.w5",
                128,
                32,
                2.0,
                "mean",
                f"CHIP:{motif}:demo cells",
                kind="chip",
                motif=motif,
            )
    for k in range(sp.rna_pairs):
        tissue = tissues[k % len(tissues)]
        for strand in "+-":
            add(
                f"ENCFFRNA{k:02d}{strand}",
                f"rna/encode/ENCFFRNA{k:02d}/coverage{strand}.w5",
                768,
                384,
                0.3,
                "sum_sqrt",
                f"RNA:{tissue} tissue demo",
                kind="rna",
                strand=strand,
                tissue=tissue,
                library=1.0,
            )
    for tissue in tissues:
        for s in range(sp.gtex_samples):
            ident = f"GTEX-DEMO{s}-{tissue}.1"
            add(
                ident,
                f"rna/recount3/{tissue}/{ident}/coverage.w5",
                768,
                384,
                0.01,
                "sum_sqrt",
                f"RNA:{tissue}",
                kind="rna",
                strand=".",
                tissue=tissue,
                library=0.8 + 0.4 * s / max(sp.gtex_samples - 1, 1),
            )

    frame = pd.DataFrame(
        rows,
        columns=["identifier", "file", "clip", "clip_soft", "scale", "sum_stat", "description"],
    )
    pair = np.arange(len(frame))
    stranded = [k for k, d in enumerate(defs) if d.get("strand") in ("+", "-")]
    for k in stranded[::2]:  # + then - of each pair are adjacent, as in the real table
        pair[k], pair[k + 1] = k + 1, k
    frame.insert(6, "strand_pair", pair)
    frame["source_index"] = np.arange(len(frame))
    return TrackTable(frame, source=f"demo {sp.genome} tracks"), defs


_KERNEL = np.exp(-0.5 * (np.arange(-240, 241) / 60.0) ** 2).astype(np.float32)


def _add_peak(row: np.ndarray, center: int, height: float) -> None:
    lo, hi = center - 240, center + 241
    a, b = max(lo, 0), min(hi, len(row))
    if a < b:
        row[a:b] += height * _KERNEL[a - lo : b - lo]


def window_coverage(
    data: SpeciesData, chrom: str, start: int, end: int, rng: np.random.Generator
) -> np.ndarray:
    """Simulated per-bp coverage ``[end - start, tracks]`` (float32) of a target window."""
    size = end - start
    cov = np.zeros((len(data.track_defs), size), np.float32)  # track-major while filling
    for k, d in enumerate(data.track_defs):
        cov[k] += {"rna": 0.05, "cage": 0.02, "dnase": 0.5, "atac": 0.05, "chip": 1.0}[d["kind"]]
    tissues = data.spec.tissues
    for gene in data.genes:
        lo, hi = gene.span
        if gene.chrom != chrom or hi <= start - 300 or lo >= end + 300:
            continue
        mean_level = float(np.mean([2.0 ** gene.log2_expression[t] for t in tissues]))
        exons = [(max(a, start) - start, min(b, end) - start) for a, b in gene.exons]
        a0, b0 = max(lo, start) - start, min(hi, end) - start
        for k, d in enumerate(data.track_defs):
            kind = d["kind"]
            if kind == "rna" and d["strand"] in (".", gene.strand):
                level = 2.0 ** gene.log2_expression[d["tissue"]] * d["library"]
                if a0 < b0:
                    cov[k, a0:b0] += 0.03 * level  # introns
                for a, b in exons:
                    if a < b:
                        cov[k, a:b] += 0.97 * level
            elif kind == "cage" and d["strand"] == gene.strand:
                _add_peak(cov[k], gene.tss - start, 0.2 * 2.0 ** gene.log2_expression[d["tissue"]])
            elif kind in ("dnase", "atac"):
                active = min(mean_level / 64.0, 1.0)
                _add_peak(cov[k], gene.tss - start, d["height"] * (0.3 + 0.7 * active))
    for site, motif in data.sites[chrom]:
        if site < start - 300 or site > end + 300:
            continue
        center = site - start + 5
        for k, d in enumerate(data.track_defs):
            kind = d["kind"]
            if kind in ("dnase", "atac"):
                if motif in TISSUE_MOTIFS and d["tissue"] not in (None, motif):
                    continue
                _add_peak(cov[k], center, 0.6 * d["height"])
            elif kind == "chip" and d["motif"] == motif:
                _add_peak(cov[k], center, 30.0)
    cov *= rng.gamma(11.1, 0.09, size=cov.shape).astype(np.float32)  # mean 1, cv 0.3
    return cov.T


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _write_gzip(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode(), compresslevel=6, mtime=0))


def write_bucket(data: SpeciesData, spec: DemoSpec, root: Path, seed: int) -> None:
    """``sequences.bed``, ``statistics.json``, ``targets.txt`` and the TFRecords of a species."""
    root.mkdir(parents=True, exist_ok=True)
    windows = data.windows
    _write_text(root / "sequences.bed", windows.to_csv(sep="\t", header=False, index=False))
    stats = {
        "num_targets": len(data.tracks),
        "seq_length": spec.seq_length,
        "seq_1hot": True,
        "pool_width": spec.pool_width,
        "crop_bp": spec.crop_bp,
        "target_length": spec.target_length,
        **{
            f"{label}_seqs": int(n)
            for label, n in windows.groupby("label", sort=False).size().items()
        },
    }
    write_json(root / "statistics.json", stats)
    data.tracks.write(root / "targets.txt")
    rng = np.random.default_rng([seed, 7, len(data.tracks)])
    per_file = spec.records_per_file
    for label, group in tqdm(windows.groupby("label", sort=False), desc=f"{root.name} tfrecords"):
        examples = []
        for row in group.itertuples():
            lo, hi = row.start - spec.crop_bp, row.end + spec.crop_bp
            sequence = encode_sequence(data.chroms[row.chrom][lo:hi])
            pooled = data.tracks.pool(window_coverage(data, row.chrom, row.start, row.end, rng))
            target = data.tracks.squash(pooled)
            examples.append({"sequence": sequence.tobytes(), "target": target.tobytes()})
        for i, name in enumerate(tfrecord_names({label: len(group)}, per_file)):
            chunk = examples[i * per_file : (i + 1) * per_file]
            write_examples(root / "tfrecords" / name, chunk, compression="zlib")


def write_fasta(chroms: dict[str, str], path: Path, width: int = 60) -> None:
    lines = []
    for name, sequence in chroms.items():
        lines.append(f">{name}")
        lines += [sequence[i : i + width] for i in range(0, len(sequence), width)]
    _write_gzip(path, "\n".join(lines) + "\n")


def write_gtf(genes: list[Gene], path: Path) -> None:
    """GENCODE-style GTF: gene, transcript and exon lines, sorted by position."""
    lines = ["##description: flashrna demo annotation (GENCODE v41 basic layout)"]

    def attributes(gene: Gene, extra: str = "") -> str:
        return (
            f'gene_id "{gene.gene_id}"; {extra}gene_type "protein_coding"; '
            f'gene_name "{gene.name}"; level 2;'
        )

    for gene in sorted(genes, key=lambda g: (g.chrom, g.span[0])):
        lo, hi = gene.span
        lines.append(
            f"{gene.chrom}\tHAVANA\tgene\t{lo + 1}\t{hi}\t.\t{gene.strand}\t.\t{attributes(gene)}"
        )
        for t, exons in enumerate(gene.transcripts):
            tx = gene.gene_id.replace("G", "T", 1).split(".")[0] + f"{t}.1"
            tx_attr = f'transcript_id "{tx}"; '
            a, b = exons[0][0], exons[-1][1]
            lines.append(
                f"{gene.chrom}\tHAVANA\ttranscript\t{a + 1}\t{b}\t.\t{gene.strand}\t.\t"
                f'{attributes(gene, tx_attr)} transcript_type "protein_coding"; tag "basic";'
            )
            ordered = exons if gene.strand == "+" else exons[::-1]
            for number, (ea, eb) in enumerate(ordered, start=1):
                lines.append(
                    f"{gene.chrom}\tHAVANA\texon\t{ea + 1}\t{eb}\t.\t{gene.strand}\t.\t"
                    f"{attributes(gene, tx_attr)} exon_number {number}; "
                    f'transcript_type "protein_coding"; tag "basic";'
                )
    _write_gzip(path, "\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------
# eQTLs
# ---------------------------------------------------------------------------------------------

EQTL_COLUMNS = [
    "chromosome",
    "start",
    "end",
    "variant",
    "variant_hg38",
    "allele1",
    "allele2",
    "minor_allele",
    "cohort",
    "method",
    "tissue",
    "gene",
    "maf",
    "beta_marginal",
    "se_marginal",
    "z",
    "pip",
    "cs_id",
    "beta_posterior",
    "sd_posterior",
]


def _variant_effect(data: SpeciesData, plant: Planted, rng) -> tuple[int, str, str, float] | None:
    """(0-based position, ref, alt, effect in log2 units) of a SNP that destroys an exact planted
    motif or completes a near-motif; None when the change would touch another motif."""
    motif_seq = ACT_MOTIFS.get(plant.motif) or TISSUE_MOTIFS[plant.motif]
    chrom = data.chroms[plant.chrom]
    here = chrom[plant.start : plant.start + len(motif_seq)]
    forward = here == motif_seq or (plant.near >= 0 and _hamming(here, motif_seq) == 1)
    target = motif_seq if forward else revcomp(motif_seq)
    if plant.near >= 0:
        offset = next((i for i in range(len(target)) if here[i] != target[i]), None)
        if offset is None:
            return None  # completed by a later plant: no longer a near-motif
        ref, alt = here[offset], target[offset]
        sign = 1.0
    else:
        if here != target:
            return None  # overwritten by a later plant
        offset = int(rng.integers(2, len(target) - 2))
        ref = here[offset]
        alt = _mutate_away(rng, ref)
        sign = -1.0
    pos = plant.start + offset
    before = chrom[pos - 20 : pos + 21]
    after = before[:20] + alt + before[21:]
    motifs = [*ACT_MOTIFS.values(), CTCF_MOTIF, *TISSUE_MOTIFS.values()]
    change = sum(len(find_sites(after, m)) - len(find_sites(before, m)) for m in motifs)
    if change != sign:  # exactly one motif instance appears or disappears
        return None
    weight = ACT_WEIGHTS.get(plant.motif, TISSUE_WEIGHT)
    return pos, ref, alt, sign * weight


def _hamming(a: str, b: str) -> int:
    return sum(x != y for x, y in zip(a, b, strict=True))


def make_eqtls(data: SpeciesData, spec: DemoSpec, rng: np.random.Generator) -> pd.DataFrame:
    """The fine-mapped eQTL table (all tissues, methods SUSIE and FINEMAP) and, in ``truth``,
    each variant's true effect."""
    candidates = list(rng.permutation(len(data.planted)))
    picks: dict[str, list] = {"ACT": [], **{t: [] for t in data.spec.tissues}}
    used: set[int] = set()
    for index in candidates:
        plant = data.planted[index]
        group = "ACT" if plant.motif in ACT_MOTIFS else plant.motif
        want = spec.act_eqtls if group == "ACT" else spec.tissue_eqtls
        if len(picks[group]) >= want:
            continue
        effect = _variant_effect(data, plant, rng)
        if effect is None or effect[0] in used:
            continue
        used.add(effect[0])
        picks[group].append((plant, *effect))
    rows = []
    inverse = {v: k for k, v in GTEX_TISSUES.items()}
    for group, chosen in picks.items():
        tissues = data.spec.tissues if group == "ACT" else [group]
        for plant, pos, ref, alt, effect in chosen:
            for tissue in tissues:
                beta = 0.5 * effect + rng.normal(0, 0.1)
                rows.append(
                    _eqtl_row(
                        rng,
                        plant.chrom,
                        pos,
                        ref,
                        alt,
                        inverse[tissue],
                        plant.gene.gene_id,
                        beta,
                        rng.uniform(0.92, 1.0),
                        effect,
                    )
                )
    for _ in range(spec.null_eqtls):
        gene = data.genes[int(rng.integers(len(data.genes)))]
        pos = int(gene.tss + rng.integers(-5000, 5000))
        ref = data.chroms[gene.chrom][pos]
        if ref not in BASES:
            continue
        tissue = inverse[data.spec.tissues[int(rng.integers(len(data.spec.tissues)))]]
        rows.append(
            _eqtl_row(
                rng,
                gene.chrom,
                pos,
                ref,
                _mutate_away(rng, ref),
                tissue,
                gene.gene_id,
                rng.normal(0, 0.05),
                rng.uniform(0.01, 0.5),
                0.0,
            )
        )
    table = pd.DataFrame(rows)
    finemap = table.copy()
    finemap["method"] = "FINEMAP"
    finemap["pip"] = (finemap["pip"] + rng.normal(0, 0.02, len(finemap))).clip(0.001, 1.0)
    table = pd.concat([table, finemap]).sort_values(["chromosome", "start", "tissue", "method"])
    return table.reset_index(drop=True)


def _eqtl_row(rng, chrom, pos, ref, alt, tissue, gene, beta, pip, effect) -> dict:
    se = float(rng.uniform(0.04, 0.09))
    marginal = beta + rng.normal(0, se / 2)
    return {
        "chromosome": chrom,
        "start": pos,  # 0-based, as in the release's BED-like first columns
        "end": pos + 1,
        "variant": f"{chrom}_{pos + 1}_{ref}_{alt}",
        "variant_hg38": f"{chrom}_{pos + 1}_{ref}_{alt}_b38",
        "allele1": ref,
        "allele2": alt,
        "minor_allele": alt,
        "cohort": "GTEx",
        "method": "SUSIE",
        "tissue": tissue,
        "gene": gene,
        "maf": round(float(rng.uniform(0.05, 0.5)), 6),
        "beta_marginal": round(float(marginal), 6),
        "se_marginal": round(se, 6),
        "z": round(float(marginal / se), 5),
        "pip": round(float(pip), 6),
        "cs_id": 1,
        "beta_posterior": round(float(beta), 6),
        "sd_posterior": round(float(rng.uniform(0.02, 0.05)), 6),
        "true_effect": effect,
    }


def write_bgzip_tsv(frame: pd.DataFrame, path: Path) -> None:
    from Bio import bgzf

    path.parent.mkdir(parents=True, exist_ok=True)
    with bgzf.BgzfWriter(str(path), "wb") as handle:
        handle.write(frame.to_csv(sep="\t", index=False).encode())


# ---------------------------------------------------------------------------------------------
# Transcripts: Saluki half-life and RiboNN translation efficiency
# ---------------------------------------------------------------------------------------------

STOPS = ("TAA", "TAG", "TGA")


def _cds(rng: np.random.Generator, codons: int) -> str:
    """ATG, ``codons`` random sense codons, a stop codon."""
    body = np.frombuffer(random_dna(rng, 3 * codons, gc=0.5).encode(), "S3").astype(str)
    stops = np.isin(body, STOPS)
    body[stops] = "CTG"  # a sense codon where chance made a stop
    return "ATG" + "".join(body) + STOPS[int(rng.integers(3))]


def _gc(sequence: str) -> float:
    return (sequence.count("G") + sequence.count("C")) / max(len(sequence), 1)


def make_transcripts(rng: np.random.Generator, spec: DemoSpec) -> pd.DataFrame:
    """Synthetic mRNAs with planted AU-rich elements, Kozak contexts and upstream ATGs, and the
    targets of their rules (module docstring)."""
    rows = []
    for i in range(spec.transcripts):
        gc5 = float(rng.uniform(0.35, 0.75))  # GC-rich 5' UTRs fold, and are translated less
        utr5 = random_dna(rng, int(rng.integers(40, 160)), gc=gc5).replace("ATG", "ACG")
        for _ in range(int(rng.choice([0, 0, 1, 2]))):  # upstream ATGs
            at = int(rng.integers(0, len(utr5) - 6))
            utr5 = utr5[:at] + "ATG" + utr5[at + 3 :]
        # Kozak context: A at -3 and G at +4 (strong) or T and C (weak).
        strong = bool(rng.random() < 0.5)
        utr5 = utr5[:-3] + ("ACC" if strong else "TCC")
        cds = _cds(rng, int(rng.integers(60, 300)))
        cds = cds[:3] + ("G" if strong else "C") + cds[4:]
        utr3 = random_dna(rng, int(rng.integers(120, 700)), gc=0.4)
        for _ in range(int(rng.integers(0, 6))):
            at = int(rng.integers(0, len(utr3) - 5))
            utr3 = utr3[:at] + ARE_MOTIF + utr3[at + 5 :]
        # Both are read on the mRNA strand only (counts include chance occurrences).
        n_are = sum(1 for _ in re.finditer(f"(?={ARE_MOTIF})", utr3))
        n_uatg = sum(1 for _ in re.finditer("(?=ATG)", utr5))
        halflife = 1.0 - 0.5 * n_are - 0.15 * np.log2(len(utr3) / 300) + rng.normal(0, 0.15)
        row = {
            "tx_id": f"ENST{90000000000 + i:011d}.1",
            "utr5_sequence": utr5,
            "cds_sequence": cds,
            "utr3_sequence": utr3,
            "fold": i % spec.saluki_folds,
            "halflife": float(halflife),
            "n_are": n_are,
            "n_uatg": n_uatg,
            "kozak": strong,
            "utr5_gc": round(_gc(utr5), 4),
        }
        for cell, offset in TE_CELL_TYPES.items():
            te = (
                0.5
                + 0.9 * strong
                - 0.7 * n_uatg
                - 5.0 * (_gc(utr5) - 0.55)
                + offset
                + rng.normal(0, 0.15)
            )
            row[f"TE_{cell}"] = round(float(te), 5)
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)


def _saluki_example(row, rng: np.random.Generator) -> dict:
    sequence = row.utr5_sequence + row.cds_sequence + row.utr3_sequence
    coding = np.zeros(len(sequence), np.uint8)
    start = len(row.utr5_sequence)
    coding[start : start + len(row.cds_sequence) : 3] = 1  # first base of each codon
    splice = np.zeros(len(sequence), np.uint8)
    for cut in sorted(rng.choice(np.arange(50, len(sequence) - 50), size=3, replace=False)):
        splice[cut] = 1  # last base of an exon
    return {
        "lengths": [len(sequence)],
        "sequence": encode_sequence(sequence).tobytes(),
        "coding": coding.tobytes(),
        "splice": splice.tobytes(),
        "targets": np.array([row.halflife], np.float16).tobytes(),
    }


def write_saluki_zip(frame: pd.DataFrame, spec: DemoSpec, path: Path, seed: int) -> None:
    """``datasets.zip`` with ``f{F}_c0/data0`` per fold F: test fold F, valid fold F+1, train the
    rest; sequences stored unpadded (the reader pads to ``length_t``)."""
    import tempfile

    rng = np.random.default_rng([seed, 11])
    examples = [_saluki_example(row, rng) for row in frame.itertuples()]
    folds = frame["fold"].to_numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(path, "w") as archive:
        for f in range(spec.saluki_folds):
            split = np.where(folds == f, "test", np.where(folds == (f + 1) % 10, "valid", "train"))
            base = f"datasets/deeplearning/train_gru/f{f}_c0/data0"
            stats = {"length_t": spec.saluki_length, "target_length": 1, "num_targets": 1}
            for label in ("train", "valid", "test"):
                chosen = [examples[i] for i in np.flatnonzero(split == label)]
                stats[f"{label}_seqs"] = len(chosen)
                for i in range(0, max(len(chosen), 1), spec.saluki_per_file):
                    local = Path(tmp) / f"{label}-{i // spec.saluki_per_file}.tfr"
                    write_examples(local, chosen[i : i + spec.saluki_per_file], "zlib")
                    _zip_add(archive, f"{base}/tfrecords/{local.name}", local.read_bytes())
            _zip_add(archive, f"{base}/statistics.json", json.dumps(stats, indent=2).encode())


def _zip_add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=(2022, 3, 3, 0, 0, 0))  # fixed: reproducible bytes
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


# ---------------------------------------------------------------------------------------------
# Flashzoi's benchmarks: eQTL prioritisation, CRISPRi enhancers, Variant-FlowFISH
# ---------------------------------------------------------------------------------------------

ALL_MOTIFS = {**ACT_MOTIFS, "CTCF": CTCF_MOTIF, **TISSUE_MOTIFS}


def _edited(text: str, pos: int, ref: str, alt: str) -> str:
    """``text`` with ``ref`` at 0-based ``pos`` replaced by ``alt``."""
    if text[pos : pos + len(ref)] != ref:
        raise FlashRNAError(f"internal: {ref} is not at {pos}")
    return text[:pos] + alt + text[pos + len(ref) :]


def _local_sites(text: str, lo: int, hi: int) -> list[tuple[int, str]]:
    """Planted-motif sites (genome start, motif name) found in ``text[lo:hi]``."""
    window = text[max(lo, 0) : hi]
    return sorted(
        (max(lo, 0) + p, m) for m, seq in ALL_MOTIFS.items() for p in find_sites(window, seq)
    )


def _changes_motifs(text: str, pos: int, ref: str, alt: str) -> bool:
    """True when the edit makes or breaks a motif instance (any motif, either strand)."""
    lo, hi = pos - 20, pos + len(ref) + 20
    after = _edited(text[lo:hi], pos - lo, ref, alt)
    return _local_sites(text, lo, hi) != [
        (lo + p, m) for p, m in _local_sites(after, 0, len(after))
    ]


def _log2_expression(data: SpeciesData, gene: Gene, text: str, tissue: str) -> float:
    """The planted log2 expression of ``gene`` in ``tissue`` for the chromosome ``text`` (its own
    sequence or an edited one), without the gene's random offset."""
    counts = _motif_counts(
        gene, _local_sites(text, gene.tss - 2100, gene.tss + 2100), data.spec.tissues
    )
    act = sum(ACT_WEIGHTS[m] * counts[m] for m in ACT_MOTIFS)
    return act + TISSUE_WEIGHT * counts[tissue]


def write_vcf(path: Path, rows: Iterable[tuple]) -> None:
    """A VCF in the layout of Borzoi's QTL sets (calico/borzoi-paper ``data/qtl``): INFO ``MT``
    (the gene), ``PI`` (for a negative, the positive it matches)."""
    lines = [
        "##fileformat=VCFv4.2",
        '##INFO=<ID=MT,Number=1,Type=String,Description="Molecular trait id">',
        '##INFO=<ID=PI,Number=1,Type=String,Description="Positive SNP id">',
        "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO",
    ]
    for chrom, pos, name, ref, alt, gene, positive in rows:
        lines.append(f"{chrom}\t{pos}\t{name}\t{ref}\t{alt}\t.\t.\tMT={gene};PI={positive}")
    _write_text(path, "\n".join(lines) + "\n")


def make_prioritisation(
    data: SpeciesData, eqtls: pd.DataFrame, spec: DemoSpec, rng: np.random.Generator
) -> pd.DataFrame:
    """Per GTEx tissue its fine-mapped eQTLs (SuSiE, PIP > 0.9) and as many distance-matched
    negatives: SNVs at the positive's distance from a gene's TSS (within ``negative_jitter``),
    that make or break no motif (true effect 0). Columns ``tissue label variant chrom pos ref
    alt gene distance positive``."""
    genes = {g.gene_id: g for g in data.genes}
    strong = eqtls[(eqtls["method"] == "SUSIE") & (eqtls["pip"] > 0.9)]
    taken = set(strong["variant_hg38"])
    rows = []
    for tissue, group in strong.groupby("tissue", sort=True):
        for eqtl in group.drop_duplicates("variant_hg38").itertuples():
            distance = int(eqtl.start) - genes[eqtl.gene].tss
            rows.append((tissue, 1, eqtl.variant_hg38, eqtl.chromosome, int(eqtl.start),
                         eqtl.allele1, eqtl.allele2, eqtl.gene, distance, ""))  # fmt: skip
            for _ in range(200):
                gene = data.genes[int(rng.integers(len(data.genes)))]
                side = 1 if rng.random() < 0.5 else -1
                jitter = int(rng.integers(-spec.negative_jitter, spec.negative_jitter + 1))
                pos = gene.tss + side * abs(distance) + jitter
                text = data.chroms[gene.chrom]
                ref = text[pos]
                alt = _mutate_away(rng, ref) if ref in BASES else ref
                name = f"{gene.chrom}_{pos + 1}_{ref}_{alt}_b38"
                if ref in BASES and name not in taken and not _changes_motifs(text, pos, ref, alt):
                    taken.add(name)
                    rows.append((tissue, 0, name, gene.chrom, pos, ref, alt, gene.gene_id,
                                 pos - gene.tss, eqtl.variant_hg38))  # fmt: skip
                    break
    columns = ["tissue", "label", "variant", "chrom", "pos", "ref", "alt", "gene", "distance"]
    return pd.DataFrame(rows, columns=[*columns, "positive"])


def _regulators(data: SpeciesData, gene: Gene) -> list[tuple[int, str]]:
    """The motif sites that set ``gene``'s expression in the cell type (the sites
    ``_motif_counts`` counts): promoter activators and the cell type's enhancers within reach."""
    lo, hi = gene.promoter()
    return [
        (p, m) for p, m in data.sites[gene.chrom]
        if (m in ACT_MOTIFS and lo <= p and p + len(ACT_MOTIFS[m]) <= hi)
        or (m == CELL_TYPE and abs(p - gene.tss) <= ENHANCER_REACH)
    ]  # fmt: skip


def _crispri_elements(data: SpeciesData, gene: Gene, spec: DemoSpec, rng) -> list[tuple]:
    """Tested elements (start, kind) of one gene: its promoter-proximal element (centred 300 bp
    upstream of the TSS, over the activator window), one on each motif site ``crispri_nearest``
    to ``ENHANCER_REACH`` bp from the TSS, and ``crispri_random`` motif-free ones there."""
    half = spec.crispri_element // 2
    upstream = -1 if gene.strand == "+" else 1
    elements = [(gene.tss + upstream * 300 - half, "proximal")]
    band = (spec.crispri_nearest, ENHANCER_REACH)
    sites = [(p, m) for p, m in data.sites[gene.chrom] if band[0] <= abs(p - gene.tss) <= band[1]]
    elements += [(p + len(ALL_MOTIFS[m]) // 2 - half, m) for p, m in sites]
    taken = [p for p, _ in data.sites[gene.chrom] if abs(p - gene.tss) <= band[1] + 2 * half]
    for _ in range(spec.crispri_random):
        for _ in range(100):
            center = gene.tss + int(rng.choice([-1, 1])) * int(rng.integers(*band))
            if not any(center - half - 20 <= p < center + half for p in taken):
                elements.append((center - half, "random"))
                break
    return elements


def make_crispri(data: SpeciesData, spec: DemoSpec, rng: np.random.Generator) -> pd.DataFrame:
    """CRISPRi-style enhancer-gene pairs in the layout of EngreitzLab/CRISPR_comparison's
    ``EPCrisprBenchmark_ensemble_data_GRCh38.tsv.gz`` (plus ``kind``/``weight`` for the truth),
    for ``crispri_genes`` genes, half of them with a promoter activator.

    A pair is regulated when silencing the element removes planted regulators of the gene in
    the cell type (promoter activators, the cell type's enhancers): EffectSize = 2^(-w) - 1 for
    w the sum of their weights. Other elements (other tissues' motifs, CTCF sites, motif-free
    DNA, promoter-proximal elements without an activator) have no effect. Elements overlapping
    the TSS +- 100 bp (the core promoter) or the gene's exons are not valid connections (as in
    the benchmark)."""
    activated = [g for g in data.genes if g.counts["ACT1"] + g.counts["ACT2"] > 0]
    silent = [g for g in data.genes if g.counts["ACT1"] + g.counts["ACT2"] == 0]
    half = min(spec.crispri_genes // 2, len(activated), len(silent))  # a small spec has few
    chosen = [activated[i] for i in rng.choice(len(activated), half, replace=False)]
    chosen += [silent[i] for i in rng.choice(len(silent), half, replace=False)]
    rows = []
    for gene in sorted(chosen, key=lambda g: (g.chrom, g.tss)):
        regulators = _regulators(data, gene)
        for start, kind in _crispri_elements(data, gene, spec, rng):
            end = start + spec.crispri_element
            weight = sum(
                ACT_WEIGHTS.get(m, TISSUE_WEIGHT)
                for p, m in regulators
                if start <= p and p + len(ALL_MOTIFS[m]) <= end
            )
            promoter = start < gene.tss + 100 and end > gene.tss - 100
            exonic = any(start < b and end > a for a, b in gene.exons)
            valid = (
                "overlaps potential promoter" if promoter
                else "overlaps target gene exon" if exonic else "TRUE"
            )  # fmt: skip
            if weight:
                effect = 2.0**-weight - 1 + rng.normal(0, 0.02)
                p_value = 10.0 ** rng.uniform(-6, -3)
            else:
                effect, p_value = rng.normal(0, 0.03), rng.uniform(0.06, 1.0)
            power = [round(float(x), 4) for x in np.sort(rng.uniform(0.3, 1.0, 5))]
            rows.append(
                {
                    "chrom": gene.chrom,
                    "chromStart": start,
                    "chromEnd": end,
                    "name": f"{gene.name}|{gene.chrom}:{start}-{end}:.",
                    "EffectSize": round(float(effect), 6),
                    "chrTSS": gene.chrom,
                    "startTSS": gene.tss,
                    "endTSS": gene.tss + 1,
                    "measuredGeneSymbol": gene.name,
                    "Significant": p_value < 0.05,
                    "pValueAdjusted": float(f"{p_value:.6g}"),
                    **dict(zip(CRISPRI_POWER, power, strict=True)),
                    "ValidConnection": valid,
                    "CellType": CELL_TYPE,
                    "Reference": "flashrna demo",
                    "Regulated": bool(p_value < 0.05 and effect < 0),
                    "Dataset": "FlashRNADemo",
                    "kind": kind,
                    "weight": weight,
                }
            )
    return pd.DataFrame(rows)


CRISPRI_POWER = [f"PowerAtEffectSize{k}" for k in (10, 15, 20, 25, 50)]


def write_crispri(frame: pd.DataFrame, path: Path) -> None:
    """The benchmark's file: gzip TSV, R's TRUE/FALSE and NA."""
    table = frame.drop(columns=["kind", "weight"]).copy()
    for column in ("Significant", "Regulated"):
        table[column] = np.where(table[column], "TRUE", "FALSE")
    _write_gzip(path, table.to_csv(sep="\t", index=False, na_rep="NA"))


def _distal_enhancers(data: SpeciesData, gene: Gene, nearest: int) -> list[int]:
    """Sites of the cell type's motif that act on ``gene`` and lie ``nearest`` bp or more from
    its TSS."""
    return [
        p for p, m in data.sites[gene.chrom]
        if m == CELL_TYPE and nearest <= abs(p - gene.tss) <= ENHANCER_REACH
    ]  # fmt: skip


def _flowfish_gene(data: SpeciesData) -> Gene:
    """The demo's PPIF: the first gene with a promoter activator and an enhancer of the cell
    type at least 600 bp from its TSS."""
    for gene in sorted(data.genes, key=lambda g: (g.chrom, g.tss)):
        if _distal_enhancers(data, gene, 600) and gene.counts["ACT1"] + gene.counts["ACT2"]:
            return gene
    raise FlashRNAError("internal: no gene fits the Variant-FlowFISH demo")


def make_flowfish(data: SpeciesData, spec: DemoSpec, rng: np.random.Generator) -> pd.DataFrame:
    """Variant-FlowFISH-like edits of one gene's promoter and enhancer (substitutions of 1-5 bp
    in and around its motifs, and a few indels), with the measured effect on its expression in
    the cell type: 100 (2^delta - 1) % + noise, delta the change of the planted log2 expression.
    IDs as the Variant-FlowFISH pipeline names them (EngreitzLab/variant-flowfish:
    ``PPIF_enhancer_original-chr10:81046426:GTTAG>AGCCA``), in the demo's "hg19" coordinates
    (hg38 + ``hg19_offset``)."""
    gene = _flowfish_gene(data)
    text = data.chroms[gene.chrom]
    before = _log2_expression(data, gene, text, CELL_TYPE)
    promoter = gene.promoter()
    sites = {
        "promoter": [(p, m) for p, m in data.sites[gene.chrom]
                     if m in ACT_MOTIFS and promoter[0] <= p < promoter[1]],
        "enhancer": [(p, CELL_TYPE) for p in _distal_enhancers(data, gene, 600)],
    }  # fmt: skip
    edits = []
    for element, element_sites in sites.items():
        for p, m in element_sites:
            size = len(ALL_MOTIFS[m])
            for width in (1, 1, 2, 3, 5):  # inside the motif: breaks it
                at = p + int(rng.integers(0, size - width + 1))
                edits.append((element, at, width))
            for _ in range(4):  # beside it: no effect unless another motif is there
                at = p + int(rng.choice([-1, 1])) * int(rng.integers(size + 10, 140))
                edits.append((element, at, int(rng.integers(1, 6))))
    rows = []
    for element, at, width in edits:
        ref = text[at : at + width]
        alt = "".join(_mutate_away(rng, b) for b in ref)
        delta = _log2_expression(data, gene, _edited(text, at, ref, alt), CELL_TYPE) - before
        rows.append((element, at, ref, alt, delta))
    for element in sites:  # indels: measured, but a benchmark leaves them out
        at = int(rng.choice([p for p, _ in sites[element]])) - 30
        rows.append((element, at, text[at : at + 3], text[at], 0.0))
        rows.append((element, at, text[at], text[at] + "GA", 0.0))
    out = []
    for element, at, ref, alt, delta in rows:
        measured = 100 * (2.0**delta - 1) + rng.normal(0, 2.0)
        position = at + 1 + spec.hg19_offset
        out.append(
            {
                "VariantID": f"{gene.name}_{element}_original-{gene.chrom}:{position}:{ref}>{alt}",
                "Element": element,
                "CellType": CELL_TYPE,
                "PercentChange": round(float(measured), 3),
                "gene": gene.name,
                "true_log2_effect": delta,
            }
        )
    return pd.DataFrame(out)


def write_chain(chroms: dict[str, str], offset: int, path: Path) -> None:
    """A UCSC chain file from the demo's "hg19" (each contig with ``offset`` bp more at its
    start) to its hg38: one ungapped block per contig."""
    lines = []
    for number, (name, sequence) in enumerate(chroms.items(), start=1):
        size = len(sequence)
        lines += [
            f"chain {size} {name} {size + offset} + {offset} {size + offset} "
            f"{name} {size} + 0 {size} {number}",
            str(size),
            "",
        ]
    _write_gzip(path, "\n".join(lines) + "\n")


def write_flashzoi_benchmarks(
    human: SpeciesData, eqtls: pd.DataFrame, spec: DemoSpec, root: Path, seed: int
) -> None:
    """The benchmarks' sources in the mirror and their truth in ``truth/``."""
    prioritisation = make_prioritisation(human, eqtls, spec, np.random.default_rng([seed, 303]))
    for tissue, group in prioritisation.groupby("tissue"):
        for kind, label in (("pos", 1), ("neg", 0)):
            chosen = group[group["label"] == label].sort_values(["chrom", "pos"])
            write_vcf(
                root / PRIORITISATION_DIR / f"{tissue}_{kind}.vcf",
                (
                    (r.chrom, r.pos + 1, r.variant, r.ref, r.alt, r.gene, r.positive or ".")
                    for r in chosen.itertuples()
                ),
            )
    prioritisation.to_csv(root / "truth/prioritisation.tsv", sep="\t", index=False)
    crispri = make_crispri(human, spec, np.random.default_rng([seed, 404]))
    write_crispri(crispri, root / CRISPRI_FILE)
    crispri.to_csv(root / "truth/crispri.tsv", sep="\t", index=False)
    flowfish = make_flowfish(human, spec, np.random.default_rng([seed, 505]))
    columns = ["VariantID", "Element", "CellType", "PercentChange"]
    _write_text(root / FLOWFISH_FILE, flowfish[columns].to_csv(sep="\t", index=False))
    flowfish.to_csv(root / "truth/flowfish.tsv", sep="\t", index=False)
    write_chain(human.chroms, spec.hg19_offset, root / CHAIN_FILE)


# ---------------------------------------------------------------------------------------------
# The step
# ---------------------------------------------------------------------------------------------


def generate(out: str | Path, seed: int = 0, spec: DemoSpec = DEMO) -> Path:
    """Write the demo mirror and its ground truth to ``out`` (replaced atomically; an existing
    directory must be an earlier demo or empty)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise FlashRNAError(
            f"{out}: exists and is not a flashrna demo directory; refusing to replace it "
            f"(choose an empty or new directory)"
        )
    with atomic_directory(out) as tmp:
        truth = tmp / "truth"
        truth.mkdir()
        species = {}
        for index, name in enumerate(spec.species):
            rng = np.random.default_rng([seed, index])
            data = species[name] = _build_species(rng, spec, name)
            sp = data.spec
            write_bucket(data, spec, tmp / "borzoi-paper/data" / sp.genome, seed + index)
            write_fasta(data.chroms, tmp / f"seqnn-share/helper/dependencies/{sp.genome}.ml.fa.gz")
            _gene_truth(data).to_csv(truth / f"genes_{sp.genome}.tsv", sep="\t", index=False)
        human = species["human"]
        write_gtf(human.genes, tmp / "seqnn-share/helper/gencode41_basic_nort.gtf.gz")
        eqtls = make_eqtls(human, spec, np.random.default_rng([seed, 101]))
        write_bgzip_tsv(
            eqtls.drop(columns="true_effect"), tmp / "gtex/GTEx_49tissues_release1.tsv.bgz"
        )
        eqtls.to_csv(truth / "eqtls.tsv", sep="\t", index=False)
        transcripts = make_transcripts(np.random.default_rng([seed, 202]), spec)
        write_saluki_zip(transcripts, spec, tmp / "zenodo/6326409/datasets.zip", seed)
        te_columns = ["tx_id", "utr5_sequence", "cds_sequence", "utr3_sequence"]
        te_columns += [f"TE_{c}" for c in TE_CELL_TYPES] + ["fold"]
        te_table = transcripts[te_columns].to_csv(sep="\t", index=False)
        _write_text(tmp / "ribonn/te_human.tsv", te_table)
        transcripts.to_csv(truth / "transcripts.tsv", sep="\t", index=False)
        write_json(truth / "tissues.json", {"gtex_tissue_to_track": GTEX_TISSUES})
        write_flashzoi_benchmarks(human, eqtls, spec, tmp, seed)
        _check_against_manifest(tmp, spec)
        (tmp / MARKER).write_text(f"seed {seed}\n")
    return out


def _gene_truth(data: SpeciesData) -> pd.DataFrame:
    rows = []
    for gene in data.genes:
        lo, hi = gene.span
        rows.append(
            {
                "gene_id": gene.gene_id,
                "chrom": gene.chrom,
                "start": lo,
                "end": hi,
                "strand": gene.strand,
                "tss": gene.tss,
                **{f"n_{m}": c for m, c in gene.counts.items()},
                **{f"log2_expression_{t}": round(v, 4) for t, v in gene.log2_expression.items()},
            }
        )
    return pd.DataFrame(rows)


def _check_against_manifest(root: Path, spec: DemoSpec) -> None:
    """The mirror holds exactly the manifest's files (apart from ``truth/``)."""
    expected = {row.source for row in demo_manifest(spec)}
    found = {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).parts[0] != "truth"
    }
    if expected != found:
        missing, extra = sorted(expected - found), sorted(found - expected)
        raise FlashRNAError(
            f"demo generation and its manifest disagree: missing {missing[:5]}, extra {extra[:5]}"
        )


def register_demo_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="directory to write the demo mirror into")
    parser.add_argument("--seed", type=int, default=0, help="random seed (output is deterministic)")
    parser.add_argument(
        "--write-manifest",
        metavar="TSV",
        help="also write the demo's download manifest here (config/demo-manifest.tsv)",
    )
    parser.set_defaults(run=_run_demo_data)


def _run_demo_data(args: argparse.Namespace) -> None:
    out = generate(args.out, seed=args.seed)
    log.info("demo data written to %s", out)
    if args.write_manifest:
        write_manifest(
            args.write_manifest,
            demo_manifest(),
            comment=(
                "Demo manifest: every file `flashrna demo-data --out DIR` writes (sources are "
                "relative to DIR = download.source_root). Regenerate with "
                "`flashrna demo-data --out DIR --write-manifest config/demo-manifest.tsv`."
            ),
        )
