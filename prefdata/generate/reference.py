"""Dataset reference solutions as candidates, so selection treats them like samples.

A reference row has origin "reference", backend "reference", finish_reason
"reference", a null log-prob (no model generated it) and no rendered prompt.
`model_name` is the prompt's source dataset and `model_hash` a hash of it.
`token_count` is the text's length in tokens of `tokenizer`, as for generated
candidates: pass the policy's (the model DPO trains), so lengths compare.

>>> import pyarrow as pa
>>> from prefdata.generate.model import load_tokenizer
>>> t = reference_candidates(pa.table({"prompt_id": ["p1"], "source": ["toy"],
...                                    "reference_solution": ["1 + 2 = 3\\n#### 3"]}),
...                          load_tokenizer("prefdata/toy/weights/policy"))
>>> t.column("token_count").to_pylist(), t.column("finish_reason").to_pylist()
([16], ['reference'])
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

from prefdata.errors import PrefdataError
from prefdata.schemas import conform

TABLE = "candidates"


def _h(*parts) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


def reference_candidates(prompts: pa.Table, tokenizer) -> pa.Table:
    """One candidate per prompt with a non-null `reference_solution`."""
    if "prompt_id" not in prompts.column_names or "reference_solution" not in prompts.column_names:
        raise PrefdataError("the prompts table lacks prompt_id or reference_solution",
                            "pass a table of the prompts schema")
    prompts = prompts.filter(prompts["reference_solution"].is_valid())
    ids = prompts.column("prompt_id").to_pylist()
    texts = prompts.column("reference_solution").to_pylist()
    sources = (prompts.column("source").to_pylist() if "source" in prompts.column_names
               else ["reference"] * len(ids))
    counts = [len(t) for t in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    keys = [_h("reference", pid, src, text) for pid, src, text in zip(ids, sources, texts)]
    n = len(ids)
    data = {
        "candidate_id": [_h(key, 0) for key in keys],
        "prompt_id": ids,
        "origin": ["reference"] * n,
        "model_name": sources,
        "model_hash": [_h("dataset", src) for src in sources],
        "backend": ["reference"] * n,
        "sampling_params": [json.dumps({})] * n,
        "seed": [0] * n,
        "sample_index": [0] * n,
        "work_key": keys,
        "text": texts,
        "token_count": counts,
        "finish_reason": ["reference"] * n,
    }
    return conform(TABLE, pa.table(data, schema=pa.schema([(k, pa.string()) for k in ("candidate_id",
                   "prompt_id", "origin", "model_name", "model_hash", "backend", "sampling_params")] + [
                   ("seed", pa.int64()), ("sample_index", pa.int32()), ("work_key", pa.string()),
                   ("text", pa.string()), ("token_count", pa.int32()), ("finish_reason", pa.string())])))


def write_reference_candidates(ws, prompts: pa.Table, tokenizer) -> int:
    """Write the reference candidates the workspace lacks as one part named by their content;
    returns how many were new. References already stored (any prompt set's) are kept: pairs of
    other datasets may refer to them, and a reference's id is a hash of its text, so a changed
    reference is a new row, never a rewrite of the old one."""
    import pyarrow.compute as pc

    table = reference_candidates(prompts, tokenizer)
    with ws.writer():
        known = ws.read(TABLE, ["candidate_id"]).column("candidate_id")
        table = table.filter(pc.invert(pc.is_in(table.column("candidate_id"), value_set=known)))
        if table.num_rows:
            ws.write_part(TABLE, "reference-" + _h(*sorted(table.column("work_key").to_pylist())), table)
    return table.num_rows
