"""The "Flashzoi figure" (``flashrna report flashzoi``): Flashzoi's four benchmarks (Hingerl et al.
2025, Fig. 2) for FlashRNA replicates, ensembles and the distilled model, beside Borzoi and
Flashzoi where they were run. PyTorch-free: it reads the benchmarks' result files.

Inputs, relative to ``--results`` (the workflow's layout), per model directory ``<name>``
(``member<k>``, ``ensemble<n>``, ``distilled``, ``borzoi<k>``, ``flashzoi<k>``):

==================  ===========================================================================
eval/eqtl           ``tissues.csv`` (``tissue spearman included``): eqtl-benchmark (panel a)
eval/prioritisation ``tissues.csv`` (``tissue auroc included``): eqtl-prioritisation (panel b)
eval/flowfish       ``metrics.csv`` (``cell_type element pearson pearson_low pearson_high``):
                    flowfish-benchmark (panel c)
eval/crispri        ``metrics.csv`` (``subset positive_rate auprc auprc_low auprc_high``):
                    crispri-benchmark (panel d)
==================  ===========================================================================

Series: FlashRNA (the replicates), FlashRNA ensemble <n>, FlashRNA distilled, Borzoi, Flashzoi
(their replicates). A series' value is the mean over its models (± SD over replicates in the
table); a model without a benchmark's file leaves that cell "not run".

Panels: (a) per-tissue eQTL Spearman ρ and (b) per-tissue eQTL prioritisation AUROC, each series
against a reference series (Borzoi, else Flashzoi, else the FlashRNA replicates), one point per
tissue, the diagonal drawn; (c) Variant-FlowFISH Pearson r per element; (d) CRISPRi AUPRC per
TSS-distance bin with the positive rate (chance) marked. Bars of a single model carry its
bootstrap 95 % interval, bars of several replicates ± SD.

Outputs: ``<out>/flashzoi_benchmarks.{png,pdf}`` and ``.csv`` (every plotted value);
``<tables>/flashzoi_benchmarks.{md,csv,tex,html}`` (one row per series: eQTL ρ, eQTL AUROC,
FlowFISH r enhancer/promoter, CRISPRi AUPRC) and ``<tables>/flashzoi_tissues.csv`` (per tissue and
model: Spearman ρ and AUROC).
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from flashrna.report.tables import Cell, RunInfo, Table
from flashrna.utils import FlashRNAError, atomic_file, save_figure

BENCHMARKS = {  # name -> (directory under the results, file per model)
    "eqtl": ("eval/eqtl", "tissues.csv"),
    "prioritisation": ("eval/prioritisation", "tissues.csv"),
    "flowfish": ("eval/flowfish", "metrics.csv"),
    "crispri": ("eval/crispri", "metrics.csv"),
}
COLUMNS = {
    "eQTL Spearman ρ": ("eqtl", None),
    "eQTL AUROC": ("prioritisation", None),
    "FlowFISH r enhancer": ("flowfish", "enhancer"),
    "FlowFISH r promoter": ("flowfish", "promoter"),
    "CRISPRi AUPRC": ("crispri", "all"),
}
COLOURS = ["#1f77b4", "#ff7f0e", "#d62728", "#9467bd", "#7f7f7f", "#2ca02c", "#8c564b"]


@dataclass
class Series:
    """A labelled group of evaluated models (None: not run)."""

    label: str
    names: list[str] | None


def series_of(
    results: str | Path,
    replicates: Sequence[str] | None = None,
    ensembles: Sequence[str] | None = None,
    distilled: Sequence[str] | None = None,
    borzoi: Sequence[str] | None = None,
    flashzoi: Sequence[str] | None = None,
) -> list[Series]:
    """The series of models named (None: those found under ``results``; module docstring)."""
    root = Path(results)
    present = sorted(
        {p.name for b, _ in BENCHMARKS.values() for p in (root / b).glob("*") if p.is_dir()}
    )

    def names(given: Sequence[str] | None, pattern: str) -> list[str] | None:
        chosen = given if given is not None else [n for n in present if re.fullmatch(pattern, n)]
        return sorted(chosen, key=_natural) or None

    series = [Series("FlashRNA", names(replicates, r"member\d+"))]
    for name in names(ensembles, r"ensemble\d+") or []:
        series.append(Series(f"FlashRNA ensemble {name.removeprefix('ensemble')}", [name]))
    series.append(Series("FlashRNA distilled", names(distilled, "distilled")))
    series.append(Series("Borzoi", names(borzoi, r"borzoi\d+")))
    series.append(Series("Flashzoi", names(flashzoi, r"flashzoi\d+")))
    if series[0].names is None:
        raise FlashRNAError(f"{root}: no FlashRNA replicate results (member<k>) under eval/")
    return series


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def read_result(root: Path, benchmark: str, name: str) -> pd.DataFrame | None:
    """A model's result table of ``benchmark``; None when it was not run."""
    directory, file = BENCHMARKS[benchmark]
    path = root / directory / name / file
    if not path.exists():
        return None
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise FlashRNAError(f"{path}: not a result table ({err})") from None


def model_value(frame: pd.DataFrame | None, benchmark: str, key: str | None) -> float | None:
    """The headline value of one model's result table (module docstring); None when absent."""
    if frame is None:
        return None
    if benchmark in ("eqtl", "prioritisation"):
        column = "spearman" if benchmark == "eqtl" else "auroc"
        included = frame[frame["included"].astype(bool)] if "included" in frame else frame
        values = included[column].dropna()
    elif benchmark == "flowfish":
        values = frame.loc[frame["element"] == key, "pearson"].dropna()  # mean over cell types
    else:
        values = frame.loc[frame["subset"] == key, "auprc"].dropna()
    return float(values.mean()) if len(values) else None


def tissue_values(root: Path, series: list[Series]) -> pd.DataFrame:
    """Per tissue, metric (``spearman``, ``auroc``) and model: the value (long format)."""
    rows = []
    for s in series:
        for name in s.names or []:
            for benchmark, column in (("eqtl", "spearman"), ("prioritisation", "auroc")):
                frame = read_result(root, benchmark, name)
                for row in [] if frame is None else frame.itertuples():
                    value = getattr(row, column)
                    rows.append((row.tissue, column, s.label, name, value))
    return pd.DataFrame(rows, columns=["tissue", "metric", "series", "model", "value"])


def flashzoi_table(run: RunInfo, series: list[Series]) -> Table:
    """One row per series, one column per benchmark (mean ± SD over the series' models)."""
    root = Path(run.results)
    table = Table(
        name="flashzoi_benchmarks",
        title="Flashzoi's benchmarks: eQTL ρ and prioritisation, Variant-FlowFISH, CRISPRi",
        row_headers=["Model"],
        columns=list(COLUMNS),
        footer=[
            "eQTL ρ: mean Spearman over tissues (eqtl-benchmark); eQTL AUROC: mean over tissues "
            "of fine-mapped eQTLs vs distance-matched negatives (eqtl-prioritisation); FlowFISH "
            "r: Pearson of predicted vs measured log2 effects of PPIF edits (mean over cell "
            "types); CRISPRi AUPRC: all valid enhancer-gene pairs (chance = positive rate).",
            *run.footer(),
        ],
    )
    for s in series:
        cells = {}
        for column, (benchmark, key) in COLUMNS.items():
            values = [model_value(read_result(root, benchmark, n), benchmark, key)
                      for n in s.names or []]  # fmt: skip
            ran = [v for v in values if v is not None]
            cells[column] = Cell(ran if s.names and ran else None)
        table.add([s.label], cells)
    return table


# --------------------------------------------------------------------------------------------
# The figure
# --------------------------------------------------------------------------------------------


@dataclass
class Bar:
    """A plotted bar (or point): panel, group on the x axis, series, value and its interval."""

    panel: str
    group: str
    series: str
    value: float
    low: float | None
    high: float | None
    n: int


def _interval(values: list[float], lows: list[float], highs: list[float]):
    """Mean, and the bootstrap interval of a single model or mean ± SD of several."""
    mean = statistics.fmean(values)
    if len(values) == 1:
        return mean, lows[0], highs[0]
    sd = statistics.stdev(values)
    return mean, mean - sd, mean + sd


def bar_values(root: Path, series: list[Series]) -> list[Bar]:
    """Panels c (FlowFISH per element) and d (CRISPRi per distance bin)."""
    bars = []
    for panel, benchmark, key, prefix in (
        ("c", "flowfish", "element", "pearson"),
        ("d", "crispri", "subset", "auprc"),
    ):
        for s in series:
            frames = [read_result(root, benchmark, n) for n in s.names or []]
            frames = [f for f in frames if f is not None]
            if not frames:
                continue
            merged = pd.concat(frames)
            for group, rows in merged.groupby(key, sort=False):
                rows = rows.dropna(subset=[prefix])
                if rows.empty:
                    continue
                value, low, high = _interval(
                    list(rows[prefix]), list(rows[f"{prefix}_low"]), list(rows[f"{prefix}_high"])
                )
                bars.append(Bar(panel, str(group), s.label, value, low, high, len(rows)))
            if benchmark == "crispri":
                chance = merged.groupby("subset", sort=False)["positive_rate"].mean()
                bars += [
                    Bar("d", str(g), "chance", float(v), None, None, 1)
                    for g, v in chance.items()
                    if math.isfinite(v)
                ]
    return bars


def plot_flashzoi(
    tissues: pd.DataFrame, bars: list[Bar], series: list[Series], notes: list[str], path: Path
) -> list[Path]:
    """The four panels (module docstring) as ``path`` (PNG) and PDF."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 8.5), layout="constrained")
    axes = figure.subplots(2, 2)
    colour = {s.label: COLOURS[k % len(COLOURS)] for k, s in enumerate(series)}
    ran = [s.label for s in series if s.names]
    reference = next((r for r in ("Borzoi", "Flashzoi") if r in ran), "FlashRNA")
    for ax, (metric, title) in zip(
        axes[0],
        (("spearman", "a  eQTL effect Spearman ρ per tissue"),
         ("auroc", "b  eQTL prioritisation AUROC per tissue")),
        strict=True,
    ):  # fmt: skip
        table = tissues[tissues["metric"] == metric]
        means = table.groupby(["series", "tissue"])["value"].mean().unstack(0)
        if reference not in means:
            ax.text(0.5, 0.5, "not run", ha="center", transform=ax.transAxes)
        else:
            for label in [s for s in ran if s != reference and s in means] or [reference]:
                ax.scatter(means[reference], means[label], s=18, alpha=0.8,
                           color=colour[label], label=label)  # fmt: skip
            lo, hi = means.min().min(), means.max().max()
            if math.isfinite(lo) and math.isfinite(hi):
                ax.plot([lo, hi], [lo, hi], color="0.6", lw=0.8, ls="--")
            ax.set_xlabel(f"{reference}", fontsize=9)
            ax.set_ylabel("other models", fontsize=9)
            ax.legend(fontsize=7, loc="best")
        ax.set_title(title, fontsize=10, loc="left")
    for ax, (panel, title, ylabel) in zip(
        axes[1],
        (("c", "c  Variant-FlowFISH (PPIF edits)", "Pearson r"),
         ("d", "d  CRISPRi enhancer-gene pairs by TSS distance", "AUPRC")),
        strict=True,
    ):  # fmt: skip
        chosen = [b for b in bars if b.panel == panel and b.series != "chance"]
        groups = list(dict.fromkeys(b.group for b in chosen))
        labels = [s for s in ran if any(b.series == s for b in chosen)]
        width = 0.8 / max(len(labels), 1)
        for k, label in enumerate(labels):
            own = {b.group: b for b in chosen if b.series == label}
            xs = [g + (k - (len(labels) - 1) / 2) * width for g in range(len(groups))]
            values = [own[g].value if g in own else math.nan for g in groups]
            lower = [own[g].value - own[g].low if g in own and own[g].low is not None else 0
                     for g in groups]  # fmt: skip
            upper = [own[g].high - own[g].value if g in own and own[g].high is not None else 0
                     for g in groups]  # fmt: skip
            ax.bar(xs, values, width=width, color=colour[label], label=label,
                   yerr=[lower, upper], capsize=2, error_kw={"lw": 0.7})  # fmt: skip
        for g, bar in enumerate(groups):
            chance = [b.value for b in bars if b.panel == panel and b.series == "chance"
                      and b.group == bar]  # fmt: skip
            if chance:
                ax.hlines(chance[0], g - 0.45, g + 0.45, color="k", ls=":", lw=1,
                          label="positive rate" if g == 0 else None)  # fmt: skip
        ax.set_xticks(range(len(groups)), groups, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.set_title(title, fontsize=10, loc="left")
        ax.axhline(0, color="0.5", lw=0.5)
        if labels:
            ax.legend(fontsize=7, loc="best")
        else:
            ax.text(0.5, 0.5, "not run", ha="center", transform=ax.transAxes)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    not_run = [s.label for s in series if not s.names]
    if not_run:
        notes = [f"Not run: {', '.join(not_run)}.", *notes]
    figure.suptitle("Flashzoi's benchmarks (Hingerl et al. 2025, Fig. 2) for FlashRNA", fontsize=12)
    figure.text(0.01, 0.005, "\n".join(notes), fontsize=6.5, color="0.3", va="bottom")
    figure.get_layout_engine().set(rect=(0, 0.06, 1, 0.94))
    return save_figure(figure, path)


def write_bars(bars: list[Bar], tissues: pd.DataFrame, path: Path) -> None:
    """Every plotted value: the bars of panels c and d and the per-tissue points of a and b."""
    with atomic_file(path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["panel", "group", "series", "model", "value", "low", "high", "n"])
        for t in tissues.itertuples():
            panel = "a" if t.metric == "spearman" else "b"
            writer.writerow([panel, t.tissue, t.series, t.model, repr(t.value), "", "", 1])
        for b in bars:
            low = "" if b.low is None else repr(b.low)
            high = "" if b.high is None else repr(b.high)
            writer.writerow([b.panel, b.group, b.series, "", repr(b.value), low, high, b.n])


# --------------------------------------------------------------------------------------------
# Command line (``flashrna report flashzoi``)
# --------------------------------------------------------------------------------------------


def add_flashzoi_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``flashrna report flashzoi`` beyond the report's own."""
    names = "directory names under RESULTS/eval/<benchmark> (default: those present)"
    parser.add_argument("--replicates", nargs="+", help="FlashRNA replicates: " + names)
    parser.add_argument("--ensembles", nargs="*", help="ensemble<n>: " + names)
    parser.add_argument("--distilled", nargs="*", help="the distilled model: " + names)
    parser.add_argument("--borzoi", nargs="*", help="Borzoi replicates, none = not run")
    parser.add_argument("--flashzoi", nargs="*", help="Flashzoi replicates, none = not run")
    parser.add_argument("--tables", help="where the table goes (default: OUT/../tables)")


def write_flashzoi(
    run: RunInfo, out: str | Path, series: list[Series], tables: str | Path | None = None
) -> list[Path]:
    """The figure and its values in ``out``, the tables in ``tables`` (default: ``out``'s
    sibling ``tables``) for the ``series`` (:func:`series_of`); returns the paths written."""
    root, out = Path(run.results), Path(out)
    tables = Path(tables) if tables else out.parent / "tables"
    tissues = tissue_values(root, series)
    bars = bar_values(root, series)
    table = flashzoi_table(run, series)
    paths = table.write(tables)
    with atomic_file(tables / "flashzoi_tissues.csv") as handle:
        wide = tissues.pivot_table(index=["metric", "tissue"], columns="model", values="value")
        wide.to_csv(handle, float_format="%.6f")
    paths.append(tables / "flashzoi_tissues.csv")
    write_bars(bars, tissues, out / "flashzoi_benchmarks.csv")
    paths.append(out / "flashzoi_benchmarks.csv")
    paths += plot_flashzoi(tissues, bars, series, run.footer(), out / "flashzoi_benchmarks.png")
    print(table.markdown())
    return paths
