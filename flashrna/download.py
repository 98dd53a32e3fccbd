"""``flashrna download``: fetch the data a run needs from a manifest, resumably and verified.

Manifest (TSV, ``#`` comment lines allowed; ``config/manifest.tsv`` is the paper's,
``config/demo-manifest.tsv`` the demo's)::

    source  destination  size  md5  unpack

- ``source``: ``gs://bucket/object`` (copied with gsutil or ``gcloud storage``), ``https://…``
  (fetched directly, resumed with HTTP ranges when the server allows), ``manual:<where>`` (must be
  placed by hand; the error says where from), or a local path, relative to ``--source-root``
  (copied with gsutil/gcloud too, which is how the demo "bucket" is fetched).
- ``destination``: path under ``--data-dir``.
- ``size`` (bytes) and ``md5`` (hex): checked when given; empty when not known.
- ``unpack``: empty, ``gunzip`` (also writes the file without its ``.gz``/``.bgz`` suffix and,
  for a FASTA, its ``.fai``), or ``unzip:<glob>`` (extracts the matching members beside it).

Resumable: a destination that exists and matches its size and md5 is skipped (the md5 of a large
file is cached in a hidden ``.<name>.md5`` beside it, keyed by size and mtime). Transfers land in a
hidden staging name and are renamed into place only once verified, so a partial file never
appears under its final name. A mismatch is an error naming the file, the expected and the found
value.

The Borzoi bucket ``gs://borzoi-paper`` is *Requester Pays*: every transfer from it must name a
billing project (``--billing-project``, config ``download.billing_project``), which pays the
egress. The full training data is about 2.3 TB (human ≈ 1.6 TB, mouse ≈ 0.7 TB); users report
250–500 USD of egress for a full copy outside Google Cloud (calico/borzoi#31; less, or none,
inside the bucket's region ``us``), and a day or more at typical institutional bandwidth
(2.3 TB at 1 Gbit/s ≈ 5 h). ``--list`` shows what is present, missing and how large.

The paper manifest lists the human TFRecords derived from the real window list (fold counts →
``fold{k}-{i}.tfr``, 16 records a file) without sizes. The mouse file list, and sizes and md5s
for all, need a listing of the bucket, which this project cannot do from its build machines: on a
machine with access run::

    flashrna download --manifest config/manifest.tsv --billing-project PROJECT \\
        --refresh gs://borzoi-paper/data/mm10/=borzoi/mm10/ \\
        --refresh gs://borzoi-paper/data/hg38/=borzoi/hg38/

which runs ``gsutil ls -L`` on each prefix and rewrites the manifest with every object, its size
and md5.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fnmatch
import gzip
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from flashrna.utils import FlashRNAError, atomic_file, atomic_path

log = logging.getLogger(__name__)

COLUMNS = ("source", "destination", "size", "md5", "unpack")
REQUESTER_PAYS = ("gs://borzoi-paper/",)
TOOLS = ("gsutil", "gcloud")
STAGING = ".flashrna-download"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ManifestRow:
    """One file to fetch (module docstring)."""

    source: str
    destination: str
    size: int | None = None
    md5: str | None = None
    unpack: str = ""

    @property
    def kind(self) -> str:
        """``gs``, ``https``, ``manual`` or ``local``."""
        if self.source.startswith("gs://"):
            return "gs"
        if self.source.startswith(("https://", "http://")):
            return "https"
        if self.source.startswith("manual:"):
            return "manual"
        return "local"


# ---------------------------------------------------------------------------------------------
# Manifests
# ---------------------------------------------------------------------------------------------


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """Read a manifest; a malformed row is an error naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise FlashRNAError(f"{path}: manifest not found") from None
    body = [(n, line) for n, line in enumerate(lines, 1) if line.strip() and line[0] != "#"]
    if not body or tuple(body[0][1].split("\t")) != COLUMNS:
        raise FlashRNAError(f"{path}: the first non-comment line must be the header {COLUMNS}")
    rows, seen = [], {}
    for number, line in body[1:]:
        fields = line.split("\t")
        if len(fields) != len(COLUMNS):
            raise FlashRNAError(
                f"{path}:{number}: expected {len(COLUMNS)} tab-separated fields, got {len(fields)}"
            )
        source, destination, size, md5, unpack = fields
        if not source or not destination:
            raise FlashRNAError(f"{path}:{number}: source and destination are required")
        check_destination(destination, f"{path}:{number}")
        if size and not size.isdigit():
            raise FlashRNAError(f"{path}:{number}: size '{size}' is not a whole number of bytes")
        if md5 and not re.fullmatch(r"[0-9a-f]{32}", md5):
            raise FlashRNAError(f"{path}:{number}: md5 '{md5}' is not 32 lowercase hex digits")
        if unpack and unpack != "gunzip" and not unpack.startswith("unzip:"):
            raise FlashRNAError(
                f"{path}:{number}: unpack '{unpack}' is not empty, 'gunzip' or 'unzip:<glob>'"
            )
        if destination in seen:
            raise FlashRNAError(
                f"{path}:{number}: destination '{destination}' repeats line {seen[destination]}"
            )
        seen[destination] = number
        size = int(size) if size else None
        rows.append(ManifestRow(source, destination, size, md5 or None, unpack))
    return rows


def check_destination(destination: str, where: str) -> None:
    """Error unless ``destination`` is a relative path that stays under the data folder."""
    parts = Path(destination).parts
    if Path(destination).is_absolute() or ".." in parts or not parts:
        raise FlashRNAError(
            f"{where}: destination '{destination}' must be a relative path without '..': "
            "every file lands under --data-dir"
        )


def write_manifest(path: str | os.PathLike, rows: Iterable[ManifestRow], comment: str = "") -> None:
    """Write a manifest atomically, ``comment`` as leading ``#`` lines."""
    with atomic_file(path) as handle:
        for line in comment.splitlines():
            handle.write(f"# {line}\n")
        handle.write("\t".join(COLUMNS) + "\n")
        for r in rows:
            size = "" if r.size is None else str(r.size)
            handle.write("\t".join((r.source, r.destination, size, r.md5 or "", r.unpack)) + "\n")


def select(rows: Sequence[ManifestRow], patterns: Sequence[str] | None) -> list[ManifestRow]:
    """Rows whose destination matches one of the glob ``patterns`` (all rows when None); a
    pattern matching nothing is an error (a typo would otherwise download nothing)."""
    if not patterns:
        return list(rows)
    chosen = []
    for pattern in patterns:
        matched = [r for r in rows if fnmatch.fnmatchcase(r.destination, pattern)]
        if not matched:
            raise FlashRNAError(f"--only '{pattern}' matches no destination of the manifest")
        chosen += [r for r in matched if r not in chosen]
    return chosen


def tfrecord_names(fold_sizes: dict[str, int], records_per_file: int = 16) -> list[str]:
    """Borzoi's TFRecord file names for ``{label: windows}``: ``{label}-{i}.tfr`` for
    ``i < ceil(n / records_per_file)``, plus one (empty) file when ``n`` is a multiple."""
    names = []
    for label, n in fold_sizes.items():
        files = n // records_per_file + 1  # the +1 is the partial file, or the empty one
        names += [f"{label}-{i}.tfr" for i in range(files)]
    return names


def fold_sizes(bed: str | os.PathLike) -> dict[str, int]:
    """``{label: rows}`` of a window BED (optionally gzipped), labels in first-seen order."""
    path = Path(bed)
    opener = gzip.open if path.suffix == ".gz" else open
    sizes: dict[str, int] = {}
    try:
        with opener(path, "rt") as handle:
            for number, line in enumerate(handle, 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) < 4:
                    raise FlashRNAError(f"{path}:{number}: expected chrom start end label")
                sizes[fields[3]] = sizes.get(fields[3], 0) + 1
    except FileNotFoundError:
        raise FlashRNAError(f"{path}: window BED not found") from None
    return sizes


def derive_tfrecord_rows(
    rows: Sequence[ManifestRow], genome: str, bed: str | os.PathLike, records_per_file: int = 16
) -> list[ManifestRow]:
    """TFRecord rows of ``genome`` implied by its window BED, next to the manifest's
    ``borzoi/{genome}/sequences.bed`` row (same source prefix); rows already listed are kept.
    The genome and the BED's labels become destinations, so they are checked as a manifest's
    destinations are (no ``..``, no absolute paths, no ``/`` in a label)."""
    if not genome or "/" in genome or genome in (".", ".."):
        raise FlashRNAError(f"--derive: genome '{genome}' must be a plain name such as hg38")
    anchor = f"borzoi/{genome}/sequences.bed"
    base = next((r for r in rows if r.destination == anchor), None)
    if base is None:
        raise FlashRNAError(f"the manifest has no row for {anchor}; cannot derive TFRecords")
    prefix = base.source[: -len("sequences.bed")]
    listed = {r.destination for r in rows}
    derived = []
    sizes = fold_sizes(bed)
    for label in sizes:
        if "/" in label or label.startswith("."):
            raise FlashRNAError(
                f"{bed}: label '{label}' would name TFRecords outside borzoi/{genome}/tfrecords "
                "(labels must be plain names such as fold0)"
            )
    for name in tfrecord_names(sizes, records_per_file):
        destination = f"borzoi/{genome}/tfrecords/{name}"
        check_destination(destination, str(bed))
        if destination not in listed:
            derived.append(ManifestRow(f"{prefix}tfrecords/{name}", destination))
    return [*rows, *derived]


# ---------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK * 8):
            digest.update(chunk)
    return digest.hexdigest()


def _md5_cache(path: Path) -> Path:
    return path.with_name(f".{path.name}.md5")


def cached_md5(path: Path) -> str:
    """The md5 of ``path``, from its cache file when size and mtime still match."""
    stat = path.stat()
    key = f"{stat.st_size}\t{stat.st_mtime_ns}"
    cache = _md5_cache(path)
    with contextlib.suppress(OSError, ValueError):
        cached_key, value = cache.read_text().rsplit("\t", 1)
        if cached_key == key:
            return value.strip()
    value = md5sum(path)
    with contextlib.suppress(OSError), atomic_file(cache) as handle:
        handle.write(f"{key}\t{value}\n")
    return value


def problem(row: ManifestRow, path: Path, cache: bool = True) -> str | None:
    """Why ``path`` is not a verified copy of ``row`` (None when it is)."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if row.size is not None and size != row.size:
        return f"size {size} bytes, expected {row.size}"
    if row.md5 is not None:
        found = cached_md5(path) if cache else md5sum(path)
        if found != row.md5:
            return f"md5 {found}, expected {row.md5}"
    return None


# ---------------------------------------------------------------------------------------------
# Transfers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    data_dir: Path
    source_root: Path | None = None
    tool: str = "gsutil"
    billing_project: str | None = None
    requester_pays: tuple[str, ...] = REQUESTER_PAYS


def _resolve_local(row: ManifestRow, options: Options) -> str:
    source = row.source.removeprefix("file://")
    path = Path(source)
    if not path.is_absolute():
        if options.source_root is None:
            raise FlashRNAError(
                f"manifest source '{row.source}' is a relative path: give --source-root "
                f"(config download.source_root), e.g. the directory of `flashrna demo-data`"
            )
        path = options.source_root / path
    if not path.is_file():
        raise FlashRNAError(f"source {path} (for {row.destination}) not found")
    return str(path)


def check_billing(rows: Iterable[ManifestRow], options: Options) -> None:
    """Fail before any transfer when a requester-pays source has no billing project."""
    if options.billing_project:
        return
    for row in rows:
        prefix = next((p for p in options.requester_pays if row.source.startswith(p)), None)
        if prefix:
            raise FlashRNAError(
                f"{row.source}: {prefix} is a Requester Pays bucket; give the Google Cloud "
                f"project to bill with --billing-project PROJECT (config download.billing_project)"
                f" — the egress of a full copy costs about 250-500 USD"
            )


def _tool_command(options: Options, needs_billing: bool) -> list[str]:
    if shutil.which(options.tool) is None:
        raise FlashRNAError(
            f"'{options.tool}' is not installed (pip install gsutil, or the download env "
            f"envs/download.yaml), or choose another with --tool / config download.tool"
        )
    if options.tool == "gsutil":
        billing = ["-u", options.billing_project] if needs_billing else []
        return ["gsutil", *billing, "-m", "cp"]
    billing = [f"--billing-project={options.billing_project}"] if needs_billing else []
    return ["gcloud", "storage", "cp", *billing]


def _run_tool(command: list[str], sources: list[str], target: Path, chunk: int = 500) -> None:
    """Copy ``sources`` into the directory ``target``, ``chunk`` paths per tool call.

    Paths go on the command line: gsutil 5.x's ``cp -I`` silently drops the last path read from
    stdin."""
    for i in range(0, len(sources), chunk):
        part = sources[i : i + chunk]
        log.debug("%s (%d paths) %s", " ".join(command), len(part), target)
        result = subprocess.run(
            [*command, *part, str(target) + os.sep], text=True, capture_output=True
        )
        if result.returncode:
            tail = "\n".join(result.stderr.strip().splitlines()[-8:])
            raise FlashRNAError(
                f"{command[0]} failed (exit {result.returncode}) copying {len(part)} file(s), "
                f"first {part[0]}:\n{tail}"
            )


def _install(row: ManifestRow, staged: Path, destination: Path) -> None:
    """Verify a staged file against its row and rename it into place; else delete it."""
    if not staged.is_file():
        raise FlashRNAError(f"{row.source}: the transfer produced no file {staged}")
    why = problem(row, staged, cache=False)
    if why:
        staged.unlink()
        raise FlashRNAError(f"{row.source} → {destination}: downloaded file has {why}")
    os.replace(staged, destination)


def fetch_with_tool(rows: list[ManifestRow], options: Options) -> None:
    """gs:// and local sources, per destination directory: one tool call for the files that keep
    their name, one call each for renamed ones; all staged, verified, then renamed into place."""
    groups: dict[Path, list[tuple[ManifestRow, str, Path]]] = defaultdict(list)
    for row in rows:
        dest = options.data_dir / row.destination
        source = row.source if row.kind == "gs" else _resolve_local(row, options)
        groups[dest.parent].append((row, source, dest))
    for parent, items in groups.items():
        parent.mkdir(parents=True, exist_ok=True)
        # A staging directory of this call's own: concurrent jobs fetch into the same parent
        # (one fold each), and a shared one could be removed under another job's transfer.
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING}-", dir=parent))
        try:
            paying = any(r.source.startswith(options.requester_pays) for r, _, _ in items)
            command = _tool_command(options, paying)
            # Destinations are unique, so same-name sources are unique too.
            same = [s for _, s, d in items if Path(s).name == d.name]
            if same:
                log.info("copying %d file(s) into %s", len(same), parent)
                _run_tool(command, same, staging)
            for _, source, dest in items:
                if Path(source).name != dest.name:
                    _run_single(command, source, staging / dest.name)
            for row, _, dest in items:
                _install(row, staging / dest.name, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _run_single(command: list[str], source: str, target: Path) -> None:
    result = subprocess.run([*command, source, str(target)], text=True, capture_output=True)
    if result.returncode:
        tail = "\n".join(result.stderr.strip().splitlines()[-8:])
        raise FlashRNAError(f"{command[0]} failed (exit {result.returncode}) on {source}:\n{tail}")


def fetch_https(row: ManifestRow, options: Options, timeout: float = 60.0) -> None:
    """Stream ``row.source`` to a staged name, resuming a previous partial transfer with an HTTP
    range request when the server honours it."""
    dest = options.data_dir / row.destination
    staging = dest.parent / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    partial = staging / (dest.name + ".partial")
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(row.source, headers={"User-Agent": "flashrna-download"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = have and response.status == 206
            mode = "ab" if resumed else "wb"
            start = have if resumed else 0
            length = response.headers.get("Content-Length")
            total = row.size or (start + int(length) if length else None)
            with (
                open(partial, mode) as handle,
                tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=dest.name) as bar,
            ):
                while chunk := response.read(_CHUNK):
                    handle.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        raise FlashRNAError(f"{row.source}: download failed ({err}); re-run to resume") from None
    _install(row, partial, dest)
    with contextlib.suppress(OSError):
        staging.rmdir()


# ---------------------------------------------------------------------------------------------
# Unpacking
# ---------------------------------------------------------------------------------------------


def unpacked_path(row: ManifestRow, data_dir: Path) -> Path | None:
    """The file a ``gunzip`` row unpacks to (None for other rows)."""
    if row.unpack != "gunzip":
        return None
    dest = data_dir / row.destination
    for suffix in (".gz", ".bgz"):
        if dest.name.endswith(suffix):
            return dest.with_name(dest.name[: -len(suffix)])
    raise FlashRNAError(f"{row.destination}: 'gunzip' needs a .gz or .bgz name")


def unpack(row: ManifestRow, data_dir: Path) -> None:
    """Unpack a verified download (module docstring); up-to-date outputs are left alone."""
    dest = data_dir / row.destination
    if row.unpack == "gunzip":
        out = unpacked_path(row, data_dir)
        if not (out.exists() and out.stat().st_mtime >= dest.stat().st_mtime):
            log.info("gunzip %s", dest)
            with gzip.open(dest, "rb") as source, atomic_path(out) as tmp, open(tmp, "wb") as sink:
                shutil.copyfileobj(source, sink, _CHUNK)
        if out.suffix in (".fa", ".fasta") and not out.with_name(out.name + ".fai").exists():
            _index_fasta(out)
    elif row.unpack.startswith("unzip:"):
        pattern = row.unpack.removeprefix("unzip:")
        with zipfile.ZipFile(dest) as archive:
            members = [m for m in archive.infolist() if fnmatch.fnmatchcase(m.filename, pattern)]
            if not members:
                raise FlashRNAError(f"{dest}: no member matches '{pattern}'")
            for member in members:
                check_destination(member.filename, f"{dest}: member")  # no zip-slip
            for member in tqdm(members, desc=f"unzip {dest.name}", disable=len(members) < 50):
                if member.is_dir():
                    continue
                out = dest.parent / member.filename
                if out.exists() and out.stat().st_size == member.file_size:
                    continue
                with (
                    archive.open(member) as source,
                    atomic_path(out) as tmp,
                    open(tmp, "wb") as sink,
                ):
                    shutil.copyfileobj(source, sink, _CHUNK)


def _index_fasta(path: Path) -> None:
    import pyfaidx

    log.info("indexing %s", path)
    with atomic_path(path.with_name(path.name + ".fai")) as tmp:
        tmp.unlink()  # pyfaidx would take the empty placeholder for an index
        pyfaidx.Faidx(str(path), indexname=str(tmp)).close()


# ---------------------------------------------------------------------------------------------
# The step
# ---------------------------------------------------------------------------------------------


def download(
    rows: Sequence[ManifestRow], options: Options, record: str | os.PathLike | None = None
) -> list[ManifestRow]:
    """Fetch, verify and unpack ``rows``; return them with the sizes (and md5s, when checked)
    found, and write those rows to ``record`` when given."""
    check_billing(rows, options)
    pending = []
    for row in tqdm(rows, desc="checking present files", disable=len(rows) < 50):
        why = problem(row, options.data_dir / row.destination)
        if why is None:
            continue
        if row.kind == "manual":
            where = row.source.removeprefix("manual:")
            raise FlashRNAError(
                f"{row.destination}: {why}; this file is not downloadable automatically: fetch it "
                f"from {where} and place it at {options.data_dir / row.destination}"
            )
        if why != "missing":
            log.warning("%s: %s; fetching it again", row.destination, why)
        pending.append(row)
    log.info("%d of %d file(s) present and verified", len(rows) - len(pending), len(rows))
    tool_rows = [r for r in pending if r.kind in ("gs", "local")]
    if tool_rows:
        fetch_with_tool(tool_rows, options)
    for row in (r for r in pending if r.kind == "https"):
        fetch_https(row, options)
    for row in rows:
        if row.unpack:
            unpack(row, options.data_dir)
    found = []
    for row in rows:
        path = options.data_dir / row.destination
        found.append(replace(row, size=path.stat().st_size))
    if record:
        write_manifest(record, found, comment="files fetched and verified by flashrna download")
    return found


def status_table(rows: Sequence[ManifestRow], data_dir: Path) -> str:
    """One line per row (present / missing / wrong) and totals, for ``--list``."""
    lines, known, counts = [], 0, defaultdict(int)
    for row in rows:
        path = data_dir / row.destination
        # Sizes only: hashing terabytes for a listing would take hours.
        why = problem(replace(row, md5=None), path)
        state = "present" if why is None else why
        counts["present" if why is None else "missing" if why == "missing" else "wrong"] += 1
        known += row.size or 0
        size = "?" if row.size is None else _human(row.size)
        lines.append(f"{state:<10.40}\t{size:>9}\t{row.destination}\t{row.source}")
    unknown = sum(r.size is None for r in rows)
    lines.append(
        f"{len(rows)} files: {counts['present']} present, {counts['missing']} missing, "
        f"{counts['wrong']} wrong; {_human(known)} known"
        + (f" (+ {unknown} of unknown size: see --refresh)" if unknown else "")
    )
    return "\n".join(lines)


def _human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError


def parse_gsutil_listing(text: str) -> dict[str, tuple[int, str | None]]:
    """``{gs://… object: (size, md5 hex)}`` from ``gsutil ls -L`` output."""
    objects: dict[str, tuple[int, str | None]] = {}
    current, size, md5 = None, None, None

    def flush():
        if current is not None and size is not None:
            objects[current] = (size, md5)

    for line in text.splitlines():
        if line.startswith("gs://") and line.rstrip().endswith(":"):
            flush()
            current, size, md5 = line.rstrip()[:-1], None, None
        elif match := re.match(r"\s+Content-Length:\s+(\d+)", line):
            size = int(match.group(1))
        elif match := re.match(r"\s+Hash \(md5\):\s+(\S+)", line):
            md5 = base64.b64decode(match.group(1)).hex()
    flush()
    return objects


def refresh_manifest(
    rows: list[ManifestRow], prefixes: Sequence[str], options: Options
) -> list[ManifestRow]:
    """Rows updated from a bucket listing: for each ``gs://prefix/=dest/prefix/``, every object
    under the prefix gets a row (new ones appended) with its size and md5."""
    check_billing([ManifestRow(p.split("=", 1)[0], "x") for p in prefixes], options)
    by_source = {r.source: r for r in rows}
    out = list(rows)
    for spec in prefixes:
        if "=" not in spec or not spec.startswith("gs://"):
            raise FlashRNAError(
                f"--refresh '{spec}' must look like gs://bucket/prefix/=dest/prefix/"
            )
        prefix, dest_prefix = spec.split("=", 1)
        if shutil.which("gsutil") is None:
            raise FlashRNAError("--refresh needs gsutil (pip install gsutil)")
        billing = ["-u", options.billing_project] if options.billing_project else []
        command = ["gsutil", *billing, "ls", "-L", prefix.rstrip("/") + "/**"]
        log.info("listing %s", prefix)
        result = subprocess.run(command, text=True, capture_output=True)
        if result.returncode:
            raise FlashRNAError(f"{' '.join(command)} failed:\n{result.stderr.strip()[-2000:]}")
        for source, (size, md5) in sorted(parse_gsutil_listing(result.stdout).items()):
            if source in by_source:
                old = by_source[source]
                out[out.index(old)] = replace(old, size=size, md5=md5)
            else:
                relative = source[len(prefix) :].lstrip("/")
                out.append(ManifestRow(source, dest_prefix + relative, size, md5))
    return out


def register_download(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="manifest TSV (config/manifest.tsv)")
    parser.add_argument("--data-dir", default="data", help="destinations are relative to this")
    parser.add_argument(
        "--source-root", help="base directory for relative (local) sources, e.g. the demo mirror"
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="GLOB",
        help="fetch only destinations matching this glob (repeatable), e.g. 'borzoi/hg38/*'",
    )
    parser.add_argument("--tool", choices=TOOLS, default="gsutil", help="copier for gs:// sources")
    parser.add_argument(
        "--billing-project", help="Google Cloud project billed for Requester Pays buckets"
    )
    parser.add_argument(
        "--requester-pays",
        action="append",
        metavar="PREFIX",
        help=f"source prefixes that need a billing project (default: {' '.join(REQUESTER_PAYS)})",
    )
    parser.add_argument("--record", help="write the fetched rows, with their sizes, to this TSV")
    parser.add_argument(
        "--list",
        action="store_true",
        help="show what is present or missing, and sizes; fetch nothing",
    )
    parser.add_argument(
        "--derive",
        action="append",
        metavar="GENOME=BED",
        help="add the TFRecord rows implied by a window BED (fold counts, 16 records a file, an "
        "empty file after a full fold), e.g. mm10=data/borzoi/mm10/sequences.bed",
    )
    parser.add_argument("--records-per-file", type=int, default=16, help="for --derive")
    parser.add_argument(
        "--update-manifest",
        action="store_true",
        help="write the rows added by --derive back into the manifest",
    )
    parser.add_argument(
        "--refresh",
        action="append",
        metavar="GS_PREFIX=DEST_PREFIX",
        help="list a bucket prefix (gsutil ls -L) and rewrite the manifest with every object, "
        "its size and md5 (needs access to the bucket)",
    )
    parser.set_defaults(run=_run_download)


def _manifest_comment(path: str | os.PathLike) -> str:
    return "\n".join(line[2:] for line in Path(path).read_text().splitlines() if line[:2] == "# ")


def _run_download(args: argparse.Namespace) -> None:
    rows = read_manifest(args.manifest)
    for spec in args.derive or []:
        genome, _, bed = spec.partition("=")
        if not bed:
            raise FlashRNAError(f"--derive '{spec}' must look like GENOME=BED")
        rows = derive_tfrecord_rows(rows, genome, bed, args.records_per_file)
    if args.derive and args.update_manifest:
        write_manifest(args.manifest, rows, comment=_manifest_comment(args.manifest))
    options = Options(
        data_dir=Path(args.data_dir),
        source_root=Path(args.source_root) if args.source_root else None,
        tool=args.tool,
        billing_project=args.billing_project or None,
        requester_pays=tuple(args.requester_pays or REQUESTER_PAYS),
    )
    if args.refresh:
        refreshed = refresh_manifest(rows, args.refresh, options)
        write_manifest(args.manifest, refreshed, comment=_manifest_comment(args.manifest))
        log.info("%s: %d rows (was %d)", args.manifest, len(refreshed), len(rows))
        return
    rows = select(rows, args.only)
    if args.list:
        print(status_table(rows, options.data_dir))
        return
    download(rows, options, record=args.record)
