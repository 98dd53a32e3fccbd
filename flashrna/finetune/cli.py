"""The ``flashrna finetune <task>`` adapters: options -> :func:`~flashrna.finetune.chip.chip_config`
and the trainer (``chip``), :func:`~flashrna.finetune.rnaprops.finetune_property` (``halflife``,
``te``) and :func:`~flashrna.finetune.rnaprops.aggregate_folds`."""

from __future__ import annotations

import argparse

from flashrna.finetune import rnaprops
from flashrna.finetune.chip import CHIP_MODES, chip_config
from flashrna.utils import set_aside_finished
from flashrna.zoo import flashrna_directory

# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def register_finetune(parser: argparse.ArgumentParser) -> None:
    from flashrna.training.cli import add_training_arguments

    formatter = argparse.ArgumentDefaultsHelpFormatter
    tasks = parser.add_subparsers(dest="task", required=True, metavar="TASK")

    chip = tasks.add_parser("chip", help="a new ChIP-seq head on the trunk (Table 3)")
    add_training_arguments(chip)
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
        add_property_options(task)

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
    run_property_cli(args, rnaprops.read_saluki(args.data, args.species))


def _run_te(args: argparse.Namespace) -> None:
    data = rnaprops.read_ribonn(args.data, args.targets, args.num_folds, args.seed)
    run_property_cli(args, data)


def _run_aggregate(args: argparse.Namespace) -> None:
    rnaprops.aggregate_folds(args.out)


def _run_chip(args: argparse.Namespace) -> int:
    from flashrna.training.cli import run_training

    config = chip_config(
        flashrna_directory(args.model),
        args.shards,
        mode=args.mode,
        head=args.head,
        assays=None if [a.lower() for a in args.assays] == ["all"] else args.assays,
        genome=args.genome,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        trunk_lr_scale=args.trunk_lr_scale,
        config=args.config,
        config_key=args.config_key,
        overrides=args.overrides,
        seed=args.seed,
    )
    return run_training(args, config)


# --------------------------------------------------------------------------------------------
# halflife and te
# --------------------------------------------------------------------------------------------


def add_property_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``finetune halflife`` and ``finetune te``."""
    d = rnaprops.PropertyConfig()
    parser.add_argument(
        "--model", required=True, help="pretrained model directory or official checkpoint (.ckpt)"
    )
    parser.add_argument("--out", required=True, help="output directory (fold<k>/ inside)")
    parser.add_argument(
        "--folds",
        nargs="+",
        type=int,
        help="test folds to run [default: all]; folds already done are skipped",
    )
    parser.add_argument(
        "--mode", choices=rnaprops.MODES, default=d.mode, help="train the head, or all"
    )
    parser.add_argument("--pooling", choices=rnaprops.POOLINGS, default=d.pooling)
    parser.add_argument("--hidden", type=int, default=d.hidden, help="MLP hidden units")
    parser.add_argument("--dropout", type=float, default=d.dropout)
    parser.add_argument("--epochs", type=int, default=d.epochs, help="at most this many epochs")
    parser.add_argument("--patience", type=int, default=d.patience, help="early-stopping epochs")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr, help="head learning rate")
    parser.add_argument("--trunk-lr", type=float, default=d.trunk_lr, help="trunk LR (full mode)")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument(
        "--cache-dir", help="embedding cache root (head mode) [default: <out>/embeddings]"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--overwrite", action="store_true", help="rerun folds already done")
    parser.add_argument(
        "--restart-finished",
        action="store_true",
        help="if --out holds a finished run (pearson.csv), move it to OUT.replaced-<time> and "
        "start afresh; the workflow passes this when it asks for the results again",
    )


def run_property_cli(args: argparse.Namespace, data: rnaprops.RnaData) -> None:
    """Run the folds asked for on ``data``, then aggregate the folds done so far."""
    config = rnaprops.PropertyConfig(
        mode=args.mode,
        pooling=args.pooling,
        hidden=args.hidden,
        dropout=args.dropout,
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        lr=args.lr,
        trunk_lr=args.trunk_lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
    )
    if args.restart_finished:
        set_aside_finished(args.out, "pearson.csv")
    rnaprops.finetune_property(
        flashrna_directory(args.model),
        data,
        args.out,
        config,
        folds=args.folds,
        cache_dir=args.cache_dir,
        device=args.device,
        overwrite=args.overwrite,
    )
