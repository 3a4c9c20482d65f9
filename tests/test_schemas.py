import json
from pathlib import Path

import pyarrow as pa
import pytest

from prefdata.schemas import TABLES, conform, parse_type, schema, schema_dir

REPO_SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def test_one_schema_file_per_table_and_package_loads_them():
    assert sorted(p.stem for p in REPO_SCHEMAS.glob("*.json")) == sorted(TABLES)
    assert schema_dir().resolve() == REPO_SCHEMAS.resolve()
    for table in TABLES:
        spec = json.loads((REPO_SCHEMAS / f"{table}.json").read_text())
        loaded = schema(table)
        assert [f["name"] for f in spec["fields"]] == loaded.names
        assert [f["nullable"] for f in spec["fields"]] == [f.nullable for f in loaded]


def test_parse_type_nested():
    t = parse_type("list<struct<role:string,content:string>>")
    assert t == pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    with pytest.raises(ValueError):
        parse_type("decimal")


def test_conform_orders_casts_and_fills_nullable():
    data = pa.table({"reference_answer": ["4"], "prompt": ["2+2?"], "prompt_id": ["a"], "source": ["s"],
                     "split": ["train"], "source_index": pa.array([0], pa.int32())})
    out = conform("prompts", data)
    assert out.schema.equals(schema("prompts"))
    assert out.column("messages").null_count == 1
    assert out.column("source_index").type == pa.int64()


def test_conform_refuses_missing_unknown_and_null_required():
    base = {"prompt_id": ["a"], "source": ["s"], "split": ["t"], "source_index": [0], "prompt": ["p"]}
    with pytest.raises(ValueError, match="required column 'prompt'"):
        conform("prompts", pa.table({k: v for k, v in base.items() if k != "prompt"}))
    with pytest.raises(ValueError, match="not in schema"):
        conform("prompts", pa.table({**base, "surprise": [1]}))
    with pytest.raises(ValueError, match="nulls"):
        conform("prompts", pa.table({**base, "prompt": pa.array([None], pa.string())}))
