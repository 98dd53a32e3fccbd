"""The one command line: ``flashrna <step> [options]``.

Step names match the workflow's rule names. Each step lives in the module that owns its concern;
:data:`STEPS` names its register function, which adds the step's options to ``parser`` and sets
``parser.set_defaults(run=adapter)``; the adapter calls the step's library function. Modules are
imported only for the step that runs, so ``flashrna --help`` is instant and a step pays only for
what it uses.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from flashrna import __version__

# step -> ("module:register function", one-line help), ordered as a user meets them. Each
# register function adds the step's options and sets ``run`` to the step's adapter, which calls
# the step's library function. A module is imported only for the step that runs.
STEPS: dict[str, tuple[str, str]] = {
    "demo-data": (
        "flashrna.demo:register_demo_data",
        "generate the embedded demo data set (genome, bucket, GTF, eQTLs)",
    ),
    "download": (
        "flashrna.download:register_download",
        "fetch data from a manifest (gsutil/gcloud/https), resumable",
    ),
    "convert": (
        "flashrna.data.convert:register_convert",
        "convert one Borzoi TFRecord file into a training shard",
    ),
    "make-dataset": (
        "flashrna.data.convert:register_make_dataset",
        "build shards from a FASTA, a BED of windows and bigWigs",
    ),
    "model-info": (
        "flashrna.model:register_model_info",
        "parameter count per block and FLOPs per example",
    ),
    "import-model": (
        "flashrna.zoo.importer:register_import_model",
        "a released FlashRNA/Borzoi/Flashzoi as a model dir",
    ),
    "train": (
        "flashrna.training.cli:register_train",
        "train a model from scratch (resumable, multi-GPU via torchrun)",
    ),
    "predict": (
        "flashrna.predict:register_predict",
        "predict tracks for windows with a model or an ensemble",
    ),
    "ensemble-predict": (
        "flashrna.predict:register_ensemble_predict",
        "write an ensemble's predictions as target shards",
    ),
    "distill": (
        "flashrna.training.cli:register_distill",
        "train one student on an ensemble's predictions",
    ),
    "finetune": (
        "flashrna.finetune.cli:register_finetune",
        "fine-tune on ChIP-seq tracks, RNA half-life or TE",
    ),
    "evaluate-tracks": (
        "flashrna.evaluate.tracks:register_evaluate_tracks",
        "track Pearson on held-out windows (Tables 1, 3)",
    ),
    "score-variants": (
        "flashrna.variants:register_score_variants",
        "SED/logSED variant effects per gene and track",
    ),
    "plot-locus": (
        "flashrna.plot_locus:register_plot_locus",
        "plot predicted tracks around a gene, region or variant (REF/ALT), exons beneath",
    ),
    "eqtl-benchmark": (
        "flashrna.evaluate.eqtl:register_eqtl_benchmark",
        "GTEx fine-mapped eQTL Spearman (Table 2, Figure 2)",
    ),
    "attribute": (
        "flashrna.attribute:register_attribute",
        "input x gradient and ISM of a gene or track window",
    ),
    "eqtl-prioritisation": (
        "flashrna.evaluate.prioritisation:register_eqtl_prioritisation",
        "GTEx eQTLs vs distance-matched negatives, AUROC per tissue (Flashzoi Fig. 2b)",
    ),
    "crispri-benchmark": (
        "flashrna.evaluate.crispri:register_crispri_benchmark",
        "CRISPRi enhancer-gene pairs from input gradients, AUPRC (Flashzoi Fig. 2d)",
    ),
    "flowfish-benchmark": (
        "flashrna.evaluate.flowfish:register_flowfish_benchmark",
        "Variant-FlowFISH PPIF edits, predicted vs measured Pearson (Flashzoi Fig. 2c)",
    ),
    "report": (
        "flashrna.report.cli:register_report",
        "the paper's tables and figures from this run's results",
    ),
    "bench": (
        "flashrna.bench:register_bench",
        "speed and memory benchmarks (model, data, compare, gpu)",
    ),
}


def _top_level_help() -> str:
    width = max(map(len, STEPS))
    lines = [
        f"flashrna {__version__}: train, evaluate and use FlashRNA sequence-to-function models.",
        "",
        "usage: flashrna <step> [options]      (flashrna <step> --help for a step's options)",
        "",
        "steps:",
        *(f"  {name:<{width}}  {text}" for name, (_, text) in STEPS.items()),
        "",
        "options:",
        "  -h, --help     show this message",
        "  --version      print the version",
    ]
    return "\n".join(lines)


def build_step_parser(step: str) -> argparse.ArgumentParser:
    """The parser of one step, with its module's options registered."""
    target, text = STEPS[step]
    parser = argparse.ArgumentParser(
        prog=f"flashrna {step}",
        description=text[0].upper() + text[1:] + ".",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="warnings and errors only: no progress bars, no summary line",
    )
    module_name, register = target.split(":")
    getattr(importlib.import_module(module_name), register)(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_level_help())
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    step = argv[0]
    if step not in STEPS:
        print(f"flashrna: unknown step '{step}'\n\n{_top_level_help()}", file=sys.stderr)
        return 2

    from flashrna.utils import FlashRNAError, setup_logging

    parser = build_step_parser(step)
    args = parser.parse_args(argv[1:])
    setup_logging(args.verbose, args.quiet)
    if args.quiet:
        os.environ["TQDM_DISABLE"] = "1"  # bars a step draws without a progress option
    args.progress = not args.quiet
    started = time.monotonic()
    try:
        status = args.run(args)
    except FlashRNAError as err:
        print(f"flashrna {step}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"flashrna {step}: interrupted", file=sys.stderr)
        return 130
    if not status and not args.quiet:
        print(summary_line(step, args, time.monotonic() - started), file=sys.stderr)
    return int(status or 0)


def summary_line(step: str, args: argparse.Namespace, seconds: float) -> str:
    """The line a step ends with on success: its name, wall time and where its output went."""
    minutes, rest = divmod(round(seconds), 60)
    took = f"{minutes} min {rest} s" if minutes else f"{seconds:.1f} s"
    out = getattr(args, "out", None)
    return f"flashrna {step}: done in {took}" + (f"; output in {out}" if out else "")


if __name__ == "__main__":
    sys.exit(main())
