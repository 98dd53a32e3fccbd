"""Conversion, shards, make-dataset and the loader, against the real Borzoi-schema fixtures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import fixture_path

from flashrna.cli import main
from flashrna.data import (
    EpochSampler,
    ShardSet,
    TrackDataset,
    convert_tfrecord,
    make_loader,
    open_shard,
    read_bed,
    split_labels,
    write_shard,
)
from flashrna.data.benchmark import bench_data
from flashrna.genome import Genome, reverse_complement
from flashrna.tfrecord import read_examples, write_examples
from flashrna.tracks import TrackTable
from flashrna.utils import FlashRNAError

TINY = "borzoi-tiny/hg38"


def _tiny(name: str) -> Path:
    return fixture_path(f"{TINY}/{name}")


def _convert(tfr: Path, out: Path, **options) -> Path:
    options.setdefault("assays", None)
    return convert_tfrecord(
        tfr,
        _tiny("sequences.bed"),
        _tiny("targets.txt"),
        out,
        records_per_file=4,
        statistics=_tiny("statistics.json"),
        **options,
    )


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    for tfr in sorted(_tiny("tfrecords").glob("*.tfr")):
        _convert(tfr, root / tfr.stem)
    return root


def test_borzoi_window_splits():
    bed = read_bed(fixture_path("borzoi/sequences_human.bed.gz"))
    assert len(bed) == 55_497
    assert (bed["end"] - bed["start"] == 196_608).all()
    sizes = {
        split: int(bed["label"].isin(split_labels(split, bed["label"])).sum())
        for split in ("train", "valid", "test")
    }
    assert sizes == {"test": 6_888, "valid": 6_910, "train": 41_699}
    assert split_labels("test", bed["label"], test_folds=("fold0",)) == {"fold0"}


def test_conversion_reproduces_every_record(converted):
    shards = ShardSet(converted)
    assert len(shards) == 65 and len(shards.tracks) == 74
    assert shards.seq_length == 131_072 and shards.target_length == 2_048
    assert shards.species == "human"
    for tfr in sorted(_tiny("tfrecords").glob("*.tfr")):
        shard = ShardSet(converted / tfr.stem)
        records = list(read_examples(tfr))
        assert len(shard) == len(records)
        for k, record in enumerate(records):
            np.testing.assert_array_equal(
                shard.sequence(k), np.frombuffer(record["sequence"], np.uint8)
            )
            targets = np.frombuffer(record["target"], "<f2").reshape(2048, 74)
            np.testing.assert_array_equal(shard.targets(k), targets)
            columns = [5, 0, 73]
            np.testing.assert_array_equal(shard.targets(k, columns), targets[:, columns])


def test_coordinates_and_splits_follow_the_bed(converted):
    bed = read_bed(_tiny("sequences.bed"))
    for split in ("train", "valid", "test"):
        shards = ShardSet(converted, split=split)
        rows = bed[bed["label"] == split]
        assert len(shards) == len(rows)
        assert list(shards.chrom) == list(rows["chrom"])
        np.testing.assert_array_equal(shards.start, rows["start"])
        np.testing.assert_array_equal(shards.end, rows["end"])
        assert set(shards.label) == {split}


def test_track_subset_conversion(tmp_path):
    tfr = _tiny("tfrecords/valid-1.tfr")
    shard = ShardSet(_convert(tfr, tmp_path / "valid-1", assays=["RNA", "DNASE"]))
    frame = pd.read_csv(_tiny("targets.txt"), sep="\t", index_col=0)
    keep = np.flatnonzero(frame["description"].str.match(r"^(RNA|DNASE):"))
    assert len(shard.tracks) == len(keep) == 40
    np.testing.assert_array_equal(shard.tracks.source_index, keep)
    for k, record in enumerate(read_examples(tfr)):
        targets = np.frombuffer(record["target"], "<f2").reshape(2048, 74)
        np.testing.assert_array_equal(shard.targets(k), targets[:, keep])


def test_reconversion_does_nothing(tmp_path):
    tfr = _tiny("tfrecords/test-2.tfr")
    out = _convert(tfr, tmp_path / "test-2")
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    _convert(tfr, out)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    _convert(tfr, out, assays=["RNA"])  # another selection is converted again
    assert len(ShardSet(out).tracks) == 30


def test_one_read_writes_both_shard_sets(tmp_path, monkeypatch):
    """The training shard and a second selection (the paper run's ChIP shards; CAGE here) come
    from one decompression of the file, equal to converting each on its own; up-to-date
    outputs are not rewritten and a missing one is rebuilt alone."""
    import flashrna.data.convert as convert_module

    reads = []
    original = convert_module.read_examples
    monkeypatch.setattr(
        convert_module, "read_examples", lambda path: reads.append(path) or original(path)
    )
    tfr = _tiny("tfrecords/valid-1.tfr")
    main_out, extra_out = tmp_path / "shards" / "valid-1", tmp_path / "cage" / "valid-1"
    extra = {extra_out: ["CAGE"]}
    _convert(tfr, main_out, assays=["RNA", "DNASE"], extra_outputs=extra)
    assert len(reads) == 1
    alone = {
        "main": _convert(tfr, tmp_path / "alone-main", assays=["RNA", "DNASE"]),
        "extra": _convert(tfr, tmp_path / "alone-extra", assays=["CAGE"]),
    }
    for got, expected in ((main_out, alone["main"]), (extra_out, alone["extra"])):
        got, expected = ShardSet(got), ShardSet(expected)
        assert list(got.tracks.identifier) == list(expected.tracks.identifier)
        for k in range(len(expected)):
            np.testing.assert_array_equal(got.targets(k), expected.targets(k))
            np.testing.assert_array_equal(got.sequence(k), expected.sequence(k))
    assert set(ShardSet(extra_out).tracks.assay) == {"CAGE"}
    reads.clear()
    stamps = {p.name: p.stat().st_mtime_ns for p in main_out.iterdir()}
    _convert(tfr, main_out, assays=["RNA", "DNASE"], extra_outputs=extra)
    assert reads == []  # both up to date: the file is not even opened
    shutil.rmtree(extra_out)
    _convert(tfr, main_out, assays=["RNA", "DNASE"], extra_outputs=extra)
    assert len(reads) == 1 and ShardSet(extra_out).tracks.assay[0] == "CAGE"
    assert {p.name: p.stat().st_mtime_ns for p in main_out.iterdir()} == stamps
    with pytest.raises(FlashRNAError, match="same directory"):
        _convert(tfr, main_out, extra_outputs={main_out: ["CAGE"]})


def test_record_count_must_match_the_bed(tmp_path):
    with pytest.raises(FlashRNAError, match=r"train-0\.tfr: more records than the 3 bed rows"):
        convert_tfrecord(
            _tiny("tfrecords/train-0.tfr"),
            _tiny("sequences.bed"),
            _tiny("targets.txt"),
            tmp_path / "train-0",
            records_per_file=3,
        )
    assert not (tmp_path / "train-0").exists()
    (tmp_path / "fold3-0.tfr").write_bytes(b"")
    with pytest.raises(FlashRNAError, match=r"no rows labelled 'fold3'"):
        convert_tfrecord(
            tmp_path / "fold3-0.tfr", _tiny("sequences.bed"), _tiny("targets.txt"), tmp_path / "x"
        )


def _rewrite(tfr: Path, out: Path, sequence_fn, target_fn) -> None:
    examples = [
        {"sequence": sequence_fn(r["sequence"]), "target": target_fn(r["target"])}
        for r in read_examples(tfr)
    ]
    write_examples(out, examples)


def test_legacy_one_hot_and_float32_records_are_decoded(tmp_path):
    tfr = _tiny("tfrecords/test-1.tfr")

    def one_hot(data: bytes) -> bytes:
        index = np.frombuffer(data, np.uint8)
        rows = np.zeros((len(index), 5), np.uint8)
        rows[np.arange(len(index)), index] = 1
        return rows[:, :4].tobytes()  # N (4) becomes an all-zero row

    def float32(data: bytes) -> bytes:
        return np.frombuffer(data, "<f2").astype("<f4").tobytes()

    legacy = tmp_path / "in" / "test-1.tfr"
    legacy.parent.mkdir()
    _rewrite(tfr, legacy, one_hot, float32)
    expected = ShardSet(_convert(tfr, tmp_path / "new"))
    for statistics in (_tiny("statistics.json"), None):
        out = convert_tfrecord(
            legacy,
            _tiny("sequences.bed"),
            _tiny("targets.txt"),
            tmp_path / f"legacy-{statistics is None}",
            records_per_file=4,
            assays=None,
            statistics=statistics,
            species="human",
        )
        shard = ShardSet(out)
        assert json.loads((out / "meta.json").read_text())["sequence_encoding"] == ["one-hot"]
        for k in range(len(shard)):
            np.testing.assert_array_equal(shard.sequence(k), expected.sequence(k))
            np.testing.assert_array_equal(shard.targets(k), expected.targets(k))


def test_unknown_record_layout_is_refused(tmp_path):
    bad = tmp_path / "test-1.tfr"
    _rewrite(_tiny("tfrecords/test-1.tfr"), bad, lambda s: s[:-2], lambda t: t)
    with pytest.raises(FlashRNAError, match=r"test-1\.tfr: record 0: sequence has 131070 bytes"):
        _convert(bad, tmp_path / "out", species="human")
    _rewrite(_tiny("tfrecords/test-1.tfr"), bad, lambda s: s, lambda t: t + b"\0\0")
    with pytest.raises(FlashRNAError, match=r"test-1\.tfr: record 0: target has 303106 bytes"):
        _convert(bad, tmp_path / "out", species="human")


# -- shards built from the genome fixture -------------------------------------------------------

BINS, POOL, LENGTH = 64, 32, 4096  # 2,048-bp target windows inside 4,096-bp inputs
# Windows in sequenced parts of the fixture; the last input window runs past the contig end.
STARTS = [400_000 + 20_000 * k for k in range(6)] + [1_000_000 - BINS * POOL - 500]


@pytest.fixture(scope="module")
def genome() -> Genome:
    return Genome(fixture_path("genome/hg38_1m.fa.gz"))


@pytest.fixture(scope="module")
def small_shards(genome, tmp_path_factory) -> Path:
    """Two shards over chr1 windows, random targets for the tiny fixture's 74 stranded tracks."""
    tracks = TrackTable.read(_tiny("targets.txt"))
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("small")
    flank = (LENGTH - BINS * POOL) // 2
    for name, starts in (("fold0-0", STARTS[:4]), ("fold0-1", STARTS[4:])):
        windows = pd.DataFrame(
            {
                "chrom": "chr1",
                "start": starts,
                "end": [s + BINS * POOL for s in starts],
                "label": "fold0",
            }
        )
        sequences = np.stack([genome.fetch("chr1", s - flank, s - flank + LENGTH) for s in starts])
        targets = rng.random((len(starts), BINS, len(tracks))).astype(np.float16)
        write_shard(root / name, sequences, targets, windows, tracks, "human", genome="hg38_1m")
    return root


def test_sequences_are_verified_against_the_genome(tmp_path, genome):
    flank = (LENGTH - BINS * POOL) // 2
    (tmp_path / "windows.bed").write_text(
        "".join(f"chr1\t{s}\t{s + BINS * POOL}\tfold0\n" for s in STARTS[:3])
    )
    rng = np.random.default_rng(3)

    def record(start: int, corrupt: bool) -> dict[str, bytes]:
        sequence = genome.fetch("chr1", start - flank, start - flank + LENGTH)
        if corrupt:
            sequence = rng.integers(0, 4, LENGTH, dtype=np.uint8)
        targets = rng.random((BINS, 74)).astype(np.float16)
        return {"sequence": sequence.tobytes(), "target": targets.tobytes()}

    for corrupt in (False, True):
        tfr = tmp_path / f"{'bad' if corrupt else 'good'}" / "fold0-0.tfr"
        tfr.parent.mkdir()
        write_examples(tfr, [record(s, corrupt and k == 0) for k, s in enumerate(STARTS[:3])])
        convert = lambda tfr=tfr: convert_tfrecord(  # noqa: E731
            tfr, tmp_path / "windows.bed", _tiny("targets.txt"), tfr.parent / "shard",
            assays=None, species="human", genome=genome,
        )  # fmt: skip
        if corrupt:
            with pytest.raises(FlashRNAError, match=r"fold0-0\.tfr: record 0: sequence differs"):
                convert()
        else:
            shard = ShardSet(convert())
            assert shard.seq_length == LENGTH and shard.input_start(1) == STARTS[1] - flank


def test_write_shard_round_trip(small_shards):
    shards = ShardSet(small_shards)
    assert len(shards) == len(STARTS)
    assert shards.window(5) == ("chr1", STARTS[5], STARTS[5] + BINS * POOL)
    assert shards.input_start(0) == STARTS[0] - (LENGTH - BINS * POOL) // 2
    assert shards.tracks == TrackTable.read(_tiny("targets.txt"))


def test_unfinished_shard_leaves_nothing(tmp_path):
    tracks = TrackTable.read(_tiny("targets.txt"))
    with (
        pytest.raises(FlashRNAError, match="1 examples written, 2 declared"),
        open_shard(
            tmp_path / "s",
            num_examples=2,
            seq_length=8,
            target_length=2,
            tracks=tracks,
            species="human",
        ) as writer,
    ):
        writer.add(np.zeros(8, np.uint8), np.zeros((2, 74)), "chr1", 0, 64)
    assert list(tmp_path.iterdir()) == []


def test_shift_moves_sequence_and_crop(small_shards, genome):
    with_genome = TrackDataset(small_shards, genome=genome, max_shift=1024)
    without = TrackDataset(small_shards, max_shift=1024)
    crop0 = (LENGTH // POOL - BINS) // 2
    for index in (0, 6):
        start = with_genome.shards.input_start(index)
        plain = with_genome.example(index)
        assert plain["crop_start"] == crop0 == 32
        for shift in (-1024, -500, -17, 16, 48, 777, 1024):
            moved = with_genome.example(index, shift=shift)
            expected = genome.fetch("chr1", start + shift, start + shift + LENGTH)
            np.testing.assert_array_equal(moved["sequence"].numpy(), expected)
            assert moved["crop_start"] == crop0 - round(shift / 32)
            assert torch.equal(moved["targets"], plain["targets"])
            padded = without.example(index, shift=shift)["sequence"].numpy()
            inside = slice(max(-shift, 0), LENGTH - max(shift, 0))
            np.testing.assert_array_equal(padded[inside], expected[inside])
            assert (np.delete(padded, np.arange(LENGTH)[inside]) == 4).all()


def test_longer_input_takes_flanks_from_the_genome(small_shards, genome):
    dataset = TrackDataset(small_shards, genome=genome, seq_length=LENGTH + 256)
    item = dataset.example(2)
    start = dataset.shards.input_start(2) - 128
    np.testing.assert_array_equal(
        item["sequence"].numpy(), genome.fetch("chr1", start, start + LENGTH + 256)
    )
    assert item["crop_start"] == ((LENGTH + 256) // POOL - BINS) // 2


def test_reverse_complement(small_shards):
    dataset = TrackDataset(small_shards, assays=["RNA", "CAGE"])
    pair = dataset.tracks.strand_pair
    assert (pair != np.arange(len(pair))).any()
    for shift in (0, 96):
        dataset.max_shift = 1024
        plain = dataset.example(3, shift=shift)
        flipped = dataset.example(3, shift=shift, rc=True)
        np.testing.assert_array_equal(
            flipped["sequence"].numpy(), reverse_complement(plain["sequence"].numpy())
        )
        np.testing.assert_array_equal(
            flipped["targets"].numpy(), plain["targets"].numpy()[::-1][:, pair]
        )
        assert flipped["crop_start"] == LENGTH // POOL - BINS - plain["crop_start"]
        # Applying the transformation to the flipped example gives the original back.
        again_targets = flipped["targets"].numpy()[::-1][:, pair]
        np.testing.assert_array_equal(again_targets, plain["targets"].numpy())
        again_crop = LENGTH // POOL - BINS - flipped["crop_start"]
        assert again_crop == plain["crop_start"]
    selected = dataset.shards.tracks.find(["RNA", "CAGE"])
    np.testing.assert_array_equal(
        dataset.example(1)["targets"].numpy(), dataset.shards.targets(1, selected)
    )


def _batches(loader, epochs=(0, 1)) -> list[dict[str, torch.Tensor]]:
    out = []
    for epoch in epochs:
        loader.sampler.set_epoch(epoch)
        out += list(loader)
    return out


def test_batches_do_not_depend_on_workers(small_shards, genome):
    dataset = TrackDataset(small_shards, genome=genome, max_shift=300, reverse_complement=True)
    serial = _batches(make_loader(dataset, 3, seed=5, num_workers=0))
    parallel = _batches(make_loader(dataset, 3, seed=5, num_workers=2))
    assert len(serial) == len(parallel) == 6
    for a, b in zip(serial, parallel, strict=True):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert serial[0]["targets"].shape == (3, BINS, 74)
    assert serial[0]["sequence"].dtype == torch.uint8
    crops = torch.cat([b["crop_start"] for b in serial])
    assert len(set(crops.tolist())) > 1  # shifts and flips were drawn
    orders = [torch.cat([b["index"] for b in serial[k : k + 3]]).tolist() for k in (0, 3)]
    assert sorted(orders[0]) == sorted(orders[1]) == list(range(7)) and orders[0] != orders[1]


def test_ddp_shards_are_disjoint():
    for size, world in ((10, 3), (12, 4), (5, 2)):
        ranks = [
            EpochSampler(size, seed=1, epoch=2, rank=r, world_size=world) for r in range(world)
        ]
        uneven = [
            EpochSampler(size, seed=1, epoch=2, rank=r, world_size=world, even_shards=False)
            for r in range(world)
        ]
        for samplers, expected in ((ranks, size - size % world), (uneven, size)):
            shares = [[i for _, i in s] for s in samplers]
            flat = [i for share in shares for i in share]
            assert len(flat) == len(set(flat)) == expected
        assert len({len(s) for s in ranks}) == 1


def test_resume_from_a_start_offset(small_shards):
    dataset = TrackDataset(small_shards, max_shift=64, reverse_complement=True)
    full = _batches(make_loader(dataset, 2, seed=3, epoch=1), epochs=(1,))
    resumed = make_loader(dataset, 2, seed=3, epoch=1, start=4)
    tail = list(resumed)
    assert len(tail) == len(full) - 2
    for a, b in zip(full[2:], tail, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


# -- make-dataset -------------------------------------------------------------------------------


def test_make_dataset_from_bigwigs(tmp_path, genome, capsys):
    import pyBigWig

    rng = np.random.default_rng(7)
    region = (400_000, 410_000)
    coverage = {
        "plus": rng.poisson(3.0, region[1] - region[0]).astype(np.float64),
        "atac": rng.gamma(0.5, 40.0, region[1] - region[0]),
    }
    for name, values in coverage.items():
        bw = pyBigWig.open(str(tmp_path / f"{name}.bw"), "w")
        bw.addHeader([("chr1", 1_000_000)])
        bw.addEntries("chr1", region[0], values=values.tolist(), span=1, step=1)
        bw.close()
    table = pd.DataFrame(
        {
            "identifier": ["plus", "atac"],
            "file": ["plus.bw", str(tmp_path / "atac.bw")],
            "clip": [384, 128],
            "clip_soft": [64, 32],
            "scale": [0.3, 2.0],
            "sum_stat": ["sum_sqrt", "mean"],
            "strand_pair": [0, 1],
            "description": ["RNA:test", "ATAC:test"],
        }
    )
    table.to_csv(tmp_path / "targets.txt", sep="\t")
    windows = [(401_000, "fold3"), (403_048, "fold0"), (409_000, "fold0")]  # the last runs off
    (tmp_path / "windows.bed").write_text(
        "".join(f"chr1\t{s}\t{s + 2048}\t{label}\n" for s, label in windows)
    )
    args = [
        "make-dataset",
        "--genome", str(fixture_path("genome/hg38_1m.fa.gz")),
        "--bed", str(tmp_path / "windows.bed"),
        "--targets", str(tmp_path / "targets.txt"),
        "--out", str(tmp_path / "shards"),
        "--seq-length", "4096",
        "--examples-per-shard", "1",
    ]  # fmt: skip
    assert main(args) == 0
    assert capsys.readouterr().out == (
        "make-dataset: 3 shard(s) written, 0 up to date: 3 examples × 2 tracks (4,096-bp inputs, "
        f"64 bins of 32 bp, human) in {tmp_path / 'shards'}\n"
    )
    shards = ShardSet(tmp_path / "shards")
    assert [p.name for p in shards.shards] == ["fold0-0", "fold0-1", "fold3-0"]
    assert list(shards.start) == [403_048, 409_000, 401_000]
    assert list(shards.label) == ["fold0", "fold0", "fold3"]
    tracks = TrackTable.read(tmp_path / "targets.txt")
    for k, start in enumerate(shards.start):
        known = np.zeros((2048, 2))
        for j, name in enumerate(("plus", "atac")):
            piece = coverage[name][start - region[0] : start - region[0] + 2048]
            known[: len(piece), j] = piece
        pooled = known.reshape(64, 32, 2).sum(1) / np.array([1, 32])
        expected = tracks.squash(pooled)
        np.testing.assert_array_equal(shards.targets(k), expected)
        np.testing.assert_array_equal(
            shards.sequence(k), genome.fetch("chr1", start - 1024, start + 3072)
        )
    stamps = [(p / "targets.npy").stat().st_mtime_ns for p in shards.shards]
    assert main(args) == 0
    assert [(p / "targets.npy").stat().st_mtime_ns for p in shards.shards] == stamps
    assert "make-dataset: 0 shard(s) written, 3 up to date" in capsys.readouterr().out


# -- command line and benchmark ----------------------------------------------------------------


def test_convert_command(tmp_path, capsys):
    tfr = _tiny("tfrecords/valid-2.tfr")
    args = ["convert", str(tfr), "--bed", str(_tiny("sequences.bed")), "--targets"]
    args += [
        str(_tiny("targets.txt")),
        "--out",
        str(tmp_path / "valid-2"),
        "--records-per-file",
        "4",
    ]
    assert main(args) == 0
    shard = ShardSet(tmp_path / "valid-2")
    assert len(shard.tracks) == 30 + 10  # RNA and DNASE (no ATAC in the tiny table)
    assert json.loads((tmp_path / "valid-2" / "meta.json").read_text())["seq_length"] == 131_072
    both = [*args[:-3], str(tmp_path / "b" / "valid-2"), "--records-per-file", "4"]
    both += ["--extra-out", str(tmp_path / "cage" / "valid-2"), "--extra-assays", "CAGE"]
    capsys.readouterr()
    assert main(both) == 0
    assert "2 shard(s) written, 0 up to date" in capsys.readouterr().out
    assert len(ShardSet(tmp_path / "cage" / "valid-2").tracks) == 24
    bad = ["convert", str(tmp_path / "notes.txt"), "--bed", "b", "--targets", "t", "--out", "o"]
    assert main(bad) == 1
    assert "expected a file named <label>-<index>.tfr" in capsys.readouterr().err


def test_bench_runs_at_small_size(tmp_path):
    results = bench_data(
        records=2, items=4, workers=0, seq_length=4096, target_length=64, num_tracks=60,
        max_shift=64, workdir=tmp_path,
    )  # fmt: skip
    table_tracks = 60 * (1543 + 674 + 232) / 7611
    assert abs(results["shape"]["loaded_tracks"] - table_tracks) <= 2
    assert results["loader"]["examples"] >= 4
    assert results["conversion"]["record_mb"] == pytest.approx(2 * (4096 + 2 * 64 * 60) / 1e6)
