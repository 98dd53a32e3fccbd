"""``flashrna finetune``: new heads on a pretrained trunk (paper Tables 3 and 4).

Subcommands::

    flashrna finetune chip      --model PRETRAINED --shards DIR... --out RUN [--mode head|full]
    flashrna finetune halflife  --model PRETRAINED --data SALUKI_DIR --out DIR [--folds F...]
    flashrna finetune te        --model PRETRAINED --data RIBONN.tsv --out DIR [--folds F...]
    flashrna finetune aggregate --out DIR

``chip`` trains a fresh head (shared projection + track head, named ``--head``, default
``chip``) for the CHIP tracks of the shards (any ``--assays``) on the trunk of ``--model``, with
the training code of ``flashrna train`` (:mod:`flashrna.training`: Poisson-multinomial loss, AdamW
with warm-up and cosine decay, shift and reverse-complement augmentation, validation on fold4,
checkpoints and exact resume, torchrun). It sets, over that step's defaults:

- ``model.init`` = ``--model``: the run starts from the pretrained trunk, whose architecture it
  takes; the shared projection and the head start from a fresh (seeded) initialisation;
- ``train.epochs`` = 3 (paper), ``train.learning_rate`` 5e-4 and ``train.warmup_steps`` 1,000
  (choices: a fresh head tolerates a larger rate than training from scratch, and 3 epochs of the
  41,699 human training windows at batch 8 are ~15,600 steps, so a 5,000-step warm-up would be a
  third of the run);
- ``--mode head``: ``train.trunk_lr_scale`` 0, which leaves the trunk out of the optimiser and
  switches off its gradients (it stays bit-identical, and the backward pass stops at the head),
  and the trunk's dropouts 0, so the frozen trunk computes exactly its eval-mode function;
- ``--mode full``: everything trains, the trunk at ``--trunk-lr-scale`` (0.1) times the rate.

The output is a ``flashrna train`` run directory; its ``model/`` is a normal model directory
with the head and its track table (``targets-<head>.txt``), which ``flashrna evaluate-tracks
--model RUN/model --head chip`` scores on fold3. ``--config`` and ``--set`` change any other key
of the training config (``flashrna finetune chip ... --print-config`` shows them all); the
options above win over ``--config``, and ``--set`` wins over both.

``halflife`` and ``te`` are k-fold cross-validations of a pooling head on the trunk
(:mod:`flashrna.finetune.rnaprops`, which documents the data formats, the pooling and the outputs);
``aggregate`` gathers their folds, which the workflow may run as separate jobs.

Modules: :mod:`~flashrna.finetune.chip` (the ChIP-seq head through the trainer),
:mod:`~flashrna.finetune.rnaprops` (half-life and TE), :mod:`~flashrna.finetune.cli` (the
``flashrna finetune`` adapters).
"""
