"""The training dataset (augmentation), its sampler and loader, and the distillation dataset.

Batch contract of :class:`TrackDataset` and :func:`make_loader` (a dict of tensors)::

    sequence    uint8   (batch, L)             base indices, the model input (L: multiple of 128)
    targets     float16 (batch, bins, tracks)  squashed values as stored
    crop_start  int64   (batch,)               the model-output bin (of L/32) of targets[:, 0]
    index       int64   (batch,)               example index in the dataset

Augmentation, drawn per example from ``(seed, epoch, index)`` so it does not depend on the number
of workers: a shift ``s`` uniform in ``[−max_shift, max_shift]`` bp moves the input window by
``s`` (flanks from the genome FASTA, else N) and sets ``crop_start = crop0 − round(s/32)``; a
reverse complement (probability 0.5) reverses and complements the sequence, reverses the bins,
swaps each track with its strand pair and mirrors ``crop_start → L/32 − bins − crop_start``.
:func:`make_loader`'s :class:`EpochSampler` shuffles from ``(seed, epoch)``, shards for DDP and
resumes mid-epoch; its workers build each batch in place in shared memory.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import signal
import weakref
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from flashrna.data.shards import ShardSet
from flashrna.genome import Genome, reverse_complement
from flashrna.utils import FlashRNAError, release_inherited_locks

log = logging.getLogger(__name__)


class TrackDataset(Dataset):
    """Examples of a :class:`ShardSet` as batch-contract dicts (module docstring), with shift
    and reverse-complement augmentation.

    ``dataset[i]`` uses the epoch set by :meth:`set_epoch`; ``dataset[(epoch, i)]`` (what
    :class:`EpochSampler` yields) names it, so worker copies need no updates. ``seq_length`` (the
    model input, default: as stored) may differ from the stored length; missing flank bases come
    from ``genome`` when given, else N. ``assays``/``identifiers`` pick a subset of the stored
    tracks (default: all); ``tracks`` is its table (strand pairs re-indexed). Attributes:
    ``tracks``, ``species``, ``seq_length``, ``target_length``, ``pool_width``, ``crop0``.
    """

    def __init__(
        self,
        shards: ShardSet | str | os.PathLike | Sequence[str | os.PathLike],
        *,
        split: str | None = None,
        assays: Sequence[str] | None = None,
        identifiers: Sequence[str] | None = None,
        genome: Genome | str | os.PathLike | None = None,
        seq_length: int | None = None,
        max_shift: int = 0,
        reverse_complement: bool = False,
        seed: int = 0,
    ) -> None:
        if isinstance(shards, ShardSet) and split is not None:
            raise FlashRNAError("give split= to the ShardSet, or paths instead of a ShardSet")
        self.shards = shards if isinstance(shards, ShardSet) else ShardSet(shards, split=split)
        self._rows = self.shards.tracks.find(assays, identifiers)  # None, None: every track
        self.tracks = self.shards.tracks.take(self._rows)
        self._rows_rc = self._rows[self.tracks.strand_pair]
        self.genome = Genome(genome) if isinstance(genome, str | os.PathLike) else genome
        self.species = self.shards.species
        self.pool_width = self.shards.pool_width
        self.target_length = self.shards.target_length
        self.seq_length = int(seq_length or self.shards.seq_length)
        target_bp = self.target_length * self.pool_width
        extra = self.seq_length - target_bp
        if extra < 0 or extra % (2 * self.pool_width):
            raise FlashRNAError(
                f"seq_length {self.seq_length} must exceed the {target_bp}-bp target window by "
                f"equal flanks of a multiple of {self.pool_width} bp"
            )
        self.crop0 = extra // (2 * self.pool_width)
        if round(max_shift / self.pool_width) > self.crop0:
            raise FlashRNAError(
                f"max_shift {max_shift} bp moves the targets outside the model output "
                f"(at most {self.crop0 * self.pool_width} bp for seq_length {self.seq_length})"
            )
        self.max_shift = int(max_shift)
        self.reverse_complement = reverse_complement
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.shards)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def augmentation(self, index: int, epoch: int) -> tuple[int, bool]:
        """The ``(shift, reverse_complement)`` of example ``index`` in ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch, index])
        shift = int(rng.integers(-self.max_shift, self.max_shift + 1)) if self.max_shift else 0
        return shift, bool(self.reverse_complement and rng.random() < 0.5)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        return self.example(index, *self.augmentation(index, epoch))

    def input_sequence(self, index: int, shift: int = 0) -> np.ndarray:
        """uint8 ``[seq_length]``: the input window of example ``index`` moved by ``shift`` bp."""
        stored_start = self.shards.input_start(index)
        start = stored_start + (self.shards.seq_length - self.seq_length) // 2 + shift
        lo = max(start, stored_start)
        hi = min(start + self.seq_length, stored_start + self.shards.seq_length)
        if lo == start and hi == start + self.seq_length:
            return self.shards.sequence(index)[start - stored_start : hi - stored_start]
        chrom = str(self.shards.chrom[index])
        if self.genome is not None:
            out = self.genome.fetch(chrom, start, start + self.seq_length)
        else:
            out = np.full(self.seq_length, 4, dtype=np.uint8)
        if lo < hi:
            out[lo - start : hi - start] = self.shards.sequence(index)[
                lo - stored_start : hi - stored_start
            ]
        return out

    def example(self, index: int, shift: int = 0, rc: bool = False) -> dict[str, torch.Tensor]:
        """Example ``index`` with a given augmentation (batch contract, without the batch axis)."""
        batch = self.batch([(index, shift, rc)])
        return {key: value[0] for key, value in batch.items()}

    def batch(
        self, items: Sequence[tuple[int, int, bool]], shared: bool = False
    ) -> dict[str, torch.Tensor]:
        """The batch of ``(index, shift, rc)`` items, written straight into its output tensors
        (in shared memory when ``shared``, so a loader worker hands them over without a copy)."""
        n, bins, length = len(items), self.target_length, self.seq_length
        sequences = _empty((n, length), torch.uint8, shared)
        targets = _empty((n, bins, len(self.tracks)), torch.float16, shared)
        crops = torch.empty(n, dtype=torch.int64)
        for b, (index, shift, rc) in enumerate(items):
            sequence = self.input_sequence(index, shift)
            crop = self.crop0 - round(shift / self.pool_width)
            block = self.shards.target_rows(index, self._rows_rc if rc else self._rows)
            targets[b].copy_(torch.from_numpy(block).T)  # [tracks, bins] -> [bins, tracks]
            if rc:
                sequence = reverse_complement(sequence)
                targets[b] = targets[b].flip(0)
                crop = length // self.pool_width - bins - crop
            sequences[b] = torch.from_numpy(sequence)
            crops[b] = crop
        index = torch.tensor([item[0] for item in items], dtype=torch.int64)
        return {"sequence": sequences, "targets": targets, "crop_start": crops, "index": index}


def _empty(shape: tuple[int, ...], dtype: torch.dtype, shared: bool) -> torch.Tensor:
    if not shared:
        return torch.empty(shape, dtype=dtype)
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(int(np.prod(shape)))
    return torch.empty(0, dtype=dtype).new(storage).view(shape)


class _Batches(Dataset):
    """``TrackDataset`` seen one batch at a time: item = a list of ``(epoch, index)`` keys."""

    def __init__(self, dataset: TrackDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, keys: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        items = [(index, *self.dataset.augmentation(index, epoch)) for epoch, index in keys]
        in_worker = torch.utils.data.get_worker_info() is not None
        try:
            return self.dataset.batch(items, shared=in_worker)
        except (FlashRNAError, OSError) as err:
            if not in_worker:
                raise
            raise LoaderWorkerError(str(err)) from None  # an OSError's names the file


class LoaderWorkerError(FlashRNAError):
    """A bad-input error (or an OSError) raised while a loader worker built a batch.

    PyTorch hands a worker's exception to the main process by calling its class with the
    worker's formatted traceback; this class keeps only the original message from it, so the
    user sees the message, not a traceback."""

    def __init__(self, message: str) -> None:
        caught = re.match(r"Caught \w+ (in DataLoader worker process \d+)", message)
        if caught:
            tail = message.rsplit(f"{type(self).__name__}: ", 1)[-1].rstrip("\n")
            message = f"{tail} (raised {caught.group(1)})"
        super().__init__(message)


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` keys, or lists of ``batch_size`` keys: a permutation of
    ``range(size)`` drawn from ``(seed, epoch)`` (the identity without ``shuffle``), this rank's
    share ``order[rank::world_size]``, from position ``start`` on (to resume mid-epoch:
    ``start`` = examples this rank already used in the epoch).

    With ``even_shards`` (for training under DDP) the epoch's last ``size % world_size``
    examples of the permutation are left out, so every rank has the same length; shards are
    always disjoint, and without ``even_shards`` they cover the whole epoch.
    """

    def __init__(
        self,
        size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
        even_shards: bool = True,
        batch_size: int | None = None,
        drop_last: bool = False,
    ) -> None:
        if not 0 <= rank < world_size:
            raise FlashRNAError(f"rank {rank} is not in 0..{world_size - 1}")
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size, self.even_shards = rank, world_size, even_shards
        self.batch_size, self.drop_last = batch_size, drop_last
        self.set_epoch(epoch, start)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def indices(self) -> np.ndarray:
        """This rank's example indices for the current epoch, from ``start`` on."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        else:
            order = np.arange(self.size)
        if self.even_shards:
            order = order[: self.size - self.size % self.world_size]
        return order[self.rank :: self.world_size][self.start :]

    def __iter__(self) -> Iterator[tuple[int, int] | list[tuple[int, int]]]:
        keys = [(self.epoch, int(i)) for i in self.indices()]
        if self.batch_size is None:
            return iter(keys)
        stop = len(self) * self.batch_size
        return (keys[k : k + self.batch_size] for k in range(0, stop, self.batch_size))

    def __len__(self) -> int:
        count = len(self.indices())
        if self.batch_size is None:
            return count
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)
    release_inherited_locks()  # a run's lock must die with the run, not with its workers
    # A scheduler's SIGTERM/SIGINT goes to the whole process group: workers must outlive it
    # so the trainer can finish its step and write the preemption checkpoint. Since they ignore
    # SIGTERM, the main process kills them itself when it exits (_kill_live_workers).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# Iterators whose workers may still run. Python's exit would otherwise hang on a worker: the
# multiprocessing exit handler stops daemonic children with SIGTERM (which our workers ignore)
# and then waits for them; PyTorch's own shutdown is skipped once Python is exiting, and an
# exception's traceback keeps the iterator alive until then.
_LIVE_ITERATORS: weakref.WeakSet = weakref.WeakSet()


def _kill_live_workers() -> None:
    from torch.utils.data._utils import signal_handling

    for iterator in list(_LIVE_ITERATORS):
        if getattr(iterator, "_worker_pids_set", False):  # else PyTorch reports the kill
            signal_handling._remove_worker_pids(id(iterator))
            iterator._worker_pids_set = False
        for worker in getattr(iterator, "_workers", []):
            if worker.is_alive():
                with contextlib.suppress(OSError):
                    os.kill(worker.pid, signal.SIGKILL)
                worker.join(timeout=5)


class _Loader(DataLoader):
    """A DataLoader whose worker processes never outlive the main process's exit."""

    def _get_iterator(self):
        iterator = super()._get_iterator()
        if self.num_workers:
            _LIVE_ITERATORS.add(iterator)
        return iterator


# Registered after multiprocessing's exit handler (imported with torch), so it runs first.
atexit.register(_kill_live_workers)


@contextlib.contextmanager
def batches_of(loader: DataLoader) -> Iterator[Iterator[dict[str, torch.Tensor]]]:
    """An iterator over ``loader`` whose workers are shut down when the block ends, also on an
    error (a worker's error then ends the run at once, with its message). Creating it does not
    draw from the global torch RNG (PyTorch draws a base seed; we shield that draw)."""
    with torch.random.fork_rng(devices=[]):
        iterator = iter(loader)
    try:
        yield iterator
    finally:
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def make_loader(
    dataset: TrackDataset,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    start: int = 0,
    rank: int = 0,
    world_size: int = 1,
    even_shards: bool = True,
    num_workers: int = 0,
    pin_memory: bool = False,
    drop_last: bool = False,
    prefetch_factor: int = 2,
) -> DataLoader:
    """A DataLoader of batch-contract dicts over ``dataset``, driven by an
    :class:`EpochSampler` (``loader.sampler``; call ``loader.sampler.set_epoch(e)`` before each
    epoch, ``set_epoch(e, start)`` to resume). ``start`` counts this rank's examples already
    used in ``epoch`` (batches done × batch_size). The sampler yields whole batches, so
    ``loader.batch_size`` is None. Batches do not depend on ``num_workers``."""
    sampler = EpochSampler(
        len(dataset),
        shuffle=shuffle,
        seed=seed,
        epoch=epoch,
        start=start,
        rank=rank,
        world_size=world_size,
        even_shards=even_shards,
        batch_size=batch_size,
        drop_last=drop_last,
    )
    return _Loader(
        _Batches(dataset),
        batch_size=None,  # the sampler yields whole batches, built in place by the dataset
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init,
        prefetch_factor=prefetch_factor if num_workers else None,
        persistent_workers=False,
    )


class DistillDataset(Dataset):
    """A teacher's shards (ensemble-predict output over the same windows as the real shards) with
    targets ``(1 - weight) x teacher + weight x real``; the TrackDataset interface that
    :func:`make_loader` uses (``augmentation``, ``batch``). Both datasets come
    from one config, so they draw the same augmentation from (seed, epoch, index)."""

    def __init__(self, teacher: TrackDataset, real: TrackDataset, weight: float):
        where = f"teacher shards {teacher.shards.shards[0].parent}"
        if teacher.tracks != real.tracks:
            raise FlashRNAError(f"{where}: tracks differ from the real shards' tracks")
        same = len(teacher) == len(real) and all(
            (getattr(teacher.shards, name) == getattr(real.shards, name)).all()
            for name in ("chrom", "start", "end")
        )
        if not same:
            raise FlashRNAError(
                f"{where}: windows differ from the real shards' (teacher shards must be "
                "ensemble-predict output over the same shards)"
            )
        self.teacher, self.real, self.weight = teacher, real, float(weight)
        self.tracks = teacher.tracks
        self.shards = teacher.shards
        self.seq_length = teacher.seq_length

    def __len__(self) -> int:
        return len(self.teacher)

    def augmentation(self, index: int, epoch: int) -> tuple[int, bool]:
        return self.teacher.augmentation(index, epoch)

    def batch(self, items: Sequence[tuple[int, int, bool]], shared: bool = False):
        out = self.teacher.batch(items, shared)
        if self.weight > 0:
            real = self.real.batch(items)["targets"].float()
            mixed = (1 - self.weight) * out["targets"].float() + self.weight * real
            out["targets"].copy_(mixed)  # in place: the tensor may live in shared memory
        return out

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Tensor]:
        epoch, index = key
        batch = self.batch([(index, *self.augmentation(index, epoch))])
        return {name: value[0] for name, value in batch.items()}
