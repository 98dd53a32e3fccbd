"""Every model a step can use, behind one interface.

A :class:`TrackModel` is a module with ``forward(sequence (B, L) int, head, crop_bins) -> (B, L/32 -
2 crop_bins, tracks)`` and ``strand_pair(head) -> (tracks,)`` (what :func:`flashrna.model.predict`
and :class:`flashrna.model.Ensemble` use), plus the :class:`~flashrna.tracks.TrackTable` whose row
``k`` describes output ``k``. FlashRNA model directories, ensembles of them, and the baselines all
become one, so ``evaluate-tracks``, ``score-variants`` and ``eqtl-benchmark`` score them with the
same code.

FlashRNA track tables: a model directory holds the table of its ``head`` as ``targets-<head>.txt``
(what ``flashrna train`` writes) or ``targets.txt`` (``--targets`` overrides); its row count must
equal the head's size and its strand pairs the pairs stored in the model.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from flashrna.model import Ensemble, load_models, read_model_config
from flashrna.tracks import TrackTable
from flashrna.utils import FlashRNAError, resolve_device
from flashrna.zoo.borzoi import BorzoiTracks, borzoi_track_table, build_borzoi

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# The common interface
# --------------------------------------------------------------------------------------------


@dataclass
class TrackModel:
    """A model (or ensemble) head and the table of its outputs."""

    module: nn.Module
    head: str
    tracks: TrackTable
    name: str

    def columns(self, identifiers: Sequence[str]) -> np.ndarray:
        """Output index (int64, (n,)) of each identifier; an error names those it lacks."""
        position = {ident: k for k, ident in enumerate(self.tracks.identifier)}
        missing = [i for i in identifiers if i not in position]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise FlashRNAError(
                f"{self.name}: head '{self.head}' ({self.tracks.source}) has no track "
                f"{', '.join(missing[:5])}{more}"
            )
        return np.array([position[i] for i in identifiers], dtype=np.int64)


def add_model_arguments(parser: argparse.ArgumentParser, replicates: bool = False) -> None:
    """``--model``/``--baseline`` (and with ``replicates`` each may repeat: one evaluated model per
    occurrence, the directories or names of one occurrence forming an ensemble), ``--targets``,
    ``--head``, ``--device``."""
    group = parser.add_argument_group("model")
    action = "append" if replicates else "store"
    repeat = " Repeat the option to evaluate several models (replicates)." if replicates else ""
    group.add_argument(
        "--model",
        nargs="+",
        action=action,
        metavar="DIR",
        help="FlashRNA model directory; several form an ensemble (mean of members)." + repeat,
    )
    group.add_argument(
        "--baseline",
        nargs="+",
        action=action,
        metavar="NAME",
        help="borzoi-{0..3}, flashzoi-{0..3}, a Hugging Face repository or a local directory "
        "(needs borzoi-pytorch); several form an ensemble." + repeat,
    )
    group.add_argument(
        "--targets",
        help="track table of the model head's outputs (default: the model directory's "
        "targets-<head>.txt or targets.txt; for baselines Borzoi's human table)",
    )
    group.add_argument("--head", default="human", help="model head (species)")
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")


def load_track_models(
    args: argparse.Namespace, identifiers: Sequence[str] | None = None
) -> list[TrackModel]:
    """The models named by :func:`add_model_arguments` options. Baselines compute only the tracks
    in ``identifiers`` (and their strand partners) when it is given."""
    groups = [("model", g) for g in _groups(args.model)]
    groups += [("baseline", g) for g in _groups(args.baseline)]
    if not groups:
        raise FlashRNAError("give --model (FlashRNA directories) or --baseline (Borzoi/Flashzoi)")
    device = resolve_device(args.device)
    models = []
    for kind, members in groups:
        if kind == "model":
            models.append(load_flashrna(members, args.head, args.targets, device))
        else:
            models.append(load_baseline(members, args.head, args.targets, identifiers, device))
        log.info(
            "loaded %s (%d tracks, head %s)", models[-1].name, len(models[-1].tracks), args.head
        )
    return models


def _groups(value: list | None) -> list[list[str]]:
    if value is None:
        return []
    return value if value and isinstance(value[0], list) else [value]


def model_track_table(directory: str | Path, head: str) -> TrackTable:
    """The track table stored in a model directory for ``head`` (see the module docstring)."""
    directory = Path(directory)
    for name in (f"targets-{head}.txt", "targets.txt"):
        if (directory / name).exists():
            return TrackTable.read(directory / name)
    raise FlashRNAError(
        f"{directory}: no targets-{head}.txt or targets.txt; give the head's track table "
        f"with --targets"
    )


def load_flashrna(
    directories: Sequence[str], head: str, targets: str | None, device: torch.device
) -> TrackModel:
    """One FlashRNA model or an ensemble of several directories, with its head's table."""
    config, _ = read_model_config(directories[0])
    if head not in config.heads:
        raise FlashRNAError(
            f"{directories[0]}: no head '{head}' (heads: {', '.join(config.heads)})"
        )
    table = TrackTable.read(targets) if targets else model_track_table(directories[0], head)
    if len(table) != config.heads[head]:
        raise FlashRNAError(
            f"{table.source}: {len(table)} tracks, but head '{head}' of {directories[0]} "
            f"has {config.heads[head]}"
        )
    module = load_models(list(directories), device=device)
    stored = module.strand_pair(head).cpu().numpy()
    if not np.array_equal(stored, table.strand_pair):
        row = int(np.flatnonzero(stored != table.strand_pair)[0])
        raise FlashRNAError(
            f"{table.source}: strand pair of row {row} ({table.identifier[row]}) is "
            f"{table.strand_pair[row]}, the model stores {stored[row]}: wrong track table?"
        )
    name = "+".join(directories)  # an ensemble is named by all its members
    return TrackModel(module, head, table, name)


def load_baseline(
    names: Sequence[str],
    head: str,
    targets: str | None,
    identifiers: Sequence[str] | None,
    device: torch.device,
) -> TrackModel:
    """Borzoi/Flashzoi replicate(s) behind :class:`BorzoiTracks`; several form an ensemble."""
    table = TrackTable.read(targets) if targets else borzoi_track_table()
    if identifiers is not None:
        rows = np.flatnonzero(np.isin(table.identifier, list(identifiers)))
        table = table.take(np.union1d(rows, table.strand_pair[rows]))
    members = [BorzoiTracks(build_borzoi(n), table, head).to(device) for n in names]
    module = members[0] if len(members) == 1 else Ensemble(members)
    name = "+".join(names)
    return TrackModel(module, head, table, name)
