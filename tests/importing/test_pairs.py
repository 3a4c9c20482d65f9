"""`--as pairs`: the three forms, their drop reasons, and an imported dataset beside built ones."""

from __future__ import annotations

import pytest

from prefdata.errors import PrefdataError
from prefdata.importing import ImportSpec, import_file
from prefdata.store import Workspace
from tests.importing.conftest import write_jsonl

HH = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: What is 2+2?\n\nAssistant:"


def _import(tmp_path, rows, dataset="d", **kw):
    path = write_jsonl(tmp_path / f"{dataset}.jsonl", rows)
    summary = import_file(tmp_path / "ws", ImportSpec(str(path), "pairs", dataset=dataset, **kw))
    return summary, Workspace.open(tmp_path / "ws").read_polars("pairs").filter(
        Workspace.open(tmp_path / "ws").read_polars("pairs")["dataset"] == dataset)


def test_standard_form_with_scores(tmp_path):
    rows = [{"prompt": "P1", "chosen": "good", "rejected": "bad", "score_chosen": 8, "score_rejected": 3},
            {"prompt": "P2", "chosen": "yes", "rejected": "no"}]
    summary, pairs = _import(tmp_path, rows)
    assert summary["layout"] == "standard" and summary["kept"] == 2
    by_prompt = {r["prompt"]: r for r in pairs.to_dicts()}
    assert (by_prompt["P1"]["chosen"], by_prompt["P1"]["rejected"], by_prompt["P1"]["margin"]) == ("good", "bad", 5.0)
    assert by_prompt["P2"]["chosen_score"] is None and by_prompt["P2"]["margin"] is None
    assert set(pairs["chosen_origin"]) == set(pairs["rejected_origin"]) == {"imported"}
    assert set(pairs["kind"]) == {"imported"} and set(pairs["scenario"]) == {0}
    assert set(pairs["strategy"]) == {"imported:standard"}


def test_conversational_form(tmp_path):
    rows = [{"prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi?"}],
             "chosen": [{"role": "assistant", "content": "Hello!"}],
             "rejected": [{"role": "assistant", "content": "Go away."}]}]
    summary, pairs = _import(tmp_path, rows)
    assert summary["layout"] == "conversational"
    row = pairs.to_dicts()[0]
    assert (row["prompt"], row["chosen"], row["rejected"]) == ("Hi?", "Hello!", "Go away.")
    assert row["messages"] == rows[0]["prompt"]


def test_implicit_prompt_form(tmp_path):
    rows = [{"chosen": HH + " 4", "rejected": HH + " 5"}]
    summary, pairs = _import(tmp_path, rows)
    row = pairs.to_dicts()[0]
    assert summary["layout"] == "implicit"
    assert (row["prompt"], row["chosen"], row["rejected"]) == (HH, "4", "5")
    assert row["messages"] == [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
                               {"role": "user", "content": "What is 2+2?"}]


def test_implicit_prompt_with_another_marker(tmp_path):
    rows = [{"chosen": "<|user|>2+2?<|bot|>4", "rejected": "<|user|>2+2?<|bot|>5"}]
    _, pairs = _import(tmp_path, rows, marker="<|bot|>")
    row = pairs.to_dicts()[0]
    assert (row["prompt"], row["chosen"], row["rejected"], row["messages"]) == ("<|user|>2+2?<|bot|>", "4", "5", None)


def test_every_drop_reason_is_counted(tmp_path):
    rows = [{"prompt": "ok", "chosen": "a", "rejected": "b"},
            {"prompt": "ok", "chosen": "a", "rejected": "b"},             # duplicate
            {"prompt": "", "chosen": "a", "rejected": "b"},               # missing_prompt
            {"prompt": "p", "chosen": "", "rejected": "b"},               # missing_chosen
            {"prompt": "p", "rejected": "b"},                             # missing_chosen (absent)
            {"prompt": "p", "chosen": "a", "rejected": None},             # missing_rejected
            {"prompt": "p", "chosen": "same", "rejected": "same"},        # chosen_equals_rejected
            {"prompt": "p", "chosen": 5, "rejected": "b"}]                # non_string_content
    summary, pairs = _import(tmp_path, rows)
    assert summary["dropped"] == {"chosen_equals_rejected": 1, "duplicate": 1, "missing_chosen": 2,
                                  "missing_prompt": 1, "missing_rejected": 1, "non_string_content": 1}
    assert pairs.height == summary["kept"] == 1


def test_unsplittable_dialogues_are_counted(tmp_path):
    rows = [{"chosen": HH + " 4", "rejected": HH + " 5"},
            {"chosen": "no marker", "rejected": "at all"},
            {"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": "\n\nHuman: B\n\nAssistant: y"}]
    summary, _ = _import(tmp_path, rows)
    assert summary["dropped"] == {"unsplittable_dialogue": 2} and summary["kept"] == 1


def test_a_built_dataset_name_is_refused(tmp_path):
    from tests.importing.test_roundtrip import built_workspace

    ws = built_workspace(tmp_path)
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "P", "chosen": "a", "rejected": "b"}])
    before = sorted(p.name for p in ws.parts("pairs"))
    with pytest.raises(PrefdataError, match="was built by prefdata"):
        import_file(ws.root, ImportSpec(str(path), "pairs", dataset="scenario1"))
    assert sorted(p.name for p in ws.parts("pairs")) == before


@pytest.mark.slow
def test_imported_pairs_score_train_report_query_info_export(tmp_path):
    """The whole downstream on imported pairs, with the shipped toy policy: real scoring and one
    real training step."""
    import json

    import pyarrow.parquet as pq

    from prefdata.config import resolve_model
    from prefdata.export import export_pairs
    from prefdata.info import workspace_info
    from prefdata.query import run_query
    from prefdata.score import score_pairs
    from prefdata.train.config import TrainConfig
    from prefdata.train.loop import train
    from prefdata.train.loss_config import LossConfig
    from prefdata.train.report_files import combined_report

    rows = [{"prompt": f"What is {a} + {b}?", "chosen": f"{a} + {b} = {a + b}. The answer is {a + b}.",
             "rejected": f"The answer is {a + b + 1}."} for a, b in ((3, 4), (6, 2), (10, 5), (8, 9))]
    _import(tmp_path, rows, dataset="mine")
    ws = Workspace.open(tmp_path / "ws")
    model = resolve_model("toy:policy")
    summary = score_pairs(ws, model, dataset="mine", device="cpu", progress=lambda _m: None)
    assert summary["rows_scored"] == 4
    pairs = ws.read_polars("pairs")
    assert pairs["ref_chosen_logp"].is_not_null().all() and pairs["rejected_tokens"].min() > 0
    cfg = TrainConfig(dataset="mine", model_path=model, loss=LossConfig("dpo"), lr=1e-4, max_steps=1, batch_size=2,
                      device="cpu", eval_every=1, checkpoint_every=50)
    train(ws, cfg, progress=lambda _m: None)
    report = combined_report(ws)
    assert "mine-dpo" in report["text"]
    result = run_query(ws, "SELECT dataset, kind, chosen_origin, count(*) AS n FROM pairs GROUP BY ALL")
    assert result.to_pylist() == [{"dataset": "mine", "kind": "imported", "chosen_origin": "imported", "n": 4}]
    info = workspace_info(ws)
    assert info["datasets"] == [{"dataset": "mine", "scenario": 0, "kind": "imported", "pairs": 4, "scored": 4}]
    out = export_pairs(ws, tmp_path / "out", conversational=False)["mine"]  # standard form: plain strings
    assert sorted(pq.read_table(out["path"]).column("chosen").to_pylist()) == sorted(r["chosen"] for r in rows)
    assert "| mine | 0 | imported |" in (tmp_path / "ws" / "README.md").read_text()
    json.dumps(info, default=str)  # info --json serialises
