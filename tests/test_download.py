"""`flashrna download` against local files only: gsutil copying a local "bucket", https from a
local server, resume, verification errors, requester pays, manifests."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import shutil
import threading
import zipfile
from pathlib import Path

import pytest
from helpers import ROOT, fixture_path, run_in_env

from flashrna.download import (
    ManifestRow,
    Options,
    derive_tfrecord_rows,
    download,
    parse_gsutil_listing,
    read_manifest,
    unpack,
    write_manifest,
)
from flashrna.utils import FlashRNAError

needs_gsutil = pytest.mark.skipif(shutil.which("gsutil") is None, reason="needs gsutil")


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def bucket(tmp_path):
    """A local directory laid out like a bucket, and rows for its files (sizes and md5s)."""
    root = tmp_path / "bucket"
    files = {
        "data/hg38/sequences.bed": b"chr1\t0\t8192\tfold3\n",
        "data/hg38/tfrecords/fold3-0.tfr": bytes(range(256)) * 8,
        "data/hg38/tfrecords/fold3-1.tfr": b"x\x9c\x03\x00\x00\x00\x00\x01",
    }
    rows = []
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        rows.append(ManifestRow(name, name.replace("data/", "borzoi/"), len(data), md5(data)))
    return root, rows, files


@needs_gsutil
def test_local_bucket_copy_and_resume(tmp_path, bucket):
    root, rows, files = bucket
    options = Options(data_dir=tmp_path / "data", source_root=root)
    found = download(rows, options, record=tmp_path / "record.tsv")
    for row, data in zip(rows, files.values(), strict=True):
        assert (options.data_dir / row.destination).read_bytes() == data
    assert [r.size for r in found] == [len(d) for d in files.values()]
    assert read_manifest(tmp_path / "record.tsv") == found
    assert not list(options.data_dir.rglob(".flashrna-download*"))  # no staging left behind
    # Resume: verified files are skipped (the sources may even be gone).
    stamps = {r.destination: (options.data_dir / r.destination).stat().st_mtime_ns for r in rows}
    shutil.rmtree(root)
    download(rows, options)
    for row in rows:
        assert (options.data_dir / row.destination).stat().st_mtime_ns == stamps[row.destination]


@needs_gsutil
def test_download_runs_in_its_job_env(tmp_path, bucket):
    """The download rules run in workflow/envs/download.yaml (no PyTorch, SciPy or matplotlib):
    `flashrna download` fetches a local bucket with only that env's packages importable."""
    root, rows, files = bucket
    write_manifest(tmp_path / "manifest.tsv", rows)
    argv = ["download", "--manifest", str(tmp_path / "manifest.tsv")]
    argv += ["--data-dir", str(tmp_path / "data"), "--source-root", str(root)]
    run = run_in_env(ROOT / "workflow" / "envs" / "download.yaml", argv)
    assert run.returncode == 0, run.stderr
    for row, data in zip(rows, files.values(), strict=True):
        assert (tmp_path / "data" / row.destination).read_bytes() == data


@needs_gsutil
def test_concurrent_jobs_into_one_directory(tmp_path, bucket, monkeypatch):
    """The workflow fetches each fold in its own job, all into tfrecords/: a job that finishes
    while another is copying must not pull the other's staging directory from under it."""
    import flashrna.download as module

    root, rows, files = bucket
    options = Options(data_dir=tmp_path / "data", source_root=root)
    first, second = rows[1], rows[2]  # both in borzoi/hg38/tfrecords/
    real = module._run_tool
    calls = []

    def run_tool(command, sources, target, chunk=500):
        calls.append(target)
        if len(calls) == 1:  # the first job's copy starts only after the second job finished
            download([second], options)
        real(command, sources, target, chunk)

    monkeypatch.setattr(module, "_run_tool", run_tool)
    download([first], options)
    assert calls[0] != calls[1]  # each job stages in a directory of its own
    for row in (first, second):
        assert (options.data_dir / row.destination).read_bytes() == files[row.source]
    assert not list(options.data_dir.rglob(".flashrna-download*"))


@needs_gsutil
@pytest.mark.parametrize("field", ["size", "md5"])
def test_mismatch_is_a_clear_error_and_leaves_nothing(tmp_path, bucket, field):
    root, rows, _ = bucket
    wrong = ManifestRow(rows[1].source, rows[1].destination, rows[1].size, rows[1].md5)
    wrong = ManifestRow(
        wrong.source,
        wrong.destination,
        wrong.size + 1 if field == "size" else wrong.size,
        "0" * 32 if field == "md5" else wrong.md5,
    )
    options = Options(data_dir=tmp_path / "data", source_root=root)
    with pytest.raises(FlashRNAError, match=f"fold3-0.tfr.*{field}"):
        download([wrong], options)
    assert not (options.data_dir / wrong.destination).exists()


def test_requester_pays_without_billing_project_is_a_clear_error(tmp_path):
    rows = [ManifestRow("gs://borzoi-paper/data/hg38/sequences.bed", "borzoi/hg38/sequences.bed")]
    with pytest.raises(FlashRNAError, match=r"Requester Pays.*--billing-project"):
        download(rows, Options(data_dir=tmp_path))


def test_manual_source_names_where_to_get_it(tmp_path):
    rows = [ManifestRow("manual:https://example.org/eqtls", "eqtl/table.tsv")]
    with pytest.raises(FlashRNAError, match=r"fetch it from https://example\.org/eqtls"):
        download(rows, Options(data_dir=tmp_path))


@contextlib.contextmanager
def local_server(directory: Path):
    """An HTTP server on 127.0.0.1 (free port) serving ``directory``; stopped on exit."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.daemon = True
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_https_from_a_local_server_with_gunzip(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    fasta = b">chr1\n" + b"ACGT" * 30 + b"\n"
    (served / "g.ml.fa.gz").write_bytes(gzip.compress(fasta, mtime=0))
    data = (served / "g.ml.fa.gz").read_bytes()
    with local_server(served) as url:
        row = ManifestRow(f"{url}/g.ml.fa.gz", "genome/g.ml.fa.gz", len(data), md5(data), "gunzip")
        options = Options(data_dir=tmp_path / "data")
        download([row], options)
        # A stale partial transfer is replaced (this server ignores ranges).
        (options.data_dir / "genome/g.ml.fa.gz").unlink()
        staging = options.data_dir / "genome/.flashrna-download"
        staging.mkdir()
        (staging / "g.ml.fa.gz.partial").write_bytes(b"junk")
        download([row], options)
        bad = ManifestRow(f"{url}/g.ml.fa.gz", "genome/h.fa.gz", len(data) + 5)
        with pytest.raises(FlashRNAError, match="size"):
            download([bad], options)
    assert (options.data_dir / "genome/g.ml.fa.gz").read_bytes() == data
    assert (options.data_dir / "genome/g.ml.fa").read_bytes() == fasta
    assert (options.data_dir / "genome/g.ml.fa.fai").read_text().startswith("chr1\t120\t")


def test_manifest_round_trip_and_errors(tmp_path):
    rows = [ManifestRow("gs://b/x", "a/x", 3, "0" * 32, "gunzip"), ManifestRow("y", "a/y")]
    write_manifest(tmp_path / "m.tsv", rows, comment="two rows")
    assert read_manifest(tmp_path / "m.tsv") == rows
    text = (tmp_path / "m.tsv").read_text().replace("\t3\t", "\tthree\t")
    (tmp_path / "bad.tsv").write_text(text)
    with pytest.raises(FlashRNAError, match=r"bad.tsv:3: size 'three'"):
        read_manifest(tmp_path / "bad.tsv")


def test_paper_manifest_lists_the_real_human_tfrecords():
    bed = fixture_path("borzoi/sequences_human.bed.gz")
    paper = read_manifest(Path(__file__).parents[1] / "config" / "manifest.tsv")
    metadata = [r for r in paper if "/tfrecords/" not in r.destination]
    derived = derive_tfrecord_rows(metadata, "hg38", bed)
    listed = [r for r in paper if r.destination.startswith("borzoi/hg38/tfrecords/")]
    assert [r.destination for r in derived if "/tfrecords/" in r.destination] == [
        r.destination for r in listed
    ]
    assert len(listed) == 3473  # sum over folds of ceil(windows / 16); no fold is a multiple
    assert listed[0].source == "gs://borzoi-paper/data/hg38/tfrecords/fold0-0.tfr"


def test_gsutil_listing_parser():
    text = (
        "gs://borzoi-paper/data/mm10/tfrecords/fold0-0.tfr:\n"
        "    Creation time:          Tue, 01 Aug 2023 00:00:00 GMT\n"
        "    Content-Length:         12345\n"
        "    Hash (crc32c):          AAAAAA==\n"
        "    Hash (md5):             1B2M2Y8AsgTpgAmY7PhCfg==\n"
        "gs://borzoi-paper/data/mm10/statistics.json:\n"
        "    Content-Length:         10\n"
        "TOTAL: 2 objects, 12355 bytes (12.07 KiB)\n"
    )
    assert parse_gsutil_listing(text) == {
        "gs://borzoi-paper/data/mm10/tfrecords/fold0-0.tfr": (
            12345,
            "d41d8cd98f00b204e9800998ecf8427e",
        ),
        "gs://borzoi-paper/data/mm10/statistics.json": (10, None),
    }


def test_derived_and_unpacked_destinations_stay_under_the_data_folder(tmp_path):
    rows = [ManifestRow("gs://b/data/hg38/sequences.bed", "borzoi/hg38/sequences.bed")]
    bed = tmp_path / "sequences.bed"
    for label in ("../../../outside", "/etc/x", ".."):
        bed.write_text(f"chr1\t0\t8192\tfold0\nchr1\t0\t8192\t{label}\n")
        with pytest.raises(FlashRNAError, match=r"sequences\.bed: label '.*' would name"):
            derive_tfrecord_rows(rows, "hg38", bed)
    bed.write_text("chr1\t0\t8192\tfold0\n")
    with pytest.raises(FlashRNAError, match=r"genome '\.\./x' must be a plain name"):
        derive_tfrecord_rows(rows, "../x", bed)
    assert [r.destination for r in derive_tfrecord_rows(rows, "hg38", bed)][1:] == [
        "borzoi/hg38/tfrecords/fold0-0.tfr"
    ]
    # The manifest's own destinations, and the members an archive unpacks.
    text = "source\tdestination\tsize\tmd5\tunpack\nx\t../escape\t\t\t\n"
    (tmp_path / "m.tsv").write_text(text)
    with pytest.raises(FlashRNAError, match=r"m\.tsv:2: destination '\.\./escape' must be"):
        read_manifest(tmp_path / "m.tsv")
    data = tmp_path / "data"
    data.mkdir()
    with zipfile.ZipFile(data / "a.zip", "w") as archive:
        archive.writestr("../../slipped.txt", "x")
    row = ManifestRow("a.zip", "a.zip", unpack="unzip:*")
    with pytest.raises(FlashRNAError, match=r"a\.zip: member: destination '\.\./\.\./slipped"):
        unpack(row, data)
    assert not (tmp_path / "slipped.txt").exists() and not Path("/slipped.txt").exists()
