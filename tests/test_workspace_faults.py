"""A damaged workspace, a full disk or a read-only one: one line naming the file, exit 2 (3 for
the lock), and the workspace left exactly as it was (every file hashed before and after).

The base workspace is a real build (scenario 2 from the toy world, 4 prompts x 2 samples);
each case damages a copy of it and runs the commands through the CLI's entry point. Read-only
and full disks are real file systems where the test may mount a tmpfs (root); elsewhere a
read-only directory (chmod) and a file-size limit (`ulimit -f`) stand in for them. Setting
PREFDATA_TEST_NO_MOUNT=1 takes the fallback path on purpose. docs/reliability.md lists the cases.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.workspace_helpers import cli, snapshot

BUILD = ["--scenario", "2", "--backend", "transformers", "--limit", "4", "--n", "2", "--max-tokens", "48",
         "--set", "heldout=0", "--quiet"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("base") / "ws"
    code, _, err = cli("build", str(root), *BUILD)
    assert code == 0, err
    return root


def _copy(base: Path, where: Path) -> Path:
    root = where / "ws"
    shutil.copytree(base, root)
    return root


def _first_part(root: Path, table: str) -> Path:
    return sorted((root / table).glob("part-*.parquet"))[0]


def _manifest(content: bytes):
    def damage(root: Path) -> str:
        (root / "manifest.json").write_bytes(content)
        return "manifest.json"
    return damage


def _move_out(root: Path, named: str) -> None:
    """What the error lines advise: move the named file (or folder) out of the workspace."""
    found = [p for p in root.rglob(named)] if named != "manifest.json" else [root / named]
    for path in found:
        shutil.move(str(path), str(root.parent / f"moved-{path.name}"))


def _manifest_dir(root: Path) -> str:
    (root / "manifest.json").unlink()
    (root / "manifest.json").mkdir()
    (root / "manifest.json" / "x").write_text("x")
    return "manifest.json"


def _truncated_part(root: Path) -> str:
    part = _first_part(root, "candidates")
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    return part.name


def _foreign_schema(root: Path) -> str:
    pq.write_table(pa.table({"x": [1, 2]}), root / "candidates" / "part-foreign.parquet")
    return "part-foreign.parquet"


def _lock_dir(root: Path) -> str:
    (root / ".lock").unlink(missing_ok=True)
    (root / ".lock").mkdir()
    return ".lock"


EVERY_COMMAND_REFUSES = {"info": 2, "query": 2, "build": 2, "check": 2, "gc": 2}
# case id -> (damage, {command: exit code}); each failing command's one line must name the file
CASES = {
    "manifest is a list": (_manifest(b"[1, 2]"), EVERY_COMMAND_REFUSES),
    "manifest is null": (_manifest(b"null"), EVERY_COMMAND_REFUSES),
    "manifest is a string": (_manifest(b'"tables"'), EVERY_COMMAND_REFUSES),
    "manifest is not UTF-8": (_manifest(b'{"tables": "\xff\xfe"}'), EVERY_COMMAND_REFUSES),
    "manifest is a directory": (_manifest_dir, EVERY_COMMAND_REFUSES),
    "truncated candidates part": (_truncated_part, EVERY_COMMAND_REFUSES),
    "part with a foreign schema": (_foreign_schema, {"build": 2, "check": 2, "gc": 2}),
    ".lock is a directory": (_lock_dir, {"build": 3, "gc": 3, "info": 0}),
}
COMMANDS = {
    "info": lambda root: ["info", str(root)],
    "query": lambda root: ["query", str(root), "SELECT count(*) FROM pairs"],
    "build": lambda root: ["build", str(root), *BUILD],
    "check": lambda root: ["check", str(root)],
    "gc": lambda root: ["gc", str(root)],
}


@pytest.mark.parametrize("case", list(CASES))
def test_damaged_workspace(case, base, tmp_path):
    damage, expected = CASES[case]
    root = _copy(base, tmp_path)
    named = damage(root)
    before = snapshot(root)
    for command, want in expected.items():
        code, out, err = cli(*COMMANDS[command](root))
        assert code == want, f"{command}: exit {code}\n{out}\n{err}"
        if want:
            assert err.startswith("error: ") and err.strip().count("\n") == 0, f"{command}: {err!r}"
            assert named in err, f"{command}: {err!r} does not name {named}"
            if command == "check":
                assert any(named in line for line in out.splitlines() if line.startswith("fault: ")), out
        assert snapshot(root) == before, f"{command} changed the workspace"
    _move_out(root, named)  # the advised fix works: the build resumes and the workspace is whole
    code, _, err = cli(*COMMANDS["build"](root))
    assert code == 0, err
    assert cli("check", str(root))[:2] == (0, f"{root}: ok\n")


def test_check_passes_a_whole_workspace_and_names_a_dangling_pair(base, tmp_path):
    root = _copy(base, tmp_path)
    assert cli("check", str(root))[0] == 0
    pairs = _first_part(root, "pairs")
    table = pq.read_table(pairs)
    ids = table["rejected_candidate_id"].to_pylist()
    at = table.schema.get_field_index("rejected_candidate_id")
    table = table.set_column(at, table.schema.field(at), pa.array(["gone"] + ids[1:], pa.string()))
    pq.write_table(table, pairs)
    code, out, err = cli("check", str(root))
    faults = [line for line in out.splitlines() if line.startswith("fault: ")]
    assert code == 2 and "2 fault(s)" in err, out + err
    assert any(pairs.name in f and "content differs from the manifest" in f for f in faults), faults
    assert any(pairs.name in f and "1 of" in f and "rejected_candidate_id" in f and "gone" in f for f in faults)


def test_hand_edited_manifest_does_not_survive_a_rebuild(base, tmp_path):
    root = _copy(base, tmp_path)
    manifest = json.loads((root / "manifest.json").read_text())
    truth = json.loads(json.dumps(manifest["tables"]))
    for table in manifest["tables"].values():
        table["rows"] += 1000
        for part in table["parts"].values():
            part["rows"], part["sha256"] = 7, "0" * 64
    (root / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = cli("build", str(root), *BUILD)  # everything cached: only the manifest is re-derived
    assert code == 0, err
    rebuilt = json.loads((root / "manifest.json").read_text())["tables"]
    for name, table in truth.items():
        assert rebuilt[name]["rows"] == table["rows"]
        for part, facts in table["parts"].items():
            path = root / name / part
            assert rebuilt[name]["parts"][part]["rows"] == pq.read_metadata(path).num_rows == facts["rows"]
            assert rebuilt[name]["parts"][part]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


# -- read-only and full disks -------------------------------------------------------------------
def _can_mount(where: Path) -> bool:
    if os.environ.get("PREFDATA_TEST_NO_MOUNT") or os.geteuid() != 0 or not shutil.which("mount"):
        return False
    where.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True)
    if done.returncode == 0:
        subprocess.run(["umount", str(where)], check=True)
    return done.returncode == 0


@contextlib.contextmanager
def tmpfs(where: Path, size: int):
    where.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def _without_dac_override() -> None:
    """In the child before exec: drop CAP_DAC_OVERRIDE from the bounding set, so root then
    obeys file modes like any user (a read-only directory refuses its writes)."""
    import ctypes

    pr_capbset_drop, cap_dac_override = 24, 1
    if ctypes.CDLL(None, use_errno=True).prctl(pr_capbset_drop, cap_dac_override, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE) failed")


def _subprocess_cli(args: list[str], preexec) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", "from prefdata.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=600, env=env, preexec_fn=preexec, cwd="/")
    return done.returncode, done.stdout, done.stderr


def test_read_only_workspace(base, tmp_path):
    mount = _can_mount(tmp_path / "probe")
    with tmpfs(tmp_path / "ro", 8 << 20) if mount else contextlib.nullcontext(tmp_path) as where:
        root = _copy(base, where)
        before = snapshot(root)
        if mount:  # a read-only file system
            subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
            run, expect = cli, "read-only file system"
        else:  # a directory this user may not write (root ignores modes: build as nobody then)
            for path in [root, *root.rglob("*")]:
                path.chmod(path.stat().st_mode & ~0o222)
            as_root = os.geteuid() == 0
            run = (lambda *a: _subprocess_cli(list(a), _without_dac_override)) if as_root else cli
            expect = "not writable"
        try:
            code, out, err = run("build", str(root), *BUILD)
            assert code == 2 and expect in err and str(root) in err, out + err
            assert err.strip().count("\n") == 0, err
            assert snapshot(root) == before
            code, out, err = run("query", str(root), "SELECT count(*) AS n FROM pairs")
            assert code == 0, err  # reading still works
        finally:
            if not mount:
                for path in [root, *root.rglob("*")]:
                    path.chmod(path.stat().st_mode | 0o200)


def _fill(folder: Path, leave: int) -> Path:
    """A filler file that leaves about `leave` bytes free on folder's file system."""
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    filler = folder / "filler"
    with open(filler, "wb") as fh:
        fh.truncate(0)
        remaining = max(0, free - leave)
        while remaining:
            chunk = min(remaining, 1 << 20)
            try:
                fh.write(b"\0" * chunk)
                fh.flush()
            except OSError:
                break
            remaining -= chunk
    return filler


def _rows(root: Path) -> dict[str, list]:
    from prefdata.store import Workspace

    ws = Workspace.open(root)
    keys = {"prompts": "prompt_id", "candidates": "candidate_id", "judgments": "candidate_id", "pairs": "pair_id"}
    return {t: sorted(ws.read(t).to_pylist(), key=lambda r, k=k: r[k]) for t, k in keys.items()}


FULL_BUILD = ["--scenario", "2", "--backend", "transformers", "--limit", "8", "--n", "4", "--max-tokens", "48",
              "--set", "heldout=0", "--set", "policy.shard_size=1", "--set", "judge.batch_size=8", "--quiet"]


def test_full_disk_stops_cleanly_and_a_rerun_resumes_to_identical_rows(tmp_path):
    reference = tmp_path / "reference"
    code, _, err = cli("build", str(reference), *FULL_BUILD)
    assert code == 0, err
    used = sum(-(-p.stat().st_size // 4096) * 4096 for p in reference.rglob("*") if p.is_file())
    mount = _can_mount(tmp_path / "probe")
    with tmpfs(tmp_path / "disk", 4 << 20) if mount else contextlib.nullcontext(tmp_path) as where:
        root = where / "ws"
        if mount:  # a real full disk: room for about half of the workspace
            filler = _fill(where, used // 2)
            code, out, err = cli("build", str(root), *FULL_BUILD)
            expect = "no space left on"
        else:  # `ulimit -f`: the first file that grows past the limit fails
            limit = max(p.stat().st_size for p in reference.rglob("*") if p.is_file()) // 2
            code, out, err = _subprocess_cli(["build", str(root), *FULL_BUILD],
                                             lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
            filler, expect = None, "file-size limit"
        assert code == 2 and expect in err and str(root) in err, out + err
        assert err.strip().count("\n") == 0, err
        assert not list(root.rglob(".*.tmp")), "a partial file was left behind"
        for part in root.rglob("part-*.parquet"):
            pq.read_table(part)  # every part on disk is whole
        if (root / "manifest.json").exists():
            json.loads((root / "manifest.json").read_text())
        parts_at_failure = len(list(root.rglob("part-*.parquet")))
        if filler is not None:
            filler.unlink()
        code, _, err = cli("build", str(root), *FULL_BUILD)
        assert code == 0, err
        assert _rows(root) == _rows(reference)
        assert parts_at_failure < len(list(root.rglob("part-*.parquet")))  # it stopped part-way
        assert cli("check", str(root))[0] == 0
