"""Flashzoi's benchmarks: the statistics against scikit-learn and direct computations, each
reader on rows in its source's public layout, the liftover arithmetic, the scores against an
independent computation, and the Flashzoi figure and table from result files."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
from helpers import fixture_path, save_tiny_model

from flashrna.annotation import Annotation
from flashrna.attribute import (
    Readout,
    find_gene,
    gene_target,
    gradient_scores,
    input_gradients,
    predicted_values,
)
from flashrna.cli import main
from flashrna.evaluate.crispri import (
    crispri_benchmark,
    crispri_metrics,
    read_crispr_pairs,
    score_pairs,
)
from flashrna.evaluate.flowfish import (
    Liftover,
    flowfish_benchmark,
    parse_columns,
    place_edits,
    read_flowfish,
    to_log2,
)
from flashrna.evaluate.prioritisation import (
    eqtl_prioritisation,
    find_vcf_pairs,
    gtex_tissue_tracks,
    l2fc_norms,
    read_labelled_variants,
)
from flashrna.evaluate.stats import auroc, average_precision, bootstrap, pearson
from flashrna.genome import Genome, decode_sequence, encode_sequence
from flashrna.model import predict
from flashrna.tracks import TrackTable
from flashrna.utils import FlashRNAError
from flashrna.zoo import load_track_model

# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_average_precision_equal_scikit_learn(seed):
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(seed)
    labels = rng.random(200) < 0.2
    scores = np.round(rng.normal(size=200) + labels, 1)  # rounded: many ties
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision(labels, scores) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )
    assert np.isnan(auroc(np.zeros(5, bool), np.arange(5)))
    assert np.isnan(average_precision(np.zeros(5, bool), np.arange(5)))


def test_average_precision_by_hand():
    # Scores 0.9 (positive), 0.8 (negative), 0.7 (positive), tied 0.5 (one of each):
    # precision at the thresholds 1, 1/2, 2/3, 3/5 with recall steps 1/3, 0, 1/3, 1/3.
    labels = [1, 0, 1, 1, 0]
    scores = [0.9, 0.8, 0.7, 0.5, 0.5]
    expected = (1 / 3) * 1 + (1 / 3) * (2 / 3) + (1 / 3) * (3 / 5)
    assert average_precision(labels, scores) == pytest.approx(expected)


def test_bootstrap_interval_is_the_quantiles_of_the_resampled_statistic():
    labels = np.array([1, 0, 0, 1, 0, 0, 0, 1, 0, 0], bool)
    scores = np.array([0.9, 0.1, 0.4, 0.35, 0.8, 0.2, 0.3, 0.7, 0.05, 0.6])
    estimate = bootstrap(average_precision, labels, scores, resamples=300, seed=5)
    # Directly: the same draws, the statistic where a resample has a positive, 2.5/97.5 %.
    draws = np.random.default_rng(5).integers(0, 10, size=(300, 10))
    values = [average_precision(labels[d], scores[d]) for d in draws if labels[d].any()]
    assert estimate.value == average_precision(labels, scores)
    assert estimate.resamples == len(values) < 300
    assert estimate.low == pytest.approx(np.quantile(values, 0.025))
    assert estimate.high == pytest.approx(np.quantile(values, 0.975))
    assert estimate.low <= estimate.value <= estimate.high


def test_pearson_equals_scipy():
    from scipy.stats import pearsonr

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=30), rng.normal(size=30)
    assert pearson(x, y + x) == pytest.approx(pearsonr(x, y + x)[0])
    assert np.isnan(pearson([1, 1, 1], [1, 2, 3]))


# --------------------------------------------------------------------------------------------
# CRISPRi: EngreitzLab/CRISPR_comparison EPCrisprBenchmark_ensemble_data_GRCh38.tsv.gz
# --------------------------------------------------------------------------------------------

# Rows of the public file (commit 0a22e40 of EngreitzLab/CRISPR_comparison) in its own layout:
# a regulated Nasser2021 pair, a Gasperini2019 negative, a Schraivogel2020 negative, a pair
# without a TSS and one without a Regulated value (both left out), and one row whose
# ValidConnection takes a documented non-TRUE value.
CRISPR_HEADER = [
    "chrom",
    "chromStart",
    "chromEnd",
    "name",
    "EffectSize",
    "chrTSS",
    "startTSS",
    "endTSS",
    "measuredGeneSymbol",
    "Significant",
    "pValueAdjusted",
    "PowerAtEffectSize10",
    "PowerAtEffectSize15",
    "PowerAtEffectSize20",
    "PowerAtEffectSize25",
    "PowerAtEffectSize50",
    "ValidConnection",
    "CellType",
    "Reference",
    "Regulated",
    "Dataset",
]
CRISPR_ROWS = [
    [
        "chr1",
        "3774714",
        "3775214",
        "CEP104|chr1:3691278-3691778:*",
        "-0.293431866",
        "chr1",
        "3857213",
        "3857214",
        "CEP104",
        "TRUE",
        "0.004023984",
        "NA",
        "NA",
        "NA",
        "0.825093632",
        "NA",
        "TRUE",
        "K562",
        "Ulirsch2016",
        "TRUE",
        "Nasser2021",
    ],
    [
        "chr1",
        "3803570",
        "3805848",
        "LRRC47|chr1:3720134-3722412:.",
        "-0.00147126515217055",
        "chr1",
        "3796503",
        "3796504",
        "LRRC47",
        "FALSE",
        "0.9999184308772658",
        "0.4",
        "0.8",
        "0.85",
        "1",
        "1",
        "TRUE",
        "K562",
        "Gasperini et al., 2019",
        "FALSE",
        "Gasperini2019",
    ],
    [
        "chr11",
        "220536",
        "220704",
        "CD151|chr11:220536-220704:.",
        "0.01386139366435701",
        "chr11",
        "832843",
        "832844",
        "CD151",
        "FALSE",
        "1",
        "0.6",
        "0.85",
        "0.95",
        "1",
        "1",
        "TRUE",
        "K562",
        "Schraivogel et al., 2020",
        "FALSE",
        "Schraivogel2020",
    ],
    [
        "chr19",
        "12202210",
        "12202750",
        "C19orf43|chr19:12313025-12313565:*",
        "0.01091",
        "chr19",
        "NA",
        "NA",
        "C19orf43",
        "FALSE",
        "0.8236547913860001",
        "NA",
        "NA",
        "NA",
        "0.999999999994",
        "NA",
        "TRUE",
        "K562",
        "Fulco2019",
        "FALSE",
        "Nasser2021",
    ],
    [
        "chr6",
        "3202858",
        "3203698",
        "RP1-40E16.9|chr6:3203092-3203932:.",
        "NA",
        "chr6",
        "3195755",
        "3195756",
        "RP1-40E16.9",
        "TRUE",
        "0.02870783683430391",
        "0",
        "0",
        "0",
        "0",
        "0",
        "TRUE",
        "K562",
        "Gasperini et al., 2019",
        "NA",
        "Gasperini2019",
    ],
    [
        "chrX",
        "46796510",
        "46797010",
        "GATA1|chrX:46655945-46656445:*",
        "0.00261436",
        "chrX",
        "48786554",
        "48786555",
        "GATA1",
        "FALSE",
        "0.966121062391",
        "NA",
        "NA",
        "NA",
        "0.99997546503800006",
        "NA",
        "overlaps potential promoter",
        "K562",
        "Fulco2019",
        "FALSE",
        "Nasser2021",
    ],
]


def test_crispr_reader_parses_the_public_layout(tmp_path):
    path = tmp_path / "EPCrisprBenchmark_ensemble_data_GRCh38.tsv.gz"
    lines = ["\t".join(row) for row in (CRISPR_HEADER, *CRISPR_ROWS)]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    pairs, dropped = read_crispr_pairs(path)
    assert list(pairs["gene"]) == ["CEP104", "LRRC47", "CD151"]
    assert list(pairs["regulated"]) == [True, False, False]
    assert list(pairs["tss"]) == [3857213, 3796503, 832843]
    assert pairs["distance"][0] == abs((3774714 + 3775214) // 2 - 3857213)
    assert dropped == {"invalid_connection": 1, "no_label_or_tss": 2}
    (tmp_path / "broken.tsv").write_text("chrom\tchromStart\nchr1\t5\n")
    with pytest.raises(FlashRNAError, match="missing column"):
        read_crispr_pairs(tmp_path / "broken.tsv")


def test_crispr_score_is_the_normalised_window_sum_of_absolute_scores():
    scores = np.zeros(1000)
    scores[300:310] = [1, -2, 3, -4, 5, -6, 7, -8, 9, -10]
    pairs = pd.DataFrame({"start": [10_290, 10_950, 10_020], "end": [10_320, 10_970, 10_040]})
    out = score_pairs(pairs, scores, window_start=10_000, window=40)
    mean = np.abs(scores).mean()
    assert out[0] == pytest.approx(55 / mean)  # the window 285-325 holds every nonzero base
    assert np.isnan(out[1]) and np.isnan(out[2])  # within 64 bp of the input's ends
    assert score_pairs(pairs[:1], scores, 10_000, 40, normalise=False)[0] == 55


GENES_GTF = """\
chr1\tt\texon\t14000\t14500\t.\t+\t.\tgene_id "ENSG1.4"; transcript_id "T1"; gene_name "GENEA";
chr1\tt\texon\t54000\t54300\t.\t-\t.\tgene_id "ENSG2.1"; transcript_id "T2"; gene_name "GENEB";
"""


def rna_tracks() -> TrackTable:
    frame = genome_tracks().frame.assign(identifier=["RNA-A.1", "RNA-B.1", "RNA-C.1"])
    return TrackTable(frame.assign(description=["RNA:K562", "RNA:K562", "RNA:HepG2"]), "test")


def test_crispri_benchmark_function_equals_the_cli_and_its_scores_the_gradients(tmp_path):
    # Elements around GENEA's TSS (0-based 13999) and GENEB's (54299) in the public layout; one
    # too far from its TSS for the 2,048-bp input, one of a gene the GTF lacks.
    elements = [  # gene, tss, element start, regulated
        ("GENEA", 13999, 13600, "TRUE"), ("GENEA", 13999, 14150, "FALSE"),
        ("GENEA", 13999, 14400, "TRUE"), ("GENEA", 13999, 13300, "FALSE"),
        ("GENEB", 54299, 54000, "FALSE"), ("GENEB", 54299, 54500, "TRUE"),
        ("GENEB", 54299, 54700, "FALSE"), ("GENEB", 54299, 58000, "FALSE"),
        ("NOPE", 30000, 30100, "TRUE"),
    ]  # fmt: skip
    template = dict(zip(CRISPR_HEADER, CRISPR_ROWS[1], strict=True))
    lines = ["\t".join(CRISPR_HEADER)]
    for gene, tss, start, regulated in elements:
        row = template | {"chromStart": str(start), "chromEnd": str(start + 100)}
        row |= {"measuredGeneSymbol": gene, "startTSS": str(tss), "Regulated": regulated}
        lines.append("\t".join(row[c] for c in CRISPR_HEADER))
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("\n".join(lines) + "\n")
    (tmp_path / "genes.gtf").write_text(GENES_GTF)
    genome = fixture_path("genome/hg38_1m.fa.gz")
    model_dir = save_tiny_model(tmp_path / "model", rna_tracks())
    argv = ["crispri-benchmark", "--pairs", str(pairs), "--fasta", str(genome)]
    argv += ["--gtf", str(tmp_path / "genes.gtf"), "--model", str(model_dir), "--device", "cpu"]
    argv += ["--length", "2048", "--crop-bins", "2", "--window", "200", "--description", "K562"]
    argv += ["--distance-bins", "0", "250", "1000", "--bootstrap", "30"]
    assert main([*argv, "--out", str(tmp_path / "cli")]) == 0
    summary = crispri_benchmark(
        pairs,
        [model_dir],
        genome,
        tmp_path / "genes.gtf",
        tmp_path / "lib",
        description="K562",
        crop_bins=2,
        length=2048,
        window=200,
        distance_bins=[0, 250, 1000],
        bootstrap=30,
        device="cpu",
    )
    for name in ("pairs.csv", "metrics.csv"):
        assert (tmp_path / "lib" / name).read_text() == (tmp_path / "cli" / name).read_text()
    assert summary == json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert summary["tracks"] == ["RNA-A.1", "RNA-B.1"]
    out = pd.read_csv(tmp_path / "lib" / "pairs.csv")
    assert out["outcome"].tolist() == ["scored"] * 7 + ["outside_window", "gene_not_scored"]
    # Directly: GENEA's input x gradient over its window, |score| summed around each element.
    model = load_track_model([model_dir], head="human", device="cpu")
    readout = Readout(model.tracks, [0, 1], crop_bins=2)
    target = gene_target(find_gene(Annotation.read_gtf(tmp_path / "genes.gtf"), "GENEA"))
    sequence = Genome(genome).fetch("chr1", 13999 - 1024, 13999 + 1024)[None]
    gradients, _ = input_gradients(model.module, sequence, [target], readout, device="cpu")
    magnitude = np.abs(gradient_scores(gradients, sequence)[0].astype(np.float64))
    for k in range(4):
        lo = elements[k][2] + 50 - 100 - (13999 - 1024)
        expected = magnitude[lo : lo + 200].sum() / magnitude.mean()
        assert out["score"][k] == pytest.approx(expected, rel=1e-4)
    scored = out[out["outcome"] == "scored"]
    assert summary["auprc"] == pytest.approx(
        average_precision(scored["regulated"], scored["score"]), abs=1e-6
    )


def test_crispr_metrics_by_distance_bin():
    rng = np.random.default_rng(0)
    pairs = pd.DataFrame(
        {
            "regulated": rng.random(80) < 0.3,
            "distance": rng.integers(0, 3000, 80),
        }
    )
    pairs["score"] = pairs["regulated"] + rng.normal(0, 0.8, 80)
    metrics = crispri_metrics(pairs, [0, 1000, 3000], resamples=50)
    assert list(metrics["subset"]) == ["all", "0-1000", "1000-3000"]
    near = pairs[pairs["distance"] <= 1000]
    assert metrics["pairs"][1] == len(near)
    assert metrics["auprc"][1] == average_precision(near["regulated"], near["score"])
    assert metrics["positive_rate"][0] == pairs["regulated"].mean()


# --------------------------------------------------------------------------------------------
# eQTL prioritisation: Borzoi's QTL VCF pairs
# --------------------------------------------------------------------------------------------

NEGATIVES = """\
##fileformat=VCFv4.2
##INFO=<ID=MT,Number=1,Type=String,Description="Molecular trait id">
##INFO=<ID=PI,Number=1,Type=String,Description="Positive SNP id">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO
chr1\t14678\tchr1_14678_A_T_b38\tA\tT\t.\t.\tMT=ENSG00000227232;PI=chr1_14677_G_A_b38
chr1\t54491\tchr1_54491_G_C_b38\tG\tC\t.\t.\tMT=ENSG00000268903;PI=chr1_54490_G_A_b38
chr1\t63672\tchr1_63672_G_TA_b38\tG\tTA\t.\t.\tMT=ENSG00000186092;PI=chr1_63671_G_A_b38
chr1\t64800\tchr1_64800_C_T_b38\tC\tT\t.\t.\tMT=ENSG00000186092;PI=chr1_64764_C_T_b38
"""


@pytest.fixture
def vcf_pairs(tmp_path):
    """Whole_Blood_pos.vcf: the real GTEx-style eQTL VCF of the fixtures (baskerville's test
    data); Whole_Blood_neg.vcf: negatives in the layout of Borzoi's QTL sets."""
    vcf = fixture_path("variants/eqtl_hg38_1m.vcf")
    (tmp_path / "Whole_Blood_pos.vcf").write_text(vcf.read_text())
    (tmp_path / "Whole_Blood_neg.vcf").write_text(NEGATIVES)
    return tmp_path


def genome_tracks() -> TrackTable:
    rows = [("GTEX-A.1", "RNA:blood"), ("GTEX-B.1", "RNA:blood"), ("ENCFF1", "DNASE:blood")]
    return TrackTable(
        pd.DataFrame(
            {
                "identifier": [r[0] for r in rows],
                "file": "x",
                "clip": 768,
                "clip_soft": 2.0,
                "scale": 0.5,
                "sum_stat": "sum_sqrt",
                "strand_pair": range(3),
                "description": [r[1] for r in rows],
                "source_index": range(3),
            }
        ),
        source="test",
    )


def test_prioritisation_reader_and_score_against_a_direct_computation(vcf_pairs, tmp_path):
    pairs = find_vcf_pairs(vcf_pairs, None)
    assert list(pairs) == ["Whole_Blood"]
    labelled, variants = read_labelled_variants(pairs)
    assert labelled["label"].tolist() == [1] * 8 + [0] * 4
    assert variants["chr1_14677_G_A_b38"].pos == 14677
    genome = Genome(fixture_path("genome/hg38_1m.fa.gz"))
    tracks = genome_tracks()
    model_dir = save_tiny_model(tmp_path / "model", tracks)
    from flashrna.zoo import load_track_model

    model = load_track_model([model_dir], head="human", device="cpu")
    norms, skipped = l2fc_norms(
        model, genome, variants, np.array([0, 1]), length=1024, crop_bins=4, batch_size=3
    )
    assert skipped["chr1_63672_G_TA_b38"][0] == "not_snv"
    assert skipped["chr1_64800_C_T_b38"][0] == "ref_mismatch"  # the genome has A there
    assert len(norms) == 10
    # Directly: the variant at index 512, both windows through predict, counts, norm.
    start = 54490 - 1 - 512
    ref = genome.fetch("chr1", start, start + 1024)
    assert ref[512] == encode_sequence("G")[0]
    alt = ref.copy()
    alt[512] = encode_sequence("A")[0]
    pred = predict(model.module, np.stack([ref, alt]), crop_bins=4).numpy()[..., :2]
    counts = tracks.take([0, 1]).unsquash(pred)
    change = np.log2(counts[1] + 1) - np.log2(counts[0] + 1)
    assert np.allclose(norms["chr1_54490_G_A_b38"], np.sqrt((change**2).sum(0)), rtol=1e-4)
    (vcf_pairs / "Liver_pos.vcf").write_text("")
    with pytest.raises(FlashRNAError, match=r"Liver_neg\.vcf: not found"):
        find_vcf_pairs(vcf_pairs, None)


def test_eqtl_prioritisation_function_equals_the_cli_and_its_auroc_the_scores(vcf_pairs, tmp_path):
    genome = fixture_path("genome/hg38_1m.fa.gz")
    model_dir = save_tiny_model(tmp_path / "model", genome_tracks())
    common = ["--fasta", str(genome), "--model", str(model_dir), "--length", "1024"]
    common += ["--crop-bins", "4", "--batch-size", "3", "--min-variants", "2", "--bootstrap", "50"]
    argv = ["eqtl-prioritisation", "--vcfs", str(vcf_pairs / "Whole_Blood_pos.vcf"), *common]
    assert main([*argv, "--out", str(tmp_path / "cli"), "--device", "cpu"]) == 0
    summary = eqtl_prioritisation(
        vcf_pairs,
        [model_dir],
        genome,
        tmp_path / "lib",
        length=1024,
        crop_bins=4,
        batch_size=3,
        min_variants=2,
        bootstrap=50,
        device="cpu",
    )
    for name in ("tissues.csv", "variants.csv", "skipped.tsv"):
        assert (tmp_path / "lib" / name).read_text() == (tmp_path / "cli" / name).read_text()
    assert summary == json.loads((tmp_path / "cli" / "summary.json").read_text())
    # Whole_Blood -> RNA:blood (the tissue map) -> its GTEX tracks 0 and 1, not the DNase one.
    _, variants = read_labelled_variants(find_vcf_pairs(vcf_pairs, None))
    model = load_track_model([model_dir], head="human", device="cpu")
    norms, _ = l2fc_norms(
        model, Genome(genome), variants, np.array([0, 1]), length=1024, crop_bins=4
    )
    scored = pd.read_csv(tmp_path / "lib" / "variants.csv").dropna(subset=["score"])
    expected = [norms[v].mean() for v in scored["variant"]]
    assert np.allclose(scored["score"], expected, rtol=1e-4)
    tissue = pd.read_csv(tmp_path / "lib" / "tissues.csv").iloc[0]
    assert (tissue["tracks"], tissue["scored_positives"], tissue["scored_negatives"]) == (2, 8, 2)
    assert tissue["auroc"] == pytest.approx(auroc(scored["label"], expected), abs=1e-6)
    assert summary["auroc_mean"] == pytest.approx(tissue["auroc"])
    assert summary["tissue_tracks"].endswith("gtex_tissues.tsv")


def test_eqtl_prioritisation_reads_the_models_own_gtex_tissue_column(vcf_pairs, tmp_path):
    # Under the tissue map Whole_Blood would take both RNA:blood GTEX tracks; the table's own
    # column gives it track 0 only (track 1 is another tissue of the same description).
    tissues = np.array(["Whole_Blood", "Cells_EBV-transformed_lymphocytes", ""])
    tracks = TrackTable(genome_tracks().frame.assign(gtex_tissue=tissues), "test")
    rows, described, rule = gtex_tissue_tracks(
        ["Whole_Blood", "Liver"], tracks.identifier, tracks.frame["description"].to_numpy(),
        tracks.gtex_tissue, tissue_map=tmp_path / "absent.tsv",
    )  # fmt: skip
    assert rows["Whole_Blood"].tolist() == [0] and rows["Liver"].tolist() == []
    assert described["Whole_Blood"] == "RNA:blood" and rule == "the model's gtex_tissue column"
    rows, _, _ = gtex_tissue_tracks(
        ["Whole_Blood"], tracks.identifier, tracks.frame["description"].to_numpy(), None
    )
    assert rows["Whole_Blood"].tolist() == [0, 1]
    genome = fixture_path("genome/hg38_1m.fa.gz")
    model_dir = save_tiny_model(tmp_path / "model", tracks)
    summary = eqtl_prioritisation(
        {"Whole_Blood": vcf_pairs / "Whole_Blood_pos.vcf"},
        [model_dir],
        genome,
        tmp_path / "out",
        tissue_map=tmp_path / "absent.tsv",  # not needed: never read
        length=1024,
        crop_bins=4,
        min_variants=2,
        bootstrap=20,
        device="cpu",
    )
    assert summary["tissue_tracks"] == "the model's gtex_tissue column"
    assert pd.read_csv(tmp_path / "out" / "tissues.csv")["tracks"].tolist() == [1]
    _, variants = read_labelled_variants(find_vcf_pairs(vcf_pairs, None))
    model = load_track_model([model_dir], head="human", device="cpu")
    norms, _ = l2fc_norms(model, Genome(genome), variants, np.array([0]), length=1024, crop_bins=4)
    scored = pd.read_csv(tmp_path / "out" / "variants.csv").dropna(subset=["score"])
    assert np.allclose(scored["score"], [norms[v][0] for v in scored["variant"]], rtol=1e-4)


# --------------------------------------------------------------------------------------------
# Variant-FlowFISH and liftover
# --------------------------------------------------------------------------------------------

# Variant ids as the Variant-FlowFISH pipeline writes them (EngreitzLab/variant-flowfish README,
# guide counts of the PPIF enhancer screen); the effects and the headers are made up, as the
# supplementary table's headers could not be read here (hence --columns).
FLOWFISH_ROWS = """\
Guide\tMeasured effect (%)\tCell line
pegRNAsgOptiGibson-peg393-PPIF_enhancer_original-chr10:81046426:GTTAG>AGCCA\t-12.5\tJurkat
pegRNAsgOptiGibson-peg359-PPIF_enhancer_original-chr10:81046401:TGGGA>AACCC\t3.0\tJurkat
pegRNAsgOptiGibson-peg406-PPIF_enhancer_original-chr10:81046441:CACCA>TCGGT\t-40\tTHP1
PPIF_promoter_original-chr10:81107300:AC>A\t-5\tJurkat
"""


def test_flowfish_reader_parses_pipeline_variant_ids(tmp_path):
    path = tmp_path / "flowfish.tsv"
    path.write_text(FLOWFISH_ROWS)
    columns = parse_columns(["variant=Guide", "effect=Measured effect (%)", "cell_type=Cell line"])
    edits = read_flowfish(path, columns, "percent")
    assert edits[["chrom", "pos", "ref", "alt"]].iloc[0].tolist() == [
        "chr10",
        81046426,
        "GTTAG",
        "AGCCA",
    ]
    assert edits["element"].tolist() == ["enhancer"] * 3 + ["promoter"]
    assert edits["cell_type"].tolist() == ["Jurkat", "Jurkat", "THP1", "Jurkat"]
    assert edits["measured"][2] == pytest.approx(np.log2(0.6))
    with pytest.raises(FlashRNAError, match="--columns effect=HEADER"):
        read_flowfish(path, parse_columns(["variant=Guide"]), "percent")
    with pytest.raises(FlashRNAError, match="manual download"):
        read_flowfish(tmp_path / "absent.tsv", columns, "percent")
    assert np.allclose(to_log2([100, -50], "percent"), [1, -1])
    assert np.allclose(to_log2([1.0], "fraction"), [1])


def test_flowfish_benchmark_function_equals_the_cli_and_its_effects_the_values(tmp_path):
    genome_path = fixture_path("genome/hg38_1m.fa.gz")
    genome = Genome(genome_path)
    # Substitutions around GENEA's TSS (0-based 13999) with the genome's REF, an indel and one
    # outside the 2,048-bp input; hg38 coordinates, so no chain.
    rows = ["Guide\tEffect\tCell"]
    offsets = [-700, -300, -40, 0, 25, 350, 800]
    for k, offset in enumerate(offsets):
        ref = decode_sequence(genome.fetch("chr1", 13999 + offset, 13999 + offset + 1))
        alt = "ACGT"[("ACGT".index(ref) + 1 + k % 3) % 4]
        cell = "Jurkat" if k % 2 else "THP1"
        rows.append(f"GENEA_enhancer-chr1:{13999 + offset + 1}:{ref}>{alt}\t{-10 * k + 3}\t{cell}")
    rows.append("GENEA_promoter-chr1:14010:AC>A\t-5\tJurkat")
    far = decode_sequence(genome.fetch("chr1", 19999, 20000))
    rows.append(f"GENEA_enhancer-chr1:20000:{far}>{'C' if far == 'A' else 'A'}\t-5\tJurkat")
    table = tmp_path / "flowfish.tsv"
    table.write_text("\n".join(rows) + "\n")
    (tmp_path / "genes.gtf").write_text(GENES_GTF)
    model_dir = save_tiny_model(tmp_path / "model", rna_tracks())
    argv = ["flowfish-benchmark", "--table", str(table), "--build", "hg38", "--gene", "GENEA"]
    argv += ["--columns", "variant=Guide", "effect=Effect", "cell_type=Cell"]
    argv += ["--fasta", str(genome_path), "--gtf", str(tmp_path / "genes.gtf")]
    argv += ["--model", str(model_dir), "--device", "cpu", "--length", "2048", "--crop-bins", "2"]
    argv += ["--assays", "RNA", "--batch-size", "3", "--bootstrap", "30"]
    assert main([*argv, "--out", str(tmp_path / "cli")]) == 0
    summary = flowfish_benchmark(
        table,
        [model_dir],
        genome_path,
        tmp_path / "genes.gtf",
        tmp_path / "lib",
        columns={"variant": "Guide", "effect": "Effect", "cell_type": "Cell"},
        build="hg38",
        gene="GENEA",
        crop_bins=2,
        length=2048,
        batch_size=3,
        bootstrap=30,
        device="cpu",
    )
    for name in ("edits.csv", "metrics.csv"):
        assert (tmp_path / "lib" / name).read_text() == (tmp_path / "cli" / name).read_text()
    assert summary == json.loads((tmp_path / "cli" / "summary.json").read_text())
    edits = pd.read_csv(tmp_path / "lib" / "edits.csv")
    assert edits["outcome"].tolist() == ["ok"] * 7 + ["indel", "outside_window"]
    assert np.allclose(edits["measured"][:7], np.log2(1 + (-10 * np.arange(7) + 3) / 100))
    # Directly: the log value of each edited input minus the reference's, in log2 units.
    model = load_track_model([model_dir], head="human", device="cpu")
    readout = Readout(model.tracks, [0, 1, 2], crop_bins=2)
    target = gene_target(find_gene(Annotation.read_gtf(tmp_path / "genes.gtf"), "GENEA"))
    reference = genome.fetch("chr1", 13999 - 1024, 13999 + 1024)
    inputs = [reference]
    for row in edits[:7].itertuples():
        edited = reference.copy()
        edited[row.hg38_start - (13999 - 1024)] = encode_sequence(row.alt)[0]
        inputs.append(edited)
    values = predicted_values(model.module, np.stack(inputs), [target] * 8, readout, device="cpu")
    expected = (values[1:] - values[0]) / np.log(2)
    assert np.allclose(edits["predicted"][:7], expected, rtol=1e-4, atol=1e-7)
    jurkat = edits[:7][edits["cell_type"][:7] == "Jurkat"]
    assert summary["pearson"]["Jurkat:all"]["pearson"] == pytest.approx(
        pearson(jurkat["predicted"], jurkat["measured"]), abs=1e-5
    )


def test_liftover_through_a_chain_with_gaps_and_a_reverse_strand(tmp_path):
    # Chain 1 (forward): source chrA 100-130 -> target chrB 1000-1030, a 5-bp source gap and a
    # 10-bp target gap, then source 135-155 -> target 1040-1060.
    # Chain 2 (reverse): source chrC 0-50 -> target chrD (size 500) reverse strand, q 100-150.
    chain = (
        "chain 100 chrA 1000 + 100 155 chrB 5000 + 1000 1060 1\n30 5 10\n20\n\n"
        "chain 50 chrC 200 + 0 50 chrD 500 - 100 150 2\n50\n\n"
    )
    path = tmp_path / "test.over.chain.gz"
    path.write_bytes(gzip.compress(chain.encode()))
    lift = Liftover.read(path)
    assert lift.lift("chrA", 100, 101) == ("chrB", 1000, "+")
    assert lift.lift("chrA", 129, 130) == ("chrB", 1029, "+")
    assert lift.lift("chrA", 132, 133) is None  # in the source gap
    assert lift.lift("chrA", 140, 142) == ("chrB", 1045, "+")
    assert lift.lift("chrA", 128, 132) is None  # spans the gap
    # Reverse: source 10 is reverse-strand target 110, forward 500 - 110 - 1 = 389.
    assert lift.lift("chrC", 10, 11) == ("chrD", 389, "-")
    assert lift.lift("chrZ", 10, 11) is None
    assert Liftover.read(path, {"chrA"}).lift("chrC", 10, 11) is None


def test_place_edits_lifts_checks_ref_and_drops_indels(tmp_path):
    fasta = tmp_path / "g.fa"
    fasta.write_text(">chr10\n" + "ACGT" * 50 + "\n")
    chain = tmp_path / "c.chain"
    chain.write_text("chain 1 chr10 1000 + 500 700 chr10 200 + 0 200 1\n200\n")
    edits = pd.DataFrame(
        {
            "chrom": "chr10",
            "pos": [501, 502, 503, 505, 900],  # hg19, 1-based: hg38 0-based 0, 1, 2, 4, -
            "ref": ["A", "CG", "T", "A", "A"],
            "alt": ["G", "TT", "TA", "C", "C"],
            "measured": [0.1, 0.2, 0.3, np.nan, 0.5],
        }
    )
    placed = place_edits(edits, Genome(fasta), Liftover.read(chain))
    assert placed["outcome"].tolist() == ["ok", "ok", "indel", "no_measurement", "unlifted"]
    assert placed["hg38_start"].tolist()[:2] == [0, 1]
    wrong = edits.iloc[:1].assign(ref="C", alt="G")
    assert place_edits(wrong, Genome(fasta), Liftover.read(chain))["outcome"][0] == "ref_mismatch"


# --------------------------------------------------------------------------------------------
# The Flashzoi figure and table
# --------------------------------------------------------------------------------------------


def write_results(root, name: str, shift: float) -> None:
    """Result files of one model, as the benchmark steps write them."""
    tissues = ["Liver", "Whole_Blood", "Brain_Cortex"]
    for benchmark, column in (("eqtl", "spearman"), ("prioritisation", "auroc")):
        directory = root / "eval" / benchmark / name
        directory.mkdir(parents=True)
        values = [0.3 + shift + 0.1 * k for k in range(3)]
        pd.DataFrame({"tissue": tissues, column: values, "included": [True, True, False]}).to_csv(
            directory / "tissues.csv", index=False
        )
        (directory / "summary.json").write_text("{}")
    directory = root / "eval" / "flowfish" / name
    directory.mkdir(parents=True)
    pd.DataFrame(
        {
            "cell_type": ["Jurkat"] * 3 + ["THP1"] * 3,
            "element": ["all", "enhancer", "promoter"] * 2,
            "edits": 20,
            "pearson": [0.5 + shift, 0.4 + shift, 0.6 + shift, 0.3, 0.2, 0.4],
            "pearson_low": 0.1,
            "pearson_high": 0.9,
        }
    ).to_csv(directory / "metrics.csv", index=False)
    directory = root / "eval" / "crispri" / name
    directory.mkdir(parents=True)
    pd.DataFrame(
        {
            "subset": ["all", "0-15000", "15000-45000"],
            "pairs": 50,
            "positives": 5,
            "positive_rate": 0.1,
            "auprc": [0.3 + shift, 0.5, np.nan],
            "auprc_low": 0.2,
            "auprc_high": 0.6,
        }
    ).to_csv(directory / "metrics.csv", index=False)


def test_flashzoi_figure_and_table_from_result_files(tmp_path):
    results = tmp_path / "results"
    for name, shift in (("member0", 0.0), ("member1", 0.1), ("ensemble4", 0.2), ("borzoi0", 0.05)):
        write_results(results, name, shift)
    out = results / "figures"
    argv = ["report", "flashzoi", "--results", str(results), "--out", str(out), "--data", "demo"]
    assert main(argv) == 0
    for ext in ("png", "pdf", "csv"):
        assert (out / f"flashzoi_benchmarks.{ext}").stat().st_size > 0
    table = pd.read_csv(results / "tables" / "flashzoi_benchmarks.csv")
    row = table.set_index(["model", "metric"])
    # Replicates: mean over member0 and member1 of the mean over included tissues (0.35, 0.45).
    assert row.loc[("FlashRNA", "eQTL Spearman ρ"), "mean"] == pytest.approx(0.40)
    assert row.loc[("FlashRNA", "eQTL Spearman ρ"), "n"] == 2
    # FlowFISH enhancer: the mean over the two cell types (0.4 + shift, 0.2).
    assert row.loc[("FlashRNA ensemble 4", "FlowFISH r enhancer"), "mean"] == pytest.approx(0.4)
    assert row.loc[("Borzoi", "CRISPRi AUPRC"), "mean"] == pytest.approx(0.35)
    assert row.loc[("Flashzoi", "CRISPRi AUPRC"), "status"] == "not run"
    assert row.loc[("FlashRNA distilled", "eQTL AUROC"), "status"] == "not run"
    tissues = pd.read_csv(results / "tables" / "flashzoi_tissues.csv")
    assert set(tissues["tissue"]) == {"Liver", "Whole_Blood", "Brain_Cortex"}
    assert tissues.loc[tissues["tissue"] == "Liver", "member1"].tolist() == pytest.approx(
        [0.4, 0.4]
    )
    points = pd.read_csv(out / "flashzoi_benchmarks.csv")
    crispri = points[(points["panel"] == "d") & (points["series"] == "FlashRNA")]
    assert crispri["group"].tolist() == ["all", "0-15000"]  # the NaN bin is not drawn


def test_flashzoi_figure_needs_replicates(tmp_path):
    argv = ["report", "flashzoi", "--results", str(tmp_path), "--out", str(tmp_path / "f")]
    assert main(argv) == 1
