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


def project_extra(project: dict, extra: str) -> set[str]:
    """Package names an extra installs, the extras it names of this project included."""
    names = set()
    for spec in project["optional-dependencies"][extra]:
        nested = re.fullmatch(r"flashrna\[([\w,\s-]+)\]", spec.strip())
        if nested:
            for name in nested[1].split(","):
                names |= project_extra(project, name.strip())
        else:
            names.add(requirement(spec)[0])
    return names


def test_the_workflow_extra_installs_what_the_job_envs_hold():
    """`pip install -e ".[workflow]"` (the README's demo command) gives every package a job env
    of workflow/envs/ installs (PyTorch, Python and CUDA aside): the demo runs the same rules
    without conda (a missing borzoi-pytorch once stopped it at Figure 1)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    installed = {requirement(d)[0] for d in project["dependencies"]}
    installed |= project_extra(project, "workflow")
    for env_file in sorted((ROOT / "workflow" / "envs").glob("*.yaml")):
        env = yaml.safe_load(env_file.read_text())
        for entry in env["dependencies"]:
            for spec in entry["pip"] if isinstance(entry, dict) else [entry]:
                name = requirement(re.split(r"[=<>]", spec)[0])[0]
                if name in {"python", "pip", "pytorch-gpu", "cuda-version"}:
                    continue
                assert name in installed, f"{env_file.name}: {name} is not in [workflow]"


def readme_commands() -> list[str]:
    """The command lines of the README's "The two commands" section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_commands_verbatim():
    commands = readme_commands()
    assert len(commands) == 2 and "snakemake" in commands[0] and "pytest" in commands[1]
    script = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m venv" in script  # a fresh virtualenv, nothing preinstalled by hand
    lines = [line.strip() for line in script.splitlines()]
    for command in commands:
        assert f"({command})" in lines, f".ci/run does not run the README's `{command}`"
