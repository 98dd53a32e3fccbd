"""The FlashRNA model: a Borzoi-sized U-Net with a RoPE transformer core.

Reads top to bottom: config and presets, building blocks, the model, ensembles, reverse-complement
prediction, save/load, and the ``model-info`` step.

Shapes (B batch, L input bp, a multiple of 128; T = L/128 tokens; N = L/32 output bins)::

    sequence  (B, L)   int    base indices A0 C1 G2 T3 N4 (N is an all-zero one-hot row),
                              or (B, L, 4) float one-hot (for input gradients)
    stem      (B, 512, L)             Conv1d k15, no bias, no norm                  1 bp
    tower x5  (B, 640..1280, L/32)    MaxPool2 -> GN -> GELU -> Conv1d k5           2..32 bp
    encoder   (B, 1536, L/64)         the same block; skips saved before and after 64 bp
    pool      (B, 1536, T)                                                          128 bp
    transformer x8 (B, T, 1536)       pre-LN, MHA with RoPE, MLP 2x, GELU(tanh)     128 bp
    decoder x2 (B, 1536, N)           upsample + skip, separable conv               64, 32 bp
    embed     (B, N, 1536)            what fine-tuning heads read
    head      (B, N, tracks)          shared Linear 1536->1920, Dropout, GELU; per-species
                                      Linear 1920->tracks in fp32; Softplus

Attention backends compute the same function: ``sdpa`` (PyTorch scaled_dot_product_attention:
FlashAttention-2 kernels on CUDA in bf16/fp16, the best kernel on CPU), ``flash-attn`` (the
flash-attn package, CUDA only), ``math`` (explicit softmax(QK^T/sqrt(d))V, the reference), and
``auto`` (flash-attn when importable and the tensors are CUDA bf16/fp16, else sdpa).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flashrna.utils import FlashRNAError, atomic_directory, read_json, resolve_device, write_json

BIN_SIZE = 32  # bp per output bin
TOKEN_SIZE = 128  # bp per transformer token; input lengths must be a multiple of it
ATTENTION_BACKENDS = ("auto", "sdpa", "flash-attn", "math")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------
# Config and presets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    """Every architectural hyperparameter; the defaults are the ``paper`` preset (DESIGN §2)."""

    stem_channels: int = 512
    stem_kernel_size: int = 15
    tower_channels: tuple[int, ...] = (640, 768, 896, 1024, 1280)
    conv_kernel_size: int = 5
    decoder_kernel_size: int = 3
    norm_groups: int = 32
    dim: int = 1536
    num_layers: int = 8
    num_heads: int = 8
    num_kv_heads: int = 8
    head_dim: int = 192
    rope_dims: int = 192
    rope_base: float = 10_000.0
    attention_bias: bool = False
    mlp_hidden: int = 3072
    attention_dropout: float = 0.2
    mlp_dropout: float = 0.3
    residual_dropout: float = 0.3
    head_hidden: int = 1920
    head_dropout: float = 0.1
    heads: dict[str, int] = field(default_factory=lambda: {"human": 2449, "mouse": 828})
    attention_backend: str = "auto"
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "tower_channels", tuple(self.tower_channels))
        object.__setattr__(self, "heads", dict(self.heads))
        problems = []
        if self.attention_backend not in ATTENTION_BACKENDS:
            problems.append(
                f"attention_backend '{self.attention_backend}' is not one of {ATTENTION_BACKENDS}"
            )
        if self.num_heads % self.num_kv_heads:
            problems.append(
                f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}"
            )
        if self.rope_dims % 2 or not 0 <= self.rope_dims <= self.head_dim:
            problems.append(f"rope_dims {self.rope_dims} must be even and at most head_dim")
        channels = (self.stem_channels, *self.tower_channels, self.dim)
        bad = [c for c in channels if c % self.norm_groups]
        if bad:
            problems.append(f"channels {bad} are not divisible by norm_groups {self.norm_groups}")
        if len(self.tower_channels) != 5:
            problems.append("tower_channels needs 5 entries (32 bp after the tower)")
        if not self.heads:
            problems.append("heads is empty: give at least one {name: number of tracks}")
        if problems:
            raise FlashRNAError("invalid model config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["tower_channels"] = list(self.tower_channels)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "model config") -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise FlashRNAError(
                f"{where}: unknown key(s) {unknown}; known keys: {', '.join(sorted(known))}"
            )
        return cls(**values)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, ModelConfig] = {
    # DESIGN §2: the public FlashRNA model, 202,629,069 parameters with these heads.
    "paper": ModelConfig(),
    # The same model with Flashzoi's attention: GQA 8 query / 4 key-value heads, RoPE on the
    # first 128 of 192 dims with base 20,000, biases on q/k/v/out.
    "flashzoi-attention": ModelConfig(
        num_kv_heads=4, rope_dims=128, rope_base=20_000.0, attention_bias=True
    ),
    # A few hundred thousand parameters through the same code path: tests and the CPU demo.
    "tiny": ModelConfig(
        stem_channels=32,
        tower_channels=(32, 48, 48, 64, 64),
        norm_groups=8,
        dim=96,
        num_layers=2,
        num_heads=4,
        num_kv_heads=4,
        head_dim=24,
        rope_dims=24,
        mlp_hidden=192,
        attention_dropout=0.05,
        mlp_dropout=0.1,
        residual_dropout=0.1,
        head_hidden=128,
        head_dropout=0.05,
        heads={"human": 74},
    ),
}


def model_config(preset: str = "paper", **overrides: Any) -> ModelConfig:
    """A preset's config with ``overrides`` applied (unknown keys are errors)."""
    if preset not in PRESETS:
        raise FlashRNAError(f"unknown model preset '{preset}'; presets: {', '.join(PRESETS)}")
    base = PRESETS[preset].to_dict()
    base.update(overrides)
    return ModelConfig.from_dict(base, f"model config (preset '{preset}')")


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def gelu(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


class ConvBlock(nn.Module):
    """GroupNorm -> GELU(tanh) -> Conv1d ('same' padding, no bias); optionally separable
    (depthwise k, then pointwise). (B, C_in, L) -> (B, C_out, L)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, groups: int, separable=False):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c_in)
        if separable:
            self.conv = nn.Sequential(
                nn.Conv1d(c_in, c_in, kernel_size, padding="same", groups=c_in, bias=False),
                nn.Conv1d(c_in, c_out, 1, bias=False),
            )
        else:
            self.conv = nn.Conv1d(c_in, c_out, kernel_size, padding="same", bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(gelu(self.norm(x)))


class DownBlock(nn.Module):
    """MaxPool(2) then a ConvBlock. (B, C_in, L) -> (B, C_out, L/2)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, groups: int):
        super().__init__()
        self.block = ConvBlock(c_in, c_out, kernel_size, groups)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(F.max_pool1d(x, 2))


class UpBlock(nn.Module):
    """U-Net decoder: pointwise ConvBlock and nearest upsampling x2, plus a pointwise ConvBlock
    of the skip, then a separable ConvBlock. (B, D, L), (B, C_skip, 2L) -> (B, D, 2L).

    The pointwise block runs before the upsampling: GroupNorm statistics, GELU and a 1x1 conv
    all commute with nearest upsampling, so this is the same function at half the cost."""

    def __init__(self, dim: int, skip_channels: int, kernel_size: int, groups: int):
        super().__init__()
        self.pointwise = ConvBlock(dim, dim, 1, groups)
        self.skip = ConvBlock(skip_channels, dim, 1, groups)
        self.separable = ConvBlock(dim, dim, kernel_size, groups, separable=True)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(self.pointwise(x), scale_factor=2, mode="nearest")
        return self.separable(x + self.skip(skip))


def rotary_tables(
    length: int, rope_dims: int, base: float, device: torch.device
) -> tuple[Tensor, Tensor]:
    """cos and sin tables (length, rope_dims/2) in fp32 for positions 0..length-1."""
    inv_freq = base ** (
        -torch.arange(0, rope_dims, 2, device=device, dtype=torch.float32) / rope_dims
    )
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the first 2*cos.shape[-1] dims of each head, half-split (GPT-NeoX) style:
    dims i and i + r/2 form a pair rotated by position * base^(-2i/r).

    x (B, T, H, D); cos, sin (T, r/2) -> (B, T, H, D) in x's dtype."""
    half = cos.shape[-1]
    rotated, rest = x[..., : 2 * half].float(), x[..., 2 * half :]
    x1, x2 = rotated[..., :half], rotated[..., half:]
    cos, sin = cos[:, None, :], sin[:, None, :]
    out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)
    return torch.cat((out, rest), dim=-1) if rest.shape[-1] else out


def _flash_attn_func():
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        return None
    return flash_attn_func


def attention(q: Tensor, k: Tensor, v: Tensor, dropout: float, backend: str = "auto") -> Tensor:
    """Softmax attention over all positions (no mask).

    q (B, T, H, D); k, v (B, T, Hkv, D) with H a multiple of Hkv (grouped-query attention:
    query head h reads key/value head h // (H/Hkv)). Returns (B, T, H, D)."""
    grouped = q.shape[2] != k.shape[2]
    if backend == "auto":
        usable = q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)
        backend = "flash-attn" if usable and _flash_attn_func() is not None else "sdpa"
    if backend == "flash-attn":
        flash_attn_func = _flash_attn_func()
        if flash_attn_func is None:
            raise FlashRNAError(
                "attention backend 'flash-attn' asked for, but flash_attn is not "
                "installed (pip install 'flashrna[flash]')"
            )
        if not q.is_cuda or q.dtype not in (torch.float16, torch.bfloat16):
            raise FlashRNAError(
                f"attention backend 'flash-attn' needs CUDA fp16/bf16 tensors, "
                f"got {q.device.type} {q.dtype}; use 'sdpa' or 'auto'"
            )
        return flash_attn_func(q, k, v, dropout_p=dropout)
    if backend == "sdpa":
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            dropout_p=dropout,
            enable_gqa=grouped,
        )
        return out.transpose(1, 2)
    if backend == "math":
        return reference_attention(q, k, v, dropout)
    raise FlashRNAError(f"unknown attention backend '{backend}'; one of {ATTENTION_BACKENDS}")


def reference_attention(q: Tensor, k: Tensor, v: Tensor, dropout: float = 0.0) -> Tensor:
    """Explicit softmax(Q K^T / sqrt(D)) V in fp32; the definition the other backends meet.
    Shapes as :func:`attention`."""
    group = q.shape[2] // k.shape[2]
    k = k.repeat_interleave(group, dim=2)
    v = v.repeat_interleave(group, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q.float(), k.float()) / math.sqrt(q.shape[-1])
    weights = F.dropout(scores.softmax(dim=-1), dropout)
    return torch.einsum("bhts,bshd->bthd", weights, v.float()).to(q.dtype)


class SelfAttention(nn.Module):
    """Multi-head (or grouped-query) self-attention with RoPE and packed QKV.
    (B, T, dim) -> (B, T, dim)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        self.qkv = nn.Linear(
            c.dim, (c.num_heads + 2 * c.num_kv_heads) * c.head_dim, bias=c.attention_bias
        )
        self.out = nn.Linear(c.num_heads * c.head_dim, c.dim, bias=c.attention_bias)

    def forward(self, x: Tensor) -> Tensor:
        c = self.config
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).view(batch, tokens, c.num_heads + 2 * c.num_kv_heads, c.head_dim)
        q, k, v = qkv.split((c.num_heads, c.num_kv_heads, c.num_kv_heads), dim=2)
        if c.rope_dims:
            cos, sin = rotary_tables(tokens, c.rope_dims, c.rope_base, x.device)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        dropout = c.attention_dropout if self.training else 0.0
        out = attention(q, k, v.contiguous(), dropout, c.attention_backend)
        return self.out(out.reshape(batch, tokens, c.num_heads * c.head_dim))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + Drop(Attn(LN(x))), then x + Drop(MLP(LN(x))).
    (B, T, dim) -> (B, T, dim)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        c = config
        self.attention_norm = nn.LayerNorm(c.dim)
        self.attention = SelfAttention(c)
        self.mlp_norm = nn.LayerNorm(c.dim)
        self.mlp_in = nn.Linear(c.dim, c.mlp_hidden, bias=False)
        self.mlp_dropout = nn.Dropout(c.mlp_dropout)
        self.mlp_out = nn.Linear(c.mlp_hidden, c.dim, bias=False)
        self.residual_dropout = nn.Dropout(c.residual_dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.residual_dropout(self.attention(self.attention_norm(x)))
        hidden = self.mlp_dropout(gelu(self.mlp_in(self.mlp_norm(x))))
        return x + self.residual_dropout(self.mlp_out(hidden))


def one_hot_channels(sequence: Tensor, lookup: Tensor) -> Tensor:
    """The model's input as channels-first one-hot (B, 4, L): base indices (B, L) through
    ``lookup`` (5, 4) (rows A C G T N, N all zero), or a float one-hot (B, L, 4) taken as it is,
    so that gradients with respect to the input can be computed (``flashrna attribute``)."""
    if not sequence.is_floating_point():
        return lookup[sequence.long()].transpose(1, 2)
    if sequence.ndim != 3 or sequence.shape[-1] != 4:
        raise FlashRNAError(f"a one-hot input must be (B, L, 4), got {tuple(sequence.shape)}")
    return sequence.transpose(1, 2)


class Trunk(nn.Module):
    """Sequence to 32-bp embeddings. (B, L) int, or (B, L, 4) one-hot -> (B, L/32, dim)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        c = config
        self.config = config
        # Row 4 (N) of the lookup is all zeros.
        self.register_buffer("one_hot", torch.eye(5)[:, :4].contiguous(), persistent=False)
        self.stem = nn.Conv1d(4, c.stem_channels, c.stem_kernel_size, padding="same", bias=False)
        channels = (c.stem_channels, *c.tower_channels)
        self.tower = nn.ModuleList(
            DownBlock(a, b, c.conv_kernel_size, c.norm_groups)
            for a, b in itertools.pairwise(channels)
        )
        self.unet_encoder = DownBlock(
            c.tower_channels[-1], c.dim, c.conv_kernel_size, c.norm_groups
        )
        self.transformer = nn.ModuleList(TransformerBlock(c) for _ in range(c.num_layers))
        self.decoders = nn.ModuleList(
            [
                UpBlock(c.dim, c.dim, c.decoder_kernel_size, c.norm_groups),  # to 64 bp
                UpBlock(c.dim, c.tower_channels[-1], c.decoder_kernel_size, c.norm_groups),  # 32 bp
            ]
        )

    def forward(self, sequence: Tensor) -> Tensor:
        length = sequence.shape[1]
        if length % TOKEN_SIZE:
            raise FlashRNAError(f"input length {length} bp is not a multiple of {TOKEN_SIZE}")
        x = one_hot_channels(sequence, self.one_hot).to(self.stem.weight.dtype)
        x = self.stem(x)
        for block in self.tower:
            x = block(x)
        skip_32 = x
        skip_64 = x = self.unet_encoder(x)
        x = F.max_pool1d(x, 2).transpose(1, 2)
        for block in self.transformer:
            if self.config.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        x = self.decoders[0](x.transpose(1, 2), skip_64)
        x = self.decoders[1](x, skip_32)
        return x.transpose(1, 2)


class TrackHead(nn.Module):
    """Per-species output layer: Linear -> Softplus, computed in fp32 even under autocast.
    Holds the head's strand-pair permutation so predictions can be reverse-complemented.
    (B, N, head_hidden) -> (B, N, tracks)."""

    def __init__(self, hidden: int, tracks: int):
        super().__init__()
        self.linear = nn.Linear(hidden, tracks)
        self.register_buffer("strand_pair", torch.arange(tracks))

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type == "meta":  # FLOP counting: autocast has no meta backend
            return F.softplus(self.linear(x.float()))
        with torch.autocast(x.device.type, enabled=False):
            return F.softplus(self.linear(x.float()))


class FlashRNA(nn.Module):
    """Trunk, shared head projection, and one :class:`TrackHead` per species.

    ``forward(sequence (B, L), head, crop_bins)`` -> (B, L/32 - 2*crop_bins, tracks)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.trunk = Trunk(config)
        self.shared_head = nn.Sequential(
            nn.Linear(config.dim, config.head_hidden),
            nn.Dropout(config.head_dropout),
            nn.GELU(approximate="tanh"),
        )
        self.heads = nn.ModuleDict(
            {name: TrackHead(config.head_hidden, n) for name, n in config.heads.items()}
        )

    def embed(self, sequence: Tensor) -> Tensor:
        """(B, L) base indices -> (B, L/32, dim) trunk embeddings."""
        return self.trunk(sequence)

    def head(self, embeddings: Tensor, head: str = "human") -> Tensor:
        """(B, N, dim) embeddings -> (B, N, tracks) non-negative predictions."""
        if head not in self.heads:
            raise FlashRNAError(f"model has no head '{head}'; heads: {', '.join(self.heads)}")
        return self.heads[head](self.shared_head(embeddings))

    def forward(self, sequence: Tensor, head: str = "human", crop_bins: int = 0) -> Tensor:
        return self.head(center_crop(self.embed(sequence), crop_bins), head)

    def strand_pair(self, head: str = "human") -> Tensor:
        """(tracks,) index of each track's opposite-strand partner (itself if unstranded)."""
        return self.heads[head].strand_pair

    def set_strand_pair(self, head: str, pairs: Sequence[int] | np.ndarray | Tensor) -> None:
        # A copy: the input may be a read-only array or a tensor we must not alias.
        pairs = torch.tensor(pairs.tolist() if isinstance(pairs, (Tensor, np.ndarray)) else pairs)
        n = self.config.heads[head]
        if pairs.shape != (n,) or not torch.equal(pairs[pairs], torch.arange(n)):
            raise FlashRNAError(
                f"strand pairs for head '{head}' must be an involution of {n} tracks"
            )
        self.heads[head].strand_pair.copy_(pairs)


def center_crop(x: Tensor, crop_bins: int) -> Tensor:
    """Drop ``crop_bins`` from each end of the bin axis. (B, N, C) -> (B, N - 2*crop, C)."""
    if crop_bins == 0:
        return x
    if not 0 < 2 * crop_bins < x.shape[1]:
        raise FlashRNAError(f"cannot crop {crop_bins} bins from each end of {x.shape[1]} bins")
    return x[:, crop_bins:-crop_bins]


def take_bins(x: Tensor, starts: Tensor, length: int) -> Tensor:
    """Per-example windows of the bin axis: out[b] = x[b, starts[b] : starts[b] + length].
    x (B, N, C), starts (B,) -> (B, length, C)."""
    offsets = starts.to(x.device)[:, None] + torch.arange(length, device=x.device)
    return x[torch.arange(x.shape[0], device=x.device)[:, None], offsets]


class Ensemble(nn.Module):
    """Mean of members' predictions. Members are kept in an ``nn.ModuleList`` and must share
    heads and strand pairs. ``forward`` as :class:`FlashRNA`."""

    def __init__(self, members: Sequence[FlashRNA]):
        super().__init__()
        if not members:
            raise FlashRNAError("an ensemble needs at least one member")
        first = members[0]
        for i, member in enumerate(members[1:], start=1):
            if member.config.heads != first.config.heads:
                raise FlashRNAError(
                    f"ensemble member {i} has heads {member.config.heads}, "
                    f"member 0 has {first.config.heads}"
                )
        self.members = nn.ModuleList(members)
        self.config = first.config

    def forward(self, sequence: Tensor, head: str = "human", crop_bins: int = 0) -> Tensor:
        total = self.members[0](sequence, head, crop_bins)
        for member in self.members[1:]:
            total = total + member(sequence, head, crop_bins)
        return total / len(self.members)

    def strand_pair(self, head: str = "human") -> Tensor:
        return self.members[0].strand_pair(head)


# --------------------------------------------------------------------------------------------
# Reverse-complement prediction
# --------------------------------------------------------------------------------------------


def reverse_complement(sequence: Tensor) -> Tensor:
    """(B, L) base indices -> their reverse complements (A<->T, C<->G, N stays N)."""
    complement = torch.where(sequence < 4, 3 - sequence, sequence)
    return complement.flip(-1)


def unreverse_prediction(prediction: Tensor, strand_pair: Tensor) -> Tensor:
    """Map a prediction for the reverse-complement input back to forward coordinates:
    reverse the bins and swap each track with its strand partner. (B, N, C) -> (B, N, C)."""
    return prediction.flip(1)[..., strand_pair.to(prediction.device)]


@torch.no_grad()
def predict(
    model: nn.Module,
    sequences: Tensor | np.ndarray,
    head: str = "human",
    *,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    reverse_complement_average: bool = True,
    crop_bins: int = 0,
    autocast: bool = True,
    progress: bool = False,
) -> Tensor:
    """Predict tracks for (N, L) base indices, in batches, in eval mode.

    With ``reverse_complement_average`` each batch is run forward and reverse-complemented in one
    pass and the two predictions averaged in forward coordinates. On CUDA the trunk runs under
    bf16 autocast (the track heads stay fp32). Returns (N, L/32 - 2*crop_bins, tracks) fp32 on
    the CPU."""
    from tqdm.auto import tqdm

    device = resolve_device(device)
    sequences = torch.as_tensor(
        np.asarray(sequences) if isinstance(sequences, np.ndarray) else sequences
    )
    if sequences.ndim != 2:
        raise FlashRNAError(f"expected sequences of shape (N, L), got {tuple(sequences.shape)}")
    was_training = model.training
    model.eval().to(device)
    strand_pair = model.strand_pair(head)
    use_autocast = autocast and device.type == "cuda"
    outputs = []
    starts = range(0, len(sequences), batch_size)
    for start in tqdm(starts, desc="predict", disable=not progress, unit="batch"):
        batch = sequences[start : start + batch_size].to(device, non_blocking=True)
        if reverse_complement_average:
            batch = torch.cat((batch, reverse_complement(batch)))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_autocast):
            out = model(batch, head, crop_bins).float()
        if reverse_complement_average:
            forward, reverse = out.chunk(2)
            out = (forward + unreverse_prediction(reverse, strand_pair)) / 2
        outputs.append(out.cpu())
    model.train(was_training)
    return torch.cat(outputs)


# --------------------------------------------------------------------------------------------
# Save and load
# --------------------------------------------------------------------------------------------


def build_model(config: ModelConfig | str = "paper", **overrides: Any) -> FlashRNA:
    """A freshly initialised model from a config or a preset name (with overrides)."""
    if isinstance(config, str):
        config = model_config(config, **overrides)
    elif overrides:
        config = config.replace(**overrides)
    return FlashRNA(config)


def save_model(model: FlashRNA, directory: str | Path, metadata: dict | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (no pickles) into ``directory``,
    atomically replacing an existing model directory. Other files (track tables, metrics)
    written by the caller after this call are kept only if written after it."""
    from safetensors.torch import save_file

    directory = Path(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_directory(directory) as tmp:
        write_json(
            tmp / CONFIG_FILE,
            {
                "format_version": FORMAT_VERSION,
                "model": model.config.to_dict(),
                "metadata": metadata or {},
            },
        )
        save_file(state, str(tmp / WEIGHTS_FILE))
    return directory


def read_model_config(directory: str | Path) -> tuple[ModelConfig, dict]:
    """The config and metadata stored in a model directory."""
    path = Path(directory) / CONFIG_FILE
    if not path.exists():
        raise FlashRNAError(f"{directory}: not a model directory (no {CONFIG_FILE})")
    stored = read_json(path)
    if stored.get("format_version") != FORMAT_VERSION:
        raise FlashRNAError(
            f"{path}: format_version {stored.get('format_version')!r}, "
            f"this flashrna reads {FORMAT_VERSION}"
        )
    return ModelConfig.from_dict(stored["model"], str(path)), stored.get("metadata", {})


def load_model(
    directory: str | Path,
    expected_config: ModelConfig | None = None,
    device: str | torch.device | None = "cpu",
    **overrides: Any,
) -> FlashRNA:
    """Load a model directory written by :func:`save_model`.

    ``overrides`` may change run-time settings only (attention_backend,
    gradient_checkpointing, dropouts). With ``expected_config`` every other field must match,
    else a clear error names the differing fields."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    config, _ = read_model_config(directory)
    runtime = {
        "attention_backend",
        "gradient_checkpointing",
        "attention_dropout",
        "mlp_dropout",
        "residual_dropout",
        "head_dropout",
    }
    not_runtime = sorted(set(overrides) - runtime)
    if not_runtime:
        raise FlashRNAError(f"cannot override {not_runtime} when loading; only {sorted(runtime)}")
    config = config.replace(**overrides)
    if expected_config is not None:
        differ = [
            f.name
            for f in dataclasses.fields(ModelConfig)
            if f.name not in runtime and getattr(config, f.name) != getattr(expected_config, f.name)
        ]
        if differ:
            detail = "; ".join(
                f"{n}: stored {getattr(config, n)!r}, expected {getattr(expected_config, n)!r}"
                for n in differ
            )
            raise FlashRNAError(f"{directory}: model config does not match ({detail})")
    weights = directory / WEIGHTS_FILE
    try:
        state = load_file(str(weights))
    except FileNotFoundError:
        raise FlashRNAError(f"{weights}: file not found") from None
    except (SafetensorError, OSError) as err:
        raise FlashRNAError(f"{weights}: unreadable weights ({err})") from None
    model = FlashRNA(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k} stored {tuple(state[k].shape)} vs config {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        parts = [
            f"missing {missing[:5]}" if missing else "",
            f"unexpected {unexpected[:5]}" if unexpected else "",
            f"shape mismatch {mismatched[:5]}" if mismatched else "",
        ]
        raise FlashRNAError(
            f"{weights} does not match {directory / CONFIG_FILE}: "
            + "; ".join(p for p in parts if p)
        )
    model.load_state_dict(state)
    return model.to(resolve_device(device))


def load_models(directories: Sequence[str | Path], device="cpu", **overrides: Any) -> nn.Module:
    """One model, or an :class:`Ensemble` of several model directories."""
    models = [load_model(d, device=device, **overrides) for d in directories]
    return models[0] if len(models) == 1 else Ensemble(models)


# --------------------------------------------------------------------------------------------
# model-info
# --------------------------------------------------------------------------------------------

BLOCKS = (
    "trunk.stem",
    "trunk.tower",
    "trunk.unet_encoder",
    "trunk.transformer",
    "trunk.decoders",
    "shared_head",
    "heads",
)


def parameter_counts(model: FlashRNA) -> dict[str, int]:
    """Trainable parameters per top-level block (see ``BLOCKS``) and per head."""
    counts: dict[str, int] = {}
    for block in BLOCKS:
        module = model.get_submodule(block)
        if block == "heads":
            for name, head in module.items():
                counts[f"heads.{name}"] = sum(p.numel() for p in head.parameters())
        else:
            counts[block] = sum(p.numel() for p in module.parameters())
    return counts


def flop_counts(config: ModelConfig, length: int, head: str | None = None) -> dict[str, int]:
    """Forward FLOPs per example (matrix multiplies, convolutions and attention, counted by
    PyTorch's FlopCounterMode on the meta device: nothing is computed) per block, for one head
    (the first by default)."""
    from torch.utils.flop_counter import FlopCounterMode

    head = head or next(iter(config.heads))
    with torch.device("meta"):
        model = FlashRNA(config.replace(attention_backend="sdpa")).eval()
        sequence = torch.zeros(1, length, dtype=torch.long)
        with FlopCounterMode(display=False) as counter:
            model(sequence, head)
    per_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    out = {}
    for block in BLOCKS:
        key = f"heads.{head}" if block == "heads" else block
        name = "FlashRNA." + key
        if name in per_module:
            out[key] = int(per_module[name])
        else:  # a ModuleList has no entry of its own: add its direct children
            children = [
                k for k in per_module if k.startswith(name + ".") and "." not in k[len(name) + 1 :]
            ]
            out[key] = int(sum(per_module[k] for k in children))
    out["total"] = int(counter.get_total_flops())
    return out


def register_model_info(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset", default="paper", choices=sorted(PRESETS), help="architecture preset"
    )
    parser.add_argument("--model", help="a model directory instead of a preset")
    parser.add_argument(
        "--length",
        type=int,
        default=524_288,
        help="input length in bp for the FLOP count (a multiple of 128)",
    )
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    parser.set_defaults(run=_run_model_info)


def _run_model_info(args: argparse.Namespace) -> None:
    if args.length % TOKEN_SIZE:
        raise FlashRNAError(f"--length {args.length} is not a multiple of {TOKEN_SIZE}")
    config = read_model_config(args.model)[0] if args.model else PRESETS[args.preset]
    with torch.device("meta"):
        params = parameter_counts(FlashRNA(config))
    flops = flop_counts(config, args.length)
    total = sum(params.values())
    source = args.model or f"preset '{args.preset}'"
    print(f"{source}: {total:,} parameters; heads {config.heads}")
    print(f"{'block':<22}{'parameters':>16}{'GFLOP/example':>16}")
    for name, count in params.items():
        gflop = flops.get(name)
        print(f"{name:<22}{count:>16,}{'' if gflop is None else f'{gflop / 1e9:>16.1f}'}")
    print(
        f"{'total':<22}{total:>16,}{flops['total'] / 1e9:>16.1f}   "
        f"(forward, {args.length:,} bp; forward+backward is about 3x)"
    )
    if args.json:
        write_json(
            args.json,
            {
                "source": source,
                "length": args.length,
                "parameters": params,
                "total_parameters": total,
                "forward_flops": flops,
                "config": config.to_dict(),
            },
        )
