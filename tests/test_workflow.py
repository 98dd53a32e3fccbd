"""The Snakemake workflow: config schema, the paper DAG (dry run), lint and formatting."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

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
    ],
)
def test_schema_rejects_a_broken_copy(change, message):
    from snakemake.exceptions import WorkflowError

    config = load("config.yaml")
    change(config)
    with pytest.raises(WorkflowError, match=message):
        validate(config)


def run_snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    (workdir / "config").symlink_to(ROOT / "config")
    return subprocess.run(
        ["snakemake", "-s", str(SNAKEFILE), "--cores", "1", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:", 1)[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}


def test_paper_dry_run_has_the_papers_jobs(tmp_path):
    config = load("config.yaml")
    result = run_snakemake(tmp_path, "-n", "--configfile", "config/config.yaml")
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
    assert counts["report"] == 6  # tables 1-4, figures 1-2


def test_one_table_is_a_target(tmp_path):
    result = run_snakemake(tmp_path, "table4", "-n", "--configfile", "config/config.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    assert counts["report"] == 1 and "train" in counts and "evaluate_tracks" not in counts


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
