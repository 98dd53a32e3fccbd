"""The FlashRNA model: architecture against DESIGN §2, attention backends, RoPE, reverse-complement
prediction, save/load, self-description, text and interval input."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from helpers import fixture_path
from torch import nn

from flashrna.cli import main as cli_main
from flashrna.genome import Genome, decode_sequence
from flashrna.model import (
    PRESETS,
    Ensemble,
    FlashRNA,
    apply_rotary,
    attention,
    build_model,
    center_crop,
    check_input_length,
    describe_training,
    flop_counts,
    load_model,
    model_config,
    model_description,
    parameter_counts,
    predict,
    read_model_description,
    reference_attention,
    reverse_complement,
    rotary_tables,
    save_model,
    take_bins,
)
from flashrna.predict import predict_windows
from flashrna.utils import FlashRNAError

# DESIGN §2, counted from the architecture table.
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
    assert (tmp_path / "info.json").exists()


def test_top_level_help_lists_steps(capsys):
    assert cli_main(["--help"]) == 0
    out = capsys.readouterr().out
    for step in ("train", "convert", "evaluate-tracks", "score-variants", "model-info"):
        assert step in out


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
