"""Prompt sources: files, dataset folders and hub datasets -> the prompts table.

>>> from prefdata.sources import SourceSpec, load_prompts
>>> table, stats = load_prompts(SourceSpec("/work/shared/data/gsm8k", split="test"))  # doctest: +SKIP
>>> table.column_names[:3], stats.preset                                              # doctest: +SKIP
(['prompt_id', 'source', 'split'], 'gsm8k')

Modules: `spec` (SourceSpec, SourceStats), `readers` (find and read a split),
`mapping` (columns and presets), `ids` (prompt_id normalisation), `load`.
Importing this package loads only `spec` (no pyarrow, polars or datasets), so
the CLI can build a SourceSpec while parsing options and stay fast; the rest
is imported on first use of `load_prompts`, `prompt_id` or `normalise`.
"""

from prefdata.sources.spec import FORMATS, PRESETS, SourceSpec, SourceStats

__all__ = ["FORMATS", "PRESETS", "SourceSpec", "SourceStats", "load_prompts", "normalise", "prompt_id"]

_LAZY = {"load_prompts": "prefdata.sources.load", "normalise": "prefdata.sources.ids",
         "prompt_id": "prefdata.sources.ids"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'prefdata.sources' has no attribute {name!r}")
