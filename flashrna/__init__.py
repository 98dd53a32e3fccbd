"""FlashRNA: a Borzoi-sized sequence-to-function model whose attention runs on FlashAttention
kernels (rotary positions instead of relative encodings), with training, evaluation,
fine-tuning and variant scoring on GPU and CPU."""

__version__ = "0.1.0"
