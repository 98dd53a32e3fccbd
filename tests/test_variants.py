"""score-variants: windows, gene bins and SED arithmetic against independent computations (Borzoi's
own formulas written out), the REF/ALT swap, ensembles, the output layouts (long, wide, Borzoi's
HDF5, VCF), skip reporting on the real hg38 chr1 fixture, and a planted regulatory effect."""

from __future__ import annotations

import math
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import fixture_path, save_tiny_model
from scipy.stats import spearmanr
from torch import nn

from flashrna.annotation import Annotation
from flashrna.cli import main
from flashrna.genome import Genome, decode_sequence, encode_sequence
from flashrna.model import Ensemble
from flashrna.tracks import TrackTable
from flashrna.utils import FlashRNAError
from flashrna.variants import (
    PROTOCOLS,
    Protocol,
    Skipped,
    Variant,
    VariantScorer,
    parse_variant_id,
    read_vcf,
    score_variants,
    wide_frame,
)
from flashrna.zoo import TrackModel

GENOME = "genome/hg38_1m.fa.gz"
VCF = "variants/eqtl_hg38_1m.vcf"

# Genes around the fixture's eQTLs (1-based GTF coordinates); two transcripts of A overlap.
GTF = """\
chr1\tt\texon\t14000\t14500\t.\t+\t.\tgene_id "A.1"; transcript_id "A1"; gene_name "GA";
chr1\tt\texon\t15000\t15500\t.\t+\t.\tgene_id "A.1"; transcript_id "A1"; gene_name "GA";
chr1\tt\texon\t14400\t14700\t.\t+\t.\tgene_id "A.1"; transcript_id "A2"; gene_name "GA";
chr1\tt\texon\t13100\t13200\t.\t-\t.\tgene_id "B.2"; transcript_id "B1"; gene_name "GB";
chr1\tt\texon\t54000\t54300\t.\t-\t.\tgene_id "C.1"; transcript_id "C1"; gene_name "GC";
chr1\tt\texon\t63000\t64000\t.\t-\t.\tgene_id "D.1"; transcript_id "D1"; gene_name "GD";
chr1\tt\texon\t64500\t64600\t.\t+\t.\tgene_id "E.1"; transcript_id "E1"; gene_name "GE";
chr1\tt\texon\t64900\t65000\t.\t-\t.\tgene_id "F.1"; transcript_id "F1"; gene_name "GF";
"""


def table(rows: list[tuple[str, float, str, int]]) -> TrackTable:
    """A track table from (identifier, scale, sum_stat, strand_pair) rows (no soft clip)."""
    return TrackTable(
        pd.DataFrame(
            {
                "identifier": [r[0] for r in rows],
                "file": "x.bw",
                "clip": 1e9,
                "clip_soft": 1e9,
                "scale": [r[1] for r in rows],
                "sum_stat": [r[2] for r in rows],
                "strand_pair": [r[3] for r in rows],
                "description": [f"RNA:{r[0]}" for r in rows],
                "source_index": range(len(rows)),
            }
        ),
        source="test table",
    )


TRACKS = [("S+", 0.5, "sum", 1), ("S-", 0.5, "sum", 0), ("U", 0.25, "sum", 2)]


@pytest.fixture(scope="module")
def genome() -> Genome:
    return Genome(fixture_path(GENOME))


@pytest.fixture(scope="module")
def annotation(tmp_path_factory) -> Annotation:
    path = tmp_path_factory.mktemp("gtf") / "genes.gtf"
    path.write_text(GTF)
    return Annotation.read_gtf(path)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny", table(TRACKS))


# --------------------------------------------------------------------------------------------
# SED arithmetic with a model whose predictions are known
# --------------------------------------------------------------------------------------------


class BaseCounter(nn.Module):
    """Predicts, per 32-bp bin, ``factor[k]`` x the number of G bases, for track k. Reverse-
    complement averaging then gives (factor[k] G + factor[pair[k]] C) / 2 per bin."""

    def __init__(self, factors, pairs):
        super().__init__()
        self.register_buffer("factors", torch.tensor(factors, dtype=torch.float32))
        self.register_buffer("pairs", torch.tensor(pairs))
        self.config = SimpleNamespace(heads={"human": len(factors)})  # as Ensemble checks

    def strand_pair(self, head: str = "human") -> torch.Tensor:
        return self.pairs

    def forward(self, sequence, head="human", crop_bins=0):
        g = (sequence == 2).float().reshape(len(sequence), -1, 32).sum(-1)
        out = g[..., None] * self.factors
        return out[:, crop_bins : out.shape[1] - crop_bins]


def gtf_genes() -> dict[str, tuple[str, list[tuple[int, int]]]]:
    """Per gene of GTF: its strand and plain exon intervals (0-based half-open, unmerged)."""
    genes: dict[str, tuple[str, list[tuple[int, int]]]] = {}
    for line in GTF.splitlines():
        f = line.split("\t")
        genes.setdefault(f[8].split('"')[1], (f[6], []))[1].append((int(f[3]) - 1, int(f[4])))
    return genes


def hand_bins(exons, start: int, bins: int, rule: str) -> list[int]:
    """The output bins of ``exons`` in a window whose first bin starts at ``start``: ``any``
    bin holding an exon base, or Borzoi's ``majority`` rule as borzoi_sed.py writes it
    (round(start/32) .. round(end/32), half to even, per exon, exact arithmetic)."""
    if rule == "any":
        return sorted(
            {
                (p - start) // 32
                for s, e in exons
                for p in range(s, e)
                if start <= p < start + 32 * bins
            }
        )
    hit: set[int] = set()
    for s, e in exons:
        first = round(Fraction(max(0, s - start), 32))
        hit.update(range(min(first, bins), min(round(Fraction(max(0, e - start), 32)), bins)))
    return sorted(hit)


@pytest.mark.parametrize(
    "protocol",
    [
        Protocol(units="counts", window="centred", exon_bins="any"),
        Protocol(units="scaled", window="centred", exon_bins="any"),
        PROTOCOLS["borzoi"],
    ],
    ids=["counts-centred-any", "scaled-centred-any", "borzoi"],
)
def test_sed_matches_sums_over_exon_bins(genome, annotation, protocol):
    tracks = table(TRACKS)
    factors = [1.0, 2.0, 3.0]
    model = TrackModel(BaseCounter(factors, tracks.strand_pair), "human", tracks, "counter")
    length, crop = 1024, 4
    scorer = VariantScorer(
        model,
        genome,
        annotation,
        length=length,
        crop_bins=crop,
        batch_size=2,
        protocol=protocol,
        stats=["SED", "logSED", "REF", "ALT"],
    )
    variants = [Variant("chr1", 14677, "G", "A", "v1"), Variant("chr1", 64764, "C", "T", "v2")]
    scores = wide_frame(scorer, [item for batch, _ in scorer.run(variants) for item in batch])
    fasta = decode_sequence(genome.fetch("chr1", 0, 200_000))
    checked = 0
    left = length // 2 - (protocol.window == "borzoi")  # bases left of the variant
    for v in variants:
        start = v.pos - 1 - left + 32 * crop  # first output bin
        bins = length // 32 - 2 * crop
        alt_text = fasta[: v.pos - 1] + v.alt + fasta[v.pos :]
        for gene_id, (strand, exons) in gtf_genes().items():
            hit = hand_bins(exons, start, bins, protocol.exon_bins)
            row = scores[(scores["variant"] == v.id) & (scores["gene_id"] == gene_id)]
            if not hit:
                assert row.empty
                continue
            checked += 1
            assert row["exon_bins"].item() == len(hit)
            for k, (ident, scale, _, pair) in enumerate(TRACKS):
                sums = []
                for text in (fasta, alt_text):
                    chunks = [text[start + 32 * b : start + 32 * b + 32] for b in hit]
                    per_bin = [
                        (factors[k] * c.count("G") + factors[pair] * c.count("C")) / 2
                        for c in chunks
                    ]
                    total = sum(per_bin) / scale  # the inverse transform undoes the scale
                    sums.append(total * scale if protocol.units == "scaled" else total)
                ref, alt = sums
                wrong_strand = ident[-1] in "+-" and ident[-1] != strand
                got = {s: row[f"{s}:{ident}"].item() for s in ("SED", "logSED", "REF", "ALT")}
                if wrong_strand:
                    assert all(math.isnan(x) for x in got.values())
                    continue
                assert got["REF"] == pytest.approx(ref, rel=1e-6)
                assert got["ALT"] == pytest.approx(alt, rel=1e-6)
                assert got["SED"] == pytest.approx(alt - ref, abs=1e-6)
                expected = math.log2(alt + 1) - math.log2(ref + 1)
                assert got["logSED"] == pytest.approx(expected, abs=1e-9)
    assert checked == 3  # v1: gene A (B ends before the window); v2: genes E and F


class KnownPrediction(nn.Module):
    """One unstranded track: per 32-bp bin the squashed prediction 0.4 + 0.3 x (G + C bases);
    its own reverse complement's, so reverse-complement averaging leaves it as it is."""

    def strand_pair(self, head: str = "human") -> torch.Tensor:
        return torch.tensor([0])

    def forward(self, sequence, head="human", crop_bins=0):
        gc = ((sequence == 1) | (sequence == 2)).float().reshape(len(sequence), -1, 32).sum(-1)
        out = (0.4 + 0.3 * gc)[..., None]
        return out[:, crop_bins : out.shape[1] - crop_bins]


def test_logsed_in_scaled_units_by_hand(genome, tmp_path):
    """One gene, one GTEx-like track (sum_sqrt, scale 0.01, soft clip 5), Borzoi's protocol:
    the window (L/2 - 1 bases left of the variant), majority bins, untransform_preds1 with the
    scale put back, logSED = log2(alt + 1) - log2(ref + 1), all written out here."""
    tracks = TrackTable(
        pd.DataFrame(
            {
                "identifier": ["GTEX-1"], "file": "x", "clip": 768, "clip_soft": 5.0,
                "scale": 0.01, "sum_stat": "sum_sqrt", "strand_pair": 0,
                "description": "RNA:t", "source_index": 0,
            }
        )
    )  # fmt: skip
    gtf = tmp_path / "g.gtf"
    gtf.write_text('chr1\tt\texon\t14400\t14541\t.\t+\t.\tgene_id "G";\n')
    model = TrackModel(KnownPrediction(), "human", tracks, "known")
    length, crop = 2048, 16
    scorer = VariantScorer(
        model, genome, Annotation.read_gtf(gtf), length=length, crop_bins=crop,
        stats=["logSED", "REF", "ALT"],
    )  # fmt: skip
    variant = Variant("chr1", 14450, "C", "T", "v")  # the genome has C: a GC base lost
    (item,), _ = next(scorer.run([variant]))
    out_len = length - 2 * 32 * crop
    seq_start = variant.pos - out_len // 2  # borzoi_sed.py make_snpseq_bedt (0-based start)
    first, stop = round(Fraction(14399 - seq_start, 32)), round(Fraction(14541 - seq_start, 32))
    text = decode_sequence(genome.fetch("chr1", seq_start, seq_start + out_len))
    at = variant.pos - 1 - seq_start
    assert text[at] == "C"
    sums = []
    for sequence in (text, text[:at] + "T" + text[at + 1 :]):
        total = 0.0
        for b in range(first, stop):
            y = 0.4 + 0.3 * sum(base in "GC" for base in sequence[32 * b : 32 * b + 32])
            z = y / 0.01
            z = 5.0 + (z - 5.0) ** 2 if z > 5.0 else z
            total += z ** (4 / 3) * 0.01
        sums.append(total)
    assert item.values["REF"][0, 0] == pytest.approx(sums[0], rel=1e-5)
    assert item.values["ALT"][0, 0] == pytest.approx(sums[1], rel=1e-5)
    expected = math.log2(sums[1] + 1) - math.log2(sums[0] + 1)
    assert expected < -0.001  # a visible effect
    assert item.values["logSED"][0, 0] == pytest.approx(expected, rel=1e-4)
    assert item.exon_bins.tolist() == [stop - first]


def test_ensembles_average_scores_or_predictions(genome, annotation):
    tracks = table(TRACKS)
    pairs = tracks.strand_pair
    members = [BaseCounter([1.0, 2.0, 3.0], pairs), BaseCounter([3.0, 0.5, 1.0], pairs)]
    variants = [Variant("chr1", 14677, "G", "A", "v1"), Variant("chr1", 64764, "C", "T", "v2")]

    def score(module, ensemble):
        model = TrackModel(module, "human", tracks, "m")
        scorer = VariantScorer(
            model, genome, annotation, length=1024, crop_bins=4, batch_size=2,
            stats=["logSED", "REF"], protocol=Protocol(ensemble=ensemble),
        )  # fmt: skip
        return [item.values for batch, _ in scorer.run(variants) for item in batch]

    singles = [score(m, "scores") for m in members]
    by_scores = score(Ensemble(members), "scores")
    by_predictions = score(Ensemble(members), "predictions")
    # The mean model of two linear counters is the counter with the mean factors.
    mean_model = score(BaseCounter([2.0, 1.25, 2.0], pairs), "scores")
    for k in range(len(variants)):
        for stat in ("logSED", "REF"):
            mean = (singles[0][k][stat] + singles[1][k][stat]) / 2
            np.testing.assert_allclose(by_scores[k][stat], mean, rtol=1e-9)
            np.testing.assert_allclose(by_predictions[k][stat], mean_model[k][stat], rtol=1e-6)
    assert not np.allclose(by_scores[0]["logSED"], by_predictions[0]["logSED"])


# --------------------------------------------------------------------------------------------
# End to end on the hg38 chr1 fixture with a tiny model
# --------------------------------------------------------------------------------------------


def run_score_variants(tmp_path, vcf, fasta, gtf, model, *extra) -> dict:
    out = tmp_path / "out"
    argv = [
        "score-variants",
        "--vcf", str(vcf), "--fasta", str(fasta), "--gtf", str(gtf), "--model", str(model),
        "--length", "4096", "--crop-bins", "16", "--batch-size", "3", "--out", str(out), *extra,
    ]  # fmt: skip
    assert main(argv) == 0
    return {
        "scores": pd.read_csv(out / "scores.tsv", sep="\t"),
        "skipped": pd.read_csv(out / "skipped.tsv", sep="\t", keep_default_na=False),
        "summary": pd.read_json(out / "summary.json", typ="series"),
        "out": out,
    }


EXTRA_VCF_LINES = [
    "chr1\t14680\tmismatch\tA\tG\t.\t.",  # the genome has G here: REF and ALT exchanged
    "chr1\t14680\tneither\tA\tC\t.\t.",  # the genome has G: neither allele
    "chr2\t100\tnocontig\tA\tG\t.\t.",
    "chr1\t14690\tinsertion\tA\tAT\t.\t.",
    "chr1\t54500\tsymbolic\tG\t<DEL>\t.\t.",
    "chr1\tmany\tbroken",
    "chr1\t63697\t.\tT\tC,G\t.\t.",  # two alleles, no ID
]


@pytest.mark.parametrize("protocol", ["legacy", "borzoi"])
def test_every_variant_scored_or_reported(tmp_path, tiny_model, protocol):
    gtf = tmp_path / "genes.gtf"
    gtf.write_text(GTF)
    vcf = tmp_path / "variants.vcf"
    vcf.write_text(fixture_path(VCF).read_text() + "\n".join(EXTRA_VCF_LINES) + "\n")
    extra = ["--protocol", protocol, "--layout", "wide" if protocol == "legacy" else "long"]
    result = run_score_variants(tmp_path, vcf, fixture_path(GENOME), gtf, tiny_model, *extra)
    scores, skipped, summary = result["scores"], result["skipped"], result["summary"]
    reasons = dict(zip(skipped["variant"], skipped["reason"], strict=True))
    expected = {
        "chr1_108230_C_T_b38": "no_genes",
        "chr1_108826_G_C_b38": "no_genes",
        "chr1_135203_G_A_b38": "no_genes",
        "neither": "ref_mismatch",
        "nocontig": "contig_missing",
        "symbolic": "unsupported_allele",
        "": "malformed",
    }
    scored_ids = [
        *("chr1_14677_G_A_b38", "chr1_54490_G_A_b38", "chr1_63671_G_A_b38"),
        *("chr1_63697_T_C_b38", "chr1_64764_C_T_b38", "chr1_63697_T_C", "chr1_63697_T_G"),
    ]
    if protocol == "legacy":
        expected |= {"mismatch": "ref_mismatch", "insertion": "not_snv"}
    else:  # the swap and the indel are scored
        scored_ids += ["mismatch", "insertion"]
    assert reasons == expected
    scored = scores[["variant", "alt"]].drop_duplicates()
    assert sorted(scored["variant"]) == sorted(scored_ids)
    # 8 fixture variants + 7 extra lines, one of them with two alleles: 16 outcomes.
    assert summary["scored"] + sum(summary["skipped"].values()) == 16 == len(scored) + len(skipped)
    assert summary["swapped"] == (protocol == "borzoi")
    assert summary["protocol"] == protocol
    # Genes per variant: those with an exon bin in the 4096 - 2*16*32 bp output window.
    genes = {"chr1_14677_G_A_b38": {"A.1", "B.2"}, "chr1_54490_G_A_b38": {"C.1"}}
    genes |= {
        v: {"D.1", "E.1", "F.1"}
        for v in ("chr1_63671_G_A_b38", "chr1_63697_T_C_b38", "chr1_64764_C_T_b38")
    }
    for variant, gene_ids in genes.items():
        assert set(scores.loc[scores["variant"] == variant, "gene_id"]) == gene_ids
    plus = scores["gene_strand"] == "+"
    if protocol == "legacy":
        # Stranded tracks score only their own strand's genes; the unstranded one scores all.
        assert (
            scores.loc[plus, "logSED:S-"].isna().all()
            and scores.loc[~plus, "logSED:S+"].isna().all()
        )
        assert scores.loc[plus, "logSED:S+"].notna().all() and scores["logSED:U"].notna().all()
    else:
        # Long: each gene is scored by its strand's track of the pair and by the unstranded one.
        per_gene = scores.groupby(["variant", "alt", "gene_id"])["track"].agg(frozenset)
        strands = scores.groupby(["variant", "alt", "gene_id"])["gene_strand"].first()
        want = strands.map({"+": frozenset({"S+", "U"}), "-": frozenset({"S-", "U"})})
        pd.testing.assert_series_equal(per_gene, want, check_names=False)
        assert scores[["SED", "logSED"]].notna().all().all()
    listed = pd.read_csv(result["out"] / "tracks.tsv", sep="\t", keep_default_na=False)
    assert listed[["identifier", "strand"]].values.tolist() == [
        ["S+", "+"],
        ["S-", "-"],
        ["U", "."],
    ]
    parquet = pd.read_parquet(result["out"] / "scores.parquet")
    pd.testing.assert_frame_equal(parquet, scores, check_dtype=False, rtol=1e-5)


def test_score_variants_called_directly(tmp_path, tiny_model):
    """score_variants with a protocol by name, one track and the wide layout writes and returns
    what the command line with the same options writes."""
    gtf = tmp_path / "genes.gtf"
    gtf.write_text(GTF)
    fasta, vcf = fixture_path(GENOME), fixture_path(VCF)
    summary = score_variants(
        [tiny_model], fasta, gtf, tmp_path / "lib", vcf=vcf, protocol="legacy",
        identifiers=["U"], stats=["logSED"], layout="wide", length=4096, crop_bins=16,
        batch_size=3, device="cpu",
    )  # fmt: skip
    options = ["--protocol", "legacy", "--tracks", "U", "--stats", "logSED", "--layout", "wide"]
    cli = run_score_variants(tmp_path / "cli", vcf, fasta, gtf, tiny_model, *options)
    written = pd.read_json(tmp_path / "lib" / "summary.json", typ="series")
    for key in ("scored", "skipped", "protocol", "tracks", "vcf", "model", "length"):
        assert summary[key] == written[key] == cli["summary"][key]
    assert summary["protocol"] == "legacy" and summary["tracks"] == 1
    scores = pd.read_csv(tmp_path / "lib" / "scores.tsv", sep="\t")
    assert list(scores.columns[-1:]) == ["logSED:U"] and len(scores) > 0
    pd.testing.assert_frame_equal(scores, cli["scores"])
    with pytest.raises(FlashRNAError, match="one of the two"):
        score_variants([tiny_model], fasta, gtf, tmp_path / "none")


def test_swapping_ref_and_alt_negates_logsed(tmp_path, genome, tiny_model):
    """Variants given with REF and ALT exchanged (the genome holds ALT) score as the negation of
    the correct ones; against a FASTA carrying each variant's ALT base, the swapped variant's REF
    is found as given and its windows are the original's, exchanged."""
    gtf = tmp_path / "genes.gtf"
    gtf.write_text(GTF)
    # Variants further apart than a window, so each window holds one patched base.
    variants = [v for v in read_vcf(fixture_path(VCF)) if v.pos in (14677, 54490, 63671)]
    chrom = genome.fetch("chr1", 0, genome.lengths["chr1"])
    for v in variants:
        assert chrom[v.pos - 1] == encode_sequence(v.ref)[0]
        chrom[v.pos - 1] = encode_sequence(v.alt)[0]
    patched = tmp_path / "patched.fa"
    patched.write_text(">chr1\n" + decode_sequence(chrom) + "\n")
    swapped = tmp_path / "swapped.vcf"
    swapped.write_text("".join(f"{v.chrom}\t{v.pos}\t{v.id}\t{v.alt}\t{v.ref}\n" for v in variants))
    kept = tmp_path / "kept.vcf"
    kept.write_text("".join(f"{v.chrom}\t{v.pos}\t{v.id}\t{v.ref}\t{v.alt}\n" for v in variants))
    wide = ("--layout", "wide")
    original = run_score_variants(
        tmp_path / "a", kept, fixture_path(GENOME), gtf, tiny_model, *wide
    )
    flipped = run_score_variants(tmp_path / "b", swapped, patched, gtf, tiny_model, *wide)
    # Borzoi's swap (the default): the genome holds the given ALT, REF is written in.
    written_in = run_score_variants(
        tmp_path / "d", swapped, fixture_path(GENOME), gtf, tiny_model, *wide
    )
    assert written_in["summary"]["swapped"] == len(variants)
    keys = ["variant", "gene_id"]
    for other in (flipped, written_in):
        merged = original["scores"].merge(other["scores"], on=keys, suffixes=("", "_swap"))
        assert len(merged) == len(other["scores"]) == len(original["scores"]) > 0
        for ident in ("S+", "S-", "U"):
            for stat in ("logSED", "SED"):
                a, b = merged[f"{stat}:{ident}"], merged[f"{stat}:{ident}_swap"]
                assert (a.isna() == b.isna()).all()
                np.testing.assert_allclose(a.dropna(), -b.dropna(), rtol=1e-4, atol=1e-6)
    # Without the swap, the exchanged alleles do not match the genome: REF mismatches.
    mismatched = run_score_variants(
        tmp_path / "c", swapped, fixture_path(GENOME), gtf, tiny_model, "--ref-mismatch", "skip"
    )
    assert mismatched["scores"].empty
    assert set(mismatched["skipped"]["reason"]) == {"ref_mismatch"}


def test_hdf5_round_trips_in_borzoi_layout(tmp_path, tiny_model):
    """sed.h5 has borzoi_sed.py's datasets, dtypes and shapes, and read as
    borzoi_gtex_coef_sed.py reads it (si -> variant, targets by column) holds the TSV's values."""
    import h5py

    gtf = tmp_path / "genes.gtf"
    gtf.write_text(GTF)
    vcf = tmp_path / "variants.vcf"
    vcf.write_text(fixture_path(VCF).read_text() + EXTRA_VCF_LINES[0] + "\n")
    stats = ["SED", "logSED", "REF", "ALT"]
    result = run_score_variants(
        tmp_path, vcf, fixture_path(GENOME), gtf, tiny_model,
        "--format", "tsv", "h5", "--stats", *stats,
    )  # fmt: skip
    scores = result["scores"]
    pairs = scores[["variant", "gene_id"]].drop_duplicates()
    variants = pairs["variant"].drop_duplicates().tolist()
    with h5py.File(result["out"] / "sed.h5", "r") as h5:
        assert set(h5) == {
            "chr", "pos", "snp", "ref_allele", "alt_allele", "gene", "si", "target_ids",
            "target_labels", *stats,
        }  # fmt: skip
        data = {name: h5[name][()] for name in h5}
    for name in ("chr", "snp", "ref_allele", "alt_allele", "gene", "target_ids", "target_labels"):
        assert data[name].dtype.kind == "S", name
    assert data["pos"].dtype == np.uint32 and data["si"].dtype == np.int64
    assert all(data[s].dtype == np.float16 for s in stats)
    n_variants, n_scores = len(variants), len(pairs)
    for name in ("chr", "pos", "snp", "ref_allele", "alt_allele"):
        assert data[name].shape == (n_variants,)
    assert data["si"].shape == data["gene"].shape == (n_scores,)
    assert all(data[s].shape == (n_scores, 2) for s in stats)
    text = {k: [x.decode("UTF-8") for x in data[k]] for k in data if data[k].dtype.kind == "S"}
    assert text["target_ids"] == ["S+", "U"] and text["target_labels"] == ["RNA:S+", "RNA:U"]
    assert text["snp"] == variants
    records = {v.id: v for v in read_vcf(vcf)}
    assert text["ref_allele"] == [records[v].ref for v in variants]  # as given, swap or not
    assert text["alt_allele"] == [records[v].alt for v in variants]
    assert data["pos"].tolist() == [records[v].pos for v in variants]
    for row, (si, gene) in enumerate(zip(data["si"], text["gene"], strict=True)):
        variant = text["snp"][si]
        rows = scores[(scores["variant"] == variant) & (scores["gene_id"] == gene)]
        strand = rows["gene_strand"].iloc[0]
        for column, target in enumerate(("S+" if strand == "+" else "S-", "U")):
            tsv = rows.loc[rows["track"] == target, stats].iloc[0].to_numpy(dtype=float)
            h5_values = np.array([data[s][row, column] for s in stats], dtype=float)
            np.testing.assert_allclose(h5_values, tsv.astype(np.float16), rtol=2e-3, atol=1e-7)


def test_vcf_output_adds_the_top_score_per_gene(tmp_path, tiny_model):
    gtf = tmp_path / "genes.gtf"
    gtf.write_text(GTF)
    vcf = tmp_path / "variants.vcf"
    vcf.write_text(fixture_path(VCF).read_text())
    result = run_score_variants(
        tmp_path, vcf, fixture_path(GENOME), gtf, tiny_model,
        "--format", "tsv", "vcf", "--stats", "logSED",
    )  # fmt: skip
    scores = result["scores"]
    lines = (result["out"] / "scores.vcf").read_text().splitlines()
    header = [line for line in lines if line.startswith("##")]
    assert header[0] == "##fileformat=VCFv4.2" and header[-1].startswith("##INFO=<ID=FLASHRNA,")
    records = [line.split("\t") for line in lines if not line.startswith("#")]
    assert len(records) == 8
    for fields in records:
        rows = scores[scores["variant"] == fields[2]]
        if rows.empty:  # left as it was (the fixture has no INFO column)
            assert len(fields) == 7
            continue
        entries = fields[7].removeprefix("FLASHRNA=").split(",")
        best = rows.loc[rows["logSED"].abs().groupby(rows["gene_id"], sort=False).idxmax()]
        assert entries == [
            f"{fields[4]}|{r.gene_id}|{r.track}|{r.logSED:.6g}" for r in best.itertuples()
        ]


def test_indels_are_scored_with_aligned_bins(genome, annotation):
    """A deletion inside gene A's exon: Borzoi's unaligned bins (its BED arithmetic, the deletion
    length added) for both alleles, or each allele's own bins; an SNV's bins are the same."""
    tracks = table(TRACKS)
    model = TrackModel(BaseCounter([1.0, 2.0, 3.0], tracks.strand_pair), "human", tracks, "c")
    length, crop = 1024, 4
    out_len = length - 2 * 32 * crop
    here = decode_sequence(genome.fetch("chr1", 14449, 14490))  # from 1-based 14450
    deletion = Variant("chr1", 14450, here[:41], here[0], "del40")
    snv = Variant("chr1", 14450, here[0], "A" if here[0] != "A" else "C", "snv")
    exons = gtf_genes()["A.1"][1]
    prepared = {}
    for indels in ("aligned", "unaligned"):
        scorer = VariantScorer(
            model, genome, annotation, length=length, crop_bins=crop,
            protocol=Protocol(indels=indels),
        )  # fmt: skip
        for v in (deletion, snv):
            item = scorer.prepare(v)
            prepared[indels, v.id] = dict(
                zip(
                    [g.gene_id for g in item.genes],
                    zip(item.ref_bins, item.alt_bins, strict=True),
                    strict=True,
                )
            )
    d = 40
    # borzoi_sed.py: seq_start = pos - out_len/2 + d after its left-overhang correction.
    borzoi = hand_bins(exons, deletion.pos - out_len // 2 + d, out_len // 32, "majority")
    ref_bins, alt_bins = prepared["unaligned", "del40"]["A.1"]
    assert ref_bins.tolist() == alt_bins.tolist() == borzoi
    # Aligned: the reference window is trimmed by d // 2 at its start (dna_length_1hot); the
    # alternative's flanks sit as fetched, the exon's part after the deletion d bp earlier.
    ref_bins, alt_bins = prepared["aligned", "del40"]["A.1"]
    assert ref_bins.tolist() == hand_bins(
        exons, deletion.pos - out_len // 2 + d // 2, 24, "majority"
    )
    at = deletion.pos - 1
    moved = [
        (s if s <= at else max(at + 1, s - d), e if e <= at else max(at + 1, e - d))
        for s, e in exons
    ]
    assert alt_bins.tolist() == hand_bins(moved, deletion.pos - out_len // 2, 24, "majority")
    for indels in ("aligned", "unaligned"):
        ref_bins, alt_bins = prepared[indels, "snv"]["A.1"]
        assert (
            ref_bins.tolist()
            == alt_bins.tolist()
            == hand_bins(exons, snv.pos - out_len // 2, 24, "majority")
        )


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def test_read_vcf_splits_alleles_and_names_variants(tmp_path):
    import gzip

    path = tmp_path / "v.vcf.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\n")
        handle.write("chr1\t10\t.\tg\ta,C\nchr1\t11\trs1\tA\tT\nchr1\t12\n")
    items = list(read_vcf(path))
    assert items[:3] == [
        Variant("chr1", 10, "G", "A", "chr1_10_G_A", 3),
        Variant("chr1", 10, "G", "C", "chr1_10_G_C", 3),
        Variant("chr1", 11, "A", "T", "rs1", 4),
    ]
    assert isinstance(items[3], Skipped) and items[3].reason == "malformed" and items[3].line == 5


def test_parse_variant_id():
    assert parse_variant_id("chr1_13550_G_A_b38") == Variant(
        "chr1", 13550, "G", "A", "chr1_13550_G_A_b38"
    )
    assert parse_variant_id("chrUn_KI270742v1_5_C_T_b38").chrom == "chrUn_KI270742v1"
    assert parse_variant_id("chr1_x_G_A_b38") is None
    assert parse_variant_id("rs123") is None


# --------------------------------------------------------------------------------------------
# A planted regulatory effect, learned by a tiny model
# --------------------------------------------------------------------------------------------

MOTIF = "TGACGTCA"  # its own reverse complement, so both strands drive the same coverage
LENGTH = 512


def motif_coverage(sequences: np.ndarray) -> np.ndarray:
    """The planted rule: per 32-bp bin, 1 + 10 x motifs starting in the bin + 4 x motifs starting
    in a neighbouring bin. (n, L) uint8 -> (n, L/32) float32."""
    n, length = sequences.shape
    windows = np.lib.stride_tricks.sliding_window_view(sequences, len(MOTIF), axis=1)
    starts = np.zeros((n, length), bool)
    starts[:, : length - len(MOTIF) + 1] = (windows == encode_sequence(MOTIF)).all(-1)
    count = starts.reshape(n, -1, 32).sum(-1).astype(np.float32)
    neighbours = np.zeros_like(count)
    neighbours[:, 1:] += count[:, :-1]
    neighbours[:, :-1] += count[:, 1:]
    return 1 + 10 * count + 4 * neighbours


def random_dna(rng, length: int, words: dict[str, float]) -> str:
    """Random bases with each word planted at ``rate`` occurrences per bp."""
    text = list("ACGT"[i] for i in rng.integers(0, 4, length))
    for word, rate in words.items():
        for at in rng.integers(0, length - len(word), rng.poisson(length * rate)):
            text[at : at + len(word)] = word
    return "".join(text)


@pytest.fixture
def single_thread():
    """Small models train faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_planted_effects_are_ranked(tmp_path, single_thread):
    """Train with the training step's own code on windows whose coverage a motif drives, then
    score variants that break or complete motifs against the rule's own logSED."""
    from flashrna.data import write_shard
    from flashrna.training.config import load_config
    from flashrna.training.trainer import train

    rng = np.random.default_rng(0)
    tracks = table([("EXPR", 1.0, "sum", 0)])
    n = 520
    sequences = np.stack(
        [encode_sequence(random_dna(rng, LENGTH, {MOTIF: 1 / 256})) for _ in range(n)]
    )
    windows = pd.DataFrame(
        {"chrom": "chrT", "start": np.arange(n) * 1_000, "label": ["train"] * 512 + ["fold4"] * 8}
    ).assign(end=lambda w: w["start"] + LENGTH)[["chrom", "start", "end", "label"]]
    coverage = motif_coverage(sequences)[..., None]
    write_shard(tmp_path / "shards" / "s0", sequences, coverage, windows, tracks, "human")
    small = dict(
        stem_channels=16, tower_channels=[16, 16, 32, 32, 32], dim=32, num_layers=1,
        num_heads=2, num_kv_heads=2, head_dim=16, rope_dims=16, mlp_hidden=64, head_hidden=32,
        attention_dropout=0.0, mlp_dropout=0.0, residual_dropout=0.0, head_dropout=0.0,
    )  # fmt: skip
    config = load_config(
        overrides={
            "model": {"preset": "tiny", "overrides": small},
            "data": {
                "species": {"human": {"shards": str(tmp_path / "shards")}},
                "max_shift": 0,
                "num_workers": 0,
            },
            "train": {"steps": 200, "learning_rate": 2e-3, "warmup_steps": 10},
            "validation": {"every_steps": 1_000, "max_examples": 8, "final_model": "last"},
            "log": {"progress": False, "tensorboard": False},
        }
    )
    train(config, tmp_path / "run", device="cpu")
    directory = tmp_path / "run" / "model"

    # A genome with motifs and one-base-off motifs, one gene over all of it.
    near = MOTIF[:3] + "A" + MOTIF[4:]
    text = random_dna(rng, 6_000, {MOTIF: 1 / 400, near: 1 / 400})
    (tmp_path / "g.fa").write_text(">chrS\n" + text + "\n")
    (tmp_path / "g.gtf").write_text('chrS\tt\texon\t1\t6000\t.\t+\t.\tgene_id "G";\n')
    positions = [m + 4 for m in range(300, 5_700) if text.startswith(MOTIF, m)]  # C -> A: loss
    positions += [m + 4 for m in range(300, 5_700) if text.startswith(near, m)]  # A -> C: gain
    positions += [int(p) for p in rng.integers(300, 5_700, 15)]  # mostly neutral
    lines, truth = [], []
    for k, pos in enumerate(sorted(set(positions))):
        ref = text[pos - 1]
        alt = {"C": "A", "A": "C"}.get(ref, "C" if ref != "C" else "A")
        lines.append(f"chrS\t{pos}\tv{k}\t{ref}\t{alt}")
        start = pos - 1 - (LENGTH // 2 - 1)  # the variant at L/2 - 1, as Borzoi's windows
        window = text[start : start + LENGTH]
        mutated = window[: LENGTH // 2 - 1] + alt + window[LENGTH // 2 :]
        ref_sum, alt_sum = motif_coverage(
            np.stack([encode_sequence(window), encode_sequence(mutated)])
        ).sum(1)
        truth.append(math.log2(alt_sum + 1) - math.log2(ref_sum + 1))
    (tmp_path / "v.vcf").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    argv = [
        "score-variants", "--vcf", str(tmp_path / "v.vcf"), "--fasta", str(tmp_path / "g.fa"),
        "--gtf", str(tmp_path / "g.gtf"), "--model", str(directory), "--length", str(LENGTH),
        "--crop-bins", "0", "--batch-size", "8", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    scores = pd.read_csv(out / "scores.tsv", sep="\t").set_index("variant")
    assert (scores["track"] == "EXPR").all()  # the long layout: one row per variant here
    predicted = scores.loc[[f"v{k}" for k in range(len(lines))], "logSED"]
    truth = np.array(truth)
    assert (truth > 0).sum() >= 5 and (truth < 0).sum() >= 5  # gains and losses were planted
    rho = spearmanr(predicted, truth)[0]
    assert rho > 0.6, rho


def test_bench_variants_scores_its_synthetic_variants(tmp_path):
    """`flashrna bench variants` (not timed here): inputs kept in --workdir, every variant
    scored on genes, the result written."""
    argv = ["bench", "variants", "--preset", "tiny", "--length", "2048", "--variants", "3"]
    argv += ["--tracks", "5", "--device", "cpu", "--workdir", str(tmp_path / "w")]
    assert main([*argv, "--output", str(tmp_path / "r.json"), "--batch-size", "2"]) == 0
    result = pd.read_json(tmp_path / "r.json", typ="series")
    assert result["variants"] == 3 and result["variant_genes"] >= 3 and result["tracks"] == 5
    assert result["variants_per_s"] > 0 and result["protocol"] == "borzoi"
    scores = pd.read_csv(tmp_path / "w" / "out" / "scores.tsv", sep="\t")
    assert set(scores["track"]) == {f"GTEX-{k}" for k in range(5)}
