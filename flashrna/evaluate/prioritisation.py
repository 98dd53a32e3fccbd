"""``flashrna eqtl-prioritisation``: fine-mapped eQTLs against distance-matched negatives (Flashzoi
Fig. 2b).

Data: Linder et al.'s sets (Borzoi's QTL bucket ``gs://borzoi-paper/qtl/eqtl/``, Requester Pays),
per GTEx tissue two VCFs, ``<tissue>_pos.vcf`` (SuSiE fine-mapped eQTLs, PIP > 0.9) and
``<tissue>_neg.vcf`` (variants with PIP < 0.01 matched to the positives by distance to the TSS), in
the layout of calico/borzoi-paper ``data/qtl`` (``CHROM POS ID REF ALT QUAL FILTER INFO``; the
INFO keys ``MT`` (trait), ``PI`` (the matched positive) are not needed here). ``--vcf-dir`` takes a
folder of such pairs (as calico/borzoi's ``borzoi_gtex_coef_sed.py`` globs ``*_pos.vcf`` and
swaps ``_pos.`` for ``_neg.``), ``--vcfs`` the ``_pos`` files themselves.

Score (Flashzoi's): the variant at index L // 2 of an L-bp window (:meth:`Genome.variant_windows`, N
beyond contig ends); reference and alternative predicted forward + reverse-complement averaged
(:func:`flashrna.model.predict`; ``--no-rc``: forward only), ``--crop-bins`` dropped at each end
(Flashzoi: 16 of 16,384), inverse-transformed to counts (``--units squashed`` keeps the stored
scale); per track the Euclidean norm over the bins of log2(alt + 1) - log2(ref + 1); a tissue's
score is that norm averaged over the tissue's GTEx tracks
(:func:`~flashrna.evaluate.eqtl.gtex_tissue_tracks`: the tracks whose own ``gtex_tissue`` is the
tissue when the model's track table has that column, as the released FlashRNA models' do; else the
tissue map and rule of :mod:`flashrna.evaluate.eqtl`). Every distinct variant is predicted once, on
the union of the tissues' tracks. Variants that cannot be scored (not a SNV, REF not in the genome,
contig missing) are left out and counted.

Per tissue: AUROC of the score, positives against negatives, with a bootstrap 95 % interval
(:mod:`flashrna.evaluate.stats`); the benchmark is the mean AUROC over the tissues with at least
``--min-variants`` scored positives and negatives each.

Outputs in ``--out``: ``tissues.csv`` (``tissue description tracks positives negatives
scored_positives scored_negatives auroc auroc_low auroc_high included``), ``variants.csv``
(``tissue variant label score``), ``skipped.tsv`` (``variant reason detail``), ``summary.json``
(with the rule that chose the tissues' tracks). In Python: :func:`eqtl_prioritisation`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from flashrna.evaluate.eqtl import TISSUE_MAP, gtex_tissue_tracks
from flashrna.evaluate.stats import auroc, bootstrap
from flashrna.genome import Genome, ReferenceMismatchError
from flashrna.metrics import finite_or_none
from flashrna.model import predict
from flashrna.tracks import unsquash
from flashrna.utils import FlashRNAError, atomic_file, write_json
from flashrna.variants import Skipped, Variant, read_vcf
from flashrna.zoo import TrackModel, add_model_arguments, load_track_model, load_track_table

log = logging.getLogger(__name__)


def find_vcf_pairs(vcf_dir: str | Path | None, vcfs: list[str] | None) -> dict[str, Path]:
    """Tissue -> its ``_pos.vcf`` (the ``_neg.vcf`` beside it must exist)."""
    positives = sorted(Path(vcf_dir).glob("*_pos.vcf")) if vcf_dir else [Path(v) for v in vcfs]
    if not positives:
        raise FlashRNAError(f"{vcf_dir}: no <tissue>_pos.vcf files")
    pairs = {}
    for path in positives:
        if not path.name.endswith("_pos.vcf"):
            raise FlashRNAError(f"{path}: expected a <tissue>_pos.vcf file")
        negative = path.with_name(path.name.replace("_pos.", "_neg."))
        if not negative.exists():
            raise FlashRNAError(f"{negative}: not found (the negatives of {path.name})")
        pairs[path.name.removesuffix("_pos.vcf")] = path
    return pairs


def read_labelled_variants(pairs: dict[str, Path]) -> tuple[pd.DataFrame, dict]:
    """Rows ``tissue variant label`` (1 positive, 0 negative) and the distinct variants by id
    (a :class:`Variant` or, for an unreadable line, a :class:`~flashrna.variants.Skipped`)."""
    rows, variants = [], {}
    for tissue, positive in pairs.items():
        for label, path in ((1, positive), (0, positive.with_name(f"{tissue}_neg.vcf"))):
            for item in read_vcf(path):
                variant = item if isinstance(item, Variant) else None
                key = variant.id if variant else f"{path.name}:{item.line}"
                variants.setdefault(key, item)
                rows.append((tissue, key, label))
    return pd.DataFrame(rows, columns=["tissue", "variant", "label"]), variants


def l2fc_norms(
    model: TrackModel,
    genome: Genome,
    variants: dict[str, Variant | Skipped],
    columns: np.ndarray,
    *,
    length: int,
    crop_bins: int,
    units: str = "counts",
    batch_size: int = 4,
    rc: bool = True,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, str]]]:
    """Per scorable variant (by its key in ``variants``) the (C,) Euclidean norms over bins of
    log2(alt + 1) - log2(ref + 1) of the outputs ``columns``; and per variant left out,
    (reason, detail)."""
    from tqdm.auto import tqdm

    tracks = model.tracks.frame.iloc[columns]
    transform = (tracks["clip_soft"], tracks["scale"], tracks["sum_stat"])
    norms, skipped, pending = {}, {}, []

    def flush() -> None:
        windows = np.concatenate([w for _, w in pending])  # (2B, L): ref, alt, ref, alt, ...
        pred = predict(
            model.module,
            windows,
            model.head,
            batch_size=len(windows),
            device=device,
            reverse_complement_average=rc,
            crop_bins=crop_bins,
            precision=model.precision,
        )[..., torch.as_tensor(columns)]
        if units == "counts":
            pred = unsquash(pred, *transform)
        logs = torch.log2(pred.double().clamp(min=0) + 1)
        change = logs[1::2] - logs[0::2]  # (B, bins, C)
        for (name, _), norm in zip(pending, torch.linalg.vector_norm(change, dim=1), strict=True):
            norms[name] = norm.numpy()
        pending.clear()

    items = tqdm(variants.items(), desc="variants", unit="variant", disable=not progress)
    for key, v in items:
        if isinstance(v, Skipped):
            skipped[key] = (v.reason, v.detail)
        elif v.chrom not in genome.lengths:
            skipped[key] = ("contig_missing", f"{v.chrom} is not in {genome.path.name}")
        elif len(v.ref) != 1 or len(v.alt) != 1 or v.alt not in "ACGT":
            skipped[key] = ("not_snv", f"{v.ref}>{v.alt}")
        else:
            try:
                pair = genome.variant_windows(
                    v.chrom, v.pos, v.ref, v.alt, length, left=length // 2, swap=False
                )
            except ReferenceMismatchError as err:
                skipped[key] = ("ref_mismatch", str(err))
                continue
            pending.append((key, np.stack([pair.reference, pair.alternative])))
            if len(pending) == batch_size:
                flush()
    if pending:
        flush()
    return norms, skipped


def tissue_aurocs(
    labelled: pd.DataFrame,
    norms: dict[str, np.ndarray],
    tissue_columns: dict[str, np.ndarray],
    descriptions: dict[str, str],
    *,
    min_variants: int = 10,
    resamples: int = 1000,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per labelled variant its tissue's score, and per tissue the AUROC (module docstring).
    ``tissue_columns`` gives each tissue's positions among the norms' C columns."""
    variant_rows, tissue_rows = [], []
    for tissue, group in labelled.groupby("tissue", sort=True):
        columns = tissue_columns[tissue]
        scores = np.array(
            [norms[v][columns].mean() if v in norms else np.nan for v in group["variant"]]
        )
        labels = group["label"].to_numpy()
        variant_rows.append(group.assign(score=scores))
        scored = np.isfinite(scores)
        estimate = bootstrap(auroc, labels[scored], scores[scored], resamples=resamples)
        counts = {
            "positives": int((labels == 1).sum()),
            "negatives": int((labels == 0).sum()),
            "scored_positives": int((scored & (labels == 1)).sum()),
            "scored_negatives": int((scored & (labels == 0)).sum()),
        }
        tissue_rows.append(
            {
                "tissue": tissue,
                "description": descriptions[tissue],
                "tracks": len(columns),
                **counts,
                **estimate.row("auroc"),
                "included": min(counts["scored_positives"], counts["scored_negatives"])
                >= min_variants,
            }
        )
    return pd.DataFrame(tissue_rows), pd.concat(variant_rows, ignore_index=True)


def eqtl_prioritisation(
    vcfs: Mapping[str, str | Path] | str | Path,
    models: Sequence[str | Path],
    fasta: str | Path,
    out: str | Path,
    *,
    head: str | None = None,
    targets: str | Path | None = None,
    tissue_map: str | Path = TISSUE_MAP,
    length: int = 524_288,
    crop_bins: int = 16,
    units: str = "counts",
    batch_size: int = 1,
    rc: bool = True,
    min_variants: int = 10,
    bootstrap: int = 1000,
    device: str | torch.device | None = "auto",
    precision: str = "auto",
    progress: bool = False,
) -> dict:
    """Score the fine-mapped eQTLs and their negatives and write the outputs of the module
    docstring into ``out``.

    ``vcfs``: a folder of ``<tissue>_pos.vcf``/``<tissue>_neg.vcf`` pairs, or tissue ->
    ``<tissue>_pos.vcf`` (:func:`find_vcf_pairs`). ``models`` (several: their ensemble),
    ``head``, ``targets`` (the head's track table; default the model's own), ``device`` and
    ``precision`` as :func:`~flashrna.zoo.load_track_model` takes them. A tissue's tracks:
    :func:`gtex_tissue_tracks` (``tissue_map`` when the table has no ``gtex_tissue`` column).
    Each variant is predicted on a ``length``-bp input, ``crop_bins`` output bins dropped at
    each end, in ``units`` (``counts`` or ``squashed``), ``batch_size`` variants at a time,
    with reverse-complement averaging when ``rc``. A tissue enters the mean AUROC with at least
    ``min_variants`` scored positives and negatives; intervals from ``bootstrap`` resamples.
    Returns the summary written to ``summary.json``."""
    if isinstance(vcfs, str | Path):
        pairs = find_vcf_pairs(vcfs, None)
    else:
        pairs = {tissue: Path(path) for tissue, path in vcfs.items()}
    table = load_track_table(models, head=head, targets=targets)
    descriptions = table.frame["description"].to_numpy()
    rows, tissue_descriptions, rule = gtex_tissue_tracks(
        list(pairs), table.identifier, descriptions, table.gtex_tissue, tissue_map
    )
    without = sorted(t for t, r in rows.items() if len(r) == 0)
    if without:
        log.warning("no GTEx tracks for tissue(s) %s in %s", ", ".join(without), table.source)
    rows = {t: r for t, r in rows.items() if len(r)}
    if not rows:
        raise FlashRNAError(f"{table.source}: no GTEx tracks for any tissue of the VCFs")
    needed = list(dict.fromkeys(table.identifier[k] for r in rows.values() for k in r))
    position = {ident: k for k, ident in enumerate(needed)}
    tissue_columns = {
        t: np.array([position[table.identifier[k]] for k in r]) for t, r in rows.items()
    }
    labelled, variants = read_labelled_variants({t: pairs[t] for t in rows})
    model = load_track_model(
        models,
        head=head,
        targets=targets,
        identifiers=needed,
        device=device,
        precision=precision,
    )
    norms, skipped = l2fc_norms(
        model,
        Genome(fasta),
        variants,
        model.columns(needed),
        length=length,
        crop_bins=crop_bins,
        units=units,
        batch_size=batch_size,
        rc=rc,
        device=device,
        progress=progress,
    )
    per_tissue, per_variant = tissue_aurocs(
        labelled,
        norms,
        tissue_columns,
        {t: tissue_descriptions[t] for t in rows},
        min_variants=min_variants,
        resamples=bootstrap,
    )
    out = Path(out)
    with atomic_file(out / "tissues.csv") as handle:
        per_tissue.to_csv(handle, index=False, float_format="%.6f")
    with atomic_file(out / "variants.csv") as handle:
        per_variant.to_csv(handle, index=False, float_format="%.6g")
    with atomic_file(out / "skipped.tsv") as handle:
        handle.write("variant\treason\tdetail\n")
        for name, (reason, detail) in skipped.items():
            handle.write(f"{name}\t{reason}\t{detail}\n")
    included = per_tissue[per_tissue["included"]]
    mean = finite_or_none(included["auroc"].mean()) if len(included) else None
    summary = {
        "auroc_mean": mean,
        "tissues": len(included),
        "tissues_without_tracks": without,
        "variants": len(variants),
        "scored": len(norms),
        "skipped": pd.Series([r for r, _ in skipped.values()]).value_counts().to_dict(),
        "score": "mean over the tissue's GTEx tracks of the L2 norm over bins of "
        "log2(alt + 1) - log2(ref + 1)",
        "tissue_tracks": rule,
        "units": units,
        "length": length,
        "crop_bins": crop_bins,
        "reverse_complement": rc,
        "min_variants": min_variants,
        "model": model.name,
        "head": model.head,
    }
    write_json(out / "summary.json", summary)
    log.info("mean AUROC over %d tissues: %s", len(included), mean)
    return summary


def register_eqtl_prioritisation(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--vcf-dir", help="folder of <tissue>_pos.vcf / <tissue>_neg.vcf pairs")
    source.add_argument("--vcfs", nargs="+", help="or: <tissue>_pos.vcf files (negatives beside)")
    parser.add_argument("--fasta", required=True, help="genome FASTA (indexed; bgzip or plain)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--length", type=int, default=524_288, help="model input length in bp")
    parser.add_argument(
        "--crop-bins", type=int, default=16, help="output bins dropped at each end (Flashzoi: 16)"
    )
    parser.add_argument(
        "--units", choices=("counts", "squashed"), default="counts", help="prediction units"
    )
    parser.add_argument("--batch-size", type=int, default=1, help="variants per batch")
    parser.add_argument(
        "--no-rc", action="store_true", help="no reverse-complement averaging (faster)"
    )
    parser.add_argument(
        "--tissue-map",
        default=str(TISSUE_MAP),
        help="GTEx tissue -> track description table (used when the model's track table has "
        "no gtex_tissue column)",
    )
    parser.add_argument(
        "--min-variants",
        type=int,
        default=10,
        help="a tissue enters the mean with at least this many scored positives and negatives",
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    add_model_arguments(parser)
    parser.set_defaults(run=_run_eqtl_prioritisation)


def _run_eqtl_prioritisation(args: argparse.Namespace) -> None:
    eqtl_prioritisation(
        args.vcf_dir or find_vcf_pairs(None, args.vcfs),
        args.model,
        args.fasta,
        args.out,
        head=args.head,
        targets=args.targets,
        tissue_map=args.tissue_map,
        length=args.length,
        crop_bins=args.crop_bins,
        units=args.units,
        batch_size=args.batch_size,
        rc=not args.no_rc,
        min_variants=args.min_variants,
        bootstrap=args.bootstrap,
        device=args.device,
        precision=args.precision,
        progress=args.progress,
    )
