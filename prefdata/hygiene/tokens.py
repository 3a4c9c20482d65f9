"""Texts -> word hashes -> hashes of every window of k consecutive words, for whole columns.

Two tokenisations, both lower-cased:
- ``punctuation=False`` (decontamination): words are runs of letters and digits; every
  other character (punctuation, symbols, whitespace) only separates words, so
  "Hello,  World!" and "hello world" are the same two words.
- ``symbols=True`` (near-duplicates): the same, but each symbol character (Unicode
  category S, e.g. + = < > $ ^, and the operators - * / % that Unicode files under
  punctuation) is a token of its own, so "What is 12 + 7?" and "What is 12 - 7?"
  stay different prompts (in arithmetic the operator is the content), while a
  comma or a question mark changes nothing.

Words are hashed by Polars (64-bit; stable within one process, which is all that is
needed: both sides of a comparison are hashed in the same run), and a window's hash
is a polynomial in its word hashes, computed with k shifted whole-array passes.

>>> import polars as pl
>>> flat, lengths = word_hashes(pl.Series(["Hello,  World!", "hello world", ""]))
>>> lengths.tolist(), bool(flat[0] == flat[2]), bool(flat[1] == flat[3])
([2, 2, 0], True, True)
>>> hashes, rows = window_hashes(flat, lengths, 2)
>>> rows.tolist(), bool(hashes[0] == hashes[1])
([0, 1], True)
"""

from __future__ import annotations

import numpy as np
import polars as pl

_WORD = r"[\p{L}\p{N}]+"
_TOKEN = r"[\p{L}\p{N}]+|[\p{S}*/%-]"
_P = np.uint64(0x100000001B3)  # odd multiplier of the window polynomial (FNV's 64-bit prime)


def word_hashes(texts: pl.Series, symbols: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(hashes of all words of all texts, in order, as one u64 array; words per text).

    Null texts have no words.
    """
    tokens = texts.cast(pl.String).fill_null("").str.to_lowercase().str.extract_all(
        _TOKEN if symbols else _WORD)
    lengths = tokens.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = tokens.explode().drop_nulls()  # empty lists explode to one null each
    return flat.hash(seed=0x5EED).to_numpy(), lengths


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place: spreads a polynomial's structure over all bits."""
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


def _polynomials(flat: np.ndarray, k: int) -> np.ndarray:
    """h[p] = sum over j < k of flat[p + j] * P^(k - 1 - j), for p <= len - k (later entries
    are partial). Built by doubling, h_(a+b)(p) = h_a(p) * P^b + h_b(p + a): about 2 log2(k)
    whole-array passes instead of k."""
    have = {1: flat}
    size = 1
    while size * 2 <= k:
        h = have[size] * _P ** np.uint64(size)  # a new array; the shifted add stays inside it
        h[:len(h) - size] += have[size][size:]
        size *= 2
        have[size] = h
    out, length = None, 0
    for part in sorted(have, reverse=True):  # k's binary digits, highest first
        if length + part <= k and (k - length) & part:
            if out is None:
                out = have[part].copy()
            else:
                out *= _P ** np.uint64(part)
                out[:len(out) - length] += have[part][length:]
            length += part
    return out


def window_hashes(flat: np.ndarray, lengths: np.ndarray, k: int,
                  whole_if_short: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(hash of every run of ``k`` consecutive words inside one text; the text's row).

    Windows never cross from one text into the next. A text with fewer than ``k``
    words has no window, unless ``whole_if_short``: then all its words form one
    (shorter) window, so two equal short texts still share one. Output is grouped by
    row, in row order.
    """
    if k < 1:
        raise ValueError(f"window of {k} words: use k >= 1")
    starts = np.cumsum(lengths) - lengths
    row_of = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    m = len(flat) - k + 1
    if m > 0:
        h = _polynomials(flat, k)[:m]
        # a window starting at word p is inside its text when p + k <= start + length
        rows = row_of[:m]
        inside = np.arange(m) + k <= (starts + lengths)[rows]
        hashes, rows = h[inside], rows[inside]
    else:
        hashes, rows = np.zeros(0, np.uint64), np.zeros(0, np.int64)
    if whole_if_short:
        short = np.flatnonzero((lengths > 0) & (lengths < k))
        if len(short):
            s_start, s_len = starts[short], lengths[short]
            h = flat[s_start].copy()
            for j in range(1, k - 1):
                more = j < s_len
                h[more] = h[more] * _P + flat[s_start[more] + j]
            order = np.argsort(np.concatenate((rows, short)), kind="stable")
            hashes, rows = np.concatenate((hashes, h))[order], np.concatenate((rows, short))[order]
    return _mix(hashes), rows
