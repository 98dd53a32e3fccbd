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
``auto`` (flash-attn when importable and the tensors are CUDA bf16/fp16, else sdpa). flash-attn is
imported when the model is built, never inside the forward pass, so ``torch.compile`` traces the
whole forward as one graph.

Precision (:func:`autocast_dtype`): inference and training run under bf16 autocast on CUDA and on
CPUs with native bf16 arithmetic (AVX512-BF16 or AMX), fp32 elsewhere (a CPU without them
emulates bf16 tens of times slower than fp32). The track heads always compute in fp32; GroupNorm
keeps bf16 activations in bf16 (statistics in fp32) instead of autocast's fp32 copy.

Memory. Max-pooling keeps one bit-per-element mask (as bytes) for its backward, not int64
indices. ``gradient_checkpointing`` recomputes transformer layers and ``checkpoint_conv_blocks``
the convolution blocks in the backward pass. Without gradients, an input longer than
2 x ``inference_chunk`` bp runs the convolution stages in pieces of ``inference_chunk`` positions
(each stage at its own resolution) with halos for the kernels and GroupNorm statistics over the
whole length (a first pass), so memory grows slowly with the input and no tensor grows with it
except the transformer's (L/128 tokens) and the output; the result equals the one-piece forward
within rounding.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flashrna.genome import Genome, encode_sequence
from flashrna.utils import FlashRNAError, atomic_directory, read_json, resolve_device, write_json

BIN_SIZE = 32  # bp per output bin
TOKEN_SIZE = 128  # bp per transformer token; input lengths must be a multiple of it
ATTENTION_BACKENDS = ("auto", "sdpa", "flash-attn", "math")
PRECISIONS = ("auto", "bf16", "fp32")
HALF_DTYPES = (torch.float16, torch.bfloat16)
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
# What a model directory may hold: our architecture, or Borzoi/Flashzoi (run by borzoi-pytorch).
ARCHITECTURES = ("flashrna", "borzoi", "flashzoi")
VALUE_SPACES = ("squashed", "counts")


# --------------------------------------------------------------------------------------------
# Config and presets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    """Every architectural hyperparameter; the defaults are the ``paper`` preset: the public
    FlashRNA model's (deepgenomics/flashrna ``flash_rna/models/flashrna.py``)."""

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
    gradient_checkpointing: bool = False  # recompute transformer layers in the backward pass
    checkpoint_conv_blocks: bool = False  # ... and the stem, tower, encoder and decoder blocks
    # No-grad inputs longer than 2x this many bp run the conv stages in pieces of this many
    # positions (module docstring); 0 never does.
    inference_chunk: int = 32_768

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
        if self.inference_chunk < 0 or self.inference_chunk % 2:
            problems.append(f"inference_chunk {self.inference_chunk} must be even and >= 0")
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
    # The architecture of the public FlashRNA model (deepgenomics/flashrna
    # flash_rna/models/flashrna.py); with the Borzoi heads (2,449 human, 828 mouse tracks) it has
    # 202,629,069 parameters by our own count (tests/test_model.py).
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
# Precision
# --------------------------------------------------------------------------------------------


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic (AVX512-BF16 or AMX tiles). Elsewhere PyTorch
    emulates bf16 convolutions and matrix products tens of times slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast_dtype(precision: str, device: str | torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``, None meaning fp32. ``auto``: bf16 on
    CUDA devices that have it and on CPUs with native bf16 (:func:`cpu_has_native_bf16`), else
    fp32; ``bf16`` and ``fp32`` force one."""
    if precision not in PRECISIONS:
        raise FlashRNAError(f"unknown precision '{precision}'; one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None


def enable_tf32() -> None:
    """Let CUDA fp32 matrix products and convolutions use TF32 tensor cores (fp32 range, 10-bit
    mantissa): the fp32 track heads and any fp32 run. A process-wide setting."""
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def gelu(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


class _MaxPool2(torch.autograd.Function):
    """Max over non-overlapping pairs of the last axis, saving for the backward pass which
    element of each pair won (one byte per output) instead of int64 indices."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        first, second = x[..., 0::2], x[..., 1::2]
        second_wins = second > first  # ties go to the first, as in F.max_pool1d
        ctx.save_for_backward(second_wins)
        return torch.maximum(first, second)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (second_wins,) = ctx.saved_tensors
        zero = grad.new_zeros(())
        pair = (torch.where(second_wins, zero, grad), torch.where(second_wins, grad, zero))
        return torch.stack(pair, dim=-1).flatten(-2)


def max_pool2(x: Tensor) -> Tensor:
    """``F.max_pool1d(x, 2)`` without indices. (B, C, 2n) -> (B, C, n)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _MaxPool2.apply(x)
    return torch.maximum(x[..., 0::2], x[..., 1::2])


def group_norm(x: Tensor, norm: nn.GroupNorm) -> Tensor:
    """``norm(x)``, but a bf16/fp16 ``x`` under autocast stays in its dtype (the kernel
    accumulates its statistics in fp32) instead of autocast's fp32 copy, which would double the
    activation memory and traffic of every convolution block. (B, C, L) -> (B, C, L)."""
    autocast = x.device.type != "meta" and torch.is_autocast_enabled(x.device.type)
    if autocast and x.dtype in HALF_DTYPES:
        with torch.autocast(x.device.type, enabled=False):
            weight, bias = norm.weight.to(x.dtype), norm.bias.to(x.dtype)
            return F.group_norm(x, norm.num_groups, weight, bias, norm.eps)
    return norm(x)


class ConvBlock(nn.Module):
    """GroupNorm -> GELU(tanh) -> Conv1d ('same' padding, no bias); optionally separable
    (depthwise k, then pointwise). (B, C_in, L) -> (B, C_out, L)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, groups: int, separable=False):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c_in)
        self.kernel_size = kernel_size
        if separable:
            self.conv = nn.Sequential(
                nn.Conv1d(c_in, c_in, kernel_size, padding="same", groups=c_in, bias=False),
                nn.Conv1d(c_in, c_out, 1, bias=False),
            )
        else:
            self.conv = nn.Conv1d(c_in, c_out, kernel_size, padding="same", bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(gelu(group_norm(x, self.norm)))

    def conv_valid(self, x: Tensor) -> Tensor:
        """The convolution without padding: (B, C_in, n + kernel_size - 1) -> (B, C_out, n)."""
        if isinstance(self.conv, nn.Sequential):
            depthwise, pointwise = self.conv
            return pointwise(F.conv1d(x, depthwise.weight, groups=depthwise.groups))
        return F.conv1d(x, self.conv.weight)


class DownBlock(nn.Module):
    """MaxPool(2) then a ConvBlock. (B, C_in, L) -> (B, C_out, L/2)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, groups: int):
        super().__init__()
        self.block = ConvBlock(c_in, c_out, kernel_size, groups)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(max_pool2(x))


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


_ROTARY_CACHE: dict[tuple, tuple[Tensor, Tensor]] = {}
_ROTARY_CACHE_SIZE = 8


def cached_rotary_tables(
    length: int, rope_dims: int, base: float, device: torch.device
) -> tuple[Tensor, Tensor]:
    """:func:`rotary_tables`, computed once per (length, dims, base, device) and kept (the few
    most recent); traced as computation under ``torch.compile``."""
    if torch.compiler.is_compiling():
        return rotary_tables(length, rope_dims, base, device)
    key = (length, rope_dims, float(base), torch.device(device))
    tables = _ROTARY_CACHE.get(key)
    if tables is None:
        if len(_ROTARY_CACHE) >= _ROTARY_CACHE_SIZE:
            _ROTARY_CACHE.pop(next(iter(_ROTARY_CACHE)))
        with torch.inference_mode(False), torch.no_grad():  # usable by any later forward
            tables = _ROTARY_CACHE[key] = rotary_tables(length, rope_dims, base, device)
    return tables


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the first 2*cos.shape[-1] dims of each head, half-split (GPT-NeoX) style:
    dims i and i + r/2 form a pair rotated by position * base^(-2i/r).

    x (B, T, H, D); cos, sin (T, r/2) -> (B, T, H, D) in x's dtype (computed in fp32)."""
    half = cos.shape[-1]
    rotated, rest = x[..., : 2 * half].float(), x[..., 2 * half :]
    x1, x2 = rotated[..., :half], rotated[..., half:]
    cos, sin = cos[:, None, :], sin[:, None, :]
    out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)
    return torch.cat((out, rest), dim=-1) if rest.shape[-1] else out


@functools.cache
def flash_attn_function() -> Callable | None:
    """flash-attn's ``flash_attn_func``, or None when the package is not importable."""
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        return None
    return flash_attn_func


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    dropout: float,
    backend: str = "auto",
    flash_attn_func: Callable | None = None,
) -> Tensor:
    """Softmax attention over all positions (no mask).

    q (B, T, H, D); k, v (B, T, Hkv, D) with H a multiple of Hkv (grouped-query attention:
    query head h reads key/value head h // (H/Hkv)). Returns (B, T, H, D).
    ``flash_attn_func``: flash-attn's function when the caller resolved it already (a model does
    so when it is built); else it is looked up here."""
    grouped = q.shape[2] != k.shape[2]
    if backend in ("auto", "flash-attn") and flash_attn_func is None:
        flash_attn_func = flash_attn_function()
    if backend == "auto":
        usable = q.is_cuda and q.dtype in HALF_DTYPES
        backend = "flash-attn" if usable and flash_attn_func is not None else "sdpa"
    if backend == "flash-attn":
        if flash_attn_func is None:
            raise FlashRNAError(
                "attention backend 'flash-attn' asked for, but flash_attn is not "
                "installed (pip install 'flashrna[flash]')"
            )
        if not q.is_cuda or q.dtype not in HALF_DTYPES:
            raise FlashRNAError(
                f"attention backend 'flash-attn' needs CUDA fp16/bf16 tensors, "
                f"got {q.device.type} {q.dtype}; use 'sdpa' or 'auto'"
            )
        return flash_attn_func(q, k, v, dropout_p=dropout)
    if backend == "sdpa" and q.device.type == "meta":
        # FLOP and memory estimates: what the GPU's FlashAttention kernel computes and saves for
        # the backward pass (the meta device would otherwise take the math path's T x T
        # matrices).
        if grouped:
            group = q.shape[2] // k.shape[2]
            k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
        out = torch.ops.aten._scaled_dot_product_flash_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout
        )[0]
        return out.transpose(1, 2)
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
        # Resolved once here: an import inside the forward pass would break torch.compile's
        # graph at every layer.
        uses_flash = c.attention_backend in ("auto", "flash-attn")
        self.flash_attn_func = flash_attn_function() if uses_flash else None

    def forward(self, x: Tensor) -> Tensor:
        c = self.config
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).view(batch, tokens, c.num_heads + 2 * c.num_kv_heads, c.head_dim)
        qk, v = qkv.split((c.num_heads + c.num_kv_heads, c.num_kv_heads), dim=2)
        if c.rope_dims:  # queries and keys rotated in one pass
            cos, sin = cached_rotary_tables(tokens, c.rope_dims, c.rope_base, x.device)
            qk = apply_rotary(qk, cos, sin)
        q, k = qk.split((c.num_heads, c.num_kv_heads), dim=2)
        dropout = c.attention_dropout if self.training else 0.0
        backend = c.attention_backend
        if backend == "auto":
            usable = self.flash_attn_func is not None and x.is_cuda and q.dtype in HALF_DTYPES
            backend = "flash-attn" if usable else "sdpa"
        out = attention(q, k, v.contiguous(), dropout, backend, self.flash_attn_func)
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


class Pieces:
    """A (B, C, n) activation kept as consecutive pieces along its last axis, so that no single
    tensor grows with the input length. ``pieces`` (B, C, n_i), in order."""

    def __init__(self, pieces: Sequence[Tensor]):
        self.pieces = list(pieces)
        self.starts = list(itertools.accumulate([p.shape[-1] for p in self.pieces], initial=0))

    @property
    def length(self) -> int:
        return self.starts[-1]

    def split_range(self, start: int, stop: int) -> list[Tensor]:
        """Views of the pieces that cover positions start..stop-1 (0 <= start < stop <= n)."""
        parts = []
        index = 0
        while self.starts[index + 1] <= start:
            index += 1
        while start < stop:
            offset = start - self.starts[index]
            take = min(stop, self.starts[index + 1]) - start
            parts.append(self.pieces[index][..., offset : offset + take])
            start += take
            index += 1
        return parts

    def slice(self, start: int, stop: int) -> Tensor:
        """Positions start..stop-1 as one tensor (B, C, stop - start)."""
        parts = self.split_range(start, stop)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def group_statistics(
    source: Callable[[int, int], Tensor], length: int, chunk: int, norm: nn.GroupNorm
) -> tuple[Tensor, Tensor]:
    """Mean and 1/sqrt(var + eps) (biased variance, as ``norm`` computes them), both (B, groups)
    fp32, of an input (B, C, length) that ``source(start, stop)`` gives piecewise, ``chunk``
    positions at a time: each piece's mean and variance in fp32, combined in float64 (Chan et
    al.'s pairwise update)."""
    count, mean, m2 = 0, None, None
    for start in range(0, length, chunk):
        piece = source(start, min(start + chunk, length))
        grouped = piece.float().reshape(piece.shape[0], norm.num_groups, -1)
        var, mu = torch.var_mean(grouped, dim=-1, correction=0)
        n, mu, var = grouped.shape[-1], mu.double(), var.double()
        if mean is None:
            count, mean, m2 = n, mu, var * n
            continue
        delta = mu - mean
        mean = mean + delta * (n / (count + n))
        m2 = m2 + var * n + delta.square() * (count * n / (count + n))
        count += n
    return mean.float(), torch.rsqrt(m2 / count + norm.eps).float()


def normalize_gelu(x: Tensor, norm: nn.GroupNorm, mean: Tensor, rstd: Tensor) -> Tensor:
    """GELU(GroupNorm(x)) with the statistics ``mean``, ``rstd`` (B, groups) of a longer
    tensor that ``x`` (B, C, n) is a piece of; in x's dtype."""
    per_group = x.shape[1] // norm.num_groups
    scale = rstd.repeat_interleave(per_group, dim=1) * norm.weight
    shift = norm.bias - mean.repeat_interleave(per_group, dim=1) * scale
    return gelu(torch.addcmul(shift[..., None].to(x.dtype), x, scale[..., None].to(x.dtype)))


def conv_block_in_pieces(
    block: ConvBlock, source: Callable[[int, int], Tensor], length: int, chunk: int
) -> Pieces:
    """``block(x)`` in pieces of ``chunk`` positions, for an input x (B, C_in, length) that
    ``source(start, stop)`` returns piecewise (positions start..stop-1). Two passes: GroupNorm
    statistics over the whole length, then each piece with the kernel's halo (the zero 'same'
    padding only at the ends of the whole length)."""
    mean, rstd = group_statistics(source, length, chunk, block.norm)
    left, right = (block.kernel_size - 1) // 2, block.kernel_size // 2
    pieces = []
    for a in range(0, length, chunk):
        b = min(a + chunk, length)
        low, high = max(a - left, 0), min(b + right, length)
        z = normalize_gelu(source(low, high), block.norm, mean, rstd)
        pieces.append(block.conv_valid(F.pad(z, (low - (a - left), b + right - high))))
    return Pieces(pieces)


def down_block_in_pieces(
    block: DownBlock, source: Callable[[int, int], Tensor], length: int, chunk: int
) -> Pieces:
    """``block(x)`` in pieces for x (B, C_in, length) given by ``source`` as above."""
    pooled = lambda start, stop: max_pool2(source(2 * start, 2 * stop))  # noqa: E731
    return conv_block_in_pieces(block.block, pooled, length // 2, chunk)


def up_block_in_pieces(block: UpBlock, x: Pieces, skip: Pieces, chunk: int) -> Pieces:
    """``block(x, skip)`` in pieces; the separable block's input is kept in pieces too."""
    merged = _merged_in_pieces(block, x, skip, chunk)
    return conv_block_in_pieces(block.separable, merged.slice, merged.length, chunk)


def _merged_in_pieces(block: UpBlock, x: Pieces, skip: Pieces, chunk: int) -> Pieces:
    """The separable block's input, upsampled pointwise(x) + skip block(skip), in pieces."""
    pointwise = conv_block_in_pieces(block.pointwise, x.slice, x.length, chunk)
    skipped = conv_block_in_pieces(block.skip, skip.slice, skip.length, chunk)
    return Pieces(
        [
            F.interpolate(pointwise.slice(a // 2, b // 2), scale_factor=2, mode="nearest") + part
            for (a, b), part in zip(itertools.pairwise(skipped.starts), skipped.pieces, strict=True)
        ]
    )


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
        pieces = self.forward_pieces(sequence)
        return pieces.slice(0, pieces.length).transpose(1, 2)

    def forward_pieces(self, sequence: Tensor) -> Pieces:
        """The embeddings channels-first, (B, dim, L/32), in one piece or, for a long input
        without gradients, in several (module docstring)."""
        length = sequence.shape[1]
        if length % TOKEN_SIZE:
            raise FlashRNAError(f"input length {length} bp is not a multiple of {TOKEN_SIZE}")
        if not sequence.is_floating_point() and self.runs_in_pieces(length):
            return self._forward_in_pieces(sequence)
        return Pieces([self._forward(sequence)])

    def runs_in_pieces(self, length: int) -> bool:
        chunk = self.config.inference_chunk
        return bool(chunk) and length > 2 * chunk and not torch.is_grad_enabled()

    def _one_hot(self, sequence: Tensor) -> Tensor:
        return one_hot_channels(sequence, self.one_hot).to(self.stem.weight.dtype)

    def _run(self, block: nn.Module, *inputs: Tensor) -> Tensor:
        """A convolution block, recomputed in the backward pass if so configured."""
        if self.config.checkpoint_conv_blocks and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block, *inputs, use_reentrant=False)
        return block(*inputs)

    def _transform(self, x: Tensor) -> Tensor:
        """The transformer layers on channels-first tokens. (B, dim, T) -> (B, dim, T)."""
        x = x.transpose(1, 2)
        for block in self.transformer:
            if self.config.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x.transpose(1, 2)

    def _forward(self, sequence: Tensor) -> Tensor:
        """(B, L) -> (B, dim, L/32) in one piece."""
        x = self.stem(self._one_hot(sequence))
        for block in self.tower:
            x = self._run(block, x)
        skip_32 = x
        skip_64 = x = self._run(self.unet_encoder, x)
        x = self._transform(max_pool2(x))
        x = self._run(self.decoders[0], x, skip_64)
        return self._run(self.decoders[1], x, skip_32)

    def _forward_in_pieces(self, sequence: Tensor) -> Pieces:
        """:meth:`_forward` with the convolution stages in pieces of ``inference_chunk``."""
        chunk = self.config.inference_chunk
        kernel = self.stem.kernel_size[0]
        left = (kernel - 1) // 2
        # N (index 4) is an all-zero one-hot row: padding with it is the stem's zero padding.
        padded = F.pad(sequence, (left, kernel - 1 - left), value=4)

        def stem(start: int, stop: int) -> Tensor:
            window = self._one_hot(padded[:, start : stop + kernel - 1])
            return F.conv1d(window, self.stem.weight)

        x = down_block_in_pieces(self.tower[0], stem, sequence.shape[-1], chunk)
        for block in self.tower[1:]:
            x = down_block_in_pieces(block, x.slice, x.length, chunk)
        skip_32 = x
        skip_64 = x = down_block_in_pieces(self.unet_encoder, x.slice, x.length, chunk)
        tokens = self._transform(torch.cat([max_pool2(p) for p in x.pieces], dim=-1))
        x = up_block_in_pieces(self.decoders[0], Pieces([tokens]), skip_64, chunk)
        return up_block_in_pieces(self.decoders[1], x, skip_32, chunk)


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
        embeddings = self.trunk.forward_pieces(sequence)
        bins = embeddings.length
        _check_crop(bins, crop_bins)
        # Per piece, so that a long input's head activations stay as small as its pieces.
        parts = [
            self.head(part.transpose(1, 2), head)
            for part in embeddings.split_range(crop_bins, bins - crop_bins)
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

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
    _check_crop(x.shape[1], crop_bins)
    return x[:, crop_bins:-crop_bins]


def _check_crop(bins: int, crop_bins: int) -> None:
    if crop_bins and not 0 < 2 * crop_bins < bins:
        raise FlashRNAError(f"cannot crop {crop_bins} bins from each end of {bins} bins")


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


_INTERVAL = re.compile(r"^(?P<chrom>[^:\s]+):(?P<start>[\d,]+)-(?P<end>[\d,]+)$")


def as_sequences(sequences: Any, genome: Genome | str | None = None) -> Tensor:
    """(N, L) base indices from any of: a tensor or array of base indices, (N, L) or (L,); DNA
    text (``"ACGT..."``, case-insensitive, other letters become N); a genomic interval, as text
    ``"chr1:1,001-17,384"`` (1-based, both ends included, as genome browsers show it) or a
    tuple ``("chr1", 1000, 17384)`` (0-based, end excluded, as BED), read from ``genome`` (a
    :class:`~flashrna.genome.Genome` or a FASTA path; N beyond the contig ends); or a list of
    texts or intervals of one length."""
    if isinstance(sequences, np.ndarray | Tensor):
        out = torch.as_tensor(
            np.asarray(sequences) if isinstance(sequences, np.ndarray) else sequences
        )
        return out[None] if out.ndim == 1 else out
    items = [sequences] if isinstance(sequences, str | tuple) else list(sequences)
    if genome is not None and not isinstance(genome, Genome):
        genome = Genome(genome)
    rows = []
    for item in items:
        match = _INTERVAL.match(item) if isinstance(item, str) else None
        if match is None and isinstance(item, str):
            rows.append(encode_sequence(item))
            continue
        if match is not None:
            chrom = match["chrom"]
            start, end = (int(match[k].replace(",", "")) for k in ("start", "end"))
            start -= 1
        elif isinstance(item, tuple) and len(item) == 3:
            chrom, start, end = item[0], int(item[1]), int(item[2])
        else:
            raise FlashRNAError(f"{item!r:.60}: not DNA text, an interval or base indices")
        if genome is None:
            raise FlashRNAError(f"interval {item!r} needs a genome (genome=FASTA path)")
        rows.append(genome.fetch(str(chrom), start, end))
    if len({len(row) for row in rows}) != 1:
        raise FlashRNAError(f"sequences of different lengths {sorted({len(r) for r in rows})}")
    return torch.from_numpy(np.stack(rows))


@torch.no_grad()
def predict(
    model: nn.Module,
    sequences: Any,
    head: str = "human",
    *,
    genome: Genome | str | None = None,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    reverse_complement_average: bool = True,
    crop_bins: int = 0,
    precision: str = "auto",
    progress: bool = False,
) -> Tensor:
    """Predict tracks for (N, L) base indices (or DNA text, or genomic intervals read from
    ``genome``: see :func:`as_sequences`), in batches, in eval mode.

    With ``reverse_complement_average`` each batch is run forward and reverse-complemented in one
    pass and the two predictions averaged in forward coordinates. ``precision`` (``auto``,
    ``bf16``, ``fp32``; :func:`autocast_dtype`): by default the trunk runs under bf16 autocast on
    CUDA and on CPUs with native bf16, in fp32 elsewhere; the track heads stay fp32 (TF32 on
    CUDA). Returns (N, L/32 - 2*crop_bins, tracks) fp32 on the CPU."""
    from tqdm.auto import tqdm

    device = resolve_device(device)
    dtype = autocast_dtype(precision, device)
    if device.type == "cuda":
        enable_tf32()
    sequences = as_sequences(sequences, genome)
    if sequences.ndim != 2:
        raise FlashRNAError(f"expected sequences of shape (N, L), got {tuple(sequences.shape)}")
    was_training = model.training
    model.eval().to(device)
    strand_pair = model.strand_pair(head)
    outputs = []
    starts = range(0, len(sequences), batch_size)
    for start in tqdm(starts, desc="predict", disable=not progress, unit="batch"):
        batch = sequences[start : start + batch_size].to(device, non_blocking=True)
        if reverse_complement_average:
            batch = torch.cat((batch, reverse_complement(batch)))
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
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
    from flashrna.utils import write_safetensors

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
        write_safetensors(tmp / WEIGHTS_FILE, state)  # 0644 under umask 022, like other outputs
    return directory


def model_description(
    input_length: int,
    crop_bins: int,
    genomes: Mapping[str, str | None],
    value_space: str = "squashed",
    architecture: str = "flashrna",
) -> dict[str, Any]:
    """How a model describes itself, for ``config.json``'s ``metadata`` (:func:`save_model`):
    its ``architecture`` (:data:`ARCHITECTURES`), the ``input_length`` in bp it was built for,
    the ``crop_bins`` output bins at each end that its training targets left out, ``bin_size``,
    and per head the genome it predicts for and the ``value_space`` of its track values
    (``squashed``: the Borzoi targets' transform, :mod:`flashrna.tracks`; ``counts``: coverage).
    :func:`read_model_description` reads it back."""
    if architecture not in ARCHITECTURES or value_space not in VALUE_SPACES:
        raise FlashRNAError(
            f"architecture {architecture!r} / value space {value_space!r}: one of "
            f"{ARCHITECTURES} / {VALUE_SPACES}"
        )
    if input_length % TOKEN_SIZE or not 0 <= 2 * crop_bins < input_length // BIN_SIZE:
        raise FlashRNAError(f"input length {input_length} bp with {crop_bins} cropped bins")
    return {
        "architecture": architecture,
        "input_length": int(input_length),
        "crop_bins": int(crop_bins),
        "bin_size": BIN_SIZE,
        "heads": {h: {"genome": g, "value_space": value_space} for h, g in genomes.items()},
    }


def describe_training(datasets: Mapping[str, Any], value_space: str = "squashed") -> dict:
    """:func:`model_description` of a model trained on ``datasets`` ({head: a dataset as
    :class:`flashrna.data.TrackDataset`: ``seq_length``, ``crop0`` (bins at each end outside
    its targets) and ``shards.genome``; a distillation dataset's ``real`` one is used}). The
    input length and crop are the first head's."""
    sets = {head: getattr(data, "real", data) for head, data in datasets.items()}
    first = next(iter(sets.values()))
    genomes = {head: data.shards.genome or None for head, data in sets.items()}
    return model_description(first.seq_length, first.crop0, genomes, value_space)


def _read_stored(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.exists():
        raise FlashRNAError(f"{directory}: not a model directory (no {CONFIG_FILE})")
    stored = read_json(path)
    if stored.get("format_version") != FORMAT_VERSION:
        raise FlashRNAError(
            f"{path}: format_version {stored.get('format_version')!r}, "
            f"this flashrna reads {FORMAT_VERSION}"
        )
    return stored


def read_model_description(directory: str | Path) -> dict[str, Any]:
    """A model directory's :func:`model_description` (and the rest of its metadata); a
    directory written before models described themselves gives architecture ``flashrna``
    and ``None`` for what it does not record."""
    metadata = dict(_read_stored(directory).get("metadata", {}))
    for key in ("input_length", "crop_bins", "bin_size", "heads"):
        metadata.setdefault(key, None)
    metadata.setdefault("architecture", "flashrna")
    return metadata


def check_input_length(
    description: Mapping[str, Any], length: int, name: str, allow: bool = False
) -> None:
    """Refuse ``length`` when the described model was built for another input length (unless
    ``allow``): the error names both lengths."""
    built = description.get("input_length")
    if built is not None and length != built and not allow:
        raise FlashRNAError(
            f"{name} was built for {built:,}-bp inputs, not {length:,} bp; use its own length "
            f"or, to run it on {length:,} bp anyway, --allow-length"
        )


def read_model_config(directory: str | Path) -> tuple[ModelConfig, dict]:
    """The config and metadata stored in a FlashRNA model directory."""
    stored = _read_stored(directory)
    metadata = stored.get("metadata", {})
    architecture = metadata.get("architecture", "flashrna")
    if architecture != "flashrna":
        raise FlashRNAError(
            f"{directory} holds a {architecture} model (run through borzoi-pytorch), not a "
            f"FlashRNA one; this needs a FlashRNA model"
        )
    return ModelConfig.from_dict(stored["model"], str(Path(directory) / CONFIG_FILE)), metadata


def state_mismatch(expected: Mapping[str, torch.Size], state: Mapping[str, Tensor]) -> str:
    """What keeps ``state`` from loading where ``expected`` (name -> shape) is the model's:
    missing, unexpected and misshapen entries, five of each at most ("" when it fits)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k} stored {tuple(state[k].shape)} vs config {tuple(v)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v
    ]
    parts = [
        f"missing {missing[:5]}" if missing else "",
        f"unexpected {unexpected[:5]}" if unexpected else "",
        f"shape mismatch {mismatched[:5]}" if mismatched else "",
    ]
    return "; ".join(p for p in parts if p)


def load_model(
    directory: str | Path,
    expected_config: ModelConfig | None = None,
    device: str | torch.device | None = "cpu",
    **overrides: Any,
) -> FlashRNA:
    """Load a model directory written by :func:`save_model` (or ``flashrna import-model``), in
    eval mode (call ``.train()`` to train it).

    ``overrides`` may change run-time settings only (attention_backend, checkpointing,
    inference_chunk, dropouts). With ``expected_config`` every other field must match,
    else a clear error names the differing fields. A directory holding Borzoi or Flashzoi
    (``import-model`` of a borzoi-pytorch model) loads through borzoi-pytorch
    (:func:`flashrna.zoo.borzoi.load_borzoi_directory`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    if read_model_description(directory)["architecture"] != "flashrna":
        if overrides or expected_config is not None:
            raise FlashRNAError(f"{directory}: a Borzoi/Flashzoi model takes no config overrides")
        from flashrna.zoo.borzoi import load_borzoi_directory  # the zoo builds on this module

        return load_borzoi_directory(directory, device)
    config, _ = read_model_config(directory)
    runtime = {
        "attention_backend",
        "gradient_checkpointing",
        "checkpoint_conv_blocks",
        "inference_chunk",
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
    problems = state_mismatch({k: v.shape for k, v in model.state_dict().items()}, state)
    if problems:
        raise FlashRNAError(f"{weights} does not match {directory / CONFIG_FILE}: {problems}")
    model.load_state_dict(state)
    return model.to(resolve_device(device)).eval()


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


# Bytes per parameter of a training step besides activations: fp32 weights, fp32 gradients,
# AdamW's two fp32 moments, and autocast's bf16 copies of the weights (kept for the backward).
TRAINING_BYTES_PER_PARAMETER = 4 + 4 + 8 + 2
# Activations x this: the backward pass's transient gradients of the largest activations and the
# caching allocator's fragmentation. An estimate (see bench/gpu.md for measured peaks).
ACTIVATION_OVERHEAD = 1.25


def training_activation_bytes(
    config: ModelConfig, length: int, target_bins: int | None = None, *, bf16: bool = True
) -> int:
    """Bytes that autograd keeps for the backward pass of one training example of ``length``
    bp: every tensor that an operation of the training forward (trunk, then the head on the
    ``target_bins`` central bins, all bins if None) saves, counted once per storage on the meta
    device (nothing is computed). bf16 autocast is stood in for by a bf16 trunk (the heads stay
    fp32, as under autocast); attention counts what the FlashAttention kernel saves (q, k, v,
    output, log-sum-exp); a checkpointed block (``gradient_checkpointing``,
    ``checkpoint_conv_blocks``) saves its inputs only. Parameters are not counted."""
    head = next(iter(config.heads))
    with torch.device("meta"):
        model = FlashRNA(config.replace(attention_backend="sdpa")).train()
        if bf16:
            model.trunk.to(torch.bfloat16)
            model.shared_head.to(torch.bfloat16)
        sequence = torch.zeros(1, length, dtype=torch.long)
        parameters = {p.untyped_storage()._cdata for p in model.parameters()}
        saved: dict[int, int] = {}

        def count(tensor: Tensor) -> Tensor:
            storage = tensor.untyped_storage()
            if storage._cdata not in parameters:
                saved[storage._cdata] = max(saved.get(storage._cdata, 0), storage.nbytes())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(count, lambda tensor: tensor):
            embeddings = model.embed(sequence)
            crop = 0 if target_bins is None else (embeddings.shape[1] - target_bins) // 2
            model.head(center_crop(embeddings, crop), head)
    return sum(saved.values())


def training_memory_estimate(
    config: ModelConfig,
    length: int,
    micro_batch: int,
    target_bins: int | None = None,
    *,
    bf16: bool = True,
) -> int:
    """Estimated peak device memory (bytes) of one training step at ``micro_batch`` examples of
    ``length`` bp: ``TRAINING_BYTES_PER_PARAMETER`` per parameter, plus per example
    :func:`training_activation_bytes` and the loss's fp32 copies of prediction, target and
    their logarithms (4 x bins x tracks x 4 bytes), times ``ACTIVATION_OVERHEAD``."""
    fixed, per_example = _training_memory_terms(config, length, target_bins, bf16)
    return fixed + micro_batch * per_example


def _training_memory_terms(
    config: ModelConfig, length: int, target_bins: int | None, bf16: bool
) -> tuple[int, int]:
    """(bytes independent of the batch, bytes per example) of :func:`training_memory_estimate`."""
    with torch.device("meta"):
        parameters = sum(p.numel() for p in FlashRNA(config).parameters())
    loss = 4 * (target_bins or length // BIN_SIZE) * max(config.heads.values()) * 4
    activations = training_activation_bytes(config, length, target_bins, bf16=bf16)
    return parameters * TRAINING_BYTES_PER_PARAMETER, int(
        (activations + loss) * ACTIVATION_OVERHEAD
    )


def choose_micro_batch(
    config: ModelConfig,
    length: int,
    batch_size: int,
    memory_bytes: int,
    target_bins: int | None = None,
    *,
    bf16: bool = True,
    usable_fraction: float = 0.9,
) -> int:
    """The largest divisor of ``batch_size`` whose :func:`training_memory_estimate` fits in
    ``usable_fraction`` of ``memory_bytes`` (a device's total memory): the micro-batch for
    gradient accumulation to reach ``batch_size`` per optimiser step. An error names the
    estimate when not even one example fits."""
    fixed, per_example = _training_memory_terms(config, length, target_bins, bf16)
    budget = usable_fraction * memory_bytes
    fitting = [
        d
        for d in range(1, batch_size + 1)
        if batch_size % d == 0 and fixed + d * per_example <= budget
    ]
    if not fitting:
        raise FlashRNAError(
            f"one training example of {length:,} bp needs about "
            f"{(fixed + per_example) / 2**30:.1f} GiB, more than {usable_fraction:.0%} of "
            f"{memory_bytes / 2**30:.1f} GiB; set gradient_checkpointing and "
            f"checkpoint_conv_blocks"
        )
    return max(fitting)


def register_model_info(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset", default="paper", choices=sorted(PRESETS), help="architecture preset"
    )
    parser.add_argument(
        "--model", help="a model directory or an official checkpoint (.ckpt) instead of a preset"
    )
    parser.add_argument(
        "--length",
        type=int,
        default=524_288,
        help="input length in bp for the FLOP count (a multiple of 128)",
    )
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    parser.set_defaults(run=_run_model_info)


def _run_model_info(args: argparse.Namespace) -> None:
    info = model_info(Path(args.model) if args.model else args.preset, args.length)
    params, flops, total = info["parameters"], info["forward_flops"], info["total_parameters"]
    print(f"{info['source']}: {total:,} parameters; heads {info['config']['heads']}")
    print(f"{'block':<22}{'parameters':>16}{'GFLOP/example':>16}")
    for name, count in params.items():
        gflop = flops.get(name)
        print(f"{name:<22}{count:>16,}{'' if gflop is None else f'{gflop / 1e9:>16.1f}'}")
    print(
        f"{'total':<22}{total:>16,}{flops['total'] / 1e9:>16.1f}   "
        f"(forward, {args.length:,} bp; forward+backward is about 3x)"
    )
    if args.json:
        write_json(args.json, info)


def model_info(model: str | Path | ModelConfig = "paper", length: int = 524_288) -> dict[str, Any]:
    """Parameters per block and forward FLOPs per example of an architecture, counted on the
    meta device (no weights are read or allocated).

    Args:
        model: a preset name (a ``str`` key of :data:`PRESETS`), a :class:`ModelConfig`, or a
            model directory or official checkpoint (``.ckpt``; a :class:`~pathlib.Path`, or a
            ``str`` that names no preset) whose stored configuration is used.
        length: input length in bp of the FLOP count, a multiple of :data:`TOKEN_SIZE`: one
            example of (1, ``length``) base indices -> (1, ``length``/32, tracks) outputs of the
            first head.

    Returns:
        ``source`` (the preset, configuration or model named), ``length``, ``parameters``
        (:func:`parameter_counts`), ``total_parameters``, ``forward_flops`` (:func:`flop_counts`,
        with ``total``) and ``config`` (:meth:`ModelConfig.to_dict`).
    """
    if length % TOKEN_SIZE:
        raise FlashRNAError(f"--length {length} is not a multiple of {TOKEN_SIZE}")
    if isinstance(model, ModelConfig):
        config, source = model, "the given configuration"
    elif isinstance(model, str) and model in PRESETS:
        config, source = PRESETS[model], f"preset '{model}'"
    else:
        from flashrna.zoo import flashrna_directory  # the zoo builds on this module

        config, source = read_model_config(flashrna_directory(model))[0], str(model)
    with torch.device("meta"):
        params = parameter_counts(FlashRNA(config))
    return {
        "source": source,
        "length": length,
        "parameters": params,
        "total_parameters": sum(params.values()),
        "forward_flops": flop_counts(config, length),
        "config": config.to_dict(),
    }
