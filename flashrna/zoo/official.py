"""The published FlashRNA checkpoints (deepgenomics/flashrna) as FlashRNA model directories.

A released checkpoint is a Lightning ``model.ckpt`` (W&B artifacts
``deep-genomics-open-source/FlashRNA/{single-model-rep-1..4,distilled-model}:v0``). It is read by
:mod:`flashrna.zoo.unpickle` without executing pickled code; what it holds, and what it becomes
here (:func:`read_official_checkpoint`):

- ``hyper_parameters.model_config``: the official ``FlashRNA_Config`` (a frozen dataclass) ->
  :class:`~flashrna.model.ModelConfig` (:func:`official_model_config`). The conv tower's channels
  follow the official rule ``128 * round(geomspace(conv_dim_in, conv_dim_out, n + 1) / 128)``;
  ``dim / head_dim`` heads with RoPE over the whole head; ``species`` ``hg38`` / ``mm10`` /
  ``multi-species`` -> heads ``human`` / ``mouse`` / both, sized ``output_dim_human`` /
  ``output_dim_mouse``. A setting this package's model cannot compute (RMSNorm, SwiGLU, ALiBi,
  windowed attention, other activations or norms, another number of conv or U-Net levels) is
  refused with its name; dropout-only differences (training) are logged.
- ``state_dict`` (prefix ``model.``): official module names -> ours (:data:`RENAMES`); the
  official ``unified_head`` (human outputs, then mouse) becomes one output layer per head.
- the config's ``tracks_mapping`` objects (``FlashRNAHumanTracksMapping`` ...; a pandas table
  inside each) -> one :class:`~flashrna.tracks.TrackTable` per head, in the official output order
  (:func:`official_track_table`), with strand pairs, scale, clip_soft, sum_stat and the
  ``gtex_tissue`` column; the hard clip is not in the official tables and is left empty.

The official model and ours compute the same function: the official U-Net decoder upsamples
before its pointwise block, ours after (GroupNorm, GELU and a 1x1 convolution commute with
nearest upsampling); everything else maps one to one.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from flashrna.model import FlashRNA, ModelConfig, state_mismatch
from flashrna.tracks import GTEX_COLUMN, TrackTable
from flashrna.utils import FlashRNAError
from flashrna.zoo.unpickle import StoredTensor, TorchArchive, frame_from_record, record_name

log = logging.getLogger(__name__)

CONFIG_CLASS = "flash_rna.models.flashrna.FlashRNA_Config"
MODEL_CLASS = "flash_rna.models.flashrna.FlashRNA"
SPECIES_HEADS = {"hg38": "human", "mm10": "mouse"}  # official species -> our head
OUTPUT_DIMS = {"human": "output_dim_human", "mouse": "output_dim_mouse"}
WEIGHTS_PREFIX = "model."

# Official module names -> ours (first match wins; then ConvNorm's inner ``norm.norm``).
RENAMES = (
    (r"^conv_tower\.0\.", "trunk.stem."),
    (r"^conv_tower\.1\.conv_tower\.(\d+)\.conv\.", r"trunk.tower.\1.block."),
    (r"^core\.encoders\.0\.conv\.", "trunk.unet_encoder.block."),
    (r"^core\.trunk\.blocks\.(\d+)\.attn\.Wqkv\.", r"trunk.transformer.\1.attention.qkv."),
    (r"^core\.trunk\.blocks\.(\d+)\.attn\.out_proj\.", r"trunk.transformer.\1.attention.out."),
    (r"^core\.trunk\.blocks\.(\d+)\.attn_norm\.", r"trunk.transformer.\1.attention_norm."),
    (r"^core\.trunk\.blocks\.(\d+)\.mlp\.fc_1\.0\.", r"trunk.transformer.\1.mlp_in."),
    (r"^core\.trunk\.blocks\.(\d+)\.mlp\.fc_2\.", r"trunk.transformer.\1.mlp_out."),
    (r"^core\.trunk\.blocks\.(\d+)\.mlp_norm\.", r"trunk.transformer.\1.mlp_norm."),
    (r"^core\.decoders\.(\d+)\.conv_pointwise\.", r"trunk.decoders.\1.pointwise."),
    (r"^core\.decoders\.(\d+)\.conv_skip\.", r"trunk.decoders.\1.skip."),
    (r"^core\.decoders\.(\d+)\.conv_separable\.", r"trunk.decoders.\1.separable."),
    (r"^final_joined_convs\.0\.", "shared_head.0."),
)


@dataclass
class OfficialCheckpoint:
    """What an official checkpoint holds, in this package's terms."""

    path: Path
    official_config: dict[str, Any]  # the FlashRNA_Config fields (tracks mappings left out)
    config: ModelConfig
    tables: dict[str, TrackTable]  # per head, row k = output k
    weights: dict[str, torch.Tensor]  # our parameter names (strand pairs not included)
    info: dict[str, Any] = field(default_factory=dict)  # Lightning version, epoch, step


def read_official_checkpoint(path: str | Path) -> OfficialCheckpoint:
    """Read and translate an official FlashRNA checkpoint (module docstring); every problem
    is a :class:`FlashRNAError` naming the file."""
    path = Path(path)
    checkpoint = TorchArchive(path).load()
    where = str(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise FlashRNAError(f"{where}: not a Lightning checkpoint (no state_dict)")
    hyper = checkpoint.get("hyper_parameters")
    if not isinstance(hyper, dict) or "model_config" not in hyper:
        raise FlashRNAError(
            f"{where}: no hyper_parameters.model_config; not a checkpoint of the official "
            f"FlashRNA code"
        )
    model_class = hyper.get("model_class")
    model_class = record_name(model_class) or model_class
    if model_class not in (None, MODEL_CLASS):
        raise FlashRNAError(f"{where}: model_class is {model_class}, not {MODEL_CLASS}")
    record = hyper["model_config"]
    if record_name(record) != CONFIG_CLASS or not isinstance(record.state, dict):
        raise FlashRNAError(
            f"{where}: model_config is {record_name(record) or type(record).__name__}, "
            f"not {CONFIG_CLASS}"
        )
    fields = dict(record.state)
    mappings = fields.pop("tracks_mapping", None)
    config = official_model_config(fields, where)
    tables = _official_tables(fields, mappings, where)
    for head, table in tables.items():
        if len(table) != config.heads[head]:
            raise FlashRNAError(
                f"{where}: the {head} tracks mapping lists {len(table)} tracks, the config's "
                f"{OUTPUT_DIMS[head]} is {config.heads[head]}"
            )
    weights = official_weights(checkpoint["state_dict"], config, where)
    info = {
        key: checkpoint.get(key)
        for key in ("pytorch-lightning_version", "epoch", "global_step")
        if isinstance(checkpoint.get(key), str | int)
    }
    return OfficialCheckpoint(path, fields, config, tables, weights, info)


def conv_channels(dim_in: int, dim_out: int, layers: int) -> list[int]:
    """The official conv tower's channels: ``128 * round(geomspace(in, out, layers + 1) / 128)``
    (NumPy's round, half to even), input first."""
    return (
        (128 * np.round(np.geomspace(dim_in, dim_out, num=layers + 1) / 128)).astype(int).tolist()
    )


def official_model_config(fields: dict[str, Any], where: str) -> ModelConfig:
    """Our :class:`ModelConfig` for the official ``FlashRNA_Config`` ``fields`` (module
    docstring); a setting our model cannot compute is an error naming it."""
    defaults = {  # FlashRNA_Config defaults (flash_rna @ad9be86) for fields a file may lack
        "species": "multi-species", "transformer_norm": "ln", "use_rope": True,
        "rope_base": 10000.0, "use_alibi": False, "window_size": (-1, -1),
        "mlp_activation": "gelu_tanh", "conv_activation": "gelu_tanh",
        "unet_activation": "gelu_tanh", "conv_norm": "group_32", "unet_norm": "group_32",
        "conv_num_layers": 5, "unet_num_downsampling": 2, "encoder_kernel_size": 5,
        "conv_kernel_size": 5, "decoder_kernel_size": 3, "embedding_conv_kernel_size": 15,
        "expansion_factor": 2, "stem_dropout": 0.0, "unet_dropout": 0.0,
        "prediction_resolution": 32,
    }  # fmt: skip
    f = {**defaults, **fields}
    required = ("dim", "transformer_num_layers", "head_dim", "conv_dim_in", "conv_dim_out")
    missing = [k for k in (*required, "output_hidden_dim") if k not in f]
    if missing:
        raise FlashRNAError(f"{where}: model_config lacks {', '.join(missing)}")
    problems = []
    for key, supported in (
        ("transformer_norm", "ln"),
        ("use_alibi", False),
        ("mlp_activation", "gelu_tanh"),
        ("conv_activation", "gelu_tanh"),
        ("unet_activation", "gelu_tanh"),
        ("conv_num_layers", 5),
        ("unet_num_downsampling", 2),
        ("prediction_resolution", 32),
    ):
        if f[key] != supported:
            problems.append(f"{key}={f[key]!r} (supported: {supported!r})")
    if tuple(f["window_size"]) != (-1, -1):
        problems.append(f"window_size={tuple(f['window_size'])} (supported: full attention)")
    if f["encoder_kernel_size"] != f["conv_kernel_size"]:
        problems.append("encoder_kernel_size differs from conv_kernel_size")
    norms = {re.fullmatch(r"group_(\d+)", str(f[k])) for k in ("conv_norm", "unet_norm")}
    if None in norms or len({m[1] for m in norms}) != 1:
        problems.append(f"conv_norm={f['conv_norm']!r}, unet_norm={f['unet_norm']!r} (one group_N)")
    if f["dim"] % f["head_dim"]:
        problems.append(f"dim {f['dim']} is not a multiple of head_dim {f['head_dim']}")
    channels = conv_channels(f["conv_dim_in"], f["conv_dim_out"], f["conv_num_layers"])
    if channels[0] != f["conv_dim_in"]:
        problems.append(f"conv_dim_in {f['conv_dim_in']} is not a multiple of 128")
    if problems:
        raise FlashRNAError(
            f"{where}: this FlashRNA_Config has settings this package's model does not "
            f"compute: {'; '.join(problems)}"
        )
    for key in ("stem_dropout", "unet_dropout"):
        if f[key]:
            log.warning("%s: %s=%s is not kept (no dropout in our conv blocks; inference is "
                        "the same)", where, key, f[key])  # fmt: skip
    if f.get("post_attn_dropout", 0.3) != f.get("post_mlp_dropout", 0.3):
        log.warning("%s: post_attn_dropout differs from post_mlp_dropout; both become %s",
                    where, f.get("post_mlp_dropout"))  # fmt: skip
    heads = _heads(f, where)
    num_heads = f["dim"] // f["head_dim"]
    return ModelConfig(
        stem_channels=f["conv_dim_in"],
        stem_kernel_size=f["embedding_conv_kernel_size"],
        tower_channels=tuple(channels[1:]),
        conv_kernel_size=f["conv_kernel_size"],
        decoder_kernel_size=f["decoder_kernel_size"],
        norm_groups=int(next(iter(norms))[1]),
        dim=f["dim"],
        num_layers=f["transformer_num_layers"],
        num_heads=num_heads,
        num_kv_heads=num_heads,
        head_dim=f["head_dim"],
        rope_dims=f["head_dim"] if f["use_rope"] else 0,
        rope_base=float(f["rope_base"]),
        attention_bias=False,
        mlp_hidden=f["dim"] * f["expansion_factor"],
        attention_dropout=f.get("attention_dropout", 0.2),
        mlp_dropout=f.get("mlp_dropout", 0.3),
        residual_dropout=f.get("post_mlp_dropout", 0.3),
        head_hidden=f["output_hidden_dim"],
        head_dropout=f.get("output_dropout", 0.1),
        heads=heads,
    )


def _heads(fields: dict[str, Any], where: str) -> dict[str, int]:
    """Our heads and their sizes from ``species`` and the output sizes, human first (the
    official ``unified_head`` order)."""
    species = fields["species"]
    if species == "multi-species":
        names = ["human", "mouse"]
    elif species in SPECIES_HEADS:
        names = [SPECIES_HEADS[species]]
    else:
        raise FlashRNAError(f"{where}: species {species!r} is not hg38, mm10 or multi-species")
    heads = {}
    for name in names:
        size = fields.get(OUTPUT_DIMS[name])
        if not isinstance(size, int) or size <= 0:
            raise FlashRNAError(f"{where}: {OUTPUT_DIMS[name]} is {size!r} for species {species}")
        heads[name] = size
    return heads


def _official_tables(fields: dict[str, Any], mappings: Any, where: str) -> dict[str, TrackTable]:
    """One track table per head from the config's tracks-mapping record(s)."""
    if fields["species"] == "multi-species":
        if not isinstance(mappings, dict) or set(mappings) != set(SPECIES_HEADS):
            raise FlashRNAError(f"{where}: a multi-species config needs hg38 and mm10 mappings")
        items = [(SPECIES_HEADS[s], mappings[s]) for s in SPECIES_HEADS]
    else:
        items = [(SPECIES_HEADS[fields["species"]], mappings)]
    tables = {}
    for head, mapping in items:
        name = record_name(mapping)
        if (
            name is None
            or not name.endswith("TracksMapping")
            or not isinstance(mapping.state, dict)
        ):
            raise FlashRNAError(f"{where}: the {head} tracks mapping is {name or type(mapping)}")
        label = f"{where}: {name.rsplit('.', 1)[-1]}"
        frame = frame_from_record(mapping.state.get("_metadata_df"), label)
        tables[head] = official_track_table(frame, label)
    return tables


def official_track_table(frame: pd.DataFrame, source: str) -> TrackTable:
    """A :class:`TrackTable` of an official tracks-mapping table (columns ``identifier
    track_type strand strand_pair scale gtex_tissue clip_soft sum_stat description``; its
    ``strand_pair`` already indexes its rows), rows in its order."""
    needed = ["identifier", "strand_pair", "scale", "clip_soft", "sum_stat", "description"]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise FlashRNAError(f"{source}: the tracks table lacks {', '.join(missing)}")
    tissue = frame[GTEX_COLUMN] if GTEX_COLUMN in frame.columns else pd.Series([""] * len(frame))
    table = pd.DataFrame(
        {
            "identifier": frame["identifier"].astype(str).to_numpy(),
            "file": "",
            "clip": np.nan,  # not in the official tables
            "clip_soft": frame["clip_soft"].to_numpy(),
            "scale": frame["scale"].to_numpy(),
            "sum_stat": frame["sum_stat"].astype(str).to_numpy(),
            "strand_pair": frame["strand_pair"].to_numpy(),
            "description": frame["description"].astype(str).to_numpy(),
            "source_index": np.arange(len(frame)),
            GTEX_COLUMN: tissue.where(tissue.notna(), "").astype(str).to_numpy(),
        }
    )
    return TrackTable(table, source=source)


def official_weights(
    state: dict[str, Any], config: ModelConfig, where: str
) -> dict[str, torch.Tensor]:
    """Our state dict (float32, without the strand-pair buffers) from the official
    ``state_dict``: the ``model.`` prefix stripped (all keys when none has it), names mapped by
    :data:`RENAMES`, ``unified_head`` split per head. Missing, unexpected and misshapen
    weights are errors naming them."""
    prefixed = [k for k in state if k.startswith(WEIGHTS_PREFIX)]
    names = {k[len(WEIGHTS_PREFIX) :]: k for k in prefixed} if prefixed else {k: k for k in state}
    ours: dict[str, torch.Tensor] = {}
    unexpected = []
    for name, key in names.items():
        tensor = state[key]
        if not isinstance(tensor, StoredTensor):
            raise FlashRNAError(f"{where}: state_dict entry {key} is not a tensor")
        if name.startswith("unified_head."):
            ours[name] = tensor.load().float()
            continue
        for pattern, replacement in RENAMES:
            renamed, count = re.subn(pattern, replacement, name)
            if count:
                ours[renamed.replace(".norm.norm.", ".norm.")] = tensor.load().float()
                break
        else:
            unexpected.append(key)
    sizes = list(config.heads.values())
    for kind in ("weight", "bias"):
        unified = ours.pop(f"unified_head.{kind}", None)
        if unified is None:
            continue
        if unified.shape[0] != sum(sizes):
            raise FlashRNAError(
                f"{where}: unified_head has {unified.shape[0]} outputs, the heads "
                f"{config.heads} add up to {sum(sizes)}"
            )
        for head, part in zip(config.heads, unified.split(sizes), strict=True):
            ours[f"heads.{head}.linear.{kind}"] = part.contiguous()
    with torch.device("meta"):
        expected = {k: v.shape for k, v in FlashRNA(config).state_dict().items()}
    expected = {k: v for k, v in expected.items() if not k.endswith(".strand_pair")}
    problems = state_mismatch(expected, ours)
    if unexpected:
        problems = f"official weights of no known module {unexpected[:5]}; {problems}"
    if problems:
        raise FlashRNAError(f"{where}: the weights do not match the model_config: {problems}")
    return ours
