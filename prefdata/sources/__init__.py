"""Prompt sources: files, dataset folders and hub datasets -> the prompts table.

>>> from prefdata.sources import SourceSpec, load_prompts
>>> table, stats = load_prompts(SourceSpec("/work/shared/data/gsm8k", split="test"))  # doctest: +SKIP
>>> table.column_names[:3], stats.preset                                              # doctest: +SKIP
(['prompt_id', 'source', 'split'], 'gsm8k')

Modules: `spec` (SourceSpec, SourceStats), `readers` (find and read a split),
`mapping` (columns and presets), `ids` (prompt_id normalisation), `load`.
Polars and datasets are imported inside functions so importing this package
stays cheap for the CLI.
"""

from prefdata.sources.ids import normalise, prompt_id
from prefdata.sources.load import load_prompts
from prefdata.sources.spec import FORMATS, PRESETS, SourceSpec, SourceStats

__all__ = ["FORMATS", "PRESETS", "SourceSpec", "SourceStats", "load_prompts", "normalise", "prompt_id"]
