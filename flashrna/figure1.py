"""``flashrna bench compare``: FlashRNA against Borzoi on one device (the paper's Figure 1).

Both models are built here with random weights and measured in one run on the same device,
input length, batch size and precision (bf16 autocast on CUDA, fp32 on the CPU), with the
throughput loop of :func:`flashrna.bench.benchmark_module`, in ``--repeats`` rounds that
alternate which model goes first; each model's best round counts (all rounds are in the JSON).
``--clock cpu`` times by this process's CPU seconds instead of the wall clock, for a shared CPU
machine whose other load would otherwise decide the result:

- inference: forward passes in eval mode without gradients, examples/s;
- training: forward + backward (a mean over the outputs as the loss), examples/s;
- the largest training batch and the longest inference input (batch 1) that run without
  running out of device memory, found by doubling and then bisection (:func:`largest_fitting`;
  lengths in steps of ``--length-step`` bp). Only on CUDA by default: a CPU has no device memory
  to exhaust (the OS swaps or kills the process), so there the search is skipped unless asked for
  with ``--search-memory``, and then it is bounded by ``--max-batch``/``--max-length`` and
  reports the largest size tried.

Ratios are FlashRNA / Borzoi. Paper, one H100: 6.1x inference, 2.4x forward+backward, 4.0x
training batch, 3.5x inference length (3.6 Mbp).

"Matched size". Borzoi comes from borzoi-pytorch (``Borzoi(BorzoiConfig)``, without its centre
crop, so both return L/32 bins), which lets one change the transformer's width ``dim``, depth,
heads and key/value head dims, but not its convolution tower (512 -> 608 ... 1280 channels) nor
its 1,920-wide output projection. Both models therefore share: ``dim`` (transformer width, U-Net
decoder width), the number of transformer layers and heads, the value head dim ``dim/heads`` (192
at full size) for both and the key head dim ``64 * dim/1536`` for Borzoi (its relative-position
attention has narrower keys, as published), an MLP of ``2 * dim``, the 1,920-wide shared head, and
the output tracks (7,611, Borzoi's human head, so both compute the same outputs). Each keeps its
own published convolution tower (FlashRNA 512 -> 640 ... 1280, GroupNorm; Borzoi 512 -> 608 ...
1280, BatchNorm) and its own attention (FlashRNA: RoPE on all dims through
scaled_dot_product_attention/FlashAttention; Borzoi: relative-position features, explicit
softmax). ``--size paper`` is the published size (dim 1,536, 8 layers, 8 heads, 524,288 bp);
``--size reduced`` shrinks the transformer to dim 384 and the input to 16,384 bp for a CPU; the
figure and the JSON state the settings. At 16,384 bp the transformer sees 128 tokens, so a CPU
comparison measures mostly the convolutions, not the attention the paper's speed-up comes from.
"""

from __future__ import annotations

import argparse
import gc
import logging
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

import torch
from torch import nn

from flashrna.bench import benchmark_module, device_description, synchronize
from flashrna.paper import PAPER_NOTE, PAPER_RATIOS
from flashrna.utils import FlashRNAError, resolve_device, write_json

log = logging.getLogger(__name__)

BORZOI_TRACKS = 7611  # Borzoi's human head; FlashRNA is given the same output size
SIZES: dict[str, dict[str, int]] = {
    "paper": {"dim": 1536, "layers": 8, "heads": 8, "length": 524_288, "batch_size": 1},
    "reduced": {"dim": 384, "layers": 8, "heads": 8, "length": 16_384, "batch_size": 1},
}
MODELS = ("borzoi", "flashrna")
# Throughput per wall-clock second, or per CPU second of this process (robust to other load
# on a shared CPU machine; with --threads 1 it is examples per core-second).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
CLOCK_TEXT = {"wall": "wall clock", "cpu": "timed in CPU seconds"}
METRICS = tuple(PAPER_RATIOS)


# --------------------------------------------------------------------------------------------
# The two models at matched size
# --------------------------------------------------------------------------------------------


def build_matched(name: str, dim: int, layers: int, heads: int) -> nn.Module:
    """FlashRNA or Borzoi (borzoi-pytorch) at the matched size of the module docstring."""
    if dim % heads or dim % 32:
        raise FlashRNAError(f"--dim {dim} must be a multiple of 32 and of --heads {heads}")
    if name == "flashrna":
        from flashrna.model import build_model

        return build_model(
            "paper",
            dim=dim,
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=heads,
            head_dim=dim // heads,
            rope_dims=dim // heads,
            mlp_hidden=2 * dim,
            heads={"human": BORZOI_TRACKS},
        )
    from flashrna.zoo.borzoi import build_borzoi

    return build_borzoi(
        {
            "dim": dim,
            "depth": layers,
            "heads": heads,
            "attn_dim_key": max(8, 64 * dim // 1536),
            "attn_dim_value": dim // heads,
        }
    )


def forward_function(name: str, device: torch.device) -> Callable[[nn.Module, torch.Tensor], Any]:
    """``forward(model, sequence (B, L) int)``: both models start from base indices; Borzoi's
    one-hot (B, 4, L) input is made inside the timed call, as FlashRNA makes its own."""
    if name == "flashrna":
        return lambda model, sequence: model(sequence, "human")
    from flashrna.model import TOKEN_SIZE
    from flashrna.zoo.borzoi import reset_relative_positions

    one_hot = torch.eye(5, device=device)[:, :4]

    def forward(model: nn.Module, sequence: torch.Tensor) -> torch.Tensor:
        reset_relative_positions(model, sequence.shape[-1] // TOKEN_SIZE, device)
        return model(one_hot[sequence].transpose(1, 2))

    return forward


# --------------------------------------------------------------------------------------------
# Memory limits
# --------------------------------------------------------------------------------------------


def largest_fitting(fits: Callable[[int], bool], limit: int) -> tuple[int, bool]:
    """The largest n in 1..limit with ``fits(n)``, assuming fitting is monotone: double from 1
    until a size fails, then bisect between the last size that ran and the first that did not.

    Returns (n, bounded): n = 0 when even 1 fails; bounded = True when ``limit`` itself ran (the
    true maximum may be larger)."""
    good, bad, n = 0, None, 1
    while bad is None:
        if fits(n):
            good = n
            if n >= limit:
                return good, True
            n = min(2 * n, limit)
        else:
            bad = n
    while bad - good > 1:
        middle = (good + bad) // 2
        if fits(middle):
            good = middle
        else:
            bad = middle
    return good, False


def _out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def runs(step: Callable[[], Any], device: torch.device) -> bool:
    """Whether ``step()`` completes without running out of memory; memory is freed either way.
    Errors other than out-of-memory propagate."""
    try:
        step()
        synchronize(device)
        ok = True
    except RuntimeError as err:
        if not _out_of_memory(err):
            raise
        ok = False  # leave the except block first, so its traceback frees the tensors
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return ok


def memory_limits(
    model: nn.Module,
    forward: Callable[[nn.Module, torch.Tensor], Any],
    device: torch.device,
    *,
    autocast: bool,
    length: int,
    max_batch: int,
    max_length: int,
    length_step: int,
) -> dict[str, Any]:
    """Largest training batch at ``length`` and longest inference input at batch 1."""

    def train(batch: int) -> bool:
        def step() -> None:
            model.train()
            sequence = torch.randint(0, 4, (batch, length), device=device)
            try:
                with torch.autocast(device.type, torch.bfloat16, enabled=autocast):
                    loss = forward(model, sequence).float().mean()
                loss.backward()
            finally:
                model.zero_grad(set_to_none=True)

        log.debug("training batch %d", batch)
        return runs(step, device)

    def infer(units: int) -> bool:
        def step() -> None:
            model.eval()
            sequence = torch.randint(0, 4, (1, units * length_step), device=device)
            with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=autocast):
                forward(model, sequence)

        log.debug("inference length %d bp", units * length_step)
        return runs(step, device)

    batch, batch_bounded = largest_fitting(train, max_batch)
    units, length_bounded = largest_fitting(infer, max(1, max_length // length_step))
    return {
        "max_train_batch": batch,
        "max_train_batch_bounded": batch_bounded,
        "max_inference_length": units * length_step,
        "max_inference_length_bounded": length_bounded,
    }


# --------------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------------


def compare(
    *,
    dim: int,
    layers: int,
    heads: int,
    length: int,
    batch_size: int,
    device: str | torch.device = "auto",
    autocast: bool = True,
    warmup: int = 3,
    steps: int = 10,
    repeats: int = 3,
    clock: str = "wall",
    search_memory: bool | None = None,
    max_batch: int = 256,
    max_length: int = 16 * 2**20,
    length_step: int = 32_768,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure both models (module docstring); the result is what ``--output`` holds.

    ``autocast`` applies on CUDA only; ``search_memory`` None means: on CUDA only."""
    from flashrna.model import TOKEN_SIZE

    for name, value in (("length", length), ("length step", length_step)):
        if value % TOKEN_SIZE:
            raise FlashRNAError(f"{name} {value} is not a multiple of {TOKEN_SIZE} bp")
    device = resolve_device(device)
    autocast = autocast and device.type == "cuda"
    search = device.type == "cuda" if search_memory is None else search_memory
    built = {}
    for name in MODELS:
        torch.manual_seed(seed)
        built[name] = build_matched(name, dim, layers, heads)
        log.info("%s: %d parameters", name, _parameters(built[name]))
    # Rounds alternate the order and each model keeps its best round, so neither gains from
    # going second (warm caches, allocator) or loses to a burst of load on a shared machine.
    rounds = []
    for number in range(repeats):
        for name in MODELS if number % 2 == 0 else MODELS[::-1]:
            log.info("round %d: timing %s", number + 1, name)
            sequence = torch.randint(0, 4, (batch_size, length), device=device)
            numbers = benchmark_module(
                built[name],
                forward_function(name, device),
                sequence,
                device,
                autocast=autocast,
                warmup=warmup,
                steps=steps,
                clock=CLOCKS[clock],
            )
            rounds.append({"round": number + 1, "model": name, **numbers})
            _release(built[name], device)
    models: dict[str, dict[str, Any]] = {}
    for name in MODELS:
        mine = [r for r in rounds if r["model"] == name]
        models[name] = {"parameters": _parameters(built[name])}
        for key in mine[0]:
            if key.endswith("_per_s") or (key.endswith("_bytes") and device.type == "cuda"):
                models[name][key] = max(r[key] for r in mine)
            elif key.endswith("_bytes"):  # a process-wide high-water mark, not this model's
                models[name][key] = None
        if search:
            log.info("%s: searching the memory limits", name)
            models[name] |= memory_limits(
                built[name].to(device),
                forward_function(name, device),
                device,
                autocast=autocast,
                length=length,
                max_batch=max_batch,
                max_length=max_length,
                length_step=length_step,
            )
            _release(built[name], device)
        else:
            models[name] |= dict.fromkeys(("max_train_batch", "max_inference_length"))
    return {
        "benchmark": "compare",
        "device": device_description(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "borzoi_pytorch": metadata.version("borzoi-pytorch"),
        "settings": {
            "dim": dim,
            "layers": layers,
            "heads": heads,
            "tracks": BORZOI_TRACKS,
            "length": length,
            "batch_size": batch_size,
            "precision": "bf16 autocast" if autocast else "fp32",
            "warmup": warmup,
            "steps": steps,
            "repeats": repeats,
            "clock": clock,
            "paper_size": (dim, layers, heads, length)
            == tuple(SIZES["paper"][k] for k in ("dim", "layers", "heads", "length")),
        },
        "memory_search": (
            {"max_batch": max_batch, "max_length": max_length, "length_step": length_step}
            if search
            else {
                "skipped": "on the CPU there is no device memory to exhaust (the OS swaps or "
                "kills the process); --search-memory runs a bounded search"
            }
        ),
        "peak_memory_note": (
            "CUDA: peak allocated per phase"
            if device.type == "cuda"
            else "CPU: not measured per model (the process's peak resident set is a "
            "high-water mark over the whole run; the rounds show it)"
        ),
        "models": models,
        "rounds": rounds,
        "ratios": ratios(models),
        "paper_ratios": PAPER_RATIOS,
        "paper_note": PAPER_NOTE,
    }


def _parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _release(model: nn.Module, device: torch.device) -> None:
    """Move a model off the GPU, so the other one has the device's memory to itself."""
    if device.type == "cuda":
        model.to("cpu")
        gc.collect()
        torch.cuda.empty_cache()


def ratios(models: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """FlashRNA / Borzoi per metric; None where a side was not measured, is zero, or hit the
    search bound (then the ratio is unknown)."""
    out = {}
    for metric in METRICS:
        a, b = models["flashrna"].get(metric), models["borzoi"].get(metric)
        bounded = any(models[m].get(f"{metric}_bounded") for m in MODELS)
        out[metric] = a / b if a is not None and b and not bounded else None
    return out


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def register_compare(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "FlashRNA against Borzoi (borzoi-pytorch) at matched size on one device: inference and "
        "forward+backward examples/s, largest training batch and longest inference input "
        "(CUDA), as numbers and FlashRNA/Borzoi ratios (the paper's Figure 1). See "
        "flashrna.figure1 for what 'matched size' means."
    )
    parser.add_argument(
        "--size",
        choices=("auto", *SIZES),
        default="auto",
        help="paper: dim 1536, 8 layers, 8 heads, 524,288 bp, batch 1; reduced: dim 384 and "
        "16,384 bp (for a CPU); auto: paper on CUDA, reduced on the CPU",
    )
    parser.add_argument("--dim", type=int, help="transformer width (overrides --size)")
    parser.add_argument("--layers", type=int, help="transformer layers (overrides --size)")
    parser.add_argument("--heads", type=int, help="attention heads (overrides --size)")
    parser.add_argument("--length", type=int, help="input bp, a multiple of 128 (overrides)")
    parser.add_argument("--batch-size", type=int, help="throughput batch (overrides --size)")
    parser.add_argument("--steps", type=int, default=10, help="timed iterations per phase")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations per phase")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timing rounds, alternating which model goes first; each keeps its best",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="time throughput by wall clock, or by this process's CPU seconds (on a shared CPU "
        "machine other load does not inflate it; use with --threads 1)",
    )
    parser.add_argument(
        "--no-autocast", action="store_true", help="fp32 on CUDA too (default: bf16 autocast)"
    )
    parser.add_argument(
        "--search-memory",
        action=argparse.BooleanOptionalAction,
        help="search the largest training batch and inference length [default: on CUDA only]",
    )
    parser.add_argument("--max-batch", type=int, default=256, help="training batch search bound")
    parser.add_argument(
        "--max-length", type=int, default=16 * 2**20, help="inference length search bound (bp)"
    )
    parser.add_argument(
        "--length-step", type=int, default=32_768, help="resolution of the length search (bp)"
    )
    parser.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--output", help="write the result as JSON here")
    parser.add_argument(
        "--figure", help="write Figure 1 here (PNG; a PDF of the same name beside it)"
    )
    parser.set_defaults(run=_run_compare)


def _run_compare(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    size = args.size if args.size != "auto" else "paper" if device.type == "cuda" else "reduced"
    chosen = {key: getattr(args, key) or value for key, value in SIZES[size].items()}
    result = compare(
        **chosen,
        device=device,
        autocast=not args.no_autocast,
        warmup=args.warmup,
        steps=args.steps,
        repeats=args.repeats,
        clock=args.clock,
        search_memory=args.search_memory,
        max_batch=args.max_batch,
        max_length=args.max_length,
        length_step=args.length_step,
    )
    settings = ", ".join(f"{key} {value}" for key, value in result["settings"].items())
    print(f"{result['device']}: {settings}")
    for metric in METRICS:
        values = [result["models"][m][metric] for m in MODELS]
        ratio = result["ratios"][metric]
        shown = (
            "not measured"
            if None in values
            else f"Borzoi {values[0]:.4g}, FlashRNA {values[1]:.4g}"
        )
        print(
            f"  {metric:<24} {shown}; ratio {'-' if ratio is None else f'{ratio:.2f}x'} "
            f"(paper {PAPER_RATIOS[metric]:.1f}x)"
        )
    if args.output:
        write_json(args.output, result)
    if args.figure:
        from flashrna.report.figures import plot_figure1

        plot_figure1(result, args.figure)
