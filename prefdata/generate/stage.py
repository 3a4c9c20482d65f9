"""The generate stage: prompts in, candidates out, keyed by content.

Keys (all sha256, 16 hex):
    prompt seed  = H(run seed, prompt_id) as a 31-bit int; sample i uses seed + i
    work_key     = H(model_hash, origin, prompt_id, rendered prompt, sampling params, prompt seed)
    candidate_id = H(work_key, sample_index)

A work key is the unit of caching: a prompt whose work key is already in the
candidates table is not generated again, so changing one parameter redoes
exactly the prompts it touches. Rows of other work keys (an older temperature,
another model) stay beside the new ones: another dataset's pairs may refer to
them. Only `prefdata gc` removes rows, and only those no dataset refers to. The backend is provenance, not part of the
key: vLLM and transformers draw from the same distribution.

A prompt that leaves no room in the model's context (config.json's position
limit, or `max_model_len`) is not sent to any backend: it is counted as
`prompt_too_long` (`GenerationStats.too_long` holds its ids) and gets no
candidates. Every other sample stops where the context ends (finish_reason
"length"), on every backend.

Work is done in shards of `shard_size` prompts; each shard is written as one
atomic part named by its work keys, so a killed run loses at most the shard in
flight, and since a part holds all n samples of its prompts, a resumed run
finds every prompt either complete or absent, never half done.

>>> stats = generate_candidates(ws, prompts, GenerationConfig(model="prefdata/toy/weights/policy"))  # doctest: +SKIP
>>> stats.prompts_generated, stats.model_calls                                                       # doctest: +SKIP
(200, 4)
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prefdata.errors import PrefdataError
from prefdata.generate.base import Backend, Request, run_backend
from prefdata.generate.registry import make_backend, resolve_backend_name
from prefdata.generate.config import GenerationConfig
from prefdata.generate.model import (context_length, load_tokenizer, model_hash, render, template_hash,
                                     validate_model_dir)
from prefdata.schemas import conform
from prefdata.store import Workspace

TABLE = "candidates"


def _h(*parts) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


def prompt_seed(run_seed: int, prompt_id: str) -> int:
    """The seed of one prompt: independent of the prompt's position or batch."""
    return int(_h("seed", run_seed, prompt_id), 16) & 0x7FFFFFFF


def work_key(model_hash: str, origin: str, prompt_id: str, rendered_prompt: str, params_json: str,
             seed: int) -> str:
    return _h("work", model_hash, origin, prompt_id, rendered_prompt, params_json, seed)


def candidate_id(work_key: str, sample_index: int) -> str:
    return _h(work_key, sample_index)


@dataclass(frozen=True)
class GenerationStats:
    """What a run did. `model_calls == 0` means everything came from the cache."""

    prompts: int
    prompts_cached: int
    prompts_generated: int
    candidates_written: int
    parts_written: int
    model_calls: int
    tokens_generated: int
    seconds: float
    model_seconds: float  # inside backend.generate; seconds - model_seconds is prefdata's own cost
    backend: str
    model_hash: str
    work_keys: frozenset
    too_long: frozenset = frozenset()  # prompt ids dropped as prompt_too_long (no room to generate)


def _messages(prompts: pa.Table) -> list[list[dict]]:
    texts = prompts.column("prompt").to_pylist()
    chats = prompts.column("messages").to_pylist() if "messages" in prompts.column_names else [None] * len(texts)
    return [list(chat) if chat else [{"role": "user", "content": text}] for text, chat in zip(texts, chats)]


def _done_keys(ws: Workspace, origin: str) -> set[str]:
    """Work keys of `origin` already in the table (reads two columns, not the texts)."""
    done: set[str] = set()
    for path in ws.parts(TABLE):
        part = pq.read_table(path, columns=["origin", "work_key"])
        done.update(part.filter(pc.equal(part["origin"], origin))["work_key"].to_pylist())
    return done


def generate_candidates(ws: Workspace, prompts: pa.Table, cfg: GenerationConfig,
                        backend: Backend | None = None) -> GenerationStats:
    """Generate `cfg.sampling.n` candidates per prompt into `ws`'s candidates table.

    `prompts` needs `prompt_id` and `prompt` (and may have `messages`). Pass a
    `backend` to reuse a loaded model across runs; otherwise one is made from
    `cfg` only if some prompt actually needs generating, and closed afterwards.
    """
    start = time.perf_counter()
    for column in ("prompt_id", "prompt"):
        if column not in prompts.column_names:
            raise PrefdataError(f"the prompts table has no {column!r} column", "pass a table of the prompts schema")
    if prompts.num_rows == 0:
        raise PrefdataError("no prompts to generate for", "check the prompts source and its filters")
    remote = resolve_backend_name(cfg.backend) == "openai"
    validate_model_dir(cfg.model, need_weights=not remote, allow_pickle=cfg.allow_pickle,
                       trust_remote_code=cfg.trust_remote_code)
    mhash = model_hash(cfg.model, allow_pickle=cfg.allow_pickle)
    if backend is not None and backend.model_hash != mhash:
        raise PrefdataError(f"the backend was loaded from another model ({backend.model_path}) than {cfg.model}",
                            "pass a backend made from the configured model, or none")
    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    thash = template_hash(tokenizer)
    params = cfg.sampling.params_json()

    prompt_ids = prompts.column("prompt_id").to_pylist()
    rendered = [render(tokenizer, chat) for chat in _messages(prompts)]
    seeds = [prompt_seed(cfg.sampling.seed, pid) for pid in prompt_ids]
    keys = [work_key(mhash, cfg.origin, pid, text, params, seed)
            for pid, text, seed in zip(prompt_ids, rendered, seeds)]
    context = context_length(cfg.model, cfg.max_model_len)
    lengths = [len(t) for t in tokenizer(rendered, add_special_tokens=False)["input_ids"]] if rendered else []
    # a prompt must leave room for at least one new token
    too_long = {i for i, n in enumerate(lengths) if context is not None and n >= context}
    wanted = {key for i, key in enumerate(keys) if i not in too_long}

    with ws.writer():
        done = _done_keys(ws, cfg.origin)
        todo, seen = [], set(done)
        for i, key in enumerate(keys):  # input order; a repeated prompt is generated once
            if key not in seen and i not in too_long:
                seen.add(key)
                todo.append(i)
        owned = backend is None and bool(todo)
        if owned:
            backend = make_backend(cfg, mhash, tokenizer)
        calls_before = backend.calls if backend is not None else 0
        written = parts = tokens = 0
        model_seconds = 0.0
        try:
            bar = _progress(len(todo), cfg)
            for first in range(0, len(todo), cfg.shard_size):
                shard = todo[first:first + cfg.shard_size]
                ids = tokenizer([rendered[i] for i in shard], add_special_tokens=False)["input_ids"]
                requests = [Request(rendered[i], tuple(t), seeds[i], None if context is None else context - len(t))
                            for i, t in zip(shard, ids)]
                model_start = time.perf_counter()
                outputs = run_backend(backend, requests, cfg.sampling, cfg.display_name)
                model_seconds += time.perf_counter() - model_start
                table = _shard_table(shard, outputs, prompt_ids, rendered, seeds, keys, cfg, mhash, thash,
                                     backend.name, tokenizer)
                ws.write_part(TABLE, f"{cfg.origin}-{_h(*sorted(keys[i] for i in shard))}", table)
                written += table.num_rows
                parts += 1
                tokens += sum(c.num_tokens for outs in outputs for c in outs)
                bar.update(len(shard))
                bar.set_postfix_str(f"{tokens / max(bar.format_dict['elapsed'], 1e-9):.0f} tok/s")
            bar.close()
            calls = (backend.calls - calls_before) if backend is not None else 0
            backend_name = backend.name if backend is not None else resolve_backend_name(cfg.backend)
        finally:
            if owned:
                backend.close()
        ws.write_manifest(f"generate-{cfg.origin}", {**cfg.to_dict(), "model_hash": mhash,
                                                     "template_hash": thash, "backend_used": backend_name})
    return GenerationStats(
        prompts=len(wanted), prompts_cached=len(wanted & done), prompts_generated=len(todo),
        candidates_written=written, parts_written=parts, model_calls=calls,
        tokens_generated=tokens, seconds=time.perf_counter() - start, model_seconds=model_seconds,
        backend=backend_name, model_hash=mhash, work_keys=frozenset(wanted),
        too_long=frozenset(prompt_ids[i] for i in too_long))


def _progress(total: int, cfg: GenerationConfig):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="prompt", desc=f"generate {cfg.origin}", disable=cfg.quiet or total == 0,
                dynamic_ncols=True)


def _shard_table(shard, outputs, prompt_ids, rendered, seeds, keys, cfg, mhash, thash, backend_name,
                 tokenizer) -> pa.Table:
    rows = [(i, s, c) for i, outs in zip(shard, outputs) for s, c in enumerate(outs)]
    texts = [c.text for _, _, c in rows]
    # token_count is the length of the stored text under the model's tokenizer:
    # what training will see, and the same whichever backend generated it.
    counts = [len(t) for t in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    n = len(rows)
    data = {
        "candidate_id": [candidate_id(keys[i], s) for i, s, _ in rows],
        "prompt_id": [prompt_ids[i] for i, _, _ in rows],
        "origin": [cfg.origin] * n,
        "model_name": [cfg.display_name] * n,
        "model_hash": [mhash] * n,
        "backend": [backend_name] * n,
        "sampling_params": [cfg.sampling.params_json()] * n,
        "seed": [seeds[i] for i, _, _ in rows],
        "sample_index": [s for _, s, _ in rows],
        "work_key": [keys[i] for i, _, _ in rows],
        "rendered_prompt": [rendered[i] for i, _, _ in rows],
        "template_hash": [thash] * n,
        "text": texts,
        "token_count": counts,
        "finish_reason": [c.finish_reason for _, _, c in rows],
        "logprob": [c.logprob for _, _, c in rows],
    }
    return conform(TABLE, pa.table(data))
