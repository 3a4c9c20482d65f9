"""Tokenisation and window hashes: hand-made texts, expectations derived by hand."""

import numpy as np
import polars as pl

from prefdata.hygiene.tokens import window_hashes, word_hashes


def _groups(hashes: np.ndarray) -> list[int]:
    """Hashes renamed by first appearance (0, 1, ...): equal hashes get equal numbers."""
    seen: dict[int, int] = {}
    return [seen.setdefault(int(h), len(seen)) for h in hashes]


def test_words_ignore_case_punctuation_and_whitespace():
    flat, lengths = word_hashes(pl.Series(["Hello,\tWORLD!!", "hello world", " hello—world… ", None, "?!"]))
    assert lengths.tolist() == [2, 2, 2, 0, 0]
    assert _groups(flat) == [0, 1, 0, 1, 0, 1]


def test_symbols_are_tokens_for_near_duplicates_only():
    texts = pl.Series(["What is 12 + 7?", "what is 12 - 7", "What is 12 × 7"])
    plain, plain_len = word_hashes(texts)
    assert plain_len.tolist() == [4, 4, 4] and _groups(plain) == [0, 1, 2, 3] * 3
    sym, sym_len = word_hashes(texts, symbols=True)
    assert sym_len.tolist() == [5, 5, 5]
    assert _groups(sym) == [0, 1, 2, 3, 4, 0, 1, 2, 5, 4, 0, 1, 2, 6, 4]


def test_windows_stay_inside_one_text():
    # "a b" | "c d e": 2-word windows are (a b), (c d), (d e); never (b c)
    flat, lengths = word_hashes(pl.Series(["a b", "c d e", "b c"]))
    hashes, rows = window_hashes(flat, lengths, 2)
    assert rows.tolist() == [0, 1, 1, 2]
    assert len(set(hashes.tolist())) == 4  # (b c) of text 2 is not a window of texts 0 + 1


def test_short_texts_get_one_whole_window_only_when_asked():
    flat, lengths = word_hashes(pl.Series(["x y", "X, y.", "x y z"]))
    hashes, rows = window_hashes(flat, lengths, 3)
    assert rows.tolist() == [2]
    hashes, rows = window_hashes(flat, lengths, 3, whole_if_short=True)
    assert rows.tolist() == [0, 1, 2]
    assert hashes[0] == hashes[1] != hashes[2]
