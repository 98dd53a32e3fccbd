"""RNA-property fine-tuning: the Saluki and RiboNN readers, transcript placement, the pooling
head, the embedding cache, and cross-validation on data with a planted sequence rule."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from flashrna.finetune.rnaprops import (
    EmbeddingCache,
    PoolingHead,
    PropertyConfig,
    RnaData,
    aggregate_folds,
    bin_mask,
    decode_ribonn,
    length_batches,
    place_transcripts,
    read_ribonn,
    read_saluki,
    run_fold,
    trunk_digest,
)
from flashrna.genome import decode_sequence, encode_sequence
from flashrna.model import build_model
from flashrna.tfrecord import write_examples
from flashrna.utils import FlashRNAError, read_json

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: these small models gain nothing from two, and on a busy 2-core
    machine OpenMP's spinning threads would slow them several-fold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def saluki_record(sequence: str, half_life: float, pad_to: int | None = None) -> dict:
    """One record as Saluki writes it (lengths, sequence, coding, splice, targets)."""
    bases = encode_sequence(sequence)
    stored = bases if pad_to is None else np.pad(bases, (0, pad_to - len(bases)))
    coding = np.zeros(len(stored), np.uint8)
    coding[3::3] = 1
    return {
        "lengths": [len(bases)],
        "sequence": stored.tobytes(),
        "coding": coding.tobytes(),
        "splice": np.zeros(len(stored), np.uint8).tobytes(),
        "targets": np.array([half_life], "<f2").tobytes(),
    }


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------


def test_saluki_fold_layout(tmp_path):
    """basenji's layout: tfrecords/fold<k>-<i>.tfr; folds from names, files in natural order."""
    records = {
        (0, 0): [("ACGT" * 10, 1.5), ("TTTTGGGGCA", -0.25)],
        (0, 10): [("GATTACA", 0.75)],
        (0, 2): [("CCCCC", 2.0)],
        (1, 0): [("AAAACCCC", -1.0)],
        (2, 0): [("GGGTTTAAC", 0.5)],
    }
    for (fold, index), items in records.items():
        write_examples(
            tmp_path / "tfrecords" / f"fold{fold}-{index}.tfr",
            [saluki_record(s, h, pad_to=64) for s, h in items],
        )
    data = read_saluki(tmp_path)
    order = [(0, 0), (0, 2), (0, 10), (1, 0), (2, 0)]  # natural order of the file index
    expected = [(fold, s, h) for key in order for fold in [key[0]] for s, h in records[key]]
    assert [decode_sequence(s) for s in data.sequences] == [s for _, s, _ in expected]
    np.testing.assert_array_equal(data.targets[:, 0], [h for *_, h in expected])
    assert data.folds.tolist() == [f for f, *_ in expected]
    assert data.target_names == ["half_life"]
    assert data.ids[:2] == ["tfrecords/fold0-0.tfr#0", "tfrecords/fold0-0.tfr#1"]


def test_saluki_zenodo_layout(tmp_path):
    """train_gru/f<k>_c<r>/data<s>/tfrecords/test-*.tfr: fold k is the test split; the lowest
    replicate is read; data1 is mouse."""
    root = tmp_path / "train_gru"
    for fold in range(3):
        for replicate in (1, 0):
            for species in (0, 1):
                seq = "ACGTAC"[: 3 + fold] + "T" * (10 * species + replicate)
                write_examples(
                    root / f"f{fold}_c{replicate}/data{species}/tfrecords/test-0.tfr",
                    [saluki_record(seq, fold + 0.5 * species)],
                )
                # A training split that must not be read as fold k.
                write_examples(
                    root / f"f{fold}_c{replicate}/data{species}/tfrecords/train-0.tfr",
                    [saluki_record("G" * 50, 9.0)],
                )
    human = read_saluki(root, "human")
    assert human.ids == [f"f{k}_c0/data0/tfrecords/test-0.tfr#0" for k in range(3)]
    assert [decode_sequence(s) for s in human.sequences] == ["ACG", "ACGT", "ACGTA"]
    assert human.folds.tolist() == [0, 1, 2]
    mouse = read_saluki(root, "mouse")
    assert [decode_sequence(s) for s in mouse.sequences] == [
        "ACG" + "T" * 10,
        "ACGT" + "T" * 10,
        "ACGTA" + "T" * 10,
    ]
    np.testing.assert_array_equal(mouse.targets[:, 0], [0.5, 1.5, 2.5])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"targets": None}, "missing feature"),
        ({"lengths": [99]}, "does not fit"),
        ({"sequence": bytes([0, 1, 2, 7, 1])}, "byte 7"),
        ({"sequence": b"ACGTA"}, "byte 84"),  # text, not base indices
    ],
)
def test_saluki_bad_records(tmp_path, change, message):
    record = saluki_record("ACGTA", 1.0)
    record.update(change)
    record = {k: v for k, v in record.items() if v is not None}
    path = tmp_path / "tfrecords" / "fold0-0.tfr"
    write_examples(path, [saluki_record("ACGT", 0.0), record])
    with pytest.raises(FlashRNAError, match=message) as info:
        read_saluki(tmp_path)
    assert f"{path}: record 1" in str(info.value)


def test_saluki_missing_layout(tmp_path):
    with pytest.raises(FlashRNAError, match="no Saluki TFRecords"):
        read_saluki(tmp_path)


def test_decode_ribonn_base_order():
    # RiboNN codes A0 T1 C2 G3 -> our indices A0 C1 G2 T3; RNA U reads as T.
    assert decode_ribonn("0123").tolist() == [0, 3, 1, 2]
    assert decode_ribonn("31204").tolist() == [2, 3, 1, 0, 4]
    assert decode_ribonn("ACGU").tolist() == decode_ribonn("ACGT").tolist() == [0, 1, 2, 3]
    assert decode_ribonn("acgun").tolist() == [0, 1, 2, 3, 4]


def test_ribonn_table(tmp_path):
    frame = pd.DataFrame(
        {
            "tx_id": ["ENST1", "ENST2", "ENST3", "ENST4"],
            "utr5_sequence": ["ACG", "", "GG", "U"],
            "cds_sequence": ["AUGGCC", "ATGTAA", "ATG", "AUG"],
            "utr3_sequence": ["UU", "CC", "", "A"],
            "TE_HeLa": [0.5, np.nan, -1.25, 2.0],
            "TE_K562": [1.0, 2.0, 3.0, 4.0],
            "other": [9, 9, 9, 9],
            "fold": [3, 1, 1, 7],
        }
    )
    frame.to_csv(tmp_path / "te.tsv", sep="\t", index=False)
    data = read_ribonn(tmp_path / "te.tsv")
    assert data.ids == ["ENST1", "ENST2", "ENST3", "ENST4"]
    assert [decode_sequence(s) for s in data.sequences] == [
        "ACGATGGCCTT",
        "ATGTAACC",
        "GGATG",
        "TATGA",
    ]
    assert data.target_names == ["TE_HeLa", "TE_K562"]
    np.testing.assert_array_equal(data.targets, frame[["TE_HeLa", "TE_K562"]].to_numpy())
    assert data.folds.tolist() == [1, 0, 0, 2]  # sorted labels 1, 3, 7 -> 0, 1, 2

    # The same table with sequences in RiboNN's integer code reads identically.
    code = {b: str(i) for i, b in enumerate("ATCG")}
    encoded = frame.copy()
    for column in ("utr5_sequence", "cds_sequence", "utr3_sequence"):
        encoded[column] = ["".join(code[b] for b in s.replace("U", "T")) for s in frame[column]]
    encoded.to_csv(tmp_path / "encoded.tsv", sep="\t", index=False)
    again = read_ribonn(tmp_path / "encoded.tsv", targets=["TE_K562"])
    assert [s.tolist() for s in again.sequences] == [s.tolist() for s in data.sequences]
    assert again.target_names == ["TE_K562"]


def test_ribonn_whole_transcript_table_without_folds(tmp_path):
    """TE_classic_ML's layout: tx_sequence and mean_te; folds are dealt when absent."""
    rng = np.random.default_rng(0)
    n = 23
    frame = pd.DataFrame(
        {
            "SYMBOL": [f"G{i}" for i in range(n)],
            "tx_sequence": ["".join(rng.choice(list("ACGT"), 12)) for _ in range(n)],
            "utr5_size": 2,
            "cds_size": 6,
            "mean_te": rng.normal(size=n),
        }
    )
    frame.to_csv(tmp_path / "te.csv", sep="\t", index=False)
    data = read_ribonn(tmp_path / "te.csv", targets=["mean_te"], num_folds=5, seed=3)
    assert data.ids == frame["SYMBOL"].tolist()
    assert [decode_sequence(s) for s in data.sequences] == frame["tx_sequence"].tolist()
    assert sorted(np.bincount(data.folds).tolist()) == [4, 4, 5, 5, 5]
    again = read_ribonn(tmp_path / "te.csv", targets=["mean_te"], num_folds=5, seed=3)
    assert again.folds.tolist() == data.folds.tolist()


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"tx_id": ["a"], "cds_sequence": ["ATG"], "TE_x": [1.0]}, "needs columns"),
        ({"tx_id": ["a"], "tx_sequence": ["ATG"], "score": [1.0]}, "no target column"),
        ({"tx_id": ["a"], "tx_sequence": ["ATG"], "TE_x": ["high"]}, "not numeric"),
    ],
)
def test_ribonn_bad_tables(tmp_path, columns, message):
    pd.DataFrame(columns).to_csv(tmp_path / "bad.tsv", sep="\t", index=False)
    with pytest.raises(FlashRNAError, match=message) as info:
        read_ribonn(tmp_path / "bad.tsv")
    assert "bad.tsv" in str(info.value)


def test_split_is_test_f_valid_f_plus_1():
    data = RnaData(
        [str(i) for i in range(10)],
        [np.zeros(5, np.uint8)] * 10,
        np.zeros((10, 1), np.float32),
        ["y"],
        np.arange(10) % 5,
        "toy",
    )
    train, valid, test = data.split(4)
    assert test.tolist() == [4, 9]
    assert valid.tolist() == [0, 5]  # (4 + 1) mod 5
    assert train.tolist() == [1, 2, 3, 6, 7, 8]


# --------------------------------------------------------------------------------------------
# Transcript placement and pooling
# --------------------------------------------------------------------------------------------


def test_place_transcripts_and_bins():
    a = encode_sequence("A" * 200)
    b = encode_sequence("C" * 129)
    inputs, bins = place_transcripts([a, b])
    assert inputs.shape == (2, 256)  # 200 and 129 bases both need two 128-bp tokens
    assert (inputs[0, :200] == 0).all() and (inputs[0, 200:] == 4).all()
    assert (inputs[1, :129] == 1).all() and (inputs[1, 129:] == 4).all()
    assert bins.tolist() == [7, 5]  # bins overlapping [0, 200) and [0, 129) at 32 bp
    with pytest.raises(FlashRNAError, match="different padded lengths"):
        place_transcripts([a, encode_sequence("G" * 300)])


def test_length_batches_group_one_padded_length():
    lengths = [100, 300, 128, 129, 250, 5, 256, 600]
    sequences = [np.zeros(n, np.uint8) for n in lengths]
    batches = length_batches(sequences, batch_size=2, rng=np.random.default_rng(0))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 2
        assert len({math.ceil(lengths[i] / 128) for i in batch}) == 1


@pytest.mark.parametrize("pooling", ["both", "mean", "attention"])
def test_pooling_ignores_bins_outside_the_transcript(pooling):
    torch.manual_seed(0)
    head = PoolingHead(8, 3, pooling=pooling, hidden=16).eval()
    embeddings = torch.randn(2, 6, 8)
    bins = torch.tensor([4, 6])
    mask = bin_mask(bins, 6)
    assert mask.tolist() == [[True] * 4 + [False] * 2, [True] * 6]
    out = head(embeddings, mask)
    changed = embeddings.clone()
    changed[0, 4:] = 100.0
    torch.testing.assert_close(head(changed, mask), out)
    # Zero-padded to more bins (as the cache batches are), the output stays the same.
    padded = torch.cat([embeddings, torch.zeros(2, 3, 8)], dim=1)
    torch.testing.assert_close(head(padded, bin_mask(bins, 9)), out)
    assert out.shape == (2, 3)


def test_mean_pooling_is_the_masked_mean():
    head = PoolingHead(2, 1, pooling="mean", hidden=4).eval()
    captured = {}
    head.mlp.register_forward_hook(lambda m, inputs, out: captured.update(x=inputs[0]))
    embeddings = torch.tensor([[[1.0, 2.0], [3.0, 6.0], [50.0, 50.0]]])
    head(embeddings, bin_mask(torch.tensor([2]), 3))
    torch.testing.assert_close(captured["x"], torch.tensor([[2.0, 4.0, 1.0]]))  # mean, log2(2)


# --------------------------------------------------------------------------------------------
# Embedding cache
# --------------------------------------------------------------------------------------------


def test_embedding_cache_holds_the_trunks_bins(tmp_path):
    torch.manual_seed(0)
    trunk = build_model("tiny").trunk
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, 4, n).astype(np.uint8) for n in (70, 300, 129, 256, 90)]
    cache = EmbeddingCache.build(trunk, sequences, tmp_path, batch_size=2)
    for i in (1, 2, 4):
        inputs, bins = place_transcripts([sequences[i]])
        with torch.no_grad():
            direct = trunk.eval()(inputs)[0, : bins[0]]
        stored = torch.from_numpy(
            np.asarray(cache.embeddings[cache.offsets[i] : cache.offsets[i + 1]], np.float32)
        )
        torch.testing.assert_close(stored, direct, atol=2e-3, rtol=2e-3)  # float16 storage
    embeddings, bins = cache.batch([4, 1])
    assert bins.tolist() == [3, 10]
    assert embeddings.shape == (2, 10, trunk.config.dim)
    assert (embeddings[0, 3:] == 0).all()

    # Same trunk and sequences: reused; another trunk: a new entry.
    assert EmbeddingCache.build(trunk, sequences, tmp_path).directory == cache.directory
    other = build_model("tiny").trunk
    assert trunk_digest(other) != trunk_digest(trunk)
    assert EmbeddingCache.build(other, sequences, tmp_path).directory != cache.directory


# --------------------------------------------------------------------------------------------
# Cross-validation on a planted rule
# --------------------------------------------------------------------------------------------

MOTIF = encode_sequence("GGGGGGGGGGGG")
NOISE_SD = 0.5


def planted(n: int, seed: int) -> RnaData:
    """Random transcripts of 160-380 bases; the label is the number (0-4) of a 12-G motif
    planted in distinct 32-base slots, plus Gaussian noise of SD 0.5. The best possible Pearson
    is sqrt(var(k) / (var(k) + 0.25)) = sqrt(2 / 2.25) = 0.943."""
    rng = np.random.default_rng(seed)
    sequences, labels = [], []
    for _ in range(n):
        length = int(rng.integers(160, 380))
        sequence = rng.integers(0, 4, length).astype(np.uint8)
        k = int(rng.integers(0, 5))
        for slot in rng.choice(length // 32, size=k, replace=False):
            sequence[32 * slot : 32 * slot + len(MOTIF)] = MOTIF
        sequences.append(sequence)
        labels.append(k + rng.normal(0, NOISE_SD))
    targets = np.array(labels, np.float32)[:, None]
    return RnaData([f"t{i}" for i in range(n)], sequences, targets, ["y"], np.arange(n) % 5, "p")


def test_planted_rule_full_then_head(tmp_path):
    """Full fine-tuning of a random tiny trunk learns the motif count; a fresh head on that
    trunk, trained alone from cached embeddings on new transcripts, learns it too.

    Thresholds: 0.75 (full) and 0.8 (head), against a ceiling of 0.943 (noise) and a chance
    level of 0 with SD ~0.1 (100 test transcripts), so a pass means the rule was learned; the
    trunk starts random, so the full run also has to learn to see the motif."""
    torch.manual_seed(0)
    trunk = build_model("tiny").trunk
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    config = PropertyConfig(
        mode="full", epochs=15, patience=15, batch_size=16, lr=1e-3, trunk_lr=1e-3, hidden=64
    )
    full = run_fold(trunk, planted(500, seed=0), 0, config, tmp_path / "full", "cpu")
    assert full["mean_pearson"] > 0.75
    assert any(not torch.equal(v, trunk.state_dict()[k]) for k, v in before.items())

    fresh = planted(400, seed=1)
    trained = {k: v.clone() for k, v in trunk.state_dict().items()}
    cache = EmbeddingCache.build(trunk, fresh.sequences, tmp_path / "cache")
    config = PropertyConfig(mode="head", epochs=30, patience=30, batch_size=16, lr=3e-3, hidden=64)
    head = run_fold(trunk, fresh, 2, config, tmp_path / "head", "cpu", cache)
    assert head["mean_pearson"] > 0.8
    assert head["fold"] == 2 and head["valid_fold"] == 3 and head["n_test"] == 80
    for key, value in trunk.state_dict().items():
        assert torch.equal(value, trained[key]), key

    table = pd.read_csv(tmp_path / "head" / "fold2" / "predictions.tsv", sep="\t")
    assert table["id"].tolist() == [f"t{i}" for i in range(2, 400, 5)]
    r = np.corrcoef(table["y"], table["y_prediction"])[0, 1]
    assert r == pytest.approx(head["mean_pearson"], abs=1e-6)


def test_head_mode_without_cache_keeps_the_trunk(tmp_path):
    torch.manual_seed(0)
    trunk = build_model("tiny").trunk
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    config = PropertyConfig(mode="head", epochs=1, batch_size=8, hidden=8)
    run_fold(trunk, planted(40, seed=2), 0, config, tmp_path, "cpu")
    for key, value in trunk.state_dict().items():
        assert torch.equal(value, before[key]), key
    with pytest.raises(FlashRNAError, match="cannot use cached"):
        run_fold(trunk, planted(40, 2), 0, PropertyConfig(mode="full"), tmp_path, "cpu", object())


def test_aggregate_folds(tmp_path):
    from flashrna.utils import write_json

    values = {0: {"a": 0.5, "b": 0.7}, 1: {"a": 0.25, "b": 0.9}, 2: {"a": 0.75, "b": None}}
    for fold, pearson in values.items():
        known = [v for v in pearson.values() if v is not None]
        write_json(
            tmp_path / f"fold{fold}" / "metrics.json",
            {
                "fold": fold,
                "num_folds": 3,
                "pearson": pearson,
                "mean_pearson": sum(known) / len(known),
            },
        )
    table = aggregate_folds(tmp_path)
    assert len(table) == 6
    summary = read_json(tmp_path / "summary.json")
    assert summary["folds"] == [0, 1, 2]
    assert summary["pearson_per_fold"] == {"0": 0.6, "1": 0.575, "2": 0.75}
    assert summary["mean_pearson"] == pytest.approx((0.6 + 0.575 + 0.75) / 3)
    assert summary["per_target_mean"]["a"] == pytest.approx(0.5)
    assert summary["per_target_mean"]["b"] == pytest.approx(0.8)
    csv = pd.read_csv(tmp_path / "pearson.csv")
    assert csv.columns.tolist() == ["fold", "target", "pearson"]
    with pytest.raises(FlashRNAError, match="no fold"):
        aggregate_folds(tmp_path / "empty")


# --------------------------------------------------------------------------------------------
# Command line and downloads
# --------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_model_dir(tmp_path):
    from flashrna.model import save_model

    torch.manual_seed(0)
    return save_model(build_model("tiny"), tmp_path / "pretrained")


def test_te_cli_runs_folds_singly_then_aggregates(tiny_model_dir, tmp_path):
    rng = np.random.default_rng(0)
    n = 30
    cds = ["".join(rng.choice(list("ACGU"), int(rng.integers(60, 300)))) for _ in range(n)]
    frame = pd.DataFrame(
        {
            "tx_id": [f"ENST{i}" for i in range(n)],
            "utr5_sequence": "ACG",
            "cds_sequence": cds,
            "utr3_sequence": "UUA",
            "TE_a": rng.normal(size=n),
            "TE_b": [s.count("G") / len(s) for s in cds],
            "fold": np.arange(n) % 3,
        }
    )
    frame.to_csv(tmp_path / "te.tsv", sep="\t", index=False)
    out = tmp_path / "out"
    argv = ["finetune", "te", "--model", str(tiny_model_dir), "--data", str(tmp_path / "te.tsv")]
    argv += ["--out", str(out), "--epochs", "2", "--hidden", "8", "--device", "cpu"]
    from flashrna.cli import main

    assert main([*argv, "--folds", "1"]) == 0
    metrics = read_json(out / "fold1" / "metrics.json")
    assert (metrics["fold"], metrics["valid_fold"], metrics["n_test"]) == (1, 2, 10)
    assert sorted(metrics["pearson"]) == ["TE_a", "TE_b"]
    assert read_json(out / "summary.json")["folds"] == [1]
    assert len(list((out / "embeddings").iterdir())) == 1  # one cache entry
    done = (out / "fold1" / "metrics.json").stat().st_mtime_ns

    assert main(argv) == 0  # all folds
    assert (out / "fold1" / "metrics.json").stat().st_mtime_ns == done  # not run again
    assert read_json(out / "summary.json")["folds"] == [0, 1, 2]
    assert len(pd.read_csv(out / "pearson.csv")) == 6

    (out / "summary.json").unlink()
    assert main(["finetune", "aggregate", "--out", str(out)]) == 0
    assert read_json(out / "summary.json")["num_folds"] == 3
    assert main([*argv, "--folds", "0", "3"]) == 1  # no fold 3: a clear error, exit status 1


def test_halflife_cli_full_mode(tiny_model_dir, tmp_path):
    rng = np.random.default_rng(1)
    for fold in range(3):
        records = [
            saluki_record("".join(rng.choice(list("ACGT"), 150)), rng.normal()) for _ in range(4)
        ]
        write_examples(tmp_path / "data" / "tfrecords" / f"fold{fold}-0.tfr", records)
    from flashrna.cli import main

    argv = ["finetune", "halflife", "--model", str(tiny_model_dir), "--data"]
    argv += [str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--mode", "full"]
    assert main([*argv, "--folds", "2", "--epochs", "1", "--device", "cpu"]) == 0
    metrics = read_json(tmp_path / "out" / "fold2" / "metrics.json")
    assert metrics["config"]["mode"] == "full"
    assert list(metrics["pearson"]) == ["half_life"]
    assert not (tmp_path / "out" / "embeddings").exists()  # full mode never caches


def test_download_rows_fetch_and_unpack_into_readable_data(tmp_path):
    """The manifest rows of both data sets, served from a local HTTP server: the archive
    unpacks (replicate 0's data directories only) into a directory read_saluki reads, and the
    TE table reads with read_ribonn."""
    import dataclasses
    import functools
    import http.server
    import threading
    import zipfile

    from flashrna.download import Options, download, read_manifest

    manifest = {row.destination: row for row in read_manifest(ROOT / "config" / "manifest.tsv")}
    saluki_row = manifest["saluki/datasets.zip"]
    te_row = manifest["ribonn/data_with_human_TE_cellline_all_NA_plain.csv"]

    served = tmp_path / "served"
    served.mkdir()
    staging = tmp_path / "staging"
    for fold in range(3):
        for replicate in (0, 1):
            write_examples(
                staging / f"f{fold}_c{replicate}/data0/tfrecords/test-0.tfr",
                [saluki_record("ACGT" * (fold + 1), float(fold + replicate))],
            )
    (staging / "f0_c0/train").mkdir()
    (staging / "f0_c0/train/model0_best.h5").write_bytes(b"weights")
    with zipfile.ZipFile(served / "datasets.zip", "w") as archive:
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                name = "datasets/deeplearning/train_gru/" + str(path.relative_to(staging))
                archive.write(path, name)
    te = pd.DataFrame(
        {"tx_sequence": ["ACGT", "GGCC", "ATAT"], "mean_te": [0.1, 0.2, 0.3], "fold": [0, 1, 2]}
    )
    te.to_csv(served / "te.csv", sep="\t", index=False)

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        rows = [
            dataclasses.replace(saluki_row, source=f"{base}/datasets.zip"),
            dataclasses.replace(te_row, source=f"{base}/te.csv"),
        ]
        download(rows, Options(data_dir=tmp_path / "data"))
    finally:
        server.shutdown()
    root = tmp_path / "data" / "saluki" / "datasets" / "deeplearning" / "train_gru"
    assert not (root / "f0_c0" / "train").exists()  # models are not extracted
    data = read_saluki(root)
    assert [decode_sequence(s) for s in data.sequences] == ["ACGT", "ACGTACGT", "ACGTACGTACGT"]
    np.testing.assert_array_equal(data.targets[:, 0], [0.0, 1.0, 2.0])  # replicate 0
    table = read_ribonn(tmp_path / "data" / te_row.destination, targets=["mean_te"])
    assert [decode_sequence(s) for s in table.sequences] == ["ACGT", "GGCC", "ATAT"]
