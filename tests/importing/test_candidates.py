"""`--as candidates`: every source format, --map, provenance, prompt ids, ratings, drop reasons."""

from __future__ import annotations

import hashlib
import json

import polars as pl
import pytest

from prefdata.errors import PrefdataError
from prefdata.importing import ImportSpec, import_file
from prefdata.sources import prompt_id
from prefdata.store import Workspace
from tests.importing.conftest import PROBLEMS, generations, ultrafeedback, write_jsonl


def _write(fmt: str, rows: list[dict], folder):
    frame = pl.DataFrame(rows)
    if fmt == "jsonl":
        return write_jsonl(folder / "gens.jsonl", rows)
    if fmt == "json":
        (folder / "gens.json").write_text(json.dumps(rows))
        return folder / "gens.json"
    if fmt == "parquet":
        frame.write_parquet(folder / "gens.parquet")
        return folder / "gens.parquet"
    if fmt == "csv":
        frame.write_csv(folder / "gens.csv")
        return folder / "gens.csv"
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(folder / "gens"))
    return folder / "gens"


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet", "csv", "hf"])
def test_every_format_gives_the_same_candidates(tmp_path, fmt):
    path = _write(fmt, generations(), tmp_path)
    summary = import_file(tmp_path / "ws", ImportSpec(str(path), "candidates", origin="policy", model_name="m7"))
    ws = Workspace.open(tmp_path / "ws")
    cands = ws.read_polars("candidates").sort("prompt_id", "sample_index")
    assert summary["added"]["candidates"] == cands.height == 12 and summary["dropped"] == {}
    assert set(cands["text"]) == {r["response"] for r in generations()}
    assert set(cands["origin"]) == {"policy"} and set(cands["model_name"]) == {"m7"}
    assert set(cands["backend"]) == {"imported"}
    # provenance: the file's content hash
    digest = hashlib.sha256()
    for f in ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())):
        if path.is_dir():
            digest.update(str(f.relative_to(path)).encode() + b"\0")
        digest.update(f.read_bytes())
    assert set(cands["model_hash"]) == {digest.hexdigest()[:16]}
    assert {json.loads(s)["sha256"] for s in cands["sampling_params"]} == {digest.hexdigest()}
    imports = [s["config"] for name, s in ws.manifest()["stages"].items() if name.startswith("import:")]
    assert [(i["sha256"], i["file"]) for i in imports] == [(digest.hexdigest(), str(path.resolve()))]
    # prompts: one row per prompt, ids as the prompt sources compute them
    prompts = ws.read_polars("prompts")
    source = path.stem if path.is_file() else path.name
    assert sorted(prompts["prompt_id"]) == sorted(prompt_id(q, source) for q, _ in PROBLEMS)
    assert dict(zip(prompts["prompt"], prompts["reference_answer"])) == {q: str(a) for q, a in PROBLEMS}
    assert cands.group_by("prompt_id").len()["len"].to_list() == [3] * 4
    assert sorted(cands.filter(pl.col("prompt_id") == prompt_id("What is 3 + 4?", source))["sample_index"]) == [0, 1, 2]


def test_ratings_become_judgments(tmp_path):
    path = write_jsonl(tmp_path / "gens.jsonl", generations())
    summary = import_file(tmp_path / "ws", ImportSpec(str(path), "candidates"))
    assert summary["judges"] == ["imported:score"]
    ws = Workspace.open(tmp_path / "ws")
    j = ws.read_polars("judgments").join(ws.read_polars("candidates"), on="candidate_id")
    assert j.height == 12 and set(j["judge_name"]) == {"imported:score"} and set(j["status"]) == {"ok"}
    assert dict(zip(j["text"], j["score"])) == {r["response"]: float(r["score"]) for r in generations()}


def test_boolean_label_sets_correct(tmp_path):
    rows = [{"prompt": "p", "response": "a", "is_correct": True}, {"prompt": "p", "response": "b", "is_correct": False}]
    import_file(tmp_path / "ws", ImportSpec(str(write_jsonl(tmp_path / "l.jsonl", rows)), "candidates"))
    j = Workspace.open(tmp_path / "ws").read_polars("judgments").sort("score")
    assert j["judge_name"].to_list() == ["imported:is_correct"] * 2
    assert j["score"].to_list() == [0.0, 1.0] and j["correct"].to_list() == [False, True]


def test_map_and_model_column(tmp_path):
    rows = [{"q": "Add 1+1", "gen": "2", "generator": "g1", "finish_reason": "length"},
            {"q": "Add 1+1", "gen": "3", "generator": "g2"}]
    path = write_jsonl(tmp_path / "x.jsonl", rows)
    spec = ImportSpec(str(path), "candidates", origin="other", model_name="fallback",
                      mapping={"prompt": "q", "response": "gen"})
    import_file(tmp_path / "ws", spec)
    c = Workspace.open(tmp_path / "ws").read_polars("candidates").sort("text")
    assert c["model_name"].to_list() == ["g1", "g2"] and c["origin"].to_list() == ["other", "other"]
    assert c["finish_reason"].to_list() == ["length", "imported"]


def test_multi_completion_rows(tmp_path):
    path = write_jsonl(tmp_path / "uf.jsonl", ultrafeedback())
    summary = import_file(tmp_path / "ws", ImportSpec(str(path), "candidates", origin="other"))
    assert summary["layout"] == "multi" and summary["kept"] == 4
    assert summary["judges"] == ["imported:overall_score", "imported:fine-grained_score"]
    ws = Workspace.open(tmp_path / "ws")
    c = ws.read_polars("candidates")
    assert dict(zip(c["text"], c["model_name"])) == {"hi": "model-a", "hello there": "model-b", "bye": "model-a",
                                                     "farewell": "model-c"}
    j = ws.read_polars("judgments").join(c.select("candidate_id", "text"), on="candidate_id")
    overall = j.filter(pl.col("judge_name") == "imported:overall_score")
    assert dict(zip(overall["text"], overall["score"])) == {"hi": 7.5, "hello there": 3.0, "bye": 5.0,
                                                            "farewell": 9.0}
    assert ws.read_polars("prompts")["prompt"].sort().to_list() == ["Say bye", "Say hi"]


def test_list_of_texts_and_chat_prompts(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}],
             "responses": ["Hello.", "Hey."]}]
    summary = import_file(tmp_path / "ws", ImportSpec(str(write_jsonl(tmp_path / "c.jsonl", rows)), "candidates"))
    ws = Workspace.open(tmp_path / "ws")
    assert summary["kept"] == 2
    prompts = ws.read_polars("prompts")
    assert prompts["prompt"].to_list() == ["Hi?"]
    assert prompts["messages"].to_list() == [[{"role": "system", "content": "Be brief."},
                                              {"role": "user", "content": "Hi?"}]]


def test_bad_rows_are_counted(tmp_path):
    rows = [{"prompt": "p1", "response": "fine"},
            {"prompt": "p1", "response": "fine"},          # duplicate
            {"prompt": "  ", "response": "x"},             # missing prompt
            {"prompt": "p2", "response": ""},              # missing response
            {"prompt": "p3"},                              # missing response (absent)
            {"prompt": "p4", "response": ["a", "list"]}]   # non-string content
    summary = import_file(tmp_path / "ws", ImportSpec(str(write_jsonl(tmp_path / "b.jsonl", rows)), "candidates"))
    assert summary["dropped"] == {"duplicate": 1, "missing_prompt": 1, "missing_response": 2,
                                  "non_string_content": 1}
    assert summary["kept"] == 1
    ws = Workspace.open(tmp_path / "ws")
    assert ws.read_polars("candidates")["text"].to_list() == ["fine"]
    from prefdata.info import format_info, workspace_info

    text = format_info(workspace_info(ws))
    assert "missing_response:2" in text and "non_string_content:1" in text
    card = (tmp_path / "ws" / "README.md").read_text()
    assert "missing_response 2" in card and "duplicate 1" in card


def test_unmappable_file_is_refused_before_the_workspace_is_touched(tmp_path):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"question": "q", "reply": "r"}])
    with pytest.raises(PrefdataError, match=r"found question \(text\), reply \(text\)"):
        import_file(tmp_path / "ws", ImportSpec(str(path), "candidates"))
    assert not (tmp_path / "ws").exists()
    with pytest.raises(PrefdataError, match="no column 'answer'"):
        import_file(tmp_path / "ws", ImportSpec(str(path), "candidates", mapping={"response": "answer"}))
