"""Reading PyTorch checkpoints (``torch.save`` zip archives) without executing pickled code.

A checkpoint is a zip archive holding ``<root>/data.pkl`` (a pickle of the saved object, whose
tensors name their storage by a key), ``<root>/data/<key>`` (each storage's raw bytes) and
``<root>/byteorder``. Unpickling may call any importable function the pickle names, so
:class:`RestrictedUnpickler` resolves only the globals listed in :data:`ALLOWED` and refuses every
other with a :class:`~flashrna.utils.FlashRNAError` naming it (``module.name``) before it is
imported, let alone called. What an admitted global becomes:

- containers (``collections.OrderedDict``, ``builtins.set``/``frozenset``/``slice``) and NumPy's
  array, dtype and scalar reconstruction: the real thing (they build values from bytes and call
  nothing else);
- tensors (``torch._utils._rebuild_tensor_v2`` over ``torch.<Type>Storage``):
  :class:`StoredTensor`, a reference into the archive read only when asked (a training
  checkpoint's optimiser state is never read);
- pandas frames and indexes and the ``flash_rna`` config and track-mapping classes:
  :class:`Record`, an inert record of the global's name, the arguments the pickle called it with
  and the state it set; nothing of pandas or flash_rna is imported or run.
  :func:`frame_from_record` turns a pandas ``DataFrame`` record into a DataFrame.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from flashrna.utils import FlashRNAError

STORAGE_DTYPES = {
    "torch.FloatStorage": torch.float32,
    "torch.DoubleStorage": torch.float64,
    "torch.HalfStorage": torch.float16,
    "torch.BFloat16Storage": torch.bfloat16,
    "torch.LongStorage": torch.int64,
    "torch.IntStorage": torch.int32,
    "torch.ShortStorage": torch.int16,
    "torch.CharStorage": torch.int8,
    "torch.ByteStorage": torch.uint8,
    "torch.BoolStorage": torch.bool,
    "torch.UntypedStorage": torch.uint8,
}

# Globals kept as inert records: pandas (2.x spells its classes by their defining module, 3.x by
# ``pandas``) and the official FlashRNA classes (flash_rna @ad9be86).
RECORDED = frozenset(
    {
        "pandas.DataFrame",
        "pandas.core.frame.DataFrame",
        "pandas.core.internals.managers.BlockManager",
        "pandas._libs.internals._unpickle_block",
        "pandas.core.indexes.base._new_Index",
        "pandas.Index",
        "pandas.core.indexes.base.Index",
        "pandas.RangeIndex",
        "pandas.core.indexes.range.RangeIndex",
        "pandas._libs.arrays.__pyx_unpickle_NDArrayBacked",
        "pandas.arrays.StringArray",
        "pandas.core.arrays.string_.StringArray",
        "pandas.StringDtype",
        "pandas.core.arrays.string_.StringDtype",
        "flash_rna.models.flashrna.FlashRNA",
        "flash_rna.models.flashrna.FlashRNA_Config",
        "flash_rna.data.tracks_mapping.TracksMapping",
        "flash_rna.data.borzoi.FlashRNAHumanTracksMapping",
        "flash_rna.data.borzoi.FlashRNAMouseTracksMapping",
        "flash_rna.data.borzoi.BorzoiHumanTracksMapping",
        "flash_rna.data.borzoi.BorzoiMouseTracksMapping",
    }
)


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it: bytes written as latin-1 text."""
    if encoding != "latin1":
        raise FlashRNAError(f"pickle asks for _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _numpy_reconstruct() -> Callable:
    from numpy._core.multiarray import _reconstruct

    return _reconstruct


def _numpy_scalar() -> Callable:
    from numpy._core.multiarray import scalar

    return scalar


# Globals that are real objects: name -> a function returning the object.
REAL: dict[str, Callable[[], Any]] = {
    "collections.OrderedDict": lambda: collections.OrderedDict,
    "builtins.set": lambda: set,
    "builtins.frozenset": lambda: frozenset,
    "builtins.slice": lambda: slice,
    "_codecs.encode": lambda: _latin1_bytes,
    "numpy.ndarray": lambda: np.ndarray,
    "numpy.dtype": lambda: np.dtype,
    "numpy.core.multiarray._reconstruct": _numpy_reconstruct,
    "numpy._core.multiarray._reconstruct": _numpy_reconstruct,
    "numpy.core.multiarray.scalar": _numpy_scalar,
    "numpy._core.multiarray.scalar": _numpy_scalar,
}

ALLOWED = frozenset(
    {
        *REAL,
        *RECORDED,
        *STORAGE_DTYPES,
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
    }
)


class Record:
    """An inert stand-in for an object a pickle builds by calling ``global_name``: the
    arguments of the call (``args``, ``kwargs``) and the state the pickle set (``state``)."""

    global_name: ClassVar[str] = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> Record:
        record = object.__new__(cls)
        record.args, record.kwargs, record.state = args, kwargs, None
        return record

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # __new__ recorded everything

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"Record({self.global_name})"


def record_name(value: Any) -> str | None:
    """The global a :class:`Record` (or its class) stands for; None for anything else."""
    if isinstance(value, Record) or (isinstance(value, type) and issubclass(value, Record)):
        return value.global_name
    return None


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: torch.dtype
    numel: int


@dataclass(frozen=True)
class StoredTensor:
    """A tensor of a checkpoint, read from the archive by :meth:`load`."""

    archive: TorchArchive
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.size

    @property
    def dtype(self) -> torch.dtype:
        return self.storage.dtype

    def load(self) -> torch.Tensor:
        flat = self.archive.storage(self.storage)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if any(n == 0 for n in self.size):
            return torch.empty(self.size, dtype=self.dtype)
        if self.offset < 0 or last >= flat.numel():
            raise FlashRNAError(
                f"{self.archive.path}: a tensor of shape {self.size} reaches past its storage "
                f"data/{self.storage.key} ({flat.numel()} elements): corrupt checkpoint"
            )
        return flat.as_strided(self.size, self.stride, self.offset)


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, *extra):
    if hooks:
        raise FlashRNAError("pickle attaches backward hooks to a tensor; refused")
    if not isinstance(storage, tuple) or len(storage) != 2:
        raise FlashRNAError("pickle rebuilds a tensor from something that is not a storage")
    archive, stored = storage
    return StoredTensor(archive, stored, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, hooks=None):
    if hooks:
        raise FlashRNAError("pickle attaches backward hooks to a parameter; refused")
    return data


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a checkpoint's ``data.pkl`` admitting only :data:`ALLOWED` globals; tensor
    storages come from ``archive`` (see the module docstring)."""

    def __init__(self, handle: io.BufferedIOBase, archive: TorchArchive):
        super().__init__(handle)
        self.archive = archive
        self._stubs: dict[str, type[Record]] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = {"__builtin__": "builtins"}.get(module, module)  # protocol 2 spelling
        full = f"{module}.{name}"
        if full not in ALLOWED:
            raise FlashRNAError(
                f"{self.archive.path}: refused to load: the checkpoint's pickle calls the global "
                f"'{full}', which a FlashRNA checkpoint does not need (pickled code is never run)"
            )
        if full in REAL:
            return REAL[full]()
        if full in STORAGE_DTYPES:
            return STORAGE_DTYPES[full]
        if full == "torch._utils._rebuild_tensor_v2":
            return _rebuild_tensor
        if full == "torch._utils._rebuild_parameter":
            return _rebuild_parameter
        if full not in self._stubs:
            self._stubs[full] = type(name, (Record,), {"global_name": full})
        return self._stubs[full]

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise FlashRNAError(f"{self.archive.path}: unknown persistent reference {pid!r:.80}")
        _, dtype, key, _location, numel = pid
        if not isinstance(dtype, torch.dtype):
            raise FlashRNAError(f"{self.archive.path}: storage {key} has no known element type")
        return (self.archive, _Storage(str(key), dtype, int(numel)))


class TorchArchive:
    """A ``torch.save`` zip archive opened for reading: :meth:`load` unpickles its object
    restrictedly; :meth:`storage` reads one storage."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.zip = zipfile.ZipFile(self.path)
        except FileNotFoundError:
            raise FlashRNAError(f"{self.path}: file not found") from None
        except (zipfile.BadZipFile, OSError) as err:
            raise FlashRNAError(
                f"{self.path}: not a complete PyTorch checkpoint (a torch.save zip archive): "
                f"{err}. A truncated download looks like this; fetch the file again"
            ) from None
        pickles = [n for n in self.zip.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise FlashRNAError(
                f"{self.path}: a PyTorch checkpoint holds one data.pkl, this archive holds "
                f"{len(pickles)}"
            )
        self.root = pickles[0][: -len("data.pkl")]
        order = self._read(f"{self.root}byteorder", required=False)
        if order not in (None, b"little"):
            raise FlashRNAError(f"{self.path}: byte order {order!r}; only little-endian is read")
        self._cache: dict[str, torch.Tensor] = {}

    def _read(self, name: str, required: bool = True) -> bytes | None:
        try:
            return self.zip.read(name)
        except KeyError:
            if required:
                raise FlashRNAError(f"{self.path}: the archive has no {name}") from None
            return None
        except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as err:
            raise FlashRNAError(
                f"{self.path}: cannot read {name} ({err}); the file is corrupt or truncated"
            ) from None

    def load(self) -> Any:
        """The checkpoint's object, tensors as :class:`StoredTensor`."""
        data = self._read(f"{self.root}data.pkl")
        try:
            return RestrictedUnpickler(io.BytesIO(data), self).load()
        except FlashRNAError:
            raise
        except Exception as err:  # any malformed pickle: name the file, not the opcode
            raise FlashRNAError(
                f"{self.path}: unreadable checkpoint pickle ({type(err).__name__}: {err})"
            ) from None

    def storage(self, storage: _Storage) -> torch.Tensor:
        """The storage's elements as a flat tensor of its dtype (read once, then cached)."""
        if storage.key not in self._cache:
            raw = self._read(f"{self.root}data/{storage.key}")
            itemsize = torch.empty((), dtype=storage.dtype).element_size()
            if len(raw) != storage.numel * itemsize:
                raise FlashRNAError(
                    f"{self.path}: storage data/{storage.key} holds {len(raw)} bytes, the pickle "
                    f"expects {storage.numel} x {itemsize}: corrupt checkpoint"
                )
            self._cache[storage.key] = (
                torch.frombuffer(bytearray(raw), dtype=storage.dtype)
                if raw
                else torch.empty(0, dtype=storage.dtype)
            )
        return self._cache[storage.key]


def read_checkpoint(path: str | Path) -> Any:
    """The object in a ``torch.save`` checkpoint, read without executing pickled code;
    tensors stay in the archive as :class:`StoredTensor` until loaded."""
    return TorchArchive(path).load()


# --------------------------------------------------------------------------------------------
# pandas records
# --------------------------------------------------------------------------------------------


def _is(value: Any, suffix: str) -> bool:
    name = record_name(value)
    return name is not None and name.rsplit(".", 1)[-1] == suffix


def _values(value: Any, where: str) -> np.ndarray:
    """A block's or index's values as a NumPy array: plain arrays as they are, a pickled
    ``StringArray`` (``__pyx_unpickle_NDArrayBacked`` + state ``(dtype, ndarray)``) as its
    object array."""
    if isinstance(value, np.ndarray):
        return value
    if (
        _is(value, "__pyx_unpickle_NDArrayBacked")
        and value.args
        and _is(value.args[0], "StringArray")
    ):
        state = value.state
        if isinstance(state, tuple) and len(state) >= 2 and isinstance(state[1], np.ndarray):
            return state[1]
    raise FlashRNAError(
        f"{where}: a column of an unsupported kind ({record_name(value) or type(value).__name__})"
    )


def _index_values(index: Any, where: str) -> np.ndarray:
    if not _is(index, "_new_Index") or len(index.args) != 2 or not isinstance(index.args[1], dict):
        raise FlashRNAError(f"{where}: an index of an unsupported kind ({record_name(index)})")
    kind, fields = index.args
    if _is(kind, "RangeIndex"):
        return np.arange(fields.get("start", 0), fields["stop"], fields.get("step", 1))
    if _is(kind, "Index"):
        return _values(fields["data"], where)
    raise FlashRNAError(f"{where}: an index of an unsupported kind ({record_name(kind)})")


def frame_from_record(record: Any, where: str = "pickled table") -> pd.DataFrame:
    """A pandas ``DataFrame`` from its pickled record (pandas 2.1 to 3.x layout: a
    ``BlockManager`` of blocks ``(values, placement, ndim)`` and axes ``[columns, rows]``).
    The row index becomes ``0..n-1``."""
    if not _is(record, "DataFrame") or not isinstance(record.state, dict):
        raise FlashRNAError(f"{where}: not a pickled pandas DataFrame ({record_name(record)})")
    manager = record.state.get("_mgr")
    if not _is(manager, "BlockManager") or len(manager.args) != 2:
        raise FlashRNAError(f"{where}: a DataFrame pickled in a layout this reader does not know")
    blocks, axes = manager.args
    columns = [str(c) for c in _index_values(axes[0], where)]
    rows = len(_index_values(axes[1], where))
    data: dict[int, np.ndarray] = {}
    for block in blocks:
        if not _is(block, "_unpickle_block") or len(block.args) != 3:
            raise FlashRNAError(f"{where}: a DataFrame block of an unsupported kind")
        values, placement, _ndim = block.args
        values = _values(values, where)
        positions = (
            range(len(columns))[placement]
            if isinstance(placement, slice)
            else np.asarray(placement, dtype=np.int64).tolist()
        )
        values = values.reshape(len(positions), rows) if values.ndim == 1 else values
        if values.shape != (len(positions), rows):
            raise FlashRNAError(f"{where}: a block of shape {values.shape} for {rows} rows")
        for k, position in enumerate(positions):
            data[position] = values[k]
    if sorted(data) != list(range(len(columns))):
        raise FlashRNAError(f"{where}: the blocks do not cover the {len(columns)} columns")
    return pd.DataFrame({columns[k]: data[k] for k in range(len(columns))})
