"""The Snakemake workflow: config schema, the paper DAG (dry run), lint and formatting, and the
demo run end to end from a fresh working directory (every table and figure, a no-op rerun, the
HTML report)."""

from __future__ import annotations

import copy
import math
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "workflow" / "Snakefile"
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"

pytestmark = pytest.mark.skipif(shutil.which("snakemake") is None, reason="needs snakemake")


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / name).read_text())


def validate(config: dict) -> None:
    from snakemake.utils import validate as snakemake_validate

    snakemake_validate(copy.deepcopy(config), str(SCHEMA))


@pytest.mark.parametrize("name", ["config.yaml", "demo.yaml"])
def test_schema_accepts_the_configs(name):
    validate(load(name))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["train"].update(memebrs=16), "memebrs"),
        (lambda c: c["ensemble"].update(sizes="16"), "sizes"),
        (lambda c: c["download"].update(tool="wget"), "wget"),
        (lambda c: c.update(species={"human": {"genome": "hg38"}}), "assays"),
        (lambda c: c["finetune"]["chip"].update(epoch=3), "epoch"),  # a typo of epochs
        (lambda c: c["evaluate"]["eqtl"].update(length="16k"), "16k"),
        (lambda c: c["evaluate"]["eqtl"].update(tissues={"Liver": "liver"}), "tissues"),
        (lambda c: c["finetune"]["te"].update(targets="TE_*"), "TE_"),
        (lambda c: c["resources"]["train"].update(gpus=1), "gpus"),
    ],
)
def test_schema_rejects_a_broken_copy(change, message):
    from snakemake.exceptions import WorkflowError

    config = load("config.yaml")
    change(config)
    with pytest.raises(WorkflowError, match=message):
        validate(config)


def run_snakemake(workdir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """snakemake on the repository's Snakefile in a fresh working directory (which gets the
    repository's config/ as a link, as a clone has it)."""
    if not (workdir / "config").exists():
        (workdir / "config").symlink_to(ROOT / "config")
    return subprocess.run(
        ["snakemake", "-s", str(SNAKEFILE), *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:", 1)[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


def test_a_bad_training_config_stops_before_any_job(tmp_path):
    config = load("demo.yaml")
    config["train"]["config"]["train"]["stepz"] = 10
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(config))
    result = run_snakemake(tmp_path, "-n", "--cores", "1", "--configfile", "broken.yaml")
    assert result.returncode != 0
    assert "config train.config.train: unknown key 'stepz'" in result.stdout + result.stderr


def test_paper_dry_run_has_the_papers_jobs(tmp_path):
    config = load("config.yaml")
    result = run_snakemake(tmp_path, "-n", "--cores", "1", "--configfile", "config/config.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    members, replicates = config["train"]["members"], config["train"]["replicates"]
    ensembles = [n for n in config["ensemble"]["sizes"] if n > 1]
    modes = config["finetune"]["chip"]["modes"]
    assert counts["train"] == members == 16  # members 0-3 are the replicates: none twice
    assert counts["ensemble_predict"] == 1
    assert counts["distill"] == 1
    finetunes = sum(counts[r] for r in ("finetune_chip", "finetune_halflife", "finetune_te"))
    assert finetunes == len(modes) + 2 == 4
    assert counts["evaluate_tracks"] == replicates  # Table 1
    assert counts["evaluate_chip"] == len(modes)  # Table 3
    eqtl_models = replicates + len(ensembles) + 1  # Table 2, Figure 2
    assert counts["score_variants"] == counts["eqtl_benchmark"] == eqtl_models
    reports = {k: v for k, v in counts.items() if k.startswith("report_")}
    assert reports == {f"report_{n}": 1 for n in ("table1", "table2", "table3", "table4")} | {
        "report_figure1": 1,
        "report_figure2": 1,
    }
    assert counts["bench_compare"] == 1  # Figure 1
    # Every job that computes something runs `flashrna` with a log.
    assert "flashrna train --config results/paper/configs/train.yaml --seed 15" in result.stdout


def test_one_table_is_a_target(tmp_path):
    result = run_snakemake(
        tmp_path, "table4", "-n", "--cores", "1", "--configfile", "config/config.yaml"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    assert counts["report_table4"] == 1 and counts["finetune_te"] == 1
    assert "train" in counts and "evaluate_tracks" not in counts and "report_table1" not in counts


@pytest.mark.parametrize("name", ["config.yaml", "demo.yaml"])
def test_lint_is_clean(tmp_path, name):
    result = run_snakemake(tmp_path, "--lint", "--configfile", f"config/{name}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Congratulations" in result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("snakefmt") is None, reason="needs snakefmt")
def test_rule_files_are_snakefmt_formatted():
    result = subprocess.run(
        ["snakefmt", "--check", str(ROOT / "workflow")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


# -- The demo, end to end --------------------------------------------------------------------

TABLES = [f"table{k}" for k in range(1, 5)]


def finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def check_demo_outputs(results: Path) -> dict[str, float]:
    """Every table and figure exists with finite values for this run; returns the headline
    numbers (for the test's message)."""
    numbers = {}
    for name in TABLES:
        for ext in ("html", "md", "csv", "tex"):
            assert (results / "tables" / f"{name}.{ext}").stat().st_size > 0, (name, ext)
        table = pd.read_csv(results / "tables" / f"{name}.csv")
        ours = table[(table["status"] == "ok") & table["model"].str.startswith("FlashRNA")]
        assert len(ours) > 0, f"{name}: no FlashRNA row of this run"
        assert all(finite(v) for v in ours["mean"]), f"{name}:\n{ours}"
        for row in ours.itertuples():
            task = f"{row.task} " if "task" in table.columns else ""
            numbers[f"{name} {task}{row.model} {row.metric}"] = float(row.mean)
    for name, exts in (("figure1", ("png", "pdf")), ("figure2", ("png", "pdf", "csv"))):
        for ext in exts:
            assert (results / "figures" / f"{name}.{ext}").stat().st_size > 0, (name, ext)
    figure2 = pd.read_csv(results / "figures" / "figure2.csv")
    ran = figure2[(figure2["source"] == "this run") & (figure2["n"] > 0)]
    assert {"FlashRNA", "FlashRNA distilled"} <= set(ran["series"])
    assert all(finite(v) for v in ran["mean"])
    for row in ran.itertuples():
        numbers[f"figure2 {row.series} {int(row.size)}"] = float(row.mean)
    compare = yaml.safe_load((results / "bench" / "compare.json").read_text())
    speed = compare["ratios"]["forward_examples_per_s"]
    assert finite(speed)
    numbers["figure1 inference ratio"] = float(speed)
    return numbers


@pytest.mark.slow
def test_demo_runs_end_to_end_then_does_nothing(tmp_path):
    """The README's demo command from a fresh working directory: every table and figure with
    finite values and real signal, then a rerun with nothing to do, then the HTML report.
    Jobs are single-threaded (config/demo.yaml), so --cores 2 runs two at a time."""
    started = time.monotonic()
    run = run_snakemake(tmp_path, "--configfile", "config/demo.yaml", "--cores", "2", timeout=1500)
    seconds = time.monotonic() - started
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-6000:]
    results = tmp_path / "results" / "demo"
    numbers = check_demo_outputs(results)
    # Trained, not just run: the planted grammar is learned (an untrained model scores about 0
    # on every assay, and its eQTL rho is about 0).
    message = f"{seconds:.0f} s; {numbers}"
    assert numbers["table1 FlashRNA DNase"] > 0.4, message
    assert numbers["table1 FlashRNA ATAC"] > 0.3, message
    assert numbers["table1 FlashRNA RNA"] > 0.1, message
    assert numbers["figure2 FlashRNA 4"] > 0.2, message  # the ensemble's eQTL Spearman
    assert numbers["table3 FlashRNA head-only ChIP-seq"] > 0.2, message

    again = run_snakemake(tmp_path, "--configfile", "config/demo.yaml", "--cores", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Nothing to be done" in again.stdout + again.stderr, again.stderr[-3000:]

    # The README's report command: the report lands beside the run's results.
    report = run_snakemake(
        tmp_path, "--configfile", "config/demo.yaml", "--report", "results/demo/report.html"
    )
    assert report.returncode == 0, report.stderr[-3000:]
    html = (results / "report.html").read_text(errors="replace")
    for name in ("table1.html", "table4.html", "figure1.png", "figure2.png"):
        assert name in html
