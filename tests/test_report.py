"""`flashrna report`: the paper's tables and figures from result files written here in the exact
formats of evaluate-tracks, eqtl-benchmark and finetune (through their own writers where they
have one), and `snakemake --report` over the report rules."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import run_in_env

from flashrna.cli import main
from flashrna.evaluate.tracks import SPACES, track_results, track_summary
from flashrna.finetune.rnaprops import aggregate_folds
from flashrna.tracks import TrackTable
from flashrna.utils import write_json

ROOT = Path(__file__).resolve().parents[1]
ASSAY_OF_TRACK = ["RNA", "RNA", "DNASE", "ATAC"]
TABLE = TrackTable(
    pd.DataFrame(
        {
            "identifier": ["RNA1", "RNA2", "DNASE1", "ATAC1"],
            "file": "x.bw",
            "clip": 1e4,
            "clip_soft": 32.0,
            "scale": 1.0,
            "sum_stat": "sum",
            "strand_pair": range(4),
            "description": [f"{a}:tissue" for a in ASSAY_OF_TRACK],
            "source_index": range(4),
        }
    ),
    source="test tracks",
)
# Per-track Pearson in the counts space of each FlashRNA replicate (rows) and track (columns).
MEMBER_R = np.array(
    [
        [0.61, 0.65, 0.80, 0.70],
        [0.62, 0.66, 0.82, 0.71],
        [0.60, 0.68, 0.81, 0.69],
        [0.63, 0.64, 0.83, 0.72],
    ]
)
MEMBER_RHO = [0.101, 0.123, 0.087, 0.112]
ENSEMBLE_RHO = {"ensemble2": 0.15, "ensemble4": 0.171}
DISTILLED_RHO = 0.16
HALFLIFE_FOLDS = [0.71, 0.74, 0.69]
TE_FOLDS = [(0.5, 0.6), (0.55, 0.62)]  # two TE targets per fold


def write_tracks(out: Path, r_counts: np.ndarray, names: list[str], table=TABLE) -> None:
    """evaluate-tracks output (summary.json, assays.csv) through its own writers; r_counts
    (models, tracks) in the counts space, the other spaces offset so they differ."""
    r = np.stack([r_counts - 0.1, r_counts, r_counts + 0.05], axis=1)  # (models, spaces, tracks)
    assert len(SPACES) == 3
    _, per_assay = track_results(r, table, names)
    out.mkdir(parents=True, exist_ok=True)
    per_assay.to_csv(out / "assays.csv", index=False, float_format="%.6f")
    summary = track_summary(
        per_assay, names, split="test", head="human", windows=24, data=["shards/hg38/fold3-0"]
    )
    write_json(out / "summary.json", summary)


def write_eqtl(out: Path, rho: float) -> None:
    """eqtl-benchmark's summary.json (the format of flashrna.evaluate.eqtl._run_eqtl_benchmark)."""
    write_json(
        out / "summary.json",
        {
            "spearman_mean": rho,
            "tissues": 3,
            "tissues_without_tracks": [],
            "eqtls": 400,
            "variants": 380,
            "variant_outcomes": {"scored": 370, "ref_mismatch": 10},
            "min_pip": 0.9,
            "min_variants": 32,
            "scores": "eval/variants/x/scores.tsv",
        },
    )


def write_folds(out: Path, folds: list[tuple[float, ...]], targets: list[str]) -> None:
    """finetune halflife/te fold metrics (run_fold's keys), aggregated by the real writer."""
    for k, values in enumerate(folds):
        write_json(
            out / f"fold{k}" / "metrics.json",
            {
                "fold": k,
                "valid_fold": (k + 1) % len(folds),
                "num_folds": len(folds),
                "pearson": dict(zip(targets, values, strict=True)),
                "mean_pearson": float(np.mean(values)),
            },
        )
    aggregate_folds(out)


@pytest.fixture
def results(tmp_path) -> Path:
    """A run's results: 4 replicates, ensembles 2 and 4, distilled, ChIP head/full, half-life
    and TE; no baselines."""
    root = tmp_path / "results"
    for k, r in enumerate(MEMBER_R):
        write_tracks(root / "eval" / "tracks" / f"member{k}", r[None], [f"member{k}"])
        write_eqtl(root / "eval" / "eqtl" / f"member{k}", MEMBER_RHO[k])
    for name, rho in {**ENSEMBLE_RHO, "distilled": DISTILLED_RHO}.items():
        write_eqtl(root / "eval" / "eqtl" / name, rho)
    chip = TrackTable(TABLE.frame.assign(description="CHIP:x"), source="chip tracks")
    for mode, value in (("head", 0.41), ("full", 0.45)):
        _, per_assay = track_results(np.full((1, 3, 4), value), chip, [mode])
        summary = track_summary(
            per_assay, [mode], split="test", head="chip", windows=24, data=["chip"]
        )
        write_json(root / "eval" / "chip" / mode / "summary.json", summary)
    write_folds(root / "finetune" / "halflife", [(v,) for v in HALFLIFE_FOLDS], ["half_life"])
    write_folds(root / "finetune" / "te", TE_FOLDS, ["TE_HEK293", "TE_HeLa"])
    return root


def report(what: str, results: Path, *extra: str) -> int:
    argv = ["report", what, "--results", str(results), "--out", str(results / "out")]
    return main([*argv, "--config", "config/demo_x.yaml", "--data", "demo", *extra])


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def mean_sd(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1))


def test_table1_values_in_every_format(results):
    assert report("table1", results) == 0
    out = results / "out"
    md = (out / "table1.md").read_text()
    tex = (out / "table1.tex").read_text()
    html = (out / "table1.html").read_text()
    rows = read_csv(out / "table1.csv")
    per_assay = {  # the assay means of each replicate, then mean and SD over replicates
        "RNA": MEMBER_R[:, :2].mean(axis=1),
        "DNase": MEMBER_R[:, 2],
        "ATAC": MEMBER_R[:, 3],
    }
    for label, values in per_assay.items():
        mean, sd = mean_sd(values)
        shown = f"{mean:.3f} ± {sd:.3f}"
        assert shown in md and shown in html
        assert f"{mean:.3f} $\\pm$ {sd:.3f}" in tex
        (row,) = [r for r in rows if r["model"] == "FlashRNA" and r["metric"] == label]
        assert float(row["mean"]) == pytest.approx(mean, abs=1e-6)
        assert float(row["sd"]) == pytest.approx(sd, abs=1e-6)
        assert row["n"] == "4" and row["status"] == "ok"
    assert "| FlashRNA | 4 |" in md
    # The paper's columns, and the baselines marked as not run.
    assert "| RNA (this run) | RNA (paper) |" in md
    assert "0.647 ± 0.002" in md and "0.845 $\\pm$ 0.001" in tex
    assert md.count("not run") == 6
    borzoi = [r for r in rows if r["model"] == "Borzoi"]
    assert {r["status"] for r in borzoi} == {"not run"} and borzoi[0]["paper_mean"] == "0.654"
    # The footer: config, value space, data.
    assert "config/demo_x.yaml" in md and "config/demo\\_x.yaml" in tex
    assert "inverse-transformed counts" in md and "Data: demo" in md


def test_table1_baselines_and_multi_model_summaries(results):
    tracks = results / "eval" / "tracks"
    # Two Borzoi replicates evaluated in one evaluate-tracks call (one summary, two models).
    borzoi = np.array([[0.5, 0.5, 0.7, 0.6], [0.52, 0.54, 0.72, 0.58]])
    write_tracks(tracks / "borzoi0", borzoi, ["borzoi-0", "borzoi-1"])
    assert report("table1", results, "--flashzoi") == 0
    rows = read_csv(results / "out" / "table1.csv")
    (rna,) = [r for r in rows if r["model"] == "Borzoi" and r["metric"] == "RNA"]
    assert float(rna["mean"]) == pytest.approx(np.mean(borzoi[:, :2].mean(axis=1)), abs=1e-6)
    assert rna["n"] == "2"
    assert {r["status"] for r in rows if r["model"] == "Flashzoi"} == {"not run"}
    # Another value space, a subset of the replicates.
    assert report("table1", results, "--space", "log", "--replicates", "member0") == 0
    rows = read_csv(results / "out" / "table1.csv")
    (atac,) = [r for r in rows if r["model"] == "FlashRNA" and r["metric"] == "ATAC"]
    assert float(atac["mean"]) == pytest.approx(MEMBER_R[0, 3] + 0.05, abs=1e-6)
    assert atac["n"] == "1" and atac["sd"] == ""
    assert "log2(1 + inverse-transformed counts)" in (results / "out" / "table1.md").read_text()


def test_tables_2_3_4(results):
    for what in ("table2", "table3", "table4"):
        assert report(what, results) == 0
    out = results / "out"
    mean, sd = mean_sd(MEMBER_RHO)
    md2 = (out / "table2.md").read_text()
    assert f"| FlashRNA | 4 | {mean:.3f} ± {sd:.3f} | 0.406 ± 0.005 |" in md2
    assert "| Borzoi | – | not run | 0.399 ± 0.003 |" in md2
    assert "Spearman $\\rho$" in (out / "table2.tex").read_text()

    md3 = (out / "table3.md").read_text()
    assert "| FlashRNA head-only | 1 | 0.410 | 0.574 ± 0.001 |" in md3
    assert "| FlashRNA full | 1 | 0.450 | 0.593 ± 0.001 |" in md3
    assert "| Borzoi | – | not run | 0.595 ± 0.001 |" in md3

    md4 = (out / "table4.md").read_text()
    mean, sd = mean_sd(HALFLIFE_FOLDS)
    assert f"| Half-life | FlashRNA | 3 | {mean:.3f} ± {sd:.3f} | 0.81 |" in md4
    mean, sd = mean_sd([np.mean(f) for f in TE_FOLDS])
    assert f"| TE | FlashRNA | 2 | {mean:.3f} ± {sd:.3f} | 0.73 |" in md4
    assert "| TE | RiboNN + annotations | – | not run | 0.71 |" in md4
    rows = read_csv(out / "table4.csv")
    assert [r["model"] for r in rows if r["task"] == "Half-life"] == [
        "Saluki",
        "Saluki + annotations",
        "FlashRNA",
    ]
    tex = (out / "table4.tex").read_text()
    assert "\\begin{tabular}{llrrr}" in tex and "Half-life & FlashRNA & 3 &" in tex


def test_missing_inputs_are_named(results, capsys):
    (results / "finetune" / "te" / "summary.json").unlink()
    assert report("table4", results) == 1
    assert "finetune/te/summary.json: file not found" in capsys.readouterr().err
    assert report("table2", results, "--borzoi", "borzoi0") == 1
    assert "eval/eqtl/borzoi0/summary.json: file not found" in capsys.readouterr().err
    shutil.rmtree(results / "eval" / "tracks")
    assert report("table1", results) == 1
    assert "eval/tracks: no FlashRNA results" in capsys.readouterr().err


def test_figure2(results):
    write_eqtl(results / "eval" / "eqtl" / "flashzoi0", 0.09)
    write_eqtl(results / "eval" / "eqtl" / "flashzoi1", 0.095)
    assert report("figure2", results) == 0
    out = results / "out"
    for suffix in ("png", "pdf"):
        assert (out / f"figure2.{suffix}").stat().st_size > 10_000
    points = pd.read_csv(out / "figure2.csv")
    ours = points[points["source"] == "this run"].set_index(["series", "size"], drop=False)
    mean, sd = mean_sd(MEMBER_RHO)
    assert ours.loc[("FlashRNA", 1), "mean"] == pytest.approx(mean)
    assert ours.loc[("FlashRNA", 1), "sd"] == pytest.approx(sd)
    assert ours.loc[("FlashRNA", 4), "mean"] == pytest.approx(ENSEMBLE_RHO["ensemble4"])
    assert ours.loc[("FlashRNA distilled", 1), "mean"] == pytest.approx(DISTILLED_RHO)
    flashzoi = points[(points["series"] == "Flashzoi") & (points["source"] == "this run")]
    assert flashzoi["mean"].item() == pytest.approx(0.0925)
    borzoi = points[(points["series"] == "Borzoi") & (points["source"] == "this run")]
    assert borzoi["values"].item() == "not run"
    paper = points[points["source"] == "paper"]
    assert sorted(paper.loc[paper["series"] == "FlashRNA", "size"]) == [1, 4, 16]
    assert paper["mean"].max() == pytest.approx(0.454)


def compare_result() -> dict:
    """A `bench compare` result in its JSON format, with the GPU-only memory limits."""
    models = {
        name: {
            "parameters": 1000,
            "forward_examples_per_s": fwd,
            "train_examples_per_s": train,
            "max_train_batch": batch,
            "max_train_batch_bounded": False,
            "max_inference_length": length,
            "max_inference_length_bounded": False,
        }
        for name, fwd, train, batch, length in (
            ("borzoi", 2.0, 1.0, 2, 1_048_576),
            ("flashrna", 12.2, 2.4, 8, 3_670_016),
        )
    }
    return {
        "device": "NVIDIA H100 80GB HBM3",
        "device_type": "cuda",
        "borzoi_pytorch": "0.5.1",
        "settings": {
            "dim": 1536,
            "layers": 8,
            "heads": 8,
            "tracks": 7611,
            "length": 524_288,
            "batch_size": 1,
            "precision": "bf16 autocast",
            "paper_size": True,
        },
        "models": models,
        "ratios": {
            "forward_examples_per_s": 6.1,
            "train_examples_per_s": 2.4,
            "max_train_batch": 4.0,
            "max_inference_length": 3.5,
        },
    }


def test_figure1_from_a_compare_result(tmp_path):
    write_json(tmp_path / "bench" / "compare.json", compare_result())
    assert main(["report", "figure1", "--results", str(tmp_path), "--out", str(tmp_path)]) == 0
    for suffix in ("png", "pdf"):
        assert (tmp_path / f"figure1.{suffix}").stat().st_size > 10_000
    write_json(tmp_path / "bad.json", {"models": {}})
    argv = ["report", "figure1", "--results", ".", "--out", str(tmp_path)]
    assert main([*argv, "--compare", str(tmp_path / "bad.json")]) == 1


def test_figure1_on_a_cpu_says_in_its_memory_panels_why_they_are_empty():
    from flashrna.report.figures import draw_figure1

    result = compare_result()
    result["device_type"] = "cpu"
    for model in result["models"].values():
        for metric in ("max_train_batch", "max_inference_length"):
            del model[metric], model[f"{metric}_bounded"]
    axes = draw_figure1(result).axes
    assert len(axes) == 4
    for ax in axes[:2]:  # the speeds: two bars each
        assert len(ax.patches) == 2 and not ax.texts[0].get_text().startswith("Not")
    for ax, what in zip(axes[2:], ("training batch", "input"), strict=True):
        assert "not measured on a CPU" in ax.get_title()
        (note,) = ax.texts
        text = note.get_text().replace("\n", " ")
        assert text.startswith("Not measured on a CPU.")
        assert f"largest {what} that fits in a GPU's memory" in text
        assert "flashrna bench compare` on a GPU" in text


def test_figure2_distilled_marker_is_beside_the_size_1_error_bar():
    """The distilled star and the replicates' mean share size 1; the star is drawn beside the
    replicates' error bar, not on it: at least its own radius away, in the figure's pixels."""
    from flashrna.report.figures import Point, draw_figure2
    from flashrna.report.tables import Cell

    points = [
        Point("FlashRNA", "this run", 1, Cell([0.30, 0.35, 0.28, 0.33])),
        Point("FlashRNA", "this run", 4, Cell([0.40])),
        Point("FlashRNA distilled", "this run", 1, Cell([0.31])),  # inside the error bar
        Point("FlashRNA distilled", "paper", 1, Cell([0.452])),
    ]
    figure = draw_figure2(points, [])
    (ax,) = figure.axes
    figure.canvas.draw()
    stars = [line for line in ax.get_lines() if line.get_marker() == "*"]
    assert len(stars) == 2
    for star in stars:
        (x,), (y,) = star.get_data()
        star_px = ax.transData.transform((x, y))
        bar_px = ax.transData.transform((1, y))  # the size-1 error bar is the line x = 1
        radius_px = star.get_markersize() / 2 * figure.dpi / 72
        assert abs(star_px[0] - bar_px[0]) > radius_px
    others = [line.get_zorder() for line in ax.get_lines() if line.get_marker() != "*"]
    assert min(star.get_zorder() for star in stars) > max(others)  # drawn in front


WRAPPER = """
import shlex
from pathlib import Path

configfile: "config.yaml"

RESULTS = "results"
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
REPLICATES = [0, 1, 2, 3]
ENSEMBLE_SIZES = [1, 2, 4]
BASELINES = []
RELEASED, RELEASED_ENSEMBLE, RELEASED_DISTILLED = [], [], []
TRACK_MODELS = [f"member{m}" for m in REPLICATES]
CHIP_MODES = ["head", "full"]

def resources(kind):
    return {"runtime": 10, "mem_mb": 1000}

def threads(kind):
    return 1

def step_options(path, step):
    return ""

def option(flag, *values):
    return " ".join([flag, *(shlex.quote(str(v)) for v in values)])

include: "REPORT_SMK"

rule all:
    input: REPORT_FILES.values()
"""
# The config keys the report rules and the captions read.
CONFIG = """
run: test
download: {generate_demo: true}
train: {replicates: 4}
ensemble: {sizes: [1, 2, 4]}
evaluate: {eqtl: {min_pip: 0.9, min_variants: 32}}
report: {}
"""


@pytest.mark.skipif(shutil.which("snakemake") is None, reason="needs snakemake")
def test_snakemake_report(results, tmp_path):
    """The real report rules (with the globals common.smk defines) on a completed run's result
    files, then `snakemake --report`: every table and figure in the HTML with its caption."""
    (tmp_path / "Snakefile").write_text(
        WRAPPER.replace("REPORT_SMK", str(ROOT / "workflow" / "rules" / "report.smk"))
    )
    (tmp_path / "config.yaml").write_text(CONFIG)
    shutil.move(results, tmp_path / "results")
    write_json(tmp_path / "results" / "bench" / "compare.json", compare_result())
    run = [sys.executable, "-m", "snakemake", "--cores", "2", "--quiet", "all"]
    done = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run(
        [*run[:-1], "--report", "results/report.html"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    page = (tmp_path / "results" / "report.html").read_text()
    for k in (1, 2, 3, 4):
        assert f"table{k}.html" in page and f"Table {k}:" in page
    for k in (1, 2):
        assert f"figure{k}.png" in page and f"Figure {k}:" in page
    assert "Pearson R between predicted and measured coverage" in page  # a caption


def test_report_steps_run_in_their_job_env_without_pytorch(results):
    """`snakemake --use-conda` runs the report rules in workflow/envs/plot.yaml (no PyTorch, no
    pandas): every table and figure is made with only that env's packages importable."""
    env = ROOT / "workflow" / "envs" / "plot.yaml"
    write_json(results / "bench" / "compare.json", compare_result())
    for what in ("table1", "table2", "table3", "table4", "figure1", "figure2"):
        out = results / "env" / what
        argv = ["report", what, "--results", str(results), "--out", str(out)]
        run = run_in_env(env, argv)
        assert run.returncode == 0, f"report {what} in plot.yaml:\n{run.stderr}"
        assert any(out.iterdir())


def test_released_weights_rows(results):
    released = {"released0": (0.84, 0.72, 0.13), "released1": (0.86, 0.70, 0.15)}
    for name, (dnase, atac, rho) in released.items():  # evaluated on the shared DNase, ATAC
        write_tracks(results / "eval" / "tracks" / name, np.array([[dnase, atac]]), [name],
                     TABLE.take([2, 3]))  # fmt: skip
        write_eqtl(results / "eval" / "eqtl" / name, rho)
    write_eqtl(results / "eval" / "eqtl" / "released-ensemble2", 0.18)
    write_eqtl(results / "eval" / "eqtl" / "released-distilled", 0.17)
    for what in ("table1", "table2", "figure2"):
        assert report(what, results) == 0
    out = results / "out"
    rows = read_csv(out / "table1.csv")
    mine = {r["metric"]: r for r in rows if r["model"] == "FlashRNA (released weights)"}
    assert float(mine["DNase"]["mean"]) == pytest.approx(0.85) and mine["DNase"]["n"] == "2"
    assert mine["RNA"]["status"] == "no value" and mine["RNA"]["paper_mean"] == ""
    md = (out / "table1.md").read_text()
    assert "shares by identifier (RNA 0 of 2, DNase 1 of 1, ATAC 1 of 1)" in md
    mean, sd = mean_sd([0.13, 0.15])
    md2 = (out / "table2.md").read_text()
    assert f"| FlashRNA (released weights) | 2 | {mean:.3f} ± {sd:.3f} | – |" in md2
    points = pd.read_csv(out / "figure2.csv").set_index(["series", "size"])
    released = points.loc["FlashRNA (released weights)"]
    assert released.loc[1, "mean"] == pytest.approx(mean)
    assert released.loc[2, "mean"] == pytest.approx(0.18)
    assert points.loc[("FlashRNA (released weights) distilled", 1), "mean"] == pytest.approx(0.17)
    # Named as none (the workflow without published weights): no such rows.
    assert report("table1", results, "--released") == 0
    assert "FlashRNA (released weights)" not in (out / "table1.md").read_text()
