"""``flashrna report <what>``: the paper's tables and figures from one run's result files.

Every table is written as ``<out>/tableK.{md,csv,tex,html}`` (the HTML is what ``snakemake
--report`` shows); every figure as ``<out>/figureK.{png,pdf}``, Figure 2 with the plotted points
in ``figure2.csv``. This run's values stand beside the paper's (DESIGN §1); a value is the mean ±
SD (ddof 1) over replicates (Tables 1-3, Figure 2) or folds (Table 4) where there are several,
and a footer names the run, its config, the value space and the data (demo or real).

Inputs, relative to the run's results directory (``--results``; the workflow's layout). A model
name is a directory under ``eval/tracks`` (Table 1), ``eval/eqtl`` (Table 2, Figure 2) or
``eval/chip`` (Table 3): ``member<k>`` for FlashRNA replicates, ``ensemble<n>``, ``distilled``,
``borzoi<k>``, ``flashzoi<k>``. Names given on the command line are required; without them the
ones present are used, and a baseline with none present is shown as "not run".

========  ====================================================================================
table1    ``eval/tracks/<model>/summary.json`` (evaluate-tracks): ``assays.<assay>.counts
          .values`` (``--space``), one value per model the summary holds; rows FlashRNA
          (``--replicates``), Borzoi, Flashzoi
table2    ``eval/eqtl/<model>/summary.json`` (eqtl-benchmark): ``spearman_mean``; same rows
table3    ``eval/chip/<mode>/summary.json`` (evaluate-tracks of a ChIP fine-tuned model):
          assay ``CHIP``; rows Borzoi (``eval/chip/borzoi<k>``), FlashRNA head-only, full
table4    ``finetune/halflife/summary.json``, ``finetune/te/summary.json`` (finetune
          halflife/te): ``pearson_per_fold`` (each fold's mean over targets), mean ± SD
figure1   ``bench/compare.json`` (``flashrna bench compare``), drawn by
          :func:`flashrna.figure1.plot_figure1`
figure2   ``eval/eqtl/<model>/summary.json`` of replicates (size 1), ``ensemble<n>``,
          ``distilled`` and the baselines
========  ====================================================================================
"""

from __future__ import annotations

import argparse
import csv
import html
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flashrna.utils import FlashRNAError, atomic_file, atomic_path, read_json

# DESIGN §1: the paper's values, (mean, SD) with SD None where the paper gives none.
PAPER_TABLE1 = {
    "Borzoi": {"RNA": (0.654, 0.003), "DNASE": (0.820, 0.003), "ATAC": (0.643, 0.015)},
    "Flashzoi": {"RNA": (0.658, 0.003), "DNASE": (0.833, 0.001), "ATAC": (0.630, 0.021)},
    "FlashRNA": {"RNA": (0.647, 0.002), "DNASE": (0.845, 0.001), "ATAC": (0.711, 0.001)},
}
PAPER_TABLE2 = {"Borzoi": (0.399, 0.003), "Flashzoi": (0.398, 0.012), "FlashRNA": (0.406, 0.005)}
PAPER_TABLE3 = {
    "Borzoi": (0.595, 0.001),
    "FlashRNA head-only": (0.574, 0.001),
    "FlashRNA full": (0.593, 0.001),
}
PAPER_TABLE4 = {
    ("Half-life", "Saluki"): (0.62, None),
    ("Half-life", "Saluki + annotations"): (0.77, None),
    ("Half-life", "FlashRNA"): (0.81, None),
    ("TE", "RiboNN"): (0.66, None),
    ("TE", "RiboNN + annotations"): (0.71, None),
    ("TE", "FlashRNA"): (0.73, None),
}
PAPER_FIGURE2 = {1: 0.406, 4: 0.440, 16: 0.454}
PAPER_DISTILLED = 0.452  # 16 members distilled into one model
ASSAYS = {"RNA": "RNA", "DNASE": "DNase", "ATAC": "ATAC"}  # summary.json key -> column label
SPACES = {
    "counts": "inverse-transformed counts (as the paper)",
    "squashed": "the stored (squashed) target scale",
    "log": "log2(1 + inverse-transformed counts)",
}
DATA = {
    "demo": "demo (the embedded synthetic data set; not comparable with the paper's numbers)",
    "real": "real (the Borzoi, GTEx, Saluki and RiboNN data)",
}
NOT_RUN = "not run"


# --------------------------------------------------------------------------------------------
# A table: cells of values, the paper's values, four renderings
# --------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """This run's values of one table cell (None: not run) and the paper's (mean, SD)."""

    values: list[float] | None
    paper: tuple[float, float | None] | None = None

    @property
    def finite(self) -> list[float]:
        return [v for v in self.values or [] if v is not None and math.isfinite(v)]

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.finite) if self.finite else None

    @property
    def sd(self) -> float | None:
        return statistics.stdev(self.finite) if len(self.finite) > 1 else None

    @property
    def status(self) -> str:
        return NOT_RUN if self.values is None else "ok" if self.finite else "no value"

    def text(self, digits: int) -> str:
        if self.mean is None:
            return NOT_RUN if self.values is None else "n/a"
        return format_value(self.mean, self.sd, digits)

    def paper_text(self, digits: int) -> str:
        return "–" if self.paper is None else format_value(*self.paper, digits)


def format_value(mean: float, sd: float | None, digits: int = 3) -> str:
    """``0.647 ± 0.002``, or ``0.647`` without an SD."""
    return f"{mean:.{digits}f}" if sd is None else f"{mean:.{digits}f} ± {sd:.{digits}f}"


@dataclass
class Table:
    """Rows (labels under ``row_headers``) by metric columns, each with the paper's value."""

    name: str
    title: str
    row_headers: list[str]
    columns: list[str]
    rows: list[tuple[list[str], dict[str, Cell]]] = field(default_factory=list)
    footer: list[str] = field(default_factory=list)
    digits: int = 3
    paper_digits: int = 3

    def add(self, labels: Sequence[str], cells: dict[str, Cell]) -> None:
        self.rows.append((list(labels), cells))

    def header(self) -> list[str]:
        out = [*self.row_headers, "n"]
        for column in self.columns:
            out += [f"{column} (this run)", f"{column} (paper)"]
        return out

    def body(self) -> list[list[str]]:
        """Rows of display strings, as :meth:`header`."""
        out = []
        for labels, cells in self.rows:
            counts = {len(c.finite) for c in cells.values() if c.status == "ok"}
            line = [*labels, str(max(counts)) if counts else "–"]
            for column in self.columns:
                line += [
                    cells[column].text(self.digits),
                    cells[column].paper_text(self.paper_digits),
                ]
            out.append(line)
        return out

    def markdown(self) -> str:
        header, body = self.header(), self.body()
        lines = [f"**{self.title}**", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "|".join("---" for _ in header) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in body]
        lines += ["", *(f"- {line}" for line in self.footer)]
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        header, body = self.header(), self.body()
        spec = "l" * len(self.row_headers) + "r" * (len(header) - len(self.row_headers))
        lines = [
            "% flashrna report: needs \\usepackage{booktabs}",
            "\\begin{table}[ht]",
            "\\centering",
            f"\\caption{{{_latex(self.title)}}}",
            f"\\label{{tab:{self.name}}}",
            f"\\begin{{tabular}}{{{spec}}}",
            "\\toprule",
            " & ".join(_latex(h) for h in header) + " \\\\",
            "\\midrule",
            *(" & ".join(_latex(c) for c in row) + " \\\\" for row in body),
            "\\bottomrule",
            "\\end{tabular}",
            "",
            "\\smallskip",
            "{\\footnotesize",
            *(_latex(line) + "\\\\" for line in self.footer),
            "}",
            "\\end{table}",
        ]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        header, body = self.header(), self.body()
        cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body
        )
        notes = "".join(f"<li>{html.escape(line)}</li>" for line in self.footer)
        return (
            "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.name)}</title><style>"
            "body{font-family:sans-serif}table{border-collapse:collapse}"
            "th,td{padding:4px 10px;border-bottom:1px solid #ccc;text-align:right}"
            "th:nth-child(-n+%d),td:nth-child(-n+%d){text-align:left}"
            "</style></head><body>\n"
            % (len(self.row_headers), len(self.row_headers))
            + f"<p><b>{html.escape(self.title)}</b></p>\n"
            f"<table><thead><tr>{cells}</tr></thead><tbody>{rows}</tbody></table>\n"
            f"<ul>{notes}</ul>\n</body></html>\n"
        )

    def records(self) -> list[dict[str, Any]]:
        """One CSV record per row and metric, with numbers at full precision."""
        out = []
        for labels, cells in self.rows:
            for column in self.columns:
                cell = cells[column]
                paper_mean, paper_sd = cell.paper or (None, None)
                out.append(
                    {
                        **{h.lower(): v for h, v in zip(self.row_headers, labels, strict=True)},
                        "metric": column,
                        "n": len(cell.finite),
                        "mean": cell.mean,
                        "sd": cell.sd,
                        "values": ";".join(repr(v) for v in cell.finite),
                        "paper_mean": paper_mean,
                        "paper_sd": paper_sd,
                        "status": cell.status,
                    }
                )
        return out

    def write(self, out_dir: str | Path) -> list[Path]:
        """``<name>.md``, ``.csv``, ``.tex``, ``.html`` in ``out_dir``, each written atomically."""
        out_dir = Path(out_dir)
        paths = []
        for suffix, text in (("md", self.markdown()), ("tex", self.latex()), ("html", self.html())):
            paths.append(out_dir / f"{self.name}.{suffix}")
            with atomic_file(paths[-1]) as handle:
                handle.write(text)
        records = self.records()
        paths.append(out_dir / f"{self.name}.csv")
        with atomic_file(paths[-1]) as handle:
            writer = csv.DictWriter(handle, fieldnames=list(records[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(records)
        return paths


_LATEX_SPECIAL = {
    "\\": "\\textbackslash{}",
    "&": "\\&",
    "%": "\\%",
    "$": "\\$",
    "#": "\\#",
    "_": "\\_",
    "{": "\\{",
    "}": "\\}",
    "~": "\\textasciitilde{}",
    "^": "\\textasciicircum{}",
    "±": "$\\pm$",
    "ρ": "$\\rho$",
    "–": "--",
    "×": "$\\times$",
}


def _latex(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


# --------------------------------------------------------------------------------------------
# Reading a run's results
# --------------------------------------------------------------------------------------------


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def found_models(directory: Path, pattern: str) -> list[str]:
    """Names of the subdirectories of ``directory`` matching ``pattern`` (a regex) that hold a
    ``summary.json``, in natural order."""
    if not directory.is_dir():
        return []
    names = [
        p.name
        for p in directory.iterdir()
        if re.fullmatch(pattern, p.name) and (p / "summary.json").is_file()
    ]
    return sorted(names, key=_natural)


def model_summaries(
    directory: Path, names: Sequence[str] | None, pattern: str, what: str, required: bool
) -> list[dict[str, Any]] | None:
    """The ``summary.json`` of each named model under ``directory``; without names, of every
    model found there matching ``pattern``. None when nothing is found and not ``required``
    (a row that was not run); an error naming the file when a needed file is missing."""
    if names is None:
        names = found_models(directory, pattern)
        if not names:
            if required:
                raise FlashRNAError(
                    f"{directory}: no {what} results (expected <name>/summary.json, e.g. "
                    f"{directory / 'member0' / 'summary.json'})"
                )
            return None
    elif not names:
        return None  # named explicitly as none: not run
    return summaries_of(directory, names)


def summaries_of(directory: Path, names: Sequence[str]) -> list[dict[str, Any]]:
    """The ``summary.json`` of each named model under ``directory`` (all required)."""
    return [read_json(directory / name / "summary.json") for name in names]


def track_values(summaries: list[dict] | None, assay: str, space: str) -> list[float] | None:
    """The per-model Pearson values of ``assay`` in ``space`` over evaluate-tracks summaries
    (each may hold several models); None when not run, [] when the assay was not evaluated."""
    if summaries is None:
        return None
    values: list[float] = []
    for summary in summaries:
        entry = summary.get("assays", {}).get(assay)
        if entry is not None:
            values += entry[space]["values"]
    return values


def model_rows(root: Path, args: argparse.Namespace) -> dict[str, list[dict] | None]:
    """Summaries of the baselines (None: not run) and of the FlashRNA replicates (required)
    under ``root``, named by ``--borzoi``, ``--flashzoi``, ``--replicates`` or found there."""
    return {
        "Borzoi": model_summaries(root, args.borzoi, r"borzoi\d+", "Borzoi", False),
        "Flashzoi": model_summaries(root, args.flashzoi, r"flashzoi\d+", "Flashzoi", False),
        "FlashRNA": model_summaries(root, args.replicates, r"member\d+", "FlashRNA", True),
    }


def eqtl_values(summaries: list[dict] | None) -> list[float] | None:
    return None if summaries is None else [s["spearman_mean"] for s in summaries]


def footer(args: argparse.Namespace, space: str | None = None) -> list[str]:
    """The lines every table and figure ends with: run, config, value space, data."""
    lines = [
        f"Run: {args.run_name or Path(args.results).name}; config: {args.config or 'not given'}; "
        f"results: {args.results}.",
        f"Data: {DATA.get(args.data, 'not stated (--data demo|real)')}.",
    ]
    if space:
        lines.insert(1, f"Values: Pearson R in {SPACES[space]}.")
    return lines


# --------------------------------------------------------------------------------------------
# The tables
# --------------------------------------------------------------------------------------------


def table1(args: argparse.Namespace) -> Table:
    """Pearson R per assay on the test fold: FlashRNA replicates and the baselines."""
    root = Path(args.results) / "eval" / "tracks"
    rows = model_rows(root, args)
    table = Table(
        "table1",
        "Table 1. Pearson R per assay on held-out windows",
        ["Model"],
        list(ASSAYS.values()),
    )
    for model, summaries in rows.items():
        table.add(
            [model],
            {
                label: Cell(track_values(summaries, assay, args.space), PAPER_TABLE1[model][assay])
                for assay, label in ASSAYS.items()
            },
        )
    first = rows["FlashRNA"][0]
    table.footer = [
        f"Per track over all bins of the {first.get('windows')} windows of the "
        f"{first.get('split')} split (test = fold3), forward + reverse-complement "
        "averaged predictions, then the mean per assay; this run: mean ± SD (ddof 1) over the "
        "n replicates; paper: mean ± SD of 4 replicates.",
        *footer(args, args.space),
    ]
    return table


def table2(args: argparse.Namespace) -> Table:
    """GTEx eQTL Spearman for one model (mean ± SD over replicates) and the baselines."""
    root = Path(args.results) / "eval" / "eqtl"
    rows = model_rows(root, args)
    column = "Spearman ρ"
    table = Table(
        "table2",
        "Table 2. GTEx fine-mapped eQTLs: Spearman ρ of logSED with the effect size",
        ["Model"],
        [column],
    )
    for model, summaries in rows.items():
        table.add([model], {column: Cell(eqtl_values(summaries), PAPER_TABLE2[model])})
    first = rows["FlashRNA"][0]
    table.footer = [
        f"One model per replicate; ρ per GTEx tissue with more than {first.get('min_variants')} "
        f"scored eQTLs (PIP > {first.get('min_pip')}), mean over the {first.get('tissues')} "
        "such tissues; this run: mean ± SD (ddof 1) over the n replicates.",
        *footer(args),
    ]
    return table


def table3(args: argparse.Namespace) -> Table:
    """ChIP-seq fine-tuning (head only, full) and Borzoi on the ChIP tracks."""
    root = Path(args.results) / "eval" / "chip"
    modes = args.modes if args.modes is not None else found_models(root, r"head|full")
    if not modes:
        raise FlashRNAError(f"{root}: no ChIP fine-tuning results (head/summary.json, ...)")
    rows = {"Borzoi": model_summaries(root, args.borzoi, r"borzoi\d+", "Borzoi", False)}
    for mode in ("head", "full"):
        label = "FlashRNA head-only" if mode == "head" else "FlashRNA full"
        rows[label] = summaries_of(root, [mode]) if mode in modes else None
    column = "ChIP-seq"
    table = Table(
        "table3",
        "Table 3. ChIP-seq fine-tuning: Pearson R on the test fold (fold3)",
        ["Model"],
        [column],
    )
    for label, summaries in rows.items():
        table.add(
            [label],
            {column: Cell(track_values(summaries, "CHIP", args.space), PAPER_TABLE3[label])},
        )
    table.footer = [
        "A new head on pretrained replicate 0 for the ChIP tracks, trunk frozen (head-only) or "
        "trained (full); evaluated as Table 1 on the CHIP tracks; paper: 3 epochs, mean ± SD.",
        *footer(args, args.space),
    ]
    return table


def table4(args: argparse.Namespace) -> Table:
    """RNA half-life (Saluki data) and translation efficiency (RiboNN data)."""
    root = Path(args.results) / "finetune"
    column = "Pearson R"
    table = Table(
        "table4",
        "Table 4. RNA half-life and translation efficiency (TE) from sequence: Pearson R",
        ["Task", "Model"],
        [column],
    )
    notes = []
    for task, directory, data in (("Half-life", "halflife", "Saluki"), ("TE", "te", "RiboNN")):
        summary = read_json(root / directory / "summary.json")
        per_fold = [summary["pearson_per_fold"][str(f)] for f in summary["folds"]]
        for model in (data, f"{data} + annotations", "FlashRNA"):
            values = per_fold if model == "FlashRNA" else None
            table.add([task, model], {column: Cell(values, PAPER_TABLE4[(task, model)])})
        notes.append(
            f"{task}: test folds {', '.join(map(str, summary['folds']))} of "
            f"{summary['num_folds']}, {len(summary['per_target_mean'])} target(s)"
        )
    table.footer = [
        "FlashRNA: a pooling head on the pretrained trunk, k-fold cross-validation; this run: "
        "mean ± SD (ddof 1) over the n test folds of the per-fold Pearson R (mean over "
        "targets). Saluki and RiboNN are the paper's published baselines (not rerun here).",
        "; ".join(notes) + ".",
        *footer(args),
    ]
    table.paper_digits = 2  # the paper gives two decimals here
    return table


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def save_figure(figure, path: str | Path) -> list[Path]:
    """Write a matplotlib figure as ``path`` (PNG) and as PDF beside it, atomically."""
    path = Path(path)
    paths = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    for target in paths:
        with atomic_path(target) as tmp:
            figure.savefig(tmp, dpi=200, format=target.suffix[1:])
    return paths


@dataclass
class Point:
    """One point (or, with ``size`` None, one horizontal reference line) of Figure 2."""

    series: str
    source: str  # "this run" or "paper"
    size: int | None
    cell: Cell


def figure2_points(args: argparse.Namespace) -> list[Point]:
    """This run's points (replicates at size 1, ensembles, distilled, baselines) and the
    paper's (Figure 2; Borzoi from Table 2)."""
    root = Path(args.results) / "eval" / "eqtl"
    rows = model_rows(root, args)
    points = [Point("FlashRNA", "this run", 1, Cell(eqtl_values(rows["FlashRNA"])))]
    ensembles = found_models(root, r"ensemble\d+") if args.ensembles is None else args.ensembles
    for name in ensembles:
        match = re.fullmatch(r"ensemble(\d+)", name)
        if match is None:
            raise FlashRNAError(f"--ensembles: '{name}' is not ensemble<size>")
        values = eqtl_values(summaries_of(root, [name]))
        points.append(Point("FlashRNA", "this run", int(match[1]), Cell(values)))
    distilled = found_models(root, "distilled") if args.distilled is None else args.distilled
    if distilled:
        values = eqtl_values(summaries_of(root, distilled))
        points.append(Point("FlashRNA distilled", "this run", 1, Cell(values)))
    for label in ("Borzoi", "Flashzoi"):
        points.append(Point(label, "this run", None, Cell(eqtl_values(rows[label]))))
    points += [Point("FlashRNA", "paper", n, Cell([v])) for n, v in PAPER_FIGURE2.items()]
    points.append(Point("FlashRNA distilled", "paper", 1, Cell([PAPER_DISTILLED])))
    points.append(Point("Borzoi", "paper", None, Cell([PAPER_TABLE2["Borzoi"][0]])))
    return points


def plot_figure2(points: list[Point], notes: list[str], path: str | Path) -> list[Path]:
    """eQTL ρ against ensemble size (log2 axis): this run in colour, the paper in grey."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 5.0), layout="constrained")
    ax = figure.subplots()
    sizes = sorted({p.size for p in points if p.size is not None})
    styles = {"this run": {"ls": "-", "mfc": None}, "paper": {"ls": "--", "mfc": "white"}}
    colours = {"this run": "#1f77b4", "paper": "0.55"}
    teacher = max((p.size for p in points if p.source == "this run" and p.size), default=1)
    for source in ("paper", "this run"):
        curve = sorted(
            (
                p
                for p in points
                if p.source == source and p.series == "FlashRNA" and p.cell.mean is not None
            ),
            key=lambda p: p.size,
        )
        if curve:
            ax.errorbar(
                [p.size for p in curve],
                [p.cell.mean for p in curve],
                yerr=[p.cell.sd or 0.0 for p in curve],
                color=colours[source],
                marker="o",
                ls=styles[source]["ls"],
                mfc=styles[source]["mfc"],
                capsize=3,
                label=f"FlashRNA ensemble ({source})",
            )
        for p in points:
            if p.source != source or p.series != "FlashRNA distilled" or p.cell.mean is None:
                continue
            ax.errorbar(
                [1],
                [p.cell.mean],
                yerr=[p.cell.sd or 0.0],
                color="#d62728" if source == "this run" else "0.55",
                marker="*",
                ms=13,
                mfc=styles[source]["mfc"],
                ls="none",
                label=f"distilled into 1 model from {teacher if source == 'this run' else 16} "
                f"({source})",
            )
    lines = {"Borzoi": "#7f7f7f", "Flashzoi": "#2ca02c"}
    for p in points:
        if p.size is not None or p.cell.mean is None:
            continue
        colour = lines[p.series] if p.source == "this run" else "0.7"
        ls = "-." if p.source == "this run" else ":"
        ax.axhline(p.cell.mean, color=colour, ls=ls, lw=1.3, label=f"{p.series} ({p.source})")
        if p.cell.sd:
            ax.axhspan(p.cell.mean - p.cell.sd, p.cell.mean + p.cell.sd, color=colour, alpha=0.12)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("ensemble size (models)")
    ax.set_ylabel("eQTL Spearman ρ (mean over tissues)")
    ax.set_title("Figure 2. GTEx eQTL Spearman ρ against ensemble size", fontsize=11)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: "(paper)" in labels[i])  # this run first
    ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=8, loc="best")
    not_run = [p.series for p in points if p.source == "this run" and p.cell.values is None]
    if not_run:
        notes = [f"This run: {' and '.join(not_run)} not run.", *notes]
    figure.text(0.01, 0.005, "\n".join(notes), fontsize=6.5, color="0.3", va="bottom")
    figure.get_layout_engine().set(rect=(0, 0.09, 1, 0.91))
    return save_figure(figure, path)


def write_points(points: list[Point], path: Path) -> None:
    with atomic_file(path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["series", "source", "size", "n", "mean", "sd", "values"])
        for p in points:
            writer.writerow(
                [
                    p.series,
                    p.source,
                    "" if p.size is None else p.size,
                    len(p.cell.finite),
                    "" if p.cell.mean is None else repr(p.cell.mean),
                    "" if p.cell.sd is None else repr(p.cell.sd),
                    NOT_RUN if p.cell.values is None else ";".join(map(repr, p.cell.finite)),
                ]
            )


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
        if name == "flashzoi":
            from flashrna.flashzoi_figure import add_flashzoi_arguments

            add_flashzoi_arguments(sub)


def _run_report(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if args.what.startswith("table"):
        table = {"table1": table1, "table2": table2, "table3": table3, "table4": table4}[args.what](
            args
        )
        paths = table.write(out)
        print(table.markdown())
    elif args.what == "figure1":
        from flashrna.figure1 import plot_figure1

        source = Path(args.compare or Path(args.results) / "bench" / "compare.json")
        paths = plot_figure1(read_json(source), out / "figure1.png")
    elif args.what == "flashzoi":
        from flashrna.flashzoi_figure import write_flashzoi

        paths = write_flashzoi(args)
    else:
        points = figure2_points(args)
        write_points(points, out / "figure2.csv")
        paths = [out / "figure2.csv", *plot_figure2(points, footer(args), out / "figure2.png")]
    for path in paths:
        print(f"wrote {path}")
