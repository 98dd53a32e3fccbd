"""The FlashRNA model: architecture against the public FlashRNA model, the forward pass against a
plain reference implementation (also in pieces for long inputs, and compiled), attention
backends, RoPE, max-pool, GroupNorm in bf16, precision, memory estimates, reverse-complement
prediction, save/load, self-description, text and interval input, and bf16 against fp32 on a
trained model."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import (
    PLANTED_MOTIF,
    centre_bins,
    fixture_path,
    planted_text,
    reverse_complement_text,
)
from scipy.stats import spearmanr
from torch import nn

from flashrna.cli import main as cli_main
from flashrna.genome import Genome, decode_sequence, encode_sequence
from flashrna.model import (
    PRESETS,
    Ensemble,
    FlashRNA,
    Pieces,
    apply_rotary,
    attention,
    autocast_dtype,
    build_model,
    cached_rotary_tables,
    center_crop,
    check_input_length,
    choose_micro_batch,
    describe_training,
    down_block_in_pieces,
    flop_counts,
    group_norm,
    group_statistics,
    load_model,
    max_pool2,
    model_config,
    model_description,
    model_info,
    parameter_counts,
    predict,
    read_model_description,
    reference_attention,
    reverse_complement,
    rotary_tables,
    save_model,
    take_bins,
    training_activation_bytes,
    training_memory_estimate,
    up_block_in_pieces,
)
from flashrna.predict import predict_windows
from flashrna.utils import FlashRNAError, read_json

# Our own count from the layer sizes of the public FlashRNA model (deepgenomics/flashrna
# flash_rna/models/flashrna.py), with the Borzoi heads.
PAPER_BLOCK_PARAMETERS = {
    "trunk.stem": 30_720,
    "trunk.tower": 18_685_440,
    "trunk.unet_encoder": 9_832_960,
    "trunk.transformer": 151_044_096,
    "trunk.decoders": 13_789_696,
    "shared_head": 2_951_040,
}
PAPER_OUTPUT_PARAMETERS = 6_295_117


def paper_model() -> FlashRNA:
    with torch.device("meta"):
        return FlashRNA(PRESETS["paper"])


def tiny(**overrides) -> FlashRNA:
    torch.manual_seed(0)
    return build_model("tiny", **overrides).eval()


def test_paper_parameter_count_matches_design():
    counts = parameter_counts(paper_model())
    total = sum(counts.values())
    assert abs(total - 202.6e6) / 202.6e6 < 0.005
    for block, expected in PAPER_BLOCK_PARAMETERS.items():
        assert counts[block] == expected, block
    assert counts["heads.human"] + counts["heads.mouse"] == PAPER_OUTPUT_PARAMETERS


def test_paper_layer_shapes():
    model = paper_model()
    trunk = model.trunk
    assert tuple(trunk.stem.weight.shape) == (512, 4, 15) and trunk.stem.bias is None
    channels = [512, 640, 768, 896, 1024, 1280]
    for i, block in enumerate(trunk.tower):
        assert tuple(block.block.conv.weight.shape) == (channels[i + 1], channels[i], 5)
        assert block.block.norm.num_groups == 32
    assert tuple(trunk.unet_encoder.block.conv.weight.shape) == (1536, 1280, 5)
    assert len(trunk.transformer) == 8
    layer = trunk.transformer[0]
    assert tuple(layer.attention.qkv.weight.shape) == (3 * 1536, 1536)
    assert layer.attention.qkv.bias is None and layer.attention.out.bias is None
    assert tuple(layer.mlp_in.weight.shape) == (3072, 1536)
    assert tuple(layer.mlp_out.weight.shape) == (1536, 3072)
    first, second = trunk.decoders
    assert tuple(first.skip.conv.weight.shape) == (1536, 1536, 1)
    assert tuple(second.skip.conv.weight.shape) == (1536, 1280, 1)
    assert tuple(second.separable.conv[0].weight.shape) == (1536, 1, 3)
    assert tuple(model.shared_head[0].weight.shape) == (1920, 1536)
    assert tuple(model.heads["human"].linear.weight.shape) == (2449, 1920)
    assert tuple(model.heads["mouse"].linear.weight.shape) == (828, 1920)
    dropouts = (
        layer.mlp_dropout.p,
        layer.residual_dropout.p,
        model.shared_head[1].p,
        model.config.attention_dropout,
    )
    assert dropouts == (0.3, 0.3, 0.1, 0.2)


def test_flashzoi_attention_variant_shapes():
    with torch.device("meta"):
        model = FlashRNA(PRESETS["flashzoi-attention"])
    attn = model.trunk.transformer[0].attention
    # 8 query heads and 4 key/value heads of 192 dims, with biases.
    assert tuple(attn.qkv.weight.shape) == ((8 + 2 * 4) * 192, 1536)
    assert attn.qkv.bias is not None and attn.out.bias is not None
    assert model.config.rope_dims == 128 and model.config.rope_base == 20_000


def test_tiny_preset_is_small():
    total = sum(p.numel() for p in tiny().parameters())
    assert 100_000 < total < 1_000_000


@pytest.mark.parametrize("length", [128 * 8, 128 * 12, 128 * 40])
@pytest.mark.parametrize("crop", [0, 2])
def test_output_shapes(length, crop):
    model = tiny()
    sequence = torch.randint(0, 5, (2, length))
    with torch.no_grad():
        out = model(sequence, "human", crop_bins=crop)
        embeddings = model.embed(sequence)
    assert out.shape == (2, length // 32 - 2 * crop, 74)
    assert embeddings.shape == (2, length // 32, model.config.dim)
    assert (out >= 0).all()


def test_length_not_multiple_of_128_is_an_error():
    with pytest.raises(FlashRNAError, match="multiple of 128"):
        tiny()(torch.zeros(1, 200, dtype=torch.long))


def test_unknown_head_and_bad_crop_are_errors():
    model = tiny()
    with pytest.raises(FlashRNAError, match="no head 'mouse'"):
        model(torch.zeros(1, 1024, dtype=torch.long), "mouse")
    with pytest.raises(FlashRNAError, match="cannot crop"):
        center_crop(torch.zeros(1, 10, 3), 5)


def test_unknown_config_key_is_an_error():
    with pytest.raises(FlashRNAError, match=r"unknown key.*'num_layer'"):
        model_config("tiny", num_layer=3)
    with pytest.raises(FlashRNAError, match="not divisible by norm_groups"):
        model_config("tiny", dim=100)


def test_n_bases_are_all_zero_one_hot():
    model = tiny()
    one_hot = model.trunk.one_hot[torch.tensor([0, 1, 2, 3, 4])]
    assert torch.equal(
        one_hot,
        torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]]),
    )


# ---------------------------------------------------------------------------------------- RoPE


@pytest.mark.parametrize("rope_dims", [24, 16])
def test_rope_matches_complex_rotation(rope_dims):
    """Half-split RoPE: dims (i, i + r/2) form the complex number z_i, multiplied by
    exp(i * p * base^(-2i/r)) at position p."""
    torch.manual_seed(1)
    x = torch.randn(2, 9, 3, 24, dtype=torch.float64)
    cos, sin = rotary_tables(9, rope_dims, 10_000.0, torch.device("cpu"))
    out = apply_rotary(x, cos, sin)
    half = rope_dims // 2
    z = torch.complex(x[..., :half], x[..., half:rope_dims])
    theta = 10_000.0 ** (-torch.arange(half, dtype=torch.float64) * 2 / rope_dims)
    phase = torch.exp(1j * torch.arange(9, dtype=torch.float64)[:, None] * theta)
    rotated = z * phase[None, :, None, :]
    torch.testing.assert_close(out[..., :half], rotated.real, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[..., half:rope_dims], rotated.imag, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[..., rope_dims:], x[..., rope_dims:])


@pytest.mark.parametrize("rope_dims", [24, 16])
def test_rope_scores_depend_only_on_relative_position(rope_dims):
    torch.manual_seed(2)
    q = torch.randn(1, 12, 2, 24)
    k = torch.randn(1, 12, 2, 24)
    shift = 37
    cos, sin = rotary_tables(12 + shift, rope_dims, 10_000.0, torch.device("cpu"))
    scores = torch.einsum(
        "bthd,bshd->bhts", apply_rotary(q, cos[:12], sin[:12]), apply_rotary(k, cos[:12], sin[:12])
    )
    shifted = torch.einsum(
        "bthd,bshd->bhts",
        apply_rotary(q, cos[shift:], sin[shift:]),
        apply_rotary(k, cos[shift:], sin[shift:]),
    )
    torch.testing.assert_close(scores, shifted, rtol=1e-4, atol=1e-4)
    # ... and they do depend on position: unrotated scores differ.
    plain = torch.einsum("bthd,bshd->bhts", q, k)
    assert not torch.allclose(scores, plain, atol=1e-2)


# ---------------------------------------------------------------------------------- attention


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_sdpa_equals_explicit_softmax(kv_heads):
    torch.manual_seed(3)
    q = torch.randn(2, 33, 4, 16)
    k = torch.randn(2, 33, kv_heads, 16)
    v = torch.randn(2, 33, kv_heads, 16)
    # The reference written out here, independently of reference_attention.
    group = 4 // kv_heads
    expected = torch.empty_like(q)
    for h in range(4):
        scores = q[:, :, h] @ k[:, :, h // group].transpose(1, 2) / math.sqrt(16)
        expected[:, :, h] = scores.softmax(-1) @ v[:, :, h // group]
    for backend in ("sdpa", "math", "auto"):
        out = attention(q, k, v, 0.0, backend)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reference_attention(q, k, v), expected, rtol=1e-5, atol=1e-5)


def test_model_backends_agree():
    sequence = torch.randint(0, 5, (2, 1024))
    outputs = [tiny(attention_backend=b)(sequence) for b in ("sdpa", "math")]
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-5)


def test_forced_flash_attn_on_cpu_is_a_clear_error():
    q = torch.randn(1, 4, 2, 8)
    with pytest.raises(FlashRNAError, match="flash"):
        attention(q, q, q, 0.0, "flash-attn")


# -------------------------------------------------------------------------------- prediction


class BaseCounter(nn.Module):
    """A model that is reverse-complement symmetric by construction: per 32-bp bin it counts
    G+C (unstranded), A and T. Under reverse complement, A counts of the reverse strand are T
    counts of the forward strand read backwards: tracks 1 and 2 are a strand pair."""

    def __init__(self):
        super().__init__()
        self.register_buffer("pairs", torch.tensor([0, 2, 1]))

    def forward(self, sequence, head="human", crop_bins=0):
        bins = sequence.reshape(sequence.shape[0], -1, 32)
        counts = torch.stack(
            [((bins == 1) | (bins == 2)).sum(-1), (bins == 0).sum(-1), (bins == 3).sum(-1)], dim=-1
        ).float()
        return center_crop(counts, crop_bins)

    def strand_pair(self, head="human"):
        return self.pairs


def test_predict_on_a_symmetric_model_is_unchanged_by_rc_averaging():
    sequence = torch.randint(0, 5, (3, 512))
    model = BaseCounter()
    plain = predict(model, sequence, reverse_complement_average=False, batch_size=2)
    averaged = predict(model, sequence, batch_size=2)
    torch.testing.assert_close(plain, averaged)
    # Predicting the reverse complement and mapping back gives the forward prediction.
    reverse = predict(model, reverse_complement(sequence), reverse_complement_average=False)
    torch.testing.assert_close(reverse.flip(1)[..., [0, 2, 1]], plain)


def test_predict_is_the_mean_of_forward_and_mapped_reverse_passes():
    model = tiny()
    pairs = torch.arange(74)
    pairs[:10] = torch.tensor([1, 0, 3, 2, 5, 4, 7, 6, 9, 8])
    model.set_strand_pair("human", pairs)
    sequence = torch.randint(0, 5, (3, 1024))
    with torch.no_grad():
        forward = model(sequence)
        reverse = model(reverse_complement(sequence)).flip(1)[..., pairs]
    expected = (forward + reverse) / 2
    out = predict(model, sequence, batch_size=2)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(forward, reverse, atol=1e-4)  # the two passes really differ
    # RC-averaged prediction is RC-consistent for any model.
    rc_out = predict(model, reverse_complement(sequence), batch_size=2)
    torch.testing.assert_close(rc_out.flip(1)[..., pairs], out, rtol=1e-5, atol=1e-6)


def test_set_strand_pair_rejects_non_involutions():
    with pytest.raises(FlashRNAError, match="involution"):
        tiny().set_strand_pair("human", [1, 2, 0, *range(3, 74)])


def test_reverse_complement_of_indices():
    sequence = torch.tensor([[0, 1, 2, 3, 4, 0]])
    assert reverse_complement(sequence).tolist() == [[3, 4, 0, 1, 2, 3]]


def test_take_bins_matches_slicing():
    x = torch.arange(2 * 10 * 3).reshape(2, 10, 3)
    out = take_bins(x, torch.tensor([1, 4]), 5)
    assert torch.equal(out[0], x[0, 1:6]) and torch.equal(out[1], x[1, 4:9])


def test_ensemble_is_the_mean_of_members():
    members = [tiny(), build_model("tiny").eval(), build_model("tiny").eval()]
    sequence = torch.randint(0, 5, (2, 1024))
    with torch.no_grad():
        expected = torch.stack([m(sequence) for m in members]).mean(0)
        out = Ensemble(members)(sequence)
    torch.testing.assert_close(out, expected)
    assert isinstance(Ensemble(members).members, nn.ModuleList)


# ------------------------------------------------------------------------------ save and load


def test_save_load_round_trip(tmp_path):
    model = tiny()
    model.set_strand_pair("human", [1, 0, *range(2, 74)])
    sequence = torch.randint(0, 5, (2, 1024))
    save_model(model, tmp_path / "model", metadata={"seed": 7})
    loaded = load_model(tmp_path / "model").eval()
    with torch.no_grad():
        assert torch.equal(model(sequence), loaded(sequence))
    assert loaded.strand_pair("human")[:2].tolist() == [1, 0]
    assert loaded.config == model.config
    assert not any(p.suffix in (".pt", ".pkl") for p in (tmp_path / "model").iterdir())
    # Saving again replaces the directory atomically.
    save_model(tiny(), tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]


def test_load_with_mismatched_config_is_a_clear_error(tmp_path):
    save_model(tiny(), tmp_path / "model")
    with pytest.raises(FlashRNAError, match="num_layers: stored 2, expected 3"):
        load_model(tmp_path / "model", expected_config=model_config("tiny", num_layers=3))
    # A config edited to disagree with its weights.
    config_path = tmp_path / "model" / "config.json"
    config_path.write_text(config_path.read_text().replace('"num_layers": 2', '"num_layers": 3'))
    with pytest.raises(FlashRNAError, match="does not match"):
        load_model(tmp_path / "model")


def test_load_corrupt_weights_is_a_clear_error(tmp_path):
    save_model(tiny(), tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(FlashRNAError, match=r"model\.safetensors"):
        load_model(tmp_path / "model")
    with pytest.raises(FlashRNAError, match="not a model directory"):
        load_model(tmp_path)


def test_loaded_model_is_in_eval_mode(tmp_path):
    torch.manual_seed(1)
    save_model(build_model("tiny"), tmp_path / "model")  # dropouts 0.05-0.1
    model = load_model(tmp_path / "model")
    sequence = torch.randint(0, 5, (1, 1024))
    assert not model.training
    with torch.no_grad():
        assert torch.equal(model.embed(sequence), model.embed(sequence))


def test_model_describes_itself_and_refuses_other_lengths(tmp_path):
    save_model(tiny(), tmp_path / "model", model_description(16_384, 128, {"human": "hg38"}))
    description = read_model_description(tmp_path / "model")
    assert description["architecture"] == "flashrna"
    assert (description["input_length"], description["crop_bins"]) == (16_384, 128)
    assert description["heads"] == {"human": {"genome": "hg38", "value_space": "squashed"}}
    (tmp_path / "w.bed").write_text("chr1\t500000\t500100\n")
    argv = ["predict", "--model", str(tmp_path / "model"), "--bed", str(tmp_path / "w.bed")]
    fasta = fixture_path("genome/hg38_1m.fa.gz")
    argv += ["--fasta", str(fasta), "--out", str(tmp_path / "p")]
    with pytest.raises(FlashRNAError, match=r"built for 16,384-bp inputs, not 524,288 bp"):
        predict_windows(
            [tmp_path / "model"],
            tmp_path / "p",
            bed=tmp_path / "w.bed",
            fasta=fasta,
            seq_length=524_288,
        )
    assert cli_main([*argv, "--seq-length", "524288"]) == 1
    assert cli_main(argv) == 0  # the model's own length and crop by default
    meta = json.loads((tmp_path / "p" / "meta.json").read_text())
    assert (meta["seq_length"], meta["crop_bins"]) == (16_384, 128)
    # An old directory says nothing: architecture flashrna, nothing refused.
    save_model(tiny(), tmp_path / "old")
    assert read_model_description(tmp_path / "old")["input_length"] is None
    check_input_length(read_model_description(tmp_path / "old"), 524_288, "old")


def test_a_trained_model_describes_its_training_data():
    def dataset(genome):  # what flashrna.data.TrackDataset exposes
        return SimpleNamespace(seq_length=16_384, crop0=128, shards=SimpleNamespace(genome=genome))

    mouse = SimpleNamespace(real=dataset("mm10"), teacher=dataset("mm10"))  # distillation
    description = describe_training({"human": dataset("hg38"), "mouse": mouse})
    assert description == model_description(16_384, 128, {"human": "hg38", "mouse": "mm10"})


def test_predict_takes_dna_text_and_intervals():
    model = tiny()
    fasta = fixture_path("genome/hg38_1m.fa.gz")
    window = Genome(fasta).fetch("chr1", 600_000, 601_024)
    expected = predict(model, window[None], "human")
    text = decode_sequence(window)
    torch.testing.assert_close(predict(model, text.lower(), "human"), expected)
    torch.testing.assert_close(predict(model, [text, text], "human"), expected.expand(2, -1, -1))
    for interval in ("chr1:600,001-601,024", ("chr1", 600_000, 601_024)):
        torch.testing.assert_close(predict(model, interval, "human", genome=fasta), expected)
    with pytest.raises(FlashRNAError, match="needs a genome"):
        predict(model, "chr1:1-1024", "human")


# ------------------------------------------------------------------------------- model-info


def test_transformer_flops_match_the_formula():
    config = PRESETS["paper"]
    length = 128 * 64
    tokens, dim = length // 128, config.dim
    per_layer = (
        2 * tokens * dim * 3 * dim  # packed qkv
        + 2 * 2 * tokens * tokens * dim  # QK^T and AV
        + 2 * tokens * dim * dim  # out projection
        + 2 * 2 * tokens * dim * config.mlp_hidden
    )  # MLP
    flops = flop_counts(config, length)
    assert flops["trunk.transformer"] == 8 * per_layer
    assert flops["trunk.stem"] == 2 * length * 4 * 512 * 15
    assert flops["total"] == sum(v for k, v in flops.items() if k != "total")


def test_model_info_cli(capsys, tmp_path):
    assert (
        cli_main(
            [
                "model-info",
                "--preset",
                "paper",
                "--length",
                "4096",
                "--json",
                str(tmp_path / "info.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "202,629,069 parameters" in out
    assert read_json(tmp_path / "info.json") == model_info("paper", 4096)


def test_model_info_counts_presets_configurations_and_model_directories(tmp_path):
    info = model_info("paper", 4096)
    assert info["source"] == "preset 'paper'" and info["total_parameters"] == 202_629_069
    for block, expected in PAPER_BLOCK_PARAMETERS.items():
        assert info["parameters"][block] == expected, block
    heads = info["parameters"]["heads.human"] + info["parameters"]["heads.mouse"]
    assert heads == PAPER_OUTPUT_PARAMETERS
    assert info["forward_flops"] == flop_counts(PRESETS["paper"], 4096)
    assert info["config"]["heads"] == {"human": 2449, "mouse": 828}
    # A saved model's stored configuration; the same numbers as its configuration given directly.
    model = tiny(heads={"human": 7})
    save_model(model, tmp_path / "m")
    stored = model_info(tmp_path / "m", 1024)
    assert stored["source"] == str(tmp_path / "m")
    assert stored["parameters"] == parameter_counts(model)
    assert stored["total_parameters"] == sum(p.numel() for p in model.parameters())
    given = model_info(model.config, 1024)
    assert {k: v for k, v in given.items() if k != "source"} == {
        k: v for k, v in stored.items() if k != "source"
    }
    with pytest.raises(FlashRNAError, match="not a multiple of 128"):
        model_info("tiny", 1000)


def test_top_level_help_lists_steps(capsys):
    assert cli_main(["--help"]) == 0
    out = capsys.readouterr().out
    for step in ("train", "convert", "evaluate-tracks", "score-variants", "model-info"):
        assert step in out


# ------------------------------------------------------------------ reference forward pass


def _conv_block(block, x):
    """GroupNorm -> GELU(tanh) -> 'same' convolution, written with plain functional calls."""
    norm = block.norm
    x = F.gelu(
        F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps), approximate="tanh"
    )
    if isinstance(block.conv, nn.Sequential):
        depthwise, pointwise = block.conv
        x = F.conv1d(x, depthwise.weight, padding="same", groups=x.shape[1])
        return F.conv1d(x, pointwise.weight)
    return F.conv1d(x, block.conv.weight, padding="same")


def reference_forward(model: FlashRNA, sequence: torch.Tensor, head: str = "human"):
    """The architecture of deepgenomics/flashrna ``flash_rna/models/flashrna.py`` (stem, conv
    tower, U-Net, RoPE transformer, decoders, heads) written out with plain PyTorch
    (F.max_pool1d with its indices, F.group_norm, RoPE tables rebuilt in every layer, explicit
    softmax attention), reading the model's parameters: the function every faster path must
    compute."""
    c, trunk = model.config, model.trunk
    x = torch.eye(5)[:, :4][sequence].transpose(1, 2)
    x = F.conv1d(x, trunk.stem.weight, padding="same")
    for down in trunk.tower:
        x = _conv_block(down.block, F.max_pool1d(x, 2))
    skip_32 = x
    skip_64 = x = _conv_block(trunk.unet_encoder.block, F.max_pool1d(x, 2))
    x = F.max_pool1d(x, 2).transpose(1, 2)
    batch, tokens, _ = x.shape
    for layer in trunk.transformer:
        h = F.layer_norm(x, (c.dim,), layer.attention_norm.weight, layer.attention_norm.bias)
        qkv = F.linear(h, layer.attention.qkv.weight).view(batch, tokens, -1, c.head_dim)
        q, k, v = qkv.split((c.num_heads, c.num_kv_heads, c.num_kv_heads), dim=2)
        cos, sin = rotary_tables(tokens, c.rope_dims, c.rope_base, torch.device("cpu"))
        a = reference_attention(apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v)
        x = x + F.linear(a.reshape(batch, tokens, -1), layer.attention.out.weight)
        h = F.layer_norm(x, (c.dim,), layer.mlp_norm.weight, layer.mlp_norm.bias)
        hidden = F.gelu(F.linear(h, layer.mlp_in.weight), approximate="tanh")
        x = x + F.linear(hidden, layer.mlp_out.weight)
    x = x.transpose(1, 2)
    for decoder, skip in zip(trunk.decoders, (skip_64, skip_32), strict=True):
        up = F.interpolate(_conv_block(decoder.pointwise, x), scale_factor=2, mode="nearest")
        x = _conv_block(decoder.separable, up + _conv_block(decoder.skip, skip))
    shared = F.gelu(model.shared_head[0](x.transpose(1, 2)), approximate="tanh")
    return F.softplus(model.heads[head].linear(shared))


def randomise_norms(model: nn.Module) -> nn.Module:
    """GroupNorm/LayerNorm scales and shifts away from 1 and 0, so a wrong affine shows."""
    torch.manual_seed(5)
    for module in model.modules():
        if isinstance(module, (nn.GroupNorm, nn.LayerNorm)):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    return model


@pytest.mark.parametrize("chunk", [0, 16, 26])
def test_forward_matches_the_reference_implementation(chunk):
    """One piece (chunk 0) and in pieces of 16 or 26 positions per stage (the tower's first
    stage is 1,216 positions long: 76 or 47 pieces, the decoders' 2 to 6), with GroupNorm
    statistics over the whole length."""
    model = randomise_norms(tiny(inference_chunk=chunk))
    sequence = torch.randint(0, 5, (2, 128 * 19))
    with torch.no_grad():
        expected = reference_forward(model, sequence)
        assert model.trunk.runs_in_pieces(sequence.shape[1]) == bool(chunk)
        out = model(sequence)
        cropped = model(sequence, crop_bins=5)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cropped, expected[:, 5:-5], rtol=1e-5, atol=1e-5)


def test_tower_and_decoder_in_pieces_equal_one_piece():
    """Each stage on its own, fp32: a tower block, the U-Net encoder and both decoder blocks in
    pieces of 6 positions (kernel halos across piece borders, GroupNorm statistics over the
    whole length) against the block on the whole tensor, within 1e-5."""
    model = randomise_norms(tiny())
    trunk = model.trunk
    torch.manual_seed(6)
    with torch.no_grad():
        x = torch.randn(2, 32, 4 * 50) * 3 + 1
        expected = trunk.tower[1](x)
        pieces = down_block_in_pieces(trunk.tower[1], Pieces([x]).slice, x.shape[-1], 6)
        assert len(pieces.pieces) == 17
        torch.testing.assert_close(pieces.slice(0, pieces.length), expected, rtol=1e-5, atol=1e-5)
        skip_64 = torch.randn(2, 96, 40)
        skip_32 = torch.randn(2, 64, 80)
        tokens = torch.randn(2, 96, 20)
        for decoder, skip, length in ((0, skip_64, 20), (1, skip_32, 40)):
            x = tokens if decoder == 0 else torch.randn(2, 96, length)
            expected = trunk.decoders[decoder](x, skip)
            out = up_block_in_pieces(trunk.decoders[decoder], Pieces([x]), Pieces([skip]), 6)
            torch.testing.assert_close(out.slice(0, out.length), expected, rtol=1e-5, atol=1e-5)


def test_group_statistics_of_pieces_match_the_whole():
    torch.manual_seed(7)
    x = torch.randn(3, 16, 1000, dtype=torch.float64) * 5 + 100  # a large mean: cancellation
    norm = nn.GroupNorm(4, 16, eps=1e-5)
    mean, rstd = group_statistics(lambda a, b: x[..., a:b].float(), 1000, 137, norm)
    grouped = x.reshape(3, 4, -1)
    torch.testing.assert_close(mean.double(), grouped.mean(-1), rtol=1e-7, atol=1e-6)
    expected = (grouped.var(-1, unbiased=False) + 1e-5).rsqrt()
    torch.testing.assert_close(rstd.double(), expected, rtol=1e-6, atol=0)


def test_pieces_slice_across_borders():
    x = torch.arange(2 * 3 * 23).reshape(2, 3, 23)
    pieces = Pieces([x[..., :5], x[..., 5:6], x[..., 6:20], x[..., 20:]])
    assert pieces.length == 23
    for start, stop in ((0, 23), (4, 7), (5, 6), (19, 23), (0, 1), (22, 23)):
        assert torch.equal(pieces.slice(start, stop), x[..., start:stop])
    assert len(pieces.split_range(4, 7)) == 3


# ------------------------------------------------------------------------------- max-pool


def test_max_pool2_equals_max_pool1d_with_its_gradient():
    torch.manual_seed(8)
    x = torch.randint(-3, 4, (2, 5, 64)).float()  # small integers: many ties
    x.requires_grad_(True)
    reference = x.detach().clone().requires_grad_(True)
    grad = torch.randn(2, 5, 32)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = max_pool2(x)
    out.backward(grad)
    expected = F.max_pool1d(reference, 2)
    expected.backward(grad)
    assert torch.equal(out, expected)
    assert torch.equal(x.grad, reference.grad)  # ties go to the first of a pair, as there
    # Saved for the backward: one bool per output, not int64 indices nor the input.
    assert [(t.dtype, tuple(t.shape)) for t in saved] == [(torch.bool, (2, 5, 32))]


# ---------------------------------------------------------------------------------- RoPE cache


def test_cached_rotary_tables_are_the_tables_computed_once():
    cpu = torch.device("cpu")
    first = cached_rotary_tables(37, 24, 10_000.0, cpu)
    again = cached_rotary_tables(37, 24, 10_000.0, cpu)
    assert again[0] is first[0] and again[1] is first[1]
    expected = rotary_tables(37, 24, 10_000.0, cpu)
    assert torch.equal(first[0], expected[0]) and torch.equal(first[1], expected[1])
    assert cached_rotary_tables(37, 16, 10_000.0, cpu)[0].shape == (37, 8)
    # Made in inference mode, still usable where autograd records.
    with torch.inference_mode():
        cos, _ = cached_rotary_tables(41, 24, 10_000.0, cpu)
    q = torch.randn(1, 41, 2, 24, requires_grad=True)
    apply_rotary(q, cos, cos).sum().backward()
    assert q.grad is not None


# ------------------------------------------------------------------------ compile and autograd


@pytest.mark.slow
def test_dynamo_finds_no_graph_break():
    """The forward pass traces as one graph: in training, and without gradients in pieces."""
    torch._dynamo.reset()
    model = tiny()
    sequence = torch.randint(0, 5, (1, 1024))
    explained = torch._dynamo.explain(model.train())(sequence)
    assert explained.graph_break_count == 0, explained.break_reasons
    pieces = tiny(inference_chunk=128)
    with torch.no_grad():
        assert pieces.trunk.runs_in_pieces(1024)
        explained = torch._dynamo.explain(pieces)(sequence)
    assert explained.graph_break_count == 0, explained.break_reasons
    torch._dynamo.reset()


@pytest.mark.slow
def test_compiled_model_equals_the_reference():
    torch._dynamo.reset()
    model = randomise_norms(tiny())
    sequence = torch.randint(0, 5, (2, 1024))
    compiled = torch.compile(model)
    with torch.no_grad():
        torch.testing.assert_close(
            compiled(sequence), reference_forward(model, sequence), rtol=1e-5, atol=1e-5
        )
    torch._dynamo.reset()


def test_conv_block_checkpointing_gives_the_same_gradients():
    sequence = torch.randint(0, 5, (2, 1024))
    grads = []
    for checkpointing in (False, True):
        model = tiny(checkpoint_conv_blocks=checkpointing, gradient_checkpointing=checkpointing)
        model.train()
        torch.manual_seed(9)  # the same dropout masks; checkpointing replays them
        model(sequence).square().mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-7, msg=name)


# ----------------------------------------------------------------------------------- precision


def test_autocast_dtype_follows_the_device(monkeypatch):
    cpu = torch.device("cpu")
    assert autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    monkeypatch.setattr("flashrna.model.cpu_has_native_bf16", lambda: True)
    assert autocast_dtype("auto", cpu) is torch.bfloat16
    monkeypatch.setattr("flashrna.model.cpu_has_native_bf16", lambda: False)
    assert autocast_dtype("auto", cpu) is None
    with pytest.raises(FlashRNAError, match="unknown precision 'fp16'"):
        autocast_dtype("fp16", cpu)


def test_group_norm_stays_in_bf16_and_close_to_fp32():
    torch.manual_seed(10)
    norm = randomise_norms(nn.GroupNorm(8, 64))
    x = (torch.randn(2, 64, 500) * 4 + 2).bfloat16()
    with torch.autocast("cpu", torch.bfloat16):
        out = group_norm(x, norm)
    assert out.dtype == torch.bfloat16  # not autocast's fp32 copy
    expected = norm(x.float())  # fp32 GroupNorm of the same input
    error = (out.float() - expected).norm() / expected.norm()
    assert error < 4e-3  # bf16 rounding of the output (2^-8 relative)
    assert torch.equal(group_norm(x.float(), norm), expected)  # fp32 is untouched


def test_predict_precisions():
    model = tiny()
    sequence = torch.randint(0, 5, (2, 1024))
    with torch.no_grad():
        expected = model(sequence)
    full = predict(model, sequence, precision="fp32", reverse_complement_average=False)
    torch.testing.assert_close(full, expected)
    half = predict(model, sequence, precision="bf16", reverse_complement_average=False)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, expected, rtol=5e-2, atol=5e-2)
    assert not torch.equal(half, expected)  # bf16 really ran


# ----------------------------------------------------------------------------- memory estimate


def test_activation_count_equals_what_autograd_saves_on_the_cpu():
    """The meta-device count equals the bytes a real fp32 CPU forward saves (no dropout in
    attention, so the CPU's flash kernel saves what the GPU's would, but for the GPU kernel's
    24-byte random-number state per layer)."""
    config = model_config("tiny", attention_dropout=0.0)
    torch.manual_seed(11)
    model = FlashRNA(config).train()
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def count(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = max(saved.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    sequence = torch.randint(0, 4, (1, 2048))
    with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
        model.head(center_crop(model.embed(sequence), 16), "human")
    counted = training_activation_bytes(config, 2048, 32, bf16=False)
    assert counted - sum(saved.values()) == 24 * config.num_layers


def test_memory_estimate_and_micro_batch():
    config = PRESETS["tiny"]
    per_example = training_activation_bytes(config, 4096)
    assert training_activation_bytes(config, 8192) == pytest.approx(2 * per_example, rel=0.05)
    assert training_activation_bytes(config, 4096, bf16=False) > 1.7 * per_example
    lighter = config.replace(checkpoint_conv_blocks=True, gradient_checkpointing=True)
    assert training_activation_bytes(lighter, 4096) < 0.6 * per_example
    one, two = (training_memory_estimate(config, 4096, m) for m in (1, 2))
    assert two - one > per_example  # activations and overhead per example
    # A memory that holds 4 examples' estimate but not 6: micro-batch 4 for a batch of 12.
    memory = int(training_memory_estimate(config, 4096, 5) / 0.9)
    assert choose_micro_batch(config, 4096, 12, memory) == 4
    assert choose_micro_batch(config, 4096, 7, memory) == 1
    with pytest.raises(FlashRNAError, match="checkpoint"):
        choose_micro_batch(config, 4096, 8, one // 2)


# ------------------------------------------------------------------ bf16 on a trained model


def _planted_batch(rng, count: int, length: int = 1024):
    """Random DNA with the planted motif on both strands, and tracks set by its occurrences
    (conftest's planted-shard scheme): RNA+ / RNA- 3 at the motif's centre bin per strand,
    DNASE 2 there and 1 beside it. Returns sequences, targets and the texts."""
    words = (PLANTED_MOTIF, reverse_complement_text(PLANTED_MOTIF))
    texts = [planted_text(rng, length, words) for _ in range(count)]
    targets = np.zeros((count, length // 32, 3), np.float32)
    for k, text in enumerate(texts):
        for track, word in enumerate(words):
            for b in centre_bins(text, word):
                targets[k, b, track] = 3.0
                near = targets[k, max(b - 1, 0) : b + 2, 2]
                near[:] = np.maximum(near, 1.0)
                targets[k, b, 2] = 2.0
    sequences = np.stack([encode_sequence(text) for text in texts])
    return torch.from_numpy(sequences), torch.from_numpy(targets), texts


def _motif_variants(rng, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference and alternative windows, one SNV each, every one with an effect: even windows
    lose their first motif occurrence (a base in its middle changes), odd windows gain one at a
    random place (the reference holds the motif with that base changed)."""
    references, alternatives = [], []
    for k, text in enumerate(texts):
        at = text.find(PLANTED_MOTIF) if k % 2 == 0 else int(rng.integers(0, len(text) - 8))
        broken = PLANTED_MOTIF[:3] + "ACGT"[("ACGT".index(PLANTED_MOTIF[3]) + 1) % 4]
        broken += PLANTED_MOTIF[4:]
        with_motif = text[:at] + PLANTED_MOTIF + text[at + 8 :]
        without = text[:at] + broken + text[at + 8 :]
        pair = (with_motif, without) if k % 2 == 0 else (without, with_motif)
        references.append(encode_sequence(pair[0]))
        alternatives.append(encode_sequence(pair[1]))
    return torch.from_numpy(np.stack(references)), torch.from_numpy(np.stack(alternatives))


@pytest.mark.slow
def test_bf16_agrees_with_fp32_on_a_trained_model():
    """A tiny model trained for 150 steps on the planted motif; its bf16-autocast predictions
    (the CPU path where bf16 is native) against fp32: Pearson >= 0.999 over all outputs, and the
    logSED (log2(alt + 1) - log2(ref + 1) over a central 'gene' of 8 bins) of SNVs that break or
    complete a motif ranked alike (Spearman >= 0.99)."""
    rng = np.random.default_rng(12)
    torch.manual_seed(12)
    model = build_model("tiny", heads={"human": 3})
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        sequences, targets, _ = _planted_batch(rng, 8)
        loss = F.poisson_nll_loss(model(sequences), targets, log_input=False)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    sequences, targets, texts = _planted_batch(np.random.default_rng(13), 32)
    full = predict(model, sequences, precision="fp32", batch_size=32)
    learnt = np.corrcoef(full[..., 2].ravel(), targets[..., 2].ravel())[0, 1]
    assert learnt > 0.7  # the model is trained: DNASE follows the motif
    half = predict(model, sequences, precision="bf16", batch_size=32)
    assert np.corrcoef(full.ravel(), half.ravel())[0, 1] >= 0.999

    references, alternatives = _motif_variants(rng, texts)
    gene = slice(12, 20)

    def log_sed(precision: str) -> np.ndarray:
        ref, alt = (
            predict(model, x, precision=precision, batch_size=32)
            for x in (references, alternatives)
        )
        totals = [p[:, gene].sum(1) for p in (ref, alt)]
        return (torch.log2(totals[1] + 1) - torch.log2(totals[0] + 1)).ravel().numpy()

    full_sed, half_sed = log_sed("fp32"), log_sed("bf16")
    assert np.abs(full_sed).max() > 0.1  # the variants matter
    assert spearmanr(full_sed, half_sed)[0] >= 0.99


# ------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_bf16_matches_fp32_on_gpu():
    model = tiny().cuda()
    sequence = torch.randint(0, 5, (2, 4096), device="cuda")
    with torch.no_grad():
        full = model(sequence)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = model(sequence)
    assert half.dtype == torch.float32  # the track head runs in fp32
    torch.testing.assert_close(half, full, rtol=5e-2, atol=5e-2)
