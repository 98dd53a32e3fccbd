"""``flashrna eqtl-benchmark``: GTEx fine-mapped eQTL Spearman (Table 2, Figure 2).

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
``GTEX`` (rule from Borzoi's ``borzoi_gtex_coef_sed.py``, made exact: e.g. Whole_Blood and
Cells_EBV-transformed_lymphocytes -> ``RNA:blood``, Cells_Cultured_fibroblasts -> ``RNA:skin``,
the three arteries -> ``RNA:blood_vessel``); score every distinct variant once with
:class:`flashrna.variants.VariantScorer` (logSED, ``--units``), or read the scores of an earlier
``score-variants`` run (``--scores``, e.g. ``score-variants --eqtls``); a variant-gene pair's
score is the mean logSED over the tissue's tracks, negated when the scored REF is not
``allele1``; a gene with no exon in the window scores 0 (no predicted effect, as in Borzoi);
variants that cannot be scored (REF mismatch, missing contig, indel) are left out and counted.
Per tissue with more than ``--min-variants`` (32) scored pairs: Spearman ρ of score against
``beta_posterior``; the benchmark is the mean ρ over those tissues.

Outputs in ``--out``: ``tissues.csv`` (``tissue description tracks eqtls scored
outside_window not_scored flipped spearman included``), ``eqtls.csv`` (each pair with its
score), ``summary.json``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from flashrna.annotation import Annotation
from flashrna.genome import Genome
from flashrna.metrics import finite_or_none
from flashrna.tracks import TrackTable
from flashrna.utils import FlashRNAError, atomic_file, write_json
from flashrna.variants import (
    VariantScorer,
    add_scoring_arguments,
    eqtl_variants,
    parse_variant_id,
    read_eqtls,
    trim_version,
)
from flashrna.zoo import add_model_arguments, resolve_model, track_model_from_args
from flashrna.zoo.interface import default_head

log = logging.getLogger(__name__)

TISSUE_MAP = Path(__file__).resolve().parents[1] / "resources" / "gtex_tissues.tsv"


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
        help="scores.tsv of a score-variants run (with its tracks.tsv and skipped.tsv beside "
        "it) instead of scoring here; then no model, FASTA or GTF is needed",
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
        help="a tissue counts when it has more scored eQTLs than this",
    )
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    parser.set_defaults(run=_run_eqtl_benchmark)


def _run_eqtl_benchmark(args: argparse.Namespace) -> None:
    scoring = [args.fasta, args.gtf, args.model]
    if args.scores and any(scoring):
        raise FlashRNAError("give either --scores or --fasta, --gtf and a --model")
    if not args.scores and not all(scoring):
        raise FlashRNAError("give --fasta, --gtf and --model (or --scores)")
    eqtls = read_eqtls(args.eqtls, args.min_pip)
    if eqtls.empty:
        raise FlashRNAError(f"no eQTL with PIP > {args.min_pip} in {', '.join(args.eqtls)}")
    identifiers, descriptions, tissues, source = _head_tracks(args)
    if tissues is not None:  # the model's own GTEx tissue column
        rows = {t: np.flatnonzero(tissues == t) for t in dict.fromkeys(eqtls["tissue"])}
        tissue_map = {t: ";".join(dict.fromkeys(descriptions[r])) for t, r in rows.items()}
    else:
        tissue_map = read_tissue_map(args.tissue_map)
        unmapped = sorted(set(eqtls["tissue"]) - set(tissue_map))
        if unmapped:
            raise FlashRNAError(
                f"tissue(s) {', '.join(unmapped)} have no row in {args.tissue_map}; add them there"
            )
        rows = {
            t: tissue_tracks(identifiers, descriptions, tissue_map[t])
            for t in dict.fromkeys(eqtls["tissue"])
        }
    without = [t for t, r in rows.items() if len(r) == 0]
    if without:
        log.warning("no GTEx tracks for tissue(s) %s in %s", ", ".join(without), source)
    tissue_identifiers = {t: identifiers[r] for t, r in rows.items() if len(r)}
    if not tissue_identifiers:
        raise FlashRNAError(f"{source}: no GTEx tracks for any tissue of the eQTLs")
    needed = list(dict.fromkeys(i for ids in tissue_identifiers.values() for i in ids))
    if args.scores:
        scores, variants = read_scores(args.scores, eqtls, needed)
    else:
        scores, variants = score_eqtl_variants(args, eqtls, needed)
    per_pair, per_tissue = tissue_spearman(eqtls, scores, variants, tissue_identifiers, tissue_map)
    per_tissue["included"] = per_tissue["scored"] > args.min_variants
    included = per_tissue[per_tissue["included"]]
    out = Path(args.out)
    with atomic_file(out / "tissues.csv") as handle:
        per_tissue.to_csv(handle, index=False, float_format="%.6f")
    with atomic_file(out / "eqtls.csv") as handle:
        per_pair.to_csv(handle, index=False, float_format="%.6g")
    mean = finite_or_none(included["spearman"].mean()) if len(included) else None
    write_json(
        out / "summary.json",
        {
            "spearman_mean": mean,
            "tissues": len(included),
            "tissues_without_tracks": without,
            "eqtls": len(eqtls),
            "variants": int(eqtls["variant"].nunique()),
            "variant_outcomes": {k: int(v) for k, v in variants["outcome"].value_counts().items()},
            "min_pip": args.min_pip,
            "min_variants": args.min_variants,
            "tissue_tracks": "the model's gtex_tissue column"
            if tissues is not None
            else str(args.tissue_map),
            "scores": args.scores
            or {
                "units": args.units,
                "length": args.length,
                "crop_bins": args.crop_bins,
                "model": args.model,
                "head": args.head,
            },
        },
    )
    log.info("mean Spearman over %d tissues: %s", len(included), mean)


def _head_tracks(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str]:
    """Identifiers, descriptions and GTEx tissues (None without that column) of the tracks that
    can be scored, and where they come from: the ``tracks.tsv`` beside ``--scores``, else the
    head's table (without loading weights)."""
    if args.scores:
        path = Path(args.scores).parent / "tracks.tsv"
        try:
            listed = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        except FileNotFoundError:
            raise FlashRNAError(
                f"{path}: not found (score-variants writes it beside scores.tsv)"
            ) from None
        identifiers, descriptions = listed["identifier"].to_numpy(), listed["description"]
        tissues = listed["gtex_tissue"].to_numpy() if "gtex_tissue" in listed else None
        source = str(path)
    else:
        if args.targets:
            table = TrackTable.read(args.targets)
        else:
            model = resolve_model(args.model[0])
            table = model.track_table(args.head or default_head(model))
        identifiers, descriptions = table.identifier, table.frame["description"]
        tissues, source = table.gtex_tissue, table.source
    if tissues is not None and not (tissues != "").any():
        tissues = None  # an empty column: use the map
    return identifiers, descriptions.to_numpy(), tissues, source


def score_eqtl_variants(
    args: argparse.Namespace, eqtls: pd.DataFrame, identifiers: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """logSED of the eQTL variants on the tracks ``identifiers``, kept for the eQTL genes.

    Returns the scores (``variant ref gene`` + ``logSED:<identifier>``) and, indexed by variant,
    its ``outcome`` (``scored`` or a :data:`~flashrna.variants.SKIP_REASONS` entry)."""
    model = track_model_from_args(args, identifiers)
    # The summary records the length and crop used (the model's own unless given).
    args.length, args.crop_bins = model.geometry(args.length, args.crop_bins, args.allow_length)
    scorer = VariantScorer(
        model,
        Genome(args.fasta),
        Annotation.read_gtf(args.gtf),
        columns=model.columns(identifiers),
        length=args.length,
        crop_bins=args.crop_bins,
        batch_size=args.batch_size,
        units=args.units,
        stats=["logSED"],
        device=args.device,
    )
    variants = pd.DataFrame({"outcome": "scored"}, index=list(dict.fromkeys(eqtls["variant"])))
    pairs = set(zip(eqtls["variant"], eqtls["gene"], strict=True))
    kept = []
    for frame, skipped in scorer.run(eqtl_variants(eqtls), args.progress):
        for item in skipped:
            variants.loc[item.variant.id, "outcome"] = item.reason
        if frame is not None:
            kept.append(_eqtl_rows(frame, pairs, scorer.score_columns))
    columns = ["variant", "ref", "gene", *scorer.score_columns]
    scores = pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(columns=columns)
    return scores, variants


def read_scores(
    path: str | Path, eqtls: pd.DataFrame, identifiers: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`score_eqtl_variants`'s result from a score-variants output directory: its
    ``scores.tsv`` (``path``; only the needed columns are read) and ``skipped.tsv``."""
    path = Path(path)
    columns = ["variant", "ref", "gene_id", *(f"logSED:{i}" for i in identifiers)]
    try:
        scores = pd.read_csv(path, sep="\t", usecols=columns, dtype={"variant": str, "ref": str})
        skipped = pd.read_csv(path.parent / "skipped.tsv", sep="\t", dtype=str)
    except FileNotFoundError as err:
        raise FlashRNAError(f"{err.filename}: not found") from None
    except ValueError as err:  # usecols names a column the file lacks
        raise FlashRNAError(f"{path}: lacks scores this benchmark needs ({err})") from None
    names = list(dict.fromkeys(eqtls["variant"]))
    reasons = dict(zip(skipped["variant"], skipped["reason"], strict=True))
    scored = set(scores["variant"])
    outcome = ["scored" if n in scored else reasons.get(n, "not_in_scores") for n in names]
    pairs = set(zip(eqtls["variant"], eqtls["gene"], strict=True))
    kept = _eqtl_rows(scores, pairs, columns[3:])
    return kept, pd.DataFrame({"outcome": outcome}, index=names)


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
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per eQTL pair its score, and per tissue the Spearman ρ of score and ``beta_posterior``
    (module docstring). ``scores`` and ``variants`` as :func:`score_eqtl_variants` returns;
    ``tissue_identifiers``: each tissue's track identifiers."""
    from scipy.stats import spearmanr

    pairs_out, tissues_out = [], []
    for tissue, identifiers in tissue_identifiers.items():
        columns = [f"logSED:{i}" for i in identifiers]
        pairs = eqtls[eqtls["tissue"] == tissue].merge(
            scores[["variant", "ref", "gene", *columns]], on=["variant", "gene"], how="left"
        )
        values = pairs[columns].to_numpy(dtype=float)
        outcome = variants.loc[pairs["variant"], "outcome"].to_numpy()
        # A variant without genes in its window predicts no effect on any gene: score 0.
        scored = np.isin(outcome, ["scored", "no_genes"])
        found = ~np.isnan(values).all(axis=1)
        score = np.zeros(len(pairs))
        score[found] = np.nanmean(values[found], axis=1)
        score[~scored] = np.nan
        # The scored REF; for pairs without a score row, the REF of the variant id.
        ref = pairs["ref"].fillna(pairs["variant"].map(_id_ref)).to_numpy()
        flip = ref != pairs["allele1"].to_numpy()
        score = np.where(flip, -score, score)
        pairs = pairs[["tissue", "variant", "gene", "pip", "beta_posterior", "allele1"]].assign(
            ref=ref, score=score
        )
        pairs_out.append(pairs)
        rho = np.nan
        if scored.sum() > 1:
            rho = spearmanr(score[scored], pairs["beta_posterior"].to_numpy()[scored])[0]
        tissues_out.append(
            {
                "tissue": tissue,
                "description": tissue_map[tissue],
                "tracks": len(identifiers),
                "eqtls": len(pairs),
                "scored": int(scored.sum()),
                "outside_window": int((scored & ~found).sum()),
                "not_scored": int((~scored).sum()),
                "flipped": int((flip & scored).sum()),
                "spearman": rho,
            }
        )
    return pd.concat(pairs_out, ignore_index=True), pd.DataFrame(tissues_out)


def _id_ref(name: str) -> str:
    variant = parse_variant_id(name)
    return variant.ref if variant else ""
