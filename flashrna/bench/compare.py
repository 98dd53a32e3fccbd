"""``flashrna bench compare``: FlashRNA against Borzoi on one device (the paper's Figure 1).

Both models are built here with random weights and measured in one run on the same device,
input length and batch size, with the throughput loop of
:func:`flashrna.bench.timing.benchmark_module` (per-step times, CUDA events on a GPU; each round
reports the median step), in ``--repeats`` rounds that alternate the order of the models; each
model's best round counts (all rounds are in the JSON). ``--clock cpu`` times by this process's
CPU seconds instead of the wall clock, for a shared CPU machine whose other load would otherwise
decide the result:

- inference: forward passes in eval mode without gradients, examples/s;
- training: forward + backward (a mean over the outputs as the loss), examples/s (skipped with
  ``--forward-only``);
- the largest training batch and the longest inference input (batch 1) that run without
  running out of device memory, found by doubling and then bisection (:func:`largest_fitting`;
  lengths in steps of ``--length-step`` bp, up to ``--max-length``, 64 Mbp by default). Every
  probe's outcome (fits, out of memory, or another error with its message) is recorded; a size
  that fails for any reason counts as not fitting. Only on CUDA by default: a CPU has no device
  memory to exhaust (the OS swaps or kills the process), so there the search is skipped unless
  asked for with ``--search-memory``, and then it is bounded by ``--max-batch``/``--max-length``
  and reports the largest size tried.

Precision. FlashRNA runs at ``--precision`` (``auto``: bf16 autocast on CUDA and on CPUs with
native bf16, else fp32; :func:`flashrna.model.autocast_dtype`). Borzoi is timed at each of
``--borzoi-precision`` (default: bf16 then fp32 on CUDA, as the paper's GPU figure runs bf16;
fp32 on a CPU, Borzoi's published setting): the first is the Borzoi of Figure 1 and of
``ratios`` (model ``borzoi``), the others are models ``borzoi-<precision>`` with their ratios in
``ratios_by_baseline``. The JSON (``--output``) is rewritten atomically after every round and
probe, so a run that dies keeps what it measured (``status`` says whether it finished).

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
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flashrna.bench.timing import (
    benchmark_module,
    device_description,
    precision_name,
    synchronize,
)
from flashrna.paper import PAPER_NOTE, PAPER_RATIOS
from flashrna.utils import FlashRNAError, resolve_device, write_json

log = logging.getLogger(__name__)

BORZOI_TRACKS = 7611  # Borzoi's human head; FlashRNA is given the same output size
SIZES: dict[str, dict[str, int]] = {
    "paper": {"dim": 1536, "layers": 8, "heads": 8, "length": 524_288, "batch_size": 1},
    "reduced": {"dim": 384, "layers": 8, "heads": 8, "length": 16_384, "batch_size": 1},
}
MODELS = ("borzoi", "flashrna")  # Figure 1's two bars
BORZOI_PRECISIONS = ("fp32", "bf16")
# Throughput per wall-clock second, or per CPU second of this process (robust to other load
# on a shared CPU machine; with --threads 1 it is examples per core-second).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
METRICS = tuple(PAPER_RATIOS)
MAX_LENGTH = 64 * 2**20  # the inference length search's default bound, bp


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


def probe(step: Callable[[], Any], device: torch.device) -> dict[str, Any]:
    """Run ``step()`` once: ``{"outcome": "fits" | "out of memory" | "error", "message": the
    error's text or None, "seconds": wall time}``; memory is freed either way."""
    began = time.perf_counter()
    outcome, message = "fits", None
    try:
        step()
        synchronize(device)
    except Exception as err:  # recorded: one failing size must not end a long search
        outcome = "out of memory" if _out_of_memory(err) else "error"
        message = f"{type(err).__name__}: {err}"[:2000]
    gc.collect()  # outside the except block, so its traceback no longer holds the tensors
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"outcome": outcome, "message": message, "seconds": time.perf_counter() - began}


def memory_limits(
    model: nn.Module,
    forward: Callable[[nn.Module, torch.Tensor], Any],
    device: torch.device,
    *,
    dtype: torch.dtype | None,
    length: int,
    max_batch: int,
    max_length: int,
    length_step: int,
    record: Callable[[dict[str, Any]], None] = lambda _: None,
) -> dict[str, Any]:
    """Largest training batch at ``length`` and longest inference input at batch 1, under
    autocast to ``dtype``; ``record`` receives each probe (search, size, and :func:`probe`'s
    outcome) as it finishes."""
    autocast = {"device_type": device.type, "dtype": dtype, "enabled": dtype is not None}

    def train(batch: int) -> bool:
        def step() -> None:
            model.train()
            sequence = torch.randint(0, 4, (batch, length), device=device)
            try:
                with torch.autocast(**autocast):
                    loss = forward(model, sequence).float().mean()
                loss.backward()
            finally:
                model.zero_grad(set_to_none=True)

        log.debug("training batch %d", batch)
        outcome = probe(step, device)
        record({"search": "train batch", "size": batch, "length": length, **outcome})
        return outcome["outcome"] == "fits"

    def infer(units: int) -> bool:
        def step() -> None:
            model.eval()
            sequence = torch.randint(0, 4, (1, units * length_step), device=device)
            with torch.no_grad(), torch.autocast(**autocast):
                forward(model, sequence)

        log.debug("inference length %d bp", units * length_step)
        outcome = probe(step, device)
        record({"search": "inference length", "size": units * length_step, **outcome})
        return outcome["outcome"] == "fits"

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


def timed_models(borzoi_precisions: Sequence[str]) -> dict[str, tuple[str, str]]:
    """{entry: (model, Borzoi precision or None for FlashRNA)}: ``borzoi`` at the first
    precision, ``borzoi-<p>`` at the others."""
    unknown = sorted(set(borzoi_precisions) - set(BORZOI_PRECISIONS))
    if unknown or not borzoi_precisions or len(set(borzoi_precisions)) < len(borzoi_precisions):
        raise FlashRNAError(
            f"Borzoi precisions {list(borzoi_precisions)}: give one or more of "
            f"{', '.join(BORZOI_PRECISIONS)}, each once"
        )
    entries = {"borzoi": ("borzoi", borzoi_precisions[0]), "flashrna": ("flashrna", None)}
    entries |= {f"borzoi-{p}": ("borzoi", p) for p in borzoi_precisions[1:]}
    return entries


def compare(
    *,
    dim: int,
    layers: int,
    heads: int,
    length: int,
    batch_size: int,
    device: str | torch.device = "auto",
    precision: str = "auto",
    borzoi_precisions: Sequence[str] | None = None,
    warmup: int = 3,
    steps: int = 10,
    repeats: int = 3,
    clock: str = "wall",
    train: bool = True,
    search_memory: bool | None = None,
    max_batch: int = 256,
    max_length: int = MAX_LENGTH,
    length_step: int = 32_768,
    seed: int = 0,
    output: str | Path | None = None,
) -> dict[str, Any]:
    """Measure both models (module docstring); the result is what ``output`` holds (rewritten
    after every round and probe).

    ``precision``: FlashRNA's (auto, bf16, fp32); ``borzoi_precisions``: None means bf16 and
    fp32 on CUDA, fp32 elsewhere; ``search_memory`` None means: on CUDA only."""
    from flashrna.model import TOKEN_SIZE, autocast_dtype, cpu_has_native_bf16, enable_tf32

    for name, value in (("length", length), ("length step", length_step)):
        if value % TOKEN_SIZE:
            raise FlashRNAError(f"{name} {value} is not a multiple of {TOKEN_SIZE} bp")
    device = resolve_device(device)
    if device.type == "cuda":
        enable_tf32()
    if borzoi_precisions is None:
        borzoi_precisions = ("bf16", "fp32") if device.type == "cuda" else ("fp32",)
    entries = timed_models(borzoi_precisions)
    dtypes = {
        entry: autocast_dtype(precision if model == "flashrna" else borzoi_precision, device)
        for entry, (model, borzoi_precision) in entries.items()
    }
    if device.type == "cpu" and torch.bfloat16 in dtypes.values() and not cpu_has_native_bf16():
        log.warning("this CPU has no native bf16: bf16 runs are emulated, many times slower")
    search = device.type == "cuda" if search_memory is None else search_memory
    result: dict[str, Any] = {
        "benchmark": "compare",
        "status": "running",
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
            "precision": precision_name(dtypes["flashrna"]),
            "borzoi_precisions": [precision_name(dtypes[e]) for e in entries if e != "flashrna"],
            "warmup": warmup,
            "steps": steps,
            "repeats": repeats,
            "clock": clock,
            "train": train,
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
        "models": {},
        "rounds": [],
        "probes": [],
        "ratios": {},
        "ratios_by_baseline": {},
        "paper_ratios": PAPER_RATIOS,
        "paper_note": PAPER_NOTE,
    }

    def save() -> None:
        if output is not None:
            write_json(output, result)

    built = {}
    for name in ("borzoi", "flashrna"):
        torch.manual_seed(seed)
        built[name] = build_matched(name, dim, layers, heads)
        log.info("%s: %d parameters", name, _parameters(built[name]))
    # Rounds alternate the order and each model keeps its best round, so neither gains from
    # going second (warm caches, allocator) or loses to a burst of load on a shared machine.
    order = list(entries)
    for number in range(repeats):
        for entry in order if number % 2 == 0 else order[::-1]:
            model = entries[entry][0]
            log.info("round %d: timing %s (%s)", number + 1, entry, precision_name(dtypes[entry]))
            sequence = torch.randint(0, 4, (batch_size, length), device=device)
            numbers = benchmark_module(
                built[model],
                forward_function(model, device),
                sequence,
                device,
                dtype=dtypes[entry],
                warmup=warmup,
                steps=steps,
                clock=CLOCKS[clock],
                train=train,
            )
            result["rounds"].append({"round": number + 1, "model": entry, **numbers})
            _release(built[model], device)
            save()
    for entry, (model, _) in entries.items():
        mine = [r for r in result["rounds"] if r["model"] == entry]
        summary = {
            "parameters": _parameters(built[model]),
            "precision": precision_name(dtypes[entry]),
        }
        for key in mine[0]:
            if key.endswith("_per_s"):
                values = [r[key] for r in mine if r[key] is not None]
                summary[key] = max(values) if values else None
            elif key.endswith("_bytes"):  # on the CPU a process-wide high-water mark
                summary[key] = max(r[key] or 0 for r in mine) if device.type == "cuda" else None
        summary |= dict.fromkeys(("max_train_batch", "max_inference_length"))
        result["models"][entry] = summary
    _set_ratios(result)
    save()
    if search:
        for entry in MODELS:
            model = entries[entry][0]
            log.info("%s: searching the memory limits", entry)

            def record(outcome: dict[str, Any], entry: str = entry) -> None:
                result["probes"].append({"model": entry, **outcome})
                save()

            result["models"][entry] |= memory_limits(
                built[model].to(device),
                forward_function(model, device),
                device,
                dtype=dtypes[entry],
                length=length,
                max_batch=max_batch,
                max_length=max_length,
                length_step=length_step,
                record=record,
            )
            _release(built[model], device)
        _set_ratios(result)
    result["status"] = "finished"
    save()
    return result


def _parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _release(model: nn.Module, device: torch.device) -> None:
    """Move a model off the GPU, so the other one has the device's memory to itself."""
    if device.type == "cuda":
        model.to("cpu")
        gc.collect()
        torch.cuda.empty_cache()


def _set_ratios(result: dict[str, Any]) -> None:
    models = result["models"]
    baselines = [m for m in models if m != "flashrna"]
    result["ratios_by_baseline"] = {b: ratios(models, b) for b in baselines}
    result["ratios"] = result["ratios_by_baseline"]["borzoi"]


def ratios(models: dict[str, dict[str, Any]], baseline: str = "borzoi") -> dict[str, float | None]:
    """FlashRNA / ``baseline`` per metric; None where a side was not measured, is zero, or hit
    the search bound (then the ratio is unknown)."""
    out = {}
    for metric in METRICS:
        a, b = models["flashrna"].get(metric), models[baseline].get(metric)
        bounded = any(models[m].get(f"{metric}_bounded") for m in ("flashrna", baseline))
        out[metric] = a / b if a is not None and b and not bounded else None
    return out


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def register_compare(parser: argparse.ArgumentParser) -> None:
    from flashrna.model import PRECISIONS

    parser.description = (
        "FlashRNA against Borzoi (borzoi-pytorch) at matched size on one device: inference and "
        "forward+backward examples/s, largest training batch and longest inference input "
        "(CUDA), as numbers and FlashRNA/Borzoi ratios (the paper's Figure 1). See "
        "flashrna.bench.compare for what 'matched size' means."
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
        help="timing rounds, alternating the order of the models; each keeps its best",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="time throughput by wall clock, or by this process's CPU seconds (on a shared CPU "
        "machine other load does not inflate it); CUDA always times with CUDA events",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="FlashRNA's: auto is bf16 autocast on CUDA and on CPUs with native bf16, else fp32",
    )
    parser.add_argument(
        "--borzoi-precision",
        nargs="+",
        choices=BORZOI_PRECISIONS,
        help="Borzoi's, one or more; the first is Figure 1's Borzoi [default: bf16 fp32 on "
        "CUDA, fp32 on a CPU]",
    )
    parser.add_argument(
        "--forward-only", action="store_true", help="time inference only, not forward+backward"
    )
    parser.add_argument(
        "--search-memory",
        action=argparse.BooleanOptionalAction,
        help="search the largest training batch and inference length [default: on CUDA only]",
    )
    parser.add_argument("--max-batch", type=int, default=256, help="training batch search bound")
    parser.add_argument(
        "--max-length", type=int, default=MAX_LENGTH, help="inference length search bound (bp)"
    )
    parser.add_argument(
        "--length-step", type=int, default=32_768, help="resolution of the length search (bp)"
    )
    parser.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    parser.add_argument(
        "--output", help="write the result as JSON here (rewritten as results come in)"
    )
    parser.add_argument(
        "--figure", help="write Figure 1 here (PNG; a PDF of the same name beside it)"
    )
    parser.set_defaults(run=_run_compare)


def _run_compare(args: argparse.Namespace) -> None:
    from flashrna.report.figures import plot_figure1, settings_line

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    size = args.size if args.size != "auto" else "paper" if device.type == "cuda" else "reduced"
    chosen = {key: getattr(args, key) or value for key, value in SIZES[size].items()}
    result = compare(
        **chosen,
        device=device,
        precision=args.precision,
        borzoi_precisions=args.borzoi_precision,
        warmup=args.warmup,
        steps=args.steps,
        repeats=args.repeats,
        clock=args.clock,
        train=not args.forward_only,
        search_memory=args.search_memory,
        max_batch=args.max_batch,
        max_length=args.max_length,
        length_step=args.length_step,
        output=args.output,
    )
    print(f"{result['device']}: {settings_line(result['settings'])}")
    for baseline, by_metric in result["ratios_by_baseline"].items():
        print(f"  FlashRNA vs {baseline} ({result['models'][baseline]['precision']}):")
        for metric, ratio in by_metric.items():
            values = [result["models"][m][metric] for m in (baseline, "flashrna")]
            shown = (
                "not measured"
                if None in values
                else f"Borzoi {values[0]:.4g}, FlashRNA {values[1]:.4g}"
            )
            print(
                f"    {metric:<24} {shown}; ratio {'-' if ratio is None else f'{ratio:.2f}x'} "
                f"(paper {PAPER_RATIOS[metric]:.1f}x)"
            )
    if args.figure:
        plot_figure1(result, args.figure)
