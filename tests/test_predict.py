"""Prediction: ensembles (held together or one member at a time) against the mean of their
members, shard and BED windows, ensemble-predict shards in the target format (resumable), and
distillation of an ensemble into a student."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import save_tiny_model, write_planted_shards

from flashrna.cli import main as cli_main
from flashrna.data import DistillDataset, ShardSet, TrackDataset
from flashrna.genome import encode_sequence
from flashrna.model import build_model, load_model, predict, save_model
from flashrna.predict import ensemble_predict_shards, predict_members
from flashrna.tracks import TrackTable
from flashrna.training.config import load_config
from flashrna.training.trainer import train
from flashrna.utils import FlashRNAError


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    return write_planted_shards(
        tmp_path_factory.mktemp("planted"), {"train": 32, "valid": 8, "test": 8}
    )


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> list[Path]:
    """Two randomly initialised tiny models with the planted tracks' strand pairs."""
    root = tmp_path_factory.mktemp("members")
    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = build_model("tiny", heads={"human": 3})
        model.set_strand_pair("human", [1, 0, 2])
        paths.append(save_model(model, root / f"m{seed}"))
    return paths


def member_mean(paths, sequences, crop_bins):
    outs = [
        predict(load_model(p), sequences, "human", batch_size=3, crop_bins=crop_bins) for p in paths
    ]
    return sum(outs) / len(outs)


@pytest.mark.parametrize("one_at_a_time", [False, True])
def test_ensemble_prediction_is_the_mean_of_its_members(planted, members, tmp_path, one_at_a_time):
    out = tmp_path / "pred"
    args = ["predict", "--model", str(members[0]), "--model", str(members[1])]
    args += ["--shards", str(planted), "--split", "test", "--dtype", "float32"]
    args += ["--out", str(out), "--batch-size", "3"] + (
        ["--one-at-a-time"] if one_at_a_time else []
    )
    assert cli_main(args) == 0
    test = ShardSet(planted, split="test")
    sequences = np.stack([test.sequence(i) for i in range(len(test))])
    crop = (sequences.shape[1] // 32 - test.target_length) // 2
    expected = member_mean(members, sequences, crop)
    got = np.load(out / "predictions.npy")
    assert got.shape == (len(test), test.target_length, 3)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6)
    # The members differ, so the mean is not either member.
    single = predict(load_model(members[0]), sequences, "human", crop_bins=crop).numpy()
    assert np.abs(single - got).max() > 1e-3
    # The predicted bins are the shards' target windows.
    rows = [line.split("\t") for line in (out / "windows.bed").read_text().splitlines()]
    assert [(c, int(s), int(e)) for c, s, e, _ in rows] == [
        test.window(i) for i in range(len(test))
    ]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["head"] == "human" and meta["crop_bins"] == crop and meta["num_windows"] == 8
    assert (out / "targets.txt").is_file()


def test_predict_bed_windows_from_a_fasta(members, tmp_path):
    rng = np.random.default_rng(0)
    genome = "".join("ACGT"[i] for i in rng.integers(0, 4, 5000))
    (tmp_path / "g.fa").write_text(
        ">chrG\n" + "\n".join(genome[i : i + 60] for i in range(0, 5000, 60)) + "\n"
    )
    (tmp_path / "w.bed").write_text("chrG\t1000\t1100\nchrG\t4900\t5000\n")
    out = tmp_path / "pred"
    args = ["predict", "--model", str(members[0]), "--bed", str(tmp_path / "w.bed")]
    args += ["--fasta", str(tmp_path / "g.fa"), "--seq-length", "1024", "--crop-bins", "4"]
    assert cli_main([*args, "--out", str(out)]) == 0
    got = np.load(out / "predictions.npy")
    assert got.dtype == np.float16 and got.shape == (2, 1024 // 32 - 8, 3)
    # Inputs are centred on the rows; the second runs past the contig end (N).
    first = encode_sequence(genome[1050 - 512 : 1050 + 512])
    second = np.concatenate([encode_sequence(genome[4950 - 512 :]), np.full(462, 4, np.uint8)])
    expected = predict(load_model(members[0]), np.stack([first, second]), "human", crop_bins=4)
    np.testing.assert_allclose(got, expected.numpy(), rtol=2e-3, atol=2e-3)
    rows = (out / "windows.bed").read_text().splitlines()
    assert rows == [
        f"chrG\t{538 + 128}\t{538 + 1024 - 128}\tbed:0",
        f"chrG\t{4438 + 128}\t{4438 + 1024 - 128}\tbed:1",
    ]
    with pytest.raises(FlashRNAError, match="--fasta"):
        from flashrna.predict import predict_windows

        predict_windows([members[0]], tmp_path / "x", bed=tmp_path / "w.bed")
    # --precision reaches the model: bf16 autocast gives outputs near fp32's but not equal.
    both = {}
    for precision in ("fp32", "bf16"):
        target = tmp_path / precision
        argv = [*args, "--precision", precision, "--dtype", "float32", "--out", str(target)]
        assert cli_main(argv) == 0
        both[precision] = np.load(target / "predictions.npy").ravel()
    fp32 = predict(load_model(members[0]), np.stack([first, second]), crop_bins=4, precision="fp32")
    np.testing.assert_allclose(both["fp32"], fp32.numpy().ravel(), rtol=1e-5, atol=1e-6)
    assert not np.array_equal(both["fp32"], both["bf16"])
    assert np.corrcoef(both["fp32"], both["bf16"])[0, 1] > 0.99


def test_ensemble_predict_writes_target_shards_and_resumes(planted, members, tmp_path):
    out = tmp_path / "teacher"
    written = ensemble_predict_shards(members, planted, out, batch_size=5)
    assert sorted(p.name for p in written) == ["train-0", "valid-0"]  # not the test shard
    real, teacher = ShardSet(planted, split="train"), ShardSet(out, split="train")
    assert len(teacher) == len(real) and teacher.tracks == real.tracks
    assert teacher.seq_length == real.seq_length and teacher.target_length == real.target_length
    for i in (0, 17):
        assert teacher.window(i) == real.window(i) and teacher.label[i] == real.label[i]
        np.testing.assert_array_equal(teacher.sequence(i), real.sequence(i))
    sequences = np.stack([real.sequence(i) for i in range(4)])
    crop = (real.seq_length // 32 - real.target_length) // 2
    expected = member_mean(members, sequences, crop).half().numpy()
    got = np.stack([teacher.targets(i) for i in range(4)])
    np.testing.assert_allclose(got.astype(np.float32), expected.astype(np.float32), atol=2e-3)

    # Resume: finished shards are skipped, a missing one is written again.
    stamp = {p.name: (p / "targets.npy").stat().st_mtime_ns for p in written}
    import shutil

    shutil.rmtree(out / "valid-0")
    ensemble_predict_shards(members, planted, out, batch_size=5)
    assert (out / "train-0" / "targets.npy").stat().st_mtime_ns == stamp["train-0"]
    assert (out / "valid-0" / "meta.json").is_file()
    # Other models: the shards are written again.
    ensemble_predict_shards(members[:1], planted, out, batch_size=5)
    assert (out / "train-0" / "targets.npy").stat().st_mtime_ns != stamp["train-0"]


def test_distill_dataset_mixes_teacher_and_real_targets(planted, members, tmp_path):
    teacher_dir = tmp_path / "teacher"
    ensemble_predict_shards(members, planted, teacher_dir, batch_size=8)
    options = {"split": "train", "max_shift": 64, "reverse_complement": True, "seed": 4}
    teacher = TrackDataset(teacher_dir, **options)
    real = TrackDataset(planted, **options)
    mixed = DistillDataset(teacher, real, 0.25)
    items = [(i, *teacher.augmentation(i, 2)) for i in (0, 5, 9)]
    assert any(rc for *_, rc in items) or any(shift for _, shift, _ in items)
    got = mixed.batch(items)
    a, b = teacher.batch(items), real.batch(items)
    torch.testing.assert_close(got["sequence"], b["sequence"])
    torch.testing.assert_close(got["crop_start"], b["crop_start"])
    expected = (0.75 * a["targets"].float() + 0.25 * b["targets"].float()).half()
    torch.testing.assert_close(got["targets"], expected)
    with pytest.raises(FlashRNAError, match="windows differ"):
        DistillDataset(TrackDataset(teacher_dir, split="valid"), real, 0.5)


def tiny_train_config(shards, **train) -> dict:
    return load_config(
        overrides={
            "model": {"preset": "tiny"},
            "data": {
                "species": {"human": {"shards": str(shards)}},
                "max_shift": 32,
                "num_workers": 0,
            },
            "train": {
                "steps": 40,
                "batch_size": 8,
                "learning_rate": 3e-3,
                "warmup_steps": 5,
                "clip_grad_norm": 1.0,
                **train,
            },
            "validation": {"every_steps": 1000, "max_examples": 8, "final_model": "last"},
            "checkpoint": {"every_steps": 1000},
            "log": {"every_steps": 20, "progress": False, "tensorboard": False},
        }
    )


def test_distilled_student_is_closer_to_its_teacher_than_a_fresh_model(planted, tmp_path):
    # Teachers: two tiny models trained briefly on the planted signal (seeds 1, 2).
    teachers = []
    for seed in (1, 2):
        config = tiny_train_config(planted)
        config["seed"] = seed
        train(config, tmp_path / f"t{seed}", "cpu")
        teachers.append(tmp_path / f"t{seed}" / "model")
    teacher_shards = tmp_path / "teacher"
    args = ["ensemble-predict", "--model", str(teachers[0]), "--model", str(teachers[1])]
    assert cli_main([*args, "--shards", str(planted), "--out", str(teacher_shards)]) == 0

    config_path = tmp_path / "student.yaml"
    config_path.write_text(yaml.safe_dump({"student": tiny_train_config(planted)}))
    student = tmp_path / "student"
    args = ["distill", "--config", str(config_path), "--config-key", "student", "--seed", "3"]
    args += ["--teacher", f"human={teacher_shards}", "--out", str(student)]
    assert cli_main(args) == 0
    stored = yaml.safe_load((student / "config.yaml").read_text())
    assert stored["data"]["species"]["human"]["teacher"] == str(teacher_shards)

    # Held-out (test) windows: the student has never seen them nor the teacher's output there.
    test = ShardSet(planted, split="test")
    sequences = np.stack([test.sequence(i) for i in range(len(test))])
    crop = (sequences.shape[1] // 32 - test.target_length) // 2
    members = [load_model(t) for t in teachers]
    reference = predict_members(members, sequences, "human", crop_bins=crop)
    torch.manual_seed(3)
    fresh = build_model("tiny", heads={"human": 3})
    fresh.set_strand_pair("human", [1, 0, 2])

    def distance(model) -> tuple[float, float]:
        """Mean squared difference to the teacher, and Pearson R with it over all bins."""
        prediction = predict(model, sequences, "human", crop_bins=crop)
        r = np.corrcoef(prediction.numpy().ravel(), reference.numpy().ravel())[0, 1]
        return float(((prediction - reference) ** 2).mean()), float(r)

    (mse, r), (fresh_mse, fresh_r) = distance(load_model(student / "model")), distance(fresh)
    assert mse < 0.5 * fresh_mse and r > fresh_r + 0.3


def test_distill_needs_a_teacher(planted, tmp_path):
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump(tiny_train_config(planted)))
    assert cli_main(["distill", "--config", str(config_path), "--out", str(tmp_path / "s")]) == 1
    assert not os.path.exists(tmp_path / "s")


# -- bigWig output ---------------------------------------------------------------------------

# Three tracks whose inverse transforms differ: a plain sum, a stranded-free sum_sqrt (3/4 power
# undone) and a mean, each with its own scale and a soft clip that the outputs cross.
BIGWIG_TRACKS = TrackTable(
    pd.DataFrame(
        {
            "identifier": ["RNA:liver/1", "DNASE.a", "ATAC.b"],
            "file": "x.bw",
            "clip": 100.0,
            "clip_soft": [0.4, 0.8, 1.0],
            "scale": [0.5, 2.0, 1.0],
            "sum_stat": ["sum", "sum_sqrt", "mean"],
            "strand_pair": [0, 1, 2],
            "description": ["RNA:liver", "DNASE:liver", "ATAC:liver"],
            "source_index": [0, 1, 2],
        }
    ),
    source="bigwig test tracks",
)


def expected_counts(squashed: np.ndarray, track: int) -> np.ndarray:
    """The inverse transform of tracks.py, written out here for BIGWIG_TRACKS' rows."""
    row = BIGWIG_TRACKS.frame.iloc[track]
    z = squashed.astype(np.float64) / row["scale"]
    z = np.where(z > row["clip_soft"], row["clip_soft"] + (z - row["clip_soft"]) ** 2, z)
    return z ** (4 / 3) if row["sum_stat"] == "sum_sqrt" else z


@pytest.fixture(scope="module")
def genome_dir(tmp_path_factory) -> Path:
    """chrA (5,000 bp) and chrB (1,500 bp) of random DNA."""
    root = tmp_path_factory.mktemp("genome")
    rng = np.random.default_rng(5)
    with open(root / "g.fa", "w") as handle:
        for name, size in (("chrA", 5000), ("chrB", 1500)):
            text = "".join("ACGT"[i] for i in rng.integers(0, 4, size))
            handle.write(f">{name}\n" + "\n".join(text[i : i + 60] for i in range(0, size, 60)))
            handle.write("\n")
    return root


def test_predict_bigwig_round_trips_bin_for_bin(genome_dir, tmp_path):
    import pyBigWig

    model = save_tiny_model(tmp_path / "model", BIGWIG_TRACKS)
    # Two separate windows on chrA (named), one on chrB that runs past its end (unnamed).
    (tmp_path / "w.bed").write_text("chrA\t1000\t1100\tgeneX\nchrA\t3000\t3100\tgeneY\n")
    with open(tmp_path / "w.bed", "a") as handle:
        handle.write("chrB\t1400\t1500\t\n")
    out = tmp_path / "pred"
    args = ["predict", "--model", str(model), "--bed", str(tmp_path / "w.bed")]
    args += ["--fasta", str(genome_dir / "g.fa"), "--seq-length", "1024", "--crop-bins", "4"]
    args += ["--dtype", "float32"]
    assert cli_main([*args, "--format", "npy", "bigwig", "--out", str(out)]) == 0
    predictions = np.load(out / "predictions.npy")
    rows = [line.split("\t") for line in (out / "windows.bed").read_text().splitlines()]
    assert [r[3] for r in rows] == ["geneX", "geneY", "bed:2"]  # the BED's names are kept
    sidecar = json.loads((out / "bigwig" / "tracks.json").read_text())
    assert sidecar["space"] == "counts" and sidecar["bin_size"] == 32
    files = [t["file"] for t in sidecar["tracks"]]
    assert files == ["RNA_liver_1.counts.bw", "DNASE.a.counts.bw", "ATAC.b.counts.bw"]
    assert [t["identifier"] for t in sidecar["tracks"]] == list(BIGWIG_TRACKS.identifier)
    for track, name in enumerate(files):
        bigwig = pyBigWig.open(str(out / "bigwig" / name))
        assert bigwig.chroms() == {"chrA": 5000, "chrB": 1500}
        for chrom in ("chrA", "chrB"):
            expected = []
            for window, (c, start, _, _) in enumerate(rows):
                if c != chrom:
                    continue
                values = expected_counts(predictions[window, :, track], track)
                for b, value in enumerate(values):
                    lo, hi = int(start) + 32 * b, min(int(start) + 32 * b + 32, 1500)
                    if chrom == "chrA" or lo < hi:
                        expected.append((lo, hi if chrom == "chrB" else lo + 32, value))
            got = bigwig.intervals(chrom)
            assert [(s, e) for s, e, _ in got] == [(s, e) for s, e, _ in expected]
            np.testing.assert_allclose(
                [v for *_, v in got], [v for *_, v in expected], rtol=1e-5, atol=1e-6
            )
        bigwig.close()
    # The soft clip's inverse was exercised (squashed values above clip_soft x scale).
    assert (predictions[..., 0] > 0.4 * 0.5).all()

    # Squashed space, one track chosen by identifier, no array kept: the values are the model's.
    out2 = tmp_path / "pred2"
    args2 = [*args, "--format", "bigwig", "--space", "squashed", "--tracks", "DNASE.a"]
    assert cli_main([*args2, "--out", str(out2)]) == 0
    assert sorted(p.name for p in (out2 / "bigwig").iterdir()) == [
        "DNASE.a.squashed.bw",
        "tracks.json",
    ]
    assert not (out2 / "predictions.npy").exists()
    bigwig = pyBigWig.open(str(out2 / "bigwig" / "DNASE.a.squashed.bw"))
    first = bigwig.intervals("chrA")[: predictions.shape[1]]
    np.testing.assert_allclose([v for *_, v in first], predictions[0, :, 1], rtol=1e-6)
    assert first[0][:2] == (int(rows[0][1]), int(rows[0][1]) + 32)
    bigwig.close()


def test_bigwig_intervals_give_each_base_to_the_nearest_window_centre():
    from flashrna.predict import bigwig_intervals

    sizes = {"chrA": 180, "chrB": 1000}
    # Windows of 4 bins (128 bp), given out of order: chrB first, two overlapping on chrA
    # (centres 64 and 114: the overlap is split at 89), the second one past chrA's end.
    spans = bigwig_intervals([("chrB", 300), ("chrA", 50), ("chrA", 0)], 4, sizes)
    got = [
        (s.window, s.chrom, list(s.bins), list(zip(s.starts, s.ends, strict=True))) for s in spans
    ]
    assert got == [
        (2, "chrA", [0, 1, 2], [(0, 32), (32, 64), (64, 89)]),
        (1, "chrA", [1, 2, 3], [(89, 114), (114, 146), (146, 178)]),
        (0, "chrB", [0, 1, 2, 3], [(300, 332), (332, 364), (364, 396), (396, 428)]),
    ]
    # Twin windows split at their common centre; a window past the chromosome's end is left out.
    spans = bigwig_intervals([("chrA", 0), ("chrA", 0), ("chrA", 100), ("chrA", 400)], 4, sizes)
    assert [(s.window, s.starts[0], s.ends[-1]) for s in spans] == [
        (0, 0, 64),
        (1, 64, 114),
        (2, 114, 180),
    ]
    with pytest.raises(FlashRNAError, match="chrC"):
        bigwig_intervals([("chrC", 0)], 4, sizes)


def test_predict_bigwig_options_are_checked_before_predicting(planted, members, tmp_path):
    from flashrna.predict import predict_windows

    with pytest.raises(FlashRNAError, match="add --format bigwig"):
        predict_windows([members[0]], tmp_path / "a", shards=[planted], identifiers=["RNA+"])
    with pytest.raises(FlashRNAError, match="needs --fasta"):
        predict_windows([members[0]], tmp_path / "b", shards=[planted], formats=["bigwig"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
