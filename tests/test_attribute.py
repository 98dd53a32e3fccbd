"""flashrna attribute: input x gradient against a linear model's weights (computed by hand, with
and without reverse-complement averaging), ISM against brute-force predictions, and the step's
files (bigWig, bedGraph, HDF5/NumPy, plot) through the command line."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pyBigWig
import pytest
import torch
from helpers import save_tiny_model
from torch import nn

from flashrna.annotation import Gene
from flashrna.attribute import (
    Readout,
    gene_target,
    gradient_scores,
    input_gradients,
    ism_scores,
    mutagenesis,
    parse_region,
    predicted_values,
    region_target,
)
from flashrna.cli import main
from flashrna.genome import encode_sequence
from flashrna.model import build_model, one_hot_channels, predict
from flashrna.tracks import TrackTable
from flashrna.utils import FlashRNAError

LENGTH = 512  # 16 bins of 32 bp


def table(strands=("+", "-", ".")) -> TrackTable:
    pairs = {"+": 1, "-": 0}
    rows = []
    for k, strand in enumerate(strands):
        rows.append(
            {
                "identifier": f"RNA{k}{strand if strand != '.' else ''}",
                "file": "x.bw",
                "clip": 1e4,
                "clip_soft": 2.0,
                "scale": 0.5,
                "sum_stat": "sum_sqrt",
                "strand_pair": pairs.get(strand, k),
                "description": "RNA:test",
                "source_index": k,
            }
        )
    return TrackTable(pd.DataFrame(rows), source="test tracks")


class LinearTracks(nn.Module):
    """prediction[b, n, t] = sum over the 32 positions p of bin n and bases c of
    weight[t, p, c] * x[b, p, c]: linear in the one-hot input."""

    def __init__(self, tracks: TrackTable, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(len(tracks), LENGTH, 4, generator=generator))
        self.register_buffer("pairs", torch.tensor(tracks.strand_pair))
        self.register_buffer("lookup", torch.eye(5)[:, :4].contiguous())

    def forward(self, sequence, head="human", crop_bins=0):
        x = one_hot_channels(sequence, self.lookup)  # (B, 4, L)
        per_base = torch.einsum("bcl,tlc->blt", x, self.weight)
        return per_base.reshape(x.shape[0], LENGTH // 32, 32, -1).sum(2)

    def strand_pair(self, head="human"):
        return self.pairs


def random_sequences(count: int, seed: int = 1) -> np.ndarray:
    sequences = np.random.default_rng(seed).integers(0, 4, size=(count, LENGTH)).astype(np.uint8)
    sequences[0, 5:9] = 4  # a few N
    return sequences


def gene(strand: str, exons=((100, 170), (300, 333))) -> Gene:
    return Gene("G1", "G1", "chr1", strand, np.array(exons, dtype=np.int64))


@pytest.mark.parametrize("rc", [False, True])
@pytest.mark.parametrize("strand", ["+", "-"])
def test_input_x_gradient_of_a_linear_model_is_its_weights_times_the_input(rc, strand, device):
    tracks = table()
    model = LinearTracks(tracks)
    target = gene_target(gene(strand), center=LENGTH // 2)  # the window starts at 0
    readout = Readout(tracks, [0, 1, 2], units="squashed", transform="none")
    sequences = random_sequences(2)
    gradients, values = input_gradients(
        model, sequences, [target, target], readout, batch_size=2, device=device, rc=rc
    )
    # By hand: the value is sum over exon bins n and tracks t on the gene's strand (mean) of
    # the prediction, so its gradient at (p, c) is the mean weight of the tracks at p when p's
    # bin is an exon bin; the reverse complement's prediction, mapped back, reads the weights at
    # L-1-p, base 3-c, of each track's strand partner (p's bin is still the one that counts).
    weight = model.weight.detach().numpy().astype(np.float64)
    used = [t for t in range(3) if track_strand(tracks, t) in (".", strand)]
    exon_bin = np.zeros(LENGTH // 32, bool)
    exon_bin[target.bins(LENGTH)] = True
    in_exon = np.repeat(exon_bin, 32)
    forward = weight[used].mean(0) * in_exon[:, None]
    expected = forward
    if rc:
        partners = tracks.strand_pair[used]
        reverse = weight[partners].mean(0)[::-1, ::-1] * in_exon[:, None]
        expected = (forward + reverse) / 2
    for k in range(2):
        assert np.allclose(gradients[k], expected, atol=1e-5)
        x = np.eye(5)[sequences[k]][:, :4]
        assert np.isclose(values[k], (expected * x).sum(), rtol=1e-5) or rc
        centred = expected - expected.mean(-1, keepdims=True)
        assert np.allclose(
            gradient_scores(gradients, sequences)[k], (centred * x).sum(-1), atol=1e-5
        )
    assert (gradient_scores(gradients, sequences)[0, 5:9] == 0).all()  # N


def track_strand(tracks: TrackTable, k: int) -> str:
    identifier = tracks.identifier[k]
    return identifier[-1] if identifier[-1] in "+-" else "."


def tiny_model(tracks: TrackTable, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("tiny", heads={"human": len(tracks)})
    model.set_strand_pair("human", tracks.strand_pair)
    return model.eval()


def test_ism_equals_brute_force_predictions():
    tracks = table()
    model = tiny_model(tracks)
    sequence = random_sequences(1, seed=3)[0]
    target = region_target("chr1", 200, 330)
    target = type(target)(target.name, target.gene, LENGTH // 2)  # window from 0
    readout = Readout(tracks, [0, 2], units="squashed", transform="none")
    start, width = 250, 6
    effects = mutagenesis(model, sequence, target, start, width, readout, batch_size=5)
    # Brute force: every single-base mutant through predict (forward + RC averaged), then the
    # mean of the two tracks summed over the region's bins.
    bins = target.bins(LENGTH)

    def value(seq):
        pred = predict(model, seq[None], batch_size=1).numpy()[0]
        return pred[bins][:, [0, 2]].mean(1).sum()

    reference = value(sequence)
    for offset in range(width):
        for base in range(4):
            mutant = sequence.copy()
            mutant[start + offset] = base
            expected = 0.0 if base == sequence[start + offset] else value(mutant) - reference
            assert effects[offset, base] == pytest.approx(expected, abs=1e-5)
    assert np.allclose(ism_scores(effects), -effects.sum(1) / 3)


def test_log_counts_value_is_computed_from_the_inverse_transform():
    tracks = table()
    model = tiny_model(tracks, seed=2)
    sequences = random_sequences(2, seed=4)
    target = gene_target(gene("-"), center=LENGTH // 2)
    readout = Readout(tracks, [0, 1, 2], units="counts", transform="log", pseudo=0.5)
    values = predicted_values(model, sequences, [target] * 2, readout, rc=False)
    raw = model(torch.as_tensor(sequences), "human", 0).detach().numpy()
    counts = tracks.unsquash(raw)
    bins = target.bins(LENGTH)
    expected = np.log(counts[:, bins][..., [1, 2]].mean(-1).sum(-1) + 0.5)  # '-' and '.' tracks
    assert np.allclose(values, expected, rtol=1e-5)
    _, from_gradients = input_gradients(model, sequences[:1], [target], readout, rc=False)
    assert np.allclose(from_gradients, values[:1])


def test_parse_region_and_targets():
    assert parse_region("chr2:1,001-2,000") == ("chr2", 1000, 2000)
    with pytest.raises(FlashRNAError, match="chrom:start-end"):
        parse_region("chr2:10")
    target = gene_target(gene("-"))
    assert target.center == 332  # last base of the last exon
    assert target.window_start(LENGTH) == 332 - 256
    # Exons 100-170 and 300-333 from the window start 76: bases 24-94 and 224-257; a bin counts
    # when an exon covers most of it (Borzoi's round(start/32)..round(end/32)): 1-2 and 7.
    assert list(target.bins(LENGTH)) == [1, 2, 7]
    assert list(target.bins(LENGTH, crop_bins=2)) == [2, 7]


@pytest.fixture
def small_genome(tmp_path):
    rng = np.random.default_rng(7)
    text = "".join("ACGT"[i] for i in rng.integers(0, 4, 3000))
    fasta = tmp_path / "g.fa"
    fasta.write_text(">chrT\n" + "\n".join(text[i : i + 60] for i in range(0, 3000, 60)) + "\n")
    gtf = tmp_path / "g.gtf"
    attrs = 'gene_id "ENSG1.1"; transcript_id "ENST1"; gene_name "MYGENE";'
    gtf.write_text(
        f"chrT\tX\texon\t1201\t1300\t.\t+\t.\t{attrs}\nchrT\tX\texon\t1401\t1500\t.\t+\t.\t{attrs}\n"
    )
    return fasta, gtf, text


@pytest.mark.parametrize("array_format", ["h5", "npz"])
def test_attribute_step_writes_bigwig_arrays_and_plot(tmp_path, small_genome, array_format):
    fasta, gtf, text = small_genome
    tracks = table()
    model_dir = save_tiny_model(tmp_path / "model", tracks)
    out = tmp_path / "out"
    argv = ["attribute", "--model", str(model_dir), "--fasta", str(fasta), "--gtf", str(gtf),
            "--genes", "MYGENE", "--regions", "chrT:2001-2100", "--length", "1024",
            "--crop-bins", "2", "--methods", "gradient", "ism", "--ism-width", "8",
            "--array-format", array_format, "--bedgraph", "--out", str(out),
            "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    path = out / f"attributions.{array_format}"
    if array_format == "h5":
        with h5py.File(path) as handle:
            arrays = {key: handle[key][()] for key in handle}
        names = [n.decode() for n in arrays["name"]]
    else:
        arrays = dict(np.load(path))
        names = list(arrays["name"])
    assert names == ["MYGENE", "chrT_2001_2100"]
    assert arrays["gradient"].shape == (2, 1024, 4) and arrays["ism"].shape == (2, 8, 4)
    # The window of MYGENE is centred on its TSS (0-based 1200) and holds the genome there.
    assert arrays["window_start"][0] == 1200 - 512
    assert np.array_equal(arrays["sequence"][0], encode_sequence(text[688 : 688 + 1024]))
    assert np.allclose(arrays["score"], gradient_scores(arrays["gradient"], arrays["sequence"]))
    with pyBigWig.open(str(out / "MYGENE.bw")) as bigwig:
        values = np.array(bigwig.values("chrT", 688, 688 + 1024))
    assert np.allclose(values, arrays["score"][0], atol=1e-6)
    bedgraph = pd.read_csv(out / "MYGENE.bedGraph", sep="\t", header=None)
    assert len(bedgraph) == 1024 and np.allclose(bedgraph[3], arrays["score"][0], atol=1e-5)
    assert (out / "MYGENE.png").stat().st_size > 0 and (out / "MYGENE.ism.bw").exists()
    targets = pd.read_csv(out / "targets.tsv", sep="\t")
    assert np.allclose(targets["value"], arrays["value"], rtol=1e-5)


def test_attribute_step_errors_name_the_problem(tmp_path, small_genome):
    fasta, gtf, _ = small_genome
    model_dir = save_tiny_model(tmp_path / "model", table())
    base = ["attribute", "--model", str(model_dir), "--fasta", str(fasta), "--out", str(tmp_path)]
    assert main([*base, "--genes", "MYGENE"]) == 1  # no --gtf
    assert main([*base, "--gtf", str(gtf), "--genes", "NOPE"]) == 1
    assert main([*base, "--regions", "chrT:1-50", "--description", "liver"]) == 1
