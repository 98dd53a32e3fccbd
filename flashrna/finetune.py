"""``flashrna finetune``: new heads on a pretrained trunk (DESIGN §5, paper Tables 3 and 4).

Subcommands::

    flashrna finetune chip      --model PRETRAINED --shards DIR... --out RUN [--mode head|full]
    flashrna finetune halflife  --model PRETRAINED --data SALUKI_DIR --out DIR [--folds F...]
    flashrna finetune te        --model PRETRAINED --data RIBONN.tsv --out DIR [--folds F...]
    flashrna finetune aggregate --out DIR

``chip`` trains a fresh head (shared projection + track head, named ``--head``, default
``chip``) for the CHIP tracks of the shards (any ``--assays``) on the trunk of ``--model``, with
the training code of ``flashrna train`` (:mod:`flashrna.train`: Poisson-multinomial loss, AdamW
with warm-up and cosine decay, shift and reverse-complement augmentation, validation on fold4,
checkpoints and exact resume, torchrun). It sets, over that step's defaults:

- ``model.init`` = ``--model``: the run starts from the pretrained trunk, whose architecture it
  takes; the shared projection and the head start from a fresh (seeded) initialisation;
- ``train.epochs`` = 3 (paper), ``train.learning_rate`` 5e-4 and ``train.warmup_steps`` 1,000
  (choices: a fresh head tolerates a larger rate than training from scratch, and 3 epochs of the
  41,699 human training windows at batch 8 are ~15,600 steps, so a 5,000-step warm-up would be a
  third of the run);
- ``--mode head``: ``train.trunk_lr_scale`` 0, which leaves the trunk out of the optimiser and
  switches off its gradients (it stays bit-identical, and the backward pass stops at the head),
  and the trunk's dropouts 0, so the frozen trunk computes exactly its eval-mode function;
- ``--mode full``: everything trains, the trunk at ``--trunk-lr-scale`` (0.1) times the rate.

The output is a ``flashrna train`` run directory; its ``model/`` is a normal model directory
with the head and its track table (``targets-<head>.txt``), which ``flashrna evaluate-tracks
--model RUN/model --head chip`` scores on fold3. ``--config`` and ``--set`` change any other key
of the training config (``flashrna finetune chip ... --print-config`` shows them all); the
options above win over ``--config``, and ``--set`` wins over both.

``halflife`` and ``te`` are k-fold cross-validations of a pooling head on the trunk
(:mod:`flashrna.rnaprops`, which documents the data formats, the pooling and the outputs);
``aggregate`` gathers their folds, which the workflow may run as separate jobs.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence

from flashrna import rnaprops
from flashrna.utils import FlashRNAError

CHIP_MODES = ("head", "full")
TRUNK_DROPOUTS = ("attention_dropout", "mlp_dropout", "residual_dropout")


def chip_settings(
    model: str,
    shards: Sequence[str],
    mode: str = "head",
    head: str = "chip",
    assays: Sequence[str] | None = ("CHIP",),
    genome: str | None = None,
    epochs: float = 3,
    learning_rate: float = 5e-4,
    warmup_steps: int = 1000,
    trunk_lr_scale: float = 0.1,
) -> list[str]:
    """The training-config keys of a ChIP fine-tuning run (module docstring), as ``--set``
    strings for :func:`flashrna.train.load_config` (values JSON, so paths stay strings)."""
    if mode not in CHIP_MODES:
        raise FlashRNAError(f"mode '{mode}' is not one of {CHIP_MODES}")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", head):
        raise FlashRNAError(f"head name '{head}' must be letters, digits, '_' or '-'")
    values = {
        "model.init": str(model),
        f"data.species.{head}.shards": [str(path) for path in shards],
        f"data.species.{head}.assays": None if assays is None else list(assays),
        f"data.species.{head}.genome": None if genome is None else str(genome),
        "train.epochs": epochs,
        "train.learning_rate": learning_rate,
        "train.warmup_steps": warmup_steps,
        "train.trunk_lr_scale": 0.0 if mode == "head" else trunk_lr_scale,
    }
    if mode == "head":
        # Frozen trunk without dropout: its eval-mode function, whatever mode the loop sets.
        values.update({f"model.overrides.{name}": 0.0 for name in TRUNK_DROPOUTS})
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def register_finetune(parser: argparse.ArgumentParser) -> None:
    from flashrna.train import _add_common_arguments

    formatter = argparse.ArgumentDefaultsHelpFormatter
    tasks = parser.add_subparsers(dest="task", required=True, metavar="TASK")

    chip = tasks.add_parser("chip", help="a new ChIP-seq head on the trunk (Table 3)")
    _add_common_arguments(chip)
    chip.add_argument(
        "--model", required=True, help="pretrained model directory or official checkpoint (.ckpt)"
    )
    chip.add_argument("--shards", nargs="+", required=True, help="shard folders (train/valid)")
    chip.add_argument("--mode", choices=CHIP_MODES, default="head", help="train the head, or all")
    chip.add_argument("--head", default="chip", help="name of the new head")
    chip.add_argument(
        "--assays", nargs="+", default=["CHIP"], help="the head's assays ('all': every track)"
    )
    chip.add_argument("--genome", help="FASTA for flanks shifted into the input (else N)")
    chip.add_argument("--epochs", type=float, default=3, help="passes over the training windows")
    chip.add_argument("--learning-rate", type=float, default=5e-4, help="peak rate of the head")
    chip.add_argument("--warmup-steps", type=int, default=1000)
    chip.add_argument(
        "--trunk-lr-scale", type=float, default=0.1, help="trunk rate / head rate (full mode)"
    )
    chip.set_defaults(run=_run_chip)

    for name, text, reader_options in (
        ("halflife", "RNA half-life, Saluki data (Table 4)", _halflife_options),
        ("te", "translation efficiency, RiboNN data (Table 4)", _te_options),
    ):
        task = tasks.add_parser(name, help=text, formatter_class=formatter)
        reader_options(task)
        rnaprops.add_property_options(task)

    aggregate = tasks.add_parser(
        "aggregate", help="gather folds into pearson.csv, summary.json", formatter_class=formatter
    )
    aggregate.add_argument("--out", required=True, help="the directory of fold<k>/ results")
    aggregate.set_defaults(run=_run_aggregate)


def _halflife_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", required=True, help="Saluki data: train_gru/ or a dir with tfrecords/fold*"
    )
    parser.add_argument("--species", choices=sorted(rnaprops.SALUKI_SPECIES), default="human")
    parser.set_defaults(run=_run_halflife)


def _te_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="RiboNN-format TSV")
    parser.add_argument(
        "--targets",
        nargs="+",
        default=["TE_*"],
        help="target columns or glob patterns (TE_classic_ML's table: mean_te)",
    )
    parser.add_argument(
        "--num-folds", type=int, default=10, help="folds to deal when the table has no fold column"
    )
    parser.set_defaults(run=_run_te)


def _run_halflife(args: argparse.Namespace) -> None:
    rnaprops.run_property_cli(args, rnaprops.read_saluki(args.data, args.species))


def _run_te(args: argparse.Namespace) -> None:
    data = rnaprops.read_ribonn(args.data, args.targets, args.num_folds, args.seed)
    rnaprops.run_property_cli(args, data)


def _run_aggregate(args: argparse.Namespace) -> None:
    rnaprops.aggregate_folds(args.out)


def _run_chip(args: argparse.Namespace) -> int:
    from flashrna.train import _run, load_config
    from flashrna.zoo import flashrna_directory

    assays = None if [a.lower() for a in args.assays] == ["all"] else args.assays
    settings = chip_settings(
        flashrna_directory(args.model),
        args.shards,
        args.mode,
        args.head,
        assays,
        args.genome,
        args.epochs,
        args.learning_rate,
        args.warmup_steps,
        args.trunk_lr_scale,
    )
    config = load_config(args.config, args.config_key, [*settings, *args.overrides], args.seed)
    return _run(args, config)
