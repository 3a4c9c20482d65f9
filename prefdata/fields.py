"""Config values checked against the config dataclasses themselves: one typed schema.

Every typed config (`SamplingConfig`, `GenerationConfig`, `JudgeConfig`, `SelectConfig`,
`SourceSpec`, `TrainConfig`, ...) is the schema of its TOML table: a field's annotation
is its type and its `metadata` (made by `at_least`, `between`, `one_of`) its range.
`check_values` checks a raw table (TOML, `--set`, command-line flags) against it before
the dataclass is built, so an error names the dotted key, where the value came from and
the type expected; `check_instance` runs the same rules in `__post_init__` for library
callers. Numbers must be finite: no config value means anything at NaN or infinity.

>>> from dataclasses import dataclass, field
>>> @dataclass
... class Demo:
...     top_p: float = field(default=1.0, metadata=between(0, 1, lo_open=True))
>>> check_values(Demo, {"top_p": 1}, "policy.sampling")
{'top_p': 1.0}
>>> check_values(Demo, {"top_p": "abc"}, "policy.sampling")
Traceback (most recent call last):
...
prefdata.errors.PrefdataError: policy.sampling.top_p = 'abc' is a string; expected a finite number in (0, 1]
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from typing import Any, Callable

from prefdata.errors import PrefdataError

Origin = Callable[[str], str]  # dotted key -> where its value came from ("--temperature", "my.toml"), or ""


def at_least(lo: float, *, open: bool = False) -> dict:
    """Range metadata: value >= lo (value > lo with open=True)."""
    return {"lo": lo, "lo_open": open}


def between(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> dict:
    return {"lo": lo, "lo_open": lo_open, "hi": hi, "hi_open": hi_open}


def one_of(*choices: str) -> dict:
    return {"choices": choices}


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_values(cls, values: dict, section: str = "", origin: Origin | None = None) -> dict:
    """Check `values` (field name -> raw value) against `cls`'s fields; return them with lists
    made tuples and whole numbers made floats where the field is a float. Unknown names are the
    caller's to report (it knows the allowed keys to list)."""
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = dict(values)
    for name, value in values.items():
        if name not in fields:
            continue
        key = f"{section}.{name}" if section else name
        out[name] = check_value(key, value, hints[name], fields[name].metadata, origin)
    return out


def check_instance(obj) -> None:
    """`__post_init__` form of `check_values`: validate and normalise the fields in place."""
    cls = type(obj)
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(cls)}
    for name, value in check_values(cls, values, "").items():
        if value is not values[name]:
            object.__setattr__(obj, name, value)


def describe(tp: Any, meta: typing.Mapping | None = None) -> str:
    """'a whole number >= 1', 'a number in (0, 1]', 'one of: a, b', 'an array of strings', ..."""
    meta = meta or {}
    if "choices" in meta:
        return "one of: " + ", ".join(map(str, meta["choices"]))
    tp, _ = _unwrap_optional(tp)
    if tp is bool:
        return "true or false"
    if tp is int or tp is float:
        noun = "a whole number" if tp is int else "a finite number"
        return noun + _range_text(meta)
    if tp is str:
        return "a string"
    if typing.get_origin(tp) is tuple:
        return f"an array of {_plural(typing.get_args(tp)[0])}"
    if tp is dict or typing.get_origin(tp) is dict:
        return "a table"
    return getattr(tp, "__name__", str(tp))


def check_value(key: str, value: Any, tp: Any, meta: typing.Mapping | None = None,
                origin: Origin | None = None) -> Any:
    meta = meta or {}
    given = value
    tp, optional = _unwrap_optional(tp)
    if value is None and optional:
        return None
    if tp is Any or isinstance(tp, typing.TypeVar) or dataclasses.is_dataclass(tp):
        return value

    def fail(problem: str) -> typing.NoReturn:
        where = origin(key) if origin else ""
        shown = _show(given)
        raise PrefdataError(f"{key} = {shown}{f' ({where})' if where else ''} {problem}",
                            f"expected {describe(tp, meta)}")

    if tp is bool:
        if not isinstance(value, bool):
            fail(f"is {_kind(value)}")
        return value
    if tp is int or tp is float:
        whole = isinstance(value, numbers.Integral)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or (tp is int and not whole):
            fail(f"is {_kind(value)}")
        if not whole and not math.isfinite(value):
            fail("is not finite")
        value = int(value) if tp is int else float(value)
        if not _in_range(value, meta):
            fail("is out of range")
        return value
    if tp is str:
        if not isinstance(value, str):
            fail(f"is {_kind(value)}")
        if "choices" in meta and value not in meta["choices"]:
            fail("is not a known value")
        return value
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, (list, tuple)):
            fail(f"is {_kind(value)}")
        inner = typing.get_args(tp)[0]
        return tuple(check_value(f"{key}[{i}]", v, inner, None, origin) for i, v in enumerate(value))
    if tp is dict or typing.get_origin(tp) is dict:
        if not isinstance(value, dict):
            fail(f"is {_kind(value)}")
        return value
    return value


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else Any), len(args) < len(typing.get_args(tp))
    return tp, False


def _in_range(value: float, meta: typing.Mapping) -> bool:
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and (value <= lo if meta.get("lo_open") else value < lo):
        return False
    if hi is not None and (value >= hi if meta.get("hi_open") else value > hi):
        return False
    return True


def _range_text(meta: typing.Mapping) -> str:
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and hi is not None:
        return f" in {'(' if meta.get('lo_open') else '['}{lo:g}, {hi:g}{')' if meta.get('hi_open') else ']'}"
    if lo is not None:
        return f" {'>' if meta.get('lo_open') else '>='} {lo:g}"
    return ""


def _plural(tp: Any) -> str:
    return {str: "strings", int: "whole numbers", float: "numbers"}.get(tp, "values")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, numbers.Integral):
        return "a whole number"
    if isinstance(value, numbers.Real):
        return "a fractional number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
