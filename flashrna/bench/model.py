"""``flashrna bench model``: forward and forward+backward throughput and peak memory of a preset
at an input length on one device (:func:`flashrna.bench.timing.benchmark_module`)."""

from __future__ import annotations

import argparse

import torch

from flashrna.bench.timing import benchmark_module, device_description, precision_name
from flashrna.utils import FlashRNAError, resolve_device, write_json


def register_model_bench(parser: argparse.ArgumentParser) -> None:
    from flashrna.model import ATTENTION_BACKENDS, PRECISIONS, PRESETS

    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    parser.add_argument("--length", type=int, default=524_288, help="input bp (multiple of 128)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10, help="timed iterations per phase")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations per phase")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--attention-backend", default="auto", choices=ATTENTION_BACKENDS)
    parser.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32",
    )
    parser.add_argument(
        "--inference-chunk",
        type=int,
        help="the model's inference_chunk (positions per piece of the convolution stages for "
        "long inputs; 0: the whole input in one piece) [default: the preset's]",
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
    from flashrna.model import TOKEN_SIZE, autocast_dtype, build_model, enable_tf32

    if args.length % TOKEN_SIZE:
        raise FlashRNAError(f"--length {args.length} is not a multiple of {TOKEN_SIZE}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        enable_tf32()
    torch.manual_seed(0)
    overrides = {"attention_backend": args.attention_backend}
    if args.inference_chunk is not None:
        overrides["inference_chunk"] = args.inference_chunk
    model = build_model(args.preset, **overrides)
    head = next(iter(model.config.heads))
    runnable = torch.compile(model) if args.compile else model
    sequence = torch.randint(0, 4, (args.batch_size, args.length), device=device)
    dtype = autocast_dtype(args.precision, device)
    numbers = benchmark_module(
        runnable,
        lambda m, x: m(x, head),
        sequence,
        device,
        dtype=dtype,
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
        "precision": precision_name(dtype),
        "attention_backend": args.attention_backend,
        "inference_chunk": model.config.inference_chunk,
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
