"""The conda envs of the workflow's jobs (workflow/envs/) hold what each job imports: the main env
stays in step with the package's own dependencies (pyproject.toml), and `snakemake --use-conda`
runs the package from the checkout, so a dependency missing from an env, or an older minimum
there, would break only on a cluster."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch-gpu"}  # conda-forge's CUDA build of PyTorch


def requirement(spec: str) -> tuple[str, str]:
    """``"pyBigWig>=0.3.22"`` -> ``("pybigwig", ">=0.3.22")``."""
    name, bound = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", spec.strip()).groups()
    return name.lower(), bound.split(",")[0].strip()


def test_job_env_has_every_package_dependency_at_the_same_minimum():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "workflow" / "envs" / "flashrna.yaml").read_text())
    conda = dict(requirement(d) for d in env["dependencies"] if isinstance(d, str))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    available = conda | dict(requirement(d) for d in pip)

    wanted = [*project["dependencies"], *project["optional-dependencies"]["baselines"]]
    for name, bound in map(requirement, wanted):
        conda_name = CONDA_NAMES.get(name, name)
        assert conda_name in available, (
            f"workflow/envs/flashrna.yaml lacks {conda_name} ({name}{bound})"
        )
        found = available[conda_name]
        assert found == bound, f"{conda_name}: env {found}, pyproject {bound}"


def test_parsing_the_workflow_imports_no_pytorch():
    """Snakemake parses the DAG on a login node or in a small env: the package modules the rule
    files import (training config checks, manifests) do not pull in PyTorch."""
    import subprocess
    import sys

    imported = set()
    for path in (ROOT / "workflow").rglob("*.smk"):
        imported |= set(re.findall(r"^\s*from (flashrna[\w.]*) import", path.read_text(), re.M))
    assert "flashrna.training.config" in imported
    code = (
        "import sys\n"
        + "".join(f"import {name}\n" for name in sorted(imported))
        + "heavy = sorted({'torch', 'scipy', 'matplotlib'} & set(sys.modules))\n"
        + "assert not heavy, heavy\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
