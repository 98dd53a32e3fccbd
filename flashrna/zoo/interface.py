"""Every model a step can use, behind one interface and one option, ``--model``.

``--model X`` takes (:func:`resolve_model`):

- a model directory: trained by ``flashrna train``/``distill``/``finetune``, or written by
  ``flashrna import-model`` (FlashRNA, or Borzoi/Flashzoi run through borzoi-pytorch);
- an official FlashRNA checkpoint file (``model.ckpt``), imported on first use into the cache
  (:func:`flashrna.zoo.importer.cached_import`);
- a borzoi-pytorch model: ``borzoi-0..3``, ``flashzoi-0..3``, a Hugging Face repository, or a
  local directory in its layout (``config.json`` + ``model.safetensors``).

Repeated, the models form one ensemble: the mean of the members' predictions (their heads and
track tables must agree).

A :class:`TrackModel` is a module with ``forward(sequence (B, L) int, head, crop_bins) -> (B, L/32 -
2 crop_bins, tracks)`` and ``strand_pair(head) -> (tracks,)`` (what :func:`flashrna.model.predict`
and :class:`flashrna.model.Ensemble` use), plus the :class:`~flashrna.tracks.TrackTable` whose row
``k`` describes output ``k`` and the model's description (input length, crop:
:func:`flashrna.model.model_description`; :meth:`TrackModel.geometry` applies it). FlashRNA and
Borzoi/Flashzoi alike become one, so ``evaluate-tracks``, ``score-variants`` and
``eqtl-benchmark`` score them with the same code.

Track tables: a model directory holds the table of its ``head`` as ``targets-<head>.txt`` (what
``flashrna train`` and ``import-model`` write) or ``targets.txt`` (``--targets`` overrides); its
row count must equal the head's size and its strand pairs the pairs stored in the model.
borzoi-pytorch models use Borzoi's human table, and compute only the tracks a step asks for.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from flashrna.model import (
    CONFIG_FILE,
    PRECISIONS,
    Ensemble,
    autocast_dtype,
    check_input_length,
    load_model,
    read_model_config,
    read_model_description,
)
from flashrna.tracks import TrackTable
from flashrna.utils import FlashRNAError, read_json, resolve_device
from flashrna.zoo.borzoi import (
    BorzoiTracks,
    borzoi_description,
    borzoi_from_directory,
    borzoi_track_table,
    build_borzoi,
)

log = logging.getLogger(__name__)

BORZOI_NAME = re.compile(r"(borzoi|flashzoi)-\d+|[\w.-]+/[\w.-]+")
DEFAULT_LENGTH, DEFAULT_CROP = 524_288, 5120  # Borzoi's, for models that do not say


# --------------------------------------------------------------------------------------------
# Model sources
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """A ``--model`` value, resolved: ``kind`` ``directory`` (a model directory, ``location``
    its path) or ``borzoi-pytorch`` (``location`` a name or a Hugging Face-layout directory)."""

    given: str
    kind: str
    location: str

    @cached_property
    def description(self) -> dict[str, Any]:
        """The model's :func:`~flashrna.model.model_description`; for a borzoi-pytorch name,
        Borzoi's (524,288 bp, crop 5,120)."""
        if self.kind == "directory":
            return read_model_description(self.location)
        if Path(self.location).is_dir():
            return borzoi_description(read_json(Path(self.location) / CONFIG_FILE))
        return borzoi_description({"flashed": "flashzoi" in self.location})

    @property
    def architecture(self) -> str:
        return self.description["architecture"]

    def heads(self) -> list[str]:
        if self.architecture == "flashrna":
            return list(read_model_config(self.location)[0].heads)
        return ["human"]

    def track_table(self, head: str) -> TrackTable:
        """The head's track table (see the module docstring)."""
        if self.kind == "directory":
            return model_track_table(self.location, head)
        if head != "human":
            raise FlashRNAError(f"{self.given}: borzoi-pytorch models serve the human head only")
        return borzoi_track_table()

    def load(
        self, device: Any = "cpu", head: str = "human", tracks: TrackTable | None = None
    ) -> nn.Module:
        """The model in eval mode on ``device``: every head for FlashRNA, for Borzoi/Flashzoi
        the human head over ``tracks`` (default: its whole table)."""
        if self.architecture == "flashrna":
            return load_model(self.location, device=device)
        tracks = tracks if tracks is not None else self.track_table(head)
        if self.kind == "directory":
            borzoi = borzoi_from_directory(self.location)
        else:
            borzoi = build_borzoi(self.location)
        return BorzoiTracks(borzoi, tracks, head).to(resolve_device(device))


def resolve_model(value: str | Path) -> ModelSource:
    """What a ``--model`` value names (module docstring); an official checkpoint is imported
    into the cache first."""
    given = str(value)
    path = Path(given).expanduser()
    if path.is_dir():
        config = path / CONFIG_FILE
        stored = read_json(config) if config.is_file() else {}
        if "format_version" in stored:
            return ModelSource(given, "directory", str(path))
        if stored.get("model_type") == "borzoi":
            return ModelSource(given, "borzoi-pytorch", str(path))
        raise FlashRNAError(
            f"{path}: neither a model directory nor a borzoi-pytorch one (no {config.name} "
            f"of either)"
        )
    if path.is_file():
        from flashrna.zoo.importer import cached_import

        return ModelSource(given, "directory", str(cached_import(path)))
    if BORZOI_NAME.fullmatch(given):
        return ModelSource(given, "borzoi-pytorch", given)
    raise FlashRNAError(
        f"--model {given}: no such model directory or checkpoint file, and not a borzoi-pytorch "
        f"name (borzoi-0..3, flashzoi-0..3, owner/repository)"
    )


def flashrna_directory(value: str | Path) -> str:
    """The FlashRNA model directory a ``--model`` value names (an official checkpoint is
    imported first; a path that does not exist is returned as given, for the step to report);
    Borzoi/Flashzoi are refused (fine-tuning needs this package's trunk)."""
    if not Path(value).expanduser().exists():
        return str(value)
    source = resolve_model(value)
    if source.architecture != "flashrna":
        raise FlashRNAError(
            f"{value}: a {source.architecture} model; this needs a FlashRNA model (a model "
            f"directory or an official checkpoint)"
        )
    return source.location


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


# --------------------------------------------------------------------------------------------
# The common interface
# --------------------------------------------------------------------------------------------


@dataclass
class TrackModel:
    """A model (or ensemble) head, the table of its outputs, and its description."""

    module: nn.Module
    head: str
    tracks: TrackTable
    name: str
    description: dict[str, Any] = field(default_factory=dict)
    precision: str = "auto"  # of inference: flashrna.model.autocast_dtype

    def columns(self, identifiers: Sequence[str]) -> np.ndarray:
        """Output index (int64, (n,)) of each identifier; an error names those it lacks and
        those the table lists more than once (which output would be meant?)."""
        position: dict[str, int] = {}
        repeated = set()
        for k, ident in enumerate(self.tracks.identifier):
            if ident in position:
                repeated.add(ident)
            position[ident] = k
        missing = [i for i in identifiers if i not in position]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise FlashRNAError(
                f"{self.name}: head '{self.head}' ({self.tracks.source}) has no track "
                f"{', '.join(missing[:5])}{more}"
            )
        ambiguous = sorted(repeated & set(identifiers))
        if ambiguous:
            raise FlashRNAError(
                f"{self.tracks.source}: track identifier(s) {', '.join(ambiguous[:5])} name "
                f"several outputs"
            )
        return np.array([position[i] for i in identifiers], dtype=np.int64)

    def geometry(
        self, length: int | None, crop_bins: int | None, allow_length: bool = False
    ) -> tuple[int, int]:
        """The input length (bp) and crop (bins at each end) to run the model at: those
        given, else the model's own, else Borzoi's (524,288 bp, 5,120 bins). A length the
        model was not built for is refused unless ``allow_length``."""
        length = length or self.description.get("input_length") or DEFAULT_LENGTH
        check_input_length(self.description, length, self.name, allow_length)
        if crop_bins is None:
            own = self.description.get("crop_bins")
            crop_bins = DEFAULT_CROP if own is None else own
        return length, crop_bins


def add_model_arguments(
    parser: argparse.ArgumentParser,
    required: bool = True,
    targets: bool = True,
    precision: bool = True,
) -> None:
    """``--model`` (repeatable: an ensemble), ``--targets`` (with ``targets``), ``--head``,
    ``--device``, ``--allow-length``, ``--precision`` (with ``precision``)."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        action="append",
        required=required,
        metavar="MODEL",
        help="a model directory (trained, or from import-model), an official FlashRNA "
        "checkpoint (.ckpt, imported into the cache on first use) or a borzoi-pytorch model "
        "(borzoi-0..3, flashzoi-0..3, a Hugging Face repository or a local directory in its "
        "layout). Repeat it for an ensemble: the mean of the members' predictions.",
    )
    if targets:
        group.add_argument(
            "--targets",
            help="track table of the model head's outputs (default: the model directory's "
            "targets-<head>.txt or targets.txt; for borzoi-pytorch models Borzoi's human table)",
        )
    group.add_argument(
        "--head", help="model head (species; default: the data's species or human, else the first)"
    )
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    group.add_argument(
        "--allow-length",
        action="store_true",
        help="run the model on an input length other than the one it was built for",
    )
    if precision:
        group.add_argument(
            "--precision",
            choices=PRECISIONS,
            default="auto",
            help="inference precision: auto (default) runs the trunk under bf16 autocast on "
            "CUDA and on CPUs with native bf16 (AVX-512 BF16, AMX), fp32 elsewhere; the track "
            "heads stay fp32",
        )


def load_track_model(
    models: Sequence[str | Path],
    *,
    head: str | None = None,
    targets: str | Path | None = None,
    identifiers: Sequence[str] | None = None,
    device: Any = "cpu",
    precision: str = "auto",
) -> TrackModel:
    """One model, or the ensemble of several (the mean of the members' predictions), named by
    ``--model`` values (:func:`resolve_model`), for ``head`` (default: human, else the first)
    with the track table ``targets`` (default: the model's own). Borzoi and Flashzoi compute
    only the tracks in ``identifiers`` (and their strand partners) when it is given."""
    if not models:
        raise FlashRNAError("give --model")
    sources = [resolve_model(v) for v in models]
    head = head or default_head(sources[0])
    for source in sources:
        if head not in source.heads():
            raise FlashRNAError(
                f"{source.given}: no head '{head}' (heads: {', '.join(source.heads())})"
            )
    description = _common_description(sources)
    tables = [TrackTable.read(targets) if targets else s.track_table(head) for s in sources]
    for source, table in zip(sources[1:], tables[1:], strict=True):
        if not np.array_equal(table.identifier, tables[0].identifier):
            raise FlashRNAError(
                f"ensemble members {sources[0].given} and {source.given}: head '{head}' predicts "
                f"different tracks ({tables[0].source}, {table.source})"
            )
    table = tables[0]
    if identifiers is not None and any(s.architecture != "flashrna" for s in sources):
        rows = np.flatnonzero(np.isin(table.identifier, list(identifiers)))
        table = table.take(np.union1d(rows, table.strand_pair[rows]))
    device = resolve_device(device)
    members = [_member(s, head, table, device) for s in sources]
    module = members[0] if len(members) == 1 else Ensemble(members)
    name = "+".join(s.given for s in sources)  # an ensemble is named by all its members
    log.info("loaded %s (%d tracks, head %s)", name, len(table), head)
    autocast_dtype(precision, device)  # an unknown precision fails here, before any work
    return TrackModel(module, head, table, name, description, precision)


def track_model_from_args(
    args: argparse.Namespace, identifiers: Sequence[str] | None = None
) -> TrackModel:
    """:func:`load_track_model` of the :func:`add_model_arguments` options."""
    return load_track_model(
        args.model or [],
        head=args.head,
        targets=args.targets,
        identifiers=identifiers,
        device=args.device,
        precision=getattr(args, "precision", "auto"),
    )


def load_track_table(
    models: Sequence[str | Path],
    *,
    head: str | None = None,
    targets: str | Path | None = None,
) -> TrackTable:
    """The track table of ``head`` (default: human, else the first) of the models
    :func:`load_track_model` would load: ``targets`` when given, else the first model's own,
    without loading weights."""
    if targets:
        return TrackTable.read(targets)
    if not models:
        raise FlashRNAError("give --model")
    source = resolve_model(models[0])
    return source.track_table(head or default_head(source))


def track_table_from_args(args: argparse.Namespace) -> TrackTable:
    """:func:`load_track_table` of the :func:`add_model_arguments` options."""
    return load_track_table(
        args.model or [], head=args.head, targets=getattr(args, "targets", None)
    )


def default_head(source: ModelSource) -> str:
    heads = source.heads()
    return "human" if "human" in heads else heads[0]


def _common_description(sources: Sequence[ModelSource]) -> dict[str, Any]:
    descriptions = [s.description for s in sources]
    for key in ("input_length", "crop_bins"):
        values = {d.get(key) for d in descriptions} - {None}
        if len(values) > 1:
            raise FlashRNAError(
                f"ensemble members disagree on {key} ({sorted(values)}): "
                f"{', '.join(s.given for s in sources)}"
            )
    return next((d for d in descriptions if d.get("input_length")), descriptions[0])


def _member(source: ModelSource, head: str, table: TrackTable, device) -> nn.Module:
    """One member for ``head`` and ``table``; a FlashRNA model's table must fit its head."""
    if source.architecture != "flashrna":
        return source.load(device, head, table)
    config, _ = read_model_config(source.location)
    if len(table) != config.heads[head]:
        raise FlashRNAError(
            f"{table.source}: {len(table)} tracks, but head '{head}' of {source.given} "
            f"has {config.heads[head]}"
        )
    module = source.load(device)
    stored = module.strand_pair(head).cpu().numpy()
    if not np.array_equal(stored, table.strand_pair):
        row = int(np.flatnonzero(stored != table.strand_pair)[0])
        raise FlashRNAError(
            f"{table.source}: strand pair of row {row} ({table.identifier[row]}) is "
            f"{table.strand_pair[row]}, the model stores {stored[row]}: wrong track table?"
        )
    return module
