"""Typed, frozen build configuration, filled from a TOML pipeline plus command-line overrides.

A pipeline file has one table per stage::

    name = "scenario2"        # the dataset name the pairs are stored under
    scenarios = [2]           # or: mix = {1 = 0.5, 4 = 0.5}
    seed = 0

    [source]   # prefdata.sources.SourceSpec fields; path_or_name = "toy" is the toy world
    [policy]   # prefdata.generate.GenerationConfig fields + [policy.sampling]
    [other]    # the same, for the other model
    [judge]    # kind = "verifier" | "llm" | "reward_model", and its options
    [select]   # prefdata.select.SelectConfig fields

`--scenario N` loads `pipelines/scenarioN.toml`; `--config FILE` loads a user's
own; flags given on the command line override fields (`apply_overrides`).
The resolved config is saved in the workspace manifest beside the output.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefdata.errors import PrefdataError

SCENARIOS = (1, 2, 3, 4)
_DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=-]{0,127}")  # = a store part key
TOY = "toy"  # source / model name that means "the embedded toy world"
SCENARIO_ORIGINS = {  # which candidate origins each scenario draws from
    1: {"policy"}, 2: {"reference", "policy"}, 3: {"policy", "other"}, 4: {"reference", "other"},
}


def pipelines_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "pipelines", here / "_pipelines"):
        if candidate.is_dir():
            return candidate
    raise PrefdataError("pipeline files not found next to the prefdata package", "reinstall prefdata")


@dataclass(frozen=True)
class JudgeConfig:
    """Which judge scores candidates. `verifier` needs reference answers; `llm` uses the
    study's 1-5 rubric served by `model` through `backend`; `reward_model` a sequence classifier."""

    kind: str = "verifier"
    model: str | None = None
    backend: str = "auto"
    endpoint_url: str | None = None
    timeout_s: float = 5.0
    batch_size: int = 256
    trust_remote_code: bool = False
    # llm judge only: greedy decoding budget, extra attempts after an unparsable output,
    # the name in judge_name ("llm:<model_name>", default: the model directory's name),
    # and the context to check prompts against (default: the model's config.json)
    max_tokens: int = 512
    max_retries: int = 2
    model_name: str | None = None
    max_model_len: int | None = None

    def __post_init__(self):
        if self.kind not in ("verifier", "llm", "reward_model"):
            raise PrefdataError(f"unknown judge kind {self.kind!r}", "use verifier, llm or reward_model")
        if self.kind != "verifier" and not self.model:
            raise PrefdataError(f"judge kind {self.kind!r} needs a model", "set [judge] model = \"PATH\"")
        if not (isinstance(self.max_tokens, int) and self.max_tokens >= 1):
            raise PrefdataError(f"judge max_tokens={self.max_tokens!r}", "use max_tokens >= 1")
        if not (isinstance(self.max_retries, int) and self.max_retries >= 0):
            raise PrefdataError(f"judge max_retries={self.max_retries!r}", "use max_retries >= 0")


@dataclass(frozen=True)
class BuildConfig:
    name: str
    scenarios: tuple[int, ...]
    source: Any  # prefdata.sources.SourceSpec
    policy: Any  # prefdata.generate.GenerationConfig
    other: Any   # prefdata.generate.GenerationConfig
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    select: dict = field(default_factory=dict)  # prefdata.select.SelectConfig fields
    mix: dict[int, float] | None = None
    seed: int = 0
    heldout: int = 64  # test-split prompts stored for held-out accuracy (not generated for)
    quiet: bool = False

    def origins(self) -> set[str]:
        return set().union(*(SCENARIO_ORIGINS[s] for s in self.scenarios))

    def to_dict(self) -> dict:
        out = {"name": self.name, "scenarios": list(self.scenarios), "seed": self.seed, "heldout": self.heldout,
               "mix": {str(k): v for k, v in (self.mix or {}).items()} or None,
               "source": dataclasses.asdict(self.source), "policy": self.policy.to_dict(),
               "other": self.other.to_dict(), "judge": dataclasses.asdict(self.judge), "select": self.select}
        return out


def load_toml(path: Path) -> dict:
    if not path.is_file():
        raise PrefdataError(f"pipeline file {path} not found", "check the --config path")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise PrefdataError(f"pipeline file {path} is not valid TOML ({err})", "fix the file's syntax") from None


def scenario_pipeline(scenario: int) -> dict:
    if scenario not in SCENARIOS:
        raise PrefdataError(f"unknown scenario {scenario}", "use --scenario 1, 2, 3 or 4 (or --mix)")
    return load_toml(pipelines_dir() / f"scenario{scenario}.toml")


def set_path(raw: dict, dotted: str, value: Any) -> None:
    """Set `raw["a"]["b"] = value` for dotted "a.b" (a command-line override)."""
    *parents, leaf = dotted.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def _make(cls, section: str, values: dict, **extra):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise PrefdataError(f"unknown key(s) {unknown} in [{section}]",
                            f"allowed keys: {', '.join(sorted(names))}")
    try:
        return cls(**{**values, **extra})
    except TypeError as err:
        raise PrefdataError(f"bad [{section}] settings: {err}", "check the pipeline file") from None


def resolve_model(spec: str) -> str:
    """`toy:policy` / `toy:other` name the shipped toy models; anything else is a path or endpoint model."""
    if spec in ("toy:policy", "toy:other"):
        from prefdata.toy.train import ensure_toy_models

        return str(ensure_toy_models()[spec.split(":")[1]])
    return spec


def build_config(raw: dict) -> BuildConfig:
    """Turn a raw (TOML + overrides) dict into a typed BuildConfig, with one-line errors."""
    from prefdata.generate import GenerationConfig, SamplingConfig
    from prefdata.sources import SourceSpec

    allowed = {"name", "scenarios", "mix", "seed", "heldout", "quiet", "source", "policy", "other", "judge", "select"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise PrefdataError(f"unknown top-level key(s) {unknown} in pipeline", f"allowed: {', '.join(sorted(allowed))}")
    mix = raw.get("mix")
    if isinstance(mix, str):
        from prefdata.mix import parse_mix

        mix = parse_mix(mix)
    elif isinstance(mix, dict):
        from prefdata.mix import parse_mix

        mix = parse_mix(",".join(f"{k}={v}" for k, v in mix.items()))
    scenarios = tuple(sorted(mix)) if mix else tuple(raw.get("scenarios", ()))
    if not scenarios or any(s not in SCENARIOS for s in scenarios):
        raise PrefdataError(f"scenarios {list(scenarios)} are not valid", "use scenarios from 1-4, e.g. --scenario 2")
    seed = int(raw.get("seed", 0))
    quiet = bool(raw.get("quiet", False))

    needed = set().union(*(SCENARIO_ORIGINS[s] for s in scenarios))

    def generation(section: str) -> Any:
        values = dict(raw.get(section, {}))
        sampling = _make(SamplingConfig, f"{section}.sampling", dict(values.pop("sampling", {})))
        values.setdefault("model", f"toy:{section}")
        if section in needed:  # an unused model is never loaded, trained or checked
            values["model"] = resolve_model(values["model"])
        return _make(GenerationConfig, section, values, origin=section, sampling=sampling, quiet=quiet)

    source = dict(raw.get("source", {}))
    source.setdefault("path_or_name", TOY)
    name = raw.get("name") or (_mix_name(mix) if mix else f"scenario{scenarios[0]}")
    if not isinstance(name, str) or not _DATASET_NAME.fullmatch(name):
        # the name becomes a pairs part key and an export file name: it must not hold a path
        raise PrefdataError(f"dataset name {name!r} is not allowed",
                            "use letters, digits and . _ - = (starting with a letter or digit), e.g. name = \"gsm-s2\"")
    select = dict(raw.get("select", {}))
    _check_select(select)
    _check_pairing(select, scenarios)
    return BuildConfig(
        name=str(name), scenarios=scenarios, mix=mix, seed=seed, quiet=quiet,
        heldout=int(raw.get("heldout", 64)),
        source=_make(SourceSpec, "source", source),
        policy=generation("policy"), other=generation("other"),
        judge=_make(JudgeConfig, "judge", dict(raw.get("judge", {}))),
        select=select,
    )


def _check_select(select: dict) -> None:
    """Fail before any model work on [select] keys or values that selection would reject later."""
    from prefdata.select import SelectConfig

    _make(SelectConfig, "select", select)
    margin = select.get("min_margin", 0.0)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
        raise PrefdataError(f"select.min_margin={margin!r} is not a finite number >= 0",
                            "use e.g. --min-margin 0.5 (0 keeps every pair whose chosen score is higher)")


def _check_pairing(select: dict, scenarios: tuple[int, ...]) -> None:
    """A pairing strategy the scenarios cannot use fails here, before any model work."""
    from prefdata import pairing
    from prefdata.select import ROLES

    for scenario in scenarios:
        pairing.check(select.get("pairing", "best_vs_worst"), scenario,
                      ROLES[scenario][1][1] or select.get("other_pick", "worst"), select.get("max_pairs_per_prompt", 4))


def _mix_name(mix: dict[int, float]) -> str:
    return "mix-" + "-".join(f"{k}x{v:g}" for k, v in sorted(mix.items()))
