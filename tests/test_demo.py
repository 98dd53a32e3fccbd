"""The embedded demo data set: real formats read by the project's own readers, the committed
manifest, determinism, and the planted grammar."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from flashrna.demo import DEMO, GTEX_TISSUES, demo_manifest, generate
from flashrna.download import read_manifest, tfrecord_names
from flashrna.genome import Genome
from flashrna.tfrecord import read_examples
from flashrna.tracks import TrackTable
from flashrna.utils import FlashRNAError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("demo") / "mirror", seed=0)


def bucket(demo: Path, genome: str) -> Path:
    return demo / "borzoi-paper" / "data" / genome


def test_committed_manifest_is_the_generated_file_list(demo):
    committed = read_manifest(ROOT / "config" / "demo-manifest.tsv")
    assert committed == demo_manifest()
    files = {str(p.relative_to(demo)) for p in demo.rglob("*") if p.is_file()}
    assert {r.source for r in committed} <= files


@pytest.mark.parametrize("genome", ["hg38", "mm10"])
def test_borzoi_bucket_layout_and_records(demo, genome, tmp_path):
    root = bucket(demo, genome)
    stats = json.loads((root / "statistics.json").read_text())
    bed = pd.read_csv(root / "sequences.bed", sep="\t", names=["chrom", "start", "end", "label"])
    table = TrackTable.read(root / "targets.txt")
    assert stats["num_targets"] == len(table)
    assert (
        stats["seq_length"] == DEMO.seq_length == stats["target_length"] * 32 + 2 * stats["crop_bp"]
    )
    sizes = bed.groupby("label", sort=False).size().to_dict()
    assert {f"{k}_seqs": v for k, v in sizes.items()} == {
        k: v for k, v in stats.items() if k.endswith("_seqs")
    }
    assert (bed["end"] - bed["start"] == stats["target_length"] * 32).all()
    names = tfrecord_names(sizes, DEMO.records_per_file)
    assert sorted(p.name for p in (root / "tfrecords").iterdir()) == sorted(names)
    # The quirk: a fold of a multiple of 16 windows ends with an empty (8-byte ZLIB) file.
    full = [label for label, n in sizes.items() if n % 16 == 0]
    assert full, "the demo should exercise the empty-file quirk"
    for label in full:
        last = root / "tfrecords" / f"{label}-{sizes[label] // 16}.tfr"
        assert last.stat().st_size == 8 and list(read_examples(last)) == []
    # Records hold the input window (target window +- crop) of the genome, in bed order.
    fasta = tmp_path / f"{genome}.fa"
    gz = demo / f"seqnn-share/helper/dependencies/{genome}.ml.fa.gz"
    fasta.write_bytes(gzip.decompress(gz.read_bytes()))
    genome_ = Genome(fasta)
    first = bed[bed["label"] == "fold3"].iloc[:2]
    records = list(read_examples(root / "tfrecords" / "fold3-0.tfr"))
    assert len(records) == min(16, sizes["fold3"])
    for row, record in zip(first.itertuples(), records, strict=False):
        sequence = np.frombuffer(record["sequence"], np.uint8)
        expected = genome_.fetch(
            row.chrom, row.start - stats["crop_bp"], row.end + stats["crop_bp"]
        )
        assert np.array_equal(sequence, expected)
        target = np.frombuffer(record["target"], np.float16)
        assert target.size == stats["target_length"] * stats["num_targets"]
        assert np.isfinite(target).all() and (target >= 0).all()


def test_track_table_is_borzoi_like(demo):
    table = TrackTable.read(bucket(demo, "hg38") / "targets.txt")
    assays = list(dict.fromkeys(table.assay))
    assert assays == ["CAGE", "DNASE", "ATAC", "CHIP", "RNA"]  # the real order
    gtex = np.char.find(table.identifier.astype(str), "GTEX") >= 0
    assert gtex.sum() >= 8 and (table.scale[gtex] == np.float32(0.01)).all()
    assert (table.strand_pair[gtex] == np.flatnonzero(gtex)).all()
    stranded = table.strand_pair != np.arange(len(table))
    assert stranded.sum() >= 4 and set(table.assay[stranded]) == {"CAGE", "RNA"}
    rna = table.select(["RNA"])
    assert set(rna.sum_stat) == {"sum_sqrt"}


def test_gtf_eqtls_saluki_ribonn(demo):
    gtf = pd.read_csv(
        demo / "seqnn-share/helper/gencode41_basic_nort.gtf.gz", sep="\t", comment="#", header=None
    )
    assert set(gtf[2]) == {"gene", "transcript", "exon"} and set(gtf[6]) == {"+", "-"}
    exons = gtf[gtf[2] == "exon"]
    assert exons[8].str.contains('gene_id "ENSG').all()
    assert exons[8].str.contains("transcript_id").all() and exons[8].str.contains("gene_name").all()
    assert exons[8].str.extract(r'transcript_id "([^"]+)"')[0].value_counts().max() >= 2

    eqtls = pd.read_csv(demo / "gtex/GTEx_49tissues_release1.tsv.bgz", sep="\t", compression="gzip")
    assert eqtls["variant_hg38"].str.fullmatch(r"chr\d+_\d+_[ACGT]_[ACGT]_b38").all()
    strong = eqtls[(eqtls["method"] == "SUSIE") & (eqtls["pip"] > 0.9)]
    assert set(strong["tissue"]) == set(GTEX_TISSUES)
    assert strong.groupby("tissue").size().min() >= 40  # above the benchmark's 32

    with zipfile.ZipFile(demo / "zenodo/6326409/datasets.zip") as archive:
        base = "datasets/deeplearning/train_gru/f0_c0/data0"
        stats = json.loads(archive.read(f"{base}/statistics.json"))
        archive.extract(f"{base}/tfrecords/test-0.tfr", demo.parent / "saluki")
    records = list(read_examples(demo.parent / "saluki" / base / "tfrecords/test-0.tfr"))
    assert len(records) == stats["test_seqs"] and stats["length_t"] == DEMO.saluki_length
    for record in records[:5]:
        n = int(record["lengths"][0])
        assert n <= stats["length_t"] and len(record["sequence"]) == n
        assert len(record["coding"]) == len(record["splice"]) == n
        assert np.frombuffer(record["sequence"], np.uint8).max() <= 3
        assert np.frombuffer(record["targets"], np.float16).shape == (1,)

    te = pd.read_csv(demo / "ribonn/te_human.tsv", sep="\t")
    assert list(te.columns[:4]) == ["tx_id", "utr5_sequence", "cds_sequence", "utr3_sequence"]
    assert te.filter(like="TE_").shape[1] >= 2 and set(te["fold"]) == set(range(10))
    assert te["cds_sequence"].str.startswith("ATG").all()


def test_planted_grammar_shows_in_the_data(demo):
    root = bucket(demo, "hg38")
    table = TrackTable.read(root / "targets.txt")
    bed = pd.read_csv(root / "sequences.bed", sep="\t", names=["chrom", "start", "end", "label"])
    genes = pd.read_csv(demo / "truth/genes_hg38.tsv", sep="\t")
    liver = [k for k, i in enumerate(table.identifier) if "GTEX" in i and "liver" in i]
    windows = {}
    for label in bed["label"].unique():
        rows = bed[bed["label"] == label]
        records = [
            r for i in range(len(rows) // 16 + 1)
            for r in read_examples(root / "tfrecords" / f"{label}-{i}.tfr")
        ]  # fmt: skip
        for row, record in zip(rows.itertuples(), records, strict=True):
            windows[(row.chrom, row.start)] = np.frombuffer(record["target"], np.float16)
    signal, with_act1 = [], []
    for gene in genes.itertuples():
        key = next(
            (k for k in windows if k[0] == gene.chrom and k[1] <= gene.tss < k[1] + 8192), None
        )
        if key is None:
            continue
        target = table.unsquash(windows[key].reshape(256, len(table)).astype(np.float32))
        b = (gene.tss - key[1]) // 32
        signal.append(target[max(b - 16, 0) : b + 16, liver].sum())
        with_act1.append(gene.n_ACT1 > 0)
    signal, with_act1 = np.array(signal), np.array(with_act1)
    # Genes with a promoter activator motif have much more RNA coverage.
    assert np.median(signal[with_act1]) > 2 * np.median(signal[~with_act1])

    eqtls = pd.read_csv(demo / "truth/eqtls.tsv", sep="\t")
    strong = eqtls[(eqtls["method"] == "SUSIE") & (eqtls["pip"] > 0.9)]
    assert spearmanr(strong["true_effect"], strong["beta_posterior"])[0] > 0.8
    transcripts = pd.read_csv(demo / "truth/transcripts.tsv", sep="\t")
    assert spearmanr(transcripts["n_are"], transcripts["halflife"])[0] < -0.6
    assert transcripts.groupby("kozak")["TE_HEK293"].mean().diff().iloc[-1] > 0.5


def test_deterministic_and_refuses_foreign_directories(demo, tmp_path):
    again = generate(tmp_path / "again", seed=0)
    for relative in ("borzoi-paper/data/mm10/tfrecords/fold0-0.tfr", "ribonn/te_human.tsv"):
        assert (demo / relative).read_bytes() == (again / relative).read_bytes()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(FlashRNAError, match="not a flashrna demo directory"):
        generate(foreign)
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_flashzoi_benchmark_sources_read_back_and_hold_the_planted_truth(demo, tmp_path):
    """The sources of eqtl-prioritisation, crispri-benchmark and flowfish-benchmark, read by
    their own readers with config/demo.yaml's settings, say what the planted grammar says."""
    import yaml

    from flashrna.evaluate.crispri import read_crispr_pairs
    from flashrna.evaluate.flowfish import Liftover, parse_columns, place_edits, read_flowfish
    from flashrna.evaluate.prioritisation import find_vcf_pairs, read_labelled_variants

    fasta = tmp_path / "hg38.fa"
    fasta.write_bytes(
        gzip.decompress((demo / "seqnn-share/helper/dependencies/hg38.ml.fa.gz").read_bytes())
    )
    genome = Genome(fasta)
    # eQTL prioritisation: per tissue its fine-mapped eQTLs and as many negatives, each at its
    # positive's distance from a TSS (within the jitter), with the genome's REF.
    labelled, variants = read_labelled_variants(
        find_vcf_pairs(demo / "borzoi-paper/qtl/eqtl/susie_pip90", None)
    )
    eqtls = pd.read_csv(demo / "truth/eqtls.tsv", sep="\t")
    strong = eqtls[(eqtls["method"] == "SUSIE") & (eqtls["pip"] > 0.9)]
    for tissue, group in labelled.groupby("tissue"):
        positives = set(group.loc[group["label"] == 1, "variant"])
        assert positives == set(strong.loc[strong["tissue"] == tissue, "variant_hg38"])
        assert (group["label"] == 0).sum() == len(positives)
    for variant in variants.values():
        genome.variant_windows(variant.chrom, variant.pos, variant.ref, variant.alt, 64)
    truth = pd.read_csv(demo / "truth/prioritisation.tsv", sep="\t")
    negatives = truth[truth["label"] == 0]
    matched = truth[truth["label"] == 1].drop_duplicates("variant").set_index("variant")
    own = negatives["distance"].abs().to_numpy()
    theirs = matched.loc[negatives["positive"], "distance"].abs().to_numpy()
    assert (np.abs(own - theirs) <= DEMO.negative_jitter).all()
    # CRISPRi: the valid pairs read back, regulated exactly where silencing removes a planted
    # enhancer of the gene (the truth's count of its sites inside the element).
    pairs, dropped = read_crispr_pairs(
        demo
        / "crispr_comparison/resources/crispr_data/EPCrisprBenchmark_ensemble_data_GRCh38.tsv.gz"
    )
    crispri = pd.read_csv(demo / "truth/crispri.tsv", sep="\t")
    valid = crispri[crispri["ValidConnection"] == "TRUE"].reset_index(drop=True)
    assert len(pairs) == len(valid) and dropped["invalid_connection"] == len(crispri) - len(valid)
    assert (pairs["regulated"] == (valid["weight"] > 0)).all()
    assert 0.05 < pairs["regulated"].mean() < 0.3
    # Variant-FlowFISH: with the demo config's columns and the demo's chain, every substitution
    # lifts onto the genome with its REF; indels are left out; the measured effects are the
    # planted ones (percent change with noise of 2 points).
    config = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())["flashzoi"]
    table = read_flowfish(
        demo / "flowfish/variant_flowfish_ppif.tsv",
        parse_columns(config["flowfish"]["columns"]),
        config["flowfish"]["effect_units"],
    )
    placed = place_edits(table, genome, Liftover.read(demo / "ucsc/hg19ToHg38.over.chain.gz"))
    substitution = placed["ref"].str.len() == placed["alt"].str.len()
    assert (placed["outcome"] == np.where(substitution, "ok", "indel")).all()
    flowfish = pd.read_csv(demo / "truth/flowfish.tsv", sep="\t")
    error = (placed["measured"] - flowfish["true_log2_effect"])[substitution].abs()
    assert error.max() < 0.4 and (flowfish["true_log2_effect"] < -1).sum() >= 6
    assert {"enhancer", "promoter"} == set(placed["element"])
    # The demo config names the edited gene and attributes it.
    assert config["flowfish"]["gene"] == flowfish["gene"][0] == config["attribute"]["genes"][0]
