"""Guards on what a source holds, run before Arrow or Python parse it deeper.

JSON nested past `MAX_JSON_DEPTH` (a parser recursing into it overflows the stack), lone
UTF-16 surrogate escapes (text no UTF-8 writer can encode), and the shards of one split
whose column types disagree.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from prefdata.errors import PrefdataError

# Deepest JSON nesting a source may hold. Chat messages need 3 levels; Arrow's JSON parser
# recurses per level and overflows the C stack (a segfault) near 10,000, Python's near 1,000.
MAX_JSON_DEPTH = 100
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def check_depth(data: bytes, path: Path) -> None:
    """Refuse JSON nested deeper than MAX_JSON_DEPTH before any parser recurses into it.

    Strings are blanked first (a bracket inside text is not nesting); the depth is then a
    running sum over the brackets, computed in blocks so a 50 MB file costs ~50 MB more.
    """
    import numpy as np

    stripped = _JSON_STRING.sub(b'""', data)
    depth, block = 0, 1 << 23
    for start in range(0, len(stripped), block):
        chunk = np.frombuffer(stripped, dtype=np.uint8, count=min(block, len(stripped) - start), offset=start)
        step = ((chunk == ord("[")) | (chunk == ord("{"))).astype(np.int32)
        step -= ((chunk == ord("]")) | (chunk == ord("}"))).astype(np.int32)
        running = np.cumsum(step) + depth
        deepest = int(running.max()) if len(running) else depth
        if deepest > MAX_JSON_DEPTH:
            at = start + int(np.argmax(running > MAX_JSON_DEPTH))
            line = stripped.count(b"\n", 0, at) + 1
            raise PrefdataError(f"{path} nests JSON deeper than {MAX_JSON_DEPTH} levels (line {line})",
                                "prompt data needs a few levels (chat messages: 3); fix or remove that row")
        depth = int(running[-1])


def check_surrogates(data: bytes, path: Path) -> None:
    """A \\uD800-\\uDFFF escape not in a high/low pair decodes to a lone surrogate: text that no
    UTF-8 writer (Arrow, Parquet, a tokenizer) can encode. Refuse it with its line.

    Escapes are found with a literal-led pattern and paired in Python: a regex with
    look-behinds at every byte costs seconds on GSM8K's 4 MB.
    """
    lone, high_end, lone_at = None, None, None
    for match in _SURROGATE.finditer(data):
        start, backslashes = match.start(), 0
        while start - backslashes > 0 and data[start - backslashes - 1] == 0x5C:
            backslashes += 1
        if backslashes % 2:  # "\\ud800": an escaped backslash, then plain text
            continue
        is_high = match.group()[3:4].lower() in b"89ab"
        if high_end is not None:
            if not is_high and start == high_end:
                high_end = None
                continue
            lone = lone_at
            break
        if not is_high:
            lone = match
            break
        high_end, lone_at = match.end(), match
    else:
        lone = lone_at if high_end is not None else None
    if lone is not None:
        line = data.count(b"\n", 0, lone.start()) + 1
        raise PrefdataError(f"{path} holds an unpaired UTF-16 surrogate escape "
                            f"{lone.group().decode()!r} (line {line}), which is not valid Unicode text",
                            "fix the text on that line (a surrogate must come as a high/low pair)")


_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def concat_shards(parts: list[pa.Table], files: list[Path]) -> pa.Table:
    """One table from a split's shards. A scalar column typed differently across shards (answer
    72 in one file, "72" in another) becomes text, as it does across rows of one file."""
    try:
        return pa.concat_tables(parts, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    types: dict[str, dict[pa.DataType, Path]] = {}
    for table, file in zip(parts, files):
        for f in table.schema:
            types.setdefault(f.name, {}).setdefault(f.type, file)
    as_text = set()
    for name, seen in types.items():
        if len(seen) > 1:
            if not all(_is_scalar_type(t) for t in seen):
                (t1, f1), (t2, f2) = list(seen.items())[:2]
                raise PrefdataError(f"column {name!r} is {t1} in {f1} but {t2} in {f2}",
                                    "give the column the same type in every file of the split")
            as_text.add(name)
    fixed = [pa.table([t.column(c).cast(pa.large_string()) if c in as_text else t.column(c)
                       for c in t.column_names], names=t.column_names) for t in parts]
    try:
        return pa.concat_tables(fixed, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise PrefdataError(f"the files of split {files[0].name} do not share one schema ({_first_line(exc)})",
                            "give each column the same type in every file of the split") from None


def _is_scalar_type(t: pa.DataType) -> bool:
    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)
            or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_null(t) or pa.types.is_decimal(t))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
