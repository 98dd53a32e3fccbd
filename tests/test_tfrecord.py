"""TFRecord reading and writing against the real Borzoi-schema fixture files."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import fixture_path

from flashrna.tfrecord import (
    decode_example,
    detect_compression,
    encode_example,
    masked_crc32c,
    read_examples,
    read_records,
    write_examples,
    write_records,
)
from flashrna.utils import FlashRNAError

TINY = "borzoi-tiny/hg38/tfrecords"


def _tiny_files() -> list[Path]:
    return sorted(fixture_path(TINY).glob("*.tfr"))


def test_fixture_records_have_the_borzoi_schema():
    counts = {"train": 0, "valid": 0, "test": 0}
    for path in _tiny_files():
        assert detect_compression(path) == "zlib"
        for example in read_examples(path):
            counts[path.name.split("-")[0]] += 1
            assert set(example) == {"sequence", "target"}
            sequence = np.frombuffer(example["sequence"], np.uint8)
            targets = np.frombuffer(example["target"], "<f2").reshape(2048, 74)
            assert sequence.shape == (131072,)
            assert sequence.max() <= 4
            assert np.isfinite(targets).all() and (targets >= 0).all()
    assert counts == {"train": 45, "valid": 10, "test": 10}


def test_encoder_reproduces_tensorflow_bytes():
    # TensorFlow's own serialization of a real record is the independent expectation.
    payload = next(read_records(_tiny_files()[0]))
    assert encode_example(decode_example(payload)) == payload


def test_masked_crc_matches_the_crc32c_check_value():
    crc = 0xE3069283  # CRC32C("123456789"), the standard check value
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % 2**32


def _uncompressed_copy(source: Path, target: Path) -> list[int]:
    """Write ``source`` decompressed; return each record's payload start offset."""
    data = zlib.decompress(source.read_bytes())
    target.write_bytes(data)
    offsets, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        offsets.append(pos + 12)
        pos += 12 + length + 4
    return offsets


def test_flipped_byte_names_file_and_record(tmp_path):
    source = _tiny_files()[0]
    copy = tmp_path / "plain.tfr"
    offsets = _uncompressed_copy(source, copy)
    assert detect_compression(copy) == "none"
    assert len(list(read_records(copy))) == len(offsets)
    data = bytearray(copy.read_bytes())
    data[offsets[2] + 1000] ^= 0x01
    copy.write_bytes(bytes(data))
    with pytest.raises(FlashRNAError, match=r"plain\.tfr: record 2: payload CRC32C mismatch"):
        list(read_records(copy))

    # A flipped byte inside the compressed stream is caught too, by zlib or by a CRC.
    compressed = bytearray(source.read_bytes())
    compressed[len(compressed) // 2] ^= 0x40
    bad = tmp_path / "bad.tfr"
    bad.write_bytes(bytes(compressed))
    with pytest.raises(FlashRNAError, match=r"bad\.tfr: record \d+: "):
        list(read_records(bad))


def test_truncated_file_names_file_and_record(tmp_path):
    source = _tiny_files()[0]
    cut = tmp_path / "cut.tfr"
    cut.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(FlashRNAError, match=r"cut\.tfr: record \d+: .*(truncated|ends early)"):
        list(read_records(cut))

    plain = tmp_path / "plain.tfr"
    offsets = _uncompressed_copy(source, plain)
    plain.write_bytes(plain.read_bytes()[: offsets[1] + 10])
    with pytest.raises(FlashRNAError, match=r"plain\.tfr: record 1: truncated"):
        list(read_records(plain))


def test_empty_files_hold_zero_records(tmp_path):
    empty_zlib = tmp_path / "fold3-430.tfr"
    empty_zlib.write_bytes(zlib.compress(b""))
    assert empty_zlib.stat().st_size == 8
    assert list(read_examples(empty_zlib)) == []
    empty = tmp_path / "empty.tfr"
    empty.write_bytes(b"")
    assert list(read_examples(empty)) == []


def test_not_a_tfrecord_is_refused(tmp_path):
    path = tmp_path / "notes.tfr"
    path.write_text("hello, this is not a TFRecord file")
    with pytest.raises(FlashRNAError, match=r"notes\.tfr: not a TFRecord"):
        list(read_records(path))


@pytest.mark.parametrize("compression", ["zlib", "gzip", "none"])
def test_write_read_round_trip(tmp_path, compression):
    rng = np.random.default_rng(0)
    examples = [
        {
            "lengths": np.array([12288 - i], np.int64),
            "sequence": rng.integers(0, 4, 300, dtype=np.uint8).tobytes(),
            "targets": rng.normal(size=1).astype(np.float16).tobytes(),
            "signed": [-1, 0, 2**40],
            "floats": rng.normal(size=5),
            "several": [b"a", b"", b"xyz"],
        }
        for i in range(3)
    ]
    path = tmp_path / f"saluki.{compression}.tfr"
    assert write_examples(path, examples, compression=compression) == 3
    assert detect_compression(path) == compression
    back = list(read_examples(path))
    assert len(back) == 3
    for written, read in zip(examples, back, strict=True):
        assert read["sequence"] == written["sequence"]
        assert read["targets"] == written["targets"]
        assert read["several"] == written["several"]
        np.testing.assert_array_equal(read["lengths"], written["lengths"])
        np.testing.assert_array_equal(read["signed"], written["signed"])
        assert read["floats"].dtype == np.float32
        np.testing.assert_array_equal(read["floats"], written["floats"].astype(np.float32))


def test_unpacked_repeated_fields_decode():
    # Hand-built Example with unpacked float (wire type 5) and int64 (wire type 0) values.
    def delimited(number: int, body: bytes) -> bytes:
        return bytes([number << 3 | 2, len(body)]) + body

    floats = b"".join(b"\x0d" + struct.pack("<f", v) for v in (1.5, -2.0))
    ints = b"\x08\x07" + b"\x08" + b"\xff" * 9 + b"\x01"  # 7 and -1
    entries = delimited(1, delimited(1, b"f") + delimited(2, delimited(2, floats)))
    entries += delimited(1, delimited(1, b"i") + delimited(2, delimited(3, ints)))
    decoded = decode_example(delimited(1, entries))
    np.testing.assert_array_equal(decoded["f"], [1.5, -2.0])
    np.testing.assert_array_equal(decoded["i"], [7, -1])


def test_write_is_atomic_on_error(tmp_path):
    path = tmp_path / "out.tfr"
    write_records(path, [b"old"])

    def failing():
        yield b"new"
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_records(path, failing())
    assert list(read_records(path)) == [b"old"]
    assert [p.name for p in tmp_path.iterdir()] == ["out.tfr"]


def test_bad_feature_type_is_named(tmp_path):
    with pytest.raises(FlashRNAError, match=re.escape("feature 'x'")):
        write_examples(tmp_path / "x.tfr", [{"x": {"not": "encodable"}}])
