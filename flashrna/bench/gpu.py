"""``flashrna bench gpu``: the stages of ``bench/gpu.sh``, one prepared run on a lent GPU.

Each stage writes ``<out>/gpu-<stage>.json`` (Figure 1's compare rewrites its JSON after every
round and probe) and ``<out>/gpu-summary.md`` is rewritten after every stage, so a run stopped
at its time limit keeps what it measured. A stage that fails records its error and the run goes
on. Stages, in the order they run (the longest last):

- ``ceilings``: a large bf16 matrix product (TFLOP/s on random data) and a device-to-device copy
  (GB/s, bytes read plus written), medians of CUDA-event timings: what the device can do here.
- ``train``: real training steps of the paper model (2,449 human tracks) at 524,288 bp through the
  trainer's own pieces (:class:`flashrna.training.objective.CroppedModel` on the central 6,144
  target bins, :func:`flashrna.training.objective.batch_loss`, gradient clipping, the trainer's
  AdamW) at each batch size: examples/s, peak memory beside
  :func:`flashrna.model.training_memory_estimate`, and MFU (3 x forward FLOPs per example over the
  median step, against the measured matrix-product ceiling and against the datasheet's dense bf16
  rate).
- ``inference``: the paper model predicting one 524,288-bp window (with its reverse complement,
  as :func:`flashrna.model.predict` does) under bf16 autocast: seconds per window, peak memory.
- ``longest``: inference at growing lengths (4,194,304 bp and up, doubling) until one fails,
  each probe's outcome, time, peak memory and the largest tensor created (elements; the
  convolution stages run in pieces, so it should stay far below 2^31).
- ``compare``: Figure 1 at paper size (:func:`flashrna.bench.compare.compare`), Borzoi in bf16
  and fp32, with the memory searches.

``--dry-run`` runs every stage at tiny sizes (a CPU will do) to check the script before a device
is spent on it.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from flashrna.bench.timing import (
    device_description,
    peak_memory_bytes,
    reset_peak_memory,
    time_steps,
)
from flashrna.utils import atomic_file, resolve_device, write_json

log = logging.getLogger(__name__)

STAGES = ("ceilings", "train", "inference", "longest", "compare")
DATASHEET_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, SXM

# Sizes of the real run and of the dry run (tiny, any device).
FULL = {
    "matmul": 8192,
    "copy_bytes": 4 * 2**30,
    "preset": "paper",
    "tracks": 2449,
    "length": 524_288,
    "target_bins": 6144,
    "batches": (4, 8),
    "longest": (4 * 2**20, 8 * 2**20, 16 * 2**20, 32 * 2**20, 64 * 2**20),
    "inference_chunk": None,  # the preset's
    "warmup": 3,
    "steps": 10,
    "compare": {
        "size": {"dim": 1536, "layers": 8, "heads": 8, "length": 524_288, "batch_size": 1},
        "steps": 5,
        "warmup": 2,
        "repeats": 2,
        "max_batch": 64,
        "max_length": 64 * 2**20,
        "length_step": 2**20,
    },
}
DRY_RUN = {
    "matmul": 256,
    "copy_bytes": 2**20,
    "preset": "tiny",
    "tracks": 74,
    "length": 4096,
    "target_bins": 64,
    "batches": (1, 2),
    "longest": (8192, 16384),
    "inference_chunk": 256,
    "warmup": 1,
    "steps": 2,
    "compare": {
        "size": {"dim": 64, "layers": 1, "heads": 2, "length": 1024, "batch_size": 1},
        "steps": 1,
        "warmup": 0,
        "repeats": 1,
        "max_batch": 2,
        "max_length": 2048,
        "length_step": 1024,
    },
}


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operation returns."""

    def __init__(self) -> None:
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(value, torch.Tensor):
                self.elements = max(self.elements, value.numel())
        return out


def _median(values: list[float]) -> float:
    return statistics.median(values)


def ceilings(device: torch.device, sizes: dict[str, Any]) -> dict[str, Any]:
    """bf16 matrix product TFLOP/s and device copy GB/s (read + write), medians."""
    n = sizes["matmul"]
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    matmul = time_steps(lambda: a @ b, device, sizes["warmup"], sizes["steps"])
    source = torch.randn(sizes["copy_bytes"] // 4, device=device)
    target = torch.empty_like(source)
    copy = time_steps(lambda: target.copy_(source), device, sizes["warmup"], sizes["steps"])
    return {
        "matmul_size": n,
        "bf16_matmul_tflops": 2 * n**3 / _median(matmul) / 1e12,
        "copy_bytes": sizes["copy_bytes"],
        "copy_gb_per_s": 2 * sizes["copy_bytes"] / _median(copy) / 1e9,
        "matmul_seconds": matmul,
        "copy_seconds": copy,
    }


def _paper_model(sizes: dict[str, Any], device: torch.device, **overrides: Any):
    from flashrna.model import build_model

    if sizes["inference_chunk"] is not None:
        overrides.setdefault("inference_chunk", sizes["inference_chunk"])
    torch.manual_seed(0)
    heads = {"human": sizes["tracks"]}
    return build_model(sizes["preset"], heads=heads, **overrides).to(device)


def training_step_flops(config, length: int, target_bins: int) -> int:
    """Forward+backward FLOPs of one training example: 3 x the forward's, with the head on the
    ``target_bins`` central bins only (as the trainer runs it)."""
    from flashrna.model import BIN_SIZE, flop_counts

    flops = flop_counts(config, length)
    head = flops["shared_head"] + sum(v for k, v in flops.items() if k.startswith("heads."))
    trunk = flops["total"] - head
    return 3 * int(trunk + head * target_bins / (length // BIN_SIZE))


def training(
    device: torch.device, sizes: dict[str, Any], matmul_tflops: float | None
) -> dict[str, Any]:
    """Training steps at each batch size of ``sizes['batches']`` (module docstring)."""
    from flashrna.model import autocast_dtype, enable_tf32, training_memory_estimate
    from flashrna.training.config import load_config
    from flashrna.training.objective import CroppedModel, batch_loss, build_optimizer

    enable_tf32()
    config = load_config()["train"]
    model = _paper_model(sizes, device)
    optimizer = build_optimizer(model, config)
    runnable = CroppedModel(model)
    bf16 = autocast_dtype("auto", device) is not None
    length, bins, tracks = sizes["length"], sizes["target_bins"], sizes["tracks"]
    flops = training_step_flops(model.config, length, bins)
    datasheet = next(
        (v for k, v in DATASHEET_BF16_FLOPS.items() if k in device_description(device)), None
    )
    results = []
    for batch_size in sizes["batches"]:
        batch = {
            "sequence": torch.randint(0, 4, (batch_size, length), dtype=torch.uint8),
            "targets": torch.rand(batch_size, bins, tracks).half(),
            "crop_start": torch.full((batch_size,), (length // 32 - bins) // 2),
        }

        def step(batch: dict[str, torch.Tensor] = batch) -> None:
            loss = batch_loss(runnable, batch, "human", device, bf16, config["loss_total_weight"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config["clip_grad_norm"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        reset_peak_memory(device)
        seconds = time_steps(step, device, sizes["warmup"], sizes["steps"])
        rate = batch_size * flops / _median(seconds)
        results.append(
            {
                "batch_size": batch_size,
                "examples_per_s": batch_size / _median(seconds),
                "peak_memory_bytes": peak_memory_bytes(device),
                "estimated_memory_bytes": training_memory_estimate(
                    model.config, length, batch_size, bins, bf16=bf16
                ),
                "tflops": rate / 1e12,
                "mfu_vs_matmul_ceiling": rate / (matmul_tflops * 1e12) if matmul_tflops else None,
                "mfu_vs_datasheet": rate / datasheet if datasheet else None,
                "seconds": seconds,
            }
        )
    return {
        "preset": sizes["preset"],
        "tracks": tracks,
        "length": length,
        "target_bins": bins,
        "precision": "bf16 autocast" if bf16 else "fp32",
        "optimizer": f"AdamW ({'fused' if optimizer.defaults.get('fused') else 'not fused'})",
        "flops_per_example": flops,
        "datasheet_bf16_flops": datasheet,
        "batches": results,
    }


def _predict_step(model, sequence: torch.Tensor, device: torch.device) -> Callable[[], Any]:
    """One :func:`flashrna.model.predict` batch: forward + reverse complement, bf16 autocast."""
    from flashrna.model import autocast_dtype, reverse_complement

    dtype = autocast_dtype("auto", device)

    def step() -> torch.Tensor:
        with torch.no_grad(), torch.autocast(device.type, dtype, enabled=dtype is not None):
            return model(torch.cat((sequence, reverse_complement(sequence))), "human")

    return step


def inference(device: torch.device, sizes: dict[str, Any]) -> dict[str, Any]:
    """Seconds per predicted window (forward + reverse complement) and peak memory."""
    from flashrna.model import enable_tf32

    enable_tf32()
    model = _paper_model(sizes, device).eval()
    sequence = torch.randint(0, 4, (1, sizes["length"]), device=device)
    reset_peak_memory(device)
    seconds = time_steps(
        _predict_step(model, sequence, device), device, sizes["warmup"], sizes["steps"]
    )
    return {
        "preset": sizes["preset"],
        "length": sizes["length"],
        "windows_per_s": 1 / _median(seconds),
        "peak_memory_bytes": peak_memory_bytes(device),
        "seconds": seconds,
    }


def longest(
    device: torch.device, sizes: dict[str, Any], record: Callable[[dict], None]
) -> dict[str, Any]:
    """Inference at each length of ``sizes['longest']`` until one fails (module docstring)."""
    from flashrna.bench.compare import probe
    from flashrna.model import enable_tf32

    enable_tf32()
    model = _paper_model(sizes, device).eval()
    probes: list[dict[str, Any]] = []
    for length in sizes["longest"]:
        sequence = torch.randint(0, 4, (1, length), device=device)
        largest = LargestTensor()
        run = _predict_step(model, sequence, device)

        def step(largest: LargestTensor = largest, run: Callable = run) -> None:
            with largest:
                run()

        reset_peak_memory(device)
        outcome = probe(step, device)
        probes.append(
            {
                "length": length,
                **outcome,
                "peak_memory_bytes": peak_memory_bytes(device),
                "largest_tensor_elements": largest.elements,
            }
        )
        record({"probes": probes})
        del sequence
        if outcome["outcome"] != "fits":
            break
    fitting = [p["length"] for p in probes if p["outcome"] == "fits"]
    return {"probes": probes, "longest_fitting": max(fitting, default=0)}


def _borzoi_precisions(device: torch.device) -> tuple[str, ...]:
    """bf16 and fp32; fp32 alone on a CPU that would emulate bf16 (a dry run)."""
    from flashrna.model import cpu_has_native_bf16

    native = device.type == "cuda" or cpu_has_native_bf16()
    return ("bf16", "fp32") if native else ("fp32",)


def run_stages(
    out: str | Path, *, device: str | torch.device = "auto", dry_run: bool = False, stages=STAGES
) -> dict[str, Any]:
    """Run ``stages`` in order, writing each stage's JSON and the summary as they finish."""
    from flashrna.bench.compare import compare

    out = Path(out)
    device = resolve_device(device)
    sizes = DRY_RUN if dry_run else FULL
    results: dict[str, Any] = {}
    header = {"device": device_description(device), "torch": torch.__version__, "dry_run": dry_run}

    def save(stage: str, body: dict[str, Any]) -> None:
        results[stage] = {"stage": stage, **header, **body}
        write_json(out / f"gpu-{stage}.json", results[stage])
        write_summary(out / "gpu-summary.md", results)

    for stage in stages:
        log.info("stage %s", stage)
        began = time.perf_counter()
        try:
            if stage == "ceilings":
                body = ceilings(device, sizes)
            elif stage == "train":
                matmul = results.get("ceilings", {}).get("bf16_matmul_tflops")
                body = training(device, sizes, matmul)
            elif stage == "inference":
                body = inference(device, sizes)
            elif stage == "longest":
                body = longest(device, sizes, lambda partial: save("longest", partial))
            else:
                c = sizes["compare"]
                body = compare(
                    **c["size"],
                    device=device,
                    borzoi_precisions=_borzoi_precisions(device),
                    warmup=c["warmup"],
                    steps=c["steps"],
                    repeats=c["repeats"],
                    search_memory=True,
                    max_batch=c["max_batch"],
                    max_length=c["max_length"],
                    length_step=c["length_step"],
                    output=out / "gpu-compare.json",
                )
        except Exception as err:  # recorded; the next stage still runs
            log.exception("stage %s failed", stage)
            body = {"error": f"{type(err).__name__}: {err}"}
        body["stage_seconds"] = time.perf_counter() - began
        save(stage, body)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def write_summary(path: Path, results: dict[str, Any]) -> None:
    """The headline numbers of the stages run so far, as Markdown."""
    first = next(iter(results.values()))
    lines = [
        f"# GPU run ({'dry run, tiny sizes' if first['dry_run'] else 'bench/gpu.sh'})",
        "",
        f"Device: {first['device']}; torch {first['torch']}.",
        "",
        "| stage | result |",
        "|---|---|",
    ]
    for stage, r in results.items():
        lines.append(f"| {stage} | {_stage_line(stage, r)} |")
    with atomic_file(path) as handle:
        handle.write("\n".join(lines) + "\n")


def _stage_line(stage: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"failed: {r['error']}"
    gib = 2**30
    if stage == "ceilings":
        return (
            f"bf16 matmul {r['matmul_size']}³: {r['bf16_matmul_tflops']:.3g} TFLOP/s; "
            f"copy {r['copy_bytes'] / gib:g} GiB: {r['copy_gb_per_s']:.3g} GB/s"
        )
    if stage == "train":
        return (
            "; ".join(
                f"batch {b['batch_size']}: {b['examples_per_s']:.2f} examples/s, peak "
                f"{b['peak_memory_bytes'] / gib:.1f} GiB (estimate "
                f"{b['estimated_memory_bytes'] / gib:.1f}), {b['tflops']:.3g} TFLOP/s"
                + (
                    f", MFU {b['mfu_vs_datasheet']:.0%} of datasheet"
                    if b["mfu_vs_datasheet"]
                    else ""
                )
                for b in r["batches"]
            )
            + f" ({r['length']:,} bp, {r['optimizer']})"
        )
    if stage == "inference":
        return (
            f"{r['length']:,} bp with reverse complement: {1 / r['windows_per_s']:.3f} s per "
            f"window, peak {r['peak_memory_bytes'] / gib:.1f} GiB"
        )
    if stage == "longest":
        return "; ".join(
            f"{p['length'] / 2**20:g} Mbp: {p['outcome']} ({p['seconds']:.1f} s, peak "
            f"{p['peak_memory_bytes'] / gib:.1f} GiB, largest tensor "
            f"{p['largest_tensor_elements']:,} elements)"
            for p in r["probes"]
        )
    ratios = r.get("ratios_by_baseline", {})
    return (
        "; ".join(
            f"vs {baseline} ({r['models'][baseline]['precision']}): "
            + ", ".join(f"{k} {v:.2f}x" for k, v in by.items() if v is not None)
            for baseline, by in ratios.items()
        )
        + f" (status {r.get('status')})"
    )


def register_gpu_bench(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="bench", help="folder for gpu-*.json and the summary")
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:1, cpu (dry run)")
    parser.add_argument(
        "--stages", nargs="+", choices=STAGES, default=list(STAGES), help="stages to run"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="every stage at tiny sizes (checks the script)"
    )
    parser.set_defaults(run=_run_gpu_bench)


def _run_gpu_bench(args: argparse.Namespace) -> None:
    results = run_stages(args.out, device=args.device, dry_run=args.dry_run, stages=args.stages)
    print((Path(args.out) / "gpu-summary.md").read_text())
    failed = [stage for stage, r in results.items() if "error" in r]
    if failed:
        print(f"stages that failed: {', '.join(failed)} (errors in {args.out}/gpu-*.json)")
