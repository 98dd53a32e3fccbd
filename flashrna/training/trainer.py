"""The trainer: processes (DDP), data per species, the training loop, validation, checkpoints
and resume, and :func:`train`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset

from flashrna.bench.timing import peak_memory_bytes, reset_peak_memory
from flashrna.data import DistillDataset, ShardSet, TrackDataset, make_loader
from flashrna.data.loader import batches_of
from flashrna.metrics import StreamingPearson, per_group_mean
from flashrna.model import (
    FlashRNA,
    ModelConfig,
    build_model,
    choose_micro_batch,
    enable_tf32,
    flop_counts,
    load_model,
    model_config,
    read_model_config,
    save_model,
)
from flashrna.tracks import TrackTable
from flashrna.training.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    DamagedCheckpoint,
    checkpoint_dirs,
    optimizer_state_from_files,
    optimizer_state_to_files,
    read_state,
    read_tensors,
    rng_state,
    set_rng_state,
)
from flashrna.training.config import (
    config_differences,
    default_num_workers,
    flatten_config,
    resolve_config,
)
from flashrna.training.objective import CroppedModel, batch_loss, build_optimizer, learning_rate
from flashrna.utils import (
    FlashRNAError,
    atomic_directory,
    atomic_file,
    exclusive_lock,
    read_json,
    resolve_device,
    seed_everything,
    write_json,
    write_safetensors,
)

log = logging.getLogger(__name__)


class NonFiniteLossError(FlashRNAError):
    """The loss or the gradient norm of a step is NaN or infinite."""


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


@dataclass
class Distributed:
    """This process's place among the training processes (torchrun's environment)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # we initialised the process group, so we tear it down

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def setup_distributed(device: str | torch.device | None) -> Distributed:
    """One process, or one of torchrun's (``WORLD_SIZE`` > 1): on CUDA each takes the GPU
    ``LOCAL_RANK`` and NCCL, on the CPU gloo."""
    device = resolve_device(device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1 and not (dist.is_available() and dist.is_initialized()):
        return Distributed(device=device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), device, owns)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


CPU_WARNING_PARAMETERS = 10_000_000  # smaller models (tiny, tests, demos) train fast on a CPU
CPU_WARNING_SECONDS = 10.0
FLOP_COUNT_LENGTHS = (8_192, 16_384)  # counting at full length takes longer than it tells


def cpu_matmul_rate(seconds: float = 0.2) -> float:
    """FLOP/s of this CPU on fp32 matrix multiplies of 512 x 512 (all torch threads)."""
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    a @ b  # warm-up
    count, began = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - began) < seconds:
        a @ b
        count += 1
    return 2 * 512**3 * count / elapsed


def cpu_step_estimate(config: ModelConfig, seq_length: int, batch_size: int) -> dict[str, float]:
    """Expected seconds per optimiser step on this CPU: training FLOPs per example (3 x the
    forward, the backward costing about twice the forward) times ``batch_size``, divided by
    :func:`cpu_matmul_rate`. The forward's FLOPs are counted by
    :func:`flashrna.model.flop_counts` at the two :data:`FLOP_COUNT_LENGTHS` and extrapolated to
    ``seq_length`` as ``a·L + b·L²`` (convolutions and projections grow linearly with the
    length, attention quadratically)."""
    short, long = FLOP_COUNT_LENGTHS
    if seq_length <= long:
        forward = float(flop_counts(config, seq_length)["total"])
    else:
        f1, f2 = (flop_counts(config, length)["total"] for length in FLOP_COUNT_LENGTHS)
        quadratic = (f2 / long - f1 / short) / (long - short)
        linear = f1 / short - quadratic * short
        forward = linear * seq_length + quadratic * seq_length**2
    rate = cpu_matmul_rate()
    per_example = 3 * forward
    return {
        "flops_per_example": per_example,
        "flops_per_second": rate,
        "counted_length": min(seq_length, long),
        "seconds_per_step": per_example * batch_size / rate,
    }


@dataclass
class SpeciesData:
    """One species' training and validation datasets."""

    name: str
    train: Dataset
    valid: TrackDataset | None
    tracks: TrackTable


def build_species_data(
    name: str, entry: Mapping[str, Any], config: Mapping[str, Any]
) -> SpeciesData:
    data, seed = config["data"], int(config["seed"])

    def dataset(paths, split: str, augment: bool) -> TrackDataset | None:
        shards = ShardSet(paths, split=split)
        if len(shards) == 0:
            return None
        if shards.species != name:
            log.warning("data.species.%s: shards %s hold species '%s'", name, paths, shards.species)
        return TrackDataset(
            shards,
            assays=entry["assays"],
            genome=entry["genome"],
            seq_length=data["seq_length"],
            max_shift=int(data["max_shift"]) if augment else 0,
            reverse_complement=bool(data["reverse_complement"]) and augment,
            seed=seed,
        )

    train = dataset(entry["shards"], "train", augment=True)
    if train is None:
        raise FlashRNAError(f"data.species.{name}: no training windows in {entry['shards']}")
    tracks = train.tracks
    if entry["teacher"]:
        teacher = dataset(entry["teacher"], "train", augment=True)
        if teacher is None:
            raise FlashRNAError(f"data.species.{name}: no training windows in {entry['teacher']}")
        train = DistillDataset(teacher, train, config["distill"]["target_weight"])
    valid = dataset(entry["shards"], "valid", augment=False)
    if valid is None:
        log.warning("data.species.%s: no valid windows; no validation for it", name)
    return SpeciesData(name, train, valid, tracks)


@dataclass
class Position:
    """Where a species' training data stands: the epoch and the examples (over all processes)
    used in it."""

    epoch: int = 0
    examples: int = 0


def training_batches(
    dataset: Dataset,
    position: Position,
    *,
    batch_size: int,
    micro_batch_size: int,
    seed: int,
    world: Distributed,
    num_workers: int,
) -> Iterator[dict[str, Tensor]]:
    """This process's micro-batches from ``position`` on, forever, updating ``position``.

    An epoch is the first ``len // batch_size * batch_size`` examples of the epoch's
    permutation, so every step's batch lies in one epoch, whatever the number of processes.
    Creating a DataLoader iterator draws a seed from the global torch RNG; :func:`batches_of`
    shields that draw, so dropout masks do not depend on where epochs begin or runs resume."""
    per_epoch = len(dataset) // batch_size * batch_size
    if per_epoch == 0:
        raise FlashRNAError(
            f"{len(dataset)} training windows are fewer than train.batch_size {batch_size}"
        )
    while True:
        loader = make_loader(
            dataset,
            micro_batch_size,
            shuffle=True,
            seed=seed,
            epoch=position.epoch,
            start=position.examples // world.world_size,
            rank=world.rank,
            world_size=world.world_size,
            even_shards=True,
            num_workers=num_workers,
            pin_memory=world.device.type == "cuda",
            drop_last=True,
        )
        with batches_of(loader) as batches:
            for batch in batches:
                if position.examples >= per_epoch:
                    break
                position.examples += micro_batch_size * world.world_size
                yield batch
        position.epoch, position.examples = position.epoch + 1, 0


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """How a call to :func:`train` ended: ``finished``, ``early-stopped``, ``stopped`` (at
    ``stop_at_step``), ``interrupted`` (a signal; ``signal`` is its number) or
    ``already-finished``."""

    status: str
    step: int
    out: Path
    signal: int | None = None
    best_score: float | None = None


class Trainer:
    """One training run in ``out``: see the module docstring. Use :func:`train`."""

    def __init__(
        self,
        config: Mapping[str, Any],
        out: str | os.PathLike,
        device: str | torch.device | None = None,
    ):
        self.config = json.loads(json.dumps(config))  # a plain, private copy
        self.out = Path(out)
        self.world = setup_distributed(device)
        self.device = self.world.device
        cfg = self.config
        if not cfg["data"]["species"]:
            raise FlashRNAError("config data.species is empty: name at least one species")
        train = cfg["train"]
        world = self.world.world_size
        self.batch_size = int(train["batch_size"])
        precision = train["precision"]
        if precision == "bf16" and self.device.type != "cuda":
            raise FlashRNAError("train.precision bf16 needs a CUDA device; use auto or fp32")
        self.bf16 = self.device.type == "cuda" and precision in ("auto", "bf16")
        if self.device.type == "cuda":
            enable_tf32()  # the fp32 head and loss
        self.species = list(cfg["data"]["species"])
        self.data = {
            name: build_species_data(name, entry, cfg)
            for name, entry in cfg["data"]["species"].items()
        }
        self.total_steps = self._total_steps()
        self.model_config = self._model_config()
        self.micro_batch_size = self._micro_batch_size()
        per_step = self.micro_batch_size * world
        if self.micro_batch_size < 1 or self.batch_size % per_step:
            raise FlashRNAError(
                f"train.batch_size {self.batch_size} is not a multiple of micro_batch_size "
                f"{self.micro_batch_size} x {world} processes"
            )
        self.accumulate = self.batch_size // per_step
        workers = cfg["data"]["num_workers"]
        self.num_workers = default_num_workers() if workers is None else int(workers)
        if self.device.type == "cpu" and self.world.main:
            self._warn_if_slow_on_cpu()
        self.stop_signal: int | None = None
        self.tensorboard = None
        self.batches: dict[str, Iterator[dict[str, Tensor]]] = {}

    # -- setup ---------------------------------------------------------------------------------

    def _total_steps(self) -> int:
        epochs = self.config["train"]["epochs"]
        if epochs is None:
            return int(self.config["train"]["steps"])
        first = self.data[self.species[0]].train
        return math.ceil(float(epochs) * len(first) / self.batch_size) * len(self.species)

    def _model_config(self) -> ModelConfig:
        """The preset's (or the ``model.init`` model's) architecture with ``model.overrides``;
        heads default to {species: tracks of its shards}."""
        overrides = dict(self.config["model"]["overrides"])
        tracks = {name: len(d.tracks) for name, d in self.data.items()}
        heads = overrides.setdefault("heads", tracks)
        for name, count in tracks.items():
            if heads.get(name) != count:
                raise FlashRNAError(
                    f"config model.overrides.heads: head '{name}' has {heads.get(name)} tracks, "
                    f"its shards {count}"
                )
        init = self.config["model"]["init"]
        if init:
            base = read_model_config(init)[0].to_dict()
            return ModelConfig.from_dict({**base, **overrides}, f"model.init {init} + overrides")
        return model_config(self.config["model"]["preset"], **overrides)

    def _micro_batch_size(self) -> int:
        """``train.micro_batch_size``, or when null the whole per-process batch, except on a
        CUDA device too small for it: there the largest divisor of the per-process batch whose
        :func:`~flashrna.model.training_memory_estimate` fits the device's memory (gradient
        accumulation keeps the effective batch)."""
        given = self.config["train"]["micro_batch_size"]
        per_process = self.batch_size // self.world.world_size
        if given or self.device.type != "cuda" or per_process < 1:
            return int(given or per_process)
        length = max(d.train.seq_length for d in self.data.values())
        memory = torch.cuda.get_device_properties(self.device).total_memory
        chosen = choose_micro_batch(self.model_config, length, per_process, memory, bf16=self.bf16)
        if chosen < per_process:
            log.info(
                "micro-batch %d of %d per process fits %.0f GiB (estimated; gradients "
                "accumulated over %d micro-batches)",
                chosen,
                per_process,
                memory / 2**30,
                per_process // chosen,
            )
        return chosen

    def _warn_if_slow_on_cpu(self) -> None:
        """Warn, with the expected time per step, before a big model trains on the CPU (the
        paper preset takes minutes per step there)."""
        with torch.device("meta"):
            parameters = sum(p.numel() for p in FlashRNA(self.model_config).parameters())
        if parameters < CPU_WARNING_PARAMETERS:
            return
        lengths = [d.train.seq_length for d in self.data.values()]
        estimate = cpu_step_estimate(self.model_config, max(lengths), self.batch_size)
        if estimate["seconds_per_step"] < CPU_WARNING_SECONDS:
            return
        hours = estimate["seconds_per_step"] * self.total_steps / 3600
        log.warning(
            "training a %.1f M-parameter model (preset %s) on the CPU: about %.0f s per step, "
            "%.0f h for %d steps. Estimate: %.1f TFLOP per training example (3 x the forward's "
            "FLOPs, counted by PyTorch's FlopCounterMode up to %s bp and extrapolated to %s bp) x "
            "batch %d, at the %.0f GFLOP/s this CPU reaches on a matrix multiply. Use a GPU "
            "(--device cuda), or for a trial a small model and short inputs (--set "
            "model.preset=tiny --set data.seq_length=...)",
            parameters / 1e6,
            self.config["model"]["preset"],
            estimate["seconds_per_step"],
            hours,
            self.total_steps,
            estimate["flops_per_example"] / 1e12,
            f"{estimate['counted_length']:,}",
            f"{max(lengths):,}",
            self.batch_size,
            estimate["flops_per_second"] / 1e9,
        )

    def _new_model(self) -> FlashRNA:
        torch.manual_seed(int(self.config["seed"]))  # the same initial weights on every rank
        model = build_model(self.model_config)
        init = self.config["model"]["init"]
        if init:
            # Loading checks that the pretrained model has this run's trunk (heads may differ).
            stored = self.model_config.replace(heads=read_model_config(init)[0].heads)
            model.trunk.load_state_dict(load_model(init, stored).trunk.state_dict())
        for name, data in self.data.items():
            model.set_strand_pair(name, np.array(data.tracks.strand_pair))
        return model

    def _freeze(self, model: FlashRNA) -> FlashRNA:
        """A trunk whose learning rate is 0 gets no gradients (the backward stops at the head)
        and stays bit-identical."""
        if float(self.config["train"]["trunk_lr_scale"]) == 0:
            model.trunk.requires_grad_(False)
        return model

    def _seed_process(self) -> None:
        """Seed all RNGs from (seed, rank): the ranks draw different dropout masks."""
        seed = int(
            np.random.SeedSequence([int(self.config["seed"]), self.world.rank]).generate_state(1)[0]
        )
        seed_everything(seed)

    # -- run -----------------------------------------------------------------------------------

    def run(self, stop_at_step: int | None = None) -> TrainResult:
        handlers: dict[int, Any] = {}
        try:
            self._start()
            handlers = self._install_signal_handlers()
            status = self._loop(stop_at_step)
            if status in ("finished", "early-stopped"):
                self._finish(status)
            return TrainResult(
                status,
                self.step,
                self.out,
                self.stop_signal if status == "interrupted" else None,
                self.best["score"],
            )
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            for batches in self.batches.values():
                batches.close()  # shuts down loader workers
            if self.tensorboard is not None:
                self.tensorboard.close()
            if self.world.owns_group:
                dist.destroy_process_group()

    def _start(self) -> None:
        """Build or restore the model, optimiser and state; wrap for DDP; open the logs."""
        checkpoints = checkpoint_dirs(self.out)
        self.positions = {name: Position() for name in self.species}
        self.best: dict[str, Any] = {"score": None, "step": None, "since": 0}
        self.step = 0
        self.examples_seen = 0
        if checkpoints:
            self._restore_newest_intact(checkpoints)
        else:
            self.model = self._freeze(self._new_model()).to(self.device)
            self.optimizer = build_optimizer(self.model, self.config["train"])
            self._seed_process()
        self.cropped = CroppedModel(self.model)
        runnable: nn.Module = self.cropped
        if self.world.active:
            runnable = nn.parallel.DistributedDataParallel(
                self.cropped,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=len(self.model_config.heads) > 1,
            )
        self.ddp = runnable if self.world.active else None
        self.runnable = torch.compile(runnable) if self.config["train"]["compile"] else runnable
        seed = int(self.config["seed"])
        self.batches = {
            name: training_batches(
                self.data[name].train,
                self.positions[name],
                batch_size=self.batch_size,
                micro_batch_size=self.micro_batch_size,
                seed=seed,
                world=self.world,
                num_workers=self.num_workers,
            )
            for name in self.species
        }
        if self.world.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._write_config()
            self._trim_metrics()
            self.tensorboard = self._open_tensorboard()
        log.info(
            "training %s on %s x %d: %s steps, batch %d (%d x %d processes x %d accumulated), "
            "heads %s",
            self.out,
            self.device,
            self.world.world_size,
            self.total_steps,
            self.batch_size,
            self.micro_batch_size,
            self.world.world_size,
            self.accumulate,
            self.model_config.heads,
        )

    def _write_config(self) -> None:
        import yaml

        with atomic_file(self.out / "config.yaml") as handle:
            yaml.safe_dump(self.config, handle, sort_keys=False)

    def _open_tensorboard(self):
        wanted = self.config["log"]["tensorboard"]
        if wanted is False:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            if wanted is True:
                raise FlashRNAError(
                    "log.tensorboard is true but tensorboard is not installed "
                    "(pip install 'flashrna[tensorboard]')"
                ) from None
            return None
        return SummaryWriter(str(self.out / "tensorboard"), purge_step=self.step + 1)

    def _install_signal_handlers(self) -> dict[int, Any]:
        """SIGTERM/SIGINT ask for a checkpoint after the current step; a second SIGINT stops at
        once."""

        def handler(signum, frame):
            if self.stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.stop_signal = signum
            log.warning("signal %d: checkpointing after this step, then exiting", signum)

        old = {}
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            for signum in (signal.SIGTERM, signal.SIGINT):
                old[signum] = signal.signal(signum, handler)
        return old

    def _loop(self, stop_at_step: int | None) -> str:
        from tqdm.auto import tqdm

        cfg = self.config
        progress = tqdm(
            total=self.total_steps,
            initial=self.step,
            unit="step",
            desc="train",
            disable=not (self.world.main and cfg["log"]["progress"]),
            dynamic_ncols=True,
        )
        interval = {"loss": [], "species": [], "examples": 0, "time": time.perf_counter()}
        reset_peak_memory(self.device)
        status = "finished"
        self.model.train()
        while self.step < self.total_steps:
            species = self.species[self.step % len(self.species)]
            loss, grad_norm, stop = self._train_step(species)
            self.step += 1
            self.examples_seen += self.batch_size
            interval["loss"].append(loss)
            interval["species"].append(species)
            interval["examples"] += self.batch_size
            progress.update()
            progress.set_postfix(loss=f"{loss:.4f}", species=species, refresh=False)
            last = self.step == self.total_steps
            logged = self.step % cfg["log"]["every_steps"] == 0 or last
            if logged:
                self._log_train(interval, grad_norm)
            if self.step % cfg["validation"]["every_steps"] == 0 or last:
                self._validate()
                patience = cfg["validation"]["patience"]
                if patience is not None and self.best["since"] >= patience:
                    log.info("no improvement in %d validations: stopping early", patience)
                    status = "early-stopped"
            if stop:
                status = "interrupted"
            elif stop_at_step is not None and self.step >= stop_at_step and not last:
                status = "stopped"
            if status != "finished" or last or self.step % cfg["checkpoint"]["every_steps"] == 0:
                self._save_checkpoint()
            if status != "finished":
                break
            if logged:  # the next interval's speed leaves out validation and checkpoints
                interval = {"loss": [], "species": [], "examples": 0, "time": time.perf_counter()}
        progress.close()
        return status

    def _train_step(self, species: str) -> tuple[float, float, bool]:
        """One optimiser step on ``species``; returns the loss (mean over the global batch),
        the gradient norm before clipping, and whether any process asked to stop."""
        train = self.config["train"]
        losses = []
        self.step_examples: list[tuple[Tensor, Tensor]] = []  # (index, targets finite?)
        for micro in range(self.accumulate):
            batch = next(self.batches[species])
            finite = torch.isfinite(batch["targets"]).flatten(1).all(1)
            self.step_examples.append((batch["index"], finite))
            syncing = self.ddp is None or micro == self.accumulate - 1
            with contextlib.nullcontext() if syncing else self.ddp.no_sync():
                loss = batch_loss(
                    self.runnable,
                    batch,
                    species,
                    self.device,
                    self.bf16,
                    float(train["loss_total_weight"]),
                )
                (loss / self.accumulate).backward()
            losses.append(loss.detach())
        stats = torch.stack(
            [
                torch.stack(losses).mean(),
                torch.tensor(float(self.stop_signal is not None), device=self.device),
            ]
        )
        if self.world.active:
            dist.all_reduce(stats)
            stats[0] /= self.world.world_size
        loss_value, stop = float(stats[0]), bool(stats[1] > 0)
        if not math.isfinite(loss_value):
            self._non_finite(f"the loss is {loss_value}", species)
        clip = train["clip_grad_norm"]
        grad_norm = float(
            nn.utils.clip_grad_norm_(self.model.parameters(), float(clip) if clip else math.inf)
        )
        if not math.isfinite(grad_norm):
            self._non_finite(f"the gradient norm is {grad_norm}", species)
        lr = learning_rate(self.step, self.total_steps, train)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_value, grad_norm, stop

    def _non_finite(self, what: str, species: str) -> None:
        checkpoints = checkpoint_dirs(self.out)
        last = (
            f"the last good checkpoint is {checkpoints[-1]}" if checkpoints else "no checkpoint yet"
        )
        shards = self.data[species].train.shards
        index = torch.cat([i for i, _ in self.step_examples])
        finite = torch.cat([f for _, f in self.step_examples])
        bad = [shards.describe(int(i)) for i in index[~finite]]
        if bad:
            cause = (
                f"non-finite targets in {len(bad)} example(s): {'; '.join(bad[:4])}"
                f"{' …' if len(bad) > 4 else ''}. Fix or remove those shards (convert them "
                "again), then run again"
            )
        else:
            shown = "; ".join(shards.describe(int(i)) for i in index[:4])
            cause = (
                f"the targets of this process's examples are finite ({shown}"
                f"{' …' if len(index) > 4 else ''}), so the model diverged: lower "
                "train.learning_rate or train.clip_grad_norm"
            )
        raise NonFiniteLossError(
            f"{self.out}: step {self.step + 1} ({species} batch): {what}; stopped without "
            f"updating the weights or writing a checkpoint ({last}). Cause: {cause}."
        )

    # -- logging -------------------------------------------------------------------------------

    def _record(self, record: dict[str, Any]) -> None:
        if not self.world.main:
            return
        path = self.out / "metrics.jsonl"
        with self._writing(path), open(path, "a") as handle:
            handle.write(json.dumps(record, default=float) + "\n")
        if self.tensorboard is not None:
            for key, value in flatten_config(record).items():
                if isinstance(value, int | float) and key not in ("step",):
                    self.tensorboard.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    def _read_metrics(self) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl``. A torn last line (a run stopped while writing it)
        is dropped with a warning; a damaged line before it is an error naming it."""
        path = self.out / "metrics.jsonl"
        if not path.is_file():
            return []
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        records = []
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                    raise ValueError("not a record with a step")
            except ValueError as err:
                if number == len(lines):
                    log.warning("%s: ignoring its incomplete last line (%.60s)", path, line)
                    continue
                raise FlashRNAError(
                    f"{path}: line {number} is not a metrics record ({err}); remove that line "
                    "and run again"
                ) from None
            records.append(record)
        return records

    def _trim_metrics(self) -> None:
        """Drop records past the step we resume from (those steps run again) and a torn last
        line."""
        path = self.out / "metrics.jsonl"
        if not path.is_file():
            return
        records = self._read_metrics()
        kept = [record for record in records if record["step"] <= self.step]
        text = "".join(json.dumps(record, default=float) + "\n" for record in kept)
        if text != path.read_text():
            with self._writing(path), atomic_file(path) as handle:
                handle.write(text)

    def _log_train(self, interval: dict[str, Any], grad_norm: float) -> None:
        seconds = time.perf_counter() - interval["time"]
        by_species = {
            name: float(
                np.mean(
                    [
                        x
                        for x, s in zip(interval["loss"], interval["species"], strict=True)
                        if s == name
                    ]
                )
            )
            for name in dict.fromkeys(interval["species"])
        }
        self._record(
            {
                "kind": "train",
                "step": self.step,
                "examples": self.examples_seen,
                "loss": float(np.mean(interval["loss"])),
                "loss_by_species": by_species,
                "lr": learning_rate(self.step - 1, self.total_steps, self.config["train"]),
                "grad_norm": grad_norm,
                "examples_per_s": interval["examples"] / max(seconds, 1e-9),
                "peak_memory_bytes": peak_memory_bytes(self.device),
            }
        )
        reset_peak_memory(self.device)

    # -- validation ----------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, dict[str, float]]:
        """Per-species, per-assay mean of the track Pearson R over the validation windows'
        target bins (values as stored, forward strand), pooled over all processes."""
        cfg = self.config["validation"]
        batch_size = int(cfg["batch_size"] or self.micro_batch_size)
        limit = cfg["max_examples"]
        was_training = self.model.training
        self.model.eval()
        results = {}
        for name, data in self.data.items():
            if data.valid is None:
                continue
            size = len(data.valid) if limit is None else min(int(limit), len(data.valid))
            # A fixed permutation (seed 0) picks the same subset for every replicate.
            loader = make_loader(
                data.valid,
                batch_size,
                shuffle=limit is not None,
                seed=0,
                rank=self.world.rank,
                world_size=self.world.world_size,
                even_shards=False,
                num_workers=min(self.num_workers, 2),
            )
            remaining = len(range(self.world.rank, size, self.world.world_size))
            pearson = StreamingPearson(len(data.tracks), self.device)
            with batches_of(loader) as batches:
                for batch in batches:
                    if remaining <= 0:
                        break
                    batch = {k: v[:remaining] for k, v in batch.items()}
                    remaining -= len(batch["index"])
                    targets = batch["targets"].to(self.device)
                    with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                        prediction = self.cropped(
                            batch["sequence"].to(self.device),
                            name,
                            batch["crop_start"],
                            targets.shape[1],
                        )
                    pearson.update(prediction.float(), targets.float())
            if self.world.active:
                states = [torch.zeros_like(pearson.state) for _ in range(self.world.world_size)]
                dist.all_gather(states, pearson.state)
                pearson = StreamingPearson(len(data.tracks), self.device)
                for state in states:
                    part = StreamingPearson(len(data.tracks), self.device)
                    part.state = state
                    pearson.merge(part)
            results[name] = per_group_mean(pearson.compute(), data.tracks.assay)
        self.model.train(was_training)
        return results

    def _validate(self) -> None:
        results = self.evaluate()
        if not results:
            return
        score = float(np.nanmean([np.nanmean(list(r.values())) for r in results.values()]))
        improved = math.isfinite(score) and (
            self.best["score"] is None or score > self.best["score"]
        )
        if improved:
            self.best.update(score=score, step=self.step, since=0)
            if self.world.main:
                self._save_model_dir(self.out / "best")
        else:
            self.best["since"] += 1
        self._record(
            {
                "kind": "valid",
                "step": self.step,
                "pearson": results,
                "score": score,
                "best_score": self.best["score"],
                "best_step": self.best["step"],
            }
        )
        log.info(
            "step %d: validation Pearson %s (score %.4f, best %.4f at step %s)",
            self.step,
            {n: {a: round(v, 4) for a, v in r.items()} for n, r in results.items()},
            score,
            self.best["score"] if self.best["score"] is not None else float("nan"),
            self.best["step"],
        )

    # -- saving --------------------------------------------------------------------------------

    def _save_model_dir(self, path: Path, model: FlashRNA | None = None) -> None:
        """A model directory (save_model) plus each head's track table, atomically."""
        with self._writing(path), atomic_directory(path, marker="config.json") as tmp:
            save_model(
                model or self.model,
                tmp,
                {"step": self.step, "seed": self.config["seed"], "train_config": self.config},
            )
            for name, data in self.data.items():
                data.tracks.write(tmp / f"targets-{name}.txt")

    def _save_checkpoint(self) -> None:
        states = [rng_state(self.device)]
        if self.world.active:
            states = [None] * self.world.world_size
            dist.all_gather_object(states, rng_state(self.device))
        if self.world.main:
            path = self.out / "checkpoints" / f"step-{self.step:08d}"
            tensors, rest = optimizer_state_to_files(self.optimizer)
            rng_tensors = {
                f"{kind}.{rank}": state[kind]
                for rank, state in enumerate(states)
                for kind in ("torch", "cuda")
                if kind in state
            }
            with self._writing(path), atomic_directory(path, marker="state.json") as tmp:
                save_model(self.model, tmp / "model", {"step": self.step})
                write_safetensors(tmp / "optimizer.safetensors", tensors)
                write_safetensors(tmp / "rng.safetensors", rng_tensors)
                write_json(
                    tmp / "state.json",
                    {
                        "format": CHECKPOINT_FORMAT,
                        "version": CHECKPOINT_VERSION,
                        "step": self.step,
                        "examples_seen": self.examples_seen,
                        "world_size": self.world.world_size,
                        "positions": {n: dataclasses.asdict(p) for n, p in self.positions.items()},
                        "best": self.best,
                        "optimizer": rest,
                        "rng": [{k: s[k] for k in ("python", "numpy")} for s in states],
                        "config": self.config,
                    },
                )
            for old in checkpoint_dirs(self.out)[: -int(self.config["checkpoint"]["keep"])]:
                shutil.rmtree(old, ignore_errors=True)
            log.info("checkpoint %s", path)
        self.world.barrier()

    @contextlib.contextmanager
    def _writing(self, path: Path) -> Iterator[None]:
        """Turn a failed write (disk full, permissions) into an error that names ``path``,
        says the last checkpoint is intact and how to go on."""
        try:
            yield
        except OSError as err:
            checkpoints = checkpoint_dirs(self.out)
            last = (
                f"the last checkpoint, {checkpoints[-1]}, is intact: once space is freed in "
                f"{self.out} (or its permissions fixed), the same command resumes from it"
                if checkpoints
                else "no checkpoint was written yet: once space is freed in "
                f"{self.out} (or its permissions fixed), the same command starts again"
            )
            raise FlashRNAError(
                f"{path}: could not be written ({err.strerror or err}); the run stopped at "
                f"step {self.step} and {last}"
            ) from None

    def _restore_newest_intact(self, checkpoints: list[Path]) -> None:
        """Resume from the newest checkpoint that reads back whole; damaged newer ones are
        moved aside (``checkpoints/damaged-step-N``) and named."""
        damaged: list[str] = []
        for path in reversed(checkpoints):
            try:
                self._restore(path)
            except DamagedCheckpoint as err:
                damaged.append(str(err))
                moved = path.with_name(f"damaged-{path.name}")
                shutil.rmtree(moved, ignore_errors=True)
                os.replace(path, moved)
                log.warning("checkpoint %s is damaged (%s); moved to %s", path, err, moved.name)
                continue
            if damaged:
                log.warning(
                    "resuming from %s, the newest intact checkpoint (step %d), instead of the "
                    "damaged newer one(s)",
                    path,
                    self.step,
                )
            return
        raise FlashRNAError(
            f"{self.out}: no intact checkpoint to resume from ({'; '.join(damaged)}). The "
            f"damaged ones are now {self.out}/checkpoints/damaged-*; to start again from step "
            f"0, move {self.out} away (or use another --out)"
        )

    def _restore(self, path: Path) -> None:
        state = read_state(path)
        differ = config_differences(state["config"], self.config)
        if differ:
            stored, current = flatten_config(state["config"]), flatten_config(self.config)
            detail = "; ".join(f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in differ[:8])
            raise FlashRNAError(
                f"{path}: the config differs from the one this run started with ({detail}); "
                "use a new --out directory for a new run"
            )
        try:
            model = load_model(
                path / "model", expected_config=self.model_config, device=self.device
            )
        except (FlashRNAError, TypeError, ValueError, KeyError) as err:
            raise DamagedCheckpoint(f"{path}/model: {err}") from None
        model = self._freeze(model)
        optimizer = build_optimizer(model, self.config["train"])
        tensors = read_tensors(path / "optimizer.safetensors")
        try:
            optimizer.load_state_dict(optimizer_state_from_files(tensors, state["optimizer"]))
        except (KeyError, ValueError, TypeError, RuntimeError) as err:
            raise DamagedCheckpoint(f"{path}: the optimizer state does not fit ({err})") from None
        rank = self.world.rank
        if state["world_size"] == self.world.world_size:
            rng = read_tensors(path / "rng.safetensors")
            if f"torch.{rank}" not in rng or len(state["rng"]) != self.world.world_size:
                raise DamagedCheckpoint(f"{path}: no RNG state for process {rank}")
            own = {"torch": rng[f"torch.{rank}"], **state["rng"][rank]}
            if f"cuda.{rank}" in rng:
                own["cuda"] = rng[f"cuda.{rank}"]
            try:
                set_rng_state(own, self.device)
            except (ValueError, TypeError, RuntimeError) as err:
                raise DamagedCheckpoint(f"{path}: unusable RNG state ({err})") from None
        else:
            log.warning(
                "%s was written by %d processes, this run has %d: the data order continues, "
                "dropout masks are drawn afresh",
                path,
                state["world_size"],
                self.world.world_size,
            )
            self._seed_process()
        self.model, self.optimizer = model, optimizer
        self.step = state["step"]
        self.examples_seen = state["examples_seen"]
        self.best = state["best"]
        for name, value in state["positions"].items():
            self.positions[name] = Position(**value)
        log.info("resuming from %s (step %d)", path, self.step)

    def _finish(self, status: str) -> None:
        if not self.world.main:
            return
        final = self.model
        use_best = self.config["validation"]["final_model"] == "best"
        if use_best and self.best["step"] is not None and (self.out / "best").is_dir():
            final = load_model(self.out / "best", expected_config=self.model_config)
        summary = {
            "status": status,
            "steps": self.step,
            "examples_seen": self.examples_seen,
            "final_model": "best" if final is not self.model else "last",
            "best_step": self.best["step"],
            "best_score": self.best["score"],
            "validation": self._last_validation(),
            "world_size": self.world.world_size,
            "batch_size": self.batch_size,
            "seed": self.config["seed"],
        }
        with self._writing(self.out / "metrics.json"):
            write_json(self.out / "metrics.json", summary)
        self._save_model_dir(self.out / "model", final)  # written last: marks the run finished
        log.info("finished %s: model/ from step %s", self.out, self.best["step"] or self.step)

    def _last_validation(self) -> dict | None:
        valid = [r for r in self._read_metrics() if r.get("kind") == "valid"]
        best = [r for r in valid if r["step"] == self.best["step"]]
        return (best or valid or [None])[-1]


def train(
    config: Mapping[str, Any],
    out: str | os.PathLike,
    device: str | torch.device | None = None,
    stop_at_step: int | None = None,
) -> TrainResult:
    """Train (or resume, or skip a finished) run of ``config`` in ``out``. ``config``: from
    :func:`load_config`, or a mapping of the keys that differ from the defaults (it is checked
    by :func:`resolve_config` either way). ``stop_at_step`` checkpoints and returns at that
    step, as a preemption would.

    ``out`` is locked while the run lasts (``out/.flashrna.lock``, see
    :func:`flashrna.utils.exclusive_lock`): a second run there is refused, naming the first.
    A finished run (``model/`` and ``metrics.json``) is not run again when its config (seed
    included) is the same apart from :data:`RESULT_NEUTRAL` keys; under another config the call
    is refused, naming the keys that changed."""
    config = resolve_config(config)
    out = Path(out)
    new = not out.exists()
    main = int(os.environ.get("RANK", "0")) == 0  # torchrun: one lock for the run, on rank 0
    lock = exclusive_lock(out / LOCK_FILE, f"training run folder {out}")
    try:
        with lock if main else contextlib.nullcontext():
            if (out / "model" / "config.json").is_file() and (out / "metrics.json").is_file():
                _check_finished_config(out, config)
                log.info("%s: finished before with this config; nothing to do", out)
                return TrainResult("already-finished", -1, out)
            return Trainer(config, out, device).run(stop_at_step)
    except Exception:
        if new and main and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # refused before anything was written: leave no empty folder
        raise


LOCK_FILE = ".flashrna.lock"
# Keys that do not change a finished run's result: how fast it ran and what it logged.
RESULT_NEUTRAL = ("data.num_workers", "train.compile", "checkpoint.", "log.")


def _check_finished_config(out: Path, config: Mapping[str, Any]) -> None:
    """Error naming the keys in which ``config`` differs from the finished run's in ``out``."""
    metadata = read_json(out / "model" / "config.json").get("metadata", {})
    stored = metadata.get("train_config") if isinstance(metadata, dict) else None
    if not isinstance(stored, dict):
        raise FlashRNAError(
            f"{out}/model/config.json records no training config; cannot tell whether the "
            f"finished run in {out} matches this one: use another --out"
        )
    current = json.loads(json.dumps(config))
    differ = config_differences(stored, current, neutral=RESULT_NEUTRAL)
    if differ:
        old, new = flatten_config(stored), flatten_config(current)
        detail = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ[:8])
        more = f" (and {len(differ) - 8} more)" if len(differ) > 8 else ""
        raise FlashRNAError(
            f"{out} holds a run that finished under another config ({detail}{more}). Its "
            "model/ was trained with the old values. To train with the new ones, use another "
            f"--out (a replicate: one folder per seed), or remove {out}; to keep the finished "
            "run, run again with its config (config.yaml there)"
        )
