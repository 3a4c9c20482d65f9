"""End to end, on CPU and offline: `prefdata.build` over the toy world and real GSM8K.

One module-scoped workspace builds scenario 2, then 1, 3, 4 and a mix on top of
it (sharing samples, as a user's workspace would), so the whole file stays a
few minutes on two shared cores. The transformers backend and small sizes keep
it cheap; the shipped toy models are used when present (the trained policy is
right often enough for on-policy pairs), else random-init models of the same
shape, whose samples are all wrong: scenarios 1 and 3 (and a mix with 1) then
have nothing to pair, and the tests check they fail with the one-line error.

Expectations are re-derived independently of the code under test: schemas from
the JSON files, answers with the verifier's `extract_answer`, origins and kinds
from the paper's table.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from prefdata.build import build
from prefdata.config import build_config, scenario_pipeline, set_path
from prefdata.errors import PrefdataError
from prefdata.store import Workspace
from tests.sources.conftest import gsm8k_dir

ROOT = Path(__file__).resolve().parents[1]
LIMIT, N, M, MAX_TOKENS, HELDOUT = 12, 4, 2, 48, 4
ORIGINS = {1: ("policy", "policy"), 2: ("reference", "policy"), 3: ("policy", "other"), 4: ("reference", "other")}
KINDS = {1: "on-policy", 2: "mixed", 3: "mixed", 4: "off-policy"}
MIX = {1: 0.5, 4: 0.5}
NO_PAIRS = "no pairs survived selection"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """{"policy": dir, "other": dir, "trained": bool}: shipped toy models, else random-init ones."""
    from prefdata.toy.train import _complete, other_path, policy_path

    if _complete(policy_path()) and _complete(other_path()):
        return {"policy": policy_path(), "other": other_path(), "trained": True}
    from prefdata.toy.model import ToyModelConfig, build_model, save_model

    folder = tmp_path_factory.mktemp("random-models")
    for seed, role in enumerate(("policy", "other"), start=1):
        save_model(build_model(ToyModelConfig(), seed=seed), folder / role, name=role)
    return {"policy": folder / "policy", "other": folder / "other", "trained": False}


def raw_config(models: dict, scenario: int | None = None, mix: dict | None = None, **overrides) -> dict:
    raw = scenario_pipeline(scenario or 1)
    if mix:
        raw.pop("scenarios")
        raw.pop("name")
        raw["mix"] = mix
    settings = {
        "source.limit": LIMIT, "heldout": HELDOUT,
        "policy.model": str(models["policy"]), "other.model": str(models["other"]),
        "policy.backend": "transformers", "other.backend": "transformers",
        "policy.sampling.n": N, "other.sampling.n": M,
        "policy.sampling.max_tokens": MAX_TOKENS, "other.sampling.max_tokens": MAX_TOKENS,
        "quiet": True, **overrides,
    }
    for dotted, value in settings.items():
        set_path(raw, dotted, value)
    return raw


def run(ws_root: Path, raw: dict):
    """The build's summary, or the PrefdataError it raised."""
    try:
        return build(ws_root, build_config(raw), log=lambda _msg: None)
    except PrefdataError as err:
        return err


@pytest.fixture(scope="module")
def built(models, tmp_path_factory) -> dict:
    """One workspace: scenario 2 first (policy + reference), then 1 (all cached), 3, 4, the mix."""
    root = tmp_path_factory.mktemp("build") / "ws"
    results = {}
    for name, scenario, mix in (("s2", 2, None), ("s1", 1, None), ("s3", 3, None), ("s4", 4, None),
                                ("mix", None, MIX)):
        results[name] = run(root, raw_config(models, scenario, mix))
    return {"root": root, "ws": Workspace.open(root), "results": results, "trained": models["trained"]}


def pairs_of(built, dataset: str) -> list[dict]:
    return [p for p in built["ws"].read("pairs").to_pylist() if p["dataset"] == dataset]


def test_scenario_1_after_2_generates_and_judges_nothing(built):
    s2, s1 = built["results"]["s2"], built["results"]["s1"]
    assert isinstance(s2, dict), s2
    assert s2["generation"]["policy"]["prompts_generated"] == LIMIT and s2["judging"]["judged"] > 0
    if not built["trained"]:  # random-init policy: all samples wrong, nothing on-policy to pair
        assert isinstance(s1, PrefdataError) and NO_PAIRS in str(s1)
        return
    assert isinstance(s1, dict), s1
    policy = s1["generation"]["policy"]
    assert policy["model_calls"] == 0 and policy["prompts_generated"] == 0 and policy["candidates_written"] == 0
    assert policy["prompts_cached"] == LIMIT
    assert s1["judging"]["judged"] == 0
    assert set(s1["generation"]) == {"policy"}  # scenario 1 needs neither reference nor other
    assert s1["pairs"]["scenario1"] > 0


def test_every_scenario_and_the_mix_have_the_right_provenance(built):
    results = built["results"]
    expected_ok = {"s2", "s4", "s1", "s3", "mix"} if built["trained"] else {"s2", "s4"}
    for name, result in results.items():
        if name in expected_ok:
            assert isinstance(result, dict), f"{name}: {result}"
        else:
            assert isinstance(result, PrefdataError) and NO_PAIRS in str(result), f"{name}: {result}"
            assert "\n" not in str(result)
    datasets = {"s1": "scenario1", "s2": "scenario2", "s3": "scenario3", "s4": "scenario4", "mix": "mix-1x0.5-4x0.5"}
    for name in sorted(expected_ok):
        rows = pairs_of(built, datasets[name])
        assert len(rows) == results[name]["pairs"][datasets[name]] > 0
        for p in rows:
            assert p["chosen"] != p["rejected"] and p["chosen_candidate_id"] != p["rejected_candidate_id"]
            assert (p["chosen_origin"], p["rejected_origin"]) == ORIGINS[p["scenario"]], p
            assert p["kind"] == KINDS[p["scenario"]]
            assert p["margin"] == p["chosen_score"] - p["rejected_score"] > 0
            if name != "mix":
                assert p["scenario"] == int(datasets[name][-1])
        assert len({p["pair_id"] for p in rows}) == len(rows)
    if "mix" in expected_ok:
        mix = pairs_of(built, "mix-1x0.5-4x0.5")
        counts = {s: sum(p["scenario"] == s for p in mix) for s in MIX}
        assert abs(counts[1] - counts[4]) <= 1 and min(counts.values()) > 0  # 0.5 / 0.5, to one pair
        assert results["mix"]["mix"] == [{"scenario": s, "len": counts[s]} for s in sorted(MIX)]
        assert len({p["prompt_id"] for p in mix}) == len(mix)  # each prompt used once in a mix


def test_scenario_2_chosen_verify_and_rejected_do_not(built):
    from prefdata.judge.verifier import extract_answer, plain_number

    refs = {p["prompt_id"]: p["reference_answer"] for p in built["ws"].read("prompts").to_pylist()}

    def correct(text: str, reference: str) -> bool:
        answer = extract_answer(text)
        return answer is not None and plain_number(answer) == Decimal(reference.replace(",", ""))

    rows = pairs_of(built, "scenario2")
    assert rows
    for p in rows:
        assert correct(p["chosen"], refs[p["prompt_id"]]), p["chosen"]
        assert not correct(p["rejected"], refs[p["prompt_id"]]), p["rejected"]


def _type_text(arrow_type) -> str:
    """An Arrow type in the schema files' own notation (independent of prefdata.schemas)."""
    import pyarrow as pa

    if pa.types.is_list(arrow_type):
        return f"list<{_type_text(arrow_type.value_type)}>"
    if pa.types.is_struct(arrow_type):
        return "struct<" + ",".join(f"{f.name}:{_type_text(f.type)}" for f in arrow_type) + ">"
    names = {pa.string(): "string", pa.int32(): "int32", pa.int64(): "int64", pa.float32(): "float32",
             pa.float64(): "float64", pa.bool_(): "bool"}
    return names.get(arrow_type, f"unexpected:{arrow_type}")


def test_every_written_table_matches_its_schema_file(built):
    root = built["root"]
    for table in ("prompts", "candidates", "judgments", "pairs"):
        declared = json.loads((ROOT / "schemas" / f"{table}.json").read_text())["fields"]
        expected = [(f["name"], f["type"].replace(" ", ""), f["nullable"]) for f in declared]
        parts = sorted((root / table).glob("part-*.parquet"))
        assert parts, f"no parts written for {table}"
        for part in parts:
            found = [(f.name, _type_text(f.type), f.nullable) for f in pq.read_schema(part)]
            assert found == expected, f"{part.relative_to(root)}"
    assert not list(root.rglob(".*.tmp")), "a temp file was left behind"


def test_card_and_manifest_name_the_model_hashes(built):
    root = built["root"]
    card = (root / "README.md").read_text()
    manifest = json.loads((root / "manifest.json").read_text())
    candidates = built["ws"].read("candidates", ["origin", "model_hash"]).to_pylist()
    hashes = {c["origin"]: c["model_hash"] for c in candidates if c["origin"] in ("policy", "other")}
    assert set(hashes) == {"policy", "other"}
    for origin, digest in hashes.items():
        assert digest in card, f"{origin} model hash {digest} missing from README.md"
    manifest_text = json.dumps(manifest)
    assert hashes["policy"] in manifest_text and hashes["other"] in manifest_text
    assert manifest["tables"]["pairs"]["rows"] == built["ws"].count("pairs")
    for dataset in {p["dataset"] for p in built["ws"].read("pairs", ["dataset"]).to_pylist()}:
        assert dataset in card


def test_real_gsm8k_scenario_2(models, tmp_path):
    data = gsm8k_dir()  # the real files beside the checkout, else tests/data/gsm8k's stand-in
    # A toy model answers GSM8K wrong, or not at all within the budget: a response with no
    # final answer counts as wrong (score 0, the rubric's "no final result"), not as unscored.
    raw = raw_config(models, 2, **{"source.path_or_name": str(data), "source.split": "test", "source.limit": 6,
                                   "policy.sampling.n": 2, "policy.sampling.max_tokens": 32,
                                   "select.drop_truncated": False, "select.unscored_score": 0.0})
    summary = build(tmp_path / "gsm", build_config(raw), log=lambda _msg: None)
    ws = Workspace.open(tmp_path / "gsm")
    prompts = {p["prompt_id"]: p for p in ws.read("prompts").to_pylist()}
    first = json.loads((data / "test.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["question"] in {p["prompt"] for p in prompts.values()}
    assert summary["pairs"]["scenario2"] == len(ws.read("pairs")) > 0
    for p in ws.read("pairs").to_pylist():
        assert p["chosen_origin"] == "reference" and p["rejected_origin"] == "policy"
        assert p["chosen"] == prompts[p["prompt_id"]]["reference_solution"]
        # GSM8K writes big answers with commas ("#### 1,800"); the reference answer drops them
        final = p["chosen"].rsplit("####", 1)[1].strip().replace(",", "")
        assert final == prompts[p["prompt_id"]]["reference_answer"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("prefdata")
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from prefdata.cli import main; main()"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_cli_build_quiet_prints_the_summary_and_query_reads_it(built, models):
    root = str(built["root"])
    expected = built["results"]["s4"]["pairs"]["scenario4"]
    done = _cli("build", root, "--scenario", "4", "--quiet", "--other-model", str(models["other"]),
                "--backend", "transformers", "--m", str(M), "--max-tokens", str(MAX_TOKENS),
                "--limit", str(LIMIT), "--set", f"heldout={HELDOUT}")
    assert done.returncode == 0, done.stderr
    assert "build summary" in done.stdout and f"pairs out         scenario4: {expected}" in done.stdout
    assert re.search(r"candidates other\s+0 new", done.stdout)  # same work keys as the library build: cached
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert lines[0] == "build summary", done.stdout  # --quiet: no step log before the summary

    done = _cli("query", root, "SELECT dataset, count(*) AS n FROM pairs GROUP BY 1 ORDER BY 1", "--format", "json")
    assert done.returncode == 0, done.stderr
    got = {row["dataset"]: row["n"] for row in map(json.loads, done.stdout.splitlines())}
    want = {}
    for p in built["ws"].read("pairs", ["dataset"]).to_pylist():
        want[p["dataset"]] = want.get(p["dataset"], 0) + 1
    assert got == want and got["scenario4"] == expected

    done = _cli("query", root, "DELETE FROM pairs")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0


def test_export_of_the_build_loads_with_datasets(built, tmp_path):
    import datasets

    from prefdata.export import export_pairs

    result = export_pairs(built["ws"], tmp_path / "trl", dataset="scenario2", conversational=True)
    loaded = datasets.load_dataset("parquet", data_files=result["scenario2"]["path"],
                                   cache_dir=str(tmp_path / "cache"))["train"]
    assert loaded.num_rows == len(pairs_of(built, "scenario2"))
    assert loaded[0]["chosen"][0]["role"] == "assistant" and loaded[0]["prompt"][0]["role"] == "user"


def test_token_budget_drops_long_candidates_counted_with_the_chat_template(built, models, tmp_path):
    """`select.max_tokens` counts prompt + response with the policy tokenizer's chat template;
    a budget below the longest candidates drops them as over_budget, and no pair exceeds it."""
    from prefdata.filters import chat_token_counter
    from prefdata.generate import load_tokenizer

    root = tmp_path / "ws"
    shutil.copytree(built["root"], root)
    summary = run(root, raw_config(models, 4))
    assert isinstance(summary, dict), summary
    count = chat_token_counter(load_tokenizer(models["policy"]))
    pairs = [p for p in Workspace.open(root).read("pairs").to_pylist() if p["dataset"] == "scenario4"]
    lengths = sorted(count([p["prompt"]] * 2, [p["chosen"], p["rejected"]])[1] for p in pairs)
    budget = lengths[len(lengths) // 2]  # about half of the rejected sides are over it
    summary = run(root, raw_config(models, 4, **{"select.max_tokens": budget}))
    assert isinstance(summary, dict), summary
    assert summary["dropped"]["scenario4"].get("over_budget", 0) > 0, summary["dropped"]
    assert summary["generation"]["other"]["model_calls"] == 0  # selection only: no model work
    kept = [p for p in Workspace.open(root).read("pairs").to_pylist() if p["dataset"] == "scenario4"]
    assert 0 < len(kept) < len(pairs)
    for side in ("chosen", "rejected"):
        assert max(count([p["prompt"] for p in kept], [p[side] for p in kept])) <= budget


def test_mix_summary_prints_pairs_per_scenario(built):
    from prefdata.build import format_summary

    summary = built["results"]["mix"]
    assert isinstance(summary, dict), summary
    line = next(x for x in format_summary(summary).splitlines() if x.startswith("pairs out"))
    shares = {int(s): int(n) for s, n in re.findall(r"scenario (\d): (\d+)", line)}
    assert set(shares) == set(MIX) and sum(shares.values()) == summary["pairs"][next(iter(summary["pairs"]))], line


def test_cli_info_summarises_tables_scenarios_and_provenance(built, models):
    done = _cli("info", str(built["root"]))
    assert done.returncode == 0, done.stderr
    ws = built["ws"]
    for table in ("prompts", "candidates", "judgments", "pairs"):
        row = re.search(rf"^\s+{table}\s+([\d,]+) rows", done.stdout, re.M)
        assert row and int(row.group(1).replace(",", "")) == ws.count(table), (table, done.stdout)
    datasets = {p["dataset"] for p in ws.read("pairs", ["dataset"]).to_pylist()}
    for name in datasets:
        assert f"dataset={name} " in done.stdout, done.stdout
    for scenario, kind in ((1, "on-policy"), (2, "mixed"), (4, "off-policy")):
        assert f"scenario={scenario}  kind={kind}" in done.stdout, done.stdout
    assert f"model_name={models['policy']}" in done.stdout and "judge_name=verifier" in done.stdout
    assert "stages done:" in done.stdout and "build:scenario2" in done.stdout


def test_a_failed_build_leaves_a_workspace_that_info_describes(tmp_path):
    """A build ended mid-way (SIGTERM once its prompts are stored, while the model loads or
    generates): the manifest and card are re-derived from what it wrote, so `info` names the
    version and schema and counts the prompts (it printed "prefdata None, schema vNone" before)."""
    import signal
    import subprocess
    import sys
    import time

    root = tmp_path / "ws"
    proc = subprocess.Popen([sys.executable, "-c", "from prefdata.cli import main; main()", "build", str(root),
                             "--scenario", "2", "--limit", "64", "--backend", "transformers", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list((root / "prompts").glob("part-*.parquet")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    info = _cli("info", str(root))
    assert info.returncode == 0, info.stderr
    assert "None" not in info.stdout and re.search(r"\(prefdata \S+, schema v1, updated ", info.stdout)
    assert re.search(r"prompts\s+\d+ rows", info.stdout) and " 0 rows" not in info.stdout.splitlines()[3]
    assert "# Preference pairs built by prefdata" in (root / "README.md").read_text()
