"""``flashrna flowfish-benchmark``: Variant-FlowFISH edits of the PPIF enhancer and promoter,
predicted against measured effects (Flashzoi Fig. 2c).

Data: the measured effects of Martyn et al., "Rewriting regulatory DNA to dissect and reprogram
gene expression", Cell 188:3349 (2025), doi:10.1016/j.cell.2025.03.034 (bioRxiv
10.1101/2023.12.20.572268): prime-edited variants of the PPIF enhancer and promoter, their effect
on PPIF expression measured by Variant-FlowFISH in two immune cell lines. **A manual download**:
the paper's supplementary table, saved as a TSV or CSV (``--table``); nothing fetches it. Its
column names could not be read from this project's build machines, so they are given with
``--columns KEY=HEADER`` for the keys

- ``variant`` (required): text holding ``chrN:POS:REF>ALT`` (1-based POS, hg19 unless ``--build
  hg38``), as the Variant-FlowFISH pipeline names variants (EngreitzLab/variant-flowfish:
  ``PPIF_enhancer_original-chr10:81046426:GTTAG>AGCCA``);
- ``effect`` (required): the measured effect on expression, in ``--effect-units`` (``percent``
  change, ``fraction``, or ``log2`` fold change);
- ``element`` (optional): ``enhancer``/``promoter``; without it, read from the variant text;
- ``cell_type`` (optional): kept when in ``--cell-types`` (all when not given), and reported per
  cell type.

Steps (Flashzoi's): indels (REF and ALT of different lengths) removed; hg19 -> hg38 through a
UCSC chain file (``--chain``, e.g. ``hg19ToHg38.over.chain.gz``); REF checked against the genome.
Prediction: the input of ``--length`` bp centred on the gene's TSS (``--gene``, PPIF), with and
without the edit; the gene's value (:mod:`flashrna.attribute`: its exon-summed prediction of the
selected tracks, reverse-complement averaged); predicted effect log2(alt / ref) of that value.
Measured effects are converted to log2 fold change. Pearson r of predicted against measured with
a bootstrap 95 % interval, per element, over all edits, and per cell type.

Outputs in ``--out``: ``edits.csv`` (every row read, its hg38 position, predicted and measured
log2 fold change, outcome), ``metrics.csv`` (``cell_type element edits pearson pearson_low
pearson_high``), ``summary.json``. In Python: :func:`flowfish_benchmark`.
"""

from __future__ import annotations

import argparse
import bisect
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from flashrna.annotation import Annotation
from flashrna.attribute import (
    add_value_arguments,
    find_gene,
    gene_target,
    load_readout,
    predicted_values,
    readout_options,
)
from flashrna.evaluate.stats import bootstrap, pearson
from flashrna.genome import Genome, decode_sequence, encode_sequence
from flashrna.metrics import finite_or_none
from flashrna.utils import FlashRNAError, atomic_file, open_text, write_json

log = logging.getLogger(__name__)

KEYS = ("variant", "effect", "element", "cell_type")
EFFECT_UNITS = ("percent", "fraction", "log2")
_VARIANT = re.compile(r"(chr[0-9A-Za-z_]+):(\d+):([ACGTNacgtn]+)>([ACGTNacgtn]+)")
MANUAL = (
    "the Variant-FlowFISH table is a manual download: the supplementary table of measured "
    "variant effects of Martyn et al. 2025 (Cell 188:3349, doi:10.1016/j.cell.2025.03.034), "
    "saved as TSV/CSV; then name its columns with --columns variant=... effect=..."
)


# --------------------------------------------------------------------------------------------
# Liftover
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """An ungapped aligned block of a chain: source ``[start, end)`` -> target from ``target``
    (a forward-strand position when ``strand`` is '+')."""

    start: int
    end: int
    chrom: str
    target: int
    strand: str
    size: int  # target contig length (for '-' strand blocks)


class Liftover:
    """Positions through a UCSC chain file (``chain score tName tSize tStrand tStart tEnd qName
    qSize qStrand qStart qEnd id``, then ``size dt dq`` lines and a last ``size``): the source
    is the chain's t side, the target its q side."""

    def __init__(self, blocks: dict[str, list[Block]], source: str):
        self.blocks = {c: sorted(b, key=lambda x: x.start) for c, b in blocks.items()}
        self.starts = {c: [b.start for b in bs] for c, bs in self.blocks.items()}
        self.source = source

    @classmethod
    def read(cls, path: str | Path, chroms: set[str] | None = None) -> Liftover:
        """Read a chain file (plain or gzip), keeping the chains of ``chroms`` (all if None)."""
        path = Path(path)
        blocks: dict[str, list[Block]] = {}
        header = None
        try:
            with open_text(path) as handle:
                for number, line in enumerate(handle, start=1):
                    fields = line.split()
                    if not fields or line.startswith("#"):
                        continue
                    if fields[0] == "chain":
                        if len(fields) < 12:
                            raise FlashRNAError(f"{path}:{number}: a chain line has 12+ fields")
                        t_name, q_name, q_strand = fields[2], fields[7], fields[9]
                        t, q, q_size = int(fields[5]), int(fields[10]), int(fields[8])
                        header = (t_name, q_name, q_strand, q_size)
                        keep = chroms is None or t_name in chroms
                        continue
                    if header is None:
                        raise FlashRNAError(f"{path}:{number}: alignment data before a chain line")
                    size = int(fields[0])
                    if keep:
                        t_name, q_name, q_strand, q_size = header
                        block = Block(t, t + size, q_name, q, q_strand, q_size)
                        blocks.setdefault(t_name, []).append(block)
                    if len(fields) >= 3:
                        t, q = t + size + int(fields[1]), q + size + int(fields[2])
        except FileNotFoundError:
            raise FlashRNAError(f"{path}: chain file not found") from None
        except (ValueError, OSError, EOFError) as err:
            raise FlashRNAError(f"{path}: not a UCSC chain file ({err})") from None
        return cls(blocks, str(path))

    def lift(self, chrom: str, start: int, end: int) -> tuple[str, int, str] | None:
        """The target (chrom, 0-based start, strand) of source ``[start, end)`` when it lies in
        one block; None when it does not map (as UCSC liftOver with minMatch 1)."""
        starts = self.starts.get(chrom)
        if not starts:
            return None
        k = bisect.bisect_right(starts, start) - 1
        if k < 0:
            return None
        block = self.blocks[chrom][k]
        if not block.start <= start < end <= block.end:
            return None
        offset = block.target + start - block.start
        if block.strand == "+":
            return block.chrom, offset, "+"
        return block.chrom, block.size - offset - (end - start), "-"


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def parse_columns(pairs: list[str] | None) -> dict[str, str]:
    """``KEY=HEADER`` options -> {key: header}; keys default to themselves."""
    mapping = {key: key for key in KEYS}
    for pair in pairs or []:
        key, sep, header = pair.partition("=")
        if not sep or key not in KEYS or not header:
            raise FlashRNAError(f"--columns {pair}: expected KEY=HEADER with KEY in {KEYS}")
        mapping[key] = header
    return mapping


def to_log2(values: np.ndarray, units: str) -> np.ndarray:
    """Measured effects in ``units`` -> log2 fold change (NaN where undefined)."""
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if units == "percent":
            return np.log2(1 + values / 100)
        if units == "fraction":
            return np.log2(1 + values)
    return values


def read_flowfish(
    path: str | Path, columns: dict[str, str], effect_units: str = "percent"
) -> pd.DataFrame:
    """The table's rows as ``chrom pos ref alt element cell_type measured`` (1-based ``pos`` in
    the table's build, ``measured`` in log2 fold change) plus ``variant`` (the text read)."""
    path = Path(path)
    if not path.exists():
        raise FlashRNAError(f"{path}: not found; {MANUAL}")
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise FlashRNAError(
            f"{path}: not a {'CSV' if sep == ',' else 'TSV'} table ({err})"
        ) from None
    for key in ("variant", "effect"):
        if columns[key] not in frame.columns:
            raise FlashRNAError(
                f"{path}: no column '{columns[key]}' for {key} (columns: "
                f"{', '.join(frame.columns[:12])}); map it with --columns {key}=HEADER"
            )
    rows = []
    for number, text in enumerate(frame[columns["variant"]], start=1):
        match = _VARIANT.search(text)
        if match is None:
            raise FlashRNAError(f"{path}: data row {number}: '{text}' holds no chrN:POS:REF>ALT")
        chrom, pos, ref, alt = match[1], int(match[2]), match[3].upper(), match[4].upper()
        if columns["element"] in frame.columns:
            element = frame[columns["element"]].iloc[number - 1].lower()
        else:
            found = re.search(r"enhancer|promoter", text, re.IGNORECASE)
            element = found[0].lower() if found else "unknown"
        rows.append((text, chrom, pos, ref, alt, element))
    out = pd.DataFrame(rows, columns=["variant", "chrom", "pos", "ref", "alt", "element"])
    out["cell_type"] = (
        frame[columns["cell_type"]].to_numpy() if columns["cell_type"] in frame.columns else "all"
    )
    effect = pd.to_numeric(frame[columns["effect"]], errors="coerce")
    out["measured"] = to_log2(effect.to_numpy(), effect_units)
    return out


def place_edits(edits: pd.DataFrame, genome: Genome, liftover: Liftover | None) -> pd.DataFrame:
    """Add ``hg38_chrom hg38_start`` (0-based) and ``outcome`` (``ok`` or why an edit is left
    out: ``indel``, ``no_measurement``, ``unlifted``, ``ref_mismatch``)."""
    chroms, starts, outcomes = [], [], []
    for row in edits.itertuples():
        chrom, start, outcome = row.chrom, row.pos - 1, "ok"
        if len(row.ref) != len(row.alt):
            outcome = "indel"
        elif not math.isfinite(row.measured):
            outcome = "no_measurement"
        elif liftover is not None:
            lifted = liftover.lift(row.chrom, start, start + len(row.ref))
            if lifted is None or lifted[2] != "+":
                outcome = "unlifted"
            else:
                chrom, start, _ = lifted
        if outcome == "ok":
            found = (
                decode_sequence(genome.fetch(chrom, start, start + len(row.ref)))
                if chrom in genome.lengths
                else ""
            )
            if found != row.ref:
                outcome = "ref_mismatch"
        chroms.append(chrom)
        starts.append(start)
        outcomes.append(outcome)
    return edits.assign(hg38_chrom=chroms, hg38_start=starts, outcome=outcomes)


def flowfish_metrics(edits: pd.DataFrame, resamples: int = 1000) -> pd.DataFrame:
    """Pearson r (bootstrap 95 % interval) of predicted against measured, per cell type and
    element, and over all elements."""
    rows = []
    scored = edits[edits["outcome"] == "ok"]
    for cell_type, by_cell in scored.groupby("cell_type", sort=True):
        subsets = [("all", by_cell), *by_cell.groupby("element", sort=True)]
        for element, subset in subsets:
            estimate = bootstrap(
                pearson, subset["predicted"], subset["measured"], resamples=resamples
            )
            rows.append({"cell_type": cell_type, "element": element, "edits": len(subset),
                         **estimate.row("pearson")})  # fmt: skip
    return pd.DataFrame(rows, columns=["cell_type", "element", "edits", "pearson",
                                       "pearson_low", "pearson_high"])  # fmt: skip


# --------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------


def flowfish_benchmark(
    table: str | Path,
    models: Sequence[str | Path],
    fasta: str | Path,
    gtf: str | Path,
    out: str | Path,
    *,
    columns: Mapping[str, str] | None = None,
    effect_units: str = "percent",
    cell_types: Sequence[str] | None = None,
    build: str = "hg19",
    chain: str | Path | None = None,
    gene: str = "PPIF",
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
    batch_size: int = 1,
    bootstrap: int = 1000,
    rc: bool = True,
    autocast: bool = False,
    device: str | torch.device | None = "auto",
    progress: bool = False,
) -> dict:
    """Predict the edits of the Variant-FlowFISH ``table`` and write the outputs of the module
    docstring into ``out``.

    ``columns``: the table's header for each of :data:`KEYS` (a key not given is its own
    header); effects in ``effect_units`` (:data:`EFFECT_UNITS`); rows of ``cell_types`` only
    (None: all); coordinates in ``build`` (``hg19``: lifted through the UCSC ``chain``). The
    edited ``gene`` (id or name in ``gtf``) centres the ``length``-bp input from ``fasta``; its
    value is read from ``models`` (several: their ensemble) by :func:`~flashrna.attribute.
    load_readout` (``head``, ``targets``, ``tracks``, ``assays``, ``description``, ``units``,
    ``transform``, ``pseudo``, ``crop_bins``, ``device``), ``batch_size`` inputs at a time,
    reverse-complement averaged when ``rc``, under bf16 autocast when ``autocast``. Intervals
    from ``bootstrap`` resamples. Returns the summary written to ``summary.json``."""
    headers = parse_columns([f"{key}={header}" for key, header in (columns or {}).items()])
    edits = read_flowfish(table, headers, effect_units)
    if cell_types:
        edits = edits[edits["cell_type"].isin(cell_types)].reset_index(drop=True)
        if edits.empty:
            raise FlashRNAError(f"{table}: no edit in cell type(s) {cell_types}")
    if build == "hg19" and not chain:
        raise FlashRNAError("the table is in hg19 (--build): give --chain hg19ToHg38.over.chain")
    liftover = Liftover.read(chain, set(edits["chrom"])) if build == "hg19" else None
    genome = Genome(fasta)
    edits = place_edits(edits, genome, liftover)
    found = find_gene(Annotation.read_gtf(gtf), gene)
    target = gene_target(found)
    start = target.window_start(length)
    reference = genome.fetch(found.chrom, start, start + length)
    ok = (edits["outcome"] == "ok").to_numpy()
    for k in np.flatnonzero(ok):
        row = edits.iloc[k]
        offset = row.hg38_start - start
        if row.hg38_chrom != found.chrom or not 0 <= offset <= length - len(row.alt):
            edits.loc[k, "outcome"] = "outside_window"
    ok = (edits["outcome"] == "ok").to_numpy()
    sequences = [reference]
    for row in edits[ok].itertuples():
        edited = reference.copy()
        offset = row.hg38_start - start
        edited[offset : offset + len(row.alt)] = encode_sequence(row.alt)
        sequences.append(edited)
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
    values = predicted_values(
        model.module,
        np.stack(sequences),
        [target] * len(sequences),
        readout,
        head=model.head,
        batch_size=batch_size,
        device=device,
        rc=rc,
        autocast=autocast,
        progress=progress,
    )
    if readout.transform == "log":
        predicted = (values[1:] - values[0]) / np.log(2)
    else:
        predicted = np.log2(values[1:] / values[0])
    edits["predicted"] = np.nan
    edits.loc[ok, "predicted"] = predicted
    metrics = flowfish_metrics(edits, bootstrap)
    out = Path(out)
    with atomic_file(out / "edits.csv") as handle:
        edits.to_csv(handle, index=False, float_format="%.6g")
    with atomic_file(out / "metrics.csv") as handle:
        metrics.to_csv(handle, index=False, float_format="%.6f")
    summary = {
        "pearson": {
            f"{r.cell_type}:{r.element}": {
                "pearson": finite_or_none(r.pearson),
                "low": finite_or_none(r.pearson_low),
                "high": finite_or_none(r.pearson_high),
                "edits": int(r.edits),
            }
            for r in metrics.itertuples()
        },
        "outcomes": edits["outcome"].value_counts().to_dict(),
        "gene": found.gene_id,
        "gene_name": found.name,
        "effect_units": effect_units,
        "build": build,
        "length": length,
        "tracks": list(readout.tracks.identifier[readout.columns]),
        "model": model.name,
        "head": model.head,
    }
    write_json(out / "summary.json", summary)
    log.info("Pearson: %s", {k: v["pearson"] for k, v in summary["pearson"].items()})
    return summary


def register_flowfish_benchmark(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Variant-FlowFISH (Martyn et al. 2025): predicted against measured effects of PPIF "
        "enhancer and promoter edits. " + MANUAL[0].upper() + MANUAL[1:] + "."
    )
    parser.add_argument("--table", required=True, help="the Variant-FlowFISH table (TSV/CSV)")
    parser.add_argument(
        "--columns", nargs="+", metavar="KEY=HEADER", help=f"the table's headers for {KEYS}"
    )
    parser.add_argument(
        "--effect-units", choices=EFFECT_UNITS, default="percent", help="units of the effects"
    )
    parser.add_argument("--cell-types", nargs="+", help="cell types to keep (default: all)")
    parser.add_argument(
        "--build",
        choices=("hg19", "hg38"),
        default="hg19",
        help="coordinates of the table (hg19 needs --chain)",
    )
    parser.add_argument("--chain", help="UCSC chain hg19 -> hg38 (hg19ToHg38.over.chain.gz)")
    parser.add_argument("--gene", default="PPIF", help="the edited gene (id or name)")
    parser.add_argument("--fasta", required=True, help="hg38 genome FASTA")
    parser.add_argument("--gtf", required=True, help="gene annotation GTF")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    add_value_arguments(parser)
    parser.set_defaults(run=_run_flowfish_benchmark)


def _run_flowfish_benchmark(args: argparse.Namespace) -> None:
    flowfish_benchmark(
        args.table,
        args.model,
        args.fasta,
        args.gtf,
        args.out,
        columns=parse_columns(args.columns),
        effect_units=args.effect_units,
        cell_types=args.cell_types,
        build=args.build,
        chain=args.chain,
        gene=args.gene,
        **readout_options(args),
        length=args.length,
        batch_size=args.batch_size,
        bootstrap=args.bootstrap,
        rc=not args.no_rc,
        autocast=args.autocast,
        device=args.device,
        progress=args.progress,
    )
