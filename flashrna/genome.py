"""DNA as base indices, genome FASTA access and variant windows.

Sequences are uint8 arrays of base indices ``A=0 C=1 G=2 T=3``, anything else (N, IUPAC codes)
``4``: the model input and the Borzoi records' ``sequence`` feature use the same code.

:class:`Genome` reads an indexed FASTA (plain, or bgzip with ``.fai``/``.gzi``) through pyfaidx.
Coordinates are 0-based half-open; a window reaching past either contig end is padded with N (4),
so ``fetch(chrom, start, end)`` always returns ``end - start`` bases. The FASTA is (re)opened
lazily in each process, so a genome can be handed to DataLoader workers.

Variant windows (:meth:`Genome.variant_windows`): for a VCF-style variant (1-based ``pos``,
``ref``, ``alt``) both windows are ``length`` bases and the variant's first base sits at index
``length // 2``. The reference allele is checked against the genome. For an indel the alternative
window keeps the same left flank; its right flank is fetched anew after the allele and trimmed,
so a deletion pulls in downstream bases and an insertion pushes them out of the window.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from flashrna.utils import FlashRNAError

N = 4
_ENCODE = np.full(256, N, dtype=np.uint8)
for _index, _base in enumerate("ACGT"):
    _ENCODE[ord(_base)] = _ENCODE[ord(_base.lower())] = _index
_DECODE = np.frombuffer(b"ACGTN", dtype=np.uint8)
_COMPLEMENT = np.array([3, 2, 1, 0, 4], dtype=np.uint8)


class ReferenceMismatchError(FlashRNAError):
    """A variant's REF allele differs from the genome at its position."""


def encode_sequence(sequence: str | bytes) -> np.ndarray:
    """DNA text → uint8 base indices ``[len]`` (case-insensitive; non-ACGT → 4)."""
    if isinstance(sequence, str):
        sequence = sequence.encode("ascii", errors="replace")
    return _ENCODE[np.frombuffer(sequence, dtype=np.uint8)]


def decode_sequence(indices: np.ndarray) -> str:
    """uint8 base indices ``[len]`` → uppercase DNA text (4 → N)."""
    return _DECODE[np.asarray(indices, dtype=np.uint8)].tobytes().decode("ascii")


def reverse_complement(indices: np.ndarray) -> np.ndarray:
    """Reverse complement of base indices ``[..., len]`` (A↔T, C↔G, N stays N), along the
    last axis."""
    return _COMPLEMENT[np.asarray(indices)[..., ::-1]]


class Genome:
    """An indexed FASTA: ``lengths`` (contig → bp), ``fetch`` and ``variant_windows``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FlashRNAError(f"{self.path}: genome FASTA not found")
        self._fasta = None
        self._pid = -1
        self.lengths: dict[str, int] = {name: len(record) for name, record in self._open().items()}
        self.name = self.path.name.split(".")[0]

    def _open(self):
        import pyfaidx

        if self._fasta is None or self._pid != os.getpid():
            try:
                self._fasta = pyfaidx.Fasta(str(self.path), as_raw=True, rebuild=False)
            except pyfaidx.UnsupportedCompressionFormat:
                raise FlashRNAError(
                    f"{self.path}: gzip FASTA is not indexable; recompress it with "
                    f"`bgzip` (or gunzip it)"
                ) from None
            except (pyfaidx.FastaIndexingError, ValueError) as err:
                raise FlashRNAError(f"{self.path}: cannot index this FASTA ({err})") from None
            self._pid = os.getpid()
        return self._fasta

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fasta": None, "_pid": -1}

    def __repr__(self) -> str:
        return f"Genome({self.path}, {len(self.lengths)} contigs)"

    def _check_contig(self, chrom: str) -> int:
        if chrom not in self.lengths:
            known = ", ".join(list(self.lengths)[:5])
            more = f" and {len(self.lengths) - 5} more" if len(self.lengths) > 5 else ""
            raise FlashRNAError(f"{self.path}: unknown contig '{chrom}' (contigs: {known}{more})")
        return self.lengths[chrom]

    def fetch(self, chrom: str, start: int, end: int) -> np.ndarray:
        """Base indices of ``chrom:[start, end)`` (0-based), uint8 ``[end - start]``, N-padded
        beyond the contig ends (``start`` may be negative)."""
        if end < start:
            raise FlashRNAError(f"{chrom}:{start}-{end}: end is before start")
        size = self._check_contig(chrom)
        out = np.full(end - start, N, dtype=np.uint8)
        lo, hi = max(start, 0), min(end, size)
        if lo < hi:
            out[lo - start : hi - start] = encode_sequence(self._open()[chrom][lo:hi])
        return out

    def variant_windows(
        self, chrom: str, pos: int, ref: str, alt: str, length: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Reference and alternative windows (uint8 ``[length]`` each) of the variant at 1-based
        ``pos``, its first base at index ``length // 2``; ``ReferenceMismatchError`` when ``ref``
        is not the genome's sequence there."""
        for name, allele in (("REF", ref), ("ALT", alt)):
            if not allele or not set(allele.upper()) <= set("ACGTN"):
                raise FlashRNAError(
                    f"{chrom}:{pos}: {name} '{allele}' is not a sequence of A, C, G, T, N"
                )
        self._check_contig(chrom)
        at = pos - 1
        found = decode_sequence(self.fetch(chrom, at, at + len(ref)))
        if found != ref.upper():
            raise ReferenceMismatchError(
                f"{self.path.name} {chrom}:{pos}: REF is {ref} but the genome has {found}"
            )
        left = length // 2
        start = at - left
        reference = self.fetch(chrom, start, start + length)
        right = max(length - left - len(alt), 0)
        after = at + len(ref)
        alternative = np.concatenate(
            [reference[:left], encode_sequence(alt), self.fetch(chrom, after, after + right)]
        )[:length]
        return reference, alternative
