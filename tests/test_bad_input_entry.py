"""Bad values and bad files, each through every place it can enter: a command-line flag, a
pipeline file (`build --config`), a source file. The companion of `tests/test_bad_input.py`
(same checks, same helpers): exit 2, ONE stderr line `error: <problem>; <fix>` naming the
key, flag or file at fault, no traceback, and the workspace byte-for-byte unchanged.

A case is one bad thing; `entries` says how it reaches prefdata. Config cases enter as a
flag (`--set KEY=VALUE`, or the dedicated option) and as the same key in a pipeline file;
source cases as `--source FILE` and as `[source] path_or_name` in a pipeline file; model
cases as `--policy-model`/`--judge-model` and as `[policy]`/`[judge] model`.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from tests.test_bad_input import run_cli, snapshot, template_ws, temp_files, tiny_model  # noqa: F401

FAST = ("--policy-model", "{model}", "--other-model", "{model}", "--backend", "transformers", "--limit", "2",
        "--n", "1", "--max-tokens", "4", "--quiet")


def pipeline_doc() -> dict:
    """The pipeline the file-entry cases start from, as TOML value texts (dumped by `_dump`)."""
    return {"name": '"scenario2"', "scenarios": "[2]",
            "source": {"path_or_name": '"toy"', "limit": "2"},
            "policy": {"model": '"{model}"', "backend": '"transformers"', "sampling": {"n": "1", "max_tokens": "4"}},
            "other": {"model": '"{model}"'}}


@dataclass(frozen=True)
class Case:
    id: str
    key: str            # dotted config key (config cases) or "" (source/model/command cases)
    value: str          # the TOML text of the bad value
    match: str          # regex the error line must match
    flag: tuple[str, ...] = ()  # a dedicated option instead of --set KEY=VALUE
    setup: tuple[Callable, ...] = ()
    entries: tuple[str, ...] = ("flag", "pipeline")
    args: tuple[str, ...] = ()  # for command cases: the whole command
    extra: dict = field(default_factory=dict)


def _toml_set(doc: dict, key: str, value: str) -> dict:
    """Set dotted `key` to the TOML text `value`, replacing whatever (value or table) was there."""
    *tables, leaf = key.split(".")
    node = doc
    for name in tables:
        node = node.setdefault(name, {})
    node[leaf] = value
    return doc


def _dump(doc: dict, prefix: str = "") -> str:
    lines = [f"{k} = {v}" for k, v in doc.items() if not isinstance(v, dict)]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines.append(f"\n[{prefix}{k}]\n" + _dump(v, f"{prefix}{k}."))
    return "\n".join(lines)


# -- setups: files the cases point at -------------------------------------------------------------
def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def setup_source_files(tmp: Path, model: Path) -> None:
    deep = "[" * 20000 + "]" * 20000
    _write(tmp / "deep.jsonl", '{"question": "What is 1 + 1?", "answer": "#### 2"}\n'
           f'{{"question": {deep}, "answer": "#### 2"}}\n')
    _write(tmp / "deep.json", f'[{{"question": "What is 1 + 1?", "answer": "#### 2", "x": {deep}}}]')
    _write(tmp / "surrogate.jsonl", '{"question": "What is 1 + 1?", "answer": "#### 2"}\n'
           '{"question": "broken \\ud800 text", "answer": "#### 2"}\n')
    # one valid 50 MB line: every row is over the 1 MB default cap
    _write(tmp / "huge.jsonl", '{"question": "' + "1 + 1 = ? " * (5 << 20) + '", "answer": "#### 2"}\n')
    _write(tmp / "shards" / "train-00000-of-00002.jsonl", '{"question": "What is 1 + 1?", "answer": "#### 2"}\n')
    _write(tmp / "shards" / "train-00001-of-00002.jsonl", '{"question": ["a", "list"], "answer": "#### 2"}\n')


def _model_copy(tmp: Path, model: Path, name: str, edit: Callable[[dict], object] | None = None,
                drop: tuple[str, ...] = (), raw: str | None = None) -> None:
    out = tmp / name
    shutil.copytree(model, out)
    for file in drop:
        (out / file).unlink()
    if raw is not None:
        (out / "config.json").write_text(raw)
    elif edit is not None:
        config = json.loads((out / "config.json").read_text())
        edit(config)
        (out / "config.json").write_text(json.dumps(config))


def setup_bad_models(tmp: Path, model: Path) -> None:
    _model_copy(tmp, model, "remote-code", lambda c: c.update(auto_map={"AutoModel": "evil.Model"}))
    _model_copy(tmp, model, "no-tokenizer", drop=("tokenizer.json",))
    _model_copy(tmp, model, "bad-config", raw='{"model_type": "llama", ')
    _model_copy(tmp, model, "list-config", raw="[1, 2, 3]")
    _model_copy(tmp, model, "huge-vocab", lambda c: c.update(vocab_size=10 ** 12))
    _model_copy(tmp, model, "huge-layers", lambda c: c.update(num_hidden_layers=100_000))
    _model_copy(tmp, model, "more-layers", lambda c: c.update(num_hidden_layers=64))
    _model_copy(tmp, model, "wrong-vocab", lambda c: c.update(vocab_size=c["vocab_size"] + 1000))


def setup_fifo(tmp: Path, model: Path) -> None:
    import os

    os.mkfifo(tmp / "fifo")
    (tmp / "export").mkdir()
    os.mkfifo(tmp / "export" / "scenario2.parquet")


# -- the table ------------------------------------------------------------------------------------
CONFIG = [
    Case("name-is-not-a-table", "name.x", "1", r"name is a value, not a table", entries=("flag",)),
    Case("scenarios-not-an-array", "scenarios", "3", r"scenarios = 3 .*whole number; expected an array"),
    Case("seed-not-a-number", "seed", '"abc"', r"seed = 'abc' .*expected a whole number >= 0"),
    Case("seed-bare-word", "seed", "abc", r"seed = 'abc' \(--set\)", entries=("flag",)),
    Case("heldout-not-a-number", "heldout", '"abc"', r"heldout = 'abc'.*whole number"),
    Case("select-not-a-table", "select", "1", r"select = 1 .*not a table"),
    Case("policy-not-a-table", "policy", "1", r"policy = 1 .*not a table"),
    Case("judge-batch-size-0", "judge.batch_size", "0", r"judge\.batch_size = 0 .*out of range.*>= 1"),
    Case("shard-size-fraction", "policy.shard_size", "0.5", r"policy\.shard_size = 0\.5 .*fractional.*whole"),
    Case("judge-timeout-negative", "judge.timeout_s", "-1", r"judge\.timeout_s = -1 .*out of range.*> 0"),
    Case("top-p-not-a-number", "policy.sampling.top_p", '"abc"', r"policy\.sampling\.top_p = 'abc' .*string.*"
         r"finite number in \(0, 1\]"),
    Case("top-p-above-1", "policy.sampling.top_p", "1.5", r"top_p = 1\.5 .*out of range"),
    Case("temperature-inf-flag", "policy.sampling.temperature", "inf", r"temperature = inf \(--temperature\) "
         r"is not finite", flag=("--temperature", "inf"), entries=("flag",)),
    Case("temperature-inf", "other.sampling.temperature", "inf", r"other\.sampling\.temperature = inf .*not finite"),
    Case("temperature-nan", "policy.sampling.temperature", "nan", r"temperature = nan .*not finite"),
    Case("min-margin-inf", "select.min_margin", "inf", r"select\.min_margin = inf .*not finite"),
    Case("stop-not-strings", "policy.sampling.stop", "[1]", r"stop\[0\] = 1 .*expected a string"),
    Case("n-not-whole", "policy.sampling.n", "2.5", r"policy\.sampling\.n = 2\.5 .*whole number"),
    Case("unknown-backend", "policy.backend", '"gpu"', r"policy\.backend = 'gpu' .*one of: auto, vllm"),
    Case("unknown-judge-kind", "judge.kind", '"oracle"', r"judge\.kind = 'oracle' .*verifier, llm, reward_model"),
    Case("source-limit-negative", "source.limit", "-3", r"source\.limit = -3 .*>= 0"),
    Case("prompt-cap-zero", "source.max_prompt_bytes", "0", r"source\.max_prompt_bytes = 0 .*>= 1"),
    Case("set-splices-a-table", "name", '"x"\n[source]\npath_or_name = "/etc/passwd"',
         r"--set name: the value holds a line break", entries=("flag",)),
    Case("set-two-values", "seed", "1 2", r"seed = '1 2'", entries=("flag",)),
    Case("set-inline-table", "policy.sampling", "{n = 1}", r"--set policy\.sampling: .* not one string, number",
         entries=("flag",)),
    Case("set-bad-key", "policy..n", "1", r"key 'policy\.\.n' is not a dotted key", entries=("flag",)),
    Case("set-unclosed-array", "policy.sampling.stop", '["a"', r"not a valid TOML value", entries=("flag",)),
]
SOURCES = [
    Case("source-deep-jsonl", "source.path_or_name", "{tmp}/deep.jsonl", r"deep\.jsonl nests JSON deeper than 100 "
         r"levels \(line 2\)", setup=(setup_source_files,)),
    Case("source-deep-json", "source.path_or_name", "{tmp}/deep.json", r"deep\.json nests JSON deeper than 100",
         setup=(setup_source_files,)),
    Case("source-lone-surrogate", "source.path_or_name", "{tmp}/surrogate.jsonl", r"surrogate\.jsonl holds an "
         r"unpaired UTF-16 surrogate escape '\\\\ud800' \(line 2\)", setup=(setup_source_files,)),
    Case("source-50mb-line", "source.path_or_name", "{tmp}/huge.jsonl", r"every row of .*huge\.jsonl is larger "
         r"than max_prompt_bytes=1000000", setup=(setup_source_files,)),
    Case("source-shards-disagree", "source.path_or_name", "{tmp}/shards", r"column 'question' is .* in "
         r".*train-0000\d-of-00002\.jsonl but .* in .*train-0000\d-of-00002\.jsonl", setup=(setup_source_files,)),
]
MODELS = [
    Case("reward-model-remote-code", "judge.model", "{tmp}/remote-code", r"remote-code needs custom code "
         r"\(auto_map in config\.json\)", setup=(setup_bad_models,), extra={"judge": "reward_model"}),
    Case("model-remote-code", "policy.model", "{tmp}/remote-code", r"needs custom code", setup=(setup_bad_models,)),
    Case("model-no-tokenizer", "policy.model", "{tmp}/no-tokenizer", r"no-tokenizer is missing a tokenizer",
         setup=(setup_bad_models,)),
    Case("judge-model-no-tokenizer", "judge.model", "{tmp}/no-tokenizer", r"no-tokenizer is missing a tokenizer",
         setup=(setup_bad_models,), extra={"judge": "llm"}),
    Case("judge-model-misspelled", "judge.model", "{tmp}/no-such-judge", r"no-such-judge does not exist",
         extra={"judge": "llm"}),
    Case("model-invalid-config", "policy.model", "{tmp}/bad-config", r"config\.json of model directory .*bad-config "
         r"is not valid JSON", setup=(setup_bad_models,)),
    Case("model-config-is-a-list", "policy.model", "{tmp}/list-config", r"holds a JSON list, not an object",
         setup=(setup_bad_models,)),
    Case("model-absurd-vocab", "policy.model", "{tmp}/huge-vocab", r"vocab_size = 1000000000000, outside",
         setup=(setup_bad_models,)),
    Case("model-absurd-layers", "policy.model", "{tmp}/huge-layers", r"num_hidden_layers = 100000, outside",
         setup=(setup_bad_models,)),
    Case("model-more-layers-than-weights", "policy.model", "{tmp}/more-layers", r"says 64 layers but its weights "
         r"hold 2", setup=(setup_bad_models,)),
    Case("model-vocab-not-the-embedding", "policy.model", "{tmp}/wrong-vocab", r"says vocab_size = \d+ but its "
         r"embedding has \d+ rows", setup=(setup_bad_models,)),
]
COMMANDS = [  # options of other commands (no pipeline file or source to enter through)
    Case("query-nested-to-csv", "", "", r"column 'x' is of type list.*csv output cannot hold",
         args=("query", "{ws}", "SELECT [1, 2] AS x", "--format", "csv")),
    Case("query-duplicate-names-to-json", "", "", r"two columns named 'a'.*json output",
         args=("query", "{ws}", "SELECT 1 AS a, 2 AS a", "--format", "json")),
    Case("query-union-to-parquet", "", "", r"column 'u' is of type .*union.*parquet output cannot hold",
         args=("query", "{ws}", "SELECT union_value(k := 1) AS u", "--format", "parquet", "-o", "{tmp}/u.parquet")),
    Case("query-interval-to-jsonl", "", "", r"column 'i' is of type month_day_nano_interval.*jsonl",
         args=("query", "{ws}", "SELECT INTERVAL 1 DAY AS i", "--format", "jsonl")),
    Case("query-output-fifo", "", "", r"--output .*fifo exists and is a named pipe", setup=(setup_fifo,),
         args=("query", "{ws}", "SELECT 1", "--format", "csv", "-o", "{tmp}/fifo")),
    Case("toy-data-out-fifo", "", "", r"--out .*fifo exists and is a named pipe", setup=(setup_fifo,),
         args=("toy", "data", "--out", "{tmp}/fifo", "--n", "3")),
    Case("toy-data-out-device", "", "", r"--out /dev/null exists and is a character device",
         args=("toy", "data", "--out", "/dev/null", "--n", "3")),
    Case("export-onto-fifo", "", "", r"scenario2\.parquet exists and is a named pipe", setup=(setup_fifo,),
         args=("export", "{ws}", "--out", "{tmp}/export")),
    Case("train-lr-inf-trl-name", "", "", r"lr = inf \(--lr\) is not finite",
         args=("train", "{ws}", "--scenario", "2", "--model", "{model}", "--learning_rate", "inf")),
    Case("train-beta-inf", "", "", r"beta = inf \(--beta\) is not finite",
         args=("train", "{ws}", "--scenario", "2", "--model", "{model}", "--beta", "inf")),
    Case("train-batch-size-0-trl-name", "", "", r"batch_size = 0 \(--batch-size\) is out of range",
         args=("train", "{ws}", "--scenario", "2", "--model", "{model}", "--per_device_train_batch_size", "0")),
    Case("study-lr-inf", "", "", r"lr = inf is not finite", args=("study", "{tmp}/study", "--lr", "inf")),
]


def _matrix():
    for case in CONFIG + SOURCES + MODELS:
        for entry in case.entries:
            yield pytest.param(case, entry, id=f"{case.id}[{entry}]")
    for case in COMMANDS:
        yield pytest.param(case, "command", id=f"{case.id}[command]")


def _fill(text: str, tmp: Path, ws: Path, model: Path) -> str:
    return text.replace("{tmp}", str(tmp)).replace("{ws}", str(ws)).replace("{model}", str(model))


def _command(case: Case, entry: str, tmp: Path, ws: Path, model: Path) -> list[str]:
    fill = lambda text: _fill(text, tmp, ws, model)  # noqa: E731
    if entry == "command":
        return [fill(a) for a in case.args]
    judge = ("--judge", case.extra["judge"]) if "judge" in case.extra else ()
    if entry == "flag":
        if case.flag:
            bad = case.flag
        elif case.key == "source.path_or_name":
            bad = ("--source", fill(case.value))
        elif case.key in ("policy.model", "judge.model"):
            bad = ("--policy-model" if case.key == "policy.model" else "--judge-model", fill(case.value))
        else:
            bad = ("--set", f"{case.key}={case.value}")
        base = FAST[2:] if case.key == "policy.model" else FAST  # FAST starts with --policy-model {model}
        return ["build", str(ws), "--scenario", "2", *[fill(a) for a in base], *judge, *bad]
    value = json.dumps(fill(case.value)) if case.key.endswith(("path_or_name", "model")) else case.value
    doc = _toml_set(pipeline_doc(), case.key, value)
    if "judge" in case.extra:
        doc = _toml_set(doc, "judge.kind", json.dumps(case.extra["judge"]))
    pipeline = _write(tmp / "pipeline.toml", fill(_dump(doc)) + "\n")
    return ["build", str(ws), "--config", str(pipeline), "--quiet"]


@pytest.mark.parametrize("case,entry", list(_matrix()))
def test_bad_value(case: Case, entry: str, tmp_path, template_ws, tiny_model):  # noqa: F811
    tmp = tmp_path / "in"
    tmp.mkdir()
    ws = tmp_path / "ws"
    shutil.copytree(template_ws, ws)
    for setup in case.setup:
        setup(tmp, tiny_model)
    args = _command(case, entry, tmp, ws, tiny_model)
    before = snapshot(ws)

    result = run_cli(args, cwd=tmp_path)

    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: ") and "; " in lines[0], lines[0]
    assert re.search(case.match, lines[0]), f"{case.match!r} not in {lines[0]!r}"
    assert snapshot(ws) == before, "the workspace changed"
    assert temp_files(ws) == []


def test_every_case_enters_everywhere_it_can():
    """Config, source and model cases are tried as a flag AND in a pipeline file, unless the case
    is about the flag's own syntax (--set parsing, a flag's name)."""
    flag_only = {c.id for c in CONFIG + SOURCES + MODELS if c.entries == ("flag",)}
    assert flag_only <= {"name-is-not-a-table", "seed-bare-word", "temperature-inf-flag", "set-splices-a-table",
                         "set-two-values", "set-inline-table", "set-bad-key", "set-unclosed-array"}
    assert len(list(_matrix())) >= 2 * len(CONFIG + SOURCES + MODELS) - len(flag_only) + len(COMMANDS)
