"""Genome access and variant windows against the real bgzipped hg38 chr1:1-1,000,000 fixture."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
from helpers import fixture_path

from flashrna.genome import (
    Genome,
    ReferenceMismatchError,
    decode_sequence,
    encode_sequence,
    reverse_complement,
)
from flashrna.utils import FlashRNAError

GENOME = "genome/hg38_1m.fa.gz"


@pytest.fixture(scope="module")
def genome() -> Genome:
    return Genome(fixture_path(GENOME))


@pytest.fixture(scope="module")
def chr1_text() -> str:
    # bgzip is valid gzip, so the whole contig can be read independently of the index.
    with gzip.open(fixture_path(GENOME), "rt") as handle:
        lines = handle.read().split("\n")
    assert lines[0].startswith(">chr1")
    return "".join(lines[1:])


def test_encode_decode():
    assert encode_sequence("ACGTNacgtnRY-").tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 4, 4, 4]
    assert encode_sequence("ACGT").dtype == np.uint8
    assert decode_sequence(np.array([0, 1, 2, 3, 4], np.uint8)) == "ACGTN"


def test_reverse_complement():
    assert decode_sequence(reverse_complement(encode_sequence("AACGTN"))) == "NACGTT"
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 5, size=(3, 1000), dtype=np.uint8)
    np.testing.assert_array_equal(reverse_complement(reverse_complement(batch)), batch)
    np.testing.assert_array_equal(reverse_complement(batch)[1], reverse_complement(batch[1]))


def test_fetch_matches_the_fasta_text(genome, chr1_text):
    assert genome.lengths == {"chr1": 1_000_000} == {"chr1": len(chr1_text)}
    np.testing.assert_array_equal(
        genome.fetch("chr1", 123_456, 125_000), encode_sequence(chr1_text[123_456:125_000])
    )
    assert (genome.fetch("chr1", 0, 100) == 4).all()  # hg38 starts with an N run


def test_fetch_pads_beyond_both_ends(genome, chr1_text):
    across = genome.fetch("chr1", 999_990, 1_000_010)
    assert across.shape == (20,)
    np.testing.assert_array_equal(across[:10], encode_sequence(chr1_text[-10:]))
    assert (across[10:] == 4).all()
    negative = genome.fetch("chr1", -50, 20_050)
    assert (negative[:50] == 4).all()
    np.testing.assert_array_equal(negative[50:], encode_sequence(chr1_text[:20_050]))
    assert (genome.fetch("chr1", 2_000_000, 2_000_100) == 4).all()


def test_unknown_contig_lists_known_ones(genome):
    with pytest.raises(FlashRNAError, match=r"unknown contig 'chr2' \(contigs: chr1\)"):
        genome.fetch("chr2", 0, 10)


def test_genome_survives_pickling_for_workers(genome):
    copy = pickle.loads(pickle.dumps(genome))
    window = ("chr1", 500_000, 500_100)
    np.testing.assert_array_equal(copy.fetch(*window), genome.fetch(*window))


def _vcf_rows() -> list[tuple[str, int, str, str]]:
    rows = []
    for line in fixture_path("variants/eqtl_hg38_1m.vcf").read_text().splitlines():
        if not line.startswith("#"):
            chrom, pos, _, ref, alt = line.split("\t")[:5]
            rows.append((chrom, int(pos), ref, alt))
    return rows


def test_snv_windows_from_the_vcf(genome, chr1_text):
    length = 1000
    rows = _vcf_rows()
    assert len(rows) == 8
    for chrom, pos, ref, alt in rows:
        reference, alternative = genome.variant_windows(chrom, pos, ref, alt, length)
        start = pos - 1 - length // 2
        expected = chr1_text[max(start, 0) : start + length].rjust(length, "N")
        assert decode_sequence(reference) == expected
        assert decode_sequence(reference[length // 2]) == ref
        assert decode_sequence(alternative[length // 2]) == alt
        changed = np.flatnonzero(reference != alternative)
        assert changed.tolist() == [length // 2]


def test_variant_window_at_the_contig_start_is_n_padded(genome, chr1_text):
    pos = 10_100  # 1-based; the window starts before the contig
    ref = chr1_text[pos - 1]
    reference, _ = genome.variant_windows("chr1", pos, ref, "A" if ref != "A" else "C", 30_000)
    pad = 15_000 - (pos - 1)
    assert (reference[:pad] == 4).all()
    assert decode_sequence(reference[pad:]) == chr1_text[: 30_000 - pad]


def test_indel_windows_keep_length_and_centre(genome, chr1_text):
    length, at = 200, 600_000
    deletion_ref = chr1_text[at : at + 4]
    reference, alternative = genome.variant_windows(
        "chr1", at + 1, deletion_ref, deletion_ref[0], length
    )
    left = chr1_text[at - length // 2 : at]
    assert decode_sequence(reference) == chr1_text[at - length // 2 : at + length // 2]
    assert decode_sequence(alternative) == (left + chr1_text[at] + chr1_text[at + 4 :])[:length]

    insertion = chr1_text[at] + "GATTACA"
    _, alternative = genome.variant_windows("chr1", at + 1, chr1_text[at], insertion, length)
    assert decode_sequence(alternative) == (left + insertion + chr1_text[at + 1 :])[:length]


def test_reference_mismatch_names_position(genome, chr1_text):
    chrom, pos, ref, alt = _vcf_rows()[0]
    wrong = next(b for b in "ACGT" if b != ref)
    with pytest.raises(
        ReferenceMismatchError, match=rf"{chrom}:{pos}: REF is {wrong} but the genome has {ref}"
    ):
        genome.variant_windows(chrom, pos, wrong, alt, 100)
    assert issubclass(ReferenceMismatchError, FlashRNAError)
