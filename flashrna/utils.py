"""Small shared helpers: atomic writes, devices, seeds, logging, config merging.

Every file the package writes for another step to read goes through :func:`atomic_file` or
:func:`atomic_directory`, so a crash never leaves a half-written file under its final name.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import random
import shutil
import tempfile
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
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; on success it replaces ``path``.

    An existing ``path`` is moved aside first and deleted only after the rename, so at every
    moment either the old or the new complete directory is visible under the final name
    (apart from the instant between two renames).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial"))
    try:
        yield tmp
        _publish(tmp, directory=True)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def merge_config(
    defaults: Mapping[str, Any], overrides: Mapping[str, Any], where: str = "config"
) -> dict[str, Any]:
    """Recursively merge ``overrides`` into ``defaults``; a key absent from ``defaults`` is an
    error that names its full path (``where.key.subkey``), so typos never pass silently.

    A default of ``None`` or an empty dict accepts any value, including mappings."""
    merged = dict(defaults)
    for key, value in overrides.items():
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise FlashRNAError(f"{where}: unknown key '{key}' (known keys: {known})")
        default = defaults[key]
        if isinstance(default, Mapping) and default and isinstance(value, Mapping):
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
