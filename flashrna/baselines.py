"""Models as the evaluation steps see them, and the Borzoi / Flashzoi baselines.

A :class:`TrackModel` is a module with ``forward(sequence (B, L) int, head, crop_bins) -> (B, L/32 -
2 crop_bins, tracks)`` and ``strand_pair(head) -> (tracks,)`` (what :func:`flashrna.model.predict`
and :class:`flashrna.model.Ensemble` use), plus the :class:`~flashrna.tracks.TrackTable` whose row
``k`` describes output ``k``. FlashRNA model directories, ensembles of them, and the baselines all
become one, so ``evaluate-tracks``, ``score-variants`` and ``eqtl-benchmark`` score them with the
same code.

FlashRNA track tables: a model directory holds the table of its ``head`` as ``targets-<head>.txt``
(what ``flashrna train`` writes) or ``targets.txt`` (``--targets`` overrides); its row count must
equal the head's size and its strand pairs the pairs stored in the model.

Baselines (``pip install 'flashrna[baselines]'``; borzoi-pytorch is imported only here, lazily):

- weights: ``borzoi-{0..3}`` / ``flashzoi-{0..3}`` name the Hugging Face repositories
  ``johahi/borzoi-replicate-{i}`` / ``johahi/flashzoi-replicate-{i}`` (downloaded on a machine with
  internet); a local directory holding the same ``config.json`` and weights loads the same way.
- input: our base indices (B, L) become Borzoi's one-hot (B, 4, L), N an all-zero column (as in
  Borzoi's training data).
- output: Borzoi's (B, 7611 human | 2608 mouse tracks, bins) becomes (B, bins, tracks) for the rows
  of a track table whose ``source_index`` are Borzoi channels (default: the full human table shipped
  with borzoi-pytorch, identical to Borzoi's ``targets_human.txt``). Only those channels of the
  output layer are computed.
- cropping: the model is built without its own centre crop (``bins_to_return=-1``), so it returns
  L/32 bins like FlashRNA and ``crop_bins`` is applied by the wrapper (before the output layers).
- reverse complement: as for FlashRNA, through the table's strand pairs in ``predict``.
- Flashzoi's attention is flash-attn's ``MHA`` (CUDA only). :class:`PortableFlashzoiAttention`
  holds the same parameters (``mha.Wqkv``, ``mha.out_proj``) and computes the same function (GQA 8
  query / 4 key-value heads of 192 dims, RoPE on the first 128 dims, base 20,000, NeoX style) with
  :func:`flashrna.model.attention`, so Flashzoi weights run on any device.

:func:`build_borzoi` makes the bare borzoi-pytorch model (a name, a directory, or a config for a
randomly initialised one) and is what ``flashrna bench compare`` builds on (:func:`register_bench`
delegates to :mod:`flashrna.figure1`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flashrna.model import (
    TOKEN_SIZE,
    Ensemble,
    apply_rotary,
    attention,
    center_crop,
    load_models,
    read_model_config,
    rotary_tables,
)
from flashrna.tracks import TrackTable
from flashrna.utils import FlashRNAError, resolve_device

log = logging.getLogger(__name__)

HUB_REPLICATES = {
    "borzoi": "johahi/borzoi-replicate-{}",
    "flashzoi": "johahi/flashzoi-replicate-{}",
}
BORZOI_HEAD_TRACKS = {"human": 7611, "mouse": 2608}


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


# --------------------------------------------------------------------------------------------
# Borzoi and Flashzoi through borzoi-pytorch
# --------------------------------------------------------------------------------------------


def _borzoi_pytorch():
    try:
        import borzoi_pytorch.pytorch_borzoi_model as borzoi_model
    except ImportError as err:
        raise FlashRNAError(
            f"the Borzoi/Flashzoi baselines need borzoi-pytorch ({err}); "
            f"pip install 'flashrna[baselines]'"
        ) from None
    return borzoi_model


def borzoi_track_table() -> TrackTable:
    """Borzoi's 7,611-track human table, as shipped with borzoi-pytorch."""
    return TrackTable.read(Path(_borzoi_pytorch().__file__).parent / "precomputed" / "targets.txt")


def hub_name(name: str) -> str:
    """``borzoi-2`` -> ``johahi/borzoi-replicate-2``; anything else is returned as given."""
    match = re.fullmatch(r"(borzoi|flashzoi)-(\d+)", name)
    return HUB_REPLICATES[match.group(1)].format(match.group(2)) if match else name


class PortableFlashzoiAttention(nn.Module):
    """Flashzoi's attention with flash-attn ``MHA``'s parameter names, on any device.

    ``Wqkv`` packs [query heads | key heads | value heads] x head_dim, as flash-attn does for
    grouped-query attention. (B, T, dim) -> (B, T, dim)."""

    def __init__(
        self,
        dim: int = 1536,
        heads: int = 8,
        dropout: float = 0.0,
        pos_dropout: float = 0.0,  # accepted for signature compatibility; Flashzoi ignores it
        rotary_emb_base: float = 20_000.0,
        rotary_emb_dim: int = 128,
    ):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, heads // 2, dim // heads
        self.rotary_dim, self.rotary_base, self.dropout = rotary_emb_dim, rotary_emb_base, dropout
        self.mha = nn.Module()
        self.mha.Wqkv = nn.Linear(dim, (heads + 2 * self.kv_heads) * self.head_dim)
        self.mha.out_proj = nn.Linear(heads * self.head_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, _ = x.shape
        qkv = self.mha.Wqkv(x).view(batch, tokens, self.heads + 2 * self.kv_heads, self.head_dim)
        q, k, v = qkv.split((self.heads, self.kv_heads, self.kv_heads), dim=2)
        cos, sin = rotary_tables(tokens, self.rotary_dim, self.rotary_base, x.device)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = attention(q, k, v.contiguous(), self.dropout if self.training else 0.0)
        return self.mha.out_proj(out.reshape(batch, tokens, self.heads * self.head_dim))


@contextlib.contextmanager
def _portable_flash_attention() -> Iterator[None]:
    """While building a model, borzoi-pytorch's flash-attn ``FlashAttention`` is replaced by
    :class:`PortableFlashzoiAttention` (same parameters, same function)."""
    borzoi_model = _borzoi_pytorch()
    original = borzoi_model.FlashAttention
    borzoi_model.FlashAttention = PortableFlashzoiAttention
    try:
        yield
    finally:
        borzoi_model.FlashAttention = original


def build_borzoi(source: str | Path | dict[str, Any], **overrides: Any) -> nn.Module:
    """A borzoi-pytorch ``Borzoi`` in eval mode, uncropped (returns L/32 bins).

    ``source``: a replicate name (``borzoi-0``, ``flashzoi-3``), a Hugging Face repository, or a
    local directory with its ``config.json`` and weights; or a dict of ``BorzoiConfig`` fields for
    a randomly initialised model (``flashed=True`` gives Flashzoi's attention). ``overrides``
    change config fields."""
    borzoi_model = _borzoi_pytorch()
    from borzoi_pytorch.config_borzoi import BorzoiConfig

    overrides = {"return_center_bins_only": True, "bins_to_return": -1, **overrides}
    with _portable_flash_attention():
        if isinstance(source, dict):
            model = borzoi_model.Borzoi(BorzoiConfig(**{**source, **overrides}))
        else:
            name = hub_name(str(source))
            try:
                model = borzoi_model.Borzoi.from_pretrained(name, **overrides)
            except (OSError, ValueError) as err:
                raise FlashRNAError(
                    f"cannot load Borzoi weights '{name}' ({err}); give a local directory with "
                    f"config.json and the weights, or run where huggingface.co is reachable"
                ) from None
    return model.eval()


class BorzoiTracks(nn.Module):
    """A borzoi-pytorch model with FlashRNA's interface for the tracks of ``tracks`` (a table
    whose ``source_index`` are the head's channels). ``forward`` as :class:`FlashRNA`:
    (B, L) int -> (B, L/32 - 2*crop_bins, len(tracks))."""

    def __init__(self, borzoi: nn.Module, tracks: TrackTable, head: str = "human"):
        super().__init__()
        if head not in BORZOI_HEAD_TRACKS or not hasattr(borzoi, f"{head}_head"):
            raise FlashRNAError(f"this Borzoi model has no '{head}' head")
        channels = tracks.source_index
        if channels.min() < 0 or channels.max() >= BORZOI_HEAD_TRACKS[head]:
            raise FlashRNAError(
                f"{tracks.source}: source_index outside Borzoi's {BORZOI_HEAD_TRACKS[head]} "
                f"{head} tracks; the table must describe channels of Borzoi's {head} head"
            )
        self.borzoi = borzoi
        self.head_name = head
        self.config = SimpleNamespace(heads={head: len(tracks)})  # what Ensemble checks
        self.register_buffer("channels", torch.tensor(channels), persistent=False)
        self.register_buffer("pairs", torch.tensor(tracks.strand_pair), persistent=False)
        self.register_buffer("one_hot", torch.eye(5)[:, :4].contiguous(), persistent=False)
        self.eval()  # a baseline is only ever used for inference

    def strand_pair(self, head: str = "human") -> Tensor:
        self._check_head(head)
        return self.pairs

    def _check_head(self, head: str) -> None:
        if head != self.head_name:
            raise FlashRNAError(f"this Borzoi wrapper serves head '{self.head_name}', not '{head}'")

    def forward(self, sequence: Tensor, head: str = "human", crop_bins: int = 0) -> Tensor:
        self._check_head(head)
        if sequence.shape[-1] % TOKEN_SIZE:
            raise FlashRNAError(
                f"input length {sequence.shape[-1]} bp is not a multiple of {TOKEN_SIZE}"
            )
        reset_relative_positions(self.borzoi, sequence.shape[-1] // TOKEN_SIZE, sequence.device)
        x = self.one_hot[sequence.long()].transpose(1, 2)
        x = self.borzoi.get_embs_after_crop(x)  # (B, dim, L/32): the model's crop is disabled
        x = center_crop(x.transpose(1, 2), crop_bins).transpose(1, 2)
        x = self.borzoi.final_joined_convs(x)
        layer = getattr(self.borzoi, f"{head}_head")
        with torch.autocast(x.device.type, enabled=False):
            out = F.conv1d(x.float(), layer.weight[self.channels], layer.bias[self.channels])
        return F.softplus(out).transpose(1, 2)


def reset_relative_positions(borzoi: nn.Module, tokens: int, device: torch.device) -> None:
    """Borzoi's attention caches its relative-position features at the first length and device
    it sees; drop a cache made for another length or device."""
    for module in borzoi.modules():
        positions = getattr(module, "positions", None)
        if isinstance(positions, Tensor) and (
            positions.shape[0] != 2 * tokens - 1 or positions.device != device
        ):
            module.positions = None


def register_bench(parser: argparse.ArgumentParser) -> None:
    """``flashrna bench compare`` (Figure 1), implemented in :mod:`flashrna.figure1`."""
    from flashrna.figure1 import register_compare

    register_compare(parser)
