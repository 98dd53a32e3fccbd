"""Atomic writes and config merging."""

from __future__ import annotations

import os
import stat

import pytest

from flashrna.utils import (
    FlashRNAError,
    atomic_directory,
    atomic_file,
    atomic_path,
    merge_config,
)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "a.txt") as handle:
            handle.write("x")
        with atomic_path(tmp_path / "b.npy") as path:
            path.write_bytes(b"y")
        with atomic_directory(tmp_path / "c") as directory:
            (directory / "f").write_text("z")
    finally:
        os.umask(old)
    assert mode(tmp_path / "a.txt") == 0o644
    assert mode(tmp_path / "b.npy") == 0o644
    assert mode(tmp_path / "c") == 0o755


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as handle:
        handle.write("new")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_directory_replaces_an_existing_one(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "old").write_text("1")
    with atomic_directory(tmp_path / "d") as directory:
        (directory / "new").write_text("2")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_merge_config_names_the_unknown_key():
    defaults = {"optim": {"lr": 1e-4, "warmup": 10}, "seed": 0}
    merged = merge_config(defaults, {"optim": {"lr": 3e-4}})
    assert merged == {"optim": {"lr": 3e-4, "warmup": 10}, "seed": 0}
    with pytest.raises(FlashRNAError, match=r"config\.optim: unknown key 'lrr'"):
        merge_config(defaults, {"optim": {"lrr": 1}})


def test_downloads_do_not_import_torch():
    """`flashrna download` (and the workflow's download env) runs without PyTorch."""
    import subprocess
    import sys

    code = "import sys, flashrna.download; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_set_aside_finished_moves_only_a_finished_run(tmp_path):
    """`--restart-finished` (train, distill, finetune): a run with its marker file is moved aside
    whole, an unfinished one stays to resume, and a second finished run gets its own name."""
    from flashrna.utils import set_aside_finished

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    assert set_aside_finished(run, "metrics.json") is None
    assert (run / "checkpoints").is_dir()  # unfinished: kept for resuming
    (run / "metrics.json").write_text("{}")
    first = set_aside_finished(run, "metrics.json")
    assert (
        not run.exists() and (first / "metrics.json").is_file() and (first / "checkpoints").is_dir()
    )
    assert first.name.startswith("run.replaced-")
    (run / "model").mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    second = set_aside_finished(run, "metrics.json")
    assert second != first and second.is_dir() and first.is_dir()
