"""score-variants' time per variant outside the model, old code against new (bench/variants.md).

The model is replaced by one that returns a stored random prediction (squashed values of the
head's full size), so what is timed is everything score-variants does around the network: the
windows, the genes and their exon bins, moving predictions off the device, track selection,
reverse-complement averaging, the inverse transform, the exon-bin sums and the output files.
Run it with the package version to time first on the path, e.g. a commit's tree from
``git archive <commit> flashrna | tar -x -C /tmp/old``::

    PYTHONPATH=/tmp/old python bench/variants_overhead.py --inputs DIR --output old.json
    PYTHONPATH=$PWD python bench/variants_overhead.py --inputs DIR --output new.json

``DIR`` holds ``genome.fa``, ``genes.gtf`` and ``variants.vcf`` as ``flashrna bench variants
--workdir DIR`` writes them (random genome, genes every 25 kb).
"""

from __future__ import annotations

import argparse
import inspect
import json
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from flashrna.annotation import Annotation
from flashrna.genome import Genome
from flashrna.tracks import TrackTable
from flashrna.variants import VariantScorer, read_vcf, write_scores
from flashrna.zoo import TrackModel


class StoredPrediction(nn.Module):
    """Returns (a view of) the first ``len(sequence)`` rows of one random squashed prediction."""

    def __init__(self, windows: int, bins: int, tracks: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("stored", torch.rand(windows, bins, tracks, generator=generator))

    def strand_pair(self, head: str = "human") -> torch.Tensor:
        return torch.arange(self.stored.shape[-1])

    def forward(self, sequence, head="human", crop_bins=0):
        return self.stored[: len(sequence)]  # neither version writes into it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=Path, required=True)
    parser.add_argument("--length", type=int, default=524_288)
    parser.add_argument("--crop-bins", type=int, default=5120)
    parser.add_argument("--head-tracks", type=int, default=2449)
    parser.add_argument("--tracks", type=int, default=89, help="tracks scored")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    bins = args.length // 32 - 2 * args.crop_bins
    table = TrackTable(
        pd.DataFrame(
            {
                "identifier": [f"GTEX-{k}" for k in range(args.head_tracks)],
                "file": "x.bw",
                "clip": 768,
                "clip_soft": 384,
                "scale": 0.01,
                "sum_stat": "sum_sqrt",
                "strand_pair": range(args.head_tracks),
                "description": "RNA:bench",
                "source_index": range(args.head_tracks),
            }
        )
    )
    module = StoredPrediction(4 * args.batch_size, bins, args.head_tracks)
    model = TrackModel(module, "human", table, "stored")
    options = {
        "columns": np.arange(args.tracks),
        "length": args.length,
        "crop_bins": args.crop_bins,
        "batch_size": args.batch_size,
        "stats": ["logSED"],
        "device": "cpu",
    }
    new = "protocol" in inspect.signature(VariantScorer).parameters
    genome, genes = (
        Genome(args.inputs / "genome.fa"),
        Annotation.read_gtf(args.inputs / "genes.gtf"),
    )
    scorer = VariantScorer(model, genome, genes, **options)
    variants = list(read_vcf(args.inputs / "variants.vcf"))
    out = args.inputs / ("overhead-new" if new else "overhead-old")
    write_scores(scorer, variants[: args.batch_size], out)  # warm-up
    started, cpu = time.perf_counter(), time.process_time()
    summary = write_scores(scorer, variants[args.batch_size :], out)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    result = {
        "code": "new" if new else "old",
        "length": args.length,
        "bins": bins,
        "head_tracks": args.head_tracks,
        "tracks": args.tracks,
        "batch_size": args.batch_size,
        "variants": summary["scored"],
        "ms_per_variant": 1000 * wall / summary["scored"],
        "cpu_ms_per_variant": 1000 * cpu / summary["scored"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(result))
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
