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
- import (``flashrna import-model borzoi-0 --out DIR``, :func:`import_borzoi`): a model directory
  whose ``config.json`` holds the borzoi-pytorch config under ``model`` and the architecture
  (``borzoi``/``flashzoi``) in its metadata, beside the weights (``model.safetensors``, as
  published) and the human track table (``targets-human.txt``); :func:`load_borzoi_directory`
  loads it (what :func:`flashrna.model.load_model` does for such a directory). Weights are only
  read from safetensors files, never from pickles (``pytorch_model.bin``).
- Flashzoi's attention is flash-attn's ``MHA`` (CUDA only). :class:`PortableFlashzoiAttention`
  holds the same parameters (``mha.Wqkv``, ``mha.out_proj``) and computes the same function (GQA 8
  query / 4 key-value heads of 192 dims, RoPE on the first 128 dims, base 20,000, NeoX style) with
  :func:`flashrna.model.attention`, so Flashzoi weights run on any device.

:func:`build_borzoi` makes the bare borzoi-pytorch model (a name, a directory, or a config for a
randomly initialised one) and is what ``flashrna bench compare`` builds on.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flashrna.model import (
    BIN_SIZE,
    CONFIG_FILE,
    FORMAT_VERSION,
    TOKEN_SIZE,
    WEIGHTS_FILE,
    apply_rotary,
    attention,
    center_crop,
    model_description,
    one_hot_channels,
    read_model_description,
    rotary_tables,
)
from flashrna.tracks import TrackTable
from flashrna.utils import (
    FlashRNAError,
    atomic_directory,
    file_sha256,
    read_json,
    resolve_device,
    write_json,
)

log = logging.getLogger(__name__)

BORZOI_LENGTH = 524_288  # Borzoi's input in bp
BORZOI_CROP = 5120  # bins cropped at each end: 6,144 of 16,384 bins returned
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


# --------------------------------------------------------------------------------------------
# Import: a borzoi-pytorch model as a model directory
# --------------------------------------------------------------------------------------------


def borzoi_architecture(config: dict[str, Any]) -> str:
    """``flashzoi`` for a config with Flashzoi's attention (``flashed``), else ``borzoi``."""
    return "flashzoi" if config.get("flashed") else "borzoi"


def borzoi_description(config: dict[str, Any]) -> dict[str, Any]:
    """:func:`flashrna.model.model_description` of a borzoi-pytorch config: 524,288-bp input,
    the crop of its ``bins_to_return`` (none when it returns every bin), the human head (hg38),
    squashed values."""
    returned = int(config.get("bins_to_return", BORZOI_LENGTH // BIN_SIZE - 2 * BORZOI_CROP))
    crop = (BORZOI_LENGTH // BIN_SIZE - returned) // 2 if returned > 0 else 0
    return model_description(
        BORZOI_LENGTH, crop, {"human": "hg38"}, "squashed", borzoi_architecture(config)
    )


def borzoi_files(source: str | Path) -> Path:
    """The local directory of a borzoi-pytorch model: ``source`` itself when it is a directory,
    else a Hugging Face download of its ``config.json`` and safetensors weights (a replicate
    name or a repository; needs internet)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    name = hub_name(str(source))
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=["config.json", "*.safetensors"]))
    except Exception as err:  # offline, unknown repository, ...: one clear message
        raise FlashRNAError(
            f"cannot fetch borzoi-pytorch model '{name}' ({type(err).__name__}: {err}); give a "
            f"local directory with its config.json and model.safetensors instead"
        ) from None


def _borzoi_weights(directory: Path) -> Path:
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        pickled = [p.name for p in directory.glob("*.bin")]
        detail = f" (found {', '.join(pickled)}: pickled weights are not read)" if pickled else ""
        raise FlashRNAError(f"{directory}: no {WEIGHTS_FILE}{detail}")
    return weights


def borzoi_sha256(directory: Path) -> str:
    """One SHA-256 over a borzoi-pytorch directory's config and weights (their hashes)."""
    parts = (file_sha256(directory / CONFIG_FILE), file_sha256(_borzoi_weights(directory)))
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def _borzoi_with_weights(config: dict[str, Any], weights: Path) -> nn.Module:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    model = build_borzoi(config)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise FlashRNAError(f"{weights}: unreadable weights ({err})") from None
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise FlashRNAError(
            f"{weights} does not fit its config: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return model.eval()


def import_borzoi(directory: str | Path, out: str | Path, source: str, sha256: str) -> Path:
    """Write the model directory ``out`` (module docstring) for the borzoi-pytorch model in
    ``directory`` (Hugging Face layout; :func:`borzoi_files`), recording ``source`` (as the
    user named it) and ``sha256`` (of its files). The weights are checked against the config by
    loading them. Returns ``out``."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    config = read_json(config_path)
    if config.get("model_type") != "borzoi":
        raise FlashRNAError(f"{config_path}: model_type {config.get('model_type')!r}, not borzoi")
    weights = _borzoi_weights(directory)
    _borzoi_with_weights(config, weights)
    if config.get("enable_mouse_head"):
        log.warning("%s: the mouse head is not imported (no mouse track table)", source)
    metadata = borzoi_description(config)
    metadata["source"] = {"borzoi_pytorch": source, "sha256": sha256}
    with atomic_directory(out) as tmp:
        write_json(
            tmp / CONFIG_FILE,
            {"format_version": FORMAT_VERSION, "model": config, "metadata": metadata},
        )
        shutil.copyfile(weights, tmp / WEIGHTS_FILE)
        borzoi_track_table().write(tmp / "targets-human.txt")
    return Path(out)


def borzoi_from_directory(directory: str | Path) -> nn.Module:
    """The bare borzoi-pytorch model of an imported directory (see :func:`import_borzoi`)."""
    directory = Path(directory)
    stored = read_json(directory / CONFIG_FILE)
    if read_model_description(directory)["architecture"] not in ("borzoi", "flashzoi"):
        raise FlashRNAError(f"{directory}: not a Borzoi/Flashzoi model directory")
    return _borzoi_with_weights(stored["model"], _borzoi_weights(directory))


def load_borzoi_directory(directory: str | Path, device: Any = "cpu") -> BorzoiTracks:
    """An imported Borzoi/Flashzoi directory as a model with FlashRNA's interface: its human
    head over every track of the directory's ``targets-human.txt``."""
    table = TrackTable.read(Path(directory) / "targets-human.txt")
    return BorzoiTracks(borzoi_from_directory(directory), table).to(resolve_device(device))
