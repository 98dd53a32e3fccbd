"""``flashrna bench <what>``: speed and memory benchmarks, printed and written as JSON.

- ``model``: forward and forward+backward throughput (examples/s) and peak memory of a preset at
  an input length on the current device.
- ``data``: TFRecord conversion MB/s and loader examples/s at full Borzoi size
  (:func:`flashrna.data.register_bench`).
- ``compare``: FlashRNA against Borzoi from borzoi-pytorch, Figure 1
  (:func:`flashrna.figure1.register_compare`).
- ``variants``: score-variants' variants/s (:func:`flashrna.variants.register_bench`).

Benchmarks are never run as timed tests; measured numbers are recorded under ``bench/``.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import resource
import time
from collections.abc import Callable
from typing import Any

import torch

from flashrna.utils import FlashRNAError, resolve_device, write_json

BENCHMARKS = {
    "model": ("flashrna.bench:register_model_bench", "model throughput and peak memory"),
    "data": (
        "flashrna.data:register_bench",
        "conversion MB/s and loader examples/s at full Borzoi size",
    ),
    "compare": (
        "flashrna.figure1:register_compare",
        "FlashRNA against Borzoi on this device (Figure 1)",
    ),
    "variants": ("flashrna.variants:register_bench", "score-variants variants/s"),
}


def register_bench(parser: argparse.ArgumentParser) -> None:
    subparsers = parser.add_subparsers(
        dest="benchmark", required=True, metavar="{model,data,compare,variants}"
    )
    for name, (target, text) in BENCHMARKS.items():
        sub = subparsers.add_parser(
            name,
            help=text,
            description=text[0].upper() + text[1:] + ".",
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        module, function = target.split(":")
        getattr(importlib.import_module(module), function)(sub)


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak allocated GPU memory since the last reset; on the CPU, the process's peak resident
    set size (a high-water mark over the whole process, so read it as an upper bound)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def time_steps(
    step: Callable[[], Any],
    device: torch.device,
    warmup: int,
    steps: int,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Seconds per call of ``step`` after ``warmup`` untimed calls, by ``clock`` (wall time;
    ``time.process_time`` counts this process's CPU seconds, which load from other processes on
    a shared machine does not inflate)."""
    for _ in range(warmup):
        step()
    synchronize(device)
    start = clock()
    for _ in range(steps):
        step()
    synchronize(device)
    return (clock() - start) / steps


def benchmark_module(
    model: torch.nn.Module,
    forward: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
    sequence: torch.Tensor,
    device: torch.device,
    *,
    autocast: bool,
    warmup: int,
    steps: int,
    clock: Callable[[], float] = time.perf_counter,
    train: bool = True,
) -> dict[str, float | int | None]:
    """Forward (eval, no grad) and, unless ``train`` is false, forward+backward (train)
    throughput of ``forward(model, x)`` on a batch ``sequence`` (B, L), with peak memory of each
    phase (``clock``: as :func:`time_steps`)."""
    batch = sequence.shape[0]
    model.to(device)

    def run_forward() -> None:
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=autocast):
            forward(model, sequence)

    def run_train() -> None:
        with torch.autocast(device.type, torch.bfloat16, enabled=autocast):
            loss = forward(model, sequence).float().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    model.eval()
    reset_peak_memory(device)
    forward_seconds = time_steps(run_forward, device, warmup, steps, clock)
    forward_memory = peak_memory_bytes(device)
    result = {
        "forward_examples_per_s": batch / forward_seconds,
        "train_examples_per_s": None,
        "forward_peak_memory_bytes": forward_memory,
        "train_peak_memory_bytes": None,
    }
    if train:
        model.train()
        reset_peak_memory(device)
        train_seconds = time_steps(run_train, device, warmup, steps, clock)
        result["train_examples_per_s"] = batch / train_seconds
        result["train_peak_memory_bytes"] = peak_memory_bytes(device)
    return result


def register_model_bench(parser: argparse.ArgumentParser) -> None:
    from flashrna.model import ATTENTION_BACKENDS, PRESETS

    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    parser.add_argument("--length", type=int, default=524_288, help="input bp (multiple of 128)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10, help="timed iterations per phase")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations per phase")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--attention-backend", default="auto", choices=ATTENTION_BACKENDS)
    parser.add_argument(
        "--no-autocast",
        action="store_true",
        help="run fp32 on CUDA too (bf16 autocast is the default there)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model first")
    parser.add_argument(
        "--forward-only",
        action="store_true",
        help="skip forward+backward (e.g. long inputs on a CPU, where training would not fit)",
    )
    parser.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--output", help="write the result as JSON here")
    parser.set_defaults(run=_run_model_bench)


def _run_model_bench(args: argparse.Namespace) -> None:
    from flashrna.model import TOKEN_SIZE, build_model

    if args.length % TOKEN_SIZE:
        raise FlashRNAError(f"--length {args.length} is not a multiple of {TOKEN_SIZE}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = build_model(args.preset, attention_backend=args.attention_backend)
    head = next(iter(model.config.heads))
    runnable = torch.compile(model) if args.compile else model
    sequence = torch.randint(0, 4, (args.batch_size, args.length), device=device)
    autocast = device.type == "cuda" and not args.no_autocast
    numbers = benchmark_module(
        runnable,
        lambda m, x: m(x, head),
        sequence,
        device,
        autocast=autocast,
        warmup=args.warmup,
        steps=args.steps,
        train=not args.forward_only,
    )
    result = {
        "benchmark": "model",
        "device": device_description(device),
        "torch": torch.__version__,
        "preset": args.preset,
        "parameters": sum(p.numel() for p in model.parameters()),
        "length": args.length,
        "batch_size": args.batch_size,
        "precision": "bf16 autocast" if autocast else "fp32",
        "attention_backend": args.attention_backend,
        "compiled": args.compile,
        **numbers,
    }
    print(
        f"{result['device']}: preset {args.preset}, {args.length:,} bp, batch "
        f"{args.batch_size}, {result['precision']}"
    )
    print(
        f"  forward          {numbers['forward_examples_per_s']:10.3f} examples/s   peak "
        f"{numbers['forward_peak_memory_bytes'] / 2**30:.2f} GiB"
    )
    if numbers["train_examples_per_s"] is not None:
        print(
            f"  forward+backward {numbers['train_examples_per_s']:10.3f} examples/s   peak "
            f"{numbers['train_peak_memory_bytes'] / 2**30:.2f} GiB"
        )
    if args.output:
        write_json(args.output, result)
