"""The Snakemake workflow: config schema, the paper DAG (dry run), lint and formatting, and the
demo run end to end from a fresh working directory (every table and figure, a no-op rerun, the
HTML report)."""

from __future__ import annotations

import copy
import math
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import fixture_path

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


def option_sections(node: dict, schema: dict, path: str = ""):
    """(dotted path, section) of every schema section that maps keys to a step's options."""
    if "x-options" in node:
        yield path, node
    for name, child in node.get("properties", {}).items():
        yield from option_sections(child, schema, f"{path}.{name}".lstrip("."))


def section_properties(node: dict, schema: dict) -> set[str]:
    """The keys a section allows, its own and those of the definition it refers to."""
    keys = set(node.get("properties", {}))
    if "$ref" in node:
        keys |= section_properties(schema["$defs"][node["$ref"].rsplit("/", 1)[1]], schema)
    return keys


def step_flags(step: str) -> set[str]:
    """Option strings of `flashrna <step>` (a step and its sub-step: "finetune chip")."""
    import argparse

    from flashrna.cli import build_step_parser

    name, *sub = step.split()
    parser = build_step_parser(name)
    for part in sub:
        (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[part]
    return {flag for action in parser._actions for flag in action.option_strings}


def test_schema_options_are_the_steps_options():
    """Config declared once: every key a schema section passes to a step (`x-options`, what the
    rules' step_options emits) is an option of that step, and every other key of the section is
    declared the workflow's own (`x-workflow-keys`), so no key is silently ignored."""
    schema = yaml.safe_load(SCHEMA.read_text())
    sections = dict(option_sections(schema, schema))
    assert {"evaluate.eqtl", "evaluate.tracks", "finetune.te", "report.compare"} <= set(sections)
    for path, node in sections.items():
        allowed = section_properties(node, schema)
        passed = set()
        for step, keys in node["x-options"].items():
            flags = step_flags(step)
            for key in keys:
                assert key in allowed, f"{path}.{key}: not a key of the section"
                assert f"--{key.replace('_', '-')}" in flags, (
                    f"{path}.{key}: not an option of {step}"
                )
            passed |= set(keys)
        own = set(node.get("x-workflow-keys", []))
        assert allowed - passed == own, f"{path}: keys neither passed nor the workflow's own"


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


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("stepz", 10, "config train.config.train: unknown key 'stepz'"),
        ("schedule", "bad", "config train.config.train.schedule: expected one of cosine"),
    ],
)
def test_a_bad_training_config_stops_before_any_job(tmp_path, key, value, message):
    config = load("demo.yaml")
    config["train"]["config"]["train"][key] = value
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(config))
    result = run_snakemake(tmp_path, "-n", "--cores", "1", "--configfile", "broken.yaml")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert message in output and "config config" not in output


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
    train = "flashrna train --restart-finished --config results/paper/configs/train.yaml --seed 15"
    assert train in result.stdout


def test_published_weights_join_tables_1_2_and_figure_2(tmp_path):
    checkpoint = str(fixture_path("flashrna-official/official-tiny.ckpt"))
    config = load("config.yaml")
    config["published"] = {"replicates": [checkpoint, checkpoint], "distilled": checkpoint}
    (tmp_path / "published.yaml").write_text(yaml.safe_dump(config))
    result = run_snakemake(tmp_path, "-n", "-p", "--cores", "1", "--configfile", "published.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    replicates = config["train"]["replicates"]
    eqtl_models = replicates + len([n for n in config["ensemble"]["sizes"] if n > 1]) + 1
    assert counts["import_published"] == 3  # two replicates and the distilled model
    assert counts["evaluate_tracks"] == replicates + 2  # Table 1
    # Table 2 and Figure 2: each released model, their ensemble, the distilled one.
    assert counts["score_variants"] == counts["eqtl_benchmark"] == eqtl_models + 4
    out = result.stdout
    assert f"flashrna import-model {checkpoint} --out results/paper/models/released1/model" in out
    shared = "--model results/paper/models/released0/model --shared-tracks --head human"
    assert f"flashrna evaluate-tracks {shared}" in out
    ensemble = "--model results/paper/models/released0/model --model results/paper/models/released1"
    assert f"flashrna score-variants {ensemble}" in out
    assert "--released released0 released1" in out
    assert "--released-ensembles released-ensemble2 --released-distilled released-distilled" in out


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


def motif_enrichment(attributions: Path) -> float:
    """Mean |input x gradient| on the demo's planted motifs (either strand) over that elsewhere,
    in the first target of an ``attribute`` run's ``attributions.h5``."""
    import h5py
    import numpy as np

    from flashrna.demo import ALL_MOTIFS, find_sites, revcomp
    from flashrna.genome import decode_sequence

    with h5py.File(attributions) as arrays:
        sequence = decode_sequence(arrays["sequence"][0])
        score = np.abs(arrays["score"][0])
    on_motif = np.zeros(len(sequence), dtype=bool)
    for motif in ALL_MOTIFS.values():
        for text in {motif, revcomp(motif)}:
            for position in find_sites(sequence, text):
                on_motif[position : position + len(text)] = True
    return float(score[on_motif].mean() / score[~on_motif].mean())


def check_flashzoi_signal(results: Path, scratch: Path) -> None:
    """Flashzoi's benchmarks and attributions find the demo's planted signal with its trained
    models (chance: AUROC 0.5, AUPRC the positive rate, r 0) and not with an untrained model of
    the same architecture, run through the same library functions on the same data."""
    from helpers import save_tiny_model

    from flashrna.cli import main
    from flashrna.evaluate.crispri import crispri_benchmark
    from flashrna.evaluate.prioritisation import eqtl_prioritisation
    from flashrna.tracks import TrackTable

    table = pd.read_csv(results / "tables" / "flashzoi_benchmarks.csv")
    ensemble = table[table["model"] == "FlashRNA ensemble 4"].set_index("metric")["mean"]
    assert ensemble["eQTL AUROC"] > 0.7, ensemble
    assert ensemble["FlowFISH r promoter"] > 0.5, ensemble
    assert (results / "figures" / "flashzoi_benchmarks.png").stat().st_size > 0
    crispri = yaml.safe_load((results / "eval/crispri/ensemble4/summary.json").read_text())
    assert crispri["auprc"] > 1.5 * crispri["positive_rate"], crispri
    trained = motif_enrichment(results / "attribution/ensemble4/attributions.h5")
    assert trained > 5, trained

    data = results / "data"
    fasta, gtf = data / "genome/hg38.ml.fa", data / "genes/gencode41_basic_nort.gtf"
    tracks = TrackTable.read(results / "models/member0/model/targets-human.txt")
    model = [save_tiny_model(scratch / "model", tracks, seed=0)]
    geometry = {"length": 16_384, "crop_bins": 128, "device": "cpu"}
    untrained = eqtl_prioritisation(
        data / "qtl/eqtl", model, fasta, scratch / "prio", rc=False, bootstrap=20, **geometry
    )
    assert abs(untrained["auroc_mean"] - 0.5) < 0.15 < ensemble["eQTL AUROC"] - 0.5, untrained
    pairs = data / "crispri/EPCrisprBenchmark_ensemble_data_GRCh38.tsv.gz"
    untrained = crispri_benchmark(
        pairs, model, fasta, gtf, scratch / "crispri", description="blood", window=500,
        bootstrap=20, **geometry
    )  # fmt: skip
    assert untrained["auprc"] < crispri["auprc"], (untrained, crispri)
    argv = ["attribute", "--model", str(model[0]), "--fasta", str(fasta), "--gtf", str(gtf)]
    argv += ["--genes", "DEMO5", "--assays", "RNA", "--description", "blood", "--device", "cpu"]
    argv += ["--length", "16384", "--crop-bins", "128", "--out", str(scratch / "attribution")]
    assert main(argv) == 0
    assert motif_enrichment(scratch / "attribution/attributions.h5") < trained / 5


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


def test_paths_with_spaces_and_shell_syntax_are_quoted(tmp_path):
    """Config paths reach the jobs as single arguments: a data folder with a space and a demo
    mirror whose name holds `$(...)` download into place, and nothing runs the `$(...)`."""
    config = load("demo.yaml")
    config["data_dir"] = "data dir"
    config["results_dir"] = "results/with space"
    config["download"]["source_root"] = "mirror $(touch PWNED)"
    (tmp_path / "odd.yaml").write_text(yaml.safe_dump(config))
    target = "data dir/borzoi/hg38/sequences.bed"
    run = run_snakemake(tmp_path, "--configfile", "odd.yaml", "--cores", "1", target)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (tmp_path / target).stat().st_size > 0
    assert (tmp_path / "mirror $(touch PWNED)" / ".flashrna-demo").is_file()
    assert not list(tmp_path.rglob("PWNED")), "a config value was run as a command"
    assert not (tmp_path / "data").exists() and not (tmp_path / "dir").exists()  # no stray files


def test_dry_run_writes_nothing(tmp_path):
    """`snakemake -n` checks the config and plans the DAG without writing a file (the training
    configs are written by the run_config rule, not while the Snakefile is parsed)."""
    run = run_snakemake(tmp_path, "--configfile", "config/demo.yaml", "-n")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "run_config" in run.stdout
    written = [p for p in tmp_path.rglob("*") if ".snakemake" not in p.parts and p.name != "config"]
    assert written == [], written


@pytest.mark.slow
def test_demo_runs_end_to_end_then_does_nothing(tmp_path):
    """The README's demo command from a fresh working directory: every table and figure with
    finite values and real signal, then a rerun with nothing to do, then the HTML report.
    Jobs are single-threaded (config/demo.yaml), so --cores 2 runs two at a time.

    `.ci/run` runs the README's demo command in the clean clone first and names that clone in
    FLASHRNA_DEMO_DONE: then this test checks that run's outputs, rerun and report instead of
    running the demo a second time."""
    done = os.environ.get("FLASHRNA_DEMO_DONE")
    if done:
        tmp_path, seconds = Path(done), float("nan")
    else:
        started = time.monotonic()
        argv = ["--configfile", "config/demo.yaml", "--cores", "2"]
        run = run_snakemake(tmp_path, *argv, timeout=1500)
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
    check_flashzoi_signal(results, tmp_path / "untrained")

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


def test_each_human_tfrecord_is_read_once_for_both_shard_sets(tmp_path):
    """One job per human TFRecord writes its training shard and its ChIP shard (one read of
    the file); conversions form the group the SLURM profile submits in batches."""
    manifest = (ROOT / "config" / "demo-manifest.tsv").read_text()
    human = len(re.findall(r"\tborzoi/hg38/tfrecords/[^\t]+\.tfr\t", manifest))
    mouse = len(re.findall(r"\tborzoi/mm10/tfrecords/[^\t]+\.tfr\t", manifest))
    argv = ["-n", "-p", "--cores", "1", "--configfile", "config/demo.yaml"]
    result = run_snakemake(tmp_path, *argv, "--group-components", "convert=8")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    assert (counts["convert_human"], counts["convert"]) == (human, mouse) and human > 0
    jobs = re.findall(r"^Shell command: flashrna convert .*$", result.stdout, re.MULTILINE)
    both = [j for j in jobs if "--extra-out results/demo/chip_shards/hg38/" in j]
    assert len(both) == human and all("--out results/demo/shards/hg38/" in j for j in both)
    profile = yaml.safe_load((ROOT / "workflow/profiles/slurm/config.yaml").read_text())
    assert any(g.startswith("convert=") for g in profile["group-components"])
