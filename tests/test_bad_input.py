"""Bad input, through the real CLI: one line on stderr, the documented exit code, no damage.

Every case runs `prefdata ...` in a subprocess and checks that

* the exit code is the README's (2 bad input, 3 locked, 4 diverged), never 1 (a bug);
* stderr is exactly ONE line, `error: <problem>; <fix>`, naming the problem (a regex
  per case) and carrying a fix after the `; `; no traceback;
* the workspace the command was pointed at is unchanged: every file's sha256 is the
  same before and after, and no temp file is left behind.

Cases that need a workspace get their own copy of one small workspace built once per
session through the store API (prompts, candidates, judgments, scenario-2 pairs), so
each case costs one CLI start-up. Model cases use a random-init tiny Llama saved once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pytest

from prefdata.errors import EXIT_BAD_INPUT, EXIT_DIVERGED
from prefdata.store import Workspace

CLI = [sys.executable, "-c", "from prefdata.cli import main; main()"]


def cli_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PREFDATA_DEBUG"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return env


def run_cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + [str(a) for a in args], cwd=cwd, env=cli_env(), capture_output=True,
                          text=True, timeout=timeout)


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (the lock file's content included)."""
    if not root.exists():
        return {}
    if root.is_file():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def temp_files(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return [str(p.relative_to(root)) for p in root.rglob("*")
            if p.name.endswith(".tmp") or ".tmp" in p.name.split(".")]


# -- shared fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A random-init 2-layer Llama with the toy character tokenizer (safetensors only)."""
    from prefdata.toy.model import ToyModelConfig, build_model, save_model

    return save_model(build_model(ToyModelConfig(), seed=1), tmp_path_factory.mktemp("models") / "tiny",
                      name="tiny")


def _template_workspace(root: Path) -> Path:
    """A small, consistent workspace: 6 toy prompts, policy + reference candidates, verifier-style
    judgments and 6 scenario-2 pairs (unscored). Written through the store, manifest last."""
    from prefdata.toy.task import generate

    problems = generate("train", 6, seed=0)
    ids = [f"p{i}" for i in range(len(problems))]
    n = len(problems)
    ws = Workspace.create(root)
    prompts = pa.table({"prompt_id": ids, "source": ["toy"] * n, "split": ["train"] * n,
                        "source_index": list(range(n)), "prompt": [p.question for p in problems],
                        "reference_solution": [p.reference_solution for p in problems],
                        "reference_answer": [str(p.answer) for p in problems]})
    wrong = [p.policy_solution.replace(f"is {p.answer}.", f"is {p.answer + 1}.") for p in problems]
    rows = []
    for i, p in enumerate(problems):
        for k, (origin, text) in enumerate((("policy", wrong[i]), ("reference", p.reference_solution))):
            rows.append({"candidate_id": f"c{i}-{k}", "prompt_id": ids[i], "origin": origin,
                         "model_name": "tiny", "model_hash": "0" * 16, "backend": "test",
                         "sampling_params": "{}", "seed": 0, "sample_index": k, "work_key": f"w{i}-{origin}",
                         "text": text, "token_count": len(text), "finish_reason": "stop"})
    candidates = pa.Table.from_pylist(rows)
    judgments = pa.table({"candidate_id": [r["candidate_id"] for r in rows],
                          "prompt_id": [r["prompt_id"] for r in rows],
                          "judge_name": ["verifier"] * len(rows), "judge_version": ["v"] * len(rows),
                          "score": [0.0 if r["origin"] == "policy" else 1.0 for r in rows],
                          "correct": [r["origin"] != "policy" for r in rows], "status": ["ok"] * len(rows)})
    pairs = pa.table({
        "pair_id": [f"pair{i}" for i in range(n)], "prompt_id": ids, "dataset": ["scenario2"] * n,
        "scenario": [2] * n, "kind": ["mixed"] * n, "prompt": [p.question for p in problems],
        "chosen": [p.reference_solution for p in problems], "rejected": wrong,
        "chosen_candidate_id": [f"c{i}-1" for i in range(n)],
        "rejected_candidate_id": [f"c{i}-0" for i in range(n)],
        "chosen_origin": ["reference"] * n, "rejected_origin": ["policy"] * n,
        "chosen_score": [1.0] * n, "rejected_score": [0.0] * n, "margin": [1.0] * n,
        "judge_name": ["verifier"] * n, "strategy": ["reference_vs_worst_policy"] * n})
    with ws.writer():
        ws.write_part("prompts", "src-a", prompts)
        ws.write_part("candidates", "policy-a", candidates)
        ws.write_part("judgments", "judge-a", judgments)
        ws.write_part("pairs", "scenario2", pairs)
        ws.write_manifest("build:scenario2", {"note": "test fixture"})
    return root


@pytest.fixture(scope="session")
def template_ws(tmp_path_factory) -> Path:
    return _template_workspace(tmp_path_factory.mktemp("template") / "ws")


# -- case set-ups: each gets (tmp, ws, model) and prepares files ------------------------------------
def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def setup_sources(tmp: Path, ws: Path, model: Path) -> None:
    _write(tmp / "empty.jsonl", b"")
    _write(tmp / "binary.jsonl", bytes(range(256)) * 64)
    # one 24 MB line with no newline and no JSON in it
    _write(tmp / "hugeline.jsonl", b"x" * (24 << 20))
    _write(tmp / "wrongcols.jsonl", '{"foo": "What is 1 + 1?", "bar": 2}\n{"foo": "x", "bar": 3}\n')
    _write(tmp / "good.jsonl", '{"question": "What is 1 + 1?", "answer": "1 + 1 = 2\\n#### 2"}\n')
    _write(tmp / "latin1.jsonl", '{"question": "caf\xe9 1 + 1?", "answer": "#### 2"}\n'.encode("latin-1"))
    _write(tmp / "ragged.csv", 'question,answer\n"What is 1 + 1?","#### 2"\n"a","b","c","d"\n')
    _write(tmp / "bad.toml", 'name = "x"\nscenarios = [2\n[source\n')
    _write(tmp / "unknown-key.toml", 'scenarios = [2]\nbogus = 1\n')
    _write(tmp / "afile", "not a directory\n")
    _write(tmp / "notws" / "something.txt", "hello\n")


def setup_models(tmp: Path, ws: Path, model: Path) -> None:
    """Broken model directories derived from the tiny model."""
    def copy(name: str, drop: tuple[str, ...] = ()) -> Path:
        out = tmp / name
        shutil.copytree(model, out)
        for file in drop:
            (out / file).unlink()
        return out

    only_config = tmp / "only-config"
    only_config.mkdir()
    shutil.copy(model / "config.json", only_config / "config.json")
    no_template = copy("no-template", ("chat_template.jinja",))
    config = json.loads((no_template / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (no_template / "tokenizer_config.json").write_text(json.dumps(config))
    pickle_only = copy("pickle-only", ("model.safetensors",))
    _write(pickle_only / "pytorch_model.bin", b"\x80\x02not really a pickle")
    broken_tok = copy("broken-tokenizer")
    _write(broken_tok / "tokenizer.json", b"{ this is not json")


def setup_long_context_judge(tmp: Path, ws: Path, model: Path) -> None:
    """The tiny random model with a 2048-token context: a judge prompt fits, its answers are garbage."""
    out = tmp / "long-judge"
    shutil.copytree(model, out)
    config = json.loads((out / "config.json").read_text())
    config["max_position_embeddings"] = 2048  # rotary positions: no weights depend on it
    (out / "config.json").write_text(json.dumps(config))


def setup_nan_reward_model(tmp: Path, ws: Path, model: Path) -> None:
    """A sequence classifier whose weights are all NaN: every score it gives is NaN."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(model)
    config.num_labels = 1
    rm = AutoModelForSequenceClassification.from_config(config)
    with torch.no_grad():
        for param in rm.parameters():
            param.fill_(float("nan"))
    _save_reward_model(rm, model, tmp / "nan-rm")


def setup_inf_reward_model(tmp: Path, ws: Path, model: Path) -> None:
    """A sequence classifier whose every score is +inf: all weights zero except a constant
    embedding (so every final hidden state is all ones after the norm) and a score head of
    3e38 per dimension, whose dot product overflows float32."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(model)
    config.num_labels = 1
    rm = AutoModelForSequenceClassification.from_config(config)
    with torch.no_grad():
        for param in rm.parameters():
            param.zero_()
        rm.get_input_embeddings().weight.fill_(1.0)
        rm.base_model.norm.weight.fill_(1.0)
        rm.score.weight.fill_(3e38)
    _save_reward_model(rm, model, tmp / "inf-rm")


def _save_reward_model(rm, model: Path, out: Path) -> None:
    """Save a classifier made from `model`'s config, with `model`'s tokenizer files beside it."""
    rm.save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (model / name).exists():
            shutil.copy(model / name, out / name)


def setup_manifest_garbage(tmp: Path, ws: Path, model: Path) -> None:
    (ws / "manifest.json").write_text('{"schema_version": 1, "tables": {')


def setup_manifest_future(tmp: Path, ws: Path, model: Path) -> None:
    manifest = json.loads((ws / "manifest.json").read_text())
    manifest["schema_version"] = 999
    (ws / "manifest.json").write_text(json.dumps(manifest))


def setup_corrupt_part(tmp: Path, ws: Path, model: Path) -> None:
    (ws / "judgments" / "part-judge-a.parquet").write_bytes(b"PAR1 this is not parquet PAR1")


def setup_output_dir(tmp: Path, ws: Path, model: Path) -> None:
    (tmp / "outdir").mkdir()
    _write(tmp / "afile", "a file\n")


# -- the matrix ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    match: str  # regex the error line must match (the problem named)
    setup: tuple[Callable, ...] = ()
    code: int = EXIT_BAD_INPUT
    extra: dict = field(default_factory=dict)


SCN2 = ("--scenario", "2", "--policy-model", "{model}", "--backend", "transformers", "--limit", "4",
        "--n", "2", "--max-tokens", "8", "--quiet")
NEW_WS = "{tmp}/new-ws"

CASES = [
    # ---- build: sources ----
    Case("build-missing-source", ("build", NEW_WS, *SCN2, "--source", "{tmp}/nope.jsonl"),
         r"file not found.*nope\.jsonl"),
    Case("build-empty-source", ("build", NEW_WS, *SCN2, "--source", "{tmp}/empty.jsonl"),
         r"empty\.jsonl.*empty", (setup_sources,)),
    Case("build-binary-source", ("build", NEW_WS, *SCN2, "--source", "{tmp}/binary.jsonl"),
         r"binary\.jsonl.*(UTF-8|JSON|binary)", (setup_sources,)),
    Case("build-huge-line-source", ("build", NEW_WS, *SCN2, "--source", "{tmp}/hugeline.jsonl"),
         r"hugeline\.jsonl.*(JSON|line)", (setup_sources,)),
    Case("build-wrong-columns", ("build", NEW_WS, *SCN2, "--source", "{tmp}/wrongcols.jsonl"),
         r"(column|field).*(prompt|question)|(prompt|question).*(column|field)", (setup_sources,)),
    Case("build-missing-named-column", ("build", NEW_WS, *SCN2, "--source", "{tmp}/good.jsonl",
                                        "--prompt-column", "nope"),
         r"nope", (setup_sources,)),
    Case("build-non-utf8-source", ("build", NEW_WS, *SCN2, "--source", "{tmp}/latin1.jsonl"),
         r"latin1\.jsonl.*UTF-8", (setup_sources,)),
    Case("build-ragged-csv", ("build", NEW_WS, *SCN2, "--source", "{tmp}/ragged.csv"),
         r"ragged\.csv", (setup_sources,)),
    # ---- build: options and config ----
    Case("build-min-margin-nan", ("build", NEW_WS, *SCN2, "--min-margin", "nan"), r"min_margin.*nan"),
    Case("build-min-margin-inf", ("build", NEW_WS, *SCN2, "--min-margin", "inf"), r"min_margin.*inf"),
    Case("build-unknown-scenario", ("build", NEW_WS, "--scenario", "7"), r"unknown scenario 7"),
    Case("build-mix-not-summing-to-1", ("build", NEW_WS, "--mix", "1=0.5,4=0.2"), r"sum to 1"),
    Case("build-mix-nan", ("build", NEW_WS, "--mix", "1=nan,4=0.5"), r"mix"),
    Case("build-unknown-set-key", ("build", NEW_WS, *SCN2, "--set", "policy.bogus=1"),
         r"unknown key.*bogus.*\[policy\]"),
    Case("build-unknown-select-key", ("build", NEW_WS, *SCN2, "--set", "select.bogus=1"), r"bogus"),
    Case("build-set-without-equals", ("build", NEW_WS, *SCN2, "--set", "policy.sampling.n"),
         r"not KEY=VALUE"),
    Case("build-bad-toml", ("build", NEW_WS, "--config", "{tmp}/bad.toml"), r"bad\.toml.*not valid TOML",
         (setup_sources,)),
    Case("build-toml-unknown-key", ("build", NEW_WS, "--config", "{tmp}/unknown-key.toml"), r"bogus",
         (setup_sources,)),
    Case("build-zero-samples", ("build", NEW_WS, *SCN2, "--n", "0"), r"n = 0 \(--n\) is out of range"),
    Case("build-negative-temperature", ("build", NEW_WS, *SCN2, "--temperature", "-1"), r"temperature"),
    Case("build-two-modes", ("build", NEW_WS, "--scenario", "2", "--mix", "1=0.5,4=0.5"), r"exactly one"),
    # ---- build: models and judges ----
    Case("build-model-dir-missing", ("build", NEW_WS, *SCN2[:2], "--policy-model", "{tmp}/no-model",
                                     *SCN2[4:]), r"no-model.*does not exist"),
    Case("build-model-missing-files", ("build", NEW_WS, *SCN2[:2], "--policy-model", "{tmp}/only-config",
                                       *SCN2[4:]), r"only-config.*missing", (setup_models,)),
    Case("build-tokenizer-without-chat-template",
         ("build", NEW_WS, *SCN2[:2], "--policy-model", "{tmp}/no-template", *SCN2[4:]),
         r"no chat template", (setup_models,)),
    Case("build-broken-tokenizer", ("build", NEW_WS, *SCN2[:2], "--policy-model", "{tmp}/broken-tokenizer",
                                    *SCN2[4:]), r"tokenizer", (setup_models,)),
    Case("build-reward-model-nan-scores", ("build", NEW_WS, *SCN2, "--judge", "reward_model",
                                           "--judge-model", "{tmp}/nan-rm"),
         r"(NaN|non-finite|not finite)", (setup_nan_reward_model,)),
    Case("build-reward-model-inf-scores", ("build", NEW_WS, *SCN2, "--judge", "reward_model",
                                           "--judge-model", "{tmp}/inf-rm"),
         r"non-finite scores \(NaN/inf\)", (setup_inf_reward_model,)),
    Case("build-llm-judge-context-too-small", ("build", NEW_WS, *SCN2, "--judge", "llm", "--judge-model", "{model}"),
         r"judge prompt has \d+ tokens.*exceeds the judge model's context of 512"),
    Case("build-llm-judge-garbage", ("build", NEW_WS, *SCN2, "--judge", "llm", "--judge-model", "{tmp}/long-judge",
                                     "--set", "judge.max_tokens=32", "--set", "judge.max_retries=1"),
         # a judge model that answers garbage: every verdict is parse_error, nothing can be paired
         r"no pairs survived selection.*unscored", (setup_long_context_judge,)),
    # ---- build: workspaces ----
    Case("build-workspace-is-a-file", ("build", "{tmp}/afile", *SCN2), r"afile.*is a file", (setup_sources,)),
    Case("build-workspace-not-a-workspace", ("build", "{tmp}/notws", *SCN2), r"notws.*not a prefdata workspace",
         (setup_sources,)),
    Case("build-incompatible-schema", ("build", "{ws}", *SCN2), r"schema version 999",
         (setup_manifest_future,)),
    Case("build-corrupted-manifest", ("build", "{ws}", *SCN2), r"manifest\.json is not valid JSON",
         (setup_manifest_garbage,)),
    # ---- query ----
    Case("query-missing-workspace", ("query", "{tmp}/nope", "SELECT 1"), r"no workspace at"),
    Case("query-workspace-is-a-file", ("query", "{tmp}/afile", "SELECT 1"), r"afile", (setup_sources,)),
    Case("query-write-refused", ("query", "{ws}", "COPY (SELECT * FROM pairs) TO '{tmp}/leak.csv'"),
         r"read-only"),
    Case("query-attach-refused", ("query", "{ws}", "ATTACH '{tmp}/other.db' AS o"), r"read-only"),
    Case("query-bad-sql", ("query", "{ws}", "SELEKT * FROM pairs"), r"(parse|syntax|query failed)"),
    Case("query-unknown-table", ("query", "{ws}", "SELECT * FROM ../prompts"), r"(query failed|parse)"),
    Case("query-output-is-a-directory", ("query", "{ws}", "SELECT 1", "--output", "{tmp}/outdir"),
         r"outdir.*is a directory", (setup_output_dir,)),
    Case("query-output-parent-is-a-file", ("query", "{ws}", "SELECT 1", "--output", "{tmp}/afile/out.csv",
                                           "--format", "csv"), r"afile", (setup_output_dir,)),
    Case("query-parquet-to-stdout", ("query", "{ws}", "SELECT 1", "--format", "parquet"), r"needs a file"),
    Case("query-corrupted-manifest", ("query", "{ws}", "SELECT 1"), r"not valid JSON", (setup_manifest_garbage,)),
    Case("query-incompatible-schema", ("query", "{ws}", "SELECT 1"), r"schema version 999",
         (setup_manifest_future,)),
    Case("query-corrupted-part", ("query", "{ws}", "SELECT count(*) FROM judgments"), r"judge-a",
         (setup_corrupt_part,)),
    # ---- info ----
    Case("info-missing-workspace", ("info", "{tmp}/nope"), r"no workspace at"),
    Case("info-not-a-workspace", ("info", "{tmp}/notws"), r"not a prefdata workspace", (setup_sources,)),
    Case("info-corrupted-manifest", ("info", "{ws}"), r"not valid JSON", (setup_manifest_garbage,)),
    Case("info-incompatible-schema", ("info", "{ws}"), r"schema version 999", (setup_manifest_future,)),
    Case("info-corrupted-part", ("info", "{ws}"), r"judge-a", (setup_corrupt_part,)),
    # ---- export ----
    Case("check-missing-workspace", ("check", "{tmp}/nope"), r"no workspace at"),
    Case("check-corrupted-part", ("check", "{ws}"), r"judge-a", (setup_corrupt_part,)),
    Case("gc-missing-workspace", ("gc", "{tmp}/nope"), r"no workspace at"),
    Case("iterate-unknown-reference", ("iterate", "{tmp}/new-ws", "--scenario", "1", "--rounds", "2",
                                       "--reference", "nowhere"), r"reference = 'nowhere' .*expected one of: base, previous"),
    Case("import-unmappable-columns", ("import", "{ws}", "{tmp}/wrongcols.jsonl", "--as", "candidates",
                                       "--origin", "policy", "--model-name", "x"),
         r"found .*foo", (setup_sources,)),
    Case("gc-corrupted-manifest", ("gc", "{ws}"), r"not valid JSON", (setup_manifest_garbage,)),
    Case("export-output-is-a-file", ("export", "{ws}", "--out", "{tmp}/afile"), r"afile.*is a file",
         (setup_output_dir,)),
    Case("export-unknown-format", ("export", "{ws}", "--out", "{tmp}/out", "--format", "bogus"),
         r"unknown export format"),
    Case("export-dataset-escaping", ("export", "{ws}", "--out", "{tmp}/out", "--dataset", "../../evil"),
         r"(unknown dataset|not a valid|name)"),
    Case("export-incompatible-schema", ("export", "{ws}", "--out", "{tmp}/out"), r"schema version 999",
         (setup_manifest_future,)),
    # ---- score ----
    Case("score-model-missing", ("score", "{ws}", "--model", "{tmp}/no-model", "--device", "cpu"),
         r"no-model"),
    Case("score-model-missing-files", ("score", "{ws}", "--model", "{tmp}/only-config", "--device", "cpu"),
         r"only-config", (setup_models,)),
    Case("score-unknown-scenario", ("score", "{ws}", "--model", "{model}", "--scenario", "9"),
         r"unknown scenario 9"),
    Case("score-unknown-dataset", ("score", "{ws}", "--model", "{model}", "--dataset", "../nope"),
         r"nope"),
    # ---- train ----
    Case("train-lr-nan", ("train", "{ws}", "--scenario", "2", "--model", "{model}", "--lr", "nan"), r"lr = nan \(--lr\) is not finite"),
    Case("train-lr-inf", ("train", "{ws}", "--scenario", "2", "--model", "{model}", "--lr", "inf"), r"lr = inf \(--lr\) is not finite"),
    Case("train-beta-nan", ("train", "{ws}", "--scenario", "2", "--model", "{model}", "--beta", "nan"),
         r"beta"),
    Case("train-no-dataset", ("train", "{ws}", "--model", "{model}"), r"no dataset"),
    Case("train-unknown-loss", ("train", "{ws}", "--scenario", "2", "--model", "{model}", "--loss", "bogus"),
         r"bogus"),
    Case("train-batch-size-0", ("train", "{ws}", "--scenario", "2", "--model", "{model}", "--batch-size", "0"),
         r"batch_size"),
    Case("train-output-dir-is-a-file", ("train", "{ws}", "--scenario", "2", "--model", "{model}",
                                        "--output-dir", "{tmp}/afile"), r"afile", (setup_output_dir,)),
    # ---- report / toy ----
    Case("report-not-a-workspace", ("report", "{tmp}/notws"), r"not a prefdata workspace", (setup_sources,)),
    Case("toy-data-unknown-split", ("toy", "data", "--out", "{tmp}/t.jsonl", "--split", "bogus"),
         r"unknown split"),
]


def _fill(arg: str, tmp: Path, ws: Path, model: Path) -> str:
    return arg.replace("{tmp}", str(tmp)).replace("{ws}", str(ws)).replace("{model}", str(model))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, template_ws, tiny_model):
    tmp = tmp_path / "in"
    tmp.mkdir()
    ws = tmp_path / "ws"
    shutil.copytree(template_ws, ws)
    for setup in case.setup:
        setup(tmp, ws, tiny_model)
    args = [_fill(a, tmp, ws, tiny_model) for a in case.args]
    watched = [ws, *[Path(a) for a in args if a.startswith(str(tmp)) and Path(a).exists()]]
    before = {str(p): snapshot(p) for p in watched}

    result = run_cli(args, cwd=tmp_path)

    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == case.code, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1, f"stderr is not one line:\n{result.stderr[-3000:]}"
    line = lines[0]
    assert line.startswith("error: ") and "; " in line, line  # "error: <problem>; <fix>"
    import re

    assert re.search(case.match, line), f"{case.match!r} not in {line!r}"
    after = {str(p): snapshot(p) for p in watched}
    assert after == before, "the command changed files it was given"
    assert temp_files(ws) == []
    assert not (tmp / "leak.csv").exists() and not (tmp / "other.db").exists()


def test_matrix_covers_every_command():
    """Every command `prefdata --help` lists has at least one bad-input case."""
    result = run_cli(["--help"], cwd=Path.cwd())
    import re

    listed = set(re.findall(r"^│ (\w+)\s", result.stdout, flags=re.M))
    covered = {c.args[0] for c in CASES}
    missing = listed - covered - {"study"}  # study = build + score + train, each covered above
    assert len(CASES) >= 25 and listed and not missing, missing


def test_train_divergence_exits_4_and_keeps_the_last_good_checkpoint(tmp_path, template_ws, tiny_model):
    """`prefdata train` with an absurd (finite) learning rate: step 1's update blows the weights up,
    step 2's loss is not finite; the CLI exits 4 with one line naming the kept checkpoint, whose
    weights are finite, and publishes no model. (Library level: tests/train/test_loop.py::
    test_nan_loss_raises_and_keeps_the_last_checkpoint.)"""
    ws = tmp_path / "ws"
    shutil.copytree(template_ws, ws)
    run = tmp_path / "run"
    result = run_cli(["train", ws, "--scenario", "2", "--model", tiny_model, "--lr", "1e30", "--max-steps", "4",
                      "--batch-size", "2", "--checkpoint-every", "1", "--eval-every", "100", "--device", "cpu",
                      "--output-dir", run], cwd=tmp_path)
    # transformers draws its own "Loading weights" progress bars on stderr; everything else is one line
    lines = [line for line in result.stderr.splitlines() if line.strip() and "it/s]" not in line]
    assert result.returncode == EXIT_DIVERGED, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr[-3000:]
    assert "training diverged at step" in lines[0] and "; " in lines[0]
    import torch

    kept = sorted((run / "checkpoints").glob("step-*.pt"))
    assert kept and str(kept[-1]) in lines[0] or "no checkpoint was written yet" in lines[0]
    for path in kept:
        state = torch.load(path, weights_only=True)
        assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (run / "model").exists()  # no half-trained, diverged model is published


def test_garbage_judge_output_is_kept_not_scored(tmp_path, template_ws):
    """A judge model that answers garbage: every verdict is `parse_error` with a null score and the
    raw output kept; selection then drops those candidates as `unscored` and makes no pair from
    them (so `prefdata build` ends with its one-line "no pairs survived selection" error, exit 2)."""
    import polars as pl

    from prefdata.judge import judge_candidates
    from prefdata.judge.llm_judge import LLMJudge, LLMJudgeConfig
    from prefdata.select import SelectConfig, select_pairs

    ws_dir = tmp_path / "ws"
    shutil.copytree(template_ws, ws_dir)
    ws = Workspace.open(ws_dir)
    garbage = ["\x00\x01 VERDICT: 9", "", "VERDICT: five", "lorem ipsum " * 50, "VERDICT: 5 but maybe 4"]
    judge = LLMJudge(lambda ps: [garbage[i % len(garbage)] for i in range(len(ps))],
                     LLMJudgeConfig(model_name="garbage", max_retries=1))
    counts = judge_candidates(ws, judge)
    verdicts = ws.read_polars("judgments").filter(pl.col("judge_name") == "llm:garbage")
    assert counts["judged"] == verdicts.height == ws.count("candidates")
    assert verdicts["status"].unique().to_list() == ["parse_error"] and verdicts["score"].null_count() == verdicts.height
    assert verdicts["raw_output"].null_count() == 0
    scored = (ws.read_polars("candidates").join(verdicts.select("candidate_id", "score", "correct", "status"),
                                                 on="candidate_id", how="left")
              .join(ws.read_polars("prompts").select("prompt_id", "prompt", "messages"), on="prompt_id")
              .with_columns(pl.lit(judge.name).alias("judge_name")))
    pairs, dropped = select_pairs(scored, 2, SelectConfig())
    assert pairs.height == 0 and dropped["unscored"] == scored.height
