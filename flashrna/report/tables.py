"""Tables 1-4: the paper's values beside this run's, rendered as Markdown, CSV, LaTeX and HTML."""

from __future__ import annotations

import csv
import html
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flashrna.paper import PAPER_TABLE1, PAPER_TABLE2, PAPER_TABLE3, PAPER_TABLE4
from flashrna.utils import FlashRNAError, atomic_file, read_json

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
RELEASED = "FlashRNA (released weights)"  # the published checkpoints, evaluated here


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


def model_rows(root: Path, names: ModelNames) -> dict[str, list[dict] | None]:
    """Summaries of the baselines (None: not run), of the FlashRNA replicates (required) and,
    when present, of the released weights' replicates under ``root``, as ``names`` selects
    them."""
    rows = {
        "Borzoi": model_summaries(root, names.borzoi, r"borzoi\d+", "Borzoi", False),
        "Flashzoi": model_summaries(root, names.flashzoi, r"flashzoi\d+", "Flashzoi", False),
        "FlashRNA": model_summaries(root, names.replicates, r"member\d+", "FlashRNA", True),
    }
    released = model_summaries(root, names.released, r"released\d+", RELEASED, False)
    if released is not None:
        rows[RELEASED] = released
    return rows


def eqtl_values(summaries: list[dict] | None) -> list[float] | None:
    return None if summaries is None else [s["spearman_mean"] for s in summaries]


@dataclass(frozen=True)
class RunInfo:
    """The run a table or figure reports on: its results directory (the workflow's layout, see
    :mod:`flashrna.report`), its name, config file(s) and data (``demo`` or ``real``)."""

    results: Path
    name: str | None = None
    config: str | None = None
    data: str | None = None

    def footer(self, space: str | None = None) -> list[str]:
        """The lines every table and figure ends with: run, config, value space, data."""
        lines = [
            f"Run: {self.name or Path(self.results).name}; config: {self.config or 'not given'}; "
            f"results: {self.results}.",
            f"Data: {DATA.get(self.data, 'not stated (--data demo|real)')}.",
        ]
        if space:
            lines.insert(1, f"Values: Pearson R in {SPACES[space]}.")
        return lines


@dataclass(frozen=True)
class ModelNames:
    """Which evaluated models form a table's rows: directory names under the table's evaluation
    folder. ``None``: those present (``member<k>``, ``borzoi<k>``, ``flashzoi<k>``); an empty
    list: not run."""

    replicates: Sequence[str] | None = None
    borzoi: Sequence[str] | None = None
    flashzoi: Sequence[str] | None = None
    released: Sequence[str] | None = None  # ``released<k>``: the published checkpoints


PRESENT = ModelNames()  # every model found under the evaluation folder

# --------------------------------------------------------------------------------------------
# The tables
# --------------------------------------------------------------------------------------------


def table1(run: RunInfo, names: ModelNames = PRESENT, space: str = "counts") -> Table:
    """Pearson R per assay on the test fold: FlashRNA replicates and the baselines."""
    root = Path(run.results) / "eval" / "tracks"
    rows = model_rows(root, names)
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
                label: Cell(
                    track_values(summaries, assay, space),
                    PAPER_TABLE1.get(model, {}).get(assay),
                )
                for assay, label in ASSAYS.items()
            },
        )
    first = rows["FlashRNA"][0]
    table.footer = [
        f"Per track over all bins of the {first.get('windows')} windows of the "
        f"{first.get('split')} split (test = fold3), forward + reverse-complement "
        "averaged predictions, then the mean per assay; this run: mean ± SD (ddof 1) over the "
        "n replicates; paper: mean ± SD of 4 replicates.",
        *released_tracks_note(rows),
        *run.footer(space),
    ]
    return table


def released_tracks_note(rows: dict[str, list[dict] | None]) -> list[str]:
    """Table 1's footer line on what the released weights could be compared on: the test
    tracks their human head shares (by identifier) out of the tracks the replicates had."""
    if RELEASED not in rows:
        return []
    shared = rows[RELEASED][0].get("assays", {})
    every = rows["FlashRNA"][0].get("assays", {})
    counts = ", ".join(
        f"{label} {shared.get(a, {}).get('tracks', 0):,} of {every.get(a, {}).get('tracks', 0):,}"
        for a, label in ASSAYS.items()
    )
    return [
        f"{RELEASED}: the published checkpoints, evaluated here on the test tracks their human "
        f"head shares by identifier ({counts}); the other test tracks have no released "
        "counterpart and are not comparable (the released RNA tracks are named by ontology "
        "terms; only the GTEx ones are Borzoi's)."
    ]


def table2(run: RunInfo, names: ModelNames = PRESENT) -> Table:
    """GTEx eQTL Spearman for one model (mean ± SD over replicates) and the baselines."""
    root = Path(run.results) / "eval" / "eqtl"
    rows = model_rows(root, names)
    column = "Spearman ρ"
    table = Table(
        "table2",
        "Table 2. GTEx fine-mapped eQTLs: Spearman ρ of logSED with the effect size",
        ["Model"],
        [column],
    )
    for model, summaries in rows.items():
        table.add([model], {column: Cell(eqtl_values(summaries), PAPER_TABLE2.get(model))})
    first = rows["FlashRNA"][0]
    protocol = first.get("protocol_description") or (
        f"flashrna 0.1's logSED; tissues with more than {first.get('min_variants')} scored "
        f"eQTLs (PIP > {first.get('min_pip')})"
    )
    table.footer = [
        f"One model per replicate; ρ per GTEx tissue, mean over the {first.get('tissues')} "
        "tissues counted; this run: mean ± SD (ddof 1) over the n replicates.",
        f"Protocol: {protocol}.",
        *(
            [
                f"{RELEASED}: the published checkpoints; a tissue's tracks are those the model's "
                f"own gtex_tissue column names ({rows[RELEASED][0].get('tissues')} tissues)."
            ]
            if RELEASED in rows
            else []
        ),
        *run.footer(),
    ]
    return table


def table3(
    run: RunInfo,
    borzoi: Sequence[str] | None = None,
    modes: Sequence[str] | None = None,
    space: str = "counts",
) -> Table:
    """ChIP-seq fine-tuning (head only, full) and Borzoi on the ChIP tracks."""
    root = Path(run.results) / "eval" / "chip"
    modes = modes if modes is not None else found_models(root, r"head|full")
    if not modes:
        raise FlashRNAError(f"{root}: no ChIP fine-tuning results (head/summary.json, ...)")
    rows = {"Borzoi": model_summaries(root, borzoi, r"borzoi\d+", "Borzoi", False)}
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
            {column: Cell(track_values(summaries, "CHIP", space), PAPER_TABLE3[label])},
        )
    table.footer = [
        "A new head on pretrained replicate 0 for the ChIP tracks, trunk frozen (head-only) or "
        "trained (full); evaluated as Table 1 on the CHIP tracks; paper: 3 epochs, mean ± SD.",
        *run.footer(space),
    ]
    return table


def table4(run: RunInfo) -> Table:
    """RNA half-life (Saluki data) and translation efficiency (RiboNN data)."""
    root = Path(run.results) / "finetune"
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
        *run.footer(),
    ]
    table.paper_digits = 2  # the paper gives two decimals here
    return table
