"""`flashrna bench compare` (Figure 1): the memory-limit search, and a small CPU run of both
models writing the JSON and the figure (structure only: no timing assertions)."""

from __future__ import annotations

import json

import pytest
import torch

from flashrna.cli import main
from flashrna.figure1 import largest_fitting, ratios, runs


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


def test_runs_tells_out_of_memory_from_other_errors():
    def oom():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def broken():
        raise RuntimeError("shape mismatch")

    cpu = torch.device("cpu")
    assert runs(lambda: None, cpu) is True
    assert runs(oom, cpu) is False
    with pytest.raises(RuntimeError, match="shape mismatch"):
        runs(broken, cpu)


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


def test_compare_on_cpu(tmp_path):
    pytest.importorskip(
        "borzoi_pytorch", reason="borzoi-pytorch (the 'baselines' extra) is missing"
    )
    output, figure = tmp_path / "compare.json", tmp_path / "compare.png"
    argv = ["bench", "compare", "--device", "cpu", "--dim", "64", "--layers", "1"]
    argv += ["--heads", "2", "--length", "512", "--steps", "1", "--warmup", "0", "--repeats", "2"]
    argv += ["--search-memory", "--max-batch", "2", "--max-length", "1024", "--clock", "cpu"]
    argv += ["--length-step", "512", "--output", str(output), "--figure", str(figure)]
    assert main(argv) == 0
    result = json.loads(output.read_text())
    settings = result["settings"]
    assert (settings["dim"], settings["length"], settings["precision"]) == (64, 512, "fp32")
    assert settings["tracks"] == 7611 and settings["paper_size"] is False
    assert settings["clock"] == "cpu" and settings["repeats"] == 2
    for name in ("flashrna", "borzoi"):
        model = result["models"][name]
        assert model["parameters"] > 0
        assert model["forward_examples_per_s"] > 0 and model["train_examples_per_s"] > 0
        # Bounded search on the CPU: both limits reached, so they are lower bounds.
        assert (model["max_train_batch"], model["max_train_batch_bounded"]) == (2, True)
        assert (model["max_inference_length"], model["max_inference_length_bounded"]) == (
            1024,
            True,
        )
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
    assert result["ratios"]["max_train_batch"] is None
    assert result["paper_ratios"]["forward_examples_per_s"] == 6.1
    assert figure.stat().st_size > 10_000 and figure.with_suffix(".pdf").stat().st_size > 5_000


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
