"""``flashrna train`` and ``flashrna distill``: training from scratch, resumable, on one or many
devices.

Configuration. One YAML mapping (or a section of a bigger one, ``--config-key``) merged over
:data:`DEFAULTS`; ``--set a.b=value`` overrides single keys (values parsed as YAML). Unknown keys
are errors that name the key. The defaults are the paper's values where it gives them and
documented choices where it does not (see the comments in :data:`DEFAULTS`).

Data. Each entry of ``data.species`` names a model head and a folder of shards
(:mod:`flashrna.data`); training uses the windows labelled train (all but fold3/fold4), validation
the ones labelled valid (fold4). With two species, optimiser steps alternate between them in the
configured order (every micro-batch of one step comes from the same species). Batch sizes are
global: ``train.batch_size`` examples per optimiser step whatever the number of processes, split
into ``micro_batch_size`` per process and accumulated, so one config gives the same optimisation
on one GPU or eight.

Loss (Borzoi ``poisson_mn``, :func:`poisson_multinomial`) on the target bins, cropped per example
at the loader's ``crop_start`` (the shift augmentation moves it). Optimiser AdamW, weight decay on
matrices and kernels only, linear warm-up then cosine (or linear) decay, gradient clipping, bf16
autocast on CUDA and fp32 on the CPU.

Output directory (``--out``)::

    config.yaml               the resolved config of the run
    metrics.jsonl             one JSON record per log interval ("kind": "train") and validation
                              ("kind": "valid"), rank 0
    checkpoints/step-NNNNNNNN/  model/ (save_model), optimizer.safetensors, rng.safetensors,
                              state.json; the last ``checkpoint.keep`` are kept
    best/                     model directory of the best validation score so far
    metrics.json              summary of the finished run
    model/                    the final model (best validation, or last): marks the run finished;
                              holds targets-<species>.txt, the tracks of each head
    .flashrna.lock            while a run is going: its pid, host, start time and command

Resume. Restarting the same command continues from the newest checkpoint: weights, optimiser
moments, the step (the learning-rate schedule is a function of it), the torch/CUDA/NumPy/Python
RNG states of every rank and each species' data position (epoch, examples used), so the run
continues exactly as if never stopped. SIGTERM or SIGINT (cluster preemption, Ctrl-C) finishes the
current step, writes a checkpoint and exits with 128 + the signal number. A non-finite loss or
gradient norm stops the run with :class:`NonFiniteLossError` before the optimiser step, naming
the shard and record of the examples whose targets are not finite (or saying the model
diverged); no checkpoint is written then, so the last good one stays.

Safety. The config is checked key by key (type and range) before anything is written. One run
at a time per ``--out``: the folder is locked (``flock``, released by the kernel when the run
ends or is killed), so a second run is refused with the first one's pid, host and start time,
and a lock left by a killed run is taken over. A resume whose newest checkpoint cannot be read
back (a truncated file, a wrong-typed ``state.json`` field) moves it to
``checkpoints/damaged-step-N``, says so and resumes from the newest intact one. A failed write
(disk full) stops the run with a message; the previous checkpoint stays intact. A torn last line
of ``metrics.jsonl`` is dropped with a warning. A finished run (``model/`` and
``metrics.json`` present) is not run again under the same config; under another config or seed
the call fails, naming the keys that changed (use another ``--out``). On a CPU, a big model
(the paper preset) is announced with its expected time per step.

Multi-GPU: ``torchrun --nproc-per-node N $(which flashrna) train ...`` (or ``python -m
torch.distributed.run ... -m flashrna.cli train ...``) runs DistributedDataParallel, NCCL on CUDA,
gloo on the CPU. Only one head is used per step, so DDP runs with ``find_unused_parameters`` when
the model has several heads (the unused head keeps ``grad=None``, as in one process).

Modules: :mod:`~flashrna.training.config` (the config, PyTorch-free),
:mod:`~flashrna.training.objective` (loss, optimiser, schedule),
:mod:`~flashrna.training.checkpoint` (the checkpoint format), :mod:`~flashrna.training.trainer`
(the loop, :func:`train`), :mod:`~flashrna.training.cli` (the command-line adapters).
"""
