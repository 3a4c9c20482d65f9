"""Idempotent and crash-safe imports, and a refused file leaving a workspace byte-for-byte as it was."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from prefdata.importing import ImportSpec, import_file
from prefdata.store import Workspace
from tests.importing.conftest import generations, ultrafeedback, write_jsonl

TABLES = ("prompts", "candidates", "judgments", "pairs")


def _rows(ws_path) -> dict:
    ws = Workspace.open(ws_path)
    return {t: sorted(map(str, ws.read(t).to_pylist())) for t in TABLES}


def _snapshot(root) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_file_twice_adds_nothing(tmp_path):
    path = write_jsonl(tmp_path / "gens.jsonl", generations())
    first = import_file(tmp_path / "ws", ImportSpec(str(path), "candidates"))
    rows = _rows(tmp_path / "ws")
    second = import_file(tmp_path / "ws", ImportSpec(str(path), "candidates"))
    assert first["added"] == {"prompts": 4, "candidates": 12, "judgments": 12}
    assert second["added"] == {"prompts": 0, "candidates": 0, "judgments": 0}
    assert _rows(tmp_path / "ws") == rows


def test_same_rows_in_another_file_add_nothing(tmp_path):
    path = write_jsonl(tmp_path / "gens.jsonl", generations())
    import_file(tmp_path / "ws", ImportSpec(str(path), "candidates"))
    copy = write_jsonl(tmp_path / "gens.jsonl", list(reversed(generations())))  # same stem: same prompt ids
    (tmp_path / "other").mkdir()
    moved = copy.rename(tmp_path / "other" / "gens.jsonl")
    summary = import_file(tmp_path / "ws", ImportSpec(str(moved), "candidates"))
    assert summary["added"] == {"prompts": 0, "candidates": 0, "judgments": 0}
    assert Workspace.open(tmp_path / "ws").count("candidates") == 12


def test_pairs_twice_adds_nothing(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "P", "chosen": "a", "rejected": "b"}])
    import_file(tmp_path / "ws", ImportSpec(str(path), "pairs", dataset="d"))
    again = import_file(tmp_path / "ws", ImportSpec(str(path), "pairs", dataset="d"))
    assert again["added"] == {"prompts": 0, "pairs": 0} and Workspace.open(tmp_path / "ws").count("pairs") == 1


@pytest.mark.parametrize("kill_at", ["candidates", "judgments", "manifest"])
def test_killed_import_resumes_to_the_same_rows(tmp_path, kill_at):
    """A child process runs the import and is SIGKILLed just before it writes `kill_at`; the
    re-run must end with exactly the rows of an import that was never interrupted."""
    path = write_jsonl(tmp_path / "uf.jsonl", ultrafeedback())
    import_file(tmp_path / "clean", ImportSpec(str(path), "candidates"))
    child = textwrap.dedent(f"""
        import os, signal
        from prefdata.store import Workspace
        from prefdata.importing import ImportSpec, import_file
        write_part, write_manifest = Workspace.write_part, Workspace.write_manifest
        def die_at(table):
            if table == {kill_at!r}:
                os.kill(os.getpid(), signal.SIGKILL)
        def part(self, table, key, data):
            die_at(table)
            return write_part(self, table, key, data)
        def manifest(self, *a, **k):
            die_at("manifest")
            return write_manifest(self, *a, **k)
        Workspace.write_part, Workspace.write_manifest = part, manifest
        import_file({str(tmp_path / "ws")!r}, ImportSpec({str(path)!r}, "candidates"))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True)
    assert run.returncode == -9  # killed, not finished
    import_file(tmp_path / "ws", ImportSpec(str(path), "candidates"))
    assert _rows(tmp_path / "ws") == _rows(tmp_path / "clean")
    assert not list((tmp_path / "ws").rglob("*.tmp"))


def test_unmappable_file_exits_2_and_leaves_the_workspace_unchanged(tmp_path):
    path = write_jsonl(tmp_path / "gens.jsonl", generations())
    import_file(tmp_path / "ws", ImportSpec(str(path), "candidates"))
    before = _snapshot(tmp_path / "ws")
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"question": "q", "reply": "r", "n": 3}])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for kind in (["--as", "candidates"], ["--as", "pairs", "--dataset", "d"]):
        run = subprocess.run([sys.executable, "-m", "prefdata.cli", "import", str(tmp_path / "ws"), str(odd), *kind],
                             capture_output=True, text=True, env=env)
        assert run.returncode == 2 and run.stdout == ""
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and "found question (text), reply (text), n (int64)" in lines[0]
    assert _snapshot(tmp_path / "ws") == before


def test_same_file_with_other_settings_is_another_import(tmp_path):
    path = write_jsonl(tmp_path / "gens.jsonl", generations())
    import_file(tmp_path / "ws", ImportSpec(str(path), "candidates", origin="policy"))
    other = import_file(tmp_path / "ws", ImportSpec(str(path), "candidates", origin="other"))
    assert other["added"]["candidates"] == 12
    c = Workspace.open(tmp_path / "ws").read_polars("candidates")
    assert sorted(c["origin"].value_counts().rows()) == [("other", 12), ("policy", 12)]


def test_a_lost_part_is_rewritten_by_a_reimport(tmp_path):
    path = write_jsonl(tmp_path / "gens.jsonl", generations())
    import_file(tmp_path / "ws", ImportSpec(str(path), "candidates"))
    rows = _rows(tmp_path / "ws")
    for part in (tmp_path / "ws" / "candidates").glob("part-*.parquet"):
        part.unlink()
    again = import_file(tmp_path / "ws", ImportSpec(str(path), "candidates"))
    assert again["added"]["candidates"] == 12 and _rows(tmp_path / "ws") == rows
