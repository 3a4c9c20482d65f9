"""Near-duplicate texts: MinHash over word shingles, LSH banding, then exact Jaccard.

1. Shingles: every run of ``shingle`` consecutive tokens (`tokens.word_hashes` with
   symbols such as + - * = kept as tokens; a text shorter than that is one shingle).
2. MinHash: ``bands * rows`` hash functions h(x) = a*x + b mod 2^32 over the shingle
   hashes (folded to 32 bits); per text and function, the minimum. Two texts agree on one function with
   probability equal to their Jaccard similarity J.
3. LSH: the functions are cut into bands of ``rows``; texts whose minima agree on a
   whole band become a candidate pair (probability 1 - (1 - J^rows)^bands).
   `lsh_bands` picks the split so a pair at the threshold is found with probability
   >= 0.9999 and as few dissimilar pairs as possible become candidates.
4. Candidates are checked with the exact Jaccard of their shingle sets, so the
   threshold means what it says; pairs at or above it are joined, and of each
   connected group the first text (lowest row) is kept, the rest are duplicates.
   Groups are transitive: if A~B and B~C, C goes even when A and C are further apart.

Every step is whole-array numpy/Polars work over chunks of rows; no per-text loop.

>>> import polars as pl
>>> texts = pl.Series(["the cat sat on the mat and looked at the dog for a while",
...                    "The cat sat on the mat, and looked at the dog for a while!",
...                    "a completely different sentence about prime numbers and sums"])
>>> near_duplicates(texts).tolist()
[False, True, False]
>>> near_duplicates(pl.Series(["What is 12 + 7?", "what is 12 - 7"])).tolist()
[False, False]
"""

from __future__ import annotations

import numpy as np
import polars as pl

from prefdata.hygiene.tokens import window_hashes, word_hashes

DEFAULT_THRESHOLD = 0.8
DEFAULT_SHINGLE = 5      # tokens per shingle (datatrove's default n-gram for MinHash)
_PERMS = (32, 48, 64, 128)  # hash function counts lsh_bands chooses from
_RECALL = 0.9999         # wanted chance that LSH proposes a pair exactly at the threshold
_WINDOW = 8              # in a band's sorted keys, rows up to this far apart are paired
_TOKENISE_ROWS = 1 << 16  # texts tokenised at a time
_HASH_ROWS = 1 << 12      # texts hashed at a time (~150k shingles: each function's pass stays in cache)
_P = np.uint64(0x100000001B3)


def lsh_bands(threshold: float) -> tuple[int, int]:
    """(bands, rows): the most rows per band whose recall at ``threshold`` is >= 0.9999, with
    32 hash functions, or 48, 64 or 128 when fewer than 3 rows per band would reach it.

    More rows per band means fewer dissimilar candidates (less verification work);
    more functions mean more time hashing.
    >>> lsh_bands(0.8), lsh_bands(0.5), lsh_bands(0.95)
    ((16, 3), (64, 2), (8, 4))
    """
    for num_perm in _PERMS:
        best = (num_perm, 1)
        for rows in range(1, num_perm + 1):
            bands = num_perm // rows
            if 1 - (1 - threshold ** rows) ** bands >= _RECALL:
                best = (bands, rows)
        if best[1] >= 3:
            break
    return best


def _shingles(texts: pl.Series, shingle: int) -> tuple[np.ndarray, np.ndarray]:
    flat, lengths = word_hashes(texts, symbols=True)
    return window_hashes(flat, lengths, shingle, whole_if_short=True)


def _band_keys(texts: pl.Series, shingle: int, bands: int, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(bands x texts array of band keys, mask of texts that have shingles).

    Shingle hashes are folded to 32 bits and each hash function is x -> a*x + b mod 2^32
    (a odd: a permutation of the 32-bit values). Texts are hashed a few thousand at a
    time so the arrays every function passes over stay in the CPU cache.
    """
    rng = np.random.default_rng(seed)
    a = (rng.integers(0, 2**31, bands * rows, dtype=np.uint32) * np.uint32(2) + np.uint32(1))  # odd
    b = rng.integers(0, 2**32, bands * rows, dtype=np.uint32)
    keys = np.zeros((bands, len(texts)), np.uint64)
    present = np.zeros(len(texts), np.bool_)
    for offset in range(0, len(texts), _TOKENISE_ROWS):
        hashes, row = _shingles(texts.slice(offset, _TOKENISE_ROWS), shingle)
        x = (hashes ^ (hashes >> np.uint64(32))).astype(np.uint32)
        bounds = np.searchsorted(row, np.arange(0, _TOKENISE_ROWS + _HASH_ROWS, _HASH_ROWS))
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if lo == hi:
                continue
            part, part_row = x[lo:hi], row[lo:hi]
            starts = np.flatnonzero(np.concatenate(([True], part_row[1:] != part_row[:-1])))
            at = offset + part_row[starts]
            present[at] = True
            buf = np.empty_like(part)
            for band in range(bands):
                key = np.zeros(len(starts), np.uint64)
                for f in range(band * rows, (band + 1) * rows):
                    np.multiply(part, a[f], out=buf)
                    buf += b[f]
                    key *= _P
                    key += np.minimum.reduceat(buf, starts)
                keys[band, at] = key
    return keys, present


def _candidates(keys: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (i < j) pairs of texts that agree on a whole band."""
    live = np.flatnonzero(present)
    n = np.uint64(len(present))
    codes = []
    for band in keys:
        order = live[np.argsort(band[live], kind="stable")]
        sorted_keys = band[order]
        # every pair of a group of up to _WINDOW + 1 equal keys; bigger groups are chained
        for d in range(1, min(_WINDOW, len(order) - 1) + 1):
            same = np.flatnonzero(sorted_keys[d:] == sorted_keys[:-d])
            i, j = order[same], order[same + d]
            codes.append(np.minimum(i, j).astype(np.uint64) * n + np.maximum(i, j).astype(np.uint64))
    if not codes:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    codes = np.unique(np.concatenate(codes))
    return (codes // n).astype(np.int64), (codes % n).astype(np.int64)


def jaccard(texts: pl.Series, i: np.ndarray, j: np.ndarray, shingle: int = DEFAULT_SHINGLE) -> np.ndarray:
    """Exact Jaccard similarity of the shingle sets of texts ``i[k]`` and ``j[k]``."""
    rows = np.unique(np.concatenate((i, j)))
    hashes, local = _shingles(texts.gather(rows), shingle)
    sets = pl.DataFrame({"row": rows[local], "h": hashes}).unique()
    sizes = sets.group_by("row").len()
    pairs = pl.DataFrame({"pair": np.arange(len(i)), "i": i, "j": j})
    left = pairs.join(sets, left_on="i", right_on="row").select("pair", "h")
    right = pairs.join(sets, left_on="j", right_on="row").select("pair", "h")
    common = left.join(right, on=["pair", "h"]).group_by("pair").len(name="common")
    out = (pairs.join(sizes.rename({"row": "i", "len": "si"}), on="i", how="left")
           .join(sizes.rename({"row": "j", "len": "sj"}), on="j", how="left")
           .join(common, on="pair", how="left").sort("pair")
           .select((pl.col("common").fill_null(0) / (pl.col("si") + pl.col("sj") - pl.col("common").fill_null(0)))
                   .fill_nan(0.0).fill_null(0.0)))
    return out.to_series().to_numpy()


def _components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Per node, the smallest node of its connected component (min-label propagation
    with pointer jumping; rounds grow with the longest chain's log, not its length)."""
    label = np.arange(n)
    while True:
        low = np.minimum(label[i], label[j])
        before = label.copy()
        np.minimum.at(label, i, low)
        np.minimum.at(label, j, low)
        while True:  # point every node at its label's label until nothing moves
            jumped = label[label]
            if np.array_equal(jumped, label):
                break
            label = jumped
        if np.array_equal(label, before):
            return label


def near_duplicates(texts: pl.Series, threshold: float = DEFAULT_THRESHOLD, shingle: int = DEFAULT_SHINGLE,
                    seed: int = 0) -> np.ndarray:
    """Per text: True when it is a near-duplicate (Jaccard >= ``threshold`` of shingle sets,
    transitively) of an earlier text, which is kept."""
    if not 0 < threshold <= 1:
        raise ValueError(f"near-duplicate threshold {threshold!r}: use a Jaccard similarity in (0, 1]")
    dropped = np.zeros(len(texts), np.bool_)
    if len(texts) < 2:
        return dropped
    bands, rows = lsh_bands(threshold)
    keys, present = _band_keys(texts, shingle, bands, rows, seed)
    i, j = _candidates(keys, present)
    if not len(i):
        return dropped
    similar = jaccard(texts, i, j, shingle) >= threshold
    i, j = i[similar], j[similar]
    if not len(i):
        return dropped
    nodes, inverse = np.unique(np.concatenate((i, j)), return_inverse=True)
    label = _components(len(nodes), inverse[:len(i)], inverse[len(i):])
    dropped[nodes[label != np.arange(len(nodes))]] = True
    return dropped
