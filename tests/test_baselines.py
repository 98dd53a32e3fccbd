"""Borzoi/Flashzoi baselines: a randomly initialised small Borzoi from borzoi-pytorch, given as
``--model`` in its hub layout or imported (``import-model``), through evaluate-tracks and
score-variants, checked against the library's own forward pass with the reverse-complement
average done by hand; Flashzoi's attention against a reference."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from helpers import fixture_path

pytest.importorskip("borzoi_pytorch", reason="borzoi-pytorch (the 'baselines' extra) is missing")

from flashrna.cli import main
from flashrna.genome import Genome
from flashrna.model import load_model, read_model_config, read_model_description
from flashrna.tracks import TrackTable
from flashrna.utils import FlashRNAError
from flashrna.zoo.borzoi import (
    BorzoiTracks,
    PortableFlashzoiAttention,
    borzoi_track_table,
    build_borzoi,
    hub_name,
)

SMALL = {"dim": 128, "depth": 1, "heads": 2, "attn_dim_key": 16, "attn_dim_value": 32}
LENGTH = 1024  # 32 output bins


@pytest.fixture(scope="module")
def borzoi_dir(tmp_path_factory):
    """A small random Borzoi saved like the hub replicates (config.json + safetensors)."""
    torch.manual_seed(0)
    model = build_borzoi(SMALL)
    with torch.no_grad():  # narrower batch-norm statistics: outputs that vary across bins
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_var.fill_(0.05)
    directory = tmp_path_factory.mktemp("borzoi") / "small"
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tracks() -> TrackTable:
    """A stranded RNA pair, a DNase and an ATAC track of Borzoi's human table."""
    table = borzoi_track_table()
    pair = np.flatnonzero((table.assay == "RNA") & (table.strand_pair != np.arange(len(table))))
    rows = [pair[0], table.strand_pair[pair[0]]]
    rows += [np.flatnonzero(table.assay == a)[0] for a in ("DNASE", "ATAC")]
    return table.take(rows)


def reference_prediction(borzoi, sequences: np.ndarray, tracks: TrackTable) -> np.ndarray:
    """The library's forward on one-hot input (N all zero), averaged with its forward on the
    reverse complement mapped back (bins reversed, strand partners swapped). (n, bins, tracks)"""
    x = F.one_hot(torch.as_tensor(sequences, dtype=torch.long), 5)[..., :4].float()
    x = x.transpose(1, 2)  # (n, 4, L), A C G T rows: complement = reversed row order
    with torch.no_grad():
        forward = borzoi(x)[:, tracks.source_index]
        reverse = borzoi(x.flip(1, 2))[:, tracks.source_index].flip(2)[:, tracks.strand_pair]
    return ((forward + reverse) / 2).transpose(1, 2).numpy()


def test_wrapper_matches_the_library(borzoi_dir, tracks):
    borzoi = build_borzoi(borzoi_dir)
    wrapper = BorzoiTracks(borzoi, tracks)
    rng = np.random.default_rng(0)
    sequences = rng.integers(0, 5, (2, LENGTH))  # includes N
    x = F.one_hot(torch.as_tensor(sequences), 5)[..., :4].float().transpose(1, 2)
    with torch.no_grad():
        expected = borzoi(x)[:, tracks.source_index].transpose(1, 2)
        got = wrapper(torch.as_tensor(sequences, dtype=torch.uint8))
        cropped = wrapper(torch.as_tensor(sequences), crop_bins=5)
    assert got.shape == (2, LENGTH // 32, len(tracks))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # Its own crop (the library's, built with 22 central bins) is ours with 5 bins a side.
    library_crop = build_borzoi(borzoi_dir, bins_to_return=LENGTH // 32 - 10)
    with torch.no_grad():
        expected = library_crop(x)[:, tracks.source_index].transpose(1, 2)
    torch.testing.assert_close(cropped, expected, rtol=1e-5, atol=1e-6)


def test_evaluate_tracks_with_a_baseline(tmp_path, borzoi_dir, tracks):
    from flashrna.data import write_shard

    rng = np.random.default_rng(1)
    sequences = rng.integers(0, 4, (3, LENGTH)).astype(np.uint8)
    targets = rng.gamma(1.0, 1.0, (3, 16, len(tracks))).astype(np.float16)
    windows = pd.DataFrame(
        {"chrom": "chr1", "start": [256, 10_256, 20_256], "end": [768, 10_768, 20_768]}
    ).assign(label="fold3")
    write_shard(tmp_path / "shard", sequences, targets, windows, tracks, "human")
    model = str(borzoi_dir)
    argv = ["evaluate-tracks", "--data", str(tmp_path / "shard"), "--num-workers", "0"]
    argv += ["--device", "cpu", "--allow-length"]  # fp32 on the CPU; 1,024 bp, not 524,288
    assert main([*argv, "--out", str(tmp_path / "one"), "--model", model]) == 0
    assert main([*argv, "--out", str(tmp_path / "two"), "--model", model, "--model", model]) == 0
    single = pd.read_csv(tmp_path / "one" / "tracks.csv")
    ensemble = pd.read_csv(tmp_path / "two" / "tracks.csv")
    assert set(ensemble["model"]) == {f"{model}+{model}"}
    # Expected: Pearson of the library's RC-averaged predictions (central 16 bins).
    pred = reference_prediction(build_borzoi(borzoi_dir), sequences, tracks)[:, 8:24]
    x, y = pred.reshape(-1, len(tracks)), targets.astype(np.float64).reshape(-1, len(tracks))
    expected = [np.corrcoef(x[:, k], y[:, k])[0, 1] for k in range(len(tracks))]
    np.testing.assert_allclose(single["pearson_squashed"], expected, rtol=1e-4, atol=1e-5)
    # An ensemble of two copies of the same weights predicts the same.
    np.testing.assert_allclose(ensemble["pearson_counts"], single["pearson_counts"], atol=1e-5)
    assert list(single["identifier"]) == list(tracks.identifier)


GTF = 'chr1\tt\texon\t14000\t14900\t.\t+\t.\tgene_id "A"; transcript_id "A1";\n'


@pytest.fixture(scope="module")
def imported_borzoi(tmp_path_factory, borzoi_dir):
    """``flashrna import-model`` of the hub-layout folder."""
    out = tmp_path_factory.mktemp("imported") / "borzoi"
    assert main(["import-model", str(borzoi_dir), "--out", str(out)]) == 0
    return out


def test_imported_borzoi_is_a_model_directory(imported_borzoi, borzoi_dir):
    description = read_model_description(imported_borzoi)
    assert description["architecture"] == "borzoi"
    assert description["input_length"] == 524_288 and description["crop_bins"] == 0
    assert (imported_borzoi / "model.safetensors").read_bytes() == (
        borzoi_dir / "model.safetensors"
    ).read_bytes()
    assert TrackTable.read(imported_borzoi / "targets-human.txt") == borzoi_track_table()
    model = load_model(imported_borzoi)
    assert not model.training and model.config.heads == {"human": 7611}
    sequences = torch.as_tensor(np.random.default_rng(2).integers(0, 5, (1, LENGTH)))
    x = F.one_hot(sequences, 5)[..., :4].float().transpose(1, 2)
    with torch.no_grad():
        expected = build_borzoi(borzoi_dir)(x).transpose(1, 2)
        torch.testing.assert_close(model(sequences), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(FlashRNAError, match="holds a borzoi model"):
        read_model_config(imported_borzoi)
    argv = ["finetune", "chip", "--model", str(imported_borzoi), "--shards", "a"]
    assert main([*argv, "--print-config"]) == 1  # fine-tuning needs a FlashRNA trunk


@pytest.mark.parametrize("source", ["hub layout", "imported"])
def test_score_variants_with_a_baseline(tmp_path, borzoi_dir, imported_borzoi, tracks, source):
    model = borzoi_dir if source == "hub layout" else imported_borzoi
    (tmp_path / "genes.gtf").write_text(GTF)
    (tmp_path / "v.vcf").write_text("chr1\t14677\tv1\tG\tA\nchr1\t14680\tbad\tA\tG\n")
    out = tmp_path / "out"
    argv = ["score-variants", "--vcf", str(tmp_path / "v.vcf"), "--out", str(out)]
    argv += [
        "--fasta",
        str(fixture_path("genome/hg38_1m.fa.gz")),
        "--gtf",
        str(tmp_path / "genes.gtf"),
    ]
    argv += ["--model", str(model), "--length", str(LENGTH), "--crop-bins", "4"]
    argv += ["--device", "cpu"]
    argv += ["--tracks", *tracks.identifier[2:]]  # the unstranded DNase and ATAC tracks
    argv += ["--protocol", "legacy", "--layout", "wide"]  # the expectation below is written so
    assert main(argv) == 1  # Borzoi is built for 524,288 bp: refused ...
    assert main([*argv, "--allow-length"]) == 0  # ... unless allowed
    scores = pd.read_csv(out / "scores.tsv", sep="\t")
    skipped = pd.read_csv(out / "skipped.tsv", sep="\t")
    assert skipped["reason"].tolist() == ["ref_mismatch"] and len(scores) == 1
    # Expected from the library: windows centred on the variant, bins 4..27 kept.
    genome = Genome(fixture_path("genome/hg38_1m.fa.gz"))
    windows = genome.variant_windows("chr1", 14677, "G", "A", LENGTH, left=LENGTH // 2)
    ref, alt = windows.reference, windows.alternative
    pred = reference_prediction(build_borzoi(borzoi_dir), np.stack([ref, alt]), tracks)[:, 4:28]
    start = 14677 - 1 - LENGTH // 2 + 4 * 32
    bins = [b for b in range(24) if start + 32 * b < 14900 and start + 32 * b + 32 > 13999]
    for k in (2, 3):  # DNase (mean) and ATAC (sum): no 3/4 power to undo
        z = pred[:, bins, k] / tracks.scale[k]
        soft = tracks.clip_soft[k]
        ref_sum, alt_sum = np.where(z > soft, soft + (z - soft) ** 2, z).sum(1)
        got = scores[f"logSED:{tracks.identifier[k]}"].item()
        assert got == pytest.approx(math.log2(alt_sum + 1) - math.log2(ref_sum + 1), rel=1e-3)
    assert scores["exon_bins"].item() == len(bins)


def test_portable_flashzoi_attention_matches_a_reference():
    torch.manual_seed(0)
    attention = PortableFlashzoiAttention(dim=1536, heads=8).eval()
    x = torch.randn(2, 16, 1536)
    with torch.no_grad():
        got = attention(x)
        # Reference: flash-attn's packing [q | k | v], GQA 8/4, NeoX RoPE on 128 of 192 dims.
        q, k, v = attention.mha.Wqkv(x).split([8 * 192, 4 * 192, 4 * 192], dim=-1)
        q, k, v = (t.view(2, 16, -1, 192) for t in (q, k, v))
        inv_freq = 1.0 / 20_000 ** (torch.arange(0, 128, 2).float() / 128)
        angles = torch.arange(16).float()[:, None] * inv_freq
        cos, sin = angles.cos().repeat(1, 2)[:, None], angles.sin().repeat(1, 2)[:, None]

        def rope(t):
            head, tail = t[..., :128], t[..., 128:]
            half = torch.cat((-head[..., 64:], head[..., :64]), dim=-1)
            return torch.cat((head * cos + half * sin, tail), dim=-1)

        q, k = rope(q), rope(k)
        k, v = k.repeat_interleave(2, dim=2), v.repeat_interleave(2, dim=2)
        weights = torch.einsum("bthd,bshd->bhts", q, k).div(math.sqrt(192)).softmax(-1)
        expected = attention.mha.out_proj(torch.einsum("bhts,bshd->bthd", weights, v).flatten(2))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_flashzoi_builds_without_flash_attn():
    model = build_borzoi({**SMALL, "dim": 256, "flashed": True})
    layer = model.transformer[0][0].fn[1]
    assert isinstance(layer, PortableFlashzoiAttention)
    assert {n for n, _ in layer.named_parameters()} == {
        "mha.Wqkv.weight",
        "mha.Wqkv.bias",
        "mha.out_proj.weight",
        "mha.out_proj.bias",
    }


def test_names_and_errors(tmp_path, monkeypatch):
    assert hub_name("borzoi-2") == "johahi/borzoi-replicate-2"
    assert hub_name("flashzoi-0") == "johahi/flashzoi-replicate-0"
    assert hub_name(str(tmp_path)) == str(tmp_path)
    with pytest.raises(FlashRNAError, match="cannot load Borzoi weights"):
        build_borzoi(tmp_path / "empty")
    assert borzoi_track_table() == TrackTable.read(fixture_path("borzoi/targets_human.txt.gz"))
    monkeypatch.setitem(__import__("sys").modules, "borzoi_pytorch.pytorch_borzoi_model", None)
    with pytest.raises(FlashRNAError, match=r"pip install 'flashrna\[baselines\]'"):
        build_borzoi(SMALL)
