"""``flashrna bench data``: TFRecord conversion MB/s and loader examples/s at full Borzoi size."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from flashrna.data.convert import convert_tfrecord
from flashrna.data.loader import TrackDataset, make_loader
from flashrna.genome import Genome
from flashrna.tfrecord import write_examples
from flashrna.tracks import POOL_WIDTH, TrackTable
from flashrna.utils import write_json


def register_bench(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write a synthetic full-size Borzoi TFRecord (random genome and targets) in a temporary "
        "folder, time its conversion (MB/s) and the loader with shift and reverse-complement "
        "augmentation (examples/s), per wall-clock second and per CPU second (robust to other "
        "load on the machine)."
    )
    parser.add_argument("--records", type=int, default=4, help="records in the TFRecord")
    parser.add_argument("--items", type=int, default=32, help="examples to load (timed)")
    parser.add_argument("--workers", type=int, default=1, help="loader worker processes")
    parser.add_argument("--batch-size", type=int, default=1, help="loader batch size")
    parser.add_argument("--seq-length", type=int, default=524_288, help="input bp")
    parser.add_argument("--target-length", type=int, default=6_144, help="target bins")
    parser.add_argument("--num-tracks", type=int, default=7_611, help="tracks in the record")
    parser.add_argument("--max-shift", type=int, default=1_024, help="shift augmentation, bp")
    parser.add_argument("--workdir", type=Path, default=None, help="temporary folder location")
    parser.add_argument("--output", type=Path, default=None, help="JSON file of the results")
    parser.set_defaults(run=_run_bench)


def synthetic_track_table(num_tracks: int) -> TrackTable:
    """A table shaped like Borzoi's human one (RNA, DNASE, ATAC, CAGE, CHIP in its
    proportions; RNA tracks in +/- pairs)."""
    shares = {"RNA": 1543, "DNASE": 674, "ATAC": 232, "CAGE": 1276, "CHIP": 3886}
    counts = {a: max(1, round(num_tracks * n / 7611)) for a, n in shares.items()}
    counts["CHIP"] += num_tracks - sum(counts.values())
    rows = []
    for assay, count in counts.items():
        for k in range(count):
            index = len(rows)
            stranded = assay == "RNA" and k < count - count % 2
            pair = index + (1 if k % 2 == 0 else -1) if stranded else index
            stat = ("sum_sqrt", 768, 384, 0.3) if assay == "RNA" else ("sum", 256, 64, 1.0)
            rows.append(
                {
                    "identifier": f"{assay}{k}",
                    "file": f"{assay}{k}.bw",
                    "clip": stat[1],
                    "clip_soft": stat[2],
                    "scale": stat[3],
                    "sum_stat": stat[0],
                    "strand_pair": pair,
                    "description": f"{assay}:synthetic",
                    "source_index": index,
                }
            )
    return TrackTable(pd.DataFrame(rows), source="synthetic table")


def _run_bench(args: argparse.Namespace) -> None:
    results = bench_data(
        records=args.records,
        items=args.items,
        workers=args.workers,
        batch_size=args.batch_size,
        seq_length=args.seq_length,
        target_length=args.target_length,
        num_tracks=args.num_tracks,
        max_shift=args.max_shift,
        workdir=args.workdir,
    )
    print(json.dumps(results, indent=2))
    if args.output is not None:
        write_json(args.output, results)


def bench_data(
    *,
    records: int = 4,
    items: int = 32,
    workers: int = 1,
    batch_size: int = 1,
    seq_length: int = 524_288,
    target_length: int = 6_144,
    num_tracks: int = 7_611,
    max_shift: int = 1_024,
    workdir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Conversion and loader throughput on synthetic data of the given size (see
    :func:`register_bench`); returns the measurements."""
    rng = np.random.default_rng(0)
    table = synthetic_track_table(num_tracks)
    target_bp = target_length * POOL_WIDTH
    flank = (seq_length - target_bp) // 2
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        contig = seq_length * (records + 2)
        bases = np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, contig)].tobytes()
        with open(root / "genome.fa", "wb") as handle:
            handle.write(b">chr1\n")
            for offset in range(0, contig, 60):
                handle.write(bases[offset : offset + 60] + b"\n")
        genome = Genome(root / "genome.fa")
        starts = [seq_length * (k + 1) + flank for k in range(records)]
        with open(root / "sequences.bed", "w") as handle:
            for start in starts:
                handle.write(f"chr1\t{start}\t{start + target_bp}\tfold0\n")
        table.write(root / "targets.txt")

        def example(start: int) -> dict[str, bytes]:
            # Sparse, 2-decimal values compress like real coverage tracks.
            values = rng.gamma(0.3, 2.0, size=(target_length, num_tracks)).astype(np.float32)
            targets = np.round(values * (rng.random(values.shape) < 0.5), 2).astype(np.float16)
            sequence = genome.fetch("chr1", start - flank, start - flank + seq_length)
            return {"sequence": sequence.tobytes(), "target": targets.tobytes()}

        tfr = root / "hg38" / "fold0-0.tfr"
        tfr.parent.mkdir()
        write_examples(tfr, (example(s) for s in starts), level=1)
        record_bytes = records * (seq_length + 2 * target_length * num_tracks)
        file_bytes = tfr.stat().st_size

        began = _clock()
        shard = convert_tfrecord(
            tfr,
            root / "sequences.bed",
            root / "targets.txt",
            root / "shards" / "fold0-0",
            records_per_file=records,
        )
        convert_wall, convert_cpu, _ = _clock(began)

        dataset = TrackDataset(
            shard, genome=genome, max_shift=max_shift, reverse_complement=True, seed=0
        )
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        began = _clock()
        for k in range(items):
            dataset[(k // len(dataset), k % len(dataset))]
        single_wall, single_cpu, _ = _clock(began)
        torch.set_num_threads(threads)

        loader = make_loader(dataset, batch_size, num_workers=workers, seed=0)
        children = _clock()[2]
        loaded, epoch, began = 0, 0, None
        while loaded < items + batch_size:
            loader.sampler.set_epoch(epoch)
            for batch in loader:
                if began is None:  # the first batch pays for worker start-up
                    began = _clock()
                else:
                    loaded += len(batch["index"])
            epoch += 1
        loader_wall, loader_cpu, _ = _clock(began)
        # Workers' CPU time is known once they exit: all of it, start-up included.
        loader_cpu += _clock()[2] - children
    return {
        "device": f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores",
        "shape": {
            "seq_length": seq_length,
            "target_length": target_length,
            "record_tracks": num_tracks,
            "loaded_tracks": len(dataset.tracks),
        },
        "conversion": {
            "records": records,
            "file_mb": file_bytes / 1e6,
            "record_mb": record_bytes / 1e6,
            "seconds": convert_wall,
            "cpu_seconds": convert_cpu,
            "record_mb_per_s": record_bytes / 1e6 / convert_wall,
            "record_mb_per_cpu_s": record_bytes / 1e6 / convert_cpu,
        },
        "loader": {
            "workers": workers,
            "batch_size": batch_size,
            "max_shift": max_shift,
            "reverse_complement": True,
            "examples": loaded,
            "seconds": loader_wall,
            "cpu_seconds": loader_cpu,
            "examples_per_s": loaded / loader_wall,
            "examples_per_cpu_s": loaded / loader_cpu,
        },
        "dataset_single_thread": {
            "examples": items,
            "seconds": single_wall,
            "cpu_seconds": single_cpu,
            "examples_per_s": items / single_wall,
            "examples_per_cpu_s": items / single_cpu,
        },
    }


def _clock(since: tuple[float, float, float] | None = None) -> tuple[float, float, float]:
    """(wall, this process's CPU, finished children's CPU) seconds, or their change ``since``."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    now = (time.perf_counter(), time.process_time(), children.ru_utime + children.ru_stime)
    return now if since is None else tuple(a - b for a, b in zip(now, since, strict=True))
