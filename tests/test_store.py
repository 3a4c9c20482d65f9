import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefdata.errors import PrefdataError, WorkspaceLocked
from prefdata.schemas import schema
from prefdata.store import Workspace

REPO_SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def prompts(n: int, start: int = 0) -> pa.Table:
    ids = [f"p{i:04d}" for i in range(start, start + n)]
    return pa.table({"prompt_id": ids, "source": ["toy"] * n, "split": ["train"] * n,
                     "source_index": list(range(start, start + n)), "prompt": [f"q{i}" for i in ids]})


def assert_matches_schema_file(path: Path, table: str) -> None:
    """Compare a written Parquet file with schemas/<table>.json, independently of prefdata.schemas."""
    spec = json.loads((REPO_SCHEMAS / f"{table}.json").read_text())
    written = pq.read_schema(path)
    assert written.names == [f["name"] for f in spec["fields"]]
    for field, declared in zip(written, spec["fields"]):
        assert str(field.type).replace(" ", "").replace("item:", "") == declared["type"].replace(" ", "") \
            or field.type == schema(table).field(declared["name"]).type, field
        assert field.nullable == declared["nullable"], field.name


def test_write_read_roundtrip_and_schema(tmp_path):
    ws = Workspace.create(tmp_path / "ws")
    with ws.writer():
        path = ws.write_part("prompts", "a", prompts(3))
        ws.write_part("prompts", "b", prompts(2, start=3))
        manifest = ws.write_manifest("ingest", {"limit": 5})
    assert_matches_schema_file(path, "prompts")
    assert ws.read("prompts").column("prompt_id").to_pylist() == [f"p{i:04d}" for i in range(5)]
    assert manifest["tables"]["prompts"]["rows"] == 5
    assert set(manifest["tables"]["prompts"]["parts"]) == {"part-a.parquet", "part-b.parquet"}
    assert manifest["stages"]["ingest"]["config"] == {"limit": 5}
    assert not list((tmp_path / "ws" / "prompts").glob(".*tmp"))  # no temp files left behind


def test_rewriting_a_part_replaces_it(tmp_path):
    ws = Workspace.create(tmp_path / "ws")
    with ws.writer():
        ws.write_part("prompts", "a", prompts(3))
        ws.write_part("prompts", "a", prompts(2))
    assert ws.count("prompts") == 2


def test_write_needs_lock_and_valid_names(tmp_path):
    ws = Workspace.create(tmp_path / "ws")
    with pytest.raises(RuntimeError):
        ws.write_part("prompts", "a", prompts(1))
    with ws.writer():
        with pytest.raises(ValueError):
            ws.write_part("prompts", "../escape", prompts(1))
        with pytest.raises(PrefdataError, match="unknown table"):
            ws.write_part("../../etc", "a", prompts(1))


def test_manifest_hashes_match_files(tmp_path):
    import hashlib

    ws = Workspace.create(tmp_path / "ws")
    with ws.writer():
        path = ws.write_part("prompts", "a", prompts(4))
        manifest = ws.write_manifest()
    assert manifest["tables"]["prompts"]["parts"][path.name]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


HOLDER = """
import sys, time
from prefdata.store import Workspace
ws = Workspace.create(sys.argv[1])
with ws.writer():
    print("locked", flush=True)
    time.sleep(60)
"""


def test_second_writer_refused_and_dead_writer_lock_recovered(tmp_path):
    root = tmp_path / "ws"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(root)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        ws = Workspace.create(root)
        with pytest.raises(WorkspaceLocked, match=f"pid {holder.pid}"):
            with ws.writer():
                pass
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        with ws.writer():
            assert ws.recovered_lock_from == holder.pid
    finally:
        holder.kill()


def test_open_refuses_file_missing_and_incompatible(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(PrefdataError, match="is a file"):
        Workspace.create(tmp_path / "file")
    with pytest.raises(PrefdataError, match="no workspace"):
        Workspace.open(tmp_path / "missing")
    ws = Workspace.create(tmp_path / "ws")
    with ws.writer():
        ws.write_part("prompts", "a", prompts(1))
        ws.write_manifest()
    manifest = json.loads((tmp_path / "ws" / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (tmp_path / "ws" / "manifest.json").write_text(json.dumps(manifest))
    before = sorted(p.name for p in (tmp_path / "ws").rglob("*"))
    with pytest.raises(PrefdataError, match="schema version 99"):
        Workspace.open(tmp_path / "ws")
    assert sorted(p.name for p in (tmp_path / "ws").rglob("*")) == before



def test_a_build_killed_during_its_first_manifest_write_can_be_rerun(tmp_path):
    root = tmp_path / "ws"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (root / "prompts").mkdir(parents=True)
    leftover = root / f".manifest.json.{dead.pid}.tmp"
    leftover.write_text('{"half')
    ws = Workspace.create(root)
    with ws.writer():
        assert leftover in ws.removed_temp_files and not leftover.exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / f".notes.{dead.pid}.tmp").write_text("x")
    with pytest.raises(PrefdataError, match="not a prefdata workspace"):
        Workspace.create(tmp_path / "other")


READER = """
import sys, pyarrow.parquet as pq
from pathlib import Path
seen = 0
folder = Path(sys.argv[1]) / "prompts"
while seen < 300:
    for p in folder.glob("part-*.parquet"):
        try:
            n = pq.read_metadata(p).num_rows
        except FileNotFoundError:
            continue  # replaced between glob and open: fine, never partial
        assert n in (1000, 2000), n
        seen += 1
print("ok", seen)
"""


def test_readers_never_see_partial_parts(tmp_path):
    ws = Workspace.create(tmp_path / "ws")
    with ws.writer():
        ws.write_part("prompts", "a", prompts(1000))
        reader = subprocess.Popen([sys.executable, "-c", READER, str(ws.root)], stdout=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        i = 0
        while reader.poll() is None and time.time() < deadline:
            ws.write_part("prompts", "a", prompts(2000 if i % 2 else 1000))
            i += 1
    out, _ = reader.communicate(timeout=60)
    assert reader.returncode == 0 and out.startswith("ok"), out


# -- a workspace from someone else cannot point prefdata outside it (docs/security.md) -------------------
def _workspace_with_a_foreign_entry(tmp_path, how: str) -> tuple[Workspace, Path]:
    """A workspace whose prompts part (or folder, manifest) is replaced by a link or a FIFO."""
    ws = Workspace.create(tmp_path / "ws")
    with ws.writer():
        ws.write_part("prompts", "a", prompts(3))
        ws.write_manifest()
    outside = tmp_path / "outside"
    outside.mkdir()
    pq.write_table(prompts(7, start=100), outside / "part-a.parquet")
    part = ws.parts("prompts")[0]
    if how == "part symlink":
        part.unlink()
        part.symlink_to(outside / "part-a.parquet")
        return ws, part
    if how == "relative part symlink":
        part.unlink()
        part.symlink_to(Path("..") / ".." / "outside" / "part-a.parquet")
        return ws, part
    if how == "table folder symlink":
        folder = ws.root / "prompts"
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()
        folder.symlink_to(outside, target_is_directory=True)
        return ws, folder
    if how == "part fifo":
        part.unlink()
        os.mkfifo(part)  # a reader would block on it forever
        return ws, part
    if how == "manifest symlink":
        manifest = ws.root / "manifest.json"
        (outside / "manifest.json").write_bytes(manifest.read_bytes())
        manifest.unlink()
        manifest.symlink_to(outside / "manifest.json")
        return ws, manifest
    raise AssertionError(how)


FOREIGN = ["part symlink", "relative part symlink", "table folder symlink", "part fifo", "manifest symlink"]


@pytest.mark.parametrize("how", FOREIGN)
def test_symlinked_or_special_entries_are_refused(tmp_path, how):
    ws, bad = _workspace_with_a_foreign_entry(tmp_path, how)
    with pytest.raises(PrefdataError) as err:
        Workspace.open(ws.root)
    assert str(bad) in str(err.value) and ("symbolic link" in str(err.value) or "not a regular file" in str(err.value))
    reads = (ws.manifest,) if how == "manifest symlink" else (
        lambda: ws.read("prompts"), lambda: ws.count("prompts"), lambda: ws.parts("prompts"))
    for read in reads:
        with pytest.raises(PrefdataError, match="symbolic link|not a regular file"):
            read()
    with ws.writer():  # nothing is written through a link: a folder link is refused, a part link replaced
        if how == "table folder symlink":
            with pytest.raises(PrefdataError, match="symbolic link"):
                ws.write_part("prompts", "a", prompts(1))
        elif how == "part fifo":  # writers refuse to replace anything but a regular file (issue 23)
            with pytest.raises(PrefdataError, match="not a regular file"):
                ws.write_part("prompts", "a", prompts(1))
            (ws.root / "prompts" / "part-a.parquet").unlink()
            ws.write_part("prompts", "a", prompts(1))
            assert Workspace.open(ws.root).count("prompts") == 1
        elif how != "manifest symlink":
            ws.write_part("prompts", "a", prompts(1))
            assert Workspace.open(ws.root).count("prompts") == 1
    assert pq.read_table(tmp_path / "outside" / "part-a.parquet").num_rows == 7
    assert sorted(p.name for p in (tmp_path / "outside").iterdir()) in (["part-a.parquet"],
                                                                        ["manifest.json", "part-a.parquet"])


def test_a_symlinked_workspace_root_is_fine(tmp_path):
    """The user's own path to the workspace may be a link; only what is inside is checked."""
    ws = Workspace.create(tmp_path / "real")
    with ws.writer():
        ws.write_part("prompts", "a", prompts(2))
        ws.write_manifest()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    linked = Workspace.open(tmp_path / "link")
    assert linked.count("prompts") == 2
    assert linked.contains(tmp_path / "real" / "prompts") and ws.contains(tmp_path / "link" / "x.csv")
    assert not ws.contains(tmp_path / "real-sibling") and not ws.contains(tmp_path)


def test_a_planted_lock_symlink_is_not_followed(tmp_path):
    """Taking the writer lock truncates .lock; a .lock that links to a user file must not
    truncate that file."""
    ws = Workspace.create(tmp_path / "ws")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (ws.root / ".lock").symlink_to(victim)
    with pytest.raises(PrefdataError, match=r"lock file .*\.lock.*symbolic link"):
        with ws.writer():
            pass
    assert victim.read_text() == "precious\n"


def test_failed_atomic_writes_keep_the_old_file_and_leave_no_temp(tmp_path):
    from prefdata.store import atomic_write_bytes, atomic_write_parquet

    target = tmp_path / "file.parquet"
    target.write_bytes(b"old")
    with pytest.raises(pa.ArrowNotImplementedError):  # Parquet has no month_day_nano interval
        atomic_write_parquet(target, pa.table({"gap": pa.array([(1, 2, 3)], pa.month_day_nano_interval())}))
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["file.parquet"]
