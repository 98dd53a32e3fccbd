"""TFRecord files of ``tf.train.Example`` protos, read and written without TensorFlow.

File layout (TensorFlow's ``TFRecordWriter``; Borzoi compresses the *whole file* with ZLIB)::

    file    := compress(record*)                         compression: ZLIB, GZIP or none
    record  := uint64 length (LE)
               uint32 masked_crc32c(length bytes) (LE)
               payload[length]                           a serialized tf.train.Example
               uint32 masked_crc32c(payload) (LE)
    masked_crc32c(b) = ((c >> 15) | (c << 17)) + 0xA282EAD8  (mod 2**32), c = CRC32C(b)

The compression is detected from the first bytes. An empty file, or an empty ZLIB stream (the 8-byte
file Borzoi writes for an empty fold shard), holds zero records. Reading streams: a real Borzoi file
decompresses to 16 records × 93.5 MB, so only one record is held in memory at a time. Both CRCs of
every record are checked; a truncated or corrupt file raises :class:`~flashrna.utils.FlashRNAError`
naming the file, the record index and what is wrong.

The protobuf schema decoded here (field numbers as in TensorFlow's ``example.proto``)::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }  entries { string key = 1; Feature value = 2; }
    Feature  { oneof { BytesList bytes_list = 1; FloatList float_list = 2;
                       Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }   FloatList { repeated float value = 1; }
    Int64List { repeated int64 value = 1; }   (numeric lists packed or unpacked)

Decoded feature values (:data:`Feature`): a ``bytes_list`` with one value is ``bytes`` (Borzoi's
``sequence`` and ``target``), any other count a ``list[bytes]``; a ``float_list`` is a float32
array ``[n]``; an ``int64_list`` an int64 array ``[n]``. The writer takes the same types, plus
lists of ints (int64_list) and lists of floats (float_list).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import crc32c
import numpy as np

from flashrna.utils import FlashRNAError, atomic_file

Feature = bytes | list[bytes] | np.ndarray
"""A decoded feature value; see the module docstring."""

_MASK_DELTA = 0xA282EAD8
_CHUNK = 1 << 22  # compressed bytes read per step
_MAX_OUT = 1 << 24  # decompressed bytes produced per step (bounds memory on zero-runs)
_COMPRESSIONS = ("zlib", "gzip", "none")


def masked_crc32c(data: bytes | memoryview) -> int:
    """TFRecord's masked CRC32C of ``data``."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def detect_compression(path: str | os.PathLike) -> str:
    """``"zlib"``, ``"gzip"`` or ``"none"`` from the first bytes of ``path`` (an empty file is
    ``"none"``)."""
    with open(path, "rb") as handle:
        head = handle.read(12)
    return _compression_of(Path(path), head)


def _compression_of(path: Path, head: bytes) -> str:
    if not head:
        return "none"
    # An uncompressed file starts with a length whose masked CRC follows it.
    if len(head) == 12 and masked_crc32c(head[:8]) == struct.unpack("<I", head[8:])[0]:
        return "none"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0:
        return "zlib"
    raise FlashRNAError(
        f"{path}: not a TFRecord file (no ZLIB, GZIP or uncompressed record header at the start)"
    )


class _Stream:
    """Decompressed bytes of a file, read in exact-size pieces (each byte is copied once)."""

    def __init__(self, handle: BinaryIO, compression: str) -> None:
        self._handle = handle
        wbits = {"zlib": zlib.MAX_WBITS, "gzip": 16 + zlib.MAX_WBITS}.get(compression)
        self._inflate = None if wbits is None else zlib.decompressobj(wbits)
        self._tail = b""  # compressed input not yet inflated

    def read(self, size: int) -> bytes:
        """Exactly ``size`` bytes, or fewer only at the end of the data."""
        parts, need = [], size
        while need > 0:
            if self._inflate is None:
                chunk = self._handle.read(need)
                if not chunk:
                    break
            else:
                data = self._tail or self._handle.read(_CHUNK)
                if not data:
                    break
                # Inflating at most what is needed leaves nothing over to buffer.
                chunk = self._inflate.decompress(data, min(need, _MAX_OUT))
                self._tail = self._inflate.unconsumed_tail
                if self._inflate.eof and self._inflate.unused_data:
                    raise zlib.error("data after the end of the compressed stream")
            parts.append(chunk)
            need -= len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def finished(self) -> bool:
        """True if the compressed stream was complete (always True when uncompressed)."""
        return self._inflate is None or self._inflate.eof


def read_records(path: str | os.PathLike) -> Iterator[bytes]:
    """Yield the payload of each record of a TFRecord file, checking both CRCs."""
    path = Path(path)
    if not path.is_file():
        raise FlashRNAError(f"{path}: file not found")
    with open(path, "rb") as handle:
        compression = _compression_of(path, handle.read(12))
        handle.seek(0)
        stream = _Stream(handle, compression)
        index = 0
        while True:
            try:
                header = stream.read(12)
                if not header:
                    if not stream.finished():
                        raise FlashRNAError(
                            f"{path}: record {index}: the compressed stream ends early "
                            f"(file truncated?)"
                        )
                    return
                if len(header) < 12:
                    raise FlashRNAError(
                        f"{path}: record {index}: truncated header ({len(header)} of 12 bytes)"
                    )
                length, length_crc = struct.unpack("<QI", header)
                if masked_crc32c(header[:8]) != length_crc:
                    raise FlashRNAError(
                        f"{path}: record {index}: length CRC32C mismatch; the file is corrupt"
                    )
                payload = stream.read(length)
                footer = stream.read(4)
            except zlib.error as err:
                raise FlashRNAError(
                    f"{path}: record {index}: corrupt {compression.upper()} data ({err})"
                ) from None
            if len(footer) < 4:
                raise FlashRNAError(
                    f"{path}: record {index}: truncated (expected {length + 4} bytes of payload "
                    f"and CRC, the file ends after {len(payload) + len(footer)})"
                )
            if masked_crc32c(payload) != struct.unpack("<I", footer)[0]:
                raise FlashRNAError(
                    f"{path}: record {index}: payload CRC32C mismatch; the file is corrupt"
                )
            yield payload
            index += 1


def read_examples(path: str | os.PathLike) -> Iterator[dict[str, Feature]]:
    """Yield each record of a TFRecord file decoded as a ``tf.train.Example`` feature dict."""
    for index, payload in enumerate(read_records(path)):
        try:
            yield decode_example(payload)
        except ValueError as err:
            raise FlashRNAError(f"{path}: record {index}: not a tf.train.Example ({err})") from None


# ---------------------------------------------------------------------------------------------
# Protobuf decoding
# ---------------------------------------------------------------------------------------------


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(data: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield ``(field number, wire type, value)``: an int for varint and fixed-width fields
    (fixed fields as their raw little-endian bits), a memoryview for length-delimited ones."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ValueError(f"field {number} runs past the end of its message")
            value, pos = data[pos : pos + size], pos + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(data):
                raise ValueError(f"field {number} runs past the end of its message")
            value, pos = int.from_bytes(data[pos : pos + width], "little"), pos + width
        else:
            raise ValueError(f"unsupported wire type {wire} for field {number}")
        yield number, wire, value


def _decode_feature(data: memoryview) -> Feature:
    kind, body = 1, memoryview(b"")
    for number, wire, value in _fields(data):
        if number in (1, 2, 3) and wire == 2:
            kind, body = number, value
    if kind == 1:
        values = [bytes(v) for n, w, v in _fields(body) if n == 1 and w == 2]
        return values[0] if len(values) == 1 else values
    if kind == 2:
        parts: list[np.ndarray] = []
        for number, wire, value in _fields(body):
            if number != 1:
                continue
            if wire == 2:  # packed
                parts.append(np.frombuffer(value, dtype="<f4"))
            elif wire == 5:
                parts.append(np.array([value], dtype="<u4").view("<f4"))
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    ints: list[int] = []
    for number, wire, value in _fields(body):
        if number != 1:
            continue
        if wire == 2:  # packed
            pos = 0
            while pos < len(value):
                item, pos = _varint(value, pos)
                ints.append(item)
        elif wire == 0:
            ints.append(value)
    # Negative int64s arrive as 64-bit two's complement.
    return np.array(ints, dtype=np.uint64).view(np.int64)


def decode_example(payload: bytes | memoryview) -> dict[str, Feature]:
    """Decode a serialized ``tf.train.Example`` into ``{name: value}``."""
    features: dict[str, Feature] = {}
    for number, wire, value in _fields(memoryview(payload)):
        if number != 1 or wire != 2:
            continue
        for entry_number, entry_wire, entry in _fields(value):
            if entry_number != 1 or entry_wire != 2:
                continue
            key, feature = "", memoryview(b"")
            for n, w, v in _fields(entry):
                if n == 1 and w == 2:
                    key = bytes(v).decode("utf-8")
                elif n == 2 and w == 2:
                    feature = v
            features[key] = _decode_feature(feature)
    return features


# ---------------------------------------------------------------------------------------------
# Protobuf encoding and writing
# ---------------------------------------------------------------------------------------------


def _encode_varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _delimited(number: int, body: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(body)) + body


def _encode_feature(name: str, value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        value = [bytes(value)]
    if isinstance(value, list) and all(isinstance(v, bytes | bytearray) for v in value) and value:
        return _delimited(1, b"".join(_delimited(1, bytes(v)) for v in value))
    array = np.asarray(value)
    if array.dtype.kind == "f":
        packed = np.ascontiguousarray(array, dtype="<f4").tobytes()
        return _delimited(2, _delimited(1, packed))
    if array.dtype.kind in "iub" or array.size == 0:
        packed = b"".join(_encode_varint(int(v)) for v in array.reshape(-1))
        return _delimited(3, _delimited(1, packed))
    raise FlashRNAError(
        f"feature '{name}': cannot encode a value of type {type(value).__name__} "
        f"(use bytes, a list of bytes, or an int/float array or list)"
    )


def encode_example(features: Mapping[str, object]) -> bytes:
    """Serialize ``{name: value}`` as a ``tf.train.Example`` (value types: module docstring;
    numeric arrays are flattened)."""
    entries = b"".join(
        _delimited(1, _delimited(1, name.encode("utf-8")) + _delimited(2, _encode_feature(name, v)))
        for name, v in features.items()
    )
    return _delimited(1, entries)


def write_records(
    path: str | os.PathLike,
    payloads: Iterable[bytes],
    compression: str = "zlib",
    level: int = 6,
) -> int:
    """Write raw record payloads as a TFRecord file, atomically; return the record count.

    ``compression`` is ``"zlib"`` (Borzoi, Saluki), ``"gzip"`` or ``"none"``; ``level`` is the
    zlib compression level (0-9).
    """
    if compression not in _COMPRESSIONS:
        raise FlashRNAError(f"compression must be one of {_COMPRESSIONS}, not '{compression}'")
    wbits = {"zlib": zlib.MAX_WBITS, "gzip": 16 + zlib.MAX_WBITS}.get(compression)
    deflate = None if wbits is None else zlib.compressobj(level, zlib.DEFLATED, wbits)
    count = 0
    with atomic_file(path, "wb") as handle:
        for payload in payloads:
            length = struct.pack("<Q", len(payload))
            pieces = (
                length,
                struct.pack("<I", masked_crc32c(length)),
                payload,
                struct.pack("<I", masked_crc32c(payload)),
            )
            for piece in pieces:
                handle.write(piece if deflate is None else deflate.compress(piece))
            count += 1
        if deflate is not None:
            handle.write(deflate.flush())
    return count


def write_examples(
    path: str | os.PathLike,
    examples: Iterable[Mapping[str, object]],
    compression: str = "zlib",
    level: int = 6,
) -> int:
    """Write ``tf.train.Example`` feature dicts as a TFRecord file, atomically; return the
    record count. Round-trips with :func:`read_examples`.

    Example (a Borzoi record)::

        write_examples("fold3-0.tfr", [{"sequence": seq_u8.tobytes(),
                                        "target": targets_f16.tobytes()}])
    """
    return write_records(path, (encode_example(e) for e in examples), compression, level)
