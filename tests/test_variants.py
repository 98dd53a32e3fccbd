"""score-variants: windows, gene bins and SED arithmetic against independent computations, the
REF/ALT swap, skip reporting on the real hg38 chr1 fixture, and a planted regulatory effect."""

from __future__ import annotations

import math

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
from flashrna.tracks import TrackTable
from flashrna.variants import (
    Skipped,
    Variant,
    VariantScorer,
    parse_variant_id,
    read_vcf,
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

    def strand_pair(self, head: str = "human") -> torch.Tensor:
        return self.pairs

    def forward(self, sequence, head="human", crop_bins=0):
        g = (sequence == 2).float().reshape(len(sequence), -1, 32).sum(-1)
        out = g[..., None] * self.factors
        return out[:, crop_bins : out.shape[1] - crop_bins]


@pytest.mark.parametrize("units", ["counts", "scaled"])
def test_sed_matches_sums_over_exon_bins(genome, annotation, units):
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
        units=units,
        stats=["SED", "logSED", "REF", "ALT"],
    )
    variants = [Variant("chr1", 14677, "G", "A", "v1"), Variant("chr1", 64764, "C", "T", "v2")]
    frames = [frame for frame, _ in scorer.run(variants)]
    scores = pd.concat(frames, ignore_index=True)
    fasta = decode_sequence(genome.fetch("chr1", 0, 200_000))
    gene_exons = {}  # plain intervals from the GTF text, 0-based half-open
    for line in GTF.splitlines():
        f = line.split("\t")
        gene_exons.setdefault(f[8].split('"')[1], (f[6], []))[1].append((int(f[3]) - 1, int(f[4])))
    checked = 0
    for v in variants:
        start = v.pos - 1 - length // 2 + 32 * crop  # first output bin
        bins = length // 32 - 2 * crop
        alt_text = fasta[: v.pos - 1] + v.alt + fasta[v.pos :]
        for gene_id, (strand, exons) in gene_exons.items():
            hit = sorted(
                {
                    (p - start) // 32
                    for s, e in exons
                    for p in range(s, e)
                    if start <= p < start + 32 * bins
                }
            )
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
                    sums.append(total * scale if units == "scaled" else total)
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


def test_every_variant_scored_or_reported(tmp_path, tiny_model):
    gtf = tmp_path / "genes.gtf"
    gtf.write_text(GTF)
    vcf = tmp_path / "variants.vcf"
    extra = [
        "chr1\t14680\tmismatch\tA\tG\t.\t.",  # the genome has G here
        "chr2\t100\tnocontig\tA\tG\t.\t.",
        "chr1\t14690\tinsertion\tA\tAT\t.\t.",
        "chr1\t54500\tsymbolic\tG\t<DEL>\t.\t.",
        "chr1\tmany\tbroken",
        "chr1\t63697\t.\tT\tC,G\t.\t.",  # two alleles, no ID
    ]
    vcf.write_text(fixture_path(VCF).read_text() + "\n".join(extra) + "\n")
    result = run_score_variants(tmp_path, vcf, fixture_path(GENOME), gtf, tiny_model)
    scores, skipped, summary = result["scores"], result["skipped"], result["summary"]
    reasons = dict(zip(skipped["variant"], skipped["reason"], strict=True))
    assert reasons == {
        "chr1_108230_C_T_b38": "no_genes",
        "chr1_108826_G_C_b38": "no_genes",
        "chr1_135203_G_A_b38": "no_genes",
        "mismatch": "ref_mismatch",
        "nocontig": "contig_missing",
        "insertion": "not_snv",
        "symbolic": "unsupported_allele",
        "": "malformed",
    }
    scored = scores[["variant", "alt"]].drop_duplicates()
    assert sorted(scored["variant"]) == sorted(
        ["chr1_14677_G_A_b38", "chr1_54490_G_A_b38", "chr1_63671_G_A_b38",
         "chr1_63697_T_C_b38", "chr1_64764_C_T_b38", "chr1_63697_T_C", "chr1_63697_T_G"]
    )  # fmt: skip
    # 8 fixture variants + 6 extra lines, one of them with two alleles: 15 outcomes.
    assert summary["scored"] + sum(summary["skipped"].values()) == 15 == len(scored) + len(skipped)
    # Genes per variant: those with an exon base in the 4096 - 2*16*32 bp output window.
    genes = {"chr1_14677_G_A_b38": {"A.1", "B.2"}, "chr1_54490_G_A_b38": {"C.1"}}
    genes |= {
        v: {"D.1", "E.1", "F.1"}
        for v in ("chr1_63671_G_A_b38", "chr1_63697_T_C_b38", "chr1_64764_C_T_b38")
    }
    for variant, expected in genes.items():
        assert set(scores.loc[scores["variant"] == variant, "gene_id"]) == expected
    # Stranded tracks score only their own strand's genes; the unstranded one scores all.
    plus = scores["gene_strand"] == "+"
    assert (
        scores.loc[plus, "logSED:S-"].isna().all() and scores.loc[~plus, "logSED:S+"].isna().all()
    )
    assert scores.loc[plus, "logSED:S+"].notna().all() and scores["logSED:U"].notna().all()
    listed = pd.read_csv(result["out"] / "tracks.tsv", sep="\t", keep_default_na=False)
    assert listed[["identifier", "strand"]].values.tolist() == [
        ["S+", "+"],
        ["S-", "-"],
        ["U", "."],
    ]
    parquet = pd.read_parquet(result["out"] / "scores.parquet")
    pd.testing.assert_frame_equal(parquet, scores, check_dtype=False, rtol=1e-5)


def test_swapping_ref_and_alt_negates_logsed(tmp_path, genome, tiny_model):
    """Against a FASTA carrying each variant's ALT base, the swapped variant's REF is checked and
    its windows are the original's, exchanged."""
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
    original = run_score_variants(tmp_path / "a", kept, fixture_path(GENOME), gtf, tiny_model)[
        "scores"
    ]
    flipped = run_score_variants(tmp_path / "b", swapped, patched, gtf, tiny_model)["scores"]
    keys = ["variant", "gene_id"]
    merged = original.merge(flipped, on=keys, suffixes=("", "_swap"))
    assert len(merged) == len(flipped) == len(original) > 0
    for ident in ("S+", "S-", "U"):
        for stat in ("logSED", "SED"):
            a, b = merged[f"{stat}:{ident}"], merged[f"{stat}:{ident}_swap"]
            assert (a.isna() == b.isna()).all()
            np.testing.assert_allclose(a.dropna(), -b.dropna(), rtol=1e-4, atol=1e-6)
    # The swapped alleles do not match the unpatched genome: REF mismatches, not scores.
    mismatched = run_score_variants(tmp_path / "c", swapped, fixture_path(GENOME), gtf, tiny_model)
    assert mismatched["scores"].empty
    assert set(mismatched["skipped"]["reason"]) == {"ref_mismatch"}


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
        start = pos - 1 - LENGTH // 2
        window = text[start : start + LENGTH]
        mutated = window[: LENGTH // 2] + alt + window[LENGTH // 2 + 1 :]
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
    predicted = scores.loc[[f"v{k}" for k in range(len(lines))], "logSED:EXPR"]
    truth = np.array(truth)
    assert (truth > 0).sum() >= 5 and (truth < 0).sum() >= 5  # gains and losses were planted
    rho = spearmanr(predicted, truth)[0]
    assert rho > 0.6, rho
