"""Track tables and the squash transform, against the real Borzoi human targets table."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import fixture_path

from flashrna.tracks import TrackTable, pool_coverage, squash, unsquash
from flashrna.utils import FlashRNAError

HUMAN = "borzoi/targets_human.txt.gz"


@pytest.fixture(scope="module")
def human() -> TrackTable:
    return TrackTable.read(fixture_path(HUMAN))


def test_assay_counts(human):
    assert len(human) == 7611
    counts = {a: len(human.select([a])) for a in ("RNA", "DNASE", "ATAC", "CAGE", "CHIP")}
    assert counts == {"RNA": 1543, "DNASE": 674, "ATAC": 232, "CAGE": 1276, "CHIP": 3886}
    assert len(human.select()) == 1543 + 674 + 232
    gtex = TrackTable.read(fixture_path("borzoi/targets_gtex.txt"))
    assert len(human.select(["RNA"], gtex.identifier)) == 89


def test_subset_strand_pairs_are_reindexed(human):
    subset = human.select(("RNA", "DNASE", "ATAC"))
    pair, source = subset.strand_pair, subset.source_index
    assert (pair[pair] == np.arange(len(subset))).all()
    assert (subset.assay[pair] == subset.assay).all()
    stranded = pair != np.arange(len(subset))
    assert stranded.sum() > 0 and set(subset.assay[stranded]) == {"RNA"}
    # Rows and pairs point at the same tracks as in the full table.
    assert (human.identifier[source] == subset.identifier).all()
    assert (human.strand_pair[source] == source[pair]).all()


def test_excluding_a_partner_is_named(human):
    with pytest.raises(FlashRNAError, match=r"CNhs10608\+ \(row 0\).*CNhs10608- \(row 1\)"):
        human.select(None, ["CNhs10608+"])
    with pytest.raises(FlashRNAError, match="no tracks of assay PROCAP"):
        human.select(["PROCAP"])
    with pytest.raises(FlashRNAError, match="unknown track identifier"):
        human.select(None, ["nope"])


def test_write_reproduces_the_file(human, tmp_path):
    human.write(tmp_path / "targets.txt.gz")
    ours = gzip.decompress((tmp_path / "targets.txt.gz").read_bytes())
    assert ours == gzip.decompress(fixture_path(HUMAN).read_bytes())
    subset = human.select(["ATAC", "RNA"])
    subset.write(tmp_path / "subset.txt")
    assert TrackTable.read(tmp_path / "subset.txt") == subset


def test_gtex_tissue_column_and_unknown_clip(human, tmp_path):
    rows = human.find(["RNA", "DNASE"])[:6]
    frame = human.take(rows).frame.copy()
    frame["gtex_tissue"] = ["Liver", "", "Lung", None, "", ""]
    frame.loc[[0, 2], "clip"] = np.nan  # unknown hard clips (an imported model's table)
    table = TrackTable(frame, source="imported")
    assert list(table.gtex_tissue) == ["Liver", "", "Lung", "", "", ""]
    assert human.gtex_tissue is None
    for name in ("t.txt", "t.txt.gz"):
        table.write(tmp_path / name)
        again = TrackTable.read(tmp_path / name)
        assert again == table and list(again.gtex_tissue) == list(table.gtex_tissue)
        assert np.isnan(again.clip[[0, 2]]).all() and again.clip[1] == table.clip[1]
    assert list(table.take([2, 0]).gtex_tissue) == ["Lung", "Liver"]
    assert table != TrackTable(frame.drop(columns="gtex_tissue"), source="no column")
    with pytest.raises(FlashRNAError, match=r"imported: track .* \(row 0\) has no hard clip"):
        table.squash(np.ones((2, 6), np.float32))
    text = frame.assign(clip=frame["clip"].astype(object))
    text.loc[1, "clip"] = "abc"  # text is still an error, only an empty cell means unknown
    with pytest.raises(FlashRNAError, match=r"row 1 .*clip 'abc' is not a finite number"):
        TrackTable(text)


def test_subset_table_file_indexes_source_channels():
    full = TrackTable.read(fixture_path("borzoi-tiny/hg38/targets.txt"))
    rna = TrackTable.read(fixture_path("borzoi-tiny/hg38/targets_rna.txt"))
    path = fixture_path("borzoi-tiny/hg38/targets_rna.txt")
    first_column = pd.read_csv(path, sep="\t").iloc[:, 0]
    assert (rna.source_index == first_column.to_numpy()).all()
    assert (full.identifier[rna.source_index] == rna.identifier).all()
    assert (full.strand_pair[rna.source_index] == rna.source_index[rna.strand_pair]).all()


def test_table_errors_name_file_and_row(tmp_path):
    frame = pd.read_csv(fixture_path("borzoi-tiny/hg38/targets.txt"), sep="\t", index_col=0)
    frame.drop(columns=["clip_soft"]).to_csv(tmp_path / "missing.txt", sep="\t")
    with pytest.raises(FlashRNAError, match=r"missing\.txt: missing column\(s\) clip_soft"):
        TrackTable.read(tmp_path / "missing.txt")
    broken = frame.copy()
    broken.loc[3, "strand_pair"] = 5
    broken.to_csv(tmp_path / "pairs.txt", sep="\t")
    with pytest.raises(FlashRNAError, match=r"pairs\.txt: row 2 \(CNhs10853\+\): strand_pair 3"):
        TrackTable.read(tmp_path / "pairs.txt")
    broken = frame.copy()
    broken.loc[2, "sum_stat"] = "median"
    broken.to_csv(tmp_path / "stat.txt", sep="\t")
    with pytest.raises(FlashRNAError, match=r"stat\.txt: row 2 .*sum_stat 'median'"):
        TrackTable.read(tmp_path / "stat.txt")


# One track of each kind in the human table: (clip, clip_soft, scale, sum_stat).
KINDS = {
    "sum": (768, 384, 1.0, "sum"),
    "sum_sqrt": (768, 384, 0.3, "sum_sqrt"),
    "mean": (128, 32, 2.0, "mean"),
}


def _reference_squash(x: float, clip: float, soft: float, scale: float, stat: str) -> float:
    """Scalar transcription of the baskerville steps, for an independent expectation."""
    if stat.endswith("sqrt"):
        x = x**0.75
    if x > soft:
        x = soft + math.sqrt(x - soft)
    x = min(x, clip) * scale
    return float(np.float16(round(float(np.float16(x)), 2)))


@pytest.mark.parametrize("kind", list(KINDS))
def test_squash_matches_scalar_formula(kind):
    clip, soft, scale, stat = KINDS[kind]
    x = np.array([0, 0.4, 3, 31.5, 200, 383.9, 900, 5e4, 3e5], np.float32)[:, None]
    got = squash(x, [clip], [soft], [scale], [stat])
    assert got.dtype == np.float16
    expected = [_reference_squash(float(v), clip, soft, scale, stat) for v in x[:, 0]]
    np.testing.assert_allclose(got[:, 0].astype(float), expected, rtol=1e-3, atol=0.0051)


def test_pooling_sums_or_averages():
    coverage = np.zeros((2, 64, 3), np.float32)
    coverage[:, :32] = 2.0
    coverage[:, 32:] = np.arange(32, dtype=np.float32)[:, None]
    pooled = pool_coverage(coverage, ["sum", "sum_sqrt", "mean"], 32)
    assert pooled.shape == (2, 2, 3)
    np.testing.assert_allclose(pooled[0, 0], [64, 64, 2])
    np.testing.assert_allclose(pooled[1, 1], [496, 496, 15.5])


def test_unsquash_inverts_squash_below_the_hard_clip():
    rng = np.random.default_rng(0)
    table = TrackTable.read(fixture_path(HUMAN)).select()
    assert set(table.sum_stat) == {"sum", "sum_sqrt", "mean"}  # every kind is covered
    # Pooled values up to just below the point where each track's hard clip starts.
    limit = table.clip_soft + (table.clip - table.clip_soft) ** 2
    limit = np.where(np.char.endswith(table.sum_stat.astype(str), "sqrt"), limit ** (4 / 3), limit)
    x = (rng.random((64, len(table))) ** 4 * 0.99 * limit).astype(np.float32)
    y = table.squash(x)
    inverse = table.unsquash(y)
    # Stored values are exact to 0.005 (2 decimals) plus float16 rounding, so x must lie between
    # the inverses of y ± that error (the inverse is monotonic).
    error = 0.0051 + np.abs(y.astype(np.float32)) * 2.0**-10
    lower = table.unsquash(np.maximum(y - error, 0))
    upper = table.unsquash(y + error)
    assert ((x >= lower * (1 - 1e-5)) & (x <= upper * (1 + 1e-5))).all()
    # Re-squashing the inverse gives the stored values back exactly.
    np.testing.assert_array_equal(table.squash(inverse), y)


def test_hard_clip_is_irreversible():
    clip, soft, scale, stat = KINDS["sum"]
    x = np.array([[1e6], [2e6]], np.float32)
    y = squash(x, [clip], [soft], [scale], [stat])
    assert (y == clip * scale).all()  # both saturate: the stored value is the clip
    back = unsquash(y, [soft], [scale], [stat])
    assert (back == soft + (clip - soft) ** 2).all()  # a lower bound, far below the truth
    assert (back < x).all()


def test_torch_matches_numpy():
    table = TrackTable.read(fixture_path("borzoi-tiny/hg38/targets.txt"))
    x = np.random.default_rng(1).gamma(0.5, 3000, size=(2, 50, len(table))).astype(np.float32)
    y = table.squash(x)
    y_torch = table.squash(torch.from_numpy(x))
    assert y_torch.dtype == torch.float16
    np.testing.assert_array_equal(y_torch.numpy(), y)
    np.testing.assert_allclose(
        table.unsquash(torch.from_numpy(y)).numpy(), table.unsquash(y), rtol=1e-6
    )


def test_repeated_identifiers_are_read_and_selected_together(tmp_path):
    """The released FlashRNA tables repeat ontology identifiers (e.g. CL:0000127+ in three rows),
    so a table with repeats reads; selecting such an identifier takes every row that has it."""
    frame = pd.read_csv(fixture_path("borzoi-tiny/hg38/targets.txt"), sep="\t", index_col=0)
    frame.loc[5, "identifier"] = frame.loc[2, "identifier"]
    frame.to_csv(tmp_path / "repeated.txt", sep="\t")
    table = TrackTable.read(tmp_path / "repeated.txt")
    assert list(table.find(None, [frame.loc[2, "identifier"]])) == [2, 5]


def test_an_empty_table_is_a_clear_error(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(FlashRNAError, match=r"empty\.txt: the file is empty; a targets\.txt has"):
        TrackTable.read(tmp_path / "empty.txt")
    header = "\t".join(["", "identifier", "file", "clip", "clip_soft", "scale", "sum_stat"])
    (tmp_path / "header.txt").write_text(header + "\tstrand_pair\tdescription\n")
    with pytest.raises(FlashRNAError, match=r"header\.txt: the table lists no tracks"):
        TrackTable.read(tmp_path / "header.txt")
