"""Figures 1 and 2 (PNG and PDF through matplotlib)."""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flashrna.paper import PAPER_DISTILLED, PAPER_FIGURE2, PAPER_RATIOS, PAPER_TABLE2
from flashrna.report.tables import (
    NOT_RUN,
    PRESENT,
    RELEASED,
    Cell,
    ModelNames,
    RunInfo,
    eqtl_values,
    found_models,
    model_rows,
    summaries_of,
)
from flashrna.utils import FlashRNAError, atomic_file, save_figure

# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


@dataclass
class Point:
    """One point (or, with ``size`` None, one horizontal reference line) of Figure 2."""

    series: str
    source: str  # "this run" or "paper"
    size: int | None
    cell: Cell


def figure2_points(
    run: RunInfo,
    names: ModelNames = PRESENT,
    ensembles: Sequence[str] | None = None,
    distilled: Sequence[str] | None = None,
    released_ensembles: Sequence[str] | None = None,
    released_distilled: Sequence[str] | None = None,
) -> list[Point]:
    """This run's points (replicates at size 1, ensembles, distilled, baselines, and the
    released weights when evaluated) and the paper's (Figure 2; Borzoi from Table 2).
    ``ensembles``: ``ensemble<n>`` names, ``distilled`` the distilled model's name(s), and the
    same for the released weights (``released-ensemble<n>``, ``released-distilled``); None:
    those present."""
    root = Path(run.results) / "eval" / "eqtl"
    rows = model_rows(root, names)
    points = [Point("FlashRNA", "this run", 1, Cell(eqtl_values(rows["FlashRNA"])))]
    if ensembles is None:
        ensembles = found_models(root, r"ensemble\d+")
    for name in ensembles:
        match = re.fullmatch(r"ensemble(\d+)", name)
        if match is None:
            raise FlashRNAError(f"ensemble '{name}' is not named ensemble<size>")
        values = eqtl_values(summaries_of(root, [name]))
        points.append(Point("FlashRNA", "this run", int(match[1]), Cell(values)))
    if distilled is None:
        distilled = found_models(root, "distilled")
    if distilled:
        values = eqtl_values(summaries_of(root, distilled))
        points.append(Point("FlashRNA distilled", "this run", 1, Cell(values)))
    if RELEASED in rows:
        points.append(Point(RELEASED, "this run", 1, Cell(eqtl_values(rows[RELEASED]))))
        for name in named_or_found(root, released_ensembles, r"released-ensemble\d+"):
            values = eqtl_values(summaries_of(root, [name]))
            points.append(Point(RELEASED, "this run", int(name[17:]), Cell(values)))
        for name in named_or_found(root, released_distilled, "released-distilled"):
            values = eqtl_values(summaries_of(root, [name]))
            points.append(Point(f"{RELEASED} distilled", "this run", 1, Cell(values)))
    for label in ("Borzoi", "Flashzoi"):
        points.append(Point(label, "this run", None, Cell(eqtl_values(rows[label]))))
    points += [Point("FlashRNA", "paper", n, Cell([v])) for n, v in PAPER_FIGURE2.items()]
    points.append(Point("FlashRNA distilled", "paper", 1, Cell([PAPER_DISTILLED])))
    points.append(Point("Borzoi", "paper", None, Cell([PAPER_TABLE2["Borzoi"][0]])))
    return points


def named_or_found(root: Path, names: Sequence[str] | None, pattern: str) -> list[str]:
    """``names``, or the models under ``root`` matching ``pattern`` when None."""
    return found_models(root, pattern) if names is None else list(names)


# The distilled model is one model, so it belongs at size 1, where the replicates' mean and its
# error bar already are: its star is drawn this factor to the right of 1 (on the log2 axis), in
# front of the lines, so the error bar cannot hide it.
DISTILLED_DODGE = 2**0.22


def plot_figure2(points: list[Point], notes: list[str], path: str | Path) -> list[Path]:
    """Figure 2 (:func:`draw_figure2`) as ``path`` (PNG) and as PDF beside it."""
    return save_figure(draw_figure2(points, notes), path)


def draw_figure2(points: list[Point], notes: list[str]):
    """eQTL ρ against ensemble size (log2 axis): this run in colour, the paper in grey; the
    distilled model beside size 1 (:data:`DISTILLED_DODGE`). Returns the matplotlib Figure."""
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
                [DISTILLED_DODGE],
                [p.cell.mean],
                yerr=[p.cell.sd or 0.0],
                color="#d62728" if source == "this run" else "0.55",
                marker="*",
                ms=13,
                mfc=styles[source]["mfc"],
                ls="none",
                capsize=3,
                zorder=5,
                label=f"distilled into 1 model from {teacher if source == 'this run' else 16} "
                f"({source})",
            )
    released = sorted(
        (p for p in points if p.series == RELEASED and p.cell.mean is not None),
        key=lambda p: p.size,
    )
    if released:
        ax.errorbar(
            [p.size for p in released],
            [p.cell.mean for p in released],
            yerr=[p.cell.sd or 0.0 for p in released],
            color="#9467bd",
            marker="s",
            capsize=3,
            label=f"{RELEASED}, ensemble (this run)",
        )
    for p in points:
        if p.series == f"{RELEASED} distilled" and p.cell.mean is not None:
            # Hollow and on top: a distilled star at the same place stays visible inside it.
            ax.plot([1], [p.cell.mean], color="#9467bd", marker="D", ms=13, mfc="none", mew=2,
                    ls="none", zorder=5, label=f"{RELEASED}, distilled (this run)")  # fmt: skip
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
    return figure


def write_points(points: list[Point], path: Path) -> None:
    """Figure 2's points as CSV (``series source size n mean sd values``)."""
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


def figure2(run: RunInfo, out: str | Path, **selection: Any) -> list[Path]:
    """Figure 2 in ``out``: ``figure2.csv`` (the points) and ``figure2.{png,pdf}``.
    ``selection``: :func:`figure2_points`' model names (``names``, ``ensembles``, ...)."""
    out = Path(out)
    points = figure2_points(run, **selection)
    write_points(points, out / "figure2.csv")
    return [out / "figure2.csv", *plot_figure2(points, run.footer(), out / "figure2.png")]


# --------------------------------------------------------------------------------------------
# Figure 1
# --------------------------------------------------------------------------------------------

MODELS = ("borzoi", "flashrna")  # the order of the bars
CLOCK_TEXT = {"wall": "wall clock", "cpu": "timed in CPU seconds"}

PANELS = {
    "forward_examples_per_s": ("Inference", "examples / s"),
    "train_examples_per_s": ("Forward + backward", "examples / s"),  # / CPU s with --clock cpu
    "max_train_batch": ("Max training batch", "examples"),
    "max_inference_length": ("Max inference length", "Mbp"),
}
COLORS = {"borzoi": "#8c8c8c", "flashrna": "#1f77b4"}
LABELS = {"borzoi": "Borzoi", "flashrna": "FlashRNA"}


# What an empty memory panel says: the limits are searched only where a device has memory of
# its own to run out of (flashrna.figure1, `--search-memory`).
NOT_MEASURED = (
    "Not measured on {where}.\n\n"
    "This panel is the largest {what}\n"
    "that fits in a GPU's memory. A CPU has no\n"
    "device memory to run out of (the OS swaps\n"
    "or stops the process instead), so there is\n"
    "no limit to find here. Run\n"
    "`flashrna bench compare` on a GPU."
)
NOT_MEASURED_WHAT = {"max_train_batch": "training batch", "max_inference_length": "input"}


def plot_figure1(result: dict[str, Any], path: str | Path) -> list[Path]:
    """Figure 1 (:func:`draw_figure1`) as ``path`` (PNG) and beside it as PDF; both paths."""
    return save_figure(draw_figure1(result), path)


def draw_figure1(result: dict[str, Any]):
    """Bar charts of a :func:`compare` result, one panel per metric with the ratio and the
    paper's ratio; a metric not measured (the memory limits on a CPU) keeps its panel, which
    says why it is empty. Returns the matplotlib Figure."""
    from matplotlib.figure import Figure

    try:
        models, settings = result["models"], result["settings"]
        device = result["device"]
    except KeyError as err:
        raise FlashRNAError(f"not a `flashrna bench compare` result (no {err})") from None
    figure = Figure(figsize=(13, 4.2), layout="constrained")
    axes = figure.subplots(1, len(PANELS))
    for ax, (metric, (title, unit)) in zip(axes, PANELS.items(), strict=True):
        values = [models[m].get(metric) for m in MODELS]
        paper_ratio = result.get("paper_ratios", PAPER_RATIOS).get(metric)
        paper = f"paper: {paper_ratio:.1f}×" if paper_ratio else ""
        if any(v is None for v in values):
            where = "a CPU" if result.get("device_type") == "cpu" else "this device"
            what = NOT_MEASURED_WHAT.get(metric, "size")
            ax.text(
                0.5,
                0.5,
                NOT_MEASURED.format(where=where, what=what),
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="0.3",
                fontsize=8.5,
                linespacing=1.35,
            )
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set(color="0.75", linestyle="--")
            ax.set_title(f"{title}\nnot measured on {where}\n{paper}", fontsize=10)
            continue
        if metric == "max_inference_length":  # bp shown in Mbp, or kbp for short inputs
            unit = "Mbp" if max(values) >= 1e6 else "kbp"
            values = [v / (1e6 if unit == "Mbp" else 1e3) for v in values]
        heights = values
        bars = ax.bar(
            [LABELS[m] for m in MODELS], heights, color=[COLORS[m] for m in MODELS], width=0.6
        )
        for bar, model in zip(bars, MODELS, strict=True):
            bound = "≥ " if models[model].get(f"{metric}_bounded") else ""
            ax.annotate(
                f"{bound}{_number(bar.get_height())}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                xytext=(0, 2),
                textcoords="offset points",
            )
        ratio = result["ratios"].get(metric)
        measured = f"{ratio:.2f}×" if ratio is not None else "? (search bound)"
        ax.set_title(f"{title}\nFlashRNA / Borzoi: {measured}\n{paper}", fontsize=10)
        if unit == "examples / s" and settings.get("clock") == "cpu":
            unit = "examples / CPU second"
        ax.set_ylabel(unit)
        ax.set_ylim(0, max(heights) * 1.18 or 1)
        ax.spines[["top", "right"]].set_visible(False)
    figure.suptitle(
        f"FlashRNA vs Borzoi (borzoi-pytorch {result.get('borzoi_pytorch', '?')}) on {device}\n"
        + settings_line(settings),
        fontsize=10,
    )
    return figure


def settings_line(settings: dict[str, Any]) -> str:
    """One line stating the matched size, length, batch and precision."""
    size = (
        "paper size"
        if settings.get("paper_size")
        else "reduced from the paper's dim 1,536 / 524,288 bp"
    )
    return (
        f"matched size: dim {settings['dim']:,}, {settings['layers']} layer"
        f"{'s' if settings['layers'] != 1 else ''}, "
        f"{settings['heads']} heads, {settings['tracks']:,} tracks; {settings['length']:,} bp, "
        f"batch {settings['batch_size']}, {_precisions(settings)}, best of "
        f"{settings.get('repeats', 1)} round(s), {CLOCK_TEXT[settings.get('clock', 'wall')]} "
        f"({size})"
    )


def _precisions(settings: dict[str, Any]) -> str:
    """FlashRNA's precision, and Borzoi's when it was timed in others too."""
    borzoi = settings.get("borzoi_precisions")
    if not borzoi or borzoi == [settings["precision"]]:
        return settings["precision"]
    return f"FlashRNA {settings['precision']}, Borzoi {' / '.join(borzoi)}"


def _number(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"
