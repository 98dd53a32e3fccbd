"""Figure 1 (FlashRNA vs Borzoi speed and memory) drawn from a ``flashrna bench compare`` result
(:mod:`flashrna.bench.compare`): one panel per metric with both models' values, their ratio and
the paper's ratio. Reads the result JSON only (no PyTorch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flashrna.utils import FlashRNAError

MODELS = ("borzoi", "flashrna")
CLOCK_TEXT = {"wall": "wall clock", "cpu": "timed in CPU seconds"}


# --------------------------------------------------------------------------------------------
# Figure 1
# --------------------------------------------------------------------------------------------

PANELS = {
    "forward_examples_per_s": ("Inference", "examples / s"),
    "train_examples_per_s": ("Forward + backward", "examples / s"),  # / CPU s with --clock cpu
    "max_train_batch": ("Max training batch", "examples"),
    "max_inference_length": ("Max inference length", "Mbp"),
}
COLORS = {"borzoi": "#8c8c8c", "flashrna": "#1f77b4"}
LABELS = {"borzoi": "Borzoi", "flashrna": "FlashRNA"}


def plot_figure1(result: dict[str, Any], path: str | Path) -> list[Path]:
    """Bar charts of a :func:`compare` result, one panel per metric with the ratio and the
    paper's ratio; written as ``path`` (PNG) and beside it as PDF. Returns both paths."""
    from matplotlib.figure import Figure

    from flashrna.report import save_figure

    try:
        models, settings = result["models"], result["settings"]
        device = result["device"]
    except KeyError as err:
        raise FlashRNAError(f"not a `flashrna bench compare` result (no {err})") from None
    figure = Figure(figsize=(13, 4.2), layout="constrained")
    axes = figure.subplots(1, len(PANELS))
    for ax, (metric, (title, unit)) in zip(axes, PANELS.items(), strict=True):
        values = [models[m].get(metric) for m in MODELS]
        paper_ratio = result.get("paper_ratios", {}).get(metric)
        paper = f"paper: {paper_ratio:.1f}×" if paper_ratio else ""
        if any(v is None for v in values):
            where = "the CPU" if result.get("device_type") == "cpu" else "this device"
            ax.text(
                0.5,
                0.5,
                f"not measured on {where}\n(no device memory limit to search)",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="0.35",
            )
            ax.set_axis_off()
            ax.set_title(f"{title}\nnot measured\n{paper}", fontsize=10)
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
    return save_figure(figure, path)


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
    borzoi = settings.get("borzoi_precisions")
    if not borzoi or borzoi == [settings["precision"]]:
        return settings["precision"]
    return f"FlashRNA {settings['precision']}, Borzoi {' / '.join(borzoi)}"


def _number(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"
