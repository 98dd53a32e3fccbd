"""Small shared helpers: atomic writes, devices, seeds, logging, config merging.

Every file the package writes for another step to read goes through :func:`atomic_file` or
:func:`atomic_directory`, so a crash never leaves a half-written file under its final name.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import logging
import os
import random
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: `flashrna download` runs without it
    import torch

log = logging.getLogger("flashrna")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a file made by mkstemp/mkdtemp (mode 0600/0700) the permissions a plain
    ``open``/``mkdir`` would have, so outputs in shared lab folders stay readable."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_current_umask())


class FlashRNAError(Exception):
    """An error in the user's input (file, record, config key); the CLI prints it without a
    traceback."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that wants a file name (np.save,
    safetensors, savefig); rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        _publish(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    with atomic_path(path) as tmp, open(tmp, mode) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, marker: str | None = None) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; on success it replaces ``path``.

    An existing ``path`` is moved aside first and deleted only after the rename, so at every
    moment either the old or the new complete directory is visible under the final name
    (apart from the instant between two renames).

    While the block runs, ``path`` is locked (:func:`exclusive_lock` on ``.<name>.lock``
    beside it): a second writer of the same directory is refused, naming the first. Holding
    the lock, the leftovers of writers that were killed are dealt with first: temporary
    ``.<name>.*.partial`` directories are deleted, and an old version moved aside
    (``.<name>.*.old``) is put back when ``path`` itself is missing.

    With ``marker`` (a file name such as ``meta.json``), an existing non-empty ``path`` is
    replaced only when it holds that file: a folder that is not what this writer makes (a
    mistyped ``--out``, a home folder) is refused, never deleted.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path.parent / f".{path.name}.lock", str(path)):
        _recover_directory(path)
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise FlashRNAError(
                f"{path} exists and is not a directory; remove it or choose another"
            )
        if marker and path.is_dir() and any(path.iterdir()) and not (path / marker).exists():
            raise FlashRNAError(
                f"{path} exists and is not one of ours (no {marker} in it); refusing to replace "
                "it: choose another output folder, or remove it yourself"
            )
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial"))
        try:
            yield tmp
            _publish(tmp, directory=True)
            old = None
            if path.exists():
                old = Path(
                    tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old")
                )
                os.replace(path, old / path.name)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _recover_directory(path: Path) -> None:
    """Clean up after an :func:`atomic_directory` writer of ``path`` that was killed (the
    caller holds the lock, so no live writer owns these). Only this path's temporaries match:
    mkdtemp's ``.<name>.<8 random characters>.partial`` (so ``a``'s cleanup never touches the
    temporaries of a directory named ``a.b``)."""
    own = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.(partial|old)")
    leftovers = sorted(p for p in path.parent.iterdir() if own.fullmatch(p.name))
    for old in (p for p in leftovers if p.name.endswith(".old")):
        kept = old / path.name
        if not path.exists() and kept.is_dir():
            log.warning("%s: restoring the previous version left by an interrupted write", path)
            os.replace(kept, path)
        shutil.rmtree(old, ignore_errors=True)
    for partial in (p for p in leftovers if p.name.endswith(".partial")):
        log.info("removing %s, left by an interrupted write", partial)
        shutil.rmtree(partial, ignore_errors=True)


# Lock files this process holds: a forked child (a loader worker) closes its copies, so a lock
# dies with the process that took it (see release_inherited_locks).
_HELD_LOCKS: set[int] = set()


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on the lock file ``path`` for ``what`` (a folder being written).

    The lock is ``flock(2)`` on the open file: the kernel releases it when the holder exits or
    is killed (kill -9 included), so a lock file left behind by a killed run is stale by
    construction: the next run takes it over and says so. (On NFS, Linux implements flock with
    NFS byte-range locks, which the server releases when a crashed client's lease expires.) The
    file holds the holder's pid, host, start time and command, for the refusal message; it is
    removed on release.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise FlashRNAError(
                f"{what} is in use by another flashrna process ({holder}); wait for it to "
                "finish or stop it, or choose another output folder"
            ) from None
        # The previous holder removes the file on release: make sure we locked the file that
        # is still there, not one it just unlinked.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    stale = os.pread(fd, 4096, 0)
    if stale.strip():
        log.warning(
            "%s: taking over a stale lock (%s): that process ended without releasing it",
            what,
            _lock_holder(fd),
        )
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": " ".join(sys.argv),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)
    _HELD_LOCKS.add(fd)
    try:
        yield
    finally:
        _HELD_LOCKS.discard(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def _lock_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0))
        return (
            f"pid {holder['pid']} on {holder['host']}, started {holder['started']}: "
            f"{holder['command']}"
        )
    except (ValueError, KeyError, TypeError):
        return "holder not recorded yet"


def release_inherited_locks() -> None:
    """In a forked child (a DataLoader worker): close the copies of the parent's lock files,
    so the locks go with the parent (closing a copy does not unlock the parent's)."""
    for fd in list(_HELD_LOCKS):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_LOCKS.clear()


def write_safetensors(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: dict | None = None
) -> None:
    """safetensors ``save_file``, atomically and with the permissions of other outputs
    (safetensors itself creates files 0600). A failed write (disk full) is an ``OSError``
    naming ``path``, as for other writes (safetensors raises its own error type)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        try:
            save_file(dict(tensors), str(tmp), metadata=metadata)
        except SafetensorError as err:
            code = re.search(r"os error (\d+)", str(err))
            if code is None:
                raise
            number = int(code.group(1))
            raise OSError(number, os.strerror(number), str(path)) from None


def set_aside_finished(directory: str | os.PathLike, marker: str) -> Path | None:
    """Move a run that finished before (``directory/marker`` exists) to
    ``<directory>.replaced-<YYYYmmdd-HHMMSS>``, so a new run starts afresh beside it; an
    unfinished run stays (it resumes). Returns where the old run went, or None."""
    import time

    directory = Path(directory)
    if not (directory / marker).exists():
        return None
    target = directory.with_name(f"{directory.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
    suffix = 1
    while target.exists():
        target = target.with_name(f"{target.name.split('~')[0]}~{suffix}")
        suffix += 1
    directory.rename(target)
    logging.getLogger(__name__).warning(
        "%s finished before (%s): moved it to %s; starting afresh", directory, marker, target
    )
    return target


def save_figure(figure: Any, path: str | os.PathLike) -> list[Path]:
    """Write a matplotlib figure as ``path`` with the suffix ``.png`` and as PDF beside it,
    atomically; returns both paths."""
    path = Path(path)
    paths = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    for target in paths:
        with atomic_path(target) as tmp:
            figure.savefig(tmp, dpi=200, format=target.suffix[1:])
    return paths


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_file(path) as handle:
        json.dump(obj, handle, indent=2, sort_keys=False, default=_json_default)
        handle.write("\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FlashRNAError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise FlashRNAError(f"{path}: not valid JSON ({err})") from None


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex), read in 16-MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"`` picks CUDA when available, else CPU; a named unavailable
    device is a clear error."""
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FlashRNAError(f"device {device} was asked for, but CUDA is not available here")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Log to stderr: INFO by default, DEBUG with ``verbose``, WARNING with ``quiet``."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def merge_config(
    defaults: Mapping[str, Any], overrides: Mapping[str, Any], where: str = "config"
) -> dict[str, Any]:
    """Recursively merge ``overrides`` into ``defaults``; a key absent from ``defaults`` is an
    error that names its full path (``where.key.subkey``), so typos never pass silently.

    A default of ``None`` or an empty dict accepts any value, including mappings; a section
    (a non-empty dict default) must be given a mapping."""
    if not isinstance(overrides, Mapping):
        raise FlashRNAError(f"{where}: expected a mapping of keys to values, got {overrides!r}")
    merged = dict(defaults)
    for key, value in overrides.items():
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise FlashRNAError(f"{where}: unknown key '{key}' (known keys: {known})")
        default = defaults[key]
        if isinstance(default, Mapping) and default:
            merged[key] = merge_config(default, value, f"{where}.{key}")
        else:
            merged[key] = value
    return merged


def open_text(path: str | os.PathLike):
    """Open a text file for reading, gzip/bgzip-compressed ones (``.gz``, ``.bgz``) too."""
    path = Path(path)
    if path.suffix in (".gz", ".bgz"):
        return gzip.open(path, "rt")
    return open(path)


def tab_separated_lines(handle: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, tab-separated fields) of each line that is neither blank nor a
    ``#`` comment (GTF, VCF)."""
    for line_no, line in enumerate(handle, start=1):
        if line.startswith("#") or not line.strip():
            continue
        yield line_no, line.rstrip("\n").split("\t")


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FlashRNAError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise FlashRNAError(f"{path}: not valid YAML ({err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FlashRNAError(f"{path}: expected a mapping at the top level")
    return data
