import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefdata.errors import PrefdataError
from prefdata.query import run_query, write_result
from prefdata.store import Workspace
from tests.test_store import prompts


@pytest.fixture()
def ws(tmp_path):
    ws = Workspace.create(tmp_path / "ws")
    with ws.writer():
        ws.write_part("prompts", "a", prompts(5))
        ws.write_manifest()
    return ws


def test_views_named_after_tables(ws):
    assert run_query(ws, "SELECT count(*) AS n FROM prompts").to_pylist() == [{"n": 5}]
    assert run_query(ws, "SELECT count(*) AS n FROM pairs").to_pylist() == [{"n": 0}]
    typed = run_query(ws, "SELECT ref_chosen_logp FROM pairs").schema.field(0).type
    assert typed == pa.float64()


@pytest.mark.parametrize("sql", [
    "CREATE TABLE t AS SELECT 1",
    "DROP VIEW prompts",
    "COPY (SELECT * FROM prompts) TO '{out}'",
    "INSERT INTO prompts SELECT * FROM prompts",
    "ATTACH '{out}' AS other",
    "SELECT 1; DELETE FROM prompts",
])
def test_writes_refused(ws, tmp_path, sql):
    out = tmp_path / "escaped.csv"
    before = sorted(p.stat().st_mtime_ns for p in ws.root.rglob("*.parquet"))
    with pytest.raises(PrefdataError, match="read-only|not allowed"):
        run_query(ws, sql.format(out=out))
    assert not out.exists()
    assert sorted(p.stat().st_mtime_ns for p in ws.root.rglob("*.parquet")) == before


def test_bad_sql_is_one_line(ws):
    with pytest.raises(PrefdataError) as err:
        run_query(ws, "SELECT nope FROM prompts")
    assert "\n" not in str(err.value) and "query failed" in str(err.value)


def test_output_formats(ws, tmp_path):
    result = run_query(ws, "SELECT prompt_id, source_index FROM prompts ORDER BY 1")
    assert write_result(result, "csv", None).splitlines()[0] == "prompt_id,source_index"
    rows = [json.loads(line) for line in write_result(result, "json", None).splitlines()]
    assert rows[0] == {"prompt_id": "p0000", "source_index": 0} and len(rows) == 5
    assert write_result(result, "jsonl", None) == write_result(result, "json", None)  # both JSON Lines
    write_result(result, "parquet", tmp_path / "out.parquet")
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 5
    table_text = write_result(result, "table", None)
    assert "p0004" in table_text and "(5 rows)" in table_text
