"""The ``flashrna report <what>`` adapter: options -> :mod:`flashrna.report.tables` and
:mod:`flashrna.report.figures`."""

from __future__ import annotations

import argparse
from pathlib import Path

from flashrna.report.figures import figure2, plot_figure1
from flashrna.report.flashzoi import add_flashzoi_arguments, series_of, write_flashzoi
from flashrna.report.tables import (
    DATA,
    SPACES,
    ModelNames,
    RunInfo,
    table1,
    table2,
    table3,
    table4,
)
from flashrna.utils import read_json

# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

WHAT = {
    "table1": "Table 1: Pearson R per assay (RNA, DNase, ATAC), FlashRNA and baselines",
    "table2": "Table 2: GTEx eQTL Spearman ρ, FlashRNA (one model) and baselines",
    "table3": "Table 3: ChIP-seq fine-tuning, head only and full",
    "table4": "Table 4: RNA half-life and translation efficiency Pearson R",
    "figure1": "Figure 1: FlashRNA vs Borzoi speed and memory (from bench compare's JSON)",
    "figure2": "Figure 2: eQTL Spearman ρ against ensemble size",
    "flashzoi": "Flashzoi's benchmarks for every model: a figure and a table",
}


MODEL_DIRS = {"table1": "eval/tracks", "table2": "eval/eqtl", "table3": "eval/chip"}
MODEL_DIRS["figure2"] = MODEL_DIRS["table2"]


def register_report(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "The paper's tables (Markdown, CSV, LaTeX, HTML) and figures (PNG, PDF) from one run's "
        "results, with the paper's values beside this run's. See flashrna.report for the files "
        "each one reads."
    )
    subparsers = parser.add_subparsers(
        dest="what", required=True, metavar="{" + ",".join(WHAT) + "}"
    )
    for name, text in WHAT.items():
        sub = subparsers.add_parser(
            name,
            help=text,
            description=text + ".",
        )
        sub.set_defaults(run=_run_report)
        sub.add_argument("--results", required=True, help="the run's results directory")
        sub.add_argument("--out", required=True, help="output directory (tables/ or figures/)")
        sub.add_argument(
            "--run-name", help="the run's name (default: the results directory's name)"
        )
        sub.add_argument("--config", help="the run's config file(s), named in the footer")
        sub.add_argument("--data", choices=sorted(DATA), help="demo or real data, for the footer")
        if name == "figure1":
            sub.add_argument("--compare", help="bench compare JSON (RESULTS/bench/compare.json)")
        if name in MODEL_DIRS:
            names = f"directory names under RESULTS/{MODEL_DIRS[name]} (default: those present)"
            if name != "table3":
                sub.add_argument("--replicates", nargs="+", help="FlashRNA replicates: " + names)
                sub.add_argument(
                    "--released", nargs="*", help="the released weights' replicates: " + names
                )
            for baseline in ("borzoi", "flashzoi")[: 1 if name == "table3" else 2]:
                sub.add_argument(
                    f"--{baseline}",
                    nargs="*",
                    help=f"{baseline.capitalize()} replicates, none = not run: " + names,
                )
        if name in ("table1", "table3"):
            sub.add_argument(
                "--space",
                choices=list(SPACES),
                default="counts",
                help="value space (default: counts)",
            )
        if name == "table3":
            sub.add_argument(
                "--modes",
                nargs="*",
                choices=("head", "full"),
                help="fine-tuning modes under RESULTS/eval/chip (default: those present)",
            )
        if name == "figure2":
            sub.add_argument("--ensembles", nargs="*", help="ensemble<n> " + names)
            sub.add_argument("--distilled", nargs="*", help="the distilled model: " + names)
            sub.add_argument(
                "--released-ensembles", nargs="*", help="released-ensemble<n> " + names
            )
            sub.add_argument(
                "--released-distilled", nargs="*", help="the released distilled model: " + names
            )
        if name == "flashzoi":
            add_flashzoi_arguments(sub)


def _run_report(args: argparse.Namespace) -> None:
    out = Path(args.out)
    run = RunInfo(Path(args.results), args.run_name, args.config, args.data)
    names = ModelNames(
        getattr(args, "replicates", None),
        getattr(args, "borzoi", None),
        getattr(args, "flashzoi", None),
        getattr(args, "released", None),
    )
    if args.what.startswith("table"):
        table = {
            "table1": lambda: table1(run, names, args.space),
            "table2": lambda: table2(run, names),
            "table3": lambda: table3(run, args.borzoi, args.modes, args.space),
            "table4": lambda: table4(run),
        }[args.what]()
        paths = table.write(out)
        print(table.markdown())
    elif args.what == "figure1":
        source = Path(args.compare or Path(args.results) / "bench" / "compare.json")
        paths = plot_figure1(read_json(source), out / "figure1.png")
    elif args.what == "flashzoi":
        series = series_of(
            run.results,
            args.replicates,
            args.ensembles,
            args.distilled,
            args.borzoi,
            args.flashzoi,
        )
        paths = write_flashzoi(run, out, series, args.tables)
    else:
        paths = figure2(
            run,
            out,
            names=names,
            ensembles=args.ensembles,
            distilled=args.distilled,
            released_ensembles=args.released_ensembles,
            released_distilled=args.released_distilled,
        )
    for path in paths:
        print(f"wrote {path}")
