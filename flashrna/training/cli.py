"""Command-line adapters of ``flashrna train`` and ``flashrna distill``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flashrna.training.config import check_config, load_config, normalise_species
from flashrna.training.trainer import train
from flashrna.utils import FlashRNAError, merge_config, set_aside_finished

# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


_TRAIN_HELP = """\
Train a FlashRNA model from scratch.

The run is described by a YAML config (defaults: the paper's values; print them with
--print-config). The smallest config names the shards of each species:

    data:
      species:
        human: {shards: results/shards/hg38}
        mouse: {shards: results/shards/mm10}

Outputs in --out: config.yaml, metrics.jsonl (training and validation records),
checkpoints/step-N/, best/ (best validation model), and when done metrics.json and model/
(the final model, which marks the run finished). Re-running the same command resumes from the
newest intact checkpoint exactly; SIGTERM/SIGINT write a checkpoint and exit (code 128+signal);
a finished run is not run again, and re-running it under another config or seed fails, naming
the keys that changed. One run at a time per --out (a second one is refused, naming the first).
Replicates: the same config with another --seed, in another --out.

Several GPUs: torchrun --nproc-per-node N $(which flashrna) train <same options>.
"""


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = _HelpFormatter
    parser.add_argument("--config", type=Path, help="YAML training config")
    parser.add_argument(
        "--config-key",
        help="take the config from this (dotted) section of the YAML file, e.g. 'train'",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key (dotted path, value as YAML), e.g. train.steps=1000; "
        "repeatable",
    )
    parser.add_argument("--seed", type=int, help="replicate seed (overrides the config's seed)")
    parser.add_argument("--out", type=Path, help="run directory (outputs and checkpoints)")
    parser.add_argument(
        "--device", default="auto", help="auto, cpu, cuda (torchrun: cuda:LOCAL_RANK)"
    )
    parser.add_argument(
        "--stop-at-step",
        type=int,
        help="write a checkpoint and exit at this step (a later run resumes), e.g. to fit a "
        "job's time limit",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config as YAML and exit"
    )
    parser.add_argument(
        "--restart-finished",
        action="store_true",
        help="if --out holds a finished run (metrics.json), move it to OUT.replaced-<time> and "
        "train afresh (an unfinished run still resumes); the workflow passes this when it "
        "asks for a model again",
    )


def register_train(parser: argparse.ArgumentParser) -> None:
    parser.description = _TRAIN_HELP
    add_training_arguments(parser)
    parser.set_defaults(run=_run_train)


def run_training(args: argparse.Namespace, config: dict[str, Any]) -> int:
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config, sort_keys=False), end="")
        return 0
    if args.out is None:
        raise FlashRNAError("--out is required: the run directory")
    if args.restart_finished:
        set_aside_finished(args.out, "metrics.json")
    result = train(config, args.out, args.device, args.stop_at_step)
    if result.status == "interrupted":
        return 128 + int(result.signal or 0)
    return 0


def _run_train(args: argparse.Namespace) -> int:
    return run_training(args, load_config(args.config, args.config_key, args.overrides, args.seed))


_DISTILL_HELP = """\
Distil an ensemble into one student with the training code of 'flashrna train'.

The teacher is an ensemble's predictions over the training windows, written by
'flashrna ensemble-predict' in the shard format of the targets (same windows, same order).
The student trains on teacher targets, optionally mixed with the real ones:
targets = (1 - w) x teacher + w x real, w = --target-weight (config distill.target_weight).
Validation compares the student with the real validation targets. Everything else (config,
outputs, resume, torchrun) is as for 'flashrna train'.
"""


def register_distill(parser: argparse.ArgumentParser) -> None:
    parser.description = _DISTILL_HELP
    add_training_arguments(parser)
    parser.add_argument(
        "--teacher",
        action="append",
        default=[],
        metavar="SPECIES=DIR",
        help="teacher shards of a species (config data.species.SPECIES.teacher); repeatable",
    )
    parser.add_argument(
        "--target-weight",
        type=float,
        help="weight w of the real targets (config distill.target_weight)",
    )
    parser.set_defaults(run=_run_distill)


def _run_distill(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    for item in args.teacher:
        species, sep, path = item.partition("=")
        if not sep:
            raise FlashRNAError(f"--teacher '{item}': expected SPECIES=DIR")
        overrides.setdefault("data", {}).setdefault("species", {})[species] = {"teacher": path}
    if args.target_weight is not None:
        overrides["distill"] = {"target_weight": args.target_weight}
    config = load_config(args.config, args.config_key, args.overrides, args.seed)
    config = normalise_species(merge_config(config, overrides, "command line"), "command line")
    check_config(config)
    species = config["data"]["species"]
    missing = [name for name, entry in species.items() if not entry["teacher"]]
    if missing or not species:
        raise FlashRNAError(
            f"distill: species {missing or '(none)'} name no teacher shards; give --teacher "
            "SPECIES=DIR or data.species.SPECIES.teacher"
        )
    return run_training(args, config)
