"""DNA as base indices, genome FASTA access and variant windows.

Sequences are uint8 arrays of base indices ``A=0 C=1 G=2 T=3``, anything else (N, IUPAC codes)
``4``: the model input and the Borzoi records' ``sequence`` feature use the same code.

:class:`Genome` reads an indexed FASTA (plain, or bgzip with ``.fai``/``.gzi``) through pyfaidx.
Coordinates are 0-based half-open; a window reaching past either contig end is padded with N (4),
so ``fetch(chrom, start, end)`` always returns ``end - start`` bases. The FASTA is (re)opened
lazily in each process, so a genome can be handed to DataLoader workers.

Variant windows (:meth:`Genome.variant_windows`) follow baskerville's ``vcf.snp_seq1`` and
``vcf.dna_length_1hot`` (calico/baskerville ``src/baskerville/vcf.py``) step by step, for a
VCF-style variant (1-based ``pos``, ``ref``, ``alt``) and input length ``L``:

1. fetch ``L + d`` bases, ``d = max(0, len(ref) - len(alt))`` (a deletion fetches the bases it
   pulls in), starting ``left`` bases before the variant (``left = L/2 - 1`` as ``snp_seq1``:
   the variant's first base at index ``L/2 - 1``); N beyond the contig start, and beyond its end
   only as far as needed to reach ``L`` bases (``snp_seq1`` pads to ``L``, not ``L + d``);
2. check the genome's bases at the variant against REF; when they differ but equal ALT, the
   genome carries ALT and REF is written in its place (``snp_seq1``'s swap); the score then still
   measures ALT against REF as given;
3. each allele's sequence is the left flank, the allele, and the bases after the genome's allele;
4. fit to ``L`` as ``dna_length_1hot`` does: a longer sequence loses ``(n - L) // 2`` bases at the
   start and the rest at the end; a shorter one gains ``(L - n) // 2`` N in front and the rest
   behind.

Where a genome position lands in each allele's window is kept as an :class:`AlleleLayout`, so
gene exons can be mapped into either allele's window (:mod:`flashrna.variants`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
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
        self,
        chrom: str,
        pos: int,
        ref: str,
        alt: str,
        length: int,
        *,
        left: int | None = None,
        swap: bool = True,
    ) -> VariantWindows:
        """Reference and alternative windows (uint8 ``[length]`` each) of the variant at 1-based
        ``pos`` as ``snp_seq1`` + ``dna_length_1hot`` build them (module docstring), the
        variant's first base at index ``left`` (default ``length // 2 - 1``) before any trim.
        ``ReferenceMismatchError`` when the genome holds neither REF nor (with ``swap``) ALT."""
        for name, allele in (("REF", ref), ("ALT", alt)):
            if not allele or not set(allele.upper()) <= set("ACGTN"):
                raise FlashRNAError(
                    f"{chrom}:{pos}: {name} '{allele}' is not a sequence of A, C, G, T, N"
                )
        size = self._check_contig(chrom)
        left = length // 2 - 1 if left is None else left
        at = pos - 1
        start = at - left
        end = min(start + length + max(0, len(ref) - len(alt)), size)
        sequence = self.fetch(chrom, start, max(end, start))
        if len(sequence) < length:
            sequence = np.concatenate([sequence, np.full(length - len(sequence), N, np.uint8)])
        alleles = encode_sequence(ref), encode_sequence(alt)
        found = sequence[left : left + len(ref)]
        swapped = not np.array_equal(found, alleles[0])
        if swapped and not (swap and np.array_equal(sequence[left : left + len(alt)], alleles[1])):
            also = " or ALT" if swap else ""
            raise ReferenceMismatchError(
                f"{self.path.name} {chrom}:{pos}: REF is {ref} but the genome has "
                f"{decode_sequence(found)} (not REF{also})"
            )
        genome_allele = alleles[1] if swapped else alleles[0]
        before, after = sequence[:left], sequence[left + len(genome_allele) :]
        windows, layouts = [], []
        for allele in alleles:
            window, shift = fit_length(np.concatenate([before, allele, after]), length)
            windows.append(window)
            layouts.append(AlleleLayout(start - shift, at, len(genome_allele), len(allele)))
        return VariantWindows(windows[0], windows[1], swapped, layouts[0], layouts[1])


def fit_length(sequence: np.ndarray, length: int) -> tuple[np.ndarray, int]:
    """``sequence`` trimmed or N-padded to ``length`` around its centre as baskerville's
    ``dna_length_1hot`` does, and the shift of its indices (new index = old index + shift)."""
    if len(sequence) > length:
        trim = (len(sequence) - length) // 2
        return sequence[trim : trim + length], -trim
    front = (length - len(sequence)) // 2
    padded = np.full(length, N, dtype=np.uint8)
    padded[front : front + len(sequence)] = sequence
    return padded, front


@dataclass(frozen=True)
class AlleleLayout:
    """Where genome coordinates land in one allele's window: the left flank at ``x - start``;
    from ``site`` on, the allele's ``inserted`` bases replace the genome's ``replaced`` bases, so
    the bases after them move by ``inserted - replaced``."""

    start: int
    site: int
    replaced: int
    inserted: int

    def index(self, positions: np.ndarray) -> np.ndarray:
        """Window positions (int64, same shape) of genome boundaries ``positions``: a boundary
        inside the replaced bases lands inside the allele, at most at its end."""
        offset = np.asarray(positions, dtype=np.int64) - self.site
        after = np.where(
            offset >= self.replaced,
            offset - self.replaced + self.inserted,
            np.minimum(offset, self.inserted),
        )
        return self.site - self.start + np.where(offset <= 0, offset, after)


@dataclass(frozen=True)
class VariantWindows:
    """The two input windows of a variant (uint8 ``[L]`` each, REF and ALT as given), whether the
    genome carries ALT (``swapped``), and each window's :class:`AlleleLayout`."""

    reference: np.ndarray
    alternative: np.ndarray
    swapped: bool
    reference_layout: AlleleLayout
    alternative_layout: AlleleLayout
