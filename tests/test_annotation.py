"""GTF genes and exon-bin sets, against independent computations (per base; Borzoi's
majority-overlap rule per transcript exon in exact arithmetic) on real GENCODE examples (CD99: 13
transcripts, CFHR2)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from helpers import FIXTURES, fixture_path

from flashrna.annotation import Annotation, interval_bins, merge_intervals
from flashrna.utils import FlashRNAError


def expected_bins(gtf_path, gene_id: str, window_start: int, num_bins: int) -> list[int]:
    """Bins hit by any exon base of any transcript: plain sets over every base of every exon."""
    bins = set()
    for line in gtf_path.read_text().splitlines():
        fields = line.rstrip("\n").split("\t")
        if line.startswith("#") or fields[2] != "exon" or f'gene_id "{gene_id}"' not in fields[8]:
            continue
        for position in range(int(fields[3]) - 1, int(fields[4])):  # 1-based inclusive -> 0-based
            b = (position - window_start) // 32
            if 0 <= b < num_bins:
                bins.add(b)
    return sorted(bins)


@pytest.mark.parametrize(
    ("name", "gene_id"),
    [("CD99_example.gtf", "ENSG00000002586.20"), ("CFHR2_example.gtf", "ENSG00000080910.14")],
)
def test_exon_bins_match_union_over_transcripts(name, gene_id):
    path = fixture_path(f"annotation/{name}")
    gene = Annotation.read_gtf(path).genes[gene_id]
    # Windows that hold the whole gene, cut it at either end, sit inside an intron, or miss it;
    # starts not aligned to the gene so bins straddle exon edges.
    for offset in (-5_013, -20_007, 17, 9_999, 30_001, 60_000):
        start = gene.start + offset
        for num_bins in (1, 300, 2_000):
            got = gene.exon_bins(start, num_bins, rule="any").tolist()
            assert got == expected_bins(path, gene_id, start, num_bins), (offset, num_bins)


def gtf_exons(path) -> dict[str, list[tuple[int, int]]]:
    """Per gene_id the exon lines of every transcript, unmerged, 0-based half-open."""
    exons: dict[str, list[tuple[int, int]]] = {}
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        if line.startswith("#") or len(fields) < 9 or fields[2] != "exon":
            continue
        gene_id = fields[8].split('gene_id "')[1].split('"')[0]
        exons.setdefault(gene_id, []).append((int(fields[3]) - 1, int(fields[4])))
    return exons


def borzoi_majority_bins(exons, window_start: int, num_bins: int) -> list[int]:
    """borzoi_sed.py map_snpseq_genes (majority_overlap=True) for one gene, per transcript exon
    and in exact arithmetic: ends clipped at 0, bins round(start/32) .. round(end/32) with
    round-half-to-even (Python's round of a Fraction), clipped to the window, union."""
    bins: set[int] = set()
    for start, end in exons:
        first = round(Fraction(max(0, start - window_start), 32))
        stop = round(Fraction(max(0, end - window_start), 32))
        bins.update(range(max(0, min(first, num_bins)), max(0, min(stop, num_bins))))
    return sorted(bins)


ANNOTATIONS = sorted((FIXTURES / "annotation").glob("*.gtf")) or ["missing.gtf"]


@pytest.mark.parametrize("path", ANNOTATIONS, ids=lambda p: Path(p).name)
def test_majority_exon_bins_match_borzoi_rule(path):
    path = fixture_path(f"annotation/{Path(path).name}")
    annotation = Annotation.read_gtf(path)
    half_bin_edges = 0
    for gene_id, exons in gtf_exons(path).items():
        gene = annotation.genes[gene_id]
        first_start, last_end = min(s for s, _ in exons), max(e for _, e in exons)
        # Generic offsets, and windows that put an exon edge exactly half-way into an even or an
        # odd bin (start edges count for even bins, end edges for odd ones).
        starts = [gene.start + offset for offset in (-5_013, -20_007, 17, 9_999, 30_001)]
        starts += [first_start - 16 - 32 * k for k in (100, 101)]
        starts += [last_end - 16 - 32 * k for k in (500, 501)]
        for start in starts:
            half_bin_edges += any((s - start) % 32 == 16 for pair in exons for s in pair)
            for num_bins in (1, 300, 2_000):
                got = gene.exon_bins(start, num_bins).tolist()
                assert got == borzoi_majority_bins(exons, start, num_bins), (start, num_bins)
    assert half_bin_edges >= 4


def test_majority_rule_at_half_a_bin():
    # An exon from 16 bp into bin 2 (even) takes bin 2; from 16 bp into bin 3 (odd) it does not.
    assert interval_bins(np.array([[80, 200]]), 10).tolist() == [2, 3, 4, 5]
    assert interval_bins(np.array([[112, 200]]), 10).tolist() == [4, 5]
    # Ending 16 bp into bin 5 (odd) takes bin 5; 16 bp into bin 6 (even) leaves it out.
    assert interval_bins(np.array([[64, 176]]), 10).tolist() == [2, 3, 4, 5]
    assert interval_bins(np.array([[64, 208]]), 10).tolist() == [2, 3, 4, 5]
    # A 10-bp exon across a bin centre takes the bin; one beside it takes none; any overlap
    # takes every touched bin.
    assert interval_bins(np.array([[40, 50]]), 10).tolist() == [1]
    assert interval_bins(np.array([[33, 47]]), 10).tolist() == []
    assert interval_bins(np.array([[33, 47]]), 10, rule="any").tolist() == [1]
    with pytest.raises(FlashRNAError, match="exon bin rule 'most'"):
        interval_bins(np.array([[0, 1]]), 10, rule="most")


def test_gene_attributes_and_merged_exons():
    cd99 = Annotation.read_gtf(fixture_path("annotation/CD99_example.gtf"))
    (gene,) = cd99.genes.values()
    assert (gene.name, gene.chrom, gene.strand) == ("CD99", "chrX", "+")
    # The earliest exon of any transcript starts at 2,691,187 (1-based), the last ends at 2,741,309.
    assert (gene.start, gene.end) == (2_691_186, 2_741_309)
    starts, ends = gene.exons[:, 0], gene.exons[:, 1]
    assert (starts[1:] > ends[:-1]).all() and (ends > starts).all()


def test_overlapping_needs_an_exon_not_just_the_span(tmp_path):
    gtf = tmp_path / "genes.gtf"
    gtf.write_text(
        'chr1\tx\tgene\t100\t900\t.\t+\t.\tgene_id "A";\n'
        'chr1\tx\texon\t100\t200\t.\t+\t.\tgene_id "A"; transcript_id "A1";\n'
        'chr1\tx\texon\t800\t900\t.\t+\t.\tgene_id "A"; transcript_id "A1";\n'
        'chr1\tx\texon\t150\t300\t.\t-\t.\tgene_id "B"; transcript_id "B1"; gene_name "Bn";\n'
        'chr2\tx\texon\t100\t200\t.\t+\t.\tgene_id "C"; transcript_id "C1";\n'
    )
    annotation = Annotation.read_gtf(gtf)
    assert len(annotation) == 3
    ids = [g.gene_id for g in annotation.overlapping("chr1", 250, 700)]
    assert ids == ["B"]  # A's intron spans the region, but none of its exons does
    assert [g.gene_id for g in annotation.overlapping("chr1", 0, 1_000)] == ["A", "B"]
    assert annotation.overlapping("chr1", 200, 799) == [annotation.genes["B"]]
    assert annotation.overlapping("chr3", 0, 10**9) == []
    assert annotation.genes["B"].name == "Bn" and annotation.genes["A"].name == "A"


def test_merge_intervals():
    merged = merge_intervals([(10, 20), (5, 8), (8, 9), (15, 30), (40, 41)])
    assert merged.tolist() == [[5, 9], [10, 30], [40, 41]]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("chr1\tx\texon\t10\n", "expected 9"),
        ('chr1\tx\texon\tten\t20\t.\t+\t.\tgene_id "A";\n', "not integers"),
        ('chr1\tx\texon\t10\t20\t.\t+\t.\ttranscript_id "T";\n', "without a gene_id"),
        (
            'chr1\tx\texon\t10\t20\t.\t+\t.\tgene_id "A";\n'
            'chr1\tx\texon\t30\t40\t.\t-\t.\tgene_id "A";\n',
            r"gene A on chr1-, but on chr1\+ at line 1",
        ),
    ],
)
def test_malformed_gtf_names_file_and_line(tmp_path, line, message):
    gtf = tmp_path / "bad.gtf"
    gtf.write_text(line)
    with pytest.raises(FlashRNAError, match=message) as err:
        Annotation.read_gtf(gtf)
    assert "bad.gtf:" in str(err.value)
