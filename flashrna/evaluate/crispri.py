"""``flashrna crispri-benchmark``: CRISPRi enhancer-gene pairs scored by input gradients (Flashzoi
Fig. 2d).

Data: EngreitzLab/CRISPR_comparison ``resources/crispr_data/EPCrisprBenchmark_ensemble_data_GRCh38
.tsv.gz`` (the ENCODE-rE2G K562 CRISPRi benchmark of Gschwind et al.: Nasser 2021, Gasperini 2019,
Schraivogel 2020; MIT licence), a gzip TSV with the columns ``chrom chromStart chromEnd name
EffectSize chrTSS startTSS endTSS measuredGeneSymbol Significant pValueAdjusted
PowerAtEffectSize{10,15,20,25,50} ValidConnection CellType Reference Regulated Dataset`` (R's
``TRUE``/``FALSE``/``NA``). Read: the element ``chrom chromStart chromEnd``, the gene
``measuredGeneSymbol`` and its TSS ``startTSS`` (0-based), the label ``Regulated``. Pairs whose
``ValidConnection`` is not TRUE, or without a TSS or a label, are left out and counted.

Score (Borzoi's and Flashzoi's; calico/borzoi-paper ``analysis/crispr``, baskerville
``seqnn.gradients_func``): per gene an input of ``--length`` bp centred on its TSS, the gradient of
the gene's value (:mod:`flashrna.attribute`: its exon-summed prediction of the selected tracks,
log, reverse-complement averaged) with respect to the one-hot input, mean-subtracted per position
and taken at the reference base; a pair's score is the sum of |score| over ``--window`` bp (2 kb)
centred on the element's midpoint, divided by the mean |score| over the whole input. A pair whose
window comes within 64 bp of the input's ends, or whose gene is not in the GTF (by name), is left
out and counted.

Metrics: AUPRC (average precision) of the score against ``Regulated``, over all pairs and per bin
of distance |element midpoint - TSS| (``--distance-bins``; Borzoi's 0, 15, 45, 98 and 262.144
kb), each with a bootstrap 95 % interval; the positive rate is AUPRC's chance level; AUROC, and
the AUPRC of 1 / distance (the distance baseline), beside it.

Outputs in ``--out``: ``pairs.csv`` (every read pair with its score, distance, bin and outcome),
``metrics.csv`` (``subset pairs positives positive_rate auprc auprc_low auprc_high auroc
auroc_low auroc_high distance_auprc``), ``summary.json``. In Python: :func:`crispri_benchmark`.
"""

from __future__ import annotations

import argparse
import itertools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from flashrna.annotation import Annotation
from flashrna.attribute import (
    add_value_arguments,
    find_gene,
    gene_target,
    gradient_scores,
    input_gradients,
    load_readout,
    readout_options,
)
from flashrna.evaluate.stats import auroc, average_precision, bootstrap
from flashrna.genome import Genome
from flashrna.metrics import finite_or_none
from flashrna.utils import FlashRNAError, atomic_file, write_json

log = logging.getLogger(__name__)

COLUMNS = ("chrom", "chromStart", "chromEnd", "measuredGeneSymbol", "startTSS", "Regulated")
DISTANCE_BINS = (0, 15_000, 45_000, 98_000, 262_144)
EDGE = 64  # bp at each end of the input a window must stay clear of (Borzoi's padding)


def read_crispr_pairs(path: str | Path) -> tuple[pd.DataFrame, dict[str, int]]:
    """The valid pairs of an EPCrisprBenchmark file (module docstring): columns ``chrom start
    end gene tss regulated`` (+ ``distance``, |midpoint - tss|), and counts of what was left
    out."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, sep="\t", low_memory=False, na_values=["NA", ""])
    except FileNotFoundError:
        raise FlashRNAError(f"{path}: CRISPRi benchmark table not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, EOFError) as err:
        raise FlashRNAError(f"{path}: not a tab-separated table ({err})") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise FlashRNAError(f"{path}: missing column(s) {', '.join(missing)} (need {COLUMNS})")
    valid = (
        frame["ValidConnection"].astype(str).str.upper().isin(["TRUE", "1"])
        if "ValidConnection" in frame.columns
        else pd.Series(True, index=frame.index)
    )
    labels = frame["Regulated"].astype(str).str.upper().map({"TRUE": True, "FALSE": False})
    known = labels.notna() & frame["startTSS"].notna()
    pairs = pd.DataFrame(
        {
            "chrom": frame["chrom"].astype(str),
            "start": pd.to_numeric(frame["chromStart"], errors="coerce"),
            "end": pd.to_numeric(frame["chromEnd"], errors="coerce"),
            "gene": frame["measuredGeneSymbol"].astype(str),
            "tss": pd.to_numeric(frame["startTSS"], errors="coerce"),
            "regulated": labels,
        }
    )[valid & known]
    bad = pairs[["start", "end", "tss"]].isna().any(axis=1)
    if bad.any():
        row = int(pairs.index[bad][0])
        raise FlashRNAError(f"{path}: data row {row + 1}: a coordinate is not a number")
    pairs = pairs.astype({"start": np.int64, "end": np.int64, "tss": np.int64, "regulated": bool})
    pairs["distance"] = ((pairs["start"] + pairs["end"]) // 2 - pairs["tss"]).abs()
    dropped = {
        "invalid_connection": int((~valid).sum()),
        "no_label_or_tss": int((valid & ~known).sum()),
    }
    return pairs.reset_index(drop=True), dropped


def score_pairs(
    pairs: pd.DataFrame,
    scores: np.ndarray,
    window_start: int,
    window: int = 2000,
    normalise: bool = True,
) -> np.ndarray:
    """Scores (P,) of one gene's pairs from its per-base input x gradient ``scores`` (L,) over
    the input from ``window_start``: sum of |score| in ``window`` bp around each element's
    midpoint, / the mean |score| of the input (``normalise``); NaN when the window comes within
    :data:`EDGE` bp of the input's ends."""
    magnitude = np.abs(scores.astype(np.float64))
    scale = magnitude.mean() if normalise else 1.0
    out = np.full(len(pairs), np.nan)
    for k, (start, end) in enumerate(zip(pairs["start"], pairs["end"], strict=True)):
        lo = (start + end) // 2 - window // 2 - window_start
        if lo >= EDGE and lo + window <= len(scores) - EDGE and scale > 0:
            out[k] = magnitude[lo : lo + window].sum() / scale
    return out


def crispri_metrics(pairs: pd.DataFrame, bins, resamples: int = 1000) -> pd.DataFrame:
    """AUPRC and AUROC with bootstrap intervals, over all scored pairs and per distance bin
    (``(lo, hi]``, as Borzoi's benchmark bins them)."""
    scored = pairs[np.isfinite(pairs["score"])]
    subsets = [("all", scored)]
    for lo, hi in itertools.pairwise(bins):
        subsets.append(
            (f"{lo}-{hi}", scored[(scored["distance"] > lo) & (scored["distance"] <= hi)])
        )
    rows = []
    for name, subset in subsets:
        labels, values = subset["regulated"].to_numpy(), subset["score"].to_numpy()
        baseline = 1.0 / np.maximum(subset["distance"].to_numpy(), 1)
        rows.append(
            {
                "subset": name,
                "pairs": len(subset),
                "positives": int(labels.sum()),
                "positive_rate": labels.mean() if len(subset) else np.nan,
                **bootstrap(average_precision, labels, values, resamples=resamples).row("auprc"),
                **bootstrap(auroc, labels, values, resamples=resamples).row("auroc"),
                "distance_auprc": average_precision(labels, baseline) if len(subset) else np.nan,
            }
        )
    return pd.DataFrame(rows)


def crispri_benchmark(
    pairs: str | Path,
    models: Sequence[str | Path],
    fasta: str | Path,
    gtf: str | Path,
    out: str | Path,
    *,
    head: str | None = None,
    targets: str | Path | None = None,
    tracks: Sequence[str] | None = None,
    assays: Sequence[str] | None = ("RNA",),
    description: str | None = None,
    units: str = "counts",
    transform: str = "log",
    pseudo: float = 1e-6,
    crop_bins: int = 5120,
    length: int = 524_288,
    window: int = 2000,
    distance_bins: Sequence[int] = DISTANCE_BINS,
    normalise: bool = True,
    bootstrap: int = 1000,
    rc: bool = True,
    autocast: bool = False,
    device: str | torch.device | None = "auto",
    progress: bool = False,
) -> dict:
    """Score the CRISPRi pairs of the EPCrisprBenchmark table ``pairs`` and write the outputs of
    the module docstring into ``out``.

    Genes are found by name in ``gtf``; inputs of ``length`` bp come from ``fasta``. The gene's
    value is read from ``models`` (several: their ensemble) by :func:`~flashrna.attribute.
    load_readout` (``head``, ``targets``, ``tracks``, ``assays``, ``description``, ``units``,
    ``transform``, ``pseudo``, ``crop_bins``, ``device``); its input gradient (1, ``length``,
    4) is reverse-complement averaged when ``rc``, under bf16 autocast when ``autocast``. A
    pair's score sums |input x gradient| over ``window`` bp around the element, divided by the
    input's mean when ``normalise``. Metrics over all pairs and per bin of ``distance_bins``
    (bp edges), intervals from ``bootstrap`` resamples. Returns the summary written to
    ``summary.json``."""
    frame, dropped = read_crispr_pairs(pairs)
    if frame.empty:
        raise FlashRNAError(f"{pairs}: no valid pair with a label and a TSS")
    annotation = Annotation.read_gtf(gtf)
    genome = Genome(fasta)
    model, readout = load_readout(
        models,
        head=head,
        targets=targets,
        tracks=tracks,
        assays=assays,
        description=description,
        units=units,
        transform=transform,
        pseudo=pseudo,
        crop_bins=crop_bins,
        device=device,
    )
    frame["score"] = np.nan
    frame["outcome"] = "scored"
    genes = list(dict.fromkeys(frame["gene"]))
    for number, name in enumerate(genes, start=1):
        rows = frame.index[frame["gene"] == name]
        try:
            gene = find_gene(annotation, name)
            target = gene_target(gene, center=int(frame.loc[rows[0], "tss"]))
            start = target.window_start(length)
            sequence = genome.fetch(gene.chrom, start, start + length)[None]
            gradients, _ = input_gradients(
                model.module,
                sequence,
                [target],
                readout,
                head=model.head,
                device=device,
                rc=rc,
                autocast=autocast,
            )
        except FlashRNAError as err:
            frame.loc[rows, "outcome"] = "gene_not_scored"
            log.warning("%s: %s", name, err)
            continue
        scores = score_pairs(
            frame.loc[rows], gradient_scores(gradients, sequence)[0], start, window,
            normalise=normalise,
        )  # fmt: skip
        frame.loc[rows, "score"] = scores
        frame.loc[rows[~np.isfinite(scores)], "outcome"] = "outside_window"
        if progress or number % 100 == 0:
            log.info("%d of %d genes", number, len(genes))
    bins = sorted(distance_bins)
    frame["distance_bin"] = pd.cut(frame["distance"], bins).astype(str)
    metrics = crispri_metrics(frame, bins, bootstrap)
    out = Path(out)
    with atomic_file(out / "pairs.csv") as handle:
        frame.to_csv(handle, index=False, float_format="%.6g")
    with atomic_file(out / "metrics.csv") as handle:
        metrics.to_csv(handle, index=False, float_format="%.6f")
    overall = metrics.iloc[0]
    summary = {
        "auprc": finite_or_none(overall["auprc"]),
        "auprc_low": finite_or_none(overall["auprc_low"]),
        "auprc_high": finite_or_none(overall["auprc_high"]),
        "positive_rate": finite_or_none(overall["positive_rate"]),
        "pairs": int(overall["pairs"]),
        "positives": int(overall["positives"]),
        "outcomes": frame["outcome"].value_counts().to_dict(),
        "left_out": dropped,
        "by_distance": {
            r.subset: {
                "auprc": finite_or_none(r.auprc),
                "pairs": int(r.pairs),
                "positives": int(r.positives),
            }
            for r in metrics.iloc[1:].itertuples()
        },
        "window": window,
        "length": length,
        "tracks": list(readout.tracks.identifier[readout.columns]),
        "model": model.name,
        "head": model.head,
    }
    write_json(out / "summary.json", summary)
    log.info(
        "AUPRC %.3f over %d pairs (positive rate %.3f)",
        overall["auprc"],
        overall["pairs"],
        overall["positive_rate"],
    )
    return summary


def register_crispri_benchmark(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pairs", required=True, help="EPCrisprBenchmark_ensemble_data_GRCh38.tsv.gz"
    )
    parser.add_argument("--fasta", required=True, help="genome FASTA (indexed; bgzip or plain)")
    parser.add_argument("--gtf", required=True, help="gene annotation GTF (genes by name)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--window", type=int, default=2000, help="bp around the element's midpoint that count"
    )
    parser.add_argument(
        "--distance-bins",
        type=int,
        nargs="+",
        default=list(DISTANCE_BINS),
        help="distance bin edges in bp (Borzoi's)",
    )
    parser.add_argument(
        "--no-normalise",
        action="store_true",
        help="do not divide by the mean |score| of the input",
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    add_value_arguments(parser)
    parser.set_defaults(run=_run_crispri_benchmark)


def _run_crispri_benchmark(args: argparse.Namespace) -> None:
    crispri_benchmark(
        args.pairs,
        args.model,
        args.fasta,
        args.gtf,
        args.out,
        **readout_options(args),
        length=args.length,
        window=args.window,
        distance_bins=args.distance_bins,
        normalise=not args.no_normalise,
        bootstrap=args.bootstrap,
        rc=not args.no_rc,
        autocast=args.autocast,
        device=args.device,
        progress=args.progress,
    )
