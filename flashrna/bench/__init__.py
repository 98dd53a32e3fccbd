"""``flashrna bench <what>``: speed and memory benchmarks, printed and written as JSON.

- ``model`` (:mod:`flashrna.bench.model`): forward and forward+backward throughput (examples/s)
  and peak memory of a preset at an input length on the current device.
- ``data``: TFRecord conversion MB/s and loader examples/s at full Borzoi size
  (:mod:`flashrna.data.benchmark`).
- ``compare`` (:mod:`flashrna.bench.compare`): FlashRNA against Borzoi from borzoi-pytorch, the
  paper's Figure 1.
- ``gpu`` (:mod:`flashrna.bench.gpu`): the stages of ``bench/gpu.sh``, one prepared run on a
  GPU (device ceilings, Figure 1 at paper size, training steps, inference, the longest input).

:mod:`flashrna.bench.timing` holds the device helpers they share. Benchmarks are never run as
timed tests; measured numbers are recorded under ``bench/``.
"""

from __future__ import annotations

import argparse
import importlib

__all__ = ["BENCHMARKS", "register_bench"]

BENCHMARKS = {
    "model": ("flashrna.bench.model:register_model_bench", "model throughput and peak memory"),
    "data": (
        "flashrna.data.benchmark:register_bench",
        "conversion MB/s and loader examples/s at full Borzoi size",
    ),
    "compare": (
        "flashrna.bench.compare:register_compare",
        "FlashRNA against Borzoi on this device (Figure 1)",
    ),
    "variants": ("flashrna.variants:register_bench", "score-variants variants/s"),
    "gpu": (
        "flashrna.bench.gpu:register_gpu_bench",
        "the prepared GPU run of bench/gpu.sh (ceilings, Figure 1, training, longest input)",
    ),
}


def register_bench(parser: argparse.ArgumentParser) -> None:
    subparsers = parser.add_subparsers(
        dest="benchmark", required=True, metavar="{" + ",".join(BENCHMARKS) + "}"
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
