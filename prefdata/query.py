"""DuckDB over a workspace: one read-only view per table.

Two independent walls keep `prefdata query` inside the workspace:

* only query statements (SELECT, EXPLAIN [ANALYZE] SELECT) are accepted, checked
  before DuckDB runs anything (`check_read_only`);
* the connection itself is confined by DuckDB's own settings, set before the
  user's SQL and then locked (`lock_configuration`): external access is off and
  the only files DuckDB may open are the table parts the views read
  (`allowed_paths`), so read_csv/read_text/glob/... of any other file, INSTALL,
  LOAD of an extension that is not built in, ATTACH, COPY and EXPORT fail, and
  no SET or RESET can undo it.

The views live in a throwaway database file (outside the workspace) that is
re-opened read-only. docs/security.md lists these guarantees and their tests.

>>> run_query(Workspace.open("ws"), "SELECT scenario, count(*) FROM pairs GROUP BY 1")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from prefdata.errors import PrefdataError
from prefdata.schemas import TABLES, empty
from prefdata.store import Workspace

OUTPUT_FORMATS = ("table", "csv", "json", "jsonl", "parquet")  # json and jsonl: JSON Lines


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# Set on the read-only connection before any user SQL. Order matters: allowed_paths must be
# set while external access is still on, and lock_configuration last, so that no later
# SET/RESET/PRAGMA (ours or the user's) can change any of them.
_CONFINE = (
    "SET autoinstall_known_extensions = false",
    "SET autoload_known_extensions = false",
    "SET allow_community_extensions = false",
    "SET python_enable_replacements = false",  # no scanning of Python variables by name
    "SET enable_external_access = false",
    "SET lock_configuration = true",
)


@contextlib.contextmanager
def connect(ws: Workspace) -> Iterator["duckdb.DuckDBPyConnection"]:  # noqa: F821
    """A read-only DuckDB connection with a view per table (a snapshot of the parts now on disk),
    confined to the files those views read (see the module docstring)."""
    import duckdb

    with tempfile.TemporaryDirectory(prefix="prefdata-query-") as tmp:
        db_path = Path(tmp) / "views.duckdb"
        setup = duckdb.connect(str(db_path))
        readable = []
        for table in TABLES:
            paths = [str(p.resolve()) for p in ws.parts(table)]  # ws.parts refuses symlinked parts
            if not paths:  # an empty, correctly typed view rather than a missing one
                stub = Path(tmp) / f"{table}-empty.parquet"
                pq.write_table(empty(table), stub)
                paths = [str(stub)]
            readable += paths
            files = "[" + ", ".join(_sql_string(p) for p in paths) + "]"
            try:
                setup.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet({files})")
            except duckdb.Error as err:  # e.g. a corrupted part: DuckDB reads the files' schemas here
                setup.close()
                raise PrefdataError(f"cannot read the {table} table of {ws.root}: {str(err).splitlines()[0]}",
                                    "move the corrupted part out of the workspace and re-run the build "
                                    "that wrote it") from None
        setup.close()
        con = duckdb.connect(str(db_path), read_only=True)
        try:
            # DuckDB spills large sorts and joins here rather than into ./.tmp, which may be the workspace.
            con.execute(f"SET temp_directory = {_sql_string(str(Path(tmp) / 'spill'))}")
            con.execute(f"SET allowed_paths = [{', '.join(_sql_string(p) for p in readable)}]")
            for statement in _CONFINE:
                con.execute(statement)
            yield con
        finally:
            con.close()


_ALLOWED = {"SELECT", "EXPLAIN"}
_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(ANALY[SZ]E\s+)?", re.IGNORECASE)


def check_read_only(sql: str) -> None:
    """Refuse any statement that is not a query, before it reaches DuckDB."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as err:
        raise PrefdataError(f"SQL does not parse: {str(err).splitlines()[0]}",
                            "check the query syntax") from None
    if not statements:
        raise PrefdataError("no SQL statement given", "pass a query such as \"SELECT count(*) FROM pairs\"")
    for statement in statements:
        kind = statement.type.name
        if kind not in _ALLOWED:
            raise PrefdataError(f"{kind} statements are not allowed: prefdata query is read-only",
                                "use SELECT queries only; export data with `prefdata export`")
        if kind == "EXPLAIN":
            # EXPLAIN ANALYZE runs the statement it wraps (e.g. COPY ... TO a file): check that one too.
            # Anything the pattern cannot strip (comments, options) fails to parse and is refused.
            inner = _EXPLAIN.sub("", statement.query, count=1)
            if inner == statement.query:
                raise PrefdataError("this EXPLAIN form is not allowed: prefdata query is read-only",
                                    "write EXPLAIN [ANALYZE] SELECT ...")
            check_read_only(inner)


def run_query(ws: Workspace, sql: str) -> pa.Table:
    """Run read-only `sql` against the workspace views; returns the last statement's result."""
    import duckdb

    check_read_only(sql)
    with connect(ws) as con:
        try:
            result = None
            for statement in duckdb.extract_statements(sql):
                result = con.sql(statement.query).to_arrow_table()
        except duckdb.Error as err:
            first_line = str(err).splitlines()[0]
            if isinstance(err, duckdb.PermissionException) or "configuration has been locked" in first_line:
                raise PrefdataError(f"query refused: {first_line}",
                                    "prefdata query reads only the workspace's tables, through the views "
                                    f"{', '.join(TABLES)}, and cannot open other files, load extensions, "
                                    "change settings or write") from None
            raise PrefdataError(f"query failed: {first_line}",
                                f"the views are: {', '.join(TABLES)}") from None
    return result


def format_text_table(table: pa.Table, max_rows: int = 50, max_width: int = 60) -> str:
    """Render a result as an aligned text table (the terminal output of `prefdata query`)."""
    names = table.column_names
    shown = table.slice(0, max_rows).to_pylist()

    def cell(value) -> str:
        text = "NULL" if value is None else str(value)
        text = text.replace("\n", "\\n")
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    rows = [[cell(row[n]) for n in names] for row in shown]
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    out = [line(names), line(["-" * w for w in widths])] + [line(r) for r in rows]
    if table.num_rows > max_rows:
        out.append(f"... {table.num_rows - max_rows} more rows ({table.num_rows} in all); "
                   "use --format csv|json|parquet for everything")
    else:
        out.append(f"({table.num_rows} row{'s' if table.num_rows != 1 else ''})")
    return "\n".join(out)


def output_path(ws: Workspace, output: str | Path) -> Path:
    """The file `--output` names, symlinks resolved (the result is written to the file a link
    points at). Refused: a path inside the workspace (a query never changes it), a directory
    or other non-regular file, a missing parent directory."""
    try:
        target = Path(output).resolve()
    except (OSError, RuntimeError) as err:  # a symlink loop
        raise PrefdataError(f"cannot resolve output path {output}: {err}", "give --output a plain file path") from None
    if ws.contains(target):
        raise PrefdataError(f"output path {output} is inside the workspace {ws.root}",
                            "write query results outside the workspace (prefdata query never changes it)")
    if target.is_dir():
        raise PrefdataError(f"output path {output} is a directory", "give a file path to --output")
    if target.exists() and not target.is_file():
        raise PrefdataError(f"output path {output} exists and is not a regular file",
                            "give --output a new or regular file path")
    if not target.parent.is_dir():
        raise PrefdataError(f"directory {Path(output).parent} does not exist (or is not a directory)",
                            "create it or choose another --output")
    return target


def check_result_fits(table: pa.Table, fmt: str) -> None:
    """Refuse, naming the column, a result the output format cannot hold: duplicate column
    names (any file format), nested columns in CSV, union/interval/map columns in JSON,
    union/interval columns in Parquet."""
    seen = set()
    for name in table.column_names:
        if name in seen:
            raise PrefdataError(f"the result has two columns named {name!r}, which {fmt} output cannot hold",
                                "give each column its own name with AS, e.g. SELECT a.x AS x1, b.x AS x2")
        seen.add(name)
    if fmt == "csv":
        cannot = lambda t: pa.types.is_nested(t) or _holds(t, _no_json)  # noqa: E731
        fix = "use --format json or parquet, or flatten it in SQL (e.g. to_json(col) or unnest(col))"
    elif fmt in ("json", "jsonl"):
        cannot = lambda t: _holds(t, _no_json)  # noqa: E731
        fix = "cast it in SQL, e.g. CAST(col AS VARCHAR)"
    else:
        cannot = lambda t: _holds(t, _no_parquet)  # noqa: E731
        fix = "cast it in SQL, e.g. CAST(col AS VARCHAR)"
    for field in table.schema:
        if cannot(field.type):
            raise PrefdataError(f"column {field.name!r} is of type {field.type}, which {fmt} output cannot hold", fix)


def _no_parquet(t: pa.DataType) -> bool:
    return pa.types.is_union(t) or pa.types.is_interval(t)


def _no_json(t: pa.DataType) -> bool:
    return _no_parquet(t) or pa.types.is_map(t)



def _holds(t: pa.DataType, bad) -> bool:
    """Whether `t` or any type nested in it is one `bad` says yes to."""
    if bad(t):
        return True
    return any(_holds(t.field(i).type, bad) for i in range(t.num_fields))


def write_result(table: pa.Table, fmt: str, output: Path | None) -> str | None:
    """Write a query result as csv, json (JSON Lines) or parquet; returns text for stdout, if any.

    A file is written to a temp file beside it and renamed into place, so a failed write
    leaves whatever was at `output` before untouched."""
    from prefdata.store import atomic_write_bytes, atomic_write_parquet

    if fmt not in OUTPUT_FORMATS:
        raise PrefdataError(f"unknown output format {fmt!r}", f"use one of: {', '.join(OUTPUT_FORMATS)}")
    if fmt != "table":
        check_result_fits(table, fmt)
    if fmt == "parquet" and output is None:
        raise PrefdataError("--format parquet needs a file", "add --output result.parquet")
    import polars as pl

    try:
        if fmt == "parquet":
            atomic_write_parquet(Path(output), table)
            return None
        if fmt == "table":
            text = format_text_table(table) + "\n"
        else:
            frame = pl.from_arrow(table)
            text = frame.write_csv() if fmt == "csv" else frame.write_ndjson()  # json and jsonl
    except (pa.ArrowException, pl.exceptions.PolarsError) as err:  # what check_result_fits did not foresee
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise PrefdataError(f"cannot write the result as {fmt}: {first}",
                            "cast that column in the query (e.g. CAST(col AS VARCHAR)) or pick another --format"
                            ) from None
    if output is None:
        return text
    atomic_write_bytes(Path(output), text.encode())
    return None
