"""Track tables (Borzoi ``targets.txt``) and the squash transform of the stored targets.

A :class:`TrackTable` describes the channels of a target array ``[..., bins, tracks]``: row ``k``
of the table is channel ``k``. ``targets.txt`` is a TSV whose unnamed first column is the channel
index in the records the table describes, then ``identifier, file, clip, clip_soft, scale,
sum_stat, strand_pair, description``. The assay is the description's text before the first ``:``
(CAGE, DNASE, ATAC, CHIP, RNA; mouse also GRO). ``strand_pair`` is the track's own index for
unstranded tracks, else its partner's, so it is an involution.

Two columns are optional: ``gtex_tissue`` (the GTEx tissue of a GTEx RNA-seq track, e.g.
``Adipose_Subcutaneous``; empty for other tracks; the released FlashRNA tables have it), kept
and written when present; and ``clip`` may be empty for tracks whose hard clip is unknown (tables
of imported models: only :meth:`TrackTable.squash` needs it, and refuses such tracks).

A table file whose first column is not ``0..n-1`` (baskerville's ``targets_rna.txt``) describes a
subset of a larger record: its first column is the source channel and its ``strand_pair`` values
point at source channels. In memory, ``source_index[k]`` is the source channel of row ``k`` and
``strand_pair`` is always re-indexed to row positions. :meth:`TrackTable.write` writes rows
``0..n-1`` and, for a subset, an extra trailing ``source_index`` column (read back by
:meth:`TrackTable.read`).

The squash transform (baskerville ``hound_data_read.py`` "old" transform, used for the published
Borzoi data), per track, on a trailing tracks axis of numpy arrays or torch tensors:

1. pool 32 bp of per-bp coverage: ``sum``/``sum_sqrt`` add them (read counts × read length
   when the coverage is per-bp read depth), ``mean``/``mean_sqrt`` average them;
2. ``*_sqrt`` tracks: x → x^(3/4);
3. soft clip: where x > clip_soft, x → clip_soft + √(x − clip_soft);
4. hard clip: x → min(x, clip) (and ≥ −clip). **Irreversible**: a stored value of
   clip × scale only says the pooled value was at least clip_soft + (clip − clip_soft)²
   (before the 3/4 power);
5. x → x × scale, stored as float16 rounded to 2 decimals (baskerville rounds in float32).

:func:`unsquash` inverts steps 5→2 (``undo_squashed_scale``): z = y / scale; where z > clip_soft,
z → clip_soft + (z − clip_soft)²; ``*_sqrt`` tracks: z → z^(4/3). Its output is in the units of
step 1 (pooled counts per 32-bp bin for ``sum`` kinds, mean depth for ``mean`` kinds), *without*
the scale factor; Borzoi's gene and eQTL code multiplies by scale again, we do not.
Non-finite input coverage is the caller's business (``make-dataset`` maps NaN to 0); the 3/4 and
4/3 powers apply to the non-negative part (negative values map to 0), so no NaN is produced.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import torch

from flashrna.utils import FlashRNAError, atomic_file

COLUMNS = (
    "identifier",
    "file",
    "clip",
    "clip_soft",
    "scale",
    "sum_stat",
    "strand_pair",
    "description",
)
GTEX_COLUMN = "gtex_tissue"  # optional
SUM_STATS = ("sum", "sum_sqrt", "mean", "mean_sqrt")
DEFAULT_ASSAYS = ("RNA", "DNASE", "ATAC")
log = logging.getLogger(__name__)
POOL_WIDTH = 32

Array = TypeVar("Array", np.ndarray, torch.Tensor)


class TrackTable:
    """The channels of a target array: one row per track, in channel order.

    Attributes (arrays of length ``n``): ``identifier``, ``assay``, ``clip`` (NaN: unknown),
    ``clip_soft``, ``scale``, ``sum_stat``, ``strand_pair`` (row positions), ``source_index``
    (channel in the source records), ``gtex_tissue`` (None without that column). ``frame`` is
    the underlying DataFrame (index ``0..n-1``).
    """

    def __init__(self, frame: pd.DataFrame, source: str = "track table") -> None:
        self.source = source
        missing = [c for c in (*COLUMNS, "source_index") if c not in frame.columns]
        if missing:
            raise FlashRNAError(f"{source}: missing column(s) {', '.join(missing)}")
        frame = frame.reset_index(drop=True)
        for column in ("clip", "clip_soft", "scale"):
            values = pd.to_numeric(frame[column], errors="coerce")
            bad = values.isna() | ~np.isfinite(values.to_numpy(float))
            if column == "clip":  # may be left empty: unknown
                bad &= frame[column].notna() & (frame[column].astype(str).str.strip() != "")
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise FlashRNAError(
                    f"{source}: row {row} ({frame['identifier'][row]}): {column} "
                    f"'{frame[column][row]}' is not a finite number"
                )
            frame[column] = values
        unknown = ~frame["sum_stat"].isin(SUM_STATS)
        if unknown.any():
            row = int(np.flatnonzero(unknown)[0])
            raise FlashRNAError(
                f"{source}: row {row} ({frame['identifier'][row]}): sum_stat "
                f"'{frame['sum_stat'][row]}' is not one of {', '.join(SUM_STATS)}"
            )
        pair = frame["strand_pair"].to_numpy(np.int64)
        n = len(frame)
        for row in range(n):
            if not 0 <= pair[row] < n or pair[pair[row]] != row:
                raise FlashRNAError(
                    f"{source}: row {row} ({frame['identifier'][row]}): strand_pair "
                    f"{pair[row]} is not a valid partner (its partner must point back to it)"
                )
        frame["strand_pair"] = pair
        frame["source_index"] = frame["source_index"].to_numpy(np.int64)
        frame["description"] = frame["description"].fillna("").astype(str)
        frame["identifier"] = frame["identifier"].astype(str)
        if GTEX_COLUMN in frame.columns:
            tissue = frame[GTEX_COLUMN]
            frame[GTEX_COLUMN] = np.where(tissue.isna(), "", tissue.astype(str)).astype(str)
        self.frame = frame

    # -- reading and writing ------------------------------------------------------------------

    @classmethod
    def read(cls, path: str | os.PathLike) -> TrackTable:
        """Read a ``targets.txt`` (optionally ``.gz``); see the module docstring."""
        path = Path(path)
        try:
            frame = pd.read_csv(path, sep="\t", index_col=0)
        except FileNotFoundError:
            raise FlashRNAError(f"{path}: file not found") from None
        except pd.errors.EmptyDataError:
            raise FlashRNAError(
                f"{path}: the file is empty; a targets.txt has a header line (an index column "
                f"then {', '.join(COLUMNS)}) and one line per track"
            ) from None
        except (pd.errors.ParserError, UnicodeDecodeError) as err:
            raise FlashRNAError(f"{path}: not a tab-separated track table ({err})") from None
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise FlashRNAError(
                f"{path}: missing column(s) {', '.join(missing)} (a targets.txt has "
                f"an index column then {', '.join(COLUMNS)})"
            )
        if frame.empty:
            raise FlashRNAError(f"{path}: the table lists no tracks (a header line only)")
        channel = pd.to_numeric(pd.Series(frame.index), errors="coerce")
        if channel.isna().any() or channel.duplicated().any():
            raise FlashRNAError(f"{path}: the first column must hold distinct channel numbers")
        channel = channel.to_numpy(np.int64)
        if "source_index" not in frame.columns:
            frame["source_index"] = channel
        if not (channel == np.arange(len(frame))).all():
            # A subset table: strand pairs name channels of the first column.
            position = {c: k for k, c in enumerate(channel)}
            pairs = []
            for k, value in enumerate(frame["strand_pair"]):
                if value not in position:
                    raise FlashRNAError(
                        f"{path}: row {channel[k]} ({frame['identifier'].iloc[k]}): strand_pair "
                        f"{value} is not a channel of this table"
                    )
                pairs.append(position[value])
            frame["strand_pair"] = pairs
        return cls(frame, source=str(path))

    def write(self, path: str | os.PathLike) -> None:
        """Write as ``targets.txt`` (rows ``0..n-1``), atomically; gzip when ``path`` ends in
        ``.gz``."""
        text = self.to_text()
        path = Path(path)
        if path.suffix == ".gz":
            with atomic_file(path, "wb") as handle:
                handle.write(gzip.compress(text.encode(), mtime=0))
        else:
            with atomic_file(path) as handle:
                handle.write(text)

    def to_text(self) -> str:
        """The ``targets.txt`` text :meth:`write` writes."""
        frame = self.frame[list(COLUMNS)].copy()
        if not self.is_identity_subset():
            frame["source_index"] = self.frame["source_index"]
        if GTEX_COLUMN in self.frame.columns:
            frame[GTEX_COLUMN] = self.frame[GTEX_COLUMN]
        return frame.to_csv(sep="\t", index=True, index_label="")

    # -- properties ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        counts = self.frame["description"].map(_assay).value_counts()
        parts = ", ".join(f"{a} {n}" for a, n in counts.items())
        return f"TrackTable({len(self)} tracks: {parts}; from {self.source})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrackTable):
            return NotImplemented
        columns = [*COLUMNS, "source_index"]
        if (GTEX_COLUMN in self.frame.columns) != (GTEX_COLUMN in other.frame.columns):
            return False
        if GTEX_COLUMN in self.frame.columns:
            columns.append(GTEX_COLUMN)
        return self.frame[columns].equals(other.frame[columns])

    @property
    def identifier(self) -> np.ndarray:
        return self.frame["identifier"].to_numpy()

    @property
    def assay(self) -> np.ndarray:
        return self.frame["description"].map(_assay).to_numpy()

    @property
    def clip(self) -> np.ndarray:
        return self.frame["clip"].to_numpy(np.float32)

    @property
    def clip_soft(self) -> np.ndarray:
        return self.frame["clip_soft"].to_numpy(np.float32)

    @property
    def scale(self) -> np.ndarray:
        return self.frame["scale"].to_numpy(np.float32)

    @property
    def sum_stat(self) -> np.ndarray:
        return self.frame["sum_stat"].to_numpy()

    @property
    def strand_pair(self) -> np.ndarray:
        return self.frame["strand_pair"].to_numpy(np.int64)

    @property
    def gtex_tissue(self) -> np.ndarray | None:
        """Each track's GTEx tissue ("" for non-GTEx tracks); None when the table has no
        ``gtex_tissue`` column."""
        if GTEX_COLUMN not in self.frame.columns:
            return None
        return self.frame[GTEX_COLUMN].to_numpy(dtype=str)

    @property
    def source_index(self) -> np.ndarray:
        return self.frame["source_index"].to_numpy(np.int64)

    def is_identity_subset(self) -> bool:
        """True when row ``k`` is source channel ``k`` for every row."""
        return bool((self.source_index == np.arange(len(self))).all())

    # -- subsets ------------------------------------------------------------------------------

    def take(self, rows: Sequence[int] | np.ndarray) -> TrackTable:
        """The table of ``rows`` (positions, in the given order), strand pairs re-indexed;
        a stranded track whose partner is not taken is an error naming it."""
        rows = np.asarray(rows, dtype=np.int64)
        position = np.full(len(self), -1, dtype=np.int64)
        position[rows] = np.arange(len(rows))
        pair = position[self.strand_pair[rows]]
        if (pair < 0).any():
            k = int(rows[np.flatnonzero(pair < 0)[0]])
            partner = int(self.strand_pair[k])
            raise FlashRNAError(
                f"{self.source}: track {self.identifier[k]} (row {k}) is stranded but its "
                f"partner {self.identifier[partner]} (row {partner}) is not selected"
            )
        frame = self.frame.iloc[rows].copy()
        frame["strand_pair"] = pair
        return TrackTable(frame, source=self.source)

    def find(
        self,
        assays: Iterable[str] | None = DEFAULT_ASSAYS,
        identifiers: Iterable[str] | None = None,
    ) -> np.ndarray:
        """Row positions (in table order) whose assay is in ``assays`` (``None``: any; assays
        absent from the table are skipped with a warning) and, when given, whose identifier is
        in ``identifiers``."""
        keep = np.ones(len(self), dtype=bool)
        if assays is not None:
            assays = list(assays)
            present = set(self.assay)
            missing = [a for a in assays if a not in present]
            if len(missing) == len(assays):
                raise FlashRNAError(
                    f"{self.source}: no tracks of assay {', '.join(missing)} "
                    f"(assays here: {', '.join(sorted(present))})"
                )
            if missing:
                log.warning("%s has no %s tracks", self.source, ", ".join(missing))
            keep &= np.isin(self.assay, assays)
        if identifiers is not None:
            identifiers = list(identifiers)
            unknown = sorted(set(identifiers) - set(self.identifier))
            if unknown:
                raise FlashRNAError(
                    f"{self.source}: unknown track identifier(s) {', '.join(unknown[:5])}"
                    + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
                )
            keep &= np.isin(self.identifier, identifiers)
        if not keep.any():
            raise FlashRNAError(f"{self.source}: the selection holds no tracks")
        return np.flatnonzero(keep)

    def select(
        self,
        assays: Iterable[str] | None = DEFAULT_ASSAYS,
        identifiers: Iterable[str] | None = None,
    ) -> TrackTable:
        """The sub-table of :meth:`find`'s rows, ``source_index`` carried along."""
        return self.take(self.find(assays, identifiers))

    # -- transforms ---------------------------------------------------------------------------

    def pool(self, coverage: Array, pool_width: int = POOL_WIDTH) -> Array:
        """Per-bp coverage ``[..., bins * pool_width, tracks]`` → pooled ``[..., bins, tracks]``."""
        return pool_coverage(coverage, self.sum_stat, pool_width)

    def squash(self, pooled: Array) -> Array:
        """Pooled values ``[..., bins, tracks]`` → stored float16 targets (same shape)."""
        unknown = np.isnan(self.clip)
        if unknown.any():
            row = int(np.flatnonzero(unknown)[0])
            raise FlashRNAError(
                f"{self.source}: track {self.identifier[row]} (row {row}) has no hard clip, so "
                f"its coverage cannot be squashed; give a table with a clip column"
            )
        return squash(pooled, self.clip, self.clip_soft, self.scale, self.sum_stat)

    def unsquash(self, stored: Array) -> Array:
        """Stored targets or predictions ``[..., bins, tracks]`` → float32 pooled values."""
        return unsquash(stored, self.clip_soft, self.scale, self.sum_stat)


def _assay(description: str) -> str:
    return description.split(":", 1)[0]


def _params(x: Array, *values: np.ndarray) -> list:
    """Per-track parameters as float32 arrays/tensors matching ``x``'s library and device."""
    if isinstance(x, torch.Tensor):
        return [torch.as_tensor(np.asarray(v, np.float32), device=x.device) for v in values]
    return [np.asarray(v, np.float32) for v in values]


def _sqrt_mask(sum_stat: Sequence[str] | np.ndarray) -> np.ndarray:
    stats = np.asarray(sum_stat)
    unknown = ~np.isin(stats, SUM_STATS)
    if unknown.any():
        raise FlashRNAError(f"unknown sum_stat '{stats[unknown][0]}' (known: {SUM_STATS})")
    return np.char.endswith(stats.astype(str), "_sqrt").astype(np.float32)


def _float32(x: Array) -> Array:
    return x.float() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


def pool_coverage(coverage: Array, sum_stat: Sequence[str] | np.ndarray, pool_width: int) -> Array:
    """Pool per-bp coverage ``[..., length, tracks]`` into ``[..., length // pool_width, tracks]``
    float32 bins: sums for ``sum``/``sum_sqrt`` tracks, means for ``mean``/``mean_sqrt``."""
    x = _float32(coverage)
    *lead, length, tracks = x.shape
    if length % pool_width:
        raise FlashRNAError(f"coverage length {length} is not a multiple of pool {pool_width}")
    total = x.reshape(*lead, length // pool_width, pool_width, tracks).sum(-2)
    is_mean = np.char.startswith(np.asarray(sum_stat).astype(str), "mean")
    (divisor,) = _params(x, np.where(is_mean, pool_width, 1))
    return total / divisor


def squash(
    pooled: Array,
    clip: Sequence[float] | np.ndarray,
    clip_soft: Sequence[float] | np.ndarray,
    scale: Sequence[float] | np.ndarray,
    sum_stat: Sequence[str] | np.ndarray,
) -> Array:
    """Forward transform of pooled values ``[..., bins, tracks]`` → float16 ``[..., bins,
    tracks]``, per-track parameters of length ``tracks`` (module docstring, steps 2-5)."""
    x = _float32(pooled)
    xp = torch if isinstance(x, torch.Tensor) else np
    clip, clip_soft, scale, sqrt = _params(x, clip, clip_soft, scale, _sqrt_mask(sum_stat))
    x = xp.where(sqrt > 0, x.clip(min=0) ** 0.75, x)
    x = xp.where(x > clip_soft, clip_soft + xp.sqrt((x - clip_soft).clip(min=0)), x)
    x = xp.minimum(xp.maximum(x, -clip), clip) * scale
    finfo = np.finfo(np.float16)
    x = x.clip(float(finfo.min), float(finfo.max))
    # float16 first, then 2 decimals in float32, as baskerville's reader and writer do.
    if xp is torch:
        return torch.round(x.half().float(), decimals=2).half()
    return np.round(x.astype(np.float16).astype(np.float32), 2).astype(np.float16)


def unsquash(
    stored: Array,
    clip_soft: Sequence[float] | np.ndarray,
    scale: Sequence[float] | np.ndarray,
    sum_stat: Sequence[str] | np.ndarray,
) -> Array:
    """Inverse transform ``[..., bins, tracks]`` → float32 pooled values (module docstring)."""
    x = _float32(stored)
    xp = torch if isinstance(x, torch.Tensor) else np
    clip_soft, scale, sqrt = _params(x, clip_soft, scale, _sqrt_mask(sum_stat))
    x = x / scale
    x = xp.where(x > clip_soft, clip_soft + (x - clip_soft) ** 2, x)
    return xp.where(sqrt > 0, x.clip(min=0) ** (4.0 / 3.0), x)
