"""RNA properties from sequence alone: the Saluki half-life and RiboNN translation-efficiency
data, a pooling head over the trunk's 32-bp embeddings, and k-fold cross-validation.

Data (DESIGN §5; the readers take the sequence and the targets, nothing else):

* **Saluki** (Agarwal & Kelley 2022, Zenodo 10.5281/zenodo.6326409, ``datasets.zip``). ZLIB
  TFRecords of ``tf.train.Example`` with ``lengths`` (int64[1], transcript length), ``sequence``
  (bytes, uint8 A0 C1 G2 T3, ``lengths`` bases, 5'->3'; Saluki pads to ``length_t`` = 12,288 only
  when parsing), ``coding`` and ``splice`` (uint8 tracks, ignored here) and ``targets`` (bytes,
  float16[num_targets], num_targets = 1). Two directory layouts are read
  (:func:`saluki_fold_files`): a data directory with ``tfrecords/fold{k}-{i}.tfr`` (basenji's
  pre-split layout), or the Zenodo ``datasets/deeplearning/train_gru`` directory, in which
  ``f{k}_c{r}/data{s}`` (r a training replicate, s = 0 human, 1 mouse, as the authors state in
  vagarwal87/saluki_paper#10) holds fold k as its ``tfrecords/test-*.tfr``.
* **RiboNN** (Zheng et al. 2025, Sanofi-Public/RiboNN README): a tab-separated table with
  ``tx_id``, ``utr5_sequence``, ``cds_sequence``, ``utr3_sequence``, one ``TE_*`` column per cell
  type and an optional ``fold``. The human TE table of the paper (CenikLab/TE_classic_ML
  ``data/data_with_human_TE_cellline_all_NA_plain.csv``, tab-separated despite its name) gives
  the whole transcript as ``tx_sequence`` instead (with ``mean_te`` and a ``fold``); both are
  read. Sequences may be
  DNA or RNA text, or digit strings in RiboNN's own code A0 T1 C2 G3 (:func:`decode_ribonn`).
  Missing targets (NA) stay NaN: the loss and the Pearson skip them. Only the data are used; no
  part of RiboNN's (non-commercial) code was consulted or is reproduced.

Model input (choice): a transcript is placed 5'->3' at position 0 of an input of
``ceil(n / 128) * 128`` bases, N-padded at the 3' end, so the trunk sees at most 127 N and a
transcript's embeddings never depend on the other transcripts of its batch (batches in ``full``
mode hold transcripts of one padded length). The pooling covers exactly the ``ceil(n / 32)``
bins that overlap the transcript.

Pooling head (choice, :class:`PoolingHead`): the masked mean of the transcript's bins and an
attention pooling (a learned score per bin, softmax over the transcript's bins) are concatenated
with log2 of the number of bins, then a two-layer MLP. Half-life and TE depend both on global
composition (codon usage, GC, UTR lengths), which the mean captures, and on a few local elements
(AU-rich elements, microRNA sites, uORFs, the start-codon context), which a mean over hundreds
of bins dilutes and the attention can pick out; both poolings are length-invariant, yet length is
among the strongest single predictors of both properties, so it is passed explicitly (it is a
function of the sequence). ``--pooling mean`` or ``attention`` keep one of the two.

Cross-validation as in the source papers: test fold f, validation fold (f + 1) mod k, training on
the rest; early stopping on the validation Pearson; the test Pearson per target, and its mean over
targets, go to ``fold{f}/metrics.json`` (with ``predictions.tsv`` and ``head.safetensors``).
Folds run singly or together (``--folds``; the workflow may scatter them; done folds are skipped)
and :func:`aggregate_folds` gathers those done into ``pearson.csv`` and ``summary.json``.

Efficiency: in ``head`` mode (frozen trunk) the trunk runs once per transcript, in eval mode and
without gradients, and its embeddings of the transcript's bins are cached as float16 in a
memory-mapped array keyed by the trunk weights and the sequences (:class:`EmbeddingCache`); every
fold and epoch then trains only the head. The cache takes 2 x dim / 32 bytes per base (96 for the
``paper`` trunk): ~4 GB for 13,000 transcripts of 3 kb.

Shapes: B transcripts, L input bases (a multiple of 128), N = L / 32 bins, D trunk dim, T targets.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import hashlib
import logging
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flashrna.download import ManifestRow
from flashrna.genome import encode_sequence
from flashrna.model import BIN_SIZE, TOKEN_SIZE, Trunk
from flashrna.tfrecord import read_examples
from flashrna.utils import (
    FlashRNAError,
    atomic_directory,
    atomic_file,
    atomic_path,
    read_json,
    resolve_device,
    seed_everything,
    write_json,
)

log = logging.getLogger(__name__)

SALUKI_SPECIES = {"human": 0, "mouse": 1}  # data{s} in train_gru/f{k}_c{r}/
RIBONN_CODE = "ATCG"  # RiboNN's integer code: A0 T1 C2 G3
POOLINGS = ("both", "mean", "attention")
MODES = ("head", "full")
METRICS_FILE = "metrics.json"

# Manifest rows for ``flashrna download`` (paths under its --data-dir). Sizes and md5s are left
# empty: no build machine here reaches these hosts; Zenodo lists the md5 on the record page and a
# first ``flashrna download --record`` writes what it found. Saluki's archive is ~18.8 GB (as a
# public mirror reports); only the replicate-0 data directories (TFRecords, statistics.json,
# genes.tsv) are extracted, giving ``saluki/datasets/deeplearning/train_gru`` for --data.
DOWNLOADS = (
    ManifestRow(
        source="https://zenodo.org/records/6326409/files/datasets.zip?download=1",
        destination="saluki/datasets.zip",
        unpack="unzip:datasets/deeplearning/train_gru/f*_c0/data*",
    ),
    # The human TE compendium behind RiboNN (CenikLab/TE_classic_ML; discussed as the source of
    # RiboNN's training labels in Sanofi-Public/RiboNN#7): tx_sequence, mean_te, fold.
    ManifestRow(
        source="https://raw.githubusercontent.com/CenikLab/TE_classic_ML/main/data/"
        "data_with_human_TE_cellline_all_NA_plain.csv",
        destination="ribonn/data_with_human_TE_cellline_all_NA_plain.csv",
    ),
)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass
class RnaData:
    """Transcripts with targets and fold labels.

    ``sequences[i]`` uint8 base indices (A0 C1 G2 T3 N4, 5'->3'); ``targets`` (n, T) float32,
    NaN where missing; ``folds`` (n,) int64 in ``0..num_folds-1``."""

    ids: list[str]
    sequences: list[np.ndarray]
    targets: np.ndarray
    target_names: list[str]
    folds: np.ndarray
    source: str

    def __post_init__(self) -> None:
        n = len(self.sequences)
        if n == 0:
            raise FlashRNAError(f"{self.source}: no transcripts")
        if len(self.ids) != n or self.targets.shape[0] != n or self.folds.shape != (n,):
            raise FlashRNAError(
                f"{self.source}: ids, sequences, targets and folds differ in length"
            )
        empty = [self.ids[i] for i, s in enumerate(self.sequences) if len(s) == 0]
        if empty:
            raise FlashRNAError(f"{self.source}: empty sequence for {', '.join(empty[:5])}")

    @property
    def num_folds(self) -> int:
        return int(self.folds.max()) + 1

    def split(self, test_fold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(train, valid, test) row indices: test fold f, validation fold (f + 1) mod k."""
        k = self.num_folds
        if k < 3:
            raise FlashRNAError(f"{self.source}: {k} fold(s); cross-validation needs at least 3")
        if not 0 <= test_fold < k:
            raise FlashRNAError(f"{self.source}: fold {test_fold} is not in 0..{k - 1}")
        valid_fold = (test_fold + 1) % k
        rows = np.arange(len(self.folds))
        test = rows[self.folds == test_fold]
        valid = rows[self.folds == valid_fold]
        train = rows[(self.folds != test_fold) & (self.folds != valid_fold)]
        return train, valid, test


def saluki_fold_files(root: str | Path, species: str = "human") -> dict[int, list[Path]]:
    """TFRecord files per fold of a Saluki data pack (layouts: module docstring)."""
    root = Path(root)
    if species not in SALUKI_SPECIES:
        raise FlashRNAError(f"Saluki species must be one of {list(SALUKI_SPECIES)}, not {species}")
    files: dict[int, list[Path]] = {}
    for path in (root / "tfrecords").glob("fold*-*.tfr"):
        match = re.fullmatch(r"fold(\d+)-(\d+)\.tfr", path.name)
        if match:
            files.setdefault(int(match[1]), []).append(path)
    if not files:
        chosen: dict[int, tuple[int, Path]] = {}
        for fold_dir in root.glob("f*_c*"):
            match = re.fullmatch(r"f(\d+)_c(\d+)", fold_dir.name)
            data = fold_dir / f"data{SALUKI_SPECIES[species]}" / "tfrecords"
            if match and data.is_dir():
                # Replicates c share the test fold: read the lowest replicate's copy.
                fold, replicate = int(match[1]), int(match[2])
                if fold not in chosen or replicate < chosen[fold][0]:
                    chosen[fold] = (replicate, data)
        files = {fold: list(data.glob("test-*.tfr")) for fold, (_, data) in chosen.items()}
    if not files or not all(files.values()):
        raise FlashRNAError(
            f"{root}: no Saluki TFRecords (looked for tfrecords/fold<k>-<i>.tfr and "
            f"f<k>_c<r>/data{SALUKI_SPECIES[species]}/tfrecords/test-<i>.tfr)"
        )
    if sorted(files) != list(range(len(files))):
        raise FlashRNAError(f"{root}: Saluki folds {sorted(files)} are not 0..{len(files) - 1}")
    return {fold: sorted(paths, key=_natural_key) for fold, paths in sorted(files.items())}


def _natural_key(path: Path) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.name)]


def read_saluki_file(path: str | Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(sequence uint8 [n], targets float32 [T]) of each record of one Saluki TFRecord."""
    for index, example in enumerate(read_examples(path)):
        where = f"{path}: record {index}"
        missing = [k for k in ("lengths", "sequence", "targets") if k not in example]
        if missing:
            raise FlashRNAError(f"{where}: missing feature(s) {', '.join(missing)}")
        lengths, sequence, targets = example["lengths"], example["sequence"], example["targets"]
        if not isinstance(lengths, np.ndarray) or lengths.dtype != np.int64 or lengths.size != 1:
            raise FlashRNAError(f"{where}: 'lengths' must be one int64")
        if not isinstance(sequence, bytes) or not isinstance(targets, bytes):
            raise FlashRNAError(f"{where}: 'sequence' and 'targets' must be single bytes values")
        length = int(lengths[0])
        if not 0 < length <= len(sequence):
            raise FlashRNAError(
                f"{where}: 'lengths' {length} does not fit the {len(sequence)}-byte sequence"
            )
        bases = np.frombuffer(sequence, dtype=np.uint8)[:length]
        if bases.max() > 3:
            raise FlashRNAError(
                f"{where}: 'sequence' holds byte {int(bases.max())}; Saluki stores base indices "
                f"0-3 (one-hot or text sequences are not this format)"
            )
        if len(targets) % 2:
            raise FlashRNAError(f"{where}: 'targets' is {len(targets)} bytes, not float16 values")
        yield bases.copy(), np.frombuffer(targets, dtype="<f2").astype(np.float32)


def read_saluki(root: str | Path, species: str = "human") -> RnaData:
    """A Saluki data pack as :class:`RnaData`; ids are ``<file under root>#<record>``."""
    from tqdm.auto import tqdm

    root = Path(root)
    ids, sequences, targets, folds = [], [], [], []
    fold_files = saluki_fold_files(root, species)
    paths = [(fold, path) for fold, files in fold_files.items() for path in files]
    for fold, path in tqdm(paths, desc="read Saluki", unit="file", leave=False):
        for index, (sequence, target) in enumerate(read_saluki_file(path)):
            ids.append(f"{path.relative_to(root)}#{index}")
            sequences.append(sequence)
            targets.append(target)
            folds.append(fold)
    widths = {len(t) for t in targets}
    if len(widths) != 1:
        raise FlashRNAError(f"{root}: records disagree in their number of targets {widths}")
    names = ["half_life"] if widths == {1} else [f"target_{i}" for i in range(widths.pop())]
    return RnaData(ids, sequences, np.stack(targets), names, np.asarray(folds, np.int64), str(root))


def decode_ribonn(text: str) -> np.ndarray:
    """A RiboNN sequence cell -> uint8 base indices (A0 C1 G2 T3 N4).

    DNA or RNA letters (U reads as T; anything else as N), or a digit string in RiboNN's code
    A0 T1 C2 G3 (other digits: N)."""
    if text.isdigit():
        codes = np.frombuffer(text.encode("ascii"), dtype=np.uint8) - ord("0")
        ours = encode_sequence(RIBONN_CODE)  # RiboNN code k -> our index of its base k
        return np.where(codes < 4, ours[np.minimum(codes, 3)], 4).astype(np.uint8)
    return encode_sequence(text.replace("U", "T").replace("u", "t"))


def read_ribonn(
    path: str | Path,
    targets: Sequence[str] = ("TE_*",),
    num_folds: int = 10,
    seed: int = 0,
) -> RnaData:
    """A RiboNN-format table as :class:`RnaData`.

    ``targets``: column names or glob patterns. Without a ``fold`` column the rows are dealt into
    ``num_folds`` folds by a permutation seeded with ``seed``; a ``fold`` column's distinct values,
    sorted, become folds ``0..k-1``."""
    path = Path(path)
    try:
        with open(path) as handle:
            header = handle.readline()
        frame = pd.read_csv(path, sep="\t" if "\t" in header else ",", dtype=str)
    except FileNotFoundError:
        raise FlashRNAError(f"{path}: file not found") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise FlashRNAError(f"{path}: not a readable TSV/CSV ({err})") from None
    columns = list(frame.columns)
    names = [c for c in columns if any(fnmatch.fnmatchcase(c, p) for p in targets)]
    if not names:
        raise FlashRNAError(
            f"{path}: no target column matches {list(targets)} (columns: {', '.join(columns[:20])})"
        )
    parts = ("utr5_sequence", "cds_sequence", "utr3_sequence")
    if all(c in frame for c in parts):
        texts = frame[list(parts)].fillna("").agg("".join, axis=1)
    elif "tx_sequence" in frame:
        texts = frame["tx_sequence"].fillna("")
    else:
        raise FlashRNAError(f"{path}: needs columns {', '.join(parts)} (or tx_sequence)")
    id_column = next((c for c in ("tx_id", "transcript_id", "SYMBOL") if c in frame), None)
    ids = frame[id_column].tolist() if id_column else [f"row{i}" for i in range(len(frame))]
    try:
        values = frame[names].apply(pd.to_numeric, errors="raise").to_numpy(np.float32)
    except ValueError as err:
        raise FlashRNAError(f"{path}: a target column is not numeric ({err})") from None
    if "fold" in frame:
        if frame["fold"].isna().any():
            raise FlashRNAError(f"{path}: the fold column has empty cells")
        labels = pd.to_numeric(frame["fold"], errors="coerce")
        labels = frame["fold"] if labels.isna().any() else labels
        folds = np.unique(labels.to_numpy(), return_inverse=True)[1].astype(np.int64)
    else:
        order = np.random.default_rng(seed).permutation(len(frame))
        folds = np.empty(len(frame), np.int64)
        folds[order] = np.arange(len(frame)) % num_folds
    sequences = [decode_ribonn(t.strip()) for t in texts]
    return RnaData([str(i) for i in ids], sequences, values, names, folds, str(path))


# --------------------------------------------------------------------------------------------
# Transcript -> model input
# --------------------------------------------------------------------------------------------


def input_length(n: int) -> int:
    """Input length (bp, a multiple of 128) that holds an n-base transcript."""
    return max(1, math.ceil(n / TOKEN_SIZE)) * TOKEN_SIZE


def transcript_bins(n: int) -> int:
    """Number of 32-bp bins overlapping an n-base transcript placed at position 0."""
    return math.ceil(n / BIN_SIZE)


def place_transcripts(sequences: Sequence[np.ndarray]) -> tuple[Tensor, Tensor]:
    """Transcripts of one padded length -> (B, L) uint8 inputs (N-padded at the 3' end) and
    (B,) int64 bins covering each transcript."""
    lengths = {input_length(len(s)) for s in sequences}
    if len(lengths) != 1:
        raise FlashRNAError(f"transcripts of different padded lengths {sorted(lengths)}")
    inputs = np.full((len(sequences), lengths.pop()), 4, dtype=np.uint8)
    for row, sequence in zip(inputs, sequences, strict=True):
        row[: len(sequence)] = sequence
    bins = [transcript_bins(len(s)) for s in sequences]
    return torch.from_numpy(inputs), torch.tensor(bins, dtype=torch.int64)


def length_batches(
    sequences: Sequence[np.ndarray], batch_size: int, rng: np.random.Generator | None = None
) -> list[np.ndarray]:
    """Index batches whose transcripts share one padded input length; shuffled within each
    length and in batch order when ``rng`` is given."""
    order = np.arange(len(sequences)) if rng is None else rng.permutation(len(sequences))
    lengths = np.array([input_length(len(sequences[i])) for i in order])
    order = order[np.argsort(lengths, kind="stable")]
    lengths = np.sort(lengths, kind="stable")
    batches = []
    for group in np.split(order, np.flatnonzero(np.diff(lengths)) + 1):
        batches.extend(np.array_split(group, math.ceil(len(group) / batch_size)))
    if rng is not None:
        rng.shuffle(batches)
    return batches


# --------------------------------------------------------------------------------------------
# Pooling head
# --------------------------------------------------------------------------------------------


class PoolingHead(nn.Module):
    """Masked pooling of a transcript's bins, then an MLP.

    ``forward(embeddings (B, N, D), mask (B, N) bool)`` -> (B, outputs). Features: masked mean
    and/or attention pooling (each D), plus log2(bins); then LayerNorm -> Linear -> GELU ->
    Dropout -> Linear."""

    def __init__(
        self, dim: int, outputs: int, pooling: str = "both", hidden: int = 256, dropout: float = 0.1
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise FlashRNAError(f"pooling '{pooling}' is not one of {POOLINGS}")
        self.pooling = pooling
        self.score = nn.Linear(dim, 1) if pooling != "mean" else None
        features = dim * (2 if pooling == "both" else 1) + 1
        self.mlp = nn.Sequential(
            nn.LayerNorm(features),
            nn.Linear(features, hidden),
            nn.GELU(approximate="tanh"),
            nn.Dropout(dropout),
            nn.Linear(hidden, outputs),
        )

    def forward(self, embeddings: Tensor, mask: Tensor) -> Tensor:
        x = embeddings.float()
        weight = mask.to(x.dtype)[..., None]  # (B, N, 1)
        count = weight.sum(1).clamp(min=1)  # (B, 1)
        pooled = []
        if self.pooling != "attention":
            pooled.append((x * weight).sum(1) / count)
        if self.score is not None:
            scores = self.score(x).masked_fill(~mask[..., None], float("-inf"))
            pooled.append((scores.softmax(1) * x).sum(1))
        return self.mlp(torch.cat([*pooled, count.log2()], dim=-1))


def bin_mask(bins: Tensor, num_bins: int) -> Tensor:
    """(B,) bins per transcript -> (B, num_bins) bool, True on the transcript's bins."""
    return torch.arange(num_bins, device=bins.device) < bins[:, None]


# --------------------------------------------------------------------------------------------
# Embedding cache (head mode)
# --------------------------------------------------------------------------------------------


def trunk_digest(trunk: nn.Module) -> str:
    """SHA-256 of the trunk's parameters and buffers (names, shapes, dtypes, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(trunk.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def sequences_digest(sequences: Sequence[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for sequence in sequences:
        digest.update(len(sequence).to_bytes(8, "little"))
        digest.update(np.ascontiguousarray(sequence, dtype=np.uint8).tobytes())
    return digest.hexdigest()


class EmbeddingCache:
    """Trunk embeddings of every transcript's bins, float16, memory-mapped.

    Directory: ``embeddings.npy`` (total bins, D) and ``offsets.npy`` (n + 1,): transcript i owns
    rows ``offsets[i]:offsets[i+1]``."""

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        self.directory = directory
        self.embeddings = np.load(directory / "embeddings.npy", mmap_mode="r")
        self.offsets = np.load(directory / "offsets.npy")

    @classmethod
    def build(
        cls,
        trunk: Trunk,
        sequences: Sequence[np.ndarray],
        root: str | Path,
        batch_size: int = 8,
        device: str | torch.device | None = None,
    ) -> EmbeddingCache:
        """Compute (or reuse) the cache under ``root/<trunk digest>-<sequences digest>/``."""
        from tqdm.auto import tqdm

        key = f"{trunk_digest(trunk)[:16]}-{sequences_digest(sequences)[:16]}"
        directory = Path(root) / key
        if (directory / "offsets.npy").exists():
            log.info("reusing trunk embeddings in %s", directory)
            return cls(directory)
        device = resolve_device(device)
        was_training = trunk.training
        trunk.eval().to(device)
        bins = np.array([transcript_bins(len(s)) for s in sequences], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(bins)])
        dim = trunk.config.dim
        with atomic_directory(directory) as tmp:
            store = np.lib.format.open_memmap(
                tmp / "embeddings.npy", mode="w+", dtype=np.float16, shape=(int(offsets[-1]), dim)
            )
            batches = length_batches(sequences, batch_size)
            for batch in tqdm(batches, desc="trunk embeddings", unit="batch"):
                inputs, _ = place_transcripts([sequences[i] for i in batch])
                with torch.no_grad(), _autocast(device):
                    out = trunk(inputs.to(device)).float().cpu().numpy()
                for row, i in zip(out, batch, strict=True):
                    store[offsets[i] : offsets[i + 1]] = row[: bins[i]]
            if not np.isfinite(store).all():
                raise FlashRNAError("trunk embeddings overflow float16; cannot cache them")
            store.flush()
            del store
            np.save(tmp / "offsets.npy", offsets)
        trunk.train(was_training)
        return cls(directory)

    def batch(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        """(B, N_max, D) float32 embeddings (zero-padded) and (B,) bins of ``indices``."""
        bins = self.offsets[np.asarray(indices) + 1] - self.offsets[np.asarray(indices)]
        out = np.zeros((len(indices), int(bins.max()), self.embeddings.shape[1]), np.float32)
        for row, i, n in zip(out, indices, bins, strict=True):
            row[:n] = self.embeddings[self.offsets[i] : self.offsets[i] + n]
        return torch.from_numpy(out), torch.from_numpy(bins)


def _autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


# --------------------------------------------------------------------------------------------
# Training one fold
# --------------------------------------------------------------------------------------------


@dataclass
class PropertyConfig:
    """Hyperparameters of one cross-validation fold (every number a choice, no paper value)."""

    mode: str = "head"
    pooling: str = "both"
    hidden: int = 256
    dropout: float = 0.1
    epochs: int = 40
    patience: int = 6
    batch_size: int = 32
    lr: float = 1e-3
    trunk_lr: float = 2e-5
    weight_decay: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise FlashRNAError(f"mode '{self.mode}' is not one of {MODES}")
        if self.pooling not in POOLINGS:
            raise FlashRNAError(f"pooling '{self.pooling}' is not one of {POOLINGS}")


def pearson_columns(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Pearson r per column of (n, T) arrays over rows where the target is finite; NaN where a
    column has fewer than 2 such rows or no variance."""
    out = np.full(target.shape[1], np.nan)
    for t in range(target.shape[1]):
        keep = np.isfinite(target[:, t])
        x, y = prediction[keep, t].astype(np.float64), target[keep, t].astype(np.float64)
        if len(x) > 1 and x.std() > 0 and y.std() > 0:
            out[t] = np.corrcoef(x, y)[0, 1]
    return out


class _FoldRunner:
    """Trains a :class:`PoolingHead` (and in ``full`` mode the trunk) on one fold's split."""

    def __init__(self, trunk: Trunk, data: RnaData, config: PropertyConfig, device, cache):
        self.data, self.config, self.device, self.cache = data, config, device, cache
        self.trunk = trunk.to(device)
        self.head = PoolingHead(
            trunk.config.dim, len(data.target_names), config.pooling, config.hidden, config.dropout
        ).to(device)
        groups = [{"params": self.head.parameters(), "lr": config.lr}]
        if config.mode == "full":
            groups.append({"params": self.trunk.parameters(), "lr": config.trunk_lr})
        self.optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)

    def _forward(self, batch: np.ndarray, train: bool) -> Tensor:
        if self.cache is not None:
            embeddings, bins = self.cache.batch(batch)
        else:
            inputs, bins = place_transcripts([self.data.sequences[i] for i in batch])
            # Head mode: the trunk in eval mode and without a graph, as when caching.
            trunk_trains = train and self.config.mode == "full"
            self.trunk.train(trunk_trains)
            with torch.set_grad_enabled(trunk_trains), _autocast(self.device):
                embeddings = self.trunk(inputs.to(self.device))
        embeddings, bins = embeddings.to(self.device), bins.to(self.device)
        return self.head(embeddings, bin_mask(bins, embeddings.shape[1]))

    def _batches(self, rows: np.ndarray, rng=None) -> list[np.ndarray]:
        if self.cache is not None:  # embeddings pad freely: any rows can share a batch
            order = rows if rng is None else rng.permutation(rows)
            return np.array_split(order, math.ceil(len(order) / self.config.batch_size))
        picked = length_batches([self.data.sequences[i] for i in rows], self.config.batch_size, rng)
        return [rows[b] for b in picked]

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), T) standardised predictions."""
        self.head.eval()
        out = np.empty((len(rows), len(self.data.target_names)), np.float32)
        position = {r: k for k, r in enumerate(rows)}
        with torch.no_grad():
            for batch in self._batches(rows):
                out[[position[r] for r in batch]] = self._forward(batch, False).float().cpu()
        return out

    def fit(self, train: np.ndarray, valid: np.ndarray, scaled: np.ndarray) -> dict:
        from tqdm.auto import tqdm

        config = self.config
        rng = np.random.default_rng(config.seed)
        target = torch.from_numpy(scaled)
        best = {"pearson": -np.inf, "epoch": -1, "state": None}
        for epoch in tqdm(range(config.epochs), desc="epochs", unit="epoch", leave=False):
            self.head.train()
            for batch in self._batches(train, rng):
                y = target[batch].to(self.device)
                known = torch.isfinite(y)
                if not known.any():  # every target of the batch missing: nothing to learn
                    continue
                loss = F.mse_loss(self._forward(batch, True)[known], y[known])
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
            pearson = float(np.nanmean(pearson_columns(self.predict(valid), scaled[valid])))
            log.debug("epoch %d: validation Pearson %.4f", epoch, pearson)
            if pearson > best["pearson"]:
                best = {"pearson": pearson, "epoch": epoch, "state": self._state()}
            elif epoch - best["epoch"] >= config.patience:
                break
        if best["state"] is not None:
            self.head.load_state_dict(best["state"]["head"])
            if "trunk" in best["state"]:
                self.trunk.load_state_dict(best["state"]["trunk"])
        return {"best_epoch": best["epoch"], "valid_pearson": best["pearson"]}

    def _state(self) -> dict:
        state = {"head": copy.deepcopy(self.head.state_dict())}
        if self.config.mode == "full":
            state["trunk"] = copy.deepcopy(self.trunk.state_dict())
        return state


def run_fold(
    trunk: Trunk,
    data: RnaData,
    fold: int,
    config: PropertyConfig,
    out_dir: str | Path,
    device: str | torch.device | None = None,
    cache: EmbeddingCache | None = None,
) -> dict:
    """Train on one fold's split and score its test fold; write ``fold{f}/metrics.json``,
    ``predictions.tsv`` and ``head.safetensors`` under ``out_dir``; return the metrics.

    In ``head`` mode the trunk is never modified (pass ``cache`` to skip the trunk entirely);
    in ``full`` mode the given trunk is trained in place."""
    from safetensors.torch import save_file

    if config.mode == "full" and cache is not None:
        raise FlashRNAError("full fine-tuning trains the trunk: it cannot use cached embeddings")
    seed_everything(config.seed + fold)
    device = resolve_device(device)
    train, valid, test = data.split(fold)
    # Standardise with training statistics: one learning rate suits every target's scale.
    mean = np.nanmean(data.targets[train], axis=0)
    std = np.nanstd(data.targets[train], axis=0)
    std = np.where(std > 0, std, 1.0)
    scaled = ((data.targets - mean) / std).astype(np.float32)
    runner = _FoldRunner(trunk, data, config, device, cache)
    fitted = runner.fit(train, valid, scaled)
    prediction = runner.predict(test) * std + mean
    pearson = pearson_columns(prediction, data.targets[test])
    metrics = {
        "fold": fold,
        "valid_fold": (fold + 1) % data.num_folds,
        "num_folds": data.num_folds,
        "n_train": len(train),
        "n_valid": len(valid),
        "n_test": len(test),
        **fitted,
        "pearson": dict(zip(data.target_names, pearson.tolist(), strict=True)),
        "mean_pearson": float(np.nanmean(pearson)) if np.isfinite(pearson).any() else None,
        "config": asdict(config),
        "source": data.source,
    }
    fold_dir = Path(out_dir) / f"fold{fold}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({"id": [data.ids[i] for i in test], "fold": fold})
    for t, name in enumerate(data.target_names):
        table[f"{name}"] = data.targets[test, t]
        table[f"{name}_prediction"] = prediction[:, t]
    with atomic_file(fold_dir / "predictions.tsv") as handle:
        table.to_csv(handle, sep="\t", index=False)
    state = {k: v.detach().cpu().contiguous() for k, v in runner.head.state_dict().items()}
    with atomic_path(fold_dir / "head.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"mean": str(mean.tolist()), "std": str(std.tolist())})
    write_json(fold_dir / METRICS_FILE, metrics)  # last: its presence marks the fold done
    return metrics


def aggregate_folds(out_dir: str | Path) -> pd.DataFrame:
    """Gather ``fold*/metrics.json`` into ``pearson.csv`` (one row per fold and target) and
    ``summary.json`` (per fold, and mean and SD over folds per target and overall)."""
    out_dir = Path(out_dir)
    paths = sorted(out_dir.glob(f"fold*/{METRICS_FILE}"), key=lambda p: _natural_key(p.parent))
    if not paths:
        raise FlashRNAError(f"{out_dir}: no fold*/{METRICS_FILE} to aggregate")
    folds = [read_json(p) for p in paths]
    expected = folds[0]["num_folds"]
    done = sorted(f["fold"] for f in folds)
    if done != list(range(expected)):
        log.warning("%s: folds %s of %d are done; aggregating those", out_dir, done, expected)
    rows = [
        {"fold": f["fold"], "target": name, "pearson": r}
        for f in folds
        for name, r in f["pearson"].items()
    ]
    table = pd.DataFrame(rows)
    with atomic_file(out_dir / "pearson.csv") as handle:
        table.to_csv(handle, index=False)
    per_fold = [f["mean_pearson"] for f in folds]
    by_target = table.groupby("target", sort=False)["pearson"]
    write_json(
        out_dir / "summary.json",
        {
            "folds": done,
            "num_folds": expected,
            "pearson_per_fold": dict(zip(map(str, done), per_fold, strict=True)),
            "mean_pearson": float(np.nanmean(per_fold)),
            "sd_pearson": float(np.nanstd(per_fold, ddof=1)) if len(per_fold) > 1 else None,
            "per_target_mean": by_target.mean().to_dict(),
            "per_target_sd": by_target.std().to_dict(),
        },
    )
    return table


# --------------------------------------------------------------------------------------------
# Command line (subcommands of ``flashrna finetune``)
# --------------------------------------------------------------------------------------------


def add_property_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``finetune halflife`` and ``finetune te``."""
    d = PropertyConfig()
    parser.add_argument(
        "--model", required=True, help="pretrained model directory or official checkpoint (.ckpt)"
    )
    parser.add_argument("--out", required=True, help="output directory (fold<k>/ inside)")
    parser.add_argument(
        "--folds",
        nargs="+",
        type=int,
        help="test folds to run [default: all]; folds already done are skipped",
    )
    parser.add_argument("--mode", choices=MODES, default=d.mode, help="train the head, or all")
    parser.add_argument("--pooling", choices=POOLINGS, default=d.pooling)
    parser.add_argument("--hidden", type=int, default=d.hidden, help="MLP hidden units")
    parser.add_argument("--dropout", type=float, default=d.dropout)
    parser.add_argument("--epochs", type=int, default=d.epochs, help="at most this many epochs")
    parser.add_argument("--patience", type=int, default=d.patience, help="early-stopping epochs")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr, help="head learning rate")
    parser.add_argument("--trunk-lr", type=float, default=d.trunk_lr, help="trunk LR (full mode)")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument(
        "--cache-dir", help="embedding cache root (head mode) [default: <out>/embeddings]"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--overwrite", action="store_true", help="rerun folds already done")


def run_property_cli(args: argparse.Namespace, data: RnaData) -> None:
    """Run the folds asked for on ``data``, then aggregate the folds done so far."""
    from flashrna.model import load_model
    from flashrna.zoo import flashrna_directory

    pretrained = flashrna_directory(args.model)
    config = PropertyConfig(
        mode=args.mode,
        pooling=args.pooling,
        hidden=args.hidden,
        dropout=args.dropout,
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        lr=args.lr,
        trunk_lr=args.trunk_lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
    )
    folds = list(range(data.num_folds)) if args.folds is None else args.folds
    unknown = sorted(set(folds) - set(range(data.num_folds)))
    if unknown:
        raise FlashRNAError(f"{data.source}: no fold {unknown} (folds 0..{data.num_folds - 1})")
    out = Path(args.out)
    todo = [f for f in folds if args.overwrite or not (out / f"fold{f}" / METRICS_FILE).exists()]
    device = resolve_device(args.device)
    cache = None
    if todo and config.mode == "head":
        trunk = load_model(pretrained, device=device).trunk
        cache = EmbeddingCache.build(
            trunk, data.sequences, args.cache_dir or out / "embeddings", device=device
        )
    for fold in todo:
        # Full mode trains the trunk in place: start every fold from the pretrained weights.
        if config.mode == "full":
            trunk = load_model(pretrained, device=device).trunk
        metrics = run_fold(trunk, data, fold, config, out, device, cache)
        log.info("fold %d: test Pearson %s", fold, metrics["mean_pearson"])
    aggregate_folds(out)
