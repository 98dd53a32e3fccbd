"""``flashrna evaluate-tracks``: track Pearson on held-out windows (Tables 1 and 3).

Per-track Pearson R over every bin of every window of a split (``--split test``: fold3),
predictions forward + reverse-complement averaged (:func:`flashrna.model.predict`) and aligned
with the targets by the batch's ``crop_start``. Three value spaces:

- ``squashed``: predictions against the targets as stored (the training space);
- ``counts``: both inverse-transformed (:func:`flashrna.tracks.unsquash`, pooled coverage
  without the scale factor) -- the space of the paper's Table 1;
- ``log``: ``log2(1 + counts)``.

Each space accumulates :class:`~flashrna.metrics.StreamingPearson` float64 sufficient
statistics, so memory does not grow with the number of windows. ``--model`` names the evaluated
model (any model: :mod:`flashrna.zoo`; repeated, an ensemble); :class:`TrackPearson` also evaluates
several models in one pass over the data. Predictions are matched to the data's tracks by
identifier, so any head (the human head, a ChIP fine-tuning head, Borzoi) and any track subset
(``--assays``, ``--tracks``) work; ``--shared-tracks`` keeps the data's tracks the model predicts
(a released model's head covers only part of the Borzoi targets). The input length is the stored
windows' (``--length`` changes it); one the model was not built for is refused unless
``--allow-length``.

Outputs in ``--out``: ``tracks.csv`` (``model track identifier assay description
pearson_squashed pearson_counts pearson_log``, ``track`` = row of the data's track table),
``assays.csv`` (``model assay tracks pearson_*``: the mean over the assay's tracks per model,
then rows ``mean`` and ``sd`` (ddof 1) over the models when there are several),
``summary.json``. Resumable: every ``--checkpoint-every`` batches the statistics go to
``evaluate-tracks.state.npz`` in ``--out``; a rerun with the same settings continues after the
windows already done (they are not read again). Final files are written atomically.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from flashrna.metrics import StreamingPearson, finite_or_none, per_group_mean
from flashrna.model import BIN_SIZE, check_input_length, predict, take_bins
from flashrna.tracks import TrackTable, unsquash
from flashrna.utils import FlashRNAError, atomic_file, atomic_path, resolve_device, write_json
from flashrna.variants import read_identifiers
from flashrna.zoo import TrackModel, add_model_arguments, load_track_model, resolve_model
from flashrna.zoo.interface import default_head

log = logging.getLogger(__name__)

SPACES = ("squashed", "counts", "log")
STATE_FILE = "evaluate-tracks.state.npz"


# --------------------------------------------------------------------------------------------
# evaluate-tracks
# --------------------------------------------------------------------------------------------


class TrackPearson:
    """Streaming per-track Pearson of several models against the tracks of ``targets`` (the
    data's table, row k = column k of a batch's targets), in the three :data:`SPACES`."""

    def __init__(
        self,
        models: Sequence[TrackModel],
        targets: TrackTable,
        device: str | torch.device | None = None,
    ) -> None:
        self.models = list(models)
        self.device = resolve_device(device)
        self.columns = [torch.as_tensor(m.columns(targets.identifier)) for m in self.models]
        # Predictions are inverted with their model's table, targets with the data's.
        self._model_params = [
            (m.tracks.clip_soft[c], m.tracks.scale[c], m.tracks.sum_stat[c])
            for m, c in zip(self.models, self.columns, strict=True)
        ]
        self._target_params = (targets.clip_soft, targets.scale, targets.sum_stat)
        self.stats = [
            [StreamingPearson(len(targets), self.device) for _ in SPACES] for _ in self.models
        ]
        self.windows = 0

    def update(self, batch: dict[str, torch.Tensor]) -> None:
        """Add a batch: ``sequence`` (B, L), ``targets`` (B, bins, tracks), ``crop_start`` (B,)."""
        sequence, crop_start = batch["sequence"], batch["crop_start"].long()
        target = batch["targets"].to(self.device).float()
        bins = target.shape[1]
        # One symmetric crop that keeps every example's target bins, then per-example offsets.
        total = sequence.shape[1] // BIN_SIZE
        crop = int(min(crop_start.min(), total - bins - crop_start.max()))
        if crop < 0:
            raise FlashRNAError(
                f"targets of {bins} bins at crop_start {crop_start.tolist()} do not fit the "
                f"{total} output bins of a {sequence.shape[1]}-bp input"
            )
        target_counts = unsquash(target, *self._target_params)
        for model, columns, params, stats in zip(
            self.models, self.columns, self._model_params, self.stats, strict=True
        ):
            pred = predict(
                model.module,
                sequence,
                model.head,
                batch_size=len(sequence),
                device=self.device,
                crop_bins=crop,
                precision=model.precision,
            )
            pred = take_bins(pred[..., columns].to(self.device), crop_start - crop, bins)
            counts = unsquash(pred, *params)
            pairs = (
                (pred, target),
                (counts, target_counts),
                (_log2p1(counts), _log2p1(target_counts)),
            )
            for stat, (x, y) in zip(stats, pairs, strict=True):
                stat.update(x, y)
        self.windows += len(sequence)

    def state(self) -> np.ndarray:
        """float64 (models, spaces, 6, tracks): everything needed to resume."""
        return np.stack([[s.state.cpu().numpy() for s in row] for row in self.stats])

    def load_state(self, state: np.ndarray, windows: int) -> None:
        for row, values in zip(self.stats, state, strict=True):
            for stat, value in zip(row, values, strict=True):
                stat.state = torch.as_tensor(value, device=self.device)
        self.windows = windows

    def compute(self) -> np.ndarray:
        """Pearson R, float64 (models, spaces, tracks); NaN for a constant track."""
        return np.stack([[s.compute() for s in row] for row in self.stats])


def _log2p1(x: torch.Tensor) -> torch.Tensor:
    return torch.log1p(x) / math.log(2)


def track_results(
    r: np.ndarray, targets: TrackTable, names: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``tracks.csv`` and ``assays.csv`` frames from :meth:`TrackPearson.compute` output."""
    columns = [f"pearson_{space}" for space in SPACES]
    per_track = []
    for name, values in zip(names, r, strict=True):
        frame = pd.DataFrame(
            {
                "model": name,
                "track": np.arange(len(targets)),
                "identifier": targets.identifier,
                "assay": targets.assay,
                "description": targets.frame["description"].to_numpy(),
            }
        )
        per_track.append(pd.concat([frame, pd.DataFrame(values.T, columns=columns)], axis=1))
    rows = []
    for name, values in zip(names, r, strict=True):
        means = [per_group_mean(v, targets.assay) for v in values]
        for assay in means[0]:
            count = int((targets.assay == assay).sum())
            rows.append([name, assay, count, *(m[assay] for m in means)])
    per_assay = pd.DataFrame(rows, columns=["model", "assay", "tracks", *columns])
    if len(names) > 1:
        grouped = per_assay.groupby("assay", sort=False)
        for statistic in ("mean", "std"):
            summary = grouped.agg({"tracks": "first", **dict.fromkeys(columns, statistic)})
            summary.insert(0, "model", "sd" if statistic == "std" else "mean")
            per_assay = pd.concat([per_assay, summary.reset_index()], ignore_index=True)
    return pd.concat(per_track, ignore_index=True), per_assay


def register_evaluate_tracks(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shards",
        "--data",
        nargs="+",
        required=True,
        help="shard directories or folders of shards",
    )
    parser.add_argument("--split", default="test", help="train, valid or test (test = fold3)")
    parser.add_argument("--out", required=True, help="output directory")
    add_model_arguments(parser)
    parser.add_argument(
        "--shared-tracks",
        action="store_true",
        help="evaluate only the data's tracks that the model predicts (matched by identifier)",
    )
    parser.add_argument("--assays", nargs="+", help="evaluate only tracks of these assays")
    parser.add_argument(
        "--tracks",
        nargs="+",
        metavar="ID_OR_TABLE",
        help="evaluate only these track identifiers, or the identifiers of these track tables",
    )
    parser.add_argument(
        "--length",
        type=int,
        help="model input length in bp (default: the stored windows'; a model built for "
        "another length is refused unless --allow-length)",
    )
    parser.add_argument("--fasta", help="genome FASTA for flanks when --length exceeds the stored")
    parser.add_argument("--batch-size", type=int, default=2, help="windows per batch")
    parser.add_argument("--num-workers", type=int, default=2, help="data loader processes")
    parser.add_argument("--max-windows", type=int, help="evaluate only the first N windows")
    parser.add_argument(
        "--checkpoint-every", type=int, default=50, help="batches between resumable states"
    )
    parser.set_defaults(run=_run_evaluate_tracks)


def _run_evaluate_tracks(args: argparse.Namespace) -> None:
    evaluate_tracks(
        args.model,
        args.shards,
        args.out,
        split=args.split,
        head=args.head,
        targets=args.targets,
        assays=args.assays,
        identifiers=read_identifiers(args.tracks),
        shared_tracks=args.shared_tracks,
        length=args.length,
        allow_length=args.allow_length,
        fasta=args.fasta,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        max_windows=args.max_windows,
        checkpoint_every=args.checkpoint_every,
        device=args.device,
        precision=args.precision,
    )


def evaluate_tracks(
    models: Sequence[str | Path],
    shards: Sequence[str | Path],
    out: str | Path,
    *,
    split: str = "test",
    head: str | None = None,
    targets: str | Path | None = None,
    assays: Sequence[str] | None = None,
    identifiers: Sequence[str] | None = None,
    shared_tracks: bool = False,
    length: int | None = None,
    allow_length: bool = False,
    fasta: str | Path | None = None,
    batch_size: int = 2,
    num_workers: int = 2,
    max_windows: int | None = None,
    checkpoint_every: int = 50,
    device: str | torch.device | None = "auto",
    precision: str = "auto",
) -> dict[str, Any]:
    """Per-track Pearson R of a model (several ``models``: their ensemble) on the windows of
    ``split`` in ``shards``, in the three :data:`SPACES`; writes ``tracks.csv``, ``assays.csv``
    and ``summary.json`` into ``out`` (module docstring) and returns the summary.

    Each batch of windows, ``sequence`` (B, L) of base codes, is predicted forward and
    reverse-complemented and averaged, (B, L/32 - 2 crop, model tracks) in the model's squashed
    space (``crop``: the bins at each end outside every window's targets), and compared on the
    data's tracks with the stored ``targets`` (B, bins, tracks) from each window's
    ``crop_start``.

    Args:
        models: ``--model`` values (:func:`flashrna.zoo.resolve_model`): a model directory, an
            official checkpoint or a borzoi-pytorch name; several form an ensemble.
        shards: shard directories or folders of shards (:class:`flashrna.data.ShardSet`).
        out: output directory; it also holds the resumable state while the run goes on.
        split: ``train``, ``valid`` or ``test`` (fold3).
        head: model head (default: human, else the model's first).
        targets: track table of the head's outputs (default: the model's own).
        assays: evaluate only the data's tracks of these assays.
        identifiers: evaluate only the data's tracks with these identifiers.
        shared_tracks: keep only the data's tracks (of ``identifiers``) the head predicts.
        length: model input length in bp (default: the stored windows'); ``fasta`` supplies
            the flanks beyond the stored sequence.
        allow_length: run the model on a length it was not built for.
        fasta: genome FASTA for the flanks when ``length`` exceeds the stored windows.
        batch_size: windows per batch.
        num_workers: data loader processes.
        max_windows: evaluate only the first this many windows of the split.
        checkpoint_every: batches between saved resumable states; a rerun with the same
            settings continues after the windows done.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        precision: inference precision (:func:`flashrna.model.autocast_dtype`).

    Returns:
        The ``summary.json`` content: ``split``, ``windows``, ``data``, ``models``, ``head``,
        ``spaces`` and per assay its track count and per space the mean (and sd over the models)
        of the per-track Pearson R.
    """
    from tqdm.auto import tqdm

    from flashrna.data import TrackDataset, make_loader

    shards = [str(s) for s in shards]
    if shared_tracks:
        identifiers = shared_identifiers(
            models[0], shards, split, head=head, targets=targets, identifiers=identifiers
        )
    dataset = TrackDataset(
        shards,
        split=split,
        assays=assays,
        identifiers=identifiers,
        genome=fasta,
        seq_length=length,
    )
    total = min(len(dataset), max_windows or len(dataset))
    if total == 0:
        raise FlashRNAError(f"{', '.join(shards)}: no windows in split '{split}'")
    model = load_track_model(
        models,
        head=head,
        targets=targets,
        identifiers=dataset.tracks.identifier,
        device=device,
        precision=precision,
    )
    check_input_length(model.description, dataset.seq_length, model.name, allow_length)
    names = [model.name]
    evaluation = TrackPearson([model], dataset.tracks, device)
    out = Path(out)
    data = [str(p) for p in dataset.shards.shards]
    fingerprint = json.dumps(
        {
            "data": data,
            "split": split,
            "models": names,
            "head": head,
            "tracks": hashlib.sha1("\t".join(dataset.tracks.identifier).encode()).hexdigest(),
            "length": dataset.seq_length,
            "windows": total,
        }
    )
    _resume(evaluation, out / STATE_FILE, fingerprint)
    loader = make_loader(
        dataset,
        batch_size,
        shuffle=False,
        start=evaluation.windows,
        even_shards=False,
        num_workers=num_workers,
        pin_memory=evaluation.device.type == "cuda",
    )
    bar = tqdm(total=total, initial=evaluation.windows, unit="window", desc="evaluate-tracks")
    for step, batch in enumerate(loader, start=1):
        left = total - evaluation.windows
        if left <= 0:
            break
        evaluation.update({k: v[:left] for k, v in batch.items()})
        bar.update(min(left, len(batch["index"])))
        if step % checkpoint_every == 0 and evaluation.windows < total:
            _save_state(evaluation, out / STATE_FILE, fingerprint)
    bar.close()
    per_track, per_assay = track_results(evaluation.compute(), dataset.tracks, names)
    with atomic_file(out / "tracks.csv") as handle:
        per_track.to_csv(handle, index=False, float_format="%.6f")
    with atomic_file(out / "assays.csv") as handle:
        per_assay.to_csv(handle, index=False, float_format="%.6f")
    summary = track_summary(per_assay, names, split=split, head=head, windows=total, data=data)
    write_json(out / "summary.json", summary)
    (out / STATE_FILE).unlink(missing_ok=True)
    for row in per_assay.itertuples(index=False):
        log.info(
            "%s %s (%d tracks): r squashed %.4f, counts %.4f, log %.4f",
            row.model,
            row.assay,
            row.tracks,
            row.pearson_squashed,
            row.pearson_counts,
            row.pearson_log,
        )
    return summary


def shared_identifiers(
    model: str | Path,
    shards: Sequence[str | Path],
    split: str,
    *,
    head: str | None = None,
    targets: str | Path | None = None,
    identifiers: Sequence[str] | None = None,
) -> list[str]:
    """The identifiers of the tracks of ``shards`` (of ``identifiers`` when given) that the
    ``head`` of ``model`` (its table ``targets``, default its own) predicts, in the data's
    order; weights are not loaded."""
    from flashrna.data import ShardSet

    source = resolve_model(model)
    head = head or default_head(source)
    table = TrackTable.read(targets) if targets else source.track_table(head)
    known = set(table.identifier) & set(
        identifiers if identifiers is not None else table.identifier
    )
    data = ShardSet(shards, split=split).tracks
    shared = [i for i in data.identifier if i in known]
    if not shared:
        raise FlashRNAError(f"{table.source}: predicts none of the tracks of {data.source}")
    log.info("%d of the data's %d tracks are the model's", len(shared), len(data))
    return shared


def _resume(evaluation: TrackPearson, path: Path, fingerprint: str) -> None:
    if not path.exists():
        return
    stored = np.load(path)
    if str(stored["fingerprint"]) != fingerprint:
        log.warning("%s is from other settings; starting over", path)
        return
    evaluation.load_state(stored["state"], int(stored["windows"]))
    log.info("resuming after %d windows from %s", evaluation.windows, path)


def _save_state(evaluation: TrackPearson, path: Path, fingerprint: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            state=evaluation.state(),
            windows=evaluation.windows,
            fingerprint=np.array(fingerprint),
        )


def track_summary(
    per_assay: pd.DataFrame,
    names: Sequence[str],
    *,
    split: str,
    head: str | None,
    windows: int,
    data: Sequence[str],
) -> dict[str, Any]:
    """``summary.json`` of evaluate-tracks from :func:`track_results`' ``assays.csv`` frame:
    the settings (``split``, ``head``, the ``windows`` evaluated, the shards ``data``) and per
    assay the mean and sd over the models ``names`` of each space's Pearson R."""
    models = per_assay[per_assay["model"].isin(names)]
    assays: dict = {}
    for assay, group in models.groupby("assay", sort=False):
        assays[assay] = {"tracks": int(group["tracks"].iloc[0])}
        for space in SPACES:
            values = group[f"pearson_{space}"].to_numpy(dtype=float)
            assays[assay][space] = {
                "mean": finite_or_none(np.mean(values)),
                "sd": finite_or_none(np.std(values, ddof=1)) if len(values) > 1 else None,
                "values": [finite_or_none(v) for v in values],
            }
    return {
        "split": split,
        "windows": windows,
        "data": list(data),
        "models": list(names),
        "head": head,
        "spaces": {
            "squashed": "as stored",
            "counts": "inverse-transformed (Table 1)",
            "log": "log2(1 + counts)",
        },
        "assays": assays,
    }
