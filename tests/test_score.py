"""score_pairs: packed, chunked reference log-probs equal a plain full-logits forward.

The plain forward (tests/reference_forward.py) builds its token ids from the tokenizer alone
(its own chat template with the generation prompt, the completion text, then the tokenizer's
EOS id), never from prefdata's encoders, so a tokenisation bug in score.py cannot hide in
both sides.
Mutations of prefdata/score.py this module was checked to catch (each applied by hand, the
module run, the mutation reverted; "fails" names the first test that went red):

1. `encode_completions` without the trailing EOS id: fails
   test_score_equals_plain_forward_and_resumes (token counts 1 short, sums differ).
2. `encode_prompts` renders the bare prompt text instead of the chat template: fails
   test_score_equals_plain_forward_and_resumes (different prompt ids, different log-probs).
3. `encode_prompts` ignores a pair's `messages` (always one user turn with `prompt`): fails
   test_score_equals_plain_forward_and_resumes on the scenario2 rows, whose system turn
   the reference renders and the mutant drops.
4. `packed_batch` without the per-sequence position restart (positions run on across a
   packed row): fails test_score_equals_plain_forward_and_resumes (the second sequence of
   a row is scored at shifted positions).
"""

from __future__ import annotations

import pyarrow as pa
import pytest

torch = pytest.importorskip("torch")

from prefdata.score import completion_ids, pack, prompt_ids, score_pairs  # noqa: E402 (chunking test only)
from prefdata.store import Workspace  # noqa: E402
from tests.reference_forward import plain_logp  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matmuls on 2 shared cores: a second intra-op thread only adds contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model_dir(root, seed=0):
    """A random-init 2-layer Llama (hidden 128, 2 heads) + char tokenizer with chat template."""
    from prefdata.toy.model import ToyModelConfig, build_model, save_model

    model = build_model(ToyModelConfig(hidden_size=128, num_layers=2, num_heads=2,
                                       intermediate_size=256), seed=seed)
    with torch.no_grad():  # sharpen the random init so log-probs are not all ~ -log(V)
        model.get_input_embeddings().weight.mul_(4)
    return save_model(model, root, name="tiny")


def pairs_table(dataset, n, offset=0, messages=False):
    prompts = [f"What is {i} + {2 * i}?" for i in range(offset, offset + n)]
    rows = {
        "pair_id": [f"p{dataset}{i}" for i in range(n)], "prompt_id": [f"q{i}" for i in range(n)],
        "dataset": [dataset] * n, "scenario": [int(dataset[-1])] * n, "kind": ["mixed"] * n,
        "prompt": prompts,
        "chosen": [f"{i}+{2 * i}={3 * i}. The answer is {3 * i}." * (1 + i % 3) for i in range(n)],
        "rejected": [f"<<{i}>> Answer: {i}" for i in range(n)],
        "chosen_candidate_id": ["c"] * n, "rejected_candidate_id": ["r"] * n,
        "chosen_origin": ["policy"] * n, "rejected_origin": ["other"] * n,
        "chosen_score": [1.0] * n, "rejected_score": [0.0] * n, "margin": [1.0] * n,
        "judge_name": ["rule"] * n, "strategy": ["test"] * n,
    }
    if messages:
        rows["messages"] = [[{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": p}] for p in prompts]
    return pa.table(rows)


def test_ids_match_the_tokenizer_when_it_adds_special_tokens_itself(tmp_path):
    """Many real tokenizers (Llama's) put BOS before every encoded text; the toy's does not. With
    a post-processor that adds BOS, the prompt still holds the template's one BOS and the
    completion none: prefdata's ids equal the tokenizer-only reference's."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    from prefdata.score import encode_completions, encode_prompts
    from tests.reference_forward import reference_ids

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir(tmp_path / "model"))
    bos = tokenizer.convert_tokens_to_ids(tokenizer.bos_token)
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{tokenizer.bos_token} $A", special_tokens=[(tokenizer.bos_token, bos)])
    assert tokenizer("x")["input_ids"][0] == bos  # the tokenizer now adds BOS by itself
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}]
    for prompt, turns in (("What is 2 + 2?", None), ("ignored", messages)):
        want_prompt, want_completion = reference_ids(tokenizer, prompt, turns, "2+2=4. The answer is 4.")
        assert encode_prompts(tokenizer, [prompt], [turns]) == [want_prompt]
        assert encode_completions(tokenizer, ["2+2=4. The answer is 4."]) == [want_completion]
        assert want_prompt.count(bos) == 1 and bos not in want_completion


@pytest.mark.parametrize("setting", [("final_logit_softcapping", 2.0), ("logits_scaling", 4.0)])
def test_softcapped_and_scaled_logits_follow_the_config(tmp_path, setting):
    """Gemma-2's soft-capping (c * tanh(z / c)) and Granite's logit division, applied when a
    model's config sets them (the toy Llama sets neither, so they are set here by hand and the
    expected values computed from the full logits of the model body and head)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.reference_forward import reference_ids

    name, value = setting
    model_dir = tiny_model_dir(tmp_path / "model")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    setattr(model.config, name, value)
    seqs = [reference_ids(tokenizer, f"What is {i} + 1?", None, f"{i}+1={i + 1}.") for i in range(3)]
    import prefdata.score as score

    got = score.score_sequences(model, tokenizer, seqs, batch_tokens=64, chunk_positions=5)
    for (p, c), value_got in zip(seqs, got):
        ids = torch.tensor([p + c])
        with torch.no_grad():
            logits = model.model(ids).last_hidden_state @ model.lm_head.weight.T
        logits = value * torch.tanh(logits / value) if name == "final_logit_softcapping" else logits / value
        logp = logits.float().log_softmax(-1)[0, :-1].gather(-1, ids[0, 1:, None]).squeeze(-1)[len(p) - 1:]
        plain = model(ids).logits.float().log_softmax(-1)[0, :-1].gather(-1, ids[0, 1:, None]).squeeze(-1)
        assert value_got == pytest.approx(logp.double().sum().item(), abs=1e-4)
        assert abs(value_got - plain[len(p) - 1:].double().sum().item()) > 1e-2  # the setting matters


def test_pack_first_fit_longest_first():
    assert pack([5, 3, 4, 2], 8) == [[0, 1], [2, 3]]
    assert pack([10, 1], 4) == [[0], [1]]  # too long: a row of its own


def test_score_equals_plain_forward_and_resumes(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = tiny_model_dir(tmp_path / "model")
    ws = Workspace.create(tmp_path / "ws")
    with ws.writer():
        ws.write_part("pairs", "scenario1", pairs_table("scenario1", 5))
        ws.write_part("pairs", "scenario2", pairs_table("scenario2", 4, offset=7, messages=True))
    # Small packs and chunks force several packed rows per forward and several vocab chunks.
    summary = score_pairs(ws, model_dir, batch_tokens=96, chunk_positions=7, device="cpu")
    assert summary["rows_scored"] == 9 and summary["parts_scored"] == 2

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    got = ws.read("pairs").to_pylist()
    worst = 0.0
    for row in got:
        for side in ("chosen", "rejected"):
            want, n = plain_logp(model, tokenizer, row["prompt"], row["messages"], row[side])
            assert row[f"{side}_tokens"] == n
            worst = max(worst, abs(row[f"ref_{side}_logp"] - want),
                        abs(row[f"ref_{side}_logp_mean"] - want / n))
        assert row["ref_model_hash"] == summary["ref_model_hash"]
    print(f"max abs diff vs plain forward: {worst:.2e}")
    assert worst < 1e-4

    mtimes = [p.stat().st_mtime_ns for p in ws.parts("pairs")]
    again = score_pairs(ws, model_dir, batch_tokens=96, device="cpu")
    assert again["parts_skipped"] == 2 and again["rows_scored"] == 0
    assert [p.stat().st_mtime_ns for p in ws.parts("pairs")] == mtimes
    assert ws.manifest()["stages"]["score"]["config"]["ref_model_hash"] == summary["ref_model_hash"]


def test_score_one_dataset_leaves_others_untouched(tmp_path):
    model_dir = tiny_model_dir(tmp_path / "model")
    ws = Workspace.create(tmp_path / "ws")
    mixed = pa.concat_tables([pairs_table("scenario1", 2), pairs_table("scenario4", 2, offset=3)])
    with ws.writer():
        ws.write_part("pairs", "mix", mixed)
    summary = score_pairs(ws, model_dir, dataset="scenario4", device="cpu")
    assert summary["rows_scored"] == 2
    rows = ws.read("pairs").to_pylist()
    assert [r["ref_model_hash"] is not None for r in rows] == [False, False, True, True]
    # A different model re-scores; the same one skips.
    assert score_pairs(ws, model_dir, dataset="scenario4", device="cpu")["parts_skipped"] == 1
    other = tiny_model_dir(tmp_path / "other", seed=1)
    assert score_pairs(ws, other, dataset="scenario4", device="cpu")["rows_scored"] == 2


def test_logits_only_for_completion_positions_in_chunks(tmp_path, monkeypatch):
    """Never the full (batch x length x vocab) logits: the LM head's forward is never called,
    and each vocabulary projection covers at most `chunk_positions` completion positions."""
    import prefdata.logprobs as logprobs
    import prefdata.score as score
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = tiny_model_dir(tmp_path / "model")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def no_full_logits(*_args, **_kwargs):
        raise AssertionError("full logits computed")

    monkeypatch.setattr(model.get_output_embeddings(), "forward", no_full_logits)
    rows, real = [], logprobs._chunk_logps
    monkeypatch.setattr(logprobs, "_chunk_logps", lambda h, *a: rows.append(h.shape[0]) or real(h, *a))
    seqs = [(prompt_ids(tokenizer, f"What is {i} + 1?"), completion_ids(tokenizer, "x" * (5 + 3 * i)))
            for i in range(6)]
    sums = score.score_sequences(model, tokenizer, seqs, batch_tokens=64, chunk_positions=8)
    assert len(sums) == 6 and all(s < 0 for s in sums)
    assert max(rows) <= 8 and sum(rows) == sum(len(c) for _, c in seqs)  # completion positions only


def test_pairs_past_the_context_are_counted_not_scored(tmp_path):
    """The tiny model attends over 512 positions: a 600-character prompt, or a 500-character
    response after a short prompt, does not fit; those pairs keep null log-probs and are counted,
    and the trainer's pair loader leaves them out instead of refusing the dataset."""
    from prefdata.train.loop import _load_pairs

    model_dir = tiny_model_dir(tmp_path / "model")
    table = pairs_table("scenario1", 4)
    prompts, chosen = table["prompt"].to_pylist(), table["chosen"].to_pylist()
    prompts[1] = "What is " + "1 + " * 150 + "1?"
    chosen[2] = "1" * 500
    table = table.set_column(table.schema.get_field_index("prompt"), "prompt", pa.array(prompts))
    table = table.set_column(table.schema.get_field_index("chosen"), "chosen", pa.array(chosen))
    ws = Workspace.create(tmp_path / "ws")
    with ws.writer():
        ws.write_part("pairs", "scenario1", table)
    summary = score_pairs(ws, model_dir, device="cpu")
    assert summary["dropped"] == {"prompt_too_long": 1, "too_long": 1}
    assert summary["rows_scored"] == 2
    rows = ws.read("pairs").to_pylist()
    assert [r["ref_chosen_logp"] is None for r in rows] == [False, True, True, False]
    assert all(r["ref_model_hash"] == summary["ref_model_hash"] for r in rows)
    assert _load_pairs(ws, "scenario1")["pair_id"] == [rows[0]["pair_id"], rows[3]["pair_id"]]
    # resumable as before: the part counts as scored by this model
    assert score_pairs(ws, model_dir, device="cpu")["parts_skipped"] == 1
