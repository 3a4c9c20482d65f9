"""Column detection, presets and chat sources."""

from __future__ import annotations

import json

from prefdata.sources import SourceSpec, load_prompts, prompt_id

from .conftest import GSM_ROWS, write_jsonl

SYS = {"role": "system", "content": "Be brief."}


def user(text):
    return {"role": "user", "content": text}


def bot(text):
    return {"role": "assistant", "content": text}


def load(path, **kw):
    return load_prompts(SourceSpec(str(path), **kw))


def test_gsm8k_detected(gsm_file):
    table, stats = load(gsm_file)
    assert stats.preset == "gsm8k"
    rows = table.to_pylist()
    assert [r["prompt"] for r in rows] == [r["question"] for r in GSM_ROWS]
    assert [r["reference_solution"] for r in rows] == [r["answer"] for r in GSM_ROWS]
    assert [r["reference_answer"] for r in rows] == ["5", "2000", "-2"]  # commas and spaces gone


def test_gsm8k_shape_without_markers_is_plain(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "Capital of France?", "answer": "Paris"}])
    table, stats = load(path)
    assert stats.preset == "plain"
    assert table.to_pylist()[0]["reference_answer"] == "Paris"
    assert table.to_pylist()[0]["reference_solution"] is None


def test_chat_prompt_is_last_user_turn(tmp_path):
    rows = [{"messages": [SYS, user("Hi"), bot("Hello"), user("What is 2+2?"), bot("4")]},
            {"messages": [user("Only turn")]}]
    table, stats = load(write_jsonl(tmp_path / "chat.jsonl", rows))
    first, second = table.to_pylist()
    assert stats.preset == "chat"
    assert first["prompt"] == "What is 2+2?"
    # Kept up to and including the last user turn; the reply after it is the reference.
    assert first["messages"] == [SYS, user("Hi"), bot("Hello"), user("What is 2+2?")]
    assert first["reference_solution"] == "4"
    assert second["messages"] == [user("Only turn")] and second["reference_solution"] is None
    # One user turn hashes like the same plain prompt; a multi-turn chat does not.
    assert second["prompt_id"] == prompt_id("Only turn", "chat")
    assert first["prompt_id"] != prompt_id("What is 2+2?", "chat")


def test_chat_same_question_other_system_prompt_is_not_a_duplicate(tmp_path):
    rows = [{"messages": [SYS, user("Q")]}, {"messages": [{"role": "system", "content": "Be long."}, user("Q")]},
            {"messages": [SYS, user("  Q ")]}]
    table, stats = load(write_jsonl(tmp_path / "chat.jsonl", rows))
    assert (stats.rows_kept, stats.duplicates_removed) == (2, 1)


def test_chat_without_user_turn_is_an_empty_prompt(tmp_path):
    from prefdata.errors import PrefdataError
    import pytest

    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [user("a")]}, {"messages": [SYS]}])
    with pytest.raises(PrefdataError, match="line 2 of .* empty prompt"):
        load(path)


def test_trl_style_prompt_column_of_messages(tmp_path):
    rows = [{"prompt": [user("Explain DPO.")], "chosen": [bot("good")], "rejected": [bot("bad")]}]
    table, _ = load(write_jsonl(tmp_path / "trl.jsonl", rows))
    assert table.to_pylist()[0]["prompt"] == "Explain DPO."
    assert table.to_pylist()[0]["messages"] == [user("Explain DPO.")]


def test_prompt_column_with_messages_column(tmp_path):
    # UltraChat-like: a text prompt plus the whole conversation.
    rows = [{"prompt": "Tell a joke", "messages": [user("Tell a joke"), bot("Knock knock")]}]
    table, _ = load(write_jsonl(tmp_path / "uc.jsonl", rows))
    row = table.to_pylist()[0]
    assert (row["prompt"], row["reference_solution"]) == ("Tell a joke", "Knock knock")
    assert row["messages"] == [user("Tell a joke")]


def test_messages_as_json_text_in_csv(tmp_path):
    path = tmp_path / "chat.csv"
    cell = json.dumps([SYS, user("Hi there")]).replace('"', '""')
    path.write_text(f'id,messages\n1,"{cell}"\n')
    table, _ = load(path, messages_column="messages")
    assert table.to_pylist()[0]["prompt"] == "Hi there"
    assert table.to_pylist()[0]["messages"] == [SYS, user("Hi there")]


def test_math_boxed_answer(tmp_path):
    rows = [{"problem": "Half of one?", "solution": r"It is $\boxed{2}$, no: $\boxed{\frac{1}{2}}$."},
            {"problem": "No box", "solution": "It is 3."}]
    table, stats = load(write_jsonl(tmp_path / "math.jsonl", rows))
    assert stats.preset == "math"
    assert table.column("reference_answer").to_pylist() == [r"\frac{1}{2}", None]


def test_math_answer_column_wins(tmp_path):
    rows = [{"problem": "p", "solution": r"$\boxed{7}$", "answer": "seven"}]
    table, _ = load(write_jsonl(tmp_path / "math.jsonl", rows))
    assert table.to_pylist()[0]["reference_answer"] == "seven"


def test_explicit_mapping(tmp_path):
    rows = [{"text": "Translate: chat", "gold": "cat", "label": "cat", "question": "ignored"}]
    table, stats = load(write_jsonl(tmp_path / "m.jsonl", rows),
                        prompt_column="text", solution_column="gold", answer_column="label")
    row = table.to_pylist()[0]
    assert (row["prompt"], row["reference_solution"], row["reference_answer"]) == \
        ("Translate: chat", "cat", "cat")
    assert stats.preset == "plain"


def test_instruction_output_detected(tmp_path):
    rows = [{"instruction": "Say hi", "output": "hi"}]
    row = load(write_jsonl(tmp_path / "alpaca.jsonl", rows))[0].to_pylist()[0]
    assert (row["prompt"], row["reference_solution"]) == ("Say hi", "hi")


def test_preset_gsm8k_with_explicit_prompt_column(tmp_path):
    rows = [{"q": "How many?", "answer": "so\n#### 1,234,567"}]
    row = load(write_jsonl(tmp_path / "g.jsonl", rows), preset="gsm8k", prompt_column="q")[0].to_pylist()[0]
    assert (row["prompt"], row["reference_answer"]) == ("How many?", "1234567")


def test_sharegpt_conversations(tmp_path):
    rows = [{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                               {"from": "gpt", "value": "Hello"}]}]
    row = load(write_jsonl(tmp_path / "sg.jsonl", rows))[0].to_pylist()[0]
    assert (row["prompt"], row["reference_solution"]) == ("Hi", "Hello")
    assert row["messages"] == [SYS, user("Hi")]


def test_text_column_named_chat_is_not_messages(tmp_path):
    rows = [{"prompt": "Hi", "chat": "free text, not JSON"}]
    row = load(write_jsonl(tmp_path / "t.jsonl", rows))[0].to_pylist()[0]
    assert (row["prompt"], row["messages"]) == ("Hi", None)
