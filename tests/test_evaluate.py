"""evaluate-tracks (streaming Pearson in three spaces, ensembles, resuming) and eqtl-benchmark
(tissue mapping, sign flips, Spearman), against scipy on independently assembled data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import fixture_path, save_tiny_model
from scipy.stats import pearsonr, spearmanr

from flashrna.cli import main
from flashrna.evaluate.eqtl import eqtl_benchmark, read_tissue_map, tissue_tracks
from flashrna.evaluate.tracks import SPACES, TrackPearson, evaluate_tracks
from flashrna.model import predict
from flashrna.tracks import TrackTable
from flashrna.utils import FlashRNAError
from flashrna.variants import eqtl_variants, read_eqtls, score_variants
from flashrna.zoo import load_track_model

LENGTH, TARGET_BINS = 1024, 16  # 32 output bins; targets cover 16 of them


def make_table(rows) -> TrackTable:
    """(identifier, clip_soft, scale, sum_stat, strand_pair) rows."""
    return TrackTable(
        pd.DataFrame(
            {
                "identifier": [r[0] for r in rows],
                "file": "x.bw",
                "clip": 1e4,
                "clip_soft": [r[1] for r in rows],
                "scale": [r[2] for r in rows],
                "sum_stat": [r[3] for r in rows],
                "strand_pair": [r[4] for r in rows],
                "description": [f"{r[0][:3]}:test" for r in rows],
                "source_index": range(len(rows)),
            }
        ),
        source="test tracks",
    )


# Soft clips low enough that the inverse transform's square branch is exercised.
MODEL_TRACKS = make_table(
    [
        ("RNAa+", 0.2, 0.5, "sum_sqrt", 1),
        ("RNAa-", 0.2, 0.5, "sum_sqrt", 0),
        ("DNAb", 0.5, 2.0, "sum", 2),
        ("ATAc", 0.3, 1.0, "mean_sqrt", 3),
    ]
)
DATA_ROWS = [2, 0, 1, 3]  # the data's tracks in another order than the model's outputs


def inverse(values: np.ndarray, table: TrackTable) -> np.ndarray:
    """The inverse transform written out: y / scale, un-soft-clip, undo the 3/4 power."""
    z = values / table.scale
    z = np.where(z > table.clip_soft, table.clip_soft + (z - table.clip_soft) ** 2, z)
    return np.where(np.char.endswith(table.sum_stat.astype(str), "_sqrt"), z ** (4 / 3), z)


@pytest.fixture(scope="module")
def windows():
    rng = np.random.default_rng(0)
    n = 7
    sequences = rng.integers(0, 5, (n, LENGTH)).astype(np.uint8)
    targets = rng.gamma(0.6, 0.6, (n, TARGET_BINS, len(DATA_ROWS))).astype(np.float16)
    crop_start = rng.integers(0, LENGTH // 32 - TARGET_BINS + 1, n)
    return sequences, targets, crop_start


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    dirs = [save_tiny_model(root / f"m{seed}", MODEL_TRACKS, seed=seed) for seed in (0, 1)]
    return [load_track_model([d]) for d in dirs]


@pytest.mark.parametrize("sizes", [(7,), (1, 1, 1, 1, 1, 1, 1), (3, 4), (2, 2, 3)])
def test_streaming_pearson_matches_scipy_in_all_spaces(windows, models, sizes):
    sequences, targets, crop_start = windows
    data_tracks = MODEL_TRACKS.take(DATA_ROWS)
    evaluation = TrackPearson(models, data_tracks, "cpu")
    first = 0
    for size in sizes:
        part = slice(first, first + size)
        evaluation.update(
            {
                "sequence": torch.as_tensor(sequences[part]),
                "targets": torch.as_tensor(targets[part]),
                "crop_start": torch.as_tensor(crop_start[part]),
                "index": torch.arange(first, first + size),
            }
        )
        first += size
    got = evaluation.compute()
    assert got.shape == (2, 3, len(DATA_ROWS)) and evaluation.windows == 7
    y = targets.astype(np.float64).reshape(-1, len(DATA_ROWS))  # all windows' bins, pooled
    y_counts = inverse(y, data_tracks)
    for m, model in enumerate(models):
        full = predict(model.module, sequences, "human", batch_size=7).numpy()
        x = np.concatenate(
            [full[i, c : c + TARGET_BINS][:, DATA_ROWS] for i, c in enumerate(crop_start)]
        ).astype(np.float64)
        x_counts = inverse(x, data_tracks)
        spaces = {
            "squashed": (x, y),
            "counts": (x_counts, y_counts),
            "log": (np.log2(1 + x_counts), np.log2(1 + y_counts)),
        }
        for s, space in enumerate(SPACES):
            x_space, y_space = spaces[space]
            expected = [pearsonr(x_space[:, k], y_space[:, k])[0] for k in range(len(DATA_ROWS))]
            np.testing.assert_allclose(got[m, s], expected, rtol=1e-4, atol=1e-6)
    # The three spaces are different statistics on this data.
    assert np.abs(got[0, 0] - got[0, 1]).max() > 1e-3 and np.abs(got[0, 1] - got[0, 2]).max() > 1e-3


def test_missing_track_is_named(models):
    other = make_table([("CAGEx", 1.0, 1.0, "sum", 0)])
    with pytest.raises(FlashRNAError, match="has no track CAGEx"):
        TrackPearson(models, other)


def test_model_track_tables_are_found_and_checked(tmp_path):
    directory = save_tiny_model(tmp_path / "m", MODEL_TRACKS)
    (directory / "targets-human.txt").rename(directory / "targets.txt")  # the fallback name
    model = load_track_model([directory])
    assert model.tracks == MODEL_TRACKS
    (directory / "targets.txt").unlink()
    with pytest.raises(FlashRNAError, match=r"no targets-human\.txt or targets\.txt"):
        load_track_model([directory])
    unpaired = make_table([(f"DNA{k}", 1.0, 1.0, "sum", k) for k in range(4)])
    unpaired.write(tmp_path / "unpaired.txt")
    with pytest.raises(FlashRNAError, match=r"strand pair of row 0 .* the model stores 1"):
        load_track_model([directory], targets=tmp_path / "unpaired.txt")
    with pytest.raises(FlashRNAError, match="no head 'mouse'"):
        load_track_model([directory], head="mouse")


# --------------------------------------------------------------------------------------------
# The command line: ensembles and resuming
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shards(tmp_path_factory, windows):
    from flashrna.data import write_shard

    sequences, targets, _ = windows
    root = tmp_path_factory.mktemp("shards")
    frame = pd.DataFrame(
        {
            "chrom": "chr1",
            "start": np.arange(7) * 10_000 + 8 * 32,
            "end": np.arange(7) * 10_000 + 24 * 32,
            "label": ["fold3"] * 5 + ["fold4"] * 2,
        }
    )
    # Targets of the central 16 of the 32 output bins, as in the Borzoi layout.
    write_shard(root / "s0", sequences[:4], targets[:4], frame[:4], MODEL_TRACKS.take(DATA_ROWS),
                "human")  # fmt: skip
    write_shard(root / "s1", sequences[4:], targets[4:], frame[4:].reset_index(drop=True),
                MODEL_TRACKS.take(DATA_ROWS), "human")  # fmt: skip
    return root


def evaluate(out, shards, model_dirs, *extra) -> int:
    argv = ["evaluate-tracks", "--shards", str(shards), "--out", str(out), "--num-workers", "0"]
    for d in model_dirs:
        argv += ["--model", str(d)]
    return main([*argv, "--batch-size", "2", *extra])


def test_cli_ensemble_and_resume(tmp_path, shards, windows, models, monkeypatch):
    dirs = [m.name for m in models]
    assert evaluate(tmp_path / "full", shards, dirs) == 0  # --model twice: one ensemble
    tracks = pd.read_csv(tmp_path / "full" / "tracks.csv")
    assays = pd.read_csv(tmp_path / "full" / "assays.csv")
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["windows"] == 5  # the fold3 windows only
    assert list(tracks["identifier"][:4]) == ["DNAb", "RNAa+", "RNAa-", "ATAc"]
    assert list(tracks["model"].unique()) == ["+".join(dirs)]
    # Expected: Pearson of the members' mean prediction over the targets' central 16 bins.
    sequences, targets, _ = windows
    mean = np.mean([predict(m.module, sequences[:5], "human").numpy() for m in models], axis=0)
    x = mean[:, 8:24][..., DATA_ROWS].reshape(-1, len(DATA_ROWS)).astype(np.float64)
    y = targets[:5].astype(np.float64).reshape(-1, len(DATA_ROWS))
    expected = [pearsonr(x[:, k], y[:, k])[0] for k in range(len(DATA_ROWS))]
    np.testing.assert_allclose(tracks["pearson_squashed"], expected, rtol=1e-4, atol=1e-6)
    columns = [f"pearson_{s}" for s in SPACES]
    for row in assays.itertuples(index=False):
        selected = tracks[tracks["assay"] == row.assay]
        np.testing.assert_allclose(
            [getattr(row, c) for c in columns], selected[columns].mean(), atol=2e-6
        )
        assert row.tracks == len(selected)

    # Interrupted after two batches (states saved after each), then resumed.
    calls = {"n": 0}
    original = TrackPearson.update

    def interrupted(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        original(self, batch)

    monkeypatch.setattr(TrackPearson, "update", interrupted)
    out = tmp_path / "resumed"
    assert evaluate(out, shards, dirs, "--checkpoint-every", "1") == 130
    assert (out / "evaluate-tracks.state.npz").exists() and not (out / "tracks.csv").exists()
    monkeypatch.setattr(TrackPearson, "update", original)
    seen = []
    monkeypatch.setattr(
        TrackPearson,
        "update",
        lambda self, b: (seen.append(b["index"].tolist()), original(self, b)),
    )
    assert evaluate(out, shards, dirs, "--checkpoint-every", "1") == 0
    assert seen == [[4]]  # the resumed run reads only the window not yet done
    resumed = pd.read_csv(out / "tracks.csv")
    np.testing.assert_allclose(resumed[columns], tracks[columns], atol=1e-9)
    assert not (out / "evaluate-tracks.state.npz").exists()


def test_evaluate_tracks_called_directly(tmp_path, shards, windows, models):
    """The library function, one model, the valid (fold4) windows and an assay subset: its returned
    summary is the one it wrote, and the per-track R are scipy's on those windows."""
    summary = evaluate_tracks(
        [models[1].name],
        [shards],
        tmp_path / "direct",
        split="valid",
        assays=["RNA", "DNA"],
        batch_size=3,
        num_workers=0,
        device="cpu",
        precision="fp32",
    )
    assert summary == json.loads((tmp_path / "direct" / "summary.json").read_text())
    assert summary["windows"] == 2 and summary["split"] == "valid"
    assert set(summary["assays"]) == {"RNA", "DNA"}
    tracks = pd.read_csv(tmp_path / "direct" / "tracks.csv")
    assert list(tracks["identifier"]) == ["DNAb", "RNAa+", "RNAa-"]
    sequences, targets, _ = windows
    prediction = predict(models[1].module, sequences[5:], precision="fp32").numpy()[:, 8:24]
    rows = DATA_ROWS[:3]  # the data's columns 0..2 are the model's outputs 2, 0, 1
    x = prediction[..., rows].reshape(-1, 3).astype(np.float64)
    y = targets[5:, :, :3].astype(np.float64).reshape(-1, 3)
    expected = [pearsonr(x[:, k], y[:, k])[0] for k in range(3)]
    np.testing.assert_allclose(tracks["pearson_squashed"], expected, rtol=1e-4, atol=1e-6)
    rna = summary["assays"]["RNA"]["squashed"]["mean"]
    assert rna == pytest.approx(np.mean(expected[1:]), abs=2e-6)


# --------------------------------------------------------------------------------------------
# eqtl-benchmark
# --------------------------------------------------------------------------------------------


def test_tissue_map_is_exact_against_borzoi_tables():
    mapping = read_tissue_map()
    assert len(mapping) == 49
    gtex = TrackTable.read(fixture_path("borzoi/targets_gtex.txt"))
    human = TrackTable.read(fixture_path("borzoi/targets_human.txt.gz"))
    descriptions = set(gtex.frame["description"])
    assert set(mapping.values()) <= descriptions
    descriptions = human.frame["description"].to_numpy()
    for tissue, description in mapping.items():
        rows = tissue_tracks(human.identifier, descriptions, description)
        assert len(rows) >= 2, tissue
        assert set(human.identifier[rows]) <= set(gtex.identifier)
        assert (human.frame["description"].to_numpy()[rows] == description).all()
    blood = human.identifier[tissue_tracks(human.identifier, descriptions, "RNA:blood")]
    vessel = human.identifier[tissue_tracks(human.identifier, descriptions, "RNA:blood_vessel")]
    assert mapping["Whole_Blood"] == "RNA:blood" and mapping["Artery_Tibial"] == "RNA:blood_vessel"
    assert len(blood) == 3 and not set(blood) & set(vessel)


GTF = """\
chr1\tt\texon\t14000\t14500\t.\t+\t.\tgene_id "ENSG1.4"; transcript_id "T1";
chr1\tt\texon\t54000\t54300\t.\t-\t.\tgene_id "ENSG2.1"; transcript_id "T2";
chr1\tt\texon\t63000\t64000\t.\t-\t.\tgene_id "ENSG3.2"; transcript_id "T3";
chr1\tt\texon\t64500\t64600\t.\t+\t.\tgene_id "ENSG4.1"; transcript_id "T4";
"""


HEADER = "variant\tgene\tpip\tbeta_posterior\tallele1\tallele2\n"
ADIPOSE = [  # variant, gene, pip, beta_posterior, allele1
    ("chr1_14677_G_A_b38", "ENSG1.7", 0.95, 0.3, "G"),
    ("chr1_54490_G_A_b38", "ENSG2.1", 0.99, -0.2, "A"),  # allele1 is the ALT: sign flipped
    ("chr1_63671_G_A_b38", "ENSG3.1", 0.93, 0.8, "G"),
    ("chr1_63697_T_C_b38", "ENSG4.9", 0.97, -0.5, "T"),
    ("chr1_64764_C_T_b38", "ENSG3", 0.92, 0.1, "C"),
    ("chr1_64764_C_T_b38", "ENSG1", 0.96, 0.6, "C"),  # gene outside the window: score 0
    ("chr1_14680_A_C_b38", "ENSG1", 0.99, 0.9, "A"),  # the genome has G: not scored
    ("chr1_108230_C_T_b38", "ENSG1", 0.5, 2.0, "C"),  # PIP too low
]
BLOOD = [  # method, then as ADIPOSE
    ("SUSIE", "chr1_14677_G_A_b38", "ENSG1.4", 0.91, -0.4, "G"),
    ("SUSIE", "chr1_63671_G_A_b38", "ENSG3.2", 0.99, 0.2, "G"),
    ("SUSIE", "chr1_64764_C_T_b38", "ENSG3.2", 0.99, 0.7, "C"),
    ("FINEMAP", "chr1_54490_G_A_b38", "ENSG2.1", 0.99, 0.5, "G"),  # another method: ignored
]


def tsv_rows(rows) -> str:
    return "".join("\t".join(map(str, row)) + "\tX\n" for row in rows)


def test_eqtl_benchmark_end_to_end(tmp_path):
    import gzip

    gtex = TrackTable.read(fixture_path("borzoi/targets_gtex.txt"))
    wanted = np.isin(gtex.frame["description"], ["RNA:adipose_tissue", "RNA:blood"])
    tracks = gtex.take(np.flatnonzero(wanted))
    model = save_tiny_model(tmp_path / "model", tracks)
    (tmp_path / "genes.gtf").write_text(GTF)
    adipose, merged = tmp_path / "Adipose_Subcutaneous.tsv", tmp_path / "merged.tsv.gz"
    adipose.write_text(HEADER + tsv_rows(ADIPOSE))
    blood = [(method, "Whole_Blood", *rest) for method, *rest in BLOOD]
    merged.write_bytes(gzip.compress(("method\ttissue\t" + HEADER + tsv_rows(blood)).encode()))
    fasta = fixture_path("genome/hg38_1m.fa.gz")
    common = ["--fasta", str(fasta), "--gtf", str(tmp_path / "genes.gtf"), "--model", str(model)]
    common += ["--length", "4096", "--crop-bins", "16"]
    eq = tmp_path / "eq"
    argv = ["eqtl-benchmark", "--eqtls", str(adipose), str(merged), "--min-variants", "2"]
    assert main([*argv, "--out", str(eq), *common]) == 0

    # score-variants on the eQTL tables' variants: the expected scores, and the input of
    # eqtl-benchmark --scores, which must give the same results from each format.
    sv = tmp_path / "sv"
    tables = ["--eqtls", str(adipose), str(merged), "--tracks", *tracks.identifier]
    formats = ["--format", "tsv", "parquet", "h5"]
    assert main(["score-variants", *tables, *formats, "--out", str(sv), *common]) == 0
    # The wide layout of the same scores, beside copies of tracks.tsv and skipped.tsv.
    long = pd.read_csv(sv / "scores.tsv", sep="\t")
    wide = long.pivot(index=["variant", "ref", "gene_id"], columns="track", values="logSED")
    (tmp_path / "wide").mkdir()
    wide.add_prefix("logSED:").reset_index().to_csv(tmp_path / "wide" / "w.tsv", sep="\t")
    for name in ("tracks.tsv", "skipped.tsv", "summary.json"):
        (tmp_path / "wide" / name).write_bytes((sv / name).read_bytes())
    for scores_file in ("scores.tsv", "scores.parquet", "sed.h5", "../wide/w.tsv"):
        again = tmp_path / f"again-{Path(scores_file).name}"
        assert main([*argv, "--out", str(again), "--scores", str(sv / scores_file)]) == 0
        for name in ("tissues.csv", "eqtls.csv"):
            got, want = pd.read_csv(again / name), pd.read_csv(eq / name)
            if scores_file == "sed.h5":  # float16 logSEDs, as Borzoi stores them
                for column in ("score", "spearman"):
                    if column in got:
                        np.testing.assert_allclose(got[column], want[column], rtol=2e-3)
                        got[column] = want[column]
            pd.testing.assert_frame_equal(got, want)
    scores = pd.read_csv(sv / "scores.tsv", sep="\t")
    scores["gene"] = scores["gene_id"].str.split(".").str[0]
    pairs = pd.read_csv(eq / "eqtls.csv")
    tissues = pd.read_csv(eq / "tissues.csv").set_index("tissue")
    summary = json.loads((eq / "summary.json").read_text())
    rhos = []
    for tissue, rows, description in (
        ("Adipose_Subcutaneous", ADIPOSE, "RNA:adipose_tissue"),
        ("Whole_Blood", [row[1:] for row in BLOOD[:3]], "RNA:blood"),
    ):
        identifiers = tracks.identifier[tracks.frame["description"] == description]
        expected = []  # (variant, score, beta)
        for variant, gene, pip, beta, allele1 in rows:
            if pip <= 0.9:
                continue
            hit = scores[
                (scores["variant"] == variant)
                & (scores["gene"] == gene.split(".")[0])
                & scores["track"].isin(identifiers)
            ]
            value = hit["logSED"].mean() if len(hit) else 0.0
            if variant == "chr1_14680_A_C_b38":
                value = math.nan
            expected.append((variant, -value if allele1 != variant.split("_")[2] else value, beta))
        got = pairs[pairs["tissue"] == tissue]
        assert list(got["variant"]) == [e[0] for e in expected]
        np.testing.assert_allclose(got["score"], [e[1] for e in expected], rtol=1e-4, atol=1e-9)
        usable = [e for e in expected if not math.isnan(e[1])]
        rho = spearmanr([e[1] for e in usable], [e[2] for e in usable])[0]
        assert tissues.loc[tissue, "spearman"] == pytest.approx(rho)
        assert tissues.loc[tissue, "scored"] == len(usable)
        assert tissues.loc[tissue, "tracks"] == len(identifiers) == 3
        rhos.append(rho)
    columns = ["eqtls", "outside_window", "not_scored", "skipped_ref_mismatch", "flipped"]
    assert tissues.loc["Adipose_Subcutaneous", columns].tolist() == [7, 1, 1, 1, 1]
    assert summary["spearman_mean"] == pytest.approx(np.mean(rhos)) and summary["tissues"] == 2
    assert summary["protocol"].startswith("borzoi (window=borzoi, ref_mismatch=swap, units=scaled")
    assert summary["tissue_count"] == "table"

    # Borzoi counts a tissue's pairs in the table (7 for adipose), flashrna 0.1 its scored ones.
    for count, included in (("table", True), ("scored", False)):
        out = tmp_path / f"count-{count}"
        options = ["--min-variants", "6", "--tissue-count", count]
        assert main([*argv[:-2], *options, "--out", str(out), "--scores", str(sv / "sed.h5")]) == 0
        assert pd.read_csv(out / "tissues.csv").set_index("tissue")["included"].to_dict() == {
            "Adipose_Subcutaneous": included,
            "Whole_Blood": False,
        }


def test_eqtl_benchmark_and_score_variants_called_directly(tmp_path):
    """The library functions give what the command line writes: eqtl_benchmark scoring with
    the model, and from the scores score_variants wrote for the eQTL tables."""
    gtex = TrackTable.read(fixture_path("borzoi/targets_gtex.txt"))
    tracks = gtex.take(np.flatnonzero(gtex.frame["description"] == "RNA:adipose_tissue"))
    model = save_tiny_model(tmp_path / "model", tracks)
    gtf, eqtls = tmp_path / "genes.gtf", tmp_path / "Adipose_Subcutaneous.tsv"
    gtf.write_text(GTF)
    eqtls.write_text(HEADER + tsv_rows(ADIPOSE))
    fasta = fixture_path("genome/hg38_1m.fa.gz")
    geometry = {"length": 4096, "crop_bins": 16, "device": "cpu"}
    summary = eqtl_benchmark(
        [eqtls], tmp_path / "eq", models=[model], fasta=fasta, gtf=gtf, min_variants=2, **geometry
    )
    common = ["--fasta", str(fasta), "--gtf", str(gtf), "--model", str(model)]
    common += ["--length", "4096", "--crop-bins", "16", "--device", "cpu"]
    argv = ["eqtl-benchmark", "--eqtls", str(eqtls), "--min-variants", "2", *common]
    assert main([*argv, "--out", str(tmp_path / "cli")]) == 0
    assert summary == json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert summary["scores"]["length"] == 4096 and summary["scores"]["model"] == [str(model)]
    assert summary["eqtls"] == 7 and summary["tissues"] == 1  # PIP > 0.9: 7 of the 8 pairs
    for name in ("tissues.csv", "eqtls.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(tmp_path / "eq" / name), pd.read_csv(tmp_path / "cli" / name)
        )

    scored = score_variants(
        [model], fasta, gtf, tmp_path / "sv", eqtls=[eqtls], formats=["tsv"], **geometry
    )
    assert scored == json.loads((tmp_path / "sv" / "summary.json").read_text())
    assert scored["eqtls"] == [str(eqtls)] and scored["min_pip"] == 0.9
    assert scored["skipped"]["ref_mismatch"] == 1  # chr1_14680_A_C_b38: the genome has G
    again = eqtl_benchmark(
        [eqtls], tmp_path / "again", scores=tmp_path / "sv" / "scores.tsv", min_variants=2
    )
    assert again["spearman_mean"] == pytest.approx(summary["spearman_mean"])
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "again" / "eqtls.csv"), pd.read_csv(tmp_path / "eq" / "eqtls.csv")
    )


def test_eqtl_benchmark_uses_the_models_own_gtex_tissue_column(tmp_path):
    gtex = TrackTable.read(fixture_path("borzoi/targets_gtex.txt"))
    wanted = np.isin(gtex.frame["description"], ["RNA:adipose_tissue", "RNA:blood"])
    tracks = gtex.take(np.flatnonzero(wanted))
    # Tissues unlike the description map's (3 tracks each): one adipose track, two blood ones.
    adipose = np.flatnonzero(tracks.frame["description"] == "RNA:adipose_tissue")[:1]
    blood = np.flatnonzero(tracks.frame["description"] == "RNA:blood")[:2]
    tissue = np.full(len(tracks), "", dtype=object)
    tissue[adipose], tissue[blood] = "Adipose_Subcutaneous", "Whole_Blood"
    tracks = TrackTable(tracks.frame.assign(gtex_tissue=tissue), tracks.source)
    model = save_tiny_model(tmp_path / "model", tracks)
    (tmp_path / "genes.gtf").write_text(GTF)
    eqtls = tmp_path / "Adipose_Subcutaneous.tsv"
    eqtls.write_text(HEADER + tsv_rows(ADIPOSE))
    fasta = fixture_path("genome/hg38_1m.fa.gz")
    common = ["--fasta", str(fasta), "--gtf", str(tmp_path / "genes.gtf"), "--model", str(model)]
    common += ["--length", "4096", "--crop-bins", "16", "--eqtls", str(eqtls)]
    assert main(["score-variants", *common, "--out", str(tmp_path / "sv")]) == 0
    listed = pd.read_csv(tmp_path / "sv" / "tracks.tsv", sep="\t", keep_default_na=False)
    assert list(listed["gtex_tissue"]) == list(tissue)
    argv = ["eqtl-benchmark", "--eqtls", str(eqtls), "--min-variants", "2"]
    assert main([*argv, "--out", str(tmp_path / "eq"), *common[:-2]]) == 0
    scores = tmp_path / "sv" / "scores.tsv"
    assert main([*argv, "--out", str(tmp_path / "again"), "--scores", str(scores)]) == 0
    for name in ("tissues.csv", "eqtls.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(tmp_path / "again" / name), pd.read_csv(tmp_path / "eq" / name)
        )
    tissues = pd.read_csv(tmp_path / "eq" / "tissues.csv").set_index("tissue")
    assert tissues.loc["Adipose_Subcutaneous", "tracks"] == 1
    summary = json.loads((tmp_path / "eq" / "summary.json").read_text())
    assert summary["tissue_tracks"] == "the model's gtex_tissue column"
    # The pair scores read the one adipose track only.
    scored = pd.read_csv(scores, sep="\t")
    hit = scored[
        (scored["variant"] == "chr1_14677_G_A_b38")
        & scored["gene_id"].str.startswith("ENSG1.")
        & (scored["track"] == tracks.identifier[adipose[0]])
    ]
    pairs = pd.read_csv(tmp_path / "eq" / "eqtls.csv")
    got = pairs[pairs["variant"] == "chr1_14677_G_A_b38"]["score"].item()
    assert got == pytest.approx(hit["logSED"].item(), rel=1e-4)


def test_eqtl_inputs_are_checked(tmp_path, capsys):
    bad = tmp_path / "Liver.tsv"
    bad.write_text("variant\tgene\tpip\tallele1\nchr1_1_A_G_b38\tENSG1\t0.99\tA\n")
    with pytest.raises(FlashRNAError, match=r"Liver.tsv: missing column\(s\) beta_posterior"):
        read_eqtls([bad])
    odd = tmp_path / "Cornea.tsv"
    odd.write_text("variant\tgene\tpip\tbeta_posterior\tallele1\nchr1_1_A_G_b38\tE\t0.99\t1\tA\n")
    argv = ["eqtl-benchmark", "--eqtls", str(odd), "--out", str(tmp_path / "o")]
    argv += ["--fasta", "x", "--gtf", "y", "--model", "z"]
    argv += ["--targets", str(fixture_path("borzoi/targets_gtex.txt"))]  # no gtex_tissue column
    assert main(argv) == 1  # Cornea has no row in the tissue map: a clear error, not a guess
    assert "Cornea have no row in" in capsys.readouterr().err
    assert read_eqtls([odd])["tissue"].tolist() == ["Cornea"]
    base = ["eqtl-benchmark", "--eqtls", str(odd), "--out", str(tmp_path / "o")]
    assert main([*base, "--scores", "s.tsv", "--model", "z"]) == 1  # either scores or a model
    assert main([*base, "--model", "z"]) == 1  # no FASTA or GTF to score with


def test_eqtl_variants_are_distinct_and_malformed_ids_reported():
    eqtls = pd.DataFrame({"variant": ["chr1_5_A_G_b38", "rs7", "chr1_5_A_G_b38", "chr2_9_C_T"]})
    items = eqtl_variants(eqtls)
    assert [type(i).__name__ for i in items] == ["Variant", "Skipped", "Variant"]
    assert items[1].reason == "malformed" and items[1].variant.id == "rs7"
    assert (items[2].chrom, items[2].pos, items[2].ref, items[2].alt) == ("chr2", 9, "C", "T")
