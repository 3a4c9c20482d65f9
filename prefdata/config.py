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
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefdata.errors import PrefdataError
from prefdata.fields import at_least, check_instance, check_values, one_of

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

    # "imported:<column>" (ratings imported with `prefdata import`) becomes kind "imported", model <column>
    kind: str = field(default="verifier", metadata=one_of("verifier", "llm", "reward_model", "imported"))
    model: str | None = None
    backend: str = field(default="auto", metadata=one_of("auto", "vllm", "transformers", "openai"))
    endpoint_url: str | None = None
    timeout_s: float = field(default=5.0, metadata=at_least(0, open=True))
    batch_size: int = field(default=256, metadata=at_least(1))
    trust_remote_code: bool = False
    # llm judge only: greedy decoding budget, extra attempts after an unparsable output,
    # the name in judge_name ("llm:<model_name>", default: the model directory's name),
    # and the context to check prompts against (default: the model's config.json)
    max_tokens: int = field(default=512, metadata=at_least(1))
    max_retries: int = field(default=2, metadata=at_least(0))
    model_name: str | None = None
    max_model_len: int | None = field(default=None, metadata=at_least(1))

    def __post_init__(self):
        for name, value in _imported_judge({"kind": self.kind, "model": self.model}).items():
            object.__setattr__(self, name, value)
        check_instance(self)
        if self.kind == "imported" and not self.model:
            raise PrefdataError("--judge imported names no rating column",
                                "use --judge imported:<column>, e.g. --judge imported:overall_score")
        if self.kind != "verifier" and not self.model:
            raise PrefdataError(f"judge kind {self.kind!r} needs a model",
                                "pass --judge-model PATH or set [judge] model = \"PATH\"")


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
    seed: int = field(default=0, metadata=at_least(0))
    # test-split prompts stored for held-out accuracy (not generated for)
    heldout: int = field(default=64, metadata=at_least(0))
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


def pipeline_raw(scenario: int | None, mix: str | None, config: Path | None) -> tuple[dict, str]:
    """The raw pipeline that exactly one of --scenario N, --mix SPEC, --config FILE names, and
    where its values come from (for error messages)."""
    if sum(x is not None for x in (scenario, mix, config)) != 1:
        raise PrefdataError("give exactly one of --scenario N, --mix SPEC or --config FILE",
                            "e.g. --scenario 2")
    if config is not None:
        return load_toml(config), f"in {config}"
    if mix is not None:
        raw = scenario_pipeline(1)
        raw.pop("scenarios", None)
        raw.pop("name", None)
        raw["mix"] = mix
        return raw, "in pipelines/scenario1.toml"  # the mix's base pipeline
    return scenario_pipeline(scenario), f"in pipelines/scenario{scenario}.toml"


_KEY = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


def set_path(raw: dict, dotted: str, value: Any, label: str = "--set") -> None:
    """Set `raw["a"]["b"] = value` for dotted "a.b" (a command-line override), exactly that key."""
    if not _KEY.fullmatch(dotted):
        raise PrefdataError(f"{label} key {dotted!r} is not a dotted key",
                            "write it like policy.sampling.top_p (letters, digits, _ and - between dots)")
    *parents, leaf = dotted.split(".")
    node = raw
    for i, key in enumerate(parents):
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            where = ".".join(parents[: i + 1])
            raise PrefdataError(f"{label} {dotted}: {where} is a value, not a table, so it has no key {leaf!r}",
                                f"set {where} itself, or a key of a table such as policy.sampling.top_p")
    node[leaf] = value


def parse_set_value(key: str, text: str) -> Any:
    r"""A `--set KEY=VALUE` value: exactly one TOML value (string, number, boolean, array);
    a bare word that is no TOML value (a path, `llm`, `toy:policy`) is taken as a string.

    >>> parse_set_value("seed", "3"), parse_set_value("judge.kind", "llm")
    (3, 'llm')
    >>> parse_set_value("policy.sampling.stop", r'["\n\n"]')
    ['\n\n']
    """
    fix = f"give one TOML value (string, number, boolean or array), e.g. --set {key}=\"my-set\"" \
        if key == "name" else f"give one TOML value (string, number, boolean or array), e.g. --set {key}=0.9"
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise PrefdataError(f"--set {key}: the value holds a line break or control character", fix)
    try:
        doc = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        if text[:1] in "[{\"'" or not text:
            raise PrefdataError(f"--set {key}: {text!r} is not a valid TOML value", fix) from None
        return text
    value = doc.get("v")
    if set(doc) != {"v"} or isinstance(value, dict) or not isinstance(value, (str, int, float, bool, list)):
        raise PrefdataError(f"--set {key}: {text!r} is not one string, number, boolean or array", fix)
    return value


def origin_of(labels: dict[str, str], default: str):
    """Where a dotted key's value came from: the flag that set it (or the longest key prefix
    a flag set), else `default` (the pipeline file)."""
    def origin(key: str) -> str:
        probe = key.split("[")[0]
        while probe:
            if probe in labels:
                return labels[probe]
            probe = probe.rpartition(".")[0]
        return default
    return origin


def _imported_judge(judge: dict) -> dict:
    """`kind = "imported:<column>"` (ratings imported with `prefdata import`) as kind "imported"
    with the column as its model, the form the typed field checks."""
    kind = judge.get("kind")
    if isinstance(kind, str) and kind.startswith("imported:"):
        judge.update(kind="imported", model=kind.partition(":")[2])
    return judge


def _make(cls, section: str, values: dict, where=None, **extra):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise PrefdataError(f"unknown key(s) {unknown} in [{section}]",
                            f"allowed keys: {', '.join(sorted(names))}")
    values = check_values(cls, values, section, where)
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


def build_config(raw: dict, origin=None) -> BuildConfig:
    """Turn a raw (TOML + overrides) dict into a typed BuildConfig, with one-line errors.

    Every value is checked by type and range against the config dataclasses (`prefdata.fields`)
    before anything is loaded; `origin` (see `origin_of`) says where a key's value came from,
    so an error names the flag or file at fault.
    """
    from prefdata.generate import GenerationConfig, SamplingConfig
    from prefdata.sources import SourceSpec

    allowed = {"name", "scenarios", "mix", "seed", "heldout", "quiet", "source", "policy", "other", "judge", "select"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise PrefdataError(f"unknown top-level key(s) {unknown} in pipeline", f"allowed: {', '.join(sorted(allowed))}")
    for section in ("source", "policy", "other", "judge", "select", "policy.sampling", "other.sampling"):
        head, _, sub = section.partition(".")
        value = raw.get(head, {}).get(sub, {}) if sub and isinstance(raw.get(head), dict) else raw.get(head, {})
        if not isinstance(value, dict):
            where = origin(section) if origin else ""
            raise PrefdataError(f"{section} = {value!r}{f' ({where})' if where else ''} is not a table",
                                f"set its keys instead, e.g. --set {section}.KEY=VALUE, or a [{section}] table")
    mix = raw.get("mix")
    if mix is not None:
        from prefdata.mix import parse_mix

        if isinstance(mix, dict):
            mix = ",".join(f"{k}={v}" for k, v in mix.items())
        if not isinstance(mix, str):
            raise PrefdataError(f"mix = {mix!r} is not a mix", "write it like mix = \"1=0.5,4=0.5\" or --mix 1=0.5,4=0.5")
        mix = parse_mix(mix)
    top = check_values(BuildConfig, {k: raw[k] for k in ("name", "scenarios", "seed", "heldout", "quiet") if k in raw},
                       "", origin)
    scenarios = tuple(sorted(mix)) if mix else tuple(top.get("scenarios", ()))
    if not scenarios or any(s not in SCENARIOS for s in scenarios):
        raise PrefdataError(f"scenarios {list(scenarios)} are not valid", "use scenarios from 1-4, e.g. --scenario 2")
    seed = top.get("seed", 0)
    quiet = top.get("quiet", False)

    needed = set().union(*(SCENARIO_ORIGINS[s] for s in scenarios))

    def generation(section: str) -> Any:
        values = dict(raw.get(section, {}))
        sampling = _make(SamplingConfig, f"{section}.sampling", dict(values.pop("sampling", {})), origin)
        values.setdefault("model", f"toy:{section}")
        values = check_values(GenerationConfig, values, section, origin)
        if section in needed:  # an unused model is never loaded, trained or checked
            values["model"] = resolve_model(values["model"])
        return _make(GenerationConfig, section, values, origin, origin=section, sampling=sampling, quiet=quiet)

    source = dict(raw.get("source", {}))
    source.setdefault("path_or_name", TOY)
    name = top.get("name") or (_mix_name(mix) if mix else f"scenario{scenarios[0]}")
    if not _DATASET_NAME.fullmatch(name):
        # the name becomes a pairs part key and an export file name: it must not hold a path
        raise PrefdataError(f"dataset name {name!r} is not allowed",
                            "use letters, digits and . _ - = (starting with a letter or digit), e.g. name = \"gsm-s2\"")
    select = dict(raw.get("select", {}))
    select = _check_select(select, origin)
    _check_pairing(select, scenarios)
    return BuildConfig(
        name=str(name), scenarios=scenarios, mix=mix, seed=seed, quiet=quiet,
        heldout=top.get("heldout", 64),
        source=_make(SourceSpec, "source", source, origin),
        policy=generation("policy"), other=generation("other"),
        judge=_make(JudgeConfig, "judge", _imported_judge(dict(raw.get("judge", {}))), origin),
        select=select,
    )


def _check_select(select: dict, origin=None) -> dict:
    """Fail before any model work on [select] keys or values that selection would reject later."""
    from prefdata.hygiene.stage import check_eval_sets
    from prefdata.select import SelectConfig

    names = {f.name for f in dataclasses.fields(SelectConfig)}
    unknown = sorted(set(select) - names)
    if unknown:
        raise PrefdataError(f"unknown key(s) {unknown} in [select]", f"allowed keys: {', '.join(sorted(names))}")
    values = check_values(SelectConfig, select, "select", origin)
    check_eval_sets(values.get("decontaminate", ()))
    return values


def _check_pairing(select: dict, scenarios: tuple[int, ...]) -> None:
    """A pairing strategy the scenarios cannot use fails here, before any model work."""
    from prefdata import pairing
    from prefdata.select import ROLES

    for scenario in scenarios:
        pairing.check(select.get("pairing", "best_vs_worst"), scenario,
                      ROLES[scenario][1][1] or select.get("other_pick", "worst"), select.get("max_pairs_per_prompt", 4))


def _mix_name(mix: dict[int, float]) -> str:
    return "mix-" + "-".join(f"{k}x{v:g}" for k, v in sorted(mix.items()))
