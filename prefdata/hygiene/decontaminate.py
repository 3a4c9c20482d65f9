"""N-gram decontamination: find texts that share a run of N words with an evaluation item.

Both sides are normalised the same way (`tokens.word_hashes`: lower case, punctuation
and whitespace only separate words), every window of N words of every evaluation item
is hashed into a sorted array (`NgramIndex`), and a text is contaminated when any of
its N-word windows is in it. N defaults to 13, as NeMo Curator's task decontamination.

An evaluation item shorter than N words has no N-gram and cannot match anything; the
index counts such items (``short_items``) so a report can say what was not checked.
Hashes are 64-bit: a false match needs a collision between two of ~1e8 windows and
~1e6 indexed n-grams, a chance of about 1e-5 per million prompts.

>>> import polars as pl
>>> index = NgramIndex.from_texts(pl.Series(["Natalia sold clips to 48 of her friends in April."]), n=5)
>>> index.hits(pl.Series(["NATALIA sold clips -- to 48!", "Natalia sold clips to her friends"])).tolist()
[True, False]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from prefdata.hygiene.tokens import window_hashes, word_hashes

DEFAULT_N = 13
CHUNK_ROWS = 1 << 16  # texts tokenised at a time: bounds memory at ~50 MB per 64k prompts
_FILTER_BITS_PER_NGRAM = 16  # a bitmap in front of the sorted array: one probe rules out ~15 of 16 misses


def _chunks(texts: pl.Series, rows: int = CHUNK_ROWS):
    for offset in range(0, len(texts), rows):
        yield offset, texts.slice(offset, rows)


@dataclass(frozen=True)
class NgramIndex:
    """The distinct N-word windows of a set of evaluation texts, as sorted 64-bit hashes."""

    hashes: np.ndarray  # sorted, unique u64
    n: int
    items: int          # texts indexed
    short_items: int    # of those, with fewer than n words (nothing to match)

    @classmethod
    def from_texts(cls, texts: pl.Series, n: int = DEFAULT_N) -> "NgramIndex":
        parts, short = [], 0
        for _, chunk in _chunks(texts):
            flat, lengths = word_hashes(chunk)
            parts.append(window_hashes(flat, lengths, n)[0])
            short += int((lengths < n).sum())
        hashes = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)
        return cls(hashes=hashes, n=n, items=len(texts), short_items=short)

    def _bitmap(self) -> tuple[np.ndarray, np.uint64]:
        bits = max(10, int(np.ceil(np.log2(max(len(self.hashes), 1) * _FILTER_BITS_PER_NGRAM))))
        shift = np.uint64(64 - bits)
        bitmap = np.zeros(1 << bits, np.bool_)
        bitmap[self.hashes >> shift] = True
        return bitmap, shift

    def hits(self, texts: pl.Series) -> np.ndarray:
        """Per text: True when one of its N-word windows is an indexed n-gram."""
        out = np.zeros(len(texts), np.bool_)
        if not len(self.hashes):
            return out
        bitmap, shift = self._bitmap()
        for offset, chunk in _chunks(texts):
            flat, lengths = word_hashes(chunk)
            hashes, rows = window_hashes(flat, lengths, self.n)
            maybe = np.flatnonzero(bitmap[hashes >> shift])
            found = self.hashes[np.minimum(np.searchsorted(self.hashes, hashes[maybe]), len(self.hashes) - 1)]
            out[offset + rows[maybe[found == hashes[maybe]]]] = True
        return out
