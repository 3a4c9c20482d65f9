import json
import os
from pathlib import Path

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
    assert write_result(result, "table", tmp_path / "out.txt") is None  # -o is honoured for every format
    assert (tmp_path / "out.txt").read_text() == table_text


# -- confinement: the connection reaches only the parts its views read (docs/security.md) ---------------
def _outside_files(root):
    """Readable files outside the workspace, one per reader, each of which a plain DuckDB reads."""
    root.mkdir()
    (root / "secret.csv").write_text("token\nsecret-value\n")
    (root / "secret.json").write_text('{"token": "secret-value"}\n')
    pq.write_table(pa.table({"token": ["secret-value"]}), root / "secret.parquet")
    return root


FILE_FUNCTIONS = [
    ("read_csv", "SELECT * FROM read_csv('{dir}/secret.csv')"),
    ("read_json", "SELECT * FROM read_json('{dir}/secret.json')"),
    ("read_text", "SELECT content FROM read_text('{dir}/secret.csv')"),
    ("read_blob", "SELECT content FROM read_blob('{dir}/secret.csv')"),
    ("read_parquet", "SELECT * FROM read_parquet('{dir}/secret.parquet')"),
    ("glob", "SELECT * FROM glob('{dir}/*')"),
    ("replacement scan", "SELECT * FROM '{dir}/secret.csv'"),
    ("system file", "SELECT * FROM read_csv('/etc/passwd', header=false)"),
    ("url", "SELECT * FROM read_csv('https://example.com/x.csv')"),
]


@pytest.mark.parametrize("name, sql", FILE_FUNCTIONS, ids=[f[0] for f in FILE_FUNCTIONS])
def test_file_functions_cannot_read_outside_the_workspace(ws, tmp_path, name, sql):
    import duckdb

    outside = _outside_files(tmp_path / "outside")
    sql = sql.format(dir=outside)
    if "secret" in sql:  # the same SQL reads the file on an unconfined connection: the refusal is ours
        assert "secret" in str(duckdb.connect().sql(sql).fetchall())
    with pytest.raises(PrefdataError, match=r"^query refused: Permission Error") as err:
        run_query(ws, sql)
    assert "\n" not in str(err.value) and "secret-value" not in str(err.value)


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_text('{ws}/manifest.json')",  # inside the workspace, but not a part
    "SELECT * FROM glob('{ws}/prompts/*')",
    "SELECT * FROM read_text('{part}/../../manifest.json')",  # a part's path as a prefix
    "SELECT * FROM read_text('{ws}/prompts/../manifest.json')",
])
def test_only_the_parts_themselves_are_readable(ws, sql):
    part = ws.parts("prompts")[0].resolve()
    assert run_query(ws, f"SELECT count(*) AS n FROM read_parquet('{part}')").to_pylist() == [{"n": 5}]
    with pytest.raises(PrefdataError, match="query refused"):
        run_query(ws, sql.format(ws=ws.root.resolve(), part=part))


UNDO_ATTEMPTS = [
    "SET enable_external_access = true", "RESET enable_external_access",
    "SET GLOBAL enable_external_access = true", "SET allowed_paths = ['/etc/passwd']", "RESET allowed_paths",
    "SET allowed_directories = ['/']", "SET lock_configuration = false", "RESET lock_configuration",
    "SET GLOBAL lock_configuration = false", "SET disabled_filesystems = ''",
    "SET autoload_known_extensions = true", "SET autoinstall_known_extensions = true",
    "SET python_enable_replacements = true", "SET temp_directory = '.'", "PRAGMA enable_profiling",
]
ESCAPES = [
    "COPY (SELECT 1 AS x) TO '{out}'", "EXPORT DATABASE '{dir}'", "ATTACH '{dir}.duckdb' AS other",
    "INSTALL httpfs", "LOAD httpfs", "CREATE TABLE views.t AS SELECT 1",
]


def test_duckdb_itself_holds_the_confinement(ws, tmp_path):
    """Without prefdata's statement filter, straight on the connection: no SET/RESET/PRAGMA undoes
    the settings, and COPY, EXPORT, ATTACH, INSTALL, LOAD and writes all fail inside DuckDB."""
    import duckdb

    from prefdata.query import connect

    out, folder = tmp_path / "leak.csv", tmp_path / "exported"
    probe = "SELECT * FROM read_text('/etc/hostname')"
    with connect(ws) as con:
        for statement in UNDO_ATTEMPTS:
            with pytest.raises(duckdb.Error, match="configuration has been locked"):
                con.execute(statement)
        for statement in ESCAPES:
            with pytest.raises(duckdb.Error, match="Permission|read-only"):
                con.execute(statement.format(out=out, dir=folder))
        with pytest.raises(duckdb.PermissionException):
            con.execute(probe)
        assert con.execute("SELECT current_setting('enable_external_access')").fetchone() == (False,)
        assert con.execute("SELECT count(*) FROM prompts").fetchone() == (5,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ws"]


@pytest.mark.parametrize("sql", UNDO_ATTEMPTS + ["RESET ALL"])
def test_settings_cannot_be_changed_through_query(ws, sql):
    with pytest.raises(PrefdataError, match="not allowed|does not parse"):
        run_query(ws, sql)


def test_python_variables_are_not_scanned(ws, monkeypatch):
    """DuckDB's Python client resolves unknown table names to DataFrames/Arrow tables in the
    calling frame; that lookup is off, so only the views and the parts are reachable."""
    import prefdata.query as query

    monkeypatch.setattr(query, "leak", pa.table({"secret": ["value"]}), raising=False)
    with pytest.raises(PrefdataError, match="query failed: Catalog Error"):
        run_query(ws, "SELECT * FROM leak")


def test_nothing_is_written_anywhere_by_a_query(ws, monkeypatch):
    """DuckDB spills big sorts and joins to its temp_directory (by default `.tmp` under the working
    directory, which may be the workspace): it points into the query's own throwaway folder."""
    from tests.test_bad_input import snapshot

    monkeypatch.chdir(ws.root)
    before = snapshot(ws.root)
    [row] = run_query(ws, "SELECT current_setting('temp_directory') AS d, count(*) AS n "
                          "FROM (SELECT * FROM range(100000) r, prompts ORDER BY random())").to_pylist()
    assert row["n"] == 500_000
    spill = Path(row["d"])
    assert spill.is_absolute() and spill.name == "spill" and spill.parent.name.startswith("prefdata-query-")
    assert not ws.contains(spill) and not spill.parent.exists()  # removed with the connection
    assert snapshot(ws.root) == before


# -- --output --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["part", "new file in a table", "workspace itself", "dotdot", "symlink"])
def test_output_inside_the_workspace_is_refused(ws, tmp_path, where):
    from prefdata.query import output_path

    part = ws.parts("prompts")[0]
    link = tmp_path / "innocent.parquet"
    link.symlink_to(part)
    target = {"part": part, "new file in a table": ws.root / "pairs" / "part-x.parquet",
              "workspace itself": ws.root, "dotdot": tmp_path / "elsewhere" / ".." / "ws" / "out.csv",
              "symlink": link}[where]
    with pytest.raises(PrefdataError, match="inside the workspace"):
        output_path(ws, target)


def test_output_must_be_a_regular_file(ws, tmp_path):
    from prefdata.query import output_path

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(PrefdataError, match="not a regular file"):
        output_path(ws, fifo)
    with pytest.raises(PrefdataError, match="is a directory"):
        output_path(ws, tmp_path)
    link = tmp_path / "link.csv"
    link.symlink_to(tmp_path / "real.csv")
    assert output_path(ws, link) == (tmp_path / "real.csv").resolve()  # written through the link


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_a_failed_write_leaves_the_old_file(tmp_path, fmt):
    """An INTERVAL column has no Parquet or Polars form: the write fails with one line, and the
    file that was there keeps its bytes (pyarrow alone deletes it), with no temp file left."""
    import duckdb

    table = duckdb.sql("SELECT 1 AS n, INTERVAL 1 DAY AS gap").to_arrow_table()
    out = tmp_path / f"result.{fmt}"
    out.write_bytes(b"previous result")
    with pytest.raises(PrefdataError, match=rf"cannot write the result as {fmt}|which {fmt} output cannot hold") as err:
        write_result(table, fmt, out)
    assert "\n" not in str(err.value)
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]
