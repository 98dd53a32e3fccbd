"""``flashrna eqtl-benchmark``: GTEx fine-mapped eQTL Spearman (Table 2, Figure 2), as calico/borzoi
``src/scripts/borzoi_gtex_coef_sed.py`` computes it.

GTEx fine-mapped eQTLs (SuSiE, GTEx v8, Wang et al. 2021). Accepted tables (``--eqtls``, TSV,
optionally gzip/bgzip): a header with at least ``variant`` (``chr1_13550_G_A_b38``: contig,
1-based position, REF, ALT, build), ``gene`` (Ensembl id; its version is ignored), ``pip``,
``beta_posterior`` and ``allele1``; the tissue from a ``tissue`` column, else from the file
name (``Adipose_Subcutaneous.tsv``); when a ``method`` column exists only ``SUSIE`` rows are
used. Other columns (``allele2``, an unnamed index) are ignored.

Steps: keep ``pip > --min-pip`` (0.9); a tissue's tracks are the head's tracks whose own
``gtex_tissue`` is the tissue when the head's track table has that column (the released FlashRNA
models: 87 GTEx tracks over 37 tissues); otherwise each tissue maps to one Borzoi GTEx description
through the committed table ``flashrna/resources/gtex_tissues.tsv`` (``--tissue-map``) and its
tracks are the head's tracks whose description equals it *and* whose identifier contains
``GTEX`` (Borzoi's keyword rule, made exact: e.g. Whole_Blood and
Cells_EBV-transformed_lymphocytes -> ``RNA:blood``, Cells_Cultured_fibroblasts -> ``RNA:skin``,
the three arteries -> ``RNA:blood_vessel``); score every distinct variant once with
:class:`flashrna.variants.VariantScorer` (logSED, the protocol options of score-variants), or
read the scores of an earlier ``score-variants`` run (``--scores``: its ``scores.tsv``/
``scores.parquet`` in either layout, or a ``sed.h5`` — also one Borzoi wrote); a variant-gene
pair's score is the mean logSED over the tissue's tracks, negated when the scored REF (the REF
as given) is not ``allele1``; a pair without a score row — its gene has no exon bin in the
window, or its variant none at all — scores 0 (no predicted effect; Borzoi's ``add_scores``);
variants that cannot be scored (REF mismatch, missing contig, other alleles) are left out and
counted. Borzoi takes the arcsinh of the mean, which leaves the Spearman ρ unchanged; from a
``sed.h5`` the logSEDs are float16, as Borzoi reads them.

Tissues (``--tissue-count``): ``table`` (Borzoi): a tissue counts when it has more than
``--min-variants`` (32) fine-mapped pairs in the table, counted before scoring; ``scored``
(flashrna 0.1, ``--protocol legacy``): more than that many scored pairs. Per counted tissue:
Spearman ρ of score against ``beta_posterior``; the benchmark is the mean ρ over them.

Outputs in ``--out``: ``tissues.csv`` (``tissue description tracks eqtls scored
outside_window no_genes not_scored`` and ``skipped_<reason>`` per reason, ``flipped spearman
included``), ``eqtls.csv`` (each pair with its score and outcome), ``summary.json`` (with the
protocol, in words for Table 2's footer).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flashrna.metrics import finite_or_none
from flashrna.utils import FlashRNAError, atomic_file, read_json, write_json
from flashrna.variants import (
    PROTOCOLS,
    SKIP_REASONS,
    Protocol,
    VariantScorer,
    add_scoring_arguments,
    eqtl_variants,
    load_scorer,
    parse_variant_id,
    protocol_from_args,
    read_eqtls,
    trim_version,
    wide_frame,
)
from flashrna.zoo import add_model_arguments, load_track_table

log = logging.getLogger(__name__)

TISSUE_MAP = Path(__file__).resolve().parents[1] / "resources" / "gtex_tissues.tsv"
TISSUE_COUNTS = ("table", "scored")
# Outcomes of a variant that still give its pairs a score (0 when no row holds one).
SCORED_OUTCOMES = ("scored", "no_genes", "not_in_scores")
SKIPPED = [r for r in SKIP_REASONS if r != "no_genes"]


# --------------------------------------------------------------------------------------------
# eqtl-benchmark
# --------------------------------------------------------------------------------------------


def read_tissue_map(path: str | Path = TISSUE_MAP) -> dict[str, str]:
    """GTEx tissue -> Borzoi track description, from a TSV with ``gtex_tissue description``."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str)
    except FileNotFoundError:
        raise FlashRNAError(f"{path}: tissue map not found") from None
    if list(frame.columns) != ["gtex_tissue", "description"]:
        raise FlashRNAError(f"{path}: expected the columns gtex_tissue, description")
    duplicated = frame["gtex_tissue"][frame["gtex_tissue"].duplicated()]
    if len(duplicated):
        raise FlashRNAError(f"{path}: tissue {duplicated.iloc[0]} is listed twice")
    return dict(zip(frame["gtex_tissue"], frame["description"], strict=True))


def tissue_tracks(
    identifiers: np.ndarray, descriptions: np.ndarray, description: str
) -> np.ndarray:
    """Positions of the GTEx tracks of one tissue description among tracks given by their
    identifiers and descriptions (see the module docstring)."""
    is_gtex = np.char.find(np.asarray(identifiers, dtype=str), "GTEX") >= 0
    return np.flatnonzero(is_gtex & (np.asarray(descriptions) == description))


def register_eqtl_benchmark(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eqtls", nargs="+", required=True, help="fine-mapped eQTL tables")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--scores",
        help="scores of a score-variants run instead of scoring here: scores.tsv or "
        "scores.parquet (long or wide, with tracks.tsv and skipped.tsv beside it) or sed.h5 "
        "(also Borzoi's); then no model, FASTA or GTF is needed",
    )
    add_scoring_arguments(parser, required=False)
    add_model_arguments(parser, required=False)
    parser.add_argument(
        "--tissue-map",
        default=str(TISSUE_MAP),
        help="GTEx tissue -> track description table (used when the model's track table has "
        "no gtex_tissue column)",
    )
    parser.add_argument("--min-pip", type=float, default=0.9, help="keep eQTLs with PIP above")
    parser.add_argument(
        "--min-variants",
        type=int,
        default=32,
        help="a tissue counts when it has more eQTLs than this (see --tissue-count)",
    )
    parser.add_argument(
        "--tissue-count",
        choices=TISSUE_COUNTS,
        help="count a tissue's pairs in the table (Borzoi; the default) or its scored pairs "
        "(--protocol legacy)",
    )
    parser.set_defaults(run=_run_eqtl_benchmark)


def _run_eqtl_benchmark(args: argparse.Namespace) -> None:
    eqtl_benchmark(
        args.eqtls,
        args.out,
        scores=args.scores,
        models=args.model,
        fasta=args.fasta,
        gtf=args.gtf,
        head=args.head,
        targets=args.targets,
        length=args.length,
        crop_bins=args.crop_bins,
        allow_length=args.allow_length,
        batch_size=args.batch_size,
        protocol=protocol_from_args(args),
        device=args.device,
        precision=args.precision,
        tissue_map=args.tissue_map,
        min_pip=args.min_pip,
        min_variants=args.min_variants,
        # --tissue-count's default follows --protocol: scored pairs for flashrna 0.1's legacy.
        tissue_count=args.tissue_count or ("scored" if args.protocol == "legacy" else "table"),
        progress=args.progress,
    )


def eqtl_benchmark(
    eqtls: Sequence[str | Path],
    out: str | Path,
    *,
    scores: str | Path | None = None,
    models: Sequence[str | Path] | None = None,
    fasta: str | Path | None = None,
    gtf: str | Path | None = None,
    head: str | None = None,
    targets: str | Path | None = None,
    length: int | None = None,
    crop_bins: int | None = None,
    allow_length: bool = False,
    batch_size: int = 1,
    protocol: Protocol | str = "borzoi",
    device: str | None = "auto",
    precision: str = "auto",
    tissue_map: str | Path = TISSUE_MAP,
    min_pip: float = 0.9,
    min_variants: int = 32,
    tissue_count: str = "table",
    progress: bool = False,
) -> dict[str, Any]:
    """The GTEx fine-mapped eQTL benchmark (module docstring) of the ``eqtls`` tables: the
    variants scored here by ``models`` on ``fasta`` and ``gtf``, or read from an earlier
    score-variants run's ``scores`` (one or the other); writes ``tissues.csv``, ``eqtls.csv``
    and ``summary.json`` into ``out`` and returns the summary.

    Scoring runs the model on four windows per variant, REF and ALT forward and
    reverse-complemented, (4, ``length``) base codes -> (4, ``length``/32 - 2 ``crop_bins``,
    tracks), and keeps the logSED (genes, tracks) of the eQTL genes on the tissues' tracks.

    Args:
        eqtls: fine-mapped eQTL tables (TSV, optionally gzip/bgzip; module docstring).
        out: output directory.
        scores: a score-variants ``scores.tsv``/``scores.parquet`` (long or wide, with
            ``tracks.tsv`` and ``skipped.tsv`` beside it) or a ``sed.h5`` (also Borzoi's).
        models: instead of ``scores``: ``--model`` values (:func:`flashrna.zoo.resolve_model`;
            several: an ensemble), with ``fasta`` (indexed genome) and ``gtf`` (annotation).
        fasta: genome FASTA for scoring.
        gtf: gene annotation GTF for scoring.
        head: model head (default: human, else the model's first).
        targets: track table of the head's outputs (default: the model's own).
        length: input length in bp (default: the model's own, else 524,288).
        crop_bins: output bins dropped at each end (default: the model's own, else 5,120).
        allow_length: run the model on a length it was not built for.
        batch_size: variants per batch.
        protocol: a :class:`~flashrna.variants.Protocol`, or the name of one of
            :data:`~flashrna.variants.PROTOCOLS`.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        precision: inference precision (:func:`flashrna.model.autocast_dtype`).
        tissue_map: GTEx tissue -> track description table, used when the head's track table
            has no ``gtex_tissue`` column.
        min_pip: keep eQTLs with PIP above this.
        min_variants: a tissue counts when it has more pairs than this.
        tissue_count: what ``min_variants`` is compared with (:data:`TISSUE_COUNTS`):
            ``table`` (Borzoi: the tissue's pairs in the table) or ``scored`` (its scored pairs,
            as flashrna 0.1's legacy protocol counted).
        progress: show a progress bar while scoring.

    Returns:
        The summary: ``spearman_mean`` over the counted tissues, their number, the eQTL and
        variant counts with the variants' outcomes, the settings and the protocol in words.
    """
    scoring = [fasta, gtf, models]
    if scores and any(scoring):
        raise FlashRNAError("give either --scores or --fasta, --gtf and a --model")
    if not scores and not all(scoring):
        raise FlashRNAError("give --fasta, --gtf and --model (or --scores)")
    paths = [str(p) for p in eqtls]
    fine_mapped = read_eqtls(paths, min_pip)
    if fine_mapped.empty:
        raise FlashRNAError(f"no eQTL with PIP > {min_pip} in {', '.join(paths)}")
    if scores:
        identifiers, descriptions, tissues, source = scored_tracks(scores)
    else:
        table = load_track_table(models, head=head, targets=targets)
        identifiers, descriptions = table.identifier, table.frame["description"].to_numpy()
        tissues, source = table.gtex_tissue, table.source
    rows, tissue_descriptions, tissue_rule = gtex_tissue_tracks(
        fine_mapped["tissue"], identifiers, descriptions, tissues, tissue_map
    )
    without = [t for t, r in rows.items() if len(r) == 0]
    if without:
        log.warning("no GTEx tracks for tissue(s) %s in %s", ", ".join(without), source)
    tissue_identifiers = {t: identifiers[r] for t, r in rows.items() if len(r)}
    if not tissue_identifiers:
        raise FlashRNAError(f"{source}: no GTEx tracks for any tissue of the eQTLs")
    needed = list(dict.fromkeys(i for ids in tissue_identifiers.values() for i in ids))
    if scores:
        pair_scores, variants = read_scores(scores, fine_mapped, needed)
        protocol_words = scores_protocol(scores)
    else:
        scorer = load_scorer(
            models,
            fasta,
            gtf,
            head=head,
            targets=targets,
            identifiers=needed,
            in_order=True,
            length=length,
            crop_bins=crop_bins,
            allow_length=allow_length,
            batch_size=batch_size,
            stats=["logSED"],
            protocol=protocol,
            device=device,
            precision=precision,
        )
        # The summary records the length and crop used (the model's own unless given).
        length, crop_bins = scorer.length, scorer.crop_bins
        pair_scores, variants = score_eqtl_variants(scorer, fine_mapped, needed, progress)
        protocol_words = scorer.protocol.words()
    per_pair, per_tissue = tissue_spearman(
        fine_mapped,
        pair_scores,
        variants,
        tissue_identifiers,
        tissue_descriptions,
        min_variants,
        tissue_count,
    )
    included = per_tissue[per_tissue["included"]]
    out = Path(out)
    with atomic_file(out / "tissues.csv") as handle:
        per_tissue.to_csv(handle, index=False, float_format="%.6f")
    with atomic_file(out / "eqtls.csv") as handle:
        per_pair.to_csv(handle, index=False, float_format="%.6g")
    mean = finite_or_none(included["spearman"].mean()) if len(included) else None
    counted = "in the table" if tissue_count == "table" else "scored"
    summary = {
        "spearman_mean": mean,
        "tissues": len(included),
        "tissues_without_tracks": without,
        "eqtls": len(fine_mapped),
        "variants": int(fine_mapped["variant"].nunique()),
        "variant_outcomes": {k: int(v) for k, v in variants["outcome"].value_counts().items()},
        "min_pip": min_pip,
        "min_variants": min_variants,
        "tissue_tracks": tissue_rule,
        "tissue_count": tissue_count,
        "protocol": protocol_words,
        "protocol_description": (
            f"logSED by the {protocol_words} protocol of flashrna score-variants; tissues with "
            f"more than {min_variants} fine-mapped pairs {counted} (PIP > {min_pip})"
        ),
        "scores": str(scores)
        if scores
        else {
            "length": length,
            "crop_bins": crop_bins,
            "model": [str(m) for m in models],
            "head": head,
        },
    }
    write_json(out / "summary.json", summary)
    log.info("mean Spearman over %d tissues: %s", len(included), mean)
    return summary


def scored_tracks(scores: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str]:
    """Identifiers, descriptions and GTEx tissues (None without that column; see
    :func:`gtex_tissue_tracks` for an empty one) of the tracks of a score-variants run, and where
    they come from: the ``tracks.tsv`` beside ``scores``, or a ``sed.h5``'s targets."""
    scores = Path(scores)
    path = scores.parent / "tracks.tsv"
    if scores.suffix == ".h5" and not path.exists():
        frame = _read_h5(scores, ["target_ids", "target_labels"])
        return frame["target_ids"], frame["target_labels"], None, str(scores)
    try:
        listed = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise FlashRNAError(
            f"{path}: not found (score-variants writes it beside its scores)"
        ) from None
    tissues = listed["gtex_tissue"].to_numpy() if "gtex_tissue" in listed else None
    return (
        listed["identifier"].to_numpy(),
        listed["description"].to_numpy(),
        tissues,
        str(path),
    )


def gtex_tissue_tracks(
    tissues: Sequence[str],
    identifiers: np.ndarray,
    descriptions: np.ndarray,
    gtex_tissues: np.ndarray | None,
    tissue_map: str | Path = TISSUE_MAP,
) -> tuple[dict[str, np.ndarray], dict[str, str], str]:
    """Each GTEx tissue's tracks among tracks given by their (T,) ``identifiers``,
    ``descriptions`` and ``gtex_tissues`` (None, or all "", without that column): the tracks
    whose own GTEx tissue is the tissue when there is one (the released FlashRNA models), else
    the GTEx tracks of the tissue's description in ``tissue_map``
    (:func:`tissue_tracks`; a tissue without a row there is an error).

    Returns per tissue its track positions (int64; empty when it has none) and its
    description(s) (``;``-joined), and the rule used, in words for a summary."""
    tissues = list(dict.fromkeys(tissues))
    if gtex_tissues is not None and (np.asarray(gtex_tissues, dtype=str) != "").any():
        gtex_tissues = np.asarray(gtex_tissues, dtype=str)
        rows = {t: np.flatnonzero(gtex_tissues == t) for t in tissues}
        described = {t: ";".join(dict.fromkeys(descriptions[r])) for t, r in rows.items()}
        return rows, described, "the model's gtex_tissue column"
    mapping = read_tissue_map(tissue_map)
    unmapped = sorted(set(tissues) - set(mapping))
    if unmapped:
        raise FlashRNAError(
            f"tissue(s) {', '.join(unmapped)} have no row in {tissue_map}; add them there"
        )
    rows = {t: tissue_tracks(identifiers, descriptions, mapping[t]) for t in tissues}
    return rows, {t: mapping[t] for t in tissues}, str(tissue_map)


def score_eqtl_variants(
    scorer: VariantScorer,
    eqtls: pd.DataFrame,
    identifiers: Sequence[str],
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """logSED of the eQTL variants by ``scorer`` (whose columns are the tracks ``identifiers``),
    kept for the eQTL genes.

    Returns the scores (``variant ref gene`` + ``logSED:<identifier>``) and, indexed by variant,
    its ``outcome`` (``scored`` or a :data:`~flashrna.variants.SKIP_REASONS` entry)."""
    variants = pd.DataFrame({"outcome": "scored"}, index=list(dict.fromkeys(eqtls["variant"])))
    pairs = set(zip(eqtls["variant"], eqtls["gene"], strict=True))
    columns = [f"logSED:{i}" for i in identifiers]
    kept = []
    for batch, skipped in scorer.run(eqtl_variants(eqtls), progress):
        for item in skipped:
            variants.loc[item.variant.id, "outcome"] = item.reason
        if batch:
            kept.append(_eqtl_rows(wide_frame(scorer, batch), pairs, columns))
    empty = pd.DataFrame(columns=["variant", "ref", "gene", *columns])
    scores = pd.concat(kept, ignore_index=True) if kept else empty
    return scores, variants


def scores_protocol(path: str | Path) -> str:
    """The protocol of the score-variants run that wrote ``path`` (its ``summary.json``), in
    :meth:`~flashrna.variants.Protocol.words`."""
    summary = Path(path).parent / "summary.json"
    if not summary.exists():
        return f"unknown ({Path(path).name} has no summary.json beside it)"
    settings = read_json(summary).get("protocol_settings")
    return Protocol(**settings).words() if settings else PROTOCOLS["legacy"].words()


def read_scores(
    path: str | Path, eqtls: pd.DataFrame, identifiers: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`score_eqtl_variants`'s scores and outcomes from score-variants output: ``path`` (a
    ``scores.tsv``/``.parquet`` in either layout, or a ``sed.h5``; only the needed tracks are
    read) and the ``skipped.tsv`` beside it (without one, absent variants are
    ``not_in_scores``)."""
    path = Path(path)
    columns = [f"logSED:{i}" for i in identifiers]
    if path.suffix == ".h5":
        scores = _h5_scores(path, identifiers)
    else:
        scores = _table_scores(path, identifiers)
    names = list(dict.fromkeys(eqtls["variant"]))
    skipped_path = path.parent / "skipped.tsv"
    reasons = {}
    if skipped_path.exists():
        skipped = pd.read_csv(skipped_path, sep="\t", dtype=str, keep_default_na=False)
        reasons = dict(zip(skipped["variant"], skipped["reason"], strict=True))
    scored = set(scores["variant"])
    outcome = ["scored" if n in scored else reasons.get(n, "not_in_scores") for n in names]
    pairs = set(zip(eqtls["variant"], eqtls["gene"], strict=True))
    return _eqtl_rows(scores, pairs, columns), pd.DataFrame({"outcome": outcome}, index=names)


def _table_scores(path: Path, identifiers: Sequence[str]) -> pd.DataFrame:
    """``variant ref gene_id logSED:<identifier>...`` from a long or wide scores table."""
    parquet = path.suffix == ".parquet"
    try:
        if parquet:
            import pyarrow.parquet as pq

            header = pq.read_schema(path).names
        else:
            header = pd.read_csv(path, sep="\t", nrows=0).columns.tolist()
        keys = ["variant", "ref", "gene_id"]
        if "track" in header:  # long: the needed tracks' rows, one column per track
            usecols = [*keys, "track", "logSED"]
            if parquet:
                frame = pd.read_parquet(
                    path, columns=usecols, filters=[("track", "in", list(identifiers))]
                )
            else:
                chunks = pd.read_csv(
                    path, sep="\t", usecols=usecols, chunksize=1_000_000,
                    dtype={"variant": str, "ref": str, "track": str},
                )  # fmt: skip
                frame = pd.concat(c[c["track"].isin(identifiers)] for c in chunks)
            wide = frame.pivot_table(
                index=keys, columns="track", values="logSED", aggfunc="first", sort=False
            )
            wide = wide.reindex(columns=list(identifiers)).add_prefix("logSED:")
            return wide.reset_index()
        usecols = [*keys, *(f"logSED:{i}" for i in identifiers)]
        if parquet:
            return pd.read_parquet(path, columns=usecols)
        return pd.read_csv(path, sep="\t", usecols=usecols, dtype={"variant": str, "ref": str})
    except FileNotFoundError:
        raise FlashRNAError(f"{path}: not found") from None
    except (ValueError, KeyError) as err:  # a column the file lacks
        raise FlashRNAError(f"{path}: lacks scores this benchmark needs ({err})") from None


def _read_h5(path: str | Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Datasets of an HDF5 file, byte strings decoded as UTF-8."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            missing = [n for n in names if n not in h5]
            if missing:
                raise FlashRNAError(f"{path}: no dataset(s) {', '.join(missing)}")
            data = {n: h5[n][()] for n in names}
    except (FileNotFoundError, OSError) as err:
        raise FlashRNAError(f"{path}: not a readable HDF5 file ({err})") from None
    return {n: np.char.decode(v, "utf-8") if v.dtype.kind == "S" else v for n, v in data.items()}


def _h5_scores(path: Path, identifiers: Sequence[str]) -> pd.DataFrame:
    """``variant ref gene_id logSED:<identifier>...`` from a ``sed.h5`` (Borzoi's layout)."""
    data = _read_h5(path, ["si", "snp", "ref_allele", "gene", "target_ids", "logSED"])
    position = {t: k for k, t in enumerate(data["target_ids"])}
    missing = [i for i in identifiers if i not in position]
    if missing:
        raise FlashRNAError(f"{path}: no target(s) {', '.join(missing[:5])}")
    values = data["logSED"][:, [position[i] for i in identifiers]].astype(np.float64)
    frame = pd.DataFrame(
        {
            "variant": data["snp"][data["si"]],
            "ref": data["ref_allele"][data["si"]],
            "gene_id": data["gene"],
        }
    )
    return pd.concat(
        [frame, pd.DataFrame(values, columns=[f"logSED:{i}" for i in identifiers])], axis=1
    )


def _eqtl_rows(frame: pd.DataFrame, pairs: set, score_columns: list[str]) -> pd.DataFrame:
    """The rows of score-variants output whose (variant, gene without version) is an eQTL."""
    frame = frame.assign(gene=frame["gene_id"].map(trim_version))
    keep = [p in pairs for p in zip(frame["variant"], frame["gene"], strict=True)]
    rows = frame.loc[keep, ["variant", "ref", "gene", *score_columns]]
    return rows.drop_duplicates(["variant", "gene"])


def tissue_spearman(
    eqtls: pd.DataFrame,
    scores: pd.DataFrame,
    variants: pd.DataFrame,
    tissue_identifiers: dict[str, np.ndarray],
    tissue_map: dict[str, str],
    min_variants: int = 32,
    count: str = "table",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per eQTL pair its score and outcome, and per tissue its counts and the Spearman ρ of
    score and ``beta_posterior`` (module docstring). ``scores`` and ``variants`` as
    :func:`score_eqtl_variants` returns; ``tissue_identifiers``: each tissue's track
    identifiers; ``count``: what ``min_variants`` is compared with (:data:`TISSUE_COUNTS`)."""
    from scipy.stats import spearmanr

    if count not in TISSUE_COUNTS:
        raise FlashRNAError(f"tissue count '{count}' is not one of {TISSUE_COUNTS}")
    pairs_out, tissues_out = [], []
    for tissue, identifiers in tissue_identifiers.items():
        columns = [f"logSED:{i}" for i in identifiers]
        pairs = eqtls[eqtls["tissue"] == tissue].merge(
            scores[["variant", "ref", "gene", *columns]], on=["variant", "gene"], how="left"
        )
        values = pairs[columns].to_numpy(dtype=float)
        outcome = variants.loc[pairs["variant"], "outcome"].to_numpy()
        scored = np.isin(outcome, SCORED_OUTCOMES)
        found = ~np.isnan(values).all(axis=1)
        # A pair without a score row predicts no effect: score 0.
        score = np.zeros(len(pairs))
        score[found] = np.nanmean(values[found], axis=1)
        score[~scored] = np.nan
        # The scored REF; for pairs without a score row, the REF of the variant id.
        ref = pairs["ref"].fillna(pairs["variant"].map(_id_ref)).to_numpy()
        flip = ref != pairs["allele1"].to_numpy()
        score = np.where(flip, -score, score)
        outcome = np.where(scored & ~found & (outcome == "scored"), "outside_window", outcome)
        pairs = pairs[["tissue", "variant", "gene", "pip", "beta_posterior", "allele1"]].assign(
            ref=ref, score=score, outcome=outcome
        )
        pairs_out.append(pairs)
        rho = np.nan
        if scored.sum() > 1:
            rho = spearmanr(score[scored], pairs["beta_posterior"].to_numpy()[scored])[0]
        counts = {
            "tissue": tissue,
            "description": tissue_map[tissue],
            "tracks": len(identifiers),
            "eqtls": len(pairs),
            "scored": int(scored.sum()),
            "outside_window": int((outcome == "outside_window").sum()),
            "no_genes": int(np.isin(outcome, ["no_genes", "not_in_scores"]).sum()),
            "not_scored": int((~scored).sum()),
            **{f"skipped_{r}": int((outcome == r).sum()) for r in SKIPPED},
            "flipped": int((flip & scored).sum()),
            "spearman": rho,
        }
        counts["included"] = counts["eqtls" if count == "table" else "scored"] > min_variants
        tissues_out.append(counts)
    return pd.concat(pairs_out, ignore_index=True), pd.DataFrame(tissues_out)


def _id_ref(name: str) -> str:
    variant = parse_variant_id(name)
    return variant.ref if variant else ""
