"""Device helpers for the benchmarks: names, synchronisation, peak memory, and timed loops whose
per-call times are medians (CUDA events on a GPU, a host clock elsewhere)."""

from __future__ import annotations

import platform
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


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
) -> list[float]:
    """Seconds of each of ``steps`` calls of ``step`` after ``warmup`` untimed calls: on CUDA
    the device time between CUDA events recorded around each call, elsewhere by ``clock``
    (wall time; ``time.process_time`` counts this process's CPU seconds, which load from other
    processes on a shared machine does not inflate)."""
    for _ in range(warmup):
        step()
    synchronize(device)
    if device.type == "cuda":
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in range(steps)
        ]
        for start, end in events:
            start.record()
            step()
            end.record()
        synchronize(device)
        return [start.elapsed_time(end) / 1000 for start, end in events]
    times = []
    for _ in range(steps):
        began = clock()
        step()
        times.append(clock() - began)
    return times


def benchmark_module(
    model: torch.nn.Module,
    forward: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
    sequence: torch.Tensor,
    device: torch.device,
    *,
    dtype: torch.dtype | None,
    warmup: int,
    steps: int,
    clock: Callable[[], float] = time.perf_counter,
    train: bool = True,
) -> dict[str, Any]:
    """Forward (eval, no grad) and, unless ``train`` is false, forward+backward (train)
    throughput of ``forward(model, x)`` on a batch ``sequence`` (B, L) under autocast to
    ``dtype`` (None: none), from the median of the timed steps, with peak memory of each phase
    (``clock``: as :func:`time_steps`)."""
    batch = sequence.shape[0]
    model.to(device)
    autocast = {"device_type": device.type, "dtype": dtype, "enabled": dtype is not None}

    def run_forward() -> None:
        with torch.no_grad(), torch.autocast(**autocast):
            forward(model, sequence)

    def run_train() -> None:
        with torch.autocast(**autocast):
            loss = forward(model, sequence).float().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    model.eval()
    reset_peak_memory(device)
    forward_seconds = time_steps(run_forward, device, warmup, steps, clock)
    result: dict[str, Any] = {
        "forward_examples_per_s": batch / statistics.median(forward_seconds),
        "train_examples_per_s": None,
        "forward_peak_memory_bytes": peak_memory_bytes(device),
        "train_peak_memory_bytes": None,
        "forward_seconds": forward_seconds,
    }
    if train:
        model.train()
        reset_peak_memory(device)
        train_seconds = time_steps(run_train, device, warmup, steps, clock)
        result["train_examples_per_s"] = batch / statistics.median(train_seconds)
        result["train_peak_memory_bytes"] = peak_memory_bytes(device)
        result["train_seconds"] = train_seconds
    return result


def precision_name(dtype: torch.dtype | None) -> str:
    return "fp32" if dtype is None else "bf16 autocast"
