"""`flashrna bench`: Figure 1's memory-limit search and probe outcomes, a small CPU run of both
models writing the JSON (rewritten as results come in) and the figure, `bench model`, and the
dry run of the prepared GPU script (structure only: no timing assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flashrna.bench import compare as compare_module
from flashrna.bench.compare import largest_fitting, probe, ratios, timed_models
from flashrna.bench.timing import time_steps
from flashrna.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("limit", [1, 7, 64, 100])
@pytest.mark.parametrize("largest", [0, 1, 2, 5, 37, 64, 99, 1000])
def test_largest_fitting_matches_brute_force(largest, limit):
    probes = []

    def fits(n: int) -> bool:
        probes.append(n)
        return n <= largest

    value, bounded = largest_fitting(fits, limit)
    assert value == min(largest, limit)
    assert bounded == (largest >= limit)
    # Doubling then bisection: about 2 log2(limit) probes, never a size twice.
    assert len(probes) == len(set(probes)) <= 2 * max(1, limit).bit_length() + 1


def test_probe_records_every_outcome():
    def oom():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def broken():
        raise RuntimeError("shape mismatch")

    cpu = torch.device("cpu")
    assert probe(lambda: None, cpu)["outcome"] == "fits"
    assert probe(lambda: None, cpu)["message"] is None
    assert probe(oom, cpu)["outcome"] == "out of memory"
    failed = probe(broken, cpu)  # recorded, not raised: a long search goes on
    assert failed["outcome"] == "error" and failed["message"] == "RuntimeError: shape mismatch"
    assert failed["seconds"] >= 0


def test_timed_models_name_borzoi_precisions():
    assert timed_models(["fp32"]) == {"borzoi": ("borzoi", "fp32"), "flashrna": ("flashrna", None)}
    entries = timed_models(["bf16", "fp32"])
    assert entries["borzoi"] == ("borzoi", "bf16") and entries["borzoi-fp32"] == ("borzoi", "fp32")
    with pytest.raises(Exception, match="each once"):
        timed_models(["fp32", "fp32"])


def test_time_steps_returns_each_step():
    calls = []
    ticks = iter(range(100))
    times = time_steps(
        lambda: calls.append(1), torch.device("cpu"), 2, 3, clock=lambda: next(ticks) ** 2
    )
    assert len(calls) == 5
    assert times == [1, 5, 9]  # (t+1)^2 - t^2 for t = 0, 2, 4


def test_ratio_is_unknown_at_a_search_bound():
    models = {
        "flashrna": {"forward_examples_per_s": 3.0, "max_train_batch": 8},
        "borzoi": {"forward_examples_per_s": 2.0, "max_train_batch": 2},
    }
    assert ratios(models)["forward_examples_per_s"] == 1.5
    assert ratios(models)["max_train_batch"] == 4.0
    models["flashrna"]["max_train_batch_bounded"] = True
    assert ratios(models)["max_train_batch"] is None
    assert ratios(models)["max_inference_length"] is None


def test_compare_on_cpu(tmp_path, monkeypatch):
    pytest.importorskip(
        "borzoi_pytorch", reason="borzoi-pytorch (the 'baselines' extra) is missing"
    )
    output, figure = tmp_path / "compare.json", tmp_path / "compare.png"
    written = []
    real_write = compare_module.write_json
    monkeypatch.setattr(
        compare_module,
        "write_json",
        lambda path, obj: written.append(json.loads(json.dumps(obj))) or real_write(path, obj),
    )
    argv = ["bench", "compare", "--device", "cpu", "--dim", "64", "--layers", "1"]
    argv += ["--heads", "2", "--length", "512", "--steps", "1", "--warmup", "0", "--repeats", "2"]
    argv += ["--search-memory", "--max-batch", "2", "--max-length", "1024", "--clock", "cpu"]
    argv += ["--length-step", "512", "--output", str(output), "--figure", str(figure)]
    assert main(argv) == 0
    result = json.loads(output.read_text())
    settings = result["settings"]
    assert (settings["dim"], settings["length"], settings["precision"]) == (64, 512, "fp32")
    assert settings["borzoi_precisions"] == ["fp32"] and settings["train"] is True
    assert settings["tracks"] == 7611 and settings["paper_size"] is False
    assert settings["clock"] == "cpu" and settings["repeats"] == 2
    assert result["status"] == "finished"
    for name in ("flashrna", "borzoi"):
        model = result["models"][name]
        assert model["parameters"] > 0 and model["precision"] == "fp32"
        assert model["forward_examples_per_s"] > 0 and model["train_examples_per_s"] > 0
        # Bounded search on the CPU: both limits reached, so they are lower bounds.
        assert (model["max_train_batch"], model["max_train_batch_bounded"]) == (2, True)
        assert (model["max_inference_length"], model["max_inference_length_bounded"]) == (
            1024,
            True,
        )
    # Every probe is recorded with its outcome: batch 1, 2 and length 512, 1024 per model.
    probes = [(p["model"], p["search"], p["size"], p["outcome"]) for p in result["probes"]]
    assert probes == [
        (m, search, size, "fits")
        for m in ("borzoi", "flashrna")
        for search, size in (
            ("train batch", 1),
            ("train batch", 2),
            ("inference length", 512),
            ("inference length", 1024),
        )
    ]
    # Two rounds, the second with FlashRNA first; each model keeps its best.
    assert [(r["round"], r["model"]) for r in result["rounds"]] == [
        (1, "borzoi"),
        (1, "flashrna"),
        (2, "flashrna"),
        (2, "borzoi"),
    ]
    flash, borzoi = result["models"]["flashrna"], result["models"]["borzoi"]
    best = max(r["train_examples_per_s"] for r in result["rounds"] if r["model"] == "borzoi")
    assert borzoi["train_examples_per_s"] == best
    for metric in ("forward_examples_per_s", "train_examples_per_s"):
        assert result["ratios"][metric] == pytest.approx(flash[metric] / borzoi[metric])
    assert result["ratios_by_baseline"] == {"borzoi": result["ratios"]}
    assert result["ratios"]["max_train_batch"] is None
    assert result["paper_ratios"]["forward_examples_per_s"] == 6.1
    assert figure.stat().st_size > 10_000 and figure.with_suffix(".pdf").stat().st_size > 5_000
    # Written as the results came: after each of the 4 rounds, once timed, after each of the 8
    # probes, and finished; the first write already held the first round.
    assert len(written) == 4 + 1 + 8 + 1
    assert [len(w["rounds"]) for w in written[:4]] == [1, 2, 3, 4]
    assert [len(w["probes"]) for w in written[5:13]] == list(range(1, 9))
    assert [w["status"] for w in written] == ["running"] * 13 + ["finished"]


def test_compare_forward_only_with_two_borzoi_precisions(tmp_path):
    """The two Borzoi entries and their ratios (fp32 twice would be refused, so bf16 runs:
    emulated on a CPU without it, hence the tiny size)."""
    pytest.importorskip("borzoi_pytorch", reason="borzoi-pytorch is missing")
    output = tmp_path / "compare.json"
    argv = ["bench", "compare", "--device", "cpu", "--dim", "32", "--layers", "1", "--heads", "1"]
    argv += ["--length", "256", "--steps", "1", "--warmup", "0", "--repeats", "1"]
    argv += ["--forward-only", "--precision", "fp32", "--borzoi-precision", "fp32", "bf16"]
    assert main([*argv, "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    assert result["settings"]["borzoi_precisions"] == ["fp32", "bf16 autocast"]
    assert result["models"]["borzoi-bf16"]["precision"] == "bf16 autocast"
    assert set(result["ratios_by_baseline"]) == {"borzoi", "borzoi-bf16"}
    for baseline, by_metric in result["ratios_by_baseline"].items():
        expected = (
            result["models"]["flashrna"]["forward_examples_per_s"]
            / result["models"][baseline]["forward_examples_per_s"]
        )
        assert by_metric["forward_examples_per_s"] == pytest.approx(expected)
        assert by_metric["train_examples_per_s"] is None
    assert all(r["train_examples_per_s"] is None for r in result["rounds"])


def test_compare_rejects_a_bad_length(tmp_path, capsys):
    argv = ["bench", "compare", "--device", "cpu", "--length", "1000", "--dim", "64"]
    assert main(argv) == 1
    assert "not a multiple of 128" in capsys.readouterr().err


def test_bench_model_exits_cleanly(tmp_path):
    """`bench model` (the helpers compare reuses) runs and writes its JSON."""
    output = tmp_path / "model.json"
    argv = ["bench", "model", "--preset", "tiny", "--length", "512", "--device", "cpu"]
    assert main([*argv, "--steps", "1", "--warmup", "0", "--output", str(output)]) == 0
    assert json.loads(output.read_text())["forward_examples_per_s"] > 0


def test_bench_model_forward_only_skips_training(tmp_path):
    output = tmp_path / "model.json"
    argv = ["bench", "model", "--preset", "tiny", "--length", "512", "--device", "cpu"]
    argv += ["--steps", "1", "--warmup", "0", "--forward-only", "--output", str(output)]
    assert main(argv) == 0
    result = json.loads(output.read_text())
    assert result["forward_examples_per_s"] > 0
    assert result["train_examples_per_s"] is None and result["train_peak_memory_bytes"] is None


@pytest.mark.slow
def test_gpu_script_dry_run(tmp_path):
    """bench/gpu.sh's every stage at tiny sizes on the CPU: each writes its JSON, none fails,
    and the summary names them all."""
    pytest.importorskip("borzoi_pytorch", reason="borzoi-pytorch is missing")
    completed = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu.sh"), "--dry-run", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    for stage in ("ceilings", "train", "inference", "longest", "compare"):
        result = json.loads((tmp_path / f"gpu-{stage}.json").read_text())
        assert "error" not in result, (stage, result.get("error"))
        assert result["dry_run"] is True
    train = json.loads((tmp_path / "gpu-train.json").read_text())
    assert [b["batch_size"] for b in train["batches"]] == [1, 2]
    assert all(
        b["peak_memory_bytes"] > 0 and b["estimated_memory_bytes"] > 0 for b in train["batches"]
    )
    longest = json.loads((tmp_path / "gpu-longest.json").read_text())
    assert [p["outcome"] for p in longest["probes"]] == ["fits", "fits"]
    assert longest["longest_fitting"] == 16384
    summary = (tmp_path / "gpu-summary.md").read_text()
    assert all(f"| {stage} |" in summary for stage in ("ceilings", "train", "compare"))
