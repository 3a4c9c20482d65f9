"""The training report: Table 1 before/after, trajectories, gradient probe, dispersion, accuracy,
written as text, JSON and PNG; and the side-by-side report of all runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from prefdata.train.loop import train  # noqa: E402
from prefdata.train.loss_config import LossConfig  # noqa: E402
from prefdata.train.report import build_evalset, default_verify  # noqa: E402
from prefdata.train.report_files import combined_report  # noqa: E402
from tests.reference_forward import plain_logp  # noqa: E402

# The tiny world is defined once, in test_loop.py; loaded by path so any pytest import mode works.
_spec = importlib.util.spec_from_file_location("_tiny_world", Path(__file__).with_name("test_loop.py"))
_world = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_world)
one_thread = _world.one_thread


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One workspace, trained twice (DPO and IPO) with default run directories."""
    ws, model_dir = _world.tiny_world(tmp_path_factory.mktemp("world"))
    answers = []

    def verify(text, reference_answer):
        answers.append((text, reference_answer))
        return default_verify(text, reference_answer)

    dpo = train(ws, _world.tiny_config(model_dir, max_steps=3, eval_every=2, checkpoint_every=0), verify=verify)
    ipo = train(ws, _world.tiny_config(model_dir, max_steps=2, loss=LossConfig("ipo", beta=0.5)))
    return ws, model_dir, dpo, ipo, answers


def test_report_json_has_the_fields(runs):
    ws, _, dpo, _, answers = runs
    run_dir = Path(ws.root) / "runs" / "scenario2-dpo"
    saved = json.loads((run_dir / "report.json").read_text())
    assert saved == json.loads(json.dumps(dpo))
    for side in ("chosen", "rejected", "margin"):
        assert set(saved["table1"][side]) == {"before", "after", "delta"}
    # "before" is the stored reference log-probs: exactly what score.py wrote.
    pairs = ws.read("pairs").to_pydict()
    n = len(pairs["pair_id"])
    assert saved["table1"]["chosen"]["before"] == pytest.approx(sum(pairs["ref_chosen_logp_mean"]) / n, abs=1e-12)
    assert saved["trajectory"][0]["step"] == 0  # its values: test_table1_before_and_after_are_right
    assert [t["step"] for t in saved["trajectory"]] == [0, 2, 3]
    assert [g["step"] for g in saved["gradients"]] == [0, 2, 3]
    assert all(g["chosen"] > 0 and g["rejected"] > 0 for g in saved["gradients"])
    assert saved["gradients"][0]["ratio"] == saved["gradients"][0]["rejected"] / saved["gradients"][0]["chosen"]
    disp = saved["dispersion"]
    assert disp["responses"] == 6 and disp["before"] is not None and disp["after"] is not None
    assert set(disp["by_origin"]) == {"policy", "heldout_reference"}
    assert saved["accuracy"]["prompts"] == 2 and 0.0 <= saved["accuracy"]["before"] <= 1.0
    assert len(answers) == 4  # 2 held-out prompts, before and after, through the given verifier
    assert [r["step"] for r in saved["train"]] == [1, 2, 3]
    assert saved["loss"] == {"name": "dpo", "beta": 0.1, "average_log_probs": False}
    text = (run_dir / "report.txt").read_text()
    assert "chosen logp/token" in text and "held-out accuracy" in text and "unpaired policy" in text
    assert (run_dir / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(text)


def test_table1_before_and_after_are_right(runs):
    """Before training: Table 1 is the stored reference log-probs, and the step-0 measurement of
    the base model on the eval subset equals the stored values of those pairs. After: Table 1
    equals a plain full-logits forward of the saved model, with ids from the tokenizer alone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefdata.score import load_model
    from prefdata.train.report import tokenize_pairs

    ws, model_dir, dpo, _, _ = runs
    pairs = ws.read("pairs").to_pydict()
    n = len(pairs["pair_id"])
    assert dpo["pairs"] == n and dpo["pairs_dropped_too_long"] == 0
    stored = {side: [v for v in pairs[f"ref_{side}_logp_mean"]] for side in ("chosen", "rejected")}
    for side in ("chosen", "rejected"):
        assert dpo["table1"][side]["before"] == pytest.approx(sum(stored[side]) / n, abs=1e-12)
    assert dpo["table1"]["margin"]["before"] == pytest.approx(
        (sum(stored["chosen"]) - sum(stored["rejected"])) / n, abs=1e-12)

    # step 0: the same seeded eval subset the run measured, from its config
    _, tokenizer = load_model(model_dir, "cpu")
    cfg = _world.tiny_config(model_dir, max_steps=3, eval_every=2, checkpoint_every=0)
    evalset = build_evalset(ws, cfg, tokenizer, pairs, list(range(n)), tokenize_pairs(tokenizer, pairs))
    step0 = dpo["trajectory"][0]
    assert step0["step"] == 0 and len(evalset.eval_idx) == cfg.eval_pairs
    for side in ("chosen", "rejected"):
        want = sum(stored[side][i] for i in evalset.eval_idx) / len(evalset.eval_idx)
        assert step0[side] == pytest.approx(want, abs=1e-5), side
        assert dpo["eval_subset"][side]["before"] == step0[side]

    trained = Path(ws.root) / "runs" / "scenario2-dpo" / "model"
    model = AutoModelForCausalLM.from_pretrained(trained, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(trained)
    for side in ("chosen", "rejected"):
        per_token = []
        for prompt, messages, text in zip(pairs["prompt"], pairs["messages"], pairs[side]):
            total, tokens = plain_logp(model, tok, prompt, messages, text)
            per_token.append(total / tokens)
        after = sum(per_token) / n
        print(f"{side}: after {dpo['table1'][side]['after']:.6f}, independent forward {after:.6f}")
        assert dpo["table1"][side]["after"] == pytest.approx(after, abs=1e-5), side
    assert dpo["table1"]["chosen"]["after"] != pytest.approx(dpo["table1"]["chosen"]["before"], abs=1e-4)


def test_combined_report_lays_runs_side_by_side(runs):
    ws = runs[0]
    combined = combined_report(ws)
    assert [r["run"] for r in combined["runs"]] == ["scenario2-dpo", "scenario2-ipo"]
    assert "scenario2-ipo" in combined["text"].splitlines()[0]
    saved = json.loads((Path(ws.root) / "runs" / "combined.json").read_text())
    assert saved["runs"][1]["table1"]["rejected"]["after"] == runs[3]["table1"]["rejected"]["after"]
    runs_dir = Path(ws.root) / "runs"
    assert combined["files"] == [runs_dir / "combined.txt", runs_dir / "combined.json", runs_dir / "combined.png"]
    assert (runs_dir / "combined.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(p.is_file() for p in combined["files"])
    print(combined["text"])


def _axes(fig):
    return [ax for sub in [fig, *fig.subfigs] for ax in sub.axes]


def test_figures_label_every_axis_and_name_the_run(runs, tmp_path):
    """Every axis has both labels; the title names kind, loss, beta and learning rate; the
    unpaired curve has an axis of its own; held-out accuracy is drawn before and after."""
    from prefdata.train import plots

    _, _, dpo, ipo, _ = runs
    fig = plots.plot_run(dpo, tmp_path / "run.png")
    assert fig._suptitle.get_text() == "scenario2-dpo: mixed data, loss dpo, beta 0.1, lr 0.001"
    assert all(ax.get_ylabel() for ax in _axes(fig))
    # the reward-accuracy twin shares the loss panel's step axis, the only one without its own x label
    assert [ax.get_ylabel() for ax in _axes(fig) if not ax.get_xlabel()] == [
        "reward accuracy (chosen reward > rejected)"]
    lines = {line.get_label(): ax for ax in _axes(fig) for line in ax.get_lines()}
    assert lines["unpaired"] is not lines["chosen (starts at %.2f)" % dpo["trajectory"][0]["chosen"]]
    accuracy = next(ax for ax in _axes(fig) if ax.get_title().startswith("held-out accuracy"))
    assert [round(p.get_height(), 6) for p in accuracy.patches] == [round(dpo["accuracy"]["before"], 6),
                                                                     round(dpo["accuracy"]["after"], 6)]
    both = plots.plot_runs([dpo, ipo], tmp_path / "all.png")
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in _axes(both))
    titles = [ax.get_title() for ax in _axes(both)]
    assert "scenario2-ipo:\nmixed data, loss ipo, beta 0.5, lr 0.001" in titles


def test_heldout_responses_exclude_paired_texts(runs):
    ws, model_dir, *_ = runs
    from prefdata.score import load_model
    from prefdata.train.report import tokenize_pairs

    _, tokenizer = load_model(model_dir, "cpu")
    pairs = ws.read("pairs").to_pydict()
    data = tokenize_pairs(tokenizer, pairs)
    cfg = _world.tiny_config(model_dir, heldout_responses=100, heldout_prompts=100)
    evalset = build_evalset(ws, cfg, tokenizer, pairs, list(range(len(pairs["pair_id"]))), data)
    paired = {tuple(c) for c in data["chosen"] + data["rejected"]}
    assert not paired & {tuple(c) for _, c in evalset.heldout}
    # 12 unused correct policy answers + the 4 test prompts' reference solutions; the paired
    # reference solutions and wrong answers are excluded.
    assert sorted(set(evalset.heldout_origin)) == ["heldout_reference", "policy"]
    assert len(evalset.heldout) == 16 and len(evalset.prompts) == 4


def test_default_verifier_reads_the_final_answer():
    assert default_verify("3+4=7. The answer is 7.", "7")
    assert not default_verify("3+4=8. The answer is 8.", "7")
    assert not default_verify("no answer", "7")


# -- the loss's gradient w.r.t. the sequence probabilities (the study's Figure 10) ----------------
def _sigmoid(x: float) -> float:
    import math

    return 1.0 / (1.0 + math.exp(-x))


def test_probability_gradients_match_the_hand_derived_dpo_formula():
    import math

    from prefdata.train.report import probability_gradients

    # one pair: log pi(y_w) = -2, log pi(y_l) = -1500 (an off-policy sentence), reference -3 / -1499
    pc, pr, rc, rr = (torch.tensor([v], dtype=torch.float64) for v in (-2.0, -1500.0, -3.0, -1499.0))
    g = probability_gradients(LossConfig("dpo", beta=0.1), pc, pr, rc, rr)
    z = 0.1 * ((-2.0 + 3.0) - (-1500.0 + 1499.0))  # beta * (r_w - r_l) = 0.2
    assert g["dlogp_chosen"] == pytest.approx(0.1 * _sigmoid(-z)) == pytest.approx(g["dlogp_rejected"])
    # |dl/dpi(y)| = beta * sigma(-z) / pi(y): e^1500 overflows a float, its log10 does not
    assert g["log10_dprob_chosen"] == pytest.approx(math.log10(0.1 * _sigmoid(-z)) + 2.0 / math.log(10))
    assert g["log10_dprob_rejected"] == pytest.approx(math.log10(0.1 * _sigmoid(-z)) + 1500.0 / math.log(10))
    assert g["log10_dprob_ratio"] == pytest.approx(1498.0 / math.log(10))  # pi(y_w) / pi(y_l)


def test_probability_gradients_of_the_remedies():
    from prefdata.train.report import probability_gradients

    pc, pr = torch.tensor([-4.0, -6.0], dtype=torch.float64), torch.tensor([-5.0, -9.0], dtype=torch.float64)
    rc, rr = torch.tensor([-4.5, -6.0], dtype=torch.float64), torch.tensor([-5.0, -8.0], dtype=torch.float64)
    n_c, n_r = torch.tensor([2, 6]), torch.tensor([3, 3])
    # Flex-DPO: l = -log sigma(b_c r_w - b_r r_l), so |dl/dlog pi_w| = b_c s, |dl/dlog pi_l| = b_r s
    flex = probability_gradients(LossConfig("flex_dpo", beta_chosen=0.2, beta_rejected=0.05), pc, pr, rc, rr)
    s = [_sigmoid(-(0.2 * 0.5 - 0.05 * 0.0)), _sigmoid(-(0.2 * 0.0 - 0.05 * -1.0))]
    assert flex["dlogp_chosen"] == pytest.approx(0.2 * sum(s) / 2)
    assert flex["dlogp_rejected"] == pytest.approx(0.05 * sum(s) / 2)
    # DPO + SFT: the chosen side also gets the NLL term's alpha * B / sum|y_w| (TRL's batch-token mean)
    dpo = probability_gradients(LossConfig("dpo"), pc, pr, rc, rr, n_c, n_r)
    sft = probability_gradients(LossConfig("dpo_sft", sft_weight=0.5), pc, pr, rc, rr, n_c, n_r)
    assert sft["dlogp_rejected"] == pytest.approx(dpo["dlogp_rejected"])
    dpo_each = [0.1 * _sigmoid(-0.1 * 0.5), 0.1 * _sigmoid(-0.1 * 1.0)]
    assert sft["dlogp_chosen"] == pytest.approx(sum(abs(-d - 0.5 * 2 / 8) for d in dpo_each) / 2)


def test_report_records_probability_gradients_next_to_parameter_norms(runs):
    ws, _, dpo, _, _ = runs
    for g in dpo["gradients"]:
        assert g["chosen"] > 0 and g["rejected"] > 0  # parameter-gradient norms, as before
        assert g["dlogp_chosen"] == pytest.approx(g["dlogp_rejected"])  # DPO: the same beta * sigma(-z)
        assert g["log10_dprob_chosen"] is not None and g["log10_dprob_rejected"] is not None
        assert g["log10_dprob_ratio"] == pytest.approx(g["log10_dprob_rejected"] - g["log10_dprob_chosen"])
    text = (Path(ws.root) / "runs" / "scenario2-dpo" / "report.txt").read_text()
    assert "log10 |dl/dpi| rejected" in text and "|dl/dlog pi| chosen" in text


def test_base_accuracy_is_decoded_once_for_runs_sharing_a_cache(tmp_path):
    ws, model_dir = _world.tiny_world(tmp_path / "world")
    graded = []

    def verify(text, reference_answer):
        graded.append(reference_answer)
        return default_verify(text, reference_answer)

    cache: dict = {}
    first = train(ws, _world.tiny_config(model_dir, max_steps=1, checkpoint_every=0, output_dir=str(tmp_path / "a")),
                  verify=verify, base_accuracy=cache)
    assert len(graded) == 4 and len(cache) == 1  # 2 held-out prompts, before and after
    second = train(ws, _world.tiny_config(model_dir, max_steps=1, checkpoint_every=0, loss=LossConfig("ipo", beta=0.5),
                                          output_dir=str(tmp_path / "b")), verify=verify, base_accuracy=cache)
    assert len(graded) == 6  # only the trained model was decoded again
    assert second["accuracy"]["before"] == first["accuracy"]["before"] and len(cache) == 1
    uncached = train(ws, _world.tiny_config(model_dir, max_steps=1, checkpoint_every=0,
                                            output_dir=str(tmp_path / "c")), verify=verify)
    assert len(graded) == 10 and uncached["accuracy"]["before"] == first["accuracy"]["before"]
