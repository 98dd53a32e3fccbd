"""plot-locus on a small demo data set (flashrna.demo): a demo gene and one of its eQTL variants,
two random tiny models side by side, observed coverage from a converted demo shard. The plotted
values are checked against the models' own predictions of the same windows (the ALT window built
here by hand), the observed ones against the shard's targets, and the figure's panels by their
titles, labels and curves."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from helpers import save_tiny_model

from flashrna.annotation import Annotation
from flashrna.cli import main
from flashrna.data.convert import convert_tfrecord
from flashrna.demo import TISSUE_MOTIFS, DemoSpec, SpeciesSpec, generate
from flashrna.genome import Genome, encode_sequence
from flashrna.model import load_model, predict
from flashrna.plot_locus import (
    draw_locus,
    locate,
    observed_from_shards,
    parse_region,
    parse_variant,
    predict_locus,
)
from flashrna.tracks import TrackTable
from flashrna.utils import FlashRNAError
from flashrna.zoo import load_track_model

LENGTH, CROP = 16_384, 128  # the demo's input windows and crop
# The demo, human only and small: one contig, 4 windows a fold, one track per assay.
SMALL = DemoSpec(
    species={
        "human": SpeciesSpec(
            genome="hg38",
            contigs=1,
            fold_sizes=(4,) * 8,
            tissues=tuple(TISSUE_MOTIFS),
            gtex_samples=1,
            rna_pairs=1,
            cage_pairs=1,
            dnase=1,
            atac=1,
            chip=False,
        )
    },
    act_eqtls=4,
    tissue_eqtls=2,
    null_eqtls=4,
    transcripts=20,
    saluki_folds=2,
    saluki_per_file=16,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    """The small demo's FASTA (gunzipped: gzip is not indexable), GTF, two tiny models with its
    track table, a variant of its eQTL table with its gene, and the shard holding that gene."""
    root = tmp_path_factory.mktemp("locus")
    mirror = generate(root / "mirror", spec=SMALL)
    fasta = root / "hg38.fa"
    source = mirror / "seqnn-share" / "helper" / "dependencies" / "hg38.ml.fa.gz"
    fasta.write_bytes(gzip.decompress(source.read_bytes()))
    bucket = mirror / "borzoi-paper" / "data" / "hg38"
    table = TrackTable.read(bucket / "targets.txt")
    models = [save_tiny_model(root / f"m{seed}" / "model", table, seed) for seed in (0, 1)]
    eqtl = pd.read_csv(mirror / "truth" / "eqtls.tsv", sep="\t")
    eqtl = eqtl[eqtl["pip"] > 0.9].iloc[0]
    gtf = mirror / "seqnn-share" / "helper" / "gencode41_basic_nort.gtf.gz"
    gene = Annotation.read_gtf(gtf).genes[eqtl["gene"]]
    windows = pd.read_csv(bucket / "sequences.bed", sep="\t", names=["chrom", "start", "end", "l"])
    holding = windows[
        (windows["chrom"] == gene.chrom)
        & (windows["start"] <= gene.start)
        & (windows["end"] >= gene.end)
    ]
    label = holding["l"].iloc[0]  # 4 windows a fold: all in the fold's first file
    shard = convert_tfrecord(
        bucket / "tfrecords" / f"{label}-0.tfr",
        bucket / "sequences.bed",
        bucket / "targets.txt",
        root / "shards" / f"{label}-0",
        assays=None,
        statistics=bucket / "statistics.json",
    )
    return {
        "root": root,
        "fasta": fasta,
        "gtf": gtf,
        "table": table,
        "models": models,
        "variant": eqtl["variant_hg38"],
        "gene": gene,
        "shard": shard,
        "tracks": [t for t in table.identifier if t.startswith(("ENCFFRNA", "ENCFFDNS"))],
    }


def inverse_transform(squashed: np.ndarray, table: TrackTable, rows: list[int]) -> np.ndarray:
    """The inverse of the Borzoi squash for the table's ``rows`` (the last axis), written out."""
    z = squashed / table.scale[rows]
    soft = table.clip_soft[rows]
    z = np.where(z > soft, soft + (z - soft) ** 2, z)
    return np.where(table.sum_stat[rows] == "sum_sqrt", np.clip(z, 0, None) ** (4 / 3), z)


def test_plot_locus_draws_a_demo_gene_and_variant(demo):
    out = demo["root"] / "plots" / "locus.png"
    argv = ["plot-locus", "--fasta", str(demo["fasta"]), "--gtf", str(demo["gtf"])]
    argv += ["--gene", demo["gene"].name, "--variant", demo["variant"]]
    argv += ["--model", str(demo["models"][0]), "--model", str(demo["models"][1])]
    argv += ["--side-by-side", "--allow-length"]
    argv += ["--tracks", *demo["tracks"], "--length", str(LENGTH), "--crop-bins", str(CROP)]
    argv += ["--observed-shards", str(demo["shard"]), "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"


def test_locus_values_are_the_models_predictions_and_the_shards_targets(demo):
    gene, table = demo["gene"], demo["table"]
    locus = locate(
        gene=gene.name, variant=demo["variant"], annotation=Annotation.read_gtf(demo["gtf"])
    )
    variant = parse_variant(demo["variant"])
    view = (min(gene.start, variant.pos - 1) - 1000, max(gene.end, variant.pos) + 1000)
    assert (locus.chrom, locus.start, locus.end) == (gene.chrom, *view)  # gene and variant
    models = [load_track_model([m]) for m in demo["models"]]
    data = predict_locus(
        models,
        Genome(demo["fasta"]),
        locus,
        identifiers=demo["tracks"],
        length=LENGTH,
        crop_bins=CROP,
        device="cpu",
    )
    assert list(data.predictions) == ["m0", "m1"] and data.alleles == ["REF", "ALT"]
    # The REF window centred on the variant, and the ALT one with the base changed by hand.
    start = variant.pos - 1 - (LENGTH // 2 - 1)
    reference = Genome(demo["fasta"]).fetch(variant.chrom, start, start + LENGTH)
    alternative = reference.copy()
    alternative[LENGTH // 2 - 1] = encode_sequence(variant.alt)[0]
    assert reference[LENGTH // 2 - 1] == encode_sequence(variant.ref)[0]
    output_start = start + 32 * CROP
    first = (locus.start - output_start) // 32
    count = len(data.edges) - 1
    assert data.edges[0] == output_start + 32 * first <= locus.start < data.edges[1]
    assert data.edges[-2] < locus.end <= data.edges[-1]
    rows = [list(table.identifier).index(t) for t in demo["tracks"]]
    for label, path in zip(("m0", "m1"), demo["models"], strict=True):
        squashed = predict(load_model(path), np.stack([reference, alternative]), crop_bins=CROP)
        squashed = squashed[:, first : first + count][..., rows].numpy()
        expected = inverse_transform(squashed, table, rows)
        np.testing.assert_allclose(data.predictions[label], expected, rtol=1e-4, atol=1e-6)
    assert not np.allclose(data.predictions["m0"], data.predictions["m1"])  # two models

    observed = observed_from_shards([demo["shard"]], data.locus, data.identifiers, "counts")
    from flashrna.data import ShardSet

    shard = ShardSet(demo["shard"])
    index = next(i for i in range(len(shard)) if shard.start[i] <= gene.start < shard.end[i])
    # The shard's bins that overlap the view.
    bins = np.arange(len(shard.targets(index)))
    bins = bins[
        (shard.start[index] + 32 * bins + 32 > locus.start)
        & (shard.start[index] + 32 * bins < locus.end)
    ]
    targets = shard.targets(index, rows)[bins]
    for k, ident in enumerate(demo["tracks"]):
        edges, values = observed[ident]
        assert list(edges) == list(shard.start[index] + 32 * np.append(bins, bins[-1] + 1))
        expected = inverse_transform(targets.astype(np.float32), table, rows)[:, k]
        np.testing.assert_allclose(values, expected, rtol=1e-5)
        assert values.max() > 0  # the demo's coverage, not an empty window

    data.observed, data.genes = observed, [gene]
    figure = draw_locus(data)
    tracks = len(demo["tracks"])
    assert len(figure.axes) == (tracks + 1) * 2  # a row per track and the genes; two models
    grid = np.array(figure.axes).reshape(tracks + 1, 2)
    assert [ax.get_title() for ax in grid[0]] == ["m0", "m1"]
    for row, ident in enumerate(demo["tracks"]):
        assert grid[row, 0].get_ylabel().startswith(ident)
        for ax in grid[row]:
            assert len(ax.patches) == 3  # observed, REF, ALT
            assert [line.get_xdata()[0] for line in ax.get_lines()] == [variant.pos - 0.5]
    _, names = grid[0, 1].get_legend_handles_labels()
    assert names == ["observed", "REF", "ALT", "variant"]
    for ax in grid[-1]:
        assert f"{gene.name} ({gene.strand})" in [t.get_text() for t in ax.texts]
        assert len(ax.patches) == len(gene.exons)
    assert grid[-1, 0].get_xlim() == (locus.start, locus.end)
    assert gene.name in figure.get_suptitle() and "ALT" not in figure.get_suptitle()


def test_a_region_wider_than_the_output_is_cut_to_it(demo, caplog):
    gene = demo["gene"]
    models = [load_track_model([demo["models"][0]])]
    region = f"{gene.chrom}:{gene.start - 20_000 + 1:,}-{gene.end:,}"
    data = predict_locus(
        models,
        Genome(demo["fasta"]),
        locate(region=region),
        assays=["DNASE"],
        length=LENGTH,
        crop_bins=CROP,
        device="cpu",
    )
    assert data.locus.end - data.locus.start == LENGTH - 2 * 32 * CROP == len(data.edges) * 32 - 32
    assert "reaches beyond the model's output" in caplog.text
    assert data.alleles == ["predicted"] and data.predictions["m0"].shape[0] == 1


def test_locus_arguments_are_checked(demo):
    assert parse_region("chr1:1,000-2,000") == ("chr1", 999, 2000)
    assert parse_variant("chr2:15:g:t").ref == "G" and parse_variant("chr2_15_G_T_b38").pos == 15
    for bad in ("chr1:2000-1000", "chr1 1000 2000"):
        with pytest.raises(FlashRNAError, match="region"):
            parse_region(bad)
    with pytest.raises(FlashRNAError, match="CHROM:POS:REF:ALT"):
        parse_variant("rs12345")
    with pytest.raises(FlashRNAError, match="--gene needs --gtf"):
        locate(gene="DEMO1")
    models = [load_track_model([demo["models"][0]])]
    with pytest.raises(FlashRNAError, match="choose the tracks"):
        predict_locus(models, Genome(demo["fasta"]), locate(region="chr1:1-100"))
    argv = ["plot-locus", "--fasta", str(demo["fasta"]), "--region", "chr1:1-100"]
    argv += ["--model", str(demo["models"][0]), "--assays", "RNA", "--length", str(LENGTH)]
    argv += ["--allow-length"]
    argv += ["--crop-bins", str(CROP), "--out", str(demo["root"] / "x.png")]
    assert main([*argv, "--observed-bigwig", "nope.bw"]) == 1
    assert not (demo["root"] / "x.png").exists()


def test_observed_bigwig_coverage_is_pooled_into_the_predicted_bins(demo, tmp_path):
    import pyBigWig

    from flashrna.plot_locus import observed_from_bigwigs

    gene = demo["gene"]
    dnase, rna = sorted(demo["tracks"])[:2]  # a mean track and a sum_sqrt one
    model = load_track_model([demo["models"][0]])
    assert list(model.tracks.sum_stat[model.columns([dnase, rna])]) == ["mean", "sum_sqrt"]
    region = f"{gene.chrom}:{gene.start + 1}-{gene.end}"
    data = predict_locus(
        [model],
        Genome(demo["fasta"]),
        locate(region=region),
        identifiers=[dnase, rna],
        length=LENGTH,
        crop_bins=CROP,
        device="cpu",
    )
    # Per-bp coverage x mod 7 over the predicted bins (and nothing elsewhere).
    lo, hi = int(data.edges[0]), int(data.edges[-1])
    path = tmp_path / "observed.bw"
    bigwig = pyBigWig.open(str(path), "w")
    bigwig.addHeader([(gene.chrom, Genome(demo["fasta"]).lengths[gene.chrom])])
    positions = np.arange(lo, hi)
    bigwig.addEntries(gene.chrom, lo, values=(positions % 7).astype(float), span=1, step=1)
    bigwig.close()
    observed = observed_from_bigwigs({dnase: path, rna: path}, data, model)
    per_bin = (positions % 7).reshape(-1, 32)
    for track, expected in ((dnase, per_bin.mean(axis=1)), (rna, per_bin.sum(axis=1))):
        edges, values = observed[track]
        assert list(edges) == list(data.edges)
        np.testing.assert_allclose(values, expected, rtol=1e-6)
    with pytest.raises(FlashRNAError, match="not a plotted track"):
        observed_from_bigwigs({"DNASE": path}, data, model)
