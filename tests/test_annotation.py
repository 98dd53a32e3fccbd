"""GTF genes and exon-bin sets, against an independent per-base computation on real GENCODE
examples (CD99: 13 transcripts, CFHR2)."""

from __future__ import annotations

import pytest
from helpers import fixture_path

from flashrna.annotation import Annotation, merge_intervals
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
            got = gene.exon_bins(start, num_bins).tolist()
            assert got == expected_bins(path, gene_id, start, num_bins), (offset, num_bins)


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
