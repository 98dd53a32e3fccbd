"""Atomic writes, locks, and config merging."""

from __future__ import annotations

import os
import stat

import pytest

from flashrna.utils import (
    FlashRNAError,
    atomic_directory,
    atomic_file,
    atomic_path,
    exclusive_lock,
    merge_config,
    write_safetensors,
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


# -- locks, interrupted writes, foreign folders ------------------------------------------------


def test_a_held_lock_refuses_a_second_holder_naming_the_first(tmp_path):
    import socket

    lock = tmp_path / ".run.lock"
    with exclusive_lock(lock, "run folder x"):
        with (
            pytest.raises(FlashRNAError, match=r"run folder x is in use") as info,
            exclusive_lock(lock, "run folder x"),
        ):
            pass
        message = str(info.value)
        assert f"pid {os.getpid()} on {socket.gethostname()}, started 20" in message
    assert not lock.exists()  # released and removed
    with exclusive_lock(lock, "run folder x"):  # free again
        pass


def test_a_lock_left_by_a_killed_process_is_stale(tmp_path, caplog):
    import signal
    import subprocess
    import sys

    lock = tmp_path / ".run.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from flashrna.utils import exclusive_lock\n"
            f"with exclusive_lock({str(lock)!r}, 'x'):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FlashRNAError, match=f"pid {holder.pid} on"), exclusive_lock(lock, "x"):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock.exists()  # left behind by kill -9, with its holder's details
    with caplog.at_level("WARNING", logger="flashrna"), exclusive_lock(lock, "x"):
        pass
    assert f"taking over a stale lock (pid {holder.pid} on" in caplog.text


def test_atomic_directory_never_replaces_a_folder_that_is_not_its_kind(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with (
        pytest.raises(FlashRNAError, match=r"home exists and is not one of ours \(no meta\.json"),
        atomic_directory(home, marker="meta.json") as directory,
    ):
        (directory / "meta.json").write_text("{}")
    assert (home / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # no partial, no lock left
    (home / "thesis.tex").unlink()
    (home / "meta.json").write_text("{}")  # one of ours: replaced
    with atomic_directory(home, marker="meta.json") as directory:
        (directory / "meta.json").write_text('{"new": 1}')
    assert (home / "meta.json").read_text() == '{"new": 1}'


def test_atomic_directory_cleans_up_after_a_killed_writer(tmp_path):
    # A writer killed while filling its temporary directory, and one killed between moving
    # the old version aside and renaming the new one into place.
    # (mkdtemp names: .<name>.<8 random characters>.partial / .old)
    partial = tmp_path / ".d.abc_1234.partial"
    partial.mkdir()
    (partial / "meta.json").write_text("half")
    old = tmp_path / ".d.def45678.old"
    (old / "d").mkdir(parents=True)
    (old / "d" / "version").write_text("old")
    neighbour = tmp_path / ".d.b.xyz98765.partial"  # another directory's ("d.b") work
    neighbour.mkdir()
    with atomic_directory(tmp_path / "d") as directory:
        assert (tmp_path / "d" / "version").read_text() == "old"  # restored first
        assert not partial.exists() and not old.exists()
        (directory / "version").write_text("new")
    assert (tmp_path / "d" / "version").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".d.b.xyz98765.partial", "d"]


def test_safetensors_outputs_honour_the_umask_and_disk_full_is_an_oserror(tmp_path, monkeypatch):
    import errno

    import safetensors.torch
    import torch
    from safetensors import SafetensorError

    from flashrna.model import build_model, save_model

    old = os.umask(0o022)
    try:
        write_safetensors(tmp_path / "t.safetensors", {"x": torch.zeros(3)})
        save_model(build_model("tiny"), tmp_path / "model")
    finally:
        os.umask(old)
    assert mode(tmp_path / "t.safetensors") == 0o644
    assert mode(tmp_path / "model" / "model.safetensors") == 0o644
    assert mode(tmp_path / "model" / "config.json") == 0o644

    def full(*args, **kwargs):
        raise SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OSError) as info:
        write_safetensors(tmp_path / "u.safetensors", {"x": torch.zeros(3)})
    assert info.value.errno == errno.ENOSPC and "u.safetensors" in str(info.value)
    assert not any(p.name.startswith(".u") for p in tmp_path.iterdir())


def test_merge_config_wants_a_mapping_for_a_section():
    defaults = {"optim": {"lr": 1e-4}, "extra": {}}
    with pytest.raises(FlashRNAError, match=r"config\.optim: expected a mapping .* got 5"):
        merge_config(defaults, {"optim": 5})
    with pytest.raises(FlashRNAError, match=r"config: expected a mapping"):
        merge_config(defaults, ["optim"])
    assert merge_config(defaults, {"extra": 3}) == {"optim": {"lr": 1e-4}, "extra": 3}
