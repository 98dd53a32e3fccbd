"""Borzoi and Flashzoi through borzoi-pytorch, with FlashRNA's model interface.

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
randomly initialised one) and is what ``flashrna bench compare`` builds on.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flashrna.model import (
    TOKEN_SIZE,
    apply_rotary,
    attention,
    center_crop,
    one_hot_channels,
    rotary_tables,
)
from flashrna.tracks import TrackTable
from flashrna.utils import FlashRNAError

HUB_REPLICATES = {
    "borzoi": "johahi/borzoi-replicate-{}",
    "flashzoi": "johahi/flashzoi-replicate-{}",
}
BORZOI_HEAD_TRACKS = {"human": 7611, "mouse": 2608}


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
    (B, L) int or (B, L, 4) one-hot -> (B, L/32 - 2*crop_bins, len(tracks))."""

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
        if sequence.shape[1] % TOKEN_SIZE:
            raise FlashRNAError(
                f"input length {sequence.shape[1]} bp is not a multiple of {TOKEN_SIZE}"
            )
        reset_relative_positions(self.borzoi, sequence.shape[1] // TOKEN_SIZE, sequence.device)
        x = one_hot_channels(sequence, self.one_hot)
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
