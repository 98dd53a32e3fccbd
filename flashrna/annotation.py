"""Genes from a GTF file and the output bins their exons cover.

A GTF's ``exon`` lines (1-based, inclusive coordinates) are grouped by ``gene_id``; a gene's exon
set is the union of its transcripts' exons, merged into sorted, disjoint 0-based half-open
intervals. Other feature lines (gene, transcript, CDS, UTR, codons) are ignored, so a GENCODE file
and a file of exon lines alone give the same genes (as baskerville's ``gene.Transcriptome``).

Output bins: a model window whose first output bin starts at genomic position ``window_start``
(0-based) has bins ``b = 0 .. num_bins - 1`` covering ``[window_start + 32 b, window_start + 32 b
+ 32)``. A gene's exon bins (:meth:`Gene.exon_bins`, :func:`interval_bins`) are the union over
its merged exons, sorted and unique, under one of two rules (:data:`BIN_RULES`):

- ``majority`` (Borzoi's default, calico/borzoi ``borzoi_sed.py`` ``map_snpseq_genes`` with
  ``majority_overlap=True``): an exon ``[s, e)`` in window coordinates, its ends first clipped
  at 0, covers bins ``round(s / 32)`` .. ``round(e / 32) - 1`` with NumPy's rounding (half to
  even), clipped to the window. Equivalently, bin ``b`` counts when the exon covers its centre
  ``32 b + 16``: an exon starting exactly there counts for even ``b``, one ending exactly there for
  odd ``b``. Since rounding is monotone, merging exons first changes nothing.
- ``any``: every bin the exon overlaps by at least one base (``floor(s / 32)`` .. ``ceil(e / 32)
  - 1``; Borzoi's ``majority_overlap=False``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flashrna.model import BIN_SIZE
from flashrna.utils import FlashRNAError, open_text, tab_separated_lines

# Whole attribute names only: not ref_gene_id, havana_gene_name, ...
_GENE_ID = re.compile(r'(?:^|\s)gene_id "([^"]*)"')
_GENE_NAME = re.compile(r'(?:^|\s)gene_name "([^"]*)"')


@dataclass(frozen=True, eq=False)
class Gene:
    """One gene: ``exons`` is an int64 array (n, 2) of merged 0-based half-open intervals."""

    gene_id: str
    name: str
    chrom: str
    strand: str
    exons: np.ndarray

    @property
    def start(self) -> int:
        return int(self.exons[0, 0])

    @property
    def end(self) -> int:
        return int(self.exons[-1, 1])

    def overlaps(self, start: int, end: int) -> bool:
        """True when an exon overlaps ``[start, end)``."""
        return bool(((self.exons[:, 0] < end) & (self.exons[:, 1] > start)).any())

    def exon_bins(
        self, window_start: int, num_bins: int, rule: str = "majority", bin_size: int = BIN_SIZE
    ) -> np.ndarray:
        """Sorted unique indices (int64, (k,)) of the ``num_bins`` bins from ``window_start`` that
        the gene's exons cover under ``rule`` (module docstring); empty when none."""
        return interval_bins(self.exons - window_start, num_bins, rule, bin_size)


BIN_RULES = ("majority", "any")


def interval_bins(
    intervals: np.ndarray, num_bins: int, rule: str = "majority", bin_size: int = BIN_SIZE
) -> np.ndarray:
    """Sorted unique bins (int64, (k,)) of a window of ``num_bins`` bins covered by half-open
    ``intervals`` (int, (n, 2)) given in window coordinates (bp from the first bin's start),
    under ``rule`` (module docstring)."""
    intervals = np.asarray(intervals, dtype=np.int64).reshape(-1, 2)
    if rule == "majority":
        edges = np.round(np.maximum(intervals, 0) / bin_size)
    elif rule == "any":
        edges = np.stack(
            [intervals[:, 0] // bin_size, -(-intervals[:, 1] // bin_size)], axis=1
        ).astype(np.float64)
    else:
        raise FlashRNAError(f"exon bin rule '{rule}' is not one of {BIN_RULES}")
    first, stop = edges.clip(0, num_bins).astype(np.int64).T
    keep = stop > first
    if not keep.any():
        return np.zeros(0, dtype=np.int64)
    # Disjoint intervals may still share a bin: unique.
    return np.unique(
        np.concatenate([np.arange(a, b) for a, b in zip(first[keep], stop[keep], strict=True)])
    )


def merge_intervals(intervals: Iterable[tuple[int, int]]) -> np.ndarray:
    """Union of half-open intervals as sorted disjoint intervals, int64 (n, 2); touching intervals
    merge."""
    ordered = sorted(intervals)
    merged: list[list[int]] = []
    for start, end in ordered:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return np.asarray(merged, dtype=np.int64).reshape(-1, 2)


class Annotation:
    """Genes of a GTF by chromosome, with exon-overlap queries.

    ``genes`` maps gene_id to :class:`Gene`; :meth:`overlapping` finds the genes with an exon in a
    region."""

    def __init__(self, genes: dict[str, Gene], source: str = "annotation") -> None:
        self.source = source
        self.genes = genes
        by_chrom: dict[str, list[Gene]] = {}
        for gene in genes.values():
            by_chrom.setdefault(gene.chrom, []).append(gene)
        # Per contig: genes sorted by start, and their start and end arrays for range queries.
        self._by_chrom: dict[str, tuple[list[Gene], np.ndarray, np.ndarray]] = {}
        for chrom, chrom_genes in by_chrom.items():
            chrom_genes.sort(key=lambda g: (g.start, g.gene_id))
            starts = np.array([g.start for g in chrom_genes], dtype=np.int64)
            ends = np.array([g.end for g in chrom_genes], dtype=np.int64)
            self._by_chrom[chrom] = (chrom_genes, starts, ends)

    def __len__(self) -> int:
        return len(self.genes)

    def __repr__(self) -> str:
        return f"Annotation({len(self)} genes on {len(self._by_chrom)} contigs; from {self.source})"

    @classmethod
    def read_gtf(cls, path: str | os.PathLike) -> Annotation:
        """Read the ``exon`` lines of a GTF (optionally gzip/bgzip compressed)."""
        path = Path(path)
        exons: dict[str, list[tuple[int, int]]] = {}
        info: dict[str, tuple[str, str, str, int]] = {}  # gene_id -> name, chrom, strand, line
        try:
            with open_text(path) as handle:
                for line_no, fields in tab_separated_lines(handle):
                    if len(fields) < 9:
                        raise FlashRNAError(
                            f"{path}:{line_no}: expected 9 tab-separated GTF fields, "
                            f"found {len(fields)}"
                        )
                    if fields[2] != "exon":
                        continue
                    chrom, strand = fields[0], fields[6]
                    try:
                        start, end = int(fields[3]) - 1, int(fields[4])
                    except ValueError:
                        raise FlashRNAError(
                            f"{path}:{line_no}: start/end '{fields[3]}'/'{fields[4]}' are not "
                            f"integers"
                        ) from None
                    if end <= start:
                        raise FlashRNAError(f"{path}:{line_no}: exon end {end} before its start")
                    found = _GENE_ID.search(fields[8])
                    if found is None:
                        raise FlashRNAError(f"{path}:{line_no}: exon without a gene_id attribute")
                    gene_id = found.group(1)
                    named = _GENE_NAME.search(fields[8])
                    name = named.group(1) if named else gene_id
                    known = info.setdefault(gene_id, (name, chrom, strand, line_no))
                    if known[1:3] != (chrom, strand):
                        raise FlashRNAError(
                            f"{path}:{line_no}: gene {gene_id} on {chrom}{strand}, but on "
                            f"{known[1]}{known[2]} at line {known[3]}"
                        )
                    exons.setdefault(gene_id, []).append((start, end))
        except FileNotFoundError:
            raise FlashRNAError(f"{path}: GTF file not found") from None
        except (OSError, UnicodeDecodeError) as err:
            raise FlashRNAError(f"{path}: unreadable GTF ({err})") from None
        if not exons:
            raise FlashRNAError(f"{path}: no exon lines")
        genes = {
            gene_id: Gene(gene_id, name, chrom, strand, merge_intervals(exons[gene_id]))
            for gene_id, (name, chrom, strand, _) in info.items()
        }
        return cls(genes, source=str(path))

    def overlapping(self, chrom: str, start: int, end: int) -> list[Gene]:
        """Genes with an exon overlapping ``chrom:[start, end)``, in order of their start."""
        if chrom not in self._by_chrom:
            return []
        genes, starts, ends = self._by_chrom[chrom]
        candidates = np.flatnonzero((starts < end) & (ends > start))
        return [genes[i] for i in candidates if genes[i].overlaps(start, end)]
