"""Export: files that `datasets` loads and TRL's DPOTrainer trains on as they are.

The workspace is hand-made (four pairs in two datasets, written through the
store), so the expected rows are known exactly and no model generation runs.
The TRL tests train one real step on a toy-sized Llama with the toy tokenizer.
"""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefdata.errors import PrefdataError
from prefdata.export import PROVENANCE, export_pairs
from prefdata.store import Workspace

CHAT = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 2 + 2?"}]


def _pair(i: int, dataset: str, scenario: int, prompt: str, chosen: str, rejected: str, messages=None) -> dict:
    origins = {1: ("policy", "policy"), 2: ("reference", "policy"), 3: ("policy", "other"), 4: ("reference", "other")}
    kinds = {1: "on-policy", 2: "mixed", 3: "mixed", 4: "off-policy"}
    return dict(pair_id=f"p{i}", prompt_id=f"q{i}", dataset=dataset, scenario=scenario, kind=kinds[scenario],
                prompt=prompt, messages=messages, chosen=chosen, rejected=rejected,
                chosen_candidate_id=f"c{i}", rejected_candidate_id=f"r{i}",
                chosen_origin=origins[scenario][0], rejected_origin=origins[scenario][1],
                chosen_score=1.0, rejected_score=0.0, margin=1.0, judge_name="verifier",
                strategy="test", ref_chosen_logp=-3.5 if i == 0 else None)


PAIRS = [
    _pair(0, "scenario2", 2, "What is 3 + 4?", "We compute 3 + 4 = 7.\n#### 7", "3 + 4 = 8. The answer is 8."),
    _pair(1, "scenario2", 2, "What is 6 * 2?", "We compute 6 * 2 = 12.\n#### 12", "6 * 2 = 14. The answer is 14."),
    _pair(2, "mix-1x0.5-4x0.5", 1, "What is 5 - 1?", "5 - 1 = 4. The answer is 4.", "5 - 1 = 3. The answer is 3."),
    _pair(3, "mix-1x0.5-4x0.5", 4, "What is 2 + 2?", "We compute 2 + 2 = 4.\n#### 4", "Answer: 5", messages=CHAT),
]


def make_workspace(root, rows=PAIRS) -> Workspace:
    ws = Workspace.create(root)
    with ws.writer():
        by_dataset = {}
        for row in rows:
            by_dataset.setdefault(row["dataset"], []).append(row)
        for name, part in by_dataset.items():
            ws.write_part("pairs", name, pa.Table.from_pylist(part))
        ws.write_manifest()
    return ws


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("export") / "ws")


def test_standard_form_is_plain_strings_one_file_per_dataset(ws, tmp_path):
    result = export_pairs(ws, tmp_path / "out", conversational=False)
    assert sorted(result) == ["mix-1x0.5-4x0.5", "scenario2"]
    table = pq.read_table(tmp_path / "out" / "scenario2.parquet")
    assert table.schema == pa.schema([pa.field(c, pa.string(), nullable=False)
                                      for c in ("prompt", "chosen", "rejected")])
    assert table.to_pylist() == [{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in PAIRS[:2]]
    assert result["scenario2"] == {"path": str(tmp_path / "out" / "scenario2.parquet"), "rows": 2,
                                   "format": "trl", "form": "standard",
                                   "columns": ["prompt", "chosen", "rejected"], "reference_logps": False}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mix-1x0.5-4x0.5.parquet", "scenario2.parquet"]


def test_conversational_form_uses_messages_or_one_user_turn(ws, tmp_path):
    result = export_pairs(ws, tmp_path, dataset="mix-1x0.5-4x0.5", conversational=True)
    assert list(result) == ["mix-1x0.5-4x0.5"] and result["mix-1x0.5-4x0.5"]["form"] == "conversational"
    rows = pq.read_table(tmp_path / "mix-1x0.5-4x0.5.parquet").to_pylist()
    assert rows == [
        {"prompt": [{"role": "user", "content": "What is 5 - 1?"}],
         "chosen": [{"role": "assistant", "content": "5 - 1 = 4. The answer is 4."}],
         "rejected": [{"role": "assistant", "content": "5 - 1 = 3. The answer is 3."}]},
        {"prompt": CHAT,
         "chosen": [{"role": "assistant", "content": "We compute 2 + 2 = 4.\n#### 4"}],
         "rejected": [{"role": "assistant", "content": "Answer: 5"}]},
    ]
    assert not (tmp_path / "scenario2.parquet").exists()


def test_default_form_is_conversational_so_trl_applies_the_chat_template(ws, tmp_path):
    from prefdata.export import format_export

    result = export_pairs(ws, tmp_path)
    assert {r["form"] for r in result.values()} == {"conversational"}
    rows = pq.read_table(tmp_path / "scenario2.parquet").to_pylist()
    assert rows[0]["prompt"] == [{"role": "user", "content": "What is 3 + 4?"}]
    lines = format_export(result)
    assert lines[1] == (f"scenario2: 2 pairs -> {tmp_path / 'scenario2.parquet'} (trl, conversational, "
                        "no reference log-probs (run `prefdata score` to add them))")


def test_provenance_columns_are_optional_and_typed(ws, tmp_path):
    from prefdata.schemas import schema

    plain = export_pairs(ws, tmp_path / "a", dataset="scenario2")["scenario2"]
    kept = export_pairs(ws, tmp_path / "b", dataset="scenario2", keep_provenance=True)["scenario2"]
    assert plain["columns"] == ["prompt", "chosen", "rejected"]
    assert kept["columns"] == ["prompt", "chosen", "rejected", *PROVENANCE]
    table = pq.read_table(kept["path"])
    for name in PROVENANCE:
        assert table.schema.field(name) == schema("pairs").field(name)
    # one of the two pairs is unscored: no reference columns (TRL needs a value in every row), and
    # never a `messages` column, which would confuse TRL's detection of the conversational form
    assert not {"ref_chosen_logps", "ref_rejected_logps", "ref_chosen_logp", "messages"} & set(table.column_names)


def test_scored_pairs_carry_trls_reference_columns(tmp_path):
    rows = [dict(p, ref_chosen_logp=-1.5 - i, ref_rejected_logp=-9.0 - i, ref_model_hash="h")
            for i, p in enumerate(PAIRS[:2])]
    ws = make_workspace(tmp_path / "ws", rows)
    result = export_pairs(ws, tmp_path / "out")["scenario2"]
    assert result["reference_logps"] and result["columns"] == ["prompt", "chosen", "rejected",
                                                               "ref_chosen_logps", "ref_rejected_logps"]
    table = pq.read_table(result["path"])
    assert table.column("ref_chosen_logps").to_pylist() == [-1.5, -2.5]
    assert table.column("ref_rejected_logps").to_pylist() == [-9.0, -10.0]


def test_raw_parquet_format_is_the_pairs_rows(ws, tmp_path):
    result = export_pairs(ws, tmp_path, format="parquet")
    for name in ("scenario2", "mix-1x0.5-4x0.5"):
        table = pq.read_table(result[name]["path"])
        assert table.schema.equals(ws.read("pairs").schema)
        assert table.column("pair_id").to_pylist() == [p["pair_id"] for p in PAIRS if p["dataset"] == name]


def test_datasets_loads_the_exported_files_and_the_raw_parts(ws, tmp_path):
    import datasets

    export_pairs(ws, tmp_path / "std", conversational=False)
    export_pairs(ws, tmp_path / "chat", conversational=True)
    std = datasets.load_dataset("parquet", data_files=str(tmp_path / "std" / "scenario2.parquet"),
                                cache_dir=str(tmp_path / "cache"))["train"]
    assert std.column_names == ["prompt", "chosen", "rejected"] and std[1]["chosen"] == PAIRS[1]["chosen"]
    chat = datasets.load_dataset("parquet", data_files=str(tmp_path / "chat" / "*.parquet"),
                                 cache_dir=str(tmp_path / "cache"))["train"]
    assert chat.num_rows == 4 and CHAT in chat["prompt"]
    raw = datasets.load_dataset("parquet", data_files=str(ws.root / "pairs" / "*.parquet"),
                                cache_dir=str(tmp_path / "cache"))["train"]
    assert raw.num_rows == 4 and set(raw["pair_id"]) == {"p0", "p1", "p2", "p3"}


def test_one_line_errors(ws, tmp_path):
    empty = Workspace.create(tmp_path / "empty")
    with empty.writer():
        empty.write_manifest()
    cases = [
        (lambda: export_pairs(empty, tmp_path / "o"), "has no pairs"),
        (lambda: export_pairs(ws, tmp_path / "o", dataset="scenario9"),
         "unknown dataset 'scenario9'.*known datasets: mix-1x0.5-4x0.5, scenario2"),
        (lambda: export_pairs(ws, tmp_path / "o", format="csv"), "unknown export format"),
    ]
    afile = tmp_path / "a-file"
    afile.write_text("x")
    cases.append((lambda: export_pairs(ws, afile), "is a file"))
    for call, message in cases:
        with pytest.raises(PrefdataError, match=message) as err:
            call()
        assert "\n" not in str(err.value)
    assert afile.read_text() == "x"


# --- one real TRL step -------------------------------------------------------

@pytest.fixture(scope="module")
def toy_model_dir(tmp_path_factory):
    """The shipped toy policy when present, else a random-init model of the same shape."""
    from prefdata.toy.train import _complete, policy_path

    if _complete(policy_path()):
        return policy_path()
    from prefdata.toy.model import ToyModelConfig, build_model, save_model

    folder = tmp_path_factory.mktemp("tiny")
    save_model(build_model(ToyModelConfig(), seed=1), folder, name="tiny")
    return folder


@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
def test_trl_dpo_trainer_trains_one_step_on_the_export(ws, toy_model_dir, tmp_path, conversational):
    import datasets
    import torch
    import trl
    from transformers import AutoTokenizer

    export_pairs(ws, tmp_path / "data", conversational=conversational, keep_provenance=True)
    train = datasets.load_dataset("parquet", data_files=str(tmp_path / "data" / "*.parquet"),
                                  cache_dir=str(tmp_path / "cache"))["train"]
    tokenizer = AutoTokenizer.from_pretrained(str(toy_model_dir))
    args = trl.DPOConfig(
        output_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=4, learning_rate=1e-4,
        max_length=96, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
        bf16=False,  # TRL 1.16 turns bf16 autocast on by default, even on CPU
        gradient_checkpointing=False, dataloader_num_workers=0, seed=0, disable_tqdm=True,
    )
    before = {k: v.clone() for k, v in _load(toy_model_dir).state_dict().items()}
    trainer = trl.DPOTrainer(model=_load(toy_model_dir), args=args, train_dataset=train,
                             processing_class=tokenizer)
    # TRL tokenised what we exported: for the chat form through the toy chat template.
    first = next(row for row in trainer.train_dataset if "3 + 4" in tokenizer.decode(row["prompt_ids"]))
    expected_prompt = "<|bos|>Q: What is 3 + 4?\nA: " if conversational else "What is 3 + 4?"
    assert tokenizer.decode(first["prompt_ids"]) == expected_prompt
    assert tokenizer.decode(first["chosen_ids"]).startswith("We compute 3 + 4 = 7.")
    out = trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h]
    print(f"TRL DPO one step ({'conversational' if conversational else 'standard'}): "
          f"loss={logged[0]['loss']} train_loss={out.training_loss}")
    assert trainer.state.global_step == 1
    assert math.isfinite(out.training_loss) and logged and math.isfinite(logged[0]["loss"])
    # One untrained step at beta 0.1 starts from log(2): policy and reference are the same weights.
    assert abs(logged[0]["loss"] - math.log(2)) < 1e-3
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after), "the step changed no weight"


def _load(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), dtype="float32")


def test_implicit_prompt_form_is_whole_dialogues(ws, tmp_path):
    result = export_pairs(ws, tmp_path / "out", dataset="mix-1x0.5-4x0.5", implicit_prompt=True)["mix-1x0.5-4x0.5"]
    assert result["form"] == "implicit" and result["columns"] == ["chosen", "rejected"]
    rows = sorted(pq.read_table(result["path"]).to_pylist(), key=lambda r: r["chosen"])
    # a plain prompt becomes one Human turn; a chat prompt keeps its turns (the system turn as a Human turn)
    assert rows == sorted([
        {"chosen": "\n\nHuman: What is 5 - 1?\n\nAssistant: 5 - 1 = 4. The answer is 4.",
         "rejected": "\n\nHuman: What is 5 - 1?\n\nAssistant: 5 - 1 = 3. The answer is 3."},
        {"chosen": "\n\nHuman: Answer briefly.\n\nHuman: What is 2 + 2?\n\nAssistant: We compute 2 + 2 = 4.\n#### 4",
         "rejected": "\n\nHuman: Answer briefly.\n\nHuman: What is 2 + 2?\n\nAssistant: Answer: 5"},
    ], key=lambda r: r["chosen"])
    with pytest.raises(PrefdataError, match="two different forms"):
        export_pairs(ws, tmp_path / "out", conversational=True, implicit_prompt=True)
    with pytest.raises(PrefdataError, match="--format trl only"):
        export_pairs(ws, tmp_path / "out", format="parquet", implicit_prompt=True)


def test_trl_trains_on_the_exported_reference_logps_without_a_reference_pass(toy_model_dir, tmp_path,
                                                                                 monkeypatch):
    """Pairs scored by `prefdata score` under the toy policy, exported in the default form:
    (1) TRL's own reference pass over the same rows gives the values we exported (so TRL's
    tokenisation through the chat template matches ours); (2) with `stored_reference_trainer`
    and precompute_ref_log_probs=True TRL runs no reference forward and its loss is computed
    from the exported columns: shifting the stored chosen log-probs by +1 moves the first loss
    from log 2 to -log sigmoid(-beta) exactly."""
    import datasets
    import trl
    from transformers import AutoTokenizer

    from prefdata.export import stored_reference_trainer
    from prefdata.score import score_pairs

    ws = make_workspace(tmp_path / "ws", [dict(p, ref_chosen_logp=None) for p in PAIRS])
    score_pairs(ws, toy_model_dir, device="cpu")
    result = export_pairs(ws, tmp_path / "data")
    assert all(r["reference_logps"] and r["form"] == "conversational" for r in result.values())
    train = datasets.load_dataset("parquet", data_files=str(tmp_path / "data" / "*.parquet"),
                                  cache_dir=str(tmp_path / "cache"))["train"]
    tokenizer = AutoTokenizer.from_pretrained(str(toy_model_dir))

    def config(name):
        return trl.DPOConfig(
            output_dir=str(tmp_path / name), max_steps=1, per_device_train_batch_size=4, learning_rate=1e-4,
            max_length=256, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, bf16=False,
            gradient_checkpointing=False, dataloader_num_workers=0, seed=0, disable_tqdm=True,
            precompute_ref_log_probs=True, beta=0.1)

    stock = trl.DPOTrainer(model=_load(toy_model_dir), args=config("stock"), processing_class=tokenizer,
                           train_dataset=train.remove_columns(["ref_chosen_logps", "ref_rejected_logps"]))
    for column in ("ref_chosen_logps", "ref_rejected_logps"):
        theirs, ours = stock.train_dataset[column], train[column]
        print(f"{column}: TRL's own pass vs exported, max abs diff "
              f"{max(abs(a - b) for a, b in zip(theirs, ours)):.2e}")
        assert max(abs(a - b) for a, b in zip(theirs, ours)) < 1e-3

    Trainer = stored_reference_trainer()
    reference_passes = []
    real = trl.DPOTrainer.compute_ref_log_probs
    monkeypatch.setattr(trl.DPOTrainer, "compute_ref_log_probs",
                        lambda self, *a, **k: reference_passes.append(1) or real(self, *a, **k))
    shifted = train.map(lambda row: {"ref_chosen_logps": row["ref_chosen_logps"] + 1.0})
    for data, expected in ((train, math.log(2)), (shifted, -math.log(1 / (1 + math.exp(0.1))))):
        trainer = Trainer(model=_load(toy_model_dir), args=config("stored"), train_dataset=data,
                          processing_class=tokenizer)
        trainer.train()
        loss = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
        print(f"stored reference log-probs: first loss {loss:.5f}, expected {expected:.5f}")
        assert abs(loss - expected) < 2e-3
    assert reference_passes == []
