"""Model directory checks, content hash, chat template, configs, reference candidates."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pytest

from prefdata.errors import PrefdataError
from prefdata.generate import (GenerationConfig, SamplingConfig, load_tokenizer, model_hash, reference_candidates,
                               render, template_hash, validate_model_dir, write_reference_candidates)
from prefdata.generate import model as model_mod
from prefdata.store import Workspace

from .conftest import make_prompts


def _one_line(err) -> bool:
    return "\n" not in str(err.value) and len(str(err.value)) < 300


def test_model_hash_is_content_based_and_cached(random_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PREFDATA_CACHE_DIR", str(tmp_path / "cache"))
    first = model_hash(random_model_dir)
    assert len(first) == 16 and int(first, 16) >= 0
    copy = shutil.copytree(random_model_dir, tmp_path / "elsewhere")
    assert model_hash(copy) == first  # the place does not matter, the content does

    reads = []
    real = model_mod.file_sha256

    def counting(path, disk_cache=None):
        reads.append(path.name)
        return real(path, disk_cache)

    monkeypatch.setattr(model_mod, "file_sha256", counting)
    model_mod._FILE_HASHES.clear()  # only the disk cache is left
    assert model_hash(copy) == first
    assert len(model_mod._FILE_HASHES) >= 3  # filled from the disk cache, not by re-reading

    config = json.loads((copy / "config.json").read_text())
    config["rms_norm_eps"] = 1e-5 if config.get("rms_norm_eps") != 1e-5 else 1e-6
    (copy / "config.json").write_text(json.dumps(config))
    assert model_hash(copy) != first  # mtime/size changed: re-hashed


def test_missing_files_give_one_line_errors(random_model_dir, tmp_path):
    with pytest.raises(PrefdataError, match="does not exist") as err:
        validate_model_dir(tmp_path / "nope")
    assert _one_line(err)
    partial = shutil.copytree(random_model_dir, tmp_path / "partial")
    (partial / "model.safetensors").unlink()
    with pytest.raises(PrefdataError, match=r"missing weights \(\*\.safetensors\)") as err:
        validate_model_dir(partial)
    assert _one_line(err)
    validate_model_dir(partial, need_weights=False)  # an endpoint-served model needs no local weights
    (partial / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(PrefdataError, match="only pickle weights") as err:
        validate_model_dir(partial)
    validate_model_dir(partial, allow_pickle=True)
    (partial / "config.json").unlink()
    with pytest.raises(PrefdataError, match="missing config.json"):
        validate_model_dir(partial, allow_pickle=True)


def test_tokenizer_without_chat_template_is_refused(random_model_dir, tmp_path):
    plain = shutil.copytree(random_model_dir, tmp_path / "plain")
    for name in ("chat_template.jinja", "chat_template.json"):
        (plain / name).unlink(missing_ok=True)
    cfg_path = plain / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(PrefdataError, match="no chat template") as err:
        load_tokenizer(plain)
    assert _one_line(err)


def test_render_uses_the_tokenizers_template(random_model_dir):
    tok = load_tokenizer(random_model_dir)
    text = render(tok, [{"role": "user", "content": "What is 1 + 2?"}])
    assert text == tok.apply_chat_template([{"role": "user", "content": "What is 1 + 2?"}],
                                           add_generation_prompt=True, tokenize=False)
    assert "What is 1 + 2?" in text
    assert len(template_hash(tok)) == 16


def test_configs_validate_and_serialise():
    cfg = GenerationConfig(model="m", backend="transformers", sampling={"n": 2, "stop": ["\n\n"]})
    assert cfg.sampling == SamplingConfig(n=2, stop=("\n\n",))
    assert json.loads(cfg.sampling.params_json()) == {"n": 2, "temperature": 1.0, "top_p": 1.0,
                                                      "max_tokens": 256, "stop": ["\n\n"]}
    json.dumps(cfg.to_dict())
    for bad in (dict(origin="reference"), dict(backend="tgi"), dict(shard_size=0), dict(backend="openai")):
        with pytest.raises(PrefdataError):
            GenerationConfig(model="m", **bad)
    for bad in (dict(n=0), dict(temperature=-1.0), dict(top_p=0.0), dict(max_tokens=0), dict(stop=("",))):
        with pytest.raises(PrefdataError):
            SamplingConfig(**bad)
    with pytest.raises(Exception):
        cfg.origin = "other"  # frozen


def test_reference_candidates(tmp_path, random_model_dir):
    tok = load_tokenizer(random_model_dir)
    prompts = make_prompts(3)
    prompts = prompts.set_column(prompts.schema.get_field_index("reference_solution"), "reference_solution",
                                 pa.array(["a b c", None, "x  y\nz"]))
    table = reference_candidates(prompts, tok)
    assert table.num_rows == 2
    rows = table.to_pylist()
    assert [r["token_count"] for r in rows] == [5, 6]  # model tokens (one per character), not words
    assert {r["origin"] for r in rows} == {"reference"} and {r["backend"] for r in rows} == {"reference"}
    assert {r["finish_reason"] for r in rows} == {"reference"}
    assert all(r["logprob"] is None and r["model_name"] == "test" for r in rows)
    assert len({r["candidate_id"] for r in rows}) == 2

    ws = Workspace.create(tmp_path / "ws")
    assert write_reference_candidates(ws, prompts, tok) == 2
    assert write_reference_candidates(ws, prompts, tok) == 0  # already stored: nothing new, no duplicates
    assert ws.count("candidates") == 2
    old_ids = set(ws.read("candidates").column("candidate_id").to_pylist())
    # Another prompt set (other reference texts): its references are added beside the old ones,
    # which pairs of other datasets may refer to; stored ones are not written again.
    assert write_reference_candidates(ws, make_prompts(4), tok) == 4
    assert write_reference_candidates(ws, make_prompts(5), tok) == 1
    ids = set(ws.read("candidates").column("candidate_id").to_pylist())
    assert old_ids < ids and len(ids) == ws.count("candidates") == 7


def test_reference_token_count_with_tokenizer(random_model_dir):
    tok = load_tokenizer(random_model_dir)
    table = reference_candidates(make_prompts(2), tokenizer=tok)
    for row in table.to_pylist():
        assert row["token_count"] == len(row["text"])  # character tokenizer: one token per character


def test_importing_the_package_stays_light():
    import subprocess
    import sys

    code = "import sys, prefdata.generate; print(sorted(m for m in ('torch','transformers','vllm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
