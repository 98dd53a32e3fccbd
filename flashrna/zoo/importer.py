"""``flashrna import-model SOURCE --out DIR``: a published model as a model directory.

SOURCE is an official FlashRNA checkpoint (the ``model.ckpt`` of a W&B artifact
``deep-genomics-open-source/FlashRNA/...``; :mod:`flashrna.zoo.official`) or a borzoi-pytorch
model (``borzoi-0`` ... ``flashzoi-3``, a Hugging Face repository, or a local directory in its
layout; :mod:`flashrna.zoo.borzoi`). DIR is a model directory that every step takes as
``--model DIR`` and :func:`flashrna.model.load_model` loads like a trained one::

    config.json          the architecture config; metadata: the model's description
                         (flashrna.model.model_description: architecture flashrna, borzoi or
                         flashzoi, input length, crop, bin size, genome and value space per
                         head) and its source (file or name, SHA-256)
    model.safetensors    the weights (no pickles)
    targets-<head>.txt   one track table per head, row k = output k

Official checkpoints do not record the input length or crop they were trained for; the released
models were trained on the Borzoi windows, 524,288 bp of which the central 6,144 bins are targets
(crop 5,120 bins a side): the defaults of ``--input-length`` and ``--crop-bins``.

Re-running on a finished DIR (the same source, by SHA-256) does nothing; DIR appears complete or
not at all (written beside it, then renamed); a DIR holding anything else is refused.

``--model FILE.ckpt`` in any step imports the checkpoint on first use into the cache
(:func:`cache_directory`: ``$FLASHRNA_CACHE``, else ``$XDG_CACHE_HOME/flashrna``, else
``~/.cache/flashrna``), under ``models/<first 16 hex digits of its SHA-256>``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
from pathlib import Path

import torch

from flashrna.model import (
    CONFIG_FILE,
    FlashRNA,
    model_description,
    read_model_description,
    save_model,
)
from flashrna.tracks import TrackTable
from flashrna.utils import FlashRNAError, atomic_directory, file_sha256

log = logging.getLogger(__name__)

GENOMES = {"human": "hg38", "mouse": "mm10"}
OFFICIAL_LENGTH = 524_288  # the Borzoi windows the released models were trained on
OFFICIAL_CROP = 5120  # bins at each end outside the Borzoi targets' 6,144


def cache_directory() -> Path:
    """Where checkpoints given as ``--model`` are imported: ``$FLASHRNA_CACHE``, else
    ``$XDG_CACHE_HOME/flashrna``, else ``~/.cache/flashrna``."""
    if os.environ.get("FLASHRNA_CACHE"):
        return Path(os.environ["FLASHRNA_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "flashrna"


def _finished(out: Path, sha256: str) -> bool:
    """True when ``out`` is an import of the source with this hash; an error when ``out``
    exists and holds anything else (never overwritten)."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return False
    if (out / CONFIG_FILE).is_file():
        source = read_model_description(out).get("source") or {}
        if source.get("sha256") == sha256:
            return True
        what = f"a model from {source}" if source else "a model"
    else:
        what = "other files"
    raise FlashRNAError(f"{out} exists and holds {what}; remove it or choose another --out")


def import_model(
    source: str | Path,
    out: str | Path,
    *,
    input_length: int | None = None,
    crop_bins: int | None = None,
) -> Path:
    """Import ``source`` (an official ``.ckpt`` file, or a borzoi-pytorch name or directory)
    into the model directory ``out`` (module docstring); ``input_length`` and ``crop_bins``
    describe an official checkpoint (default: the released models' 524,288 bp and 5,120 bins).
    Returns ``out``."""
    out = Path(out)
    path = Path(source).expanduser()
    if path.is_file():
        return _import_checkpoint(path, out, file_sha256(path), input_length, crop_bins)
    if input_length is not None or crop_bins is not None:
        raise FlashRNAError("--input-length/--crop-bins describe official checkpoints only")
    from flashrna.zoo.borzoi import borzoi_files, borzoi_sha256, import_borzoi

    directory = borzoi_files(source)
    sha256 = borzoi_sha256(directory)
    if _finished(out, sha256):
        log.info("%s is up to date (imported from %s)", out, source)
        return out
    return import_borzoi(directory, out, str(source), sha256)


def _import_checkpoint(
    path: Path, out: Path, sha256: str, input_length: int | None, crop_bins: int | None
) -> Path:
    from flashrna.zoo.official import read_official_checkpoint

    if _finished(out, sha256):
        log.info("%s is up to date (imported from %s)", out, path)
        return out
    checkpoint = read_official_checkpoint(path)
    model = FlashRNA(checkpoint.config)
    state = dict(checkpoint.weights)
    for head, table in checkpoint.tables.items():
        state[f"heads.{head}.strand_pair"] = torch.tensor(table.strand_pair.tolist())
    model.load_state_dict(state)
    official_crop = checkpoint.official_config.get("prediction_crop_margin")
    metadata = model_description(
        input_length or OFFICIAL_LENGTH,
        crop_bins if crop_bins is not None else official_crop or OFFICIAL_CROP,
        {head: GENOMES[head] for head in checkpoint.config.heads},
    )
    metadata["source"] = {"checkpoint": str(path.resolve()), "sha256": sha256, **checkpoint.info}
    metadata["official_config"] = checkpoint.official_config
    with atomic_directory(out) as tmp:
        save_model(model, tmp, metadata)
        for head, table in checkpoint.tables.items():
            table.write(tmp / f"targets-{head}.txt")
    return out


def cached_import(path: str | Path) -> Path:
    """The model directory of an official checkpoint in the cache, imported on first use
    (hashed once per process while the file stays unchanged)."""
    path = Path(path).resolve()
    stat = path.stat()
    return _cached_import(path, stat.st_size, stat.st_mtime_ns, cache_directory())


@functools.lru_cache(maxsize=16)
def _cached_import(path: Path, size: int, mtime_ns: int, cache: Path) -> Path:
    sha256 = file_sha256(path)
    out = cache / "models" / sha256[:16]
    if not _finished(out, sha256):
        log.info("importing %s into %s (once)", path, out)
        _import_checkpoint(path, out, sha256, None, None)
    return out


def register_import_model(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Import a published model as a model directory that every step takes as --model DIR: "
        "an official FlashRNA checkpoint (model.ckpt of the W&B artifacts "
        "deep-genomics-open-source/FlashRNA/single-model-rep-{1..4}:v0 and distilled-model:v0; "
        "read without running pickled code) or a borzoi-pytorch model (borzoi-0..3, "
        "flashzoi-0..3, a Hugging Face repository, or a local directory in its layout). "
        "Re-running on a finished DIR does nothing."
    )
    parser.add_argument("source", help="a .ckpt file, a borzoi-pytorch name or directory")
    parser.add_argument("--out", required=True, type=Path, help="the model directory to write")
    parser.add_argument(
        "--input-length",
        type=int,
        help=f"official checkpoints: the input length in bp it was trained for "
        f"(default {OFFICIAL_LENGTH:,}, the released models')",
    )
    parser.add_argument(
        "--crop-bins",
        type=int,
        help="official checkpoints: output bins at each end outside its training targets "
        f"(default: its prediction_crop_margin, else {OFFICIAL_CROP:,})",
    )
    parser.set_defaults(run=_run_import_model)


def _run_import_model(args: argparse.Namespace) -> None:
    out = import_model(
        args.source, args.out, input_length=args.input_length, crop_bins=args.crop_bins
    )
    description = read_model_description(out)
    heads = ", ".join(
        f"{head} ({len(TrackTable.read(out / f'targets-{head}.txt')):,} tracks)"
        for head in description["heads"]
    )
    print(
        f"{out}: {description['architecture']} model from {args.source}; heads {heads}; "
        f"{description['input_length']:,}-bp input, {description['crop_bins']} bins cropped"
    )
