"""Faults and bad input in conversion, shards and the loader (issue 18): each ends as a user
would expect, with a message naming the file, record or value, and nothing silently wrong."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import ROOT, fixture_path, write_planted_shards

from flashrna.cli import main
from flashrna.data import ShardSet, convert_tfrecord, find_shards, make_dataset
from flashrna.tfrecord import read_examples, write_examples
from flashrna.utils import FlashRNAError, exclusive_lock

TINY = "borzoi-tiny/hg38"


def _tiny(name: str) -> Path:
    return fixture_path(f"{TINY}/{name}")


def _convert(tfr: Path, out: Path, **options) -> Path:
    options.setdefault("assays", None)
    options.setdefault("statistics", _tiny("statistics.json"))
    return convert_tfrecord(
        tfr, _tiny("sequences.bed"), _tiny("targets.txt"), out, records_per_file=4, **options
    )


def _digest(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def _rewrite(tfr: Path, out: Path, change) -> None:
    """Copy ``tfr`` to ``out`` with ``change(k, record)`` applied to each record (a dict)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    write_examples(out, [change(k, dict(r)) for k, r in enumerate(read_examples(tfr))])


# -- interrupted conversions -------------------------------------------------------------------

_KILLED_CONVERSION = """
import os, signal, sys
import flashrna.data.shards as shards
from flashrna.data import convert_tfrecord

point = sys.argv[4]
if point == "after-meta":  # the shard is complete in its temporary directory, not renamed yet
    write_json = shards.write_json
    def write_then_die(path, obj):
        write_json(path, obj)
        if path.name == "meta.json":
            os.kill(os.getpid(), signal.SIGKILL)
    shards.write_json = write_then_die
else:  # mid-arrays, after the second record
    add = shards.ShardWriter.add
    def add_then_die(self, *args, **kwargs):
        add(self, *args, **kwargs)
        if len(self.windows) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    shards.ShardWriter.add = add_then_die
tfr, tiny, out = sys.argv[1:4]
convert_tfrecord(tfr, f"{tiny}/sequences.bed", f"{tiny}/targets.txt", out, records_per_file=4,
                 assays=None, statistics=f"{tiny}/statistics.json")
"""


@pytest.mark.parametrize("point", ["after-meta", "mid-arrays"])
def test_kill_9_during_conversion_then_rerun_is_bit_identical(tmp_path, point):
    tfr = _tiny("tfrecords/train-3.tfr")
    reference = _convert(tfr, tmp_path / "reference" / "train-3")
    shards = tmp_path / "shards"
    (shards / "train-2").parent.mkdir()
    _convert(_tiny("tfrecords/train-2.tfr"), shards / "train-2")  # a finished neighbour
    out = shards / "train-3"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_CONVERSION, str(tfr), str(_tiny("")), str(out), point],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert killed.returncode == -9
    leftovers = [p.name for p in shards.iterdir() if p.name.startswith(".train-3.")]
    assert any(name.endswith(".partial") for name in leftovers)
    if point == "after-meta":  # a complete-looking meta.json in the hidden partial
        assert any((shards / name / "meta.json").is_file() for name in leftovers)
    # Readers see only the finished shard: the partial's examples are not counted.
    assert find_shards(shards) == [shards / "train-2"]
    assert len(ShardSet(shards)) == 4

    _convert(tfr, out)  # the rerun cleans up and converts again
    assert sorted(p.name for p in shards.iterdir()) == ["train-2", "train-3"]
    assert _digest(out) == _digest(reference)


# -- "up to date" ---------------------------------------------------------------------------------


def test_up_to_date_follows_everything_that_determines_the_shard(tmp_path):
    tfr = _tiny("tfrecords/test-2.tfr")
    out = _convert(tfr, tmp_path / "test-2")

    def rewritten(**options) -> bool:
        before = out.stat().st_ino
        _convert(tfr, out, **options)
        return out.stat().st_ino != before

    assert not rewritten()
    # Another transform in the track table (same path, same selection): converted again.
    frame = pd.read_csv(_tiny("targets.txt"), sep="\t", index_col=0)
    frame.loc[0, "clip"] = 100
    frame.to_csv(tmp_path / "targets.txt", sep="\t")
    before = out.stat().st_ino
    convert_tfrecord(
        tfr, _tiny("sequences.bed"), tmp_path / "targets.txt", out, records_per_file=4,
        assays=None, statistics=_tiny("statistics.json"),
    )  # fmt: skip
    assert out.stat().st_ino != before
    assert ShardSet(out).tracks.clip[0] == 100
    _convert(tfr, out)
    assert not rewritten()
    stats = json.loads(_tiny("statistics.json").read_text())
    (tmp_path / "statistics.json").write_text(json.dumps({**stats, "crop_bp": 0}))
    assert rewritten(statistics=tmp_path / "statistics.json")
    assert rewritten(species="mouse") and ShardSet(out).species == "mouse"
    assert not rewritten(species="mouse")
    (out / "targets.npy").unlink()  # an array lost: converted again
    assert rewritten(species="mouse")
    with open(out / "sequences.npy", "r+b") as handle:  # truncated: converted again
        handle.truncate(1000)
    assert rewritten(species="mouse")
    assert len(ShardSet(out)) == 2


# -- record contents -----------------------------------------------------------------------------


def test_a_target_of_twice_the_size_is_not_read_as_float32(tmp_path):
    tfr = _tiny("tfrecords/test-1.tfr")
    doubled = tmp_path / "in" / "test-1.tfr"  # float16 with twice the tracks, say
    _rewrite(tfr, doubled, lambda k, r: {**r, "target": r["target"] * 2})
    with pytest.raises(
        FlashRNAError,
        match=r"test-1\.tfr: record 0: target has 606208 bytes; float16 \[2048 bins, 74 targets\] "
        r"is 303104 bytes\. That is the size of float32 .* --target-dtype float32",
    ):
        _convert(doubled, tmp_path / "out", species="human")
    assert not (tmp_path / "out").exists()

    # A file that does store float32 targets, said so, converts to the float16 values.
    float32 = tmp_path / "f32" / "test-1.tfr"

    def widen(k, r):
        return {**r, "target": np.frombuffer(r["target"], "<f2").astype("<f4").tobytes()}

    _rewrite(tfr, float32, widen)
    expected = ShardSet(_convert(tfr, tmp_path / "expected"))
    shard = ShardSet(
        _convert(float32, tmp_path / "f32-out", target_dtype="float32", species="human")
    )
    for k in range(len(shard)):
        np.testing.assert_array_equal(shard.targets(k), expected.targets(k))


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_targets_are_refused_naming_the_record(tmp_path, value):
    tfr = _tiny("tfrecords/test-1.tfr")
    bad = tmp_path / "in" / "test-1.tfr"

    def poison(k, r):
        if k == 2:
            values = np.frombuffer(r["target"], "<f2").reshape(2048, 74).copy()
            values[100, 7] = value
            r["target"] = values.tobytes()
        return r

    _rewrite(tfr, bad, poison)
    with pytest.raises(
        FlashRNAError,
        match=rf"test-1\.tfr: record 2: 1 target value\(s\) are NaN or infinite, the first "
        rf"{value} at bin 100 of track CNhs11049- \(channel 7\)",
    ):
        _convert(bad, tmp_path / "out", species="human")
    assert not (tmp_path / "out").exists()
    # In a track that is not kept (channel 7 is CAGE): not this shard's concern.
    shard = _convert(bad, tmp_path / "subset", species="human", assays=["RNA", "DNASE"])
    assert len(ShardSet(shard)) == 4


def test_wrong_statistics_are_named(tmp_path):
    stats = json.loads(_tiny("statistics.json").read_text())
    (tmp_path / "statistics.json").write_text(json.dumps({**stats, "num_targets": "74"}))
    with pytest.raises(FlashRNAError, match=r"statistics\.json: num_targets is '74', expected"):
        _convert(
            _tiny("tfrecords/test-1.tfr"), tmp_path / "o", statistics=tmp_path / "statistics.json"
        )


# -- shards --------------------------------------------------------------------------------------


def test_bad_shard_arrays_are_clear_errors_not_unpickled(tmp_path):
    root = write_planted_shards(tmp_path / "shards", {"train": 4})
    shard = root / "train-0"
    np.save(shard / "targets.npy", np.array([{"x": 1}] * 4, dtype=object), allow_pickle=True)
    with pytest.raises(FlashRNAError, match=r"train-0/targets\.npy: holds Python objects"):
        ShardSet(root).targets(0)
    np.save(shard / "targets.npy", np.zeros((4, 3, 48), np.float32))
    with pytest.raises(FlashRNAError, match=r"targets\.npy: float32 \[4, 3, 48\], but its meta"):
        ShardSet(root).targets(0)
    meta = json.loads((shard / "meta.json").read_text())
    (shard / "meta.json").write_text(json.dumps({**meta, "num_examples": "4"}))
    with pytest.raises(FlashRNAError, match=r"meta\.json: 'num_examples' is '4', expected int"):
        ShardSet(root)


def test_a_second_writer_of_one_shard_is_refused(tmp_path):
    out = tmp_path / "test-2"
    with (
        exclusive_lock(tmp_path / ".test-2.lock", "held"),
        pytest.raises(FlashRNAError, match=r"test-2 is in use by another flashrna process"),
    ):
        _convert(_tiny("tfrecords/test-2.tfr"), out)
    assert not out.exists()
    _convert(_tiny("tfrecords/test-2.tfr"), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test-2"]


def test_make_dataset_labels_cannot_point_outside_the_output(tmp_path):
    victim = tmp_path / "victim-0"
    victim.mkdir()
    (victim / "notes.txt").write_text("keep me")
    genome = fixture_path("genome/hg38_1m.fa.gz")
    for label in ("../victim", str(tmp_path / "abs"), ".hidden"):
        (tmp_path / "windows.bed").write_text(
            f"chr1\t400000\t402048\tfold0\nchr1\t410000\t412048\t{label}\n"
        )
        with pytest.raises(FlashRNAError, match=r"windows\.bed: row 2: label '.*' is not a plain"):
            make_dataset(
                genome, tmp_path / "windows.bed", tmp_path / "none.txt", tmp_path / "out",
                seq_length=4096,
            )  # fmt: skip
    assert (victim / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim-0", "windows.bed"]


def test_convert_prints_a_summary(tmp_path, capsys):
    args = ["convert", str(_tiny("tfrecords/valid-2.tfr")), "--bed", str(_tiny("sequences.bed"))]
    args += ["--targets", str(_tiny("targets.txt")), "--out", str(tmp_path / "valid-2")]
    args += ["--records-per-file", "4"]
    assert main(args) == 0
    assert capsys.readouterr().out == (
        "convert valid-2.tfr: 1 shard(s) written, 0 up to date: 2 examples × 40 tracks "
        f"(131,072-bp inputs, 2,048 bins of 32 bp, human) in {tmp_path / 'valid-2'}\n"
    )
    assert main(args) == 0
    assert "0 shard(s) written, 1 up to date: 2 examples" in capsys.readouterr().out


# -- loader workers ------------------------------------------------------------------------------

_FAILING_WORKER = """
import sys
from pathlib import Path
from helpers import write_planted_shards
from flashrna.data import TrackDataset, make_loader
from flashrna.utils import FlashRNAError

class Failing(TrackDataset):
    def batch(self, items, shared=False):
        if any(index == 5 for index, *_ in items):
            raise FlashRNAError("example 5 is unreadable (planted)")
        return super().batch(items, shared)

shards = write_planted_shards(Path(sys.argv[1]), {"train": 16})
loader = make_loader(Failing(shards), 2, num_workers=2)
for batch in loader:
    pass
"""


def test_a_loader_worker_error_ends_the_process_with_its_message(tmp_path):
    # Before the fix, the main process printed the error and then hung at exit forever,
    # waiting for workers that ignore SIGTERM.
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_FAILING_WORKER), str(tmp_path / "shards")],
        cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        "flashrna.data.loader.LoaderWorkerError: example 5 is unreadable (planted) "
        "(raised in DataLoader worker process 0)"
    ) or last.endswith("(raised in DataLoader worker process 1)")


def test_convert_never_replaces_a_folder_that_is_not_a_shard(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "figure.pdf").write_text("not a shard")
    with pytest.raises(FlashRNAError, match=r"results exists and is not one of ours \(no meta"):
        _convert(_tiny("tfrecords/test-2.tfr"), out)
    assert sorted(p.name for p in out.iterdir()) == ["figure.pdf"]
