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
        windows = genome.variant_windows(chrom, pos, ref, alt, length)
        reference, alternative = windows.reference, windows.alternative
        start = pos - 1 - (length // 2 - 1)  # the variant at index L/2 - 1 (snp_seq1)
        expected = chr1_text[max(start, 0) : start + length].rjust(length, "N")
        assert decode_sequence(reference) == expected
        assert decode_sequence(reference[length // 2 - 1]) == ref
        assert decode_sequence(alternative[length // 2 - 1]) == alt
        changed = np.flatnonzero(reference != alternative)
        assert changed.tolist() == [length // 2 - 1]
        assert not windows.swapped
        centred = genome.variant_windows(chrom, pos, ref, alt, length, left=length // 2)
        assert decode_sequence(centred.reference[length // 2]) == ref


def test_variant_window_at_the_contig_start_is_n_padded(genome, chr1_text):
    pos = 10_100  # 1-based; the window starts before the contig
    ref = chr1_text[pos - 1]
    windows = genome.variant_windows("chr1", pos, ref, "A" if ref != "A" else "C", 30_000)
    pad = 14_999 - (pos - 1)
    assert (windows.reference[:pad] == 4).all()
    assert decode_sequence(windows.reference[pad:]) == chr1_text[: 30_000 - pad]


def snp_seq1(text: str, pos: int, ref: str, alt: str, seq_len: int) -> tuple[str, str] | None:
    """baskerville vcf.snp_seq1 followed by dna_length_1hot, written out from their steps on a
    contig's text (pysam's fetch returns the bases up to the contig end); None when the genome
    matches neither allele."""
    left_len, right_len = seq_len // 2 - 1, seq_len // 2
    seq_start = pos - left_len  # GFF-style 1-based
    seq_end = pos + right_len + max(0, len(ref) - len(alt))
    # snp_seq1 tests seq_start < 0; at 0 pysam could not fetch from -1: N-padded here too.
    seq = (
        "N" * (1 - seq_start) + text[:seq_end] if seq_start <= 0 else text[seq_start - 1 : seq_end]
    )
    if len(seq) < seq_len:
        seq += "N" * (seq_len - len(seq))
    if seq[left_len : left_len + len(ref)] != ref:
        if seq[left_len : left_len + len(alt)] != alt:
            return None
        seq = seq[:left_len] + ref + seq[left_len + len(alt) :]
    seq_alt = seq[:left_len] + alt + seq[left_len + len(ref) :]
    return dna_length(seq, seq_len), dna_length(seq_alt, seq_len)


def dna_length(seq: str, length: int) -> str:
    """baskerville dna_length_1hot's trim or N padding (before one-hot coding)."""
    if length < len(seq):
        trim = (len(seq) - length) // 2
        return seq[trim : trim + length]
    front = (length - len(seq)) // 2
    return "N" * front + seq + "N" * (length - len(seq) - front)


def test_windows_are_snp_seq1s(genome, chr1_text):
    length = 200
    at = 600_000  # 0-based
    here = chr1_text[at : at + 8]
    variants = [
        (at + 1, here[0], "T" if here[0] != "T" else "G"),  # SNP
        (at + 1, here[0], here[0] + "GATTACA"),  # insertion of 7
        (at + 1, here[0], here[0] + "GA"),  # insertion of 2
        (at + 1, here[:4], here[0]),  # deletion of 3
        (at + 1, here[:6], here[0]),  # deletion of 5
        (at + 1, here[:3], "GT"),  # complex
        (at + 1, "T" if here[0] != "T" else "G", here[0]),  # alleles exchanged: swap
        (at + 1, here[0] + "C", here[0]),  # a deletion the genome lacks: swap (insertion)
        (60, "N", "A"),  # in the N run 60 bp from the contig start
        (101, "NN", "N"),  # deletion 100 bp from the start
        (9_950, "N", "NAC"),  # window reaching the contig start
        (1_000_000 - 40, chr1_text[-41:-37], chr1_text[-41]),  # deletion near the contig end
        (1_000_000 - 3, chr1_text[-4], "A"),
    ]
    for pos, ref, alt in variants:
        expected = snp_seq1(chr1_text, pos, ref, alt, length)
        assert expected is not None, (pos, ref, alt)
        windows = genome.variant_windows("chr1", pos, ref, alt, length)
        got = decode_sequence(windows.reference), decode_sequence(windows.alternative)
        assert got == expected, (pos, ref, alt)
        assert windows.swapped == (chr1_text[pos - 1 : pos - 1 + len(ref)] != ref)
        # Each allele's layout says where the genome's bases landed: both flanks, 30 bp each.
        for window, layout, allele in (
            (windows.reference, windows.reference_layout, ref),
            (windows.alternative, windows.alternative_layout, alt),
        ):
            genome_allele = alt if windows.swapped else ref
            flanks = np.r_[pos - 31 : pos - 1, pos - 1 + len(genome_allele) + np.arange(30)]
            index = layout.index(flanks)
            inside = (index >= 0) & (index < length) & (flanks >= 0) & (flanks < len(chr1_text))
            assert inside.sum() >= 20
            assert decode_sequence(window[index[inside]]) == "".join(
                chr1_text[x] for x in flanks[inside]
            )
            start = layout.index(np.array([pos - 1]))[0]
            assert decode_sequence(window[start : start + len(allele)]) == allele[: length - start]


def test_mismatch_without_swap_is_an_error(genome, chr1_text):
    pos = 600_001
    other = "T" if chr1_text[pos - 1] != "T" else "G"
    with pytest.raises(ReferenceMismatchError, match="not REF\\)"):
        genome.variant_windows("chr1", pos, other, chr1_text[pos - 1], 100, swap=False)


def test_reference_mismatch_names_position(genome, chr1_text):
    chrom, pos, ref, alt = _vcf_rows()[0]
    wrong = next(b for b in "ACGT" if b != ref)
    with pytest.raises(
        ReferenceMismatchError, match=rf"{chrom}:{pos}: REF is {wrong} but the genome has {ref}"
    ):
        genome.variant_windows(chrom, pos, wrong, alt, 100)
    assert issubclass(ReferenceMismatchError, FlashRNAError)
