"""Crash safety of `prefdata build`, through the real CLI.

A small build (8 prompts x 4 samples of a random-init tiny Llama, transformers backend,
seeded sampling, shards of 1 prompt, judge batches of 8) is SIGKILLed inside each of its
stages, three times per stage, at named points rather than at random moments
(`prefdata/pause.py`: with PREFDATA_TEST_PAUSE_AT=<stage>/<point>[:<n>] the build stops
itself there; the test checks where it stopped, then SIGKILLs it):

* generate: mid-write of the run's 1st new shard, right after its 2nd shard lands, and
  mid-write of its 3rd (each resume generates only the shards still missing);
* judge: mid-write of the run's 1st verdict batch, after its 1st lands, mid-write of its 2nd;
* select: at its start, with the pairs computed but not written, mid-write of the pairs part;
* finish: mid-write of the manifest, after the manifest lands, mid-write of the card.

Each run resumes the one killed before it; then a last run finishes. Its tables must hold
exactly the rows of the same build run once without interruption, with no temp file left
and a manifest that describes the parts on disk. Where each kill landed (checked against
the workspace at the moment of the kill) is printed (pytest -s) and recorded in the test's
report section.

Why scenario 2 and not 1: a random-init model writes no correct answer, so scenario 1
(best vs worst of the policy's own samples) drops every prompt as uniformly wrong;
scenario 2 (reference vs worst policy sample) still makes one pair per prompt and runs
every stage: ingest, policy generation, reference candidates, judging, selection.

Run-dependent fields: none of the four tables holds one (no timestamps, paths or pids;
ids, seeds and work keys are content hashes; sampling is seeded per prompt), so every
column of every row is compared. The verifier's `timeout` status would depend on machine
load, so the judge gets a 60 s timeout that no check here comes near. Run-dependent data
lives only outside the tables: manifest timestamps and judge part names (a resumed judge
batches the remaining candidates differently; the rows are the same).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from prefdata.pause import ENV as PAUSE_ENV
from prefdata.schemas import TABLES
from prefdata.store import MANIFEST, Workspace

CLI = [sys.executable, "-c", "from prefdata.cli import main; main()"]

pytestmark = pytest.mark.slow


def cli_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PREFDATA_DEBUG"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore")
    return env


def build_args(ws: Path, model: Path) -> list[str]:
    return ["build", str(ws), "--scenario", "2", "--policy-model", str(model), "--backend", "transformers",
            "--limit", "8", "--n", "4", "--max-tokens", "24", "--set", "policy.shard_size=1",
            "--set", "judge.batch_size=8", "--set", "judge.timeout_s=60",
            "--set", "select.drop_truncated=false", "--set", "select.unscored_score=0"]


def part_files(ws: Path) -> set[str]:
    return {f"{p.parent.name}/{p.name}" for t in TABLES for p in (ws / t).glob("part-*.parquet")}


def lock_holder(ws: Path) -> str:
    try:
        return (ws / ".lock").read_text()
    except OSError:
        return ""


def table_rows(ws: Path) -> dict[str, list[str]]:
    """Every row of every table, canonical JSON, sorted."""
    out = {}
    opened = Workspace.open(ws)
    for table in TABLES:
        rows = opened.read(table).to_pylist()
        out[table] = sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)
    return out


def odd_files(ws: Path) -> list[str]:
    """Temp or hidden files other than the lock: what a crash must never leave visible."""
    return sorted(str(p.relative_to(ws)) for p in ws.rglob("*")
                  if p.name != ".lock" and (p.name.startswith(".") or p.name.endswith(".tmp")))


class Monitor:
    """Runs one `prefdata build` and watches its lock every 10 ms."""

    def __init__(self, ws: Path, model: Path, log_dir: Path, tag: str):
        self.ws, self.tag = ws, tag
        self.out = open(log_dir / f"{tag}.out", "w")
        self.err = open(log_dir / f"{tag}.err", "w")
        self.proc = subprocess.Popen(CLI + build_args(ws, model), stdout=self.out, stderr=self.err,
                                     env=cli_env())
        self.locked = False

    def run_until(self, condition, timeout: float = 600) -> bool:
        """Poll until `condition(self)` holds (True) or the process exits (False)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            self.locked = self.locked or f"pid {self.proc.pid} " in lock_holder(self.ws)
            if condition(self):
                return True
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.tag}: no progress in {timeout}s")
            time.sleep(0.01)
        return False

    def finish(self) -> int:
        code = self.proc.wait()
        self.out.close()
        self.err.close()
        return code


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The tiny model and the uninterrupted reference build."""
    from prefdata.toy.model import ToyModelConfig, build_model, save_model

    root = tmp_path_factory.mktemp("crash")
    model = save_model(build_model(ToyModelConfig(), seed=1), root / "tiny", name="tiny")
    (root / "logs").mkdir()
    ws = root / "reference"
    started = time.monotonic()
    done = subprocess.run(CLI + build_args(ws, model), capture_output=True, text=True, env=cli_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    parts = part_files(ws)
    return {
        "root": root, "model": model, "ws": ws, "seconds": time.monotonic() - started,
        "rows": table_rows(ws),
        "policy_parts": sum(p.startswith("candidates/part-policy-") for p in parts),
        "judgments": Workspace.open(ws).count("judgments"),
    }


# (stage, point) where each killed run stops, in order; each run resumes the one before.
# Counts (":2") are arrivals within that run: shards and batches done by earlier runs are
# cached and not redone, so every generate and judge kill lands on new work.
KILL_POINTS = [
    ("generate", "write:candidates:1"), ("generate", "wrote:candidates:2"), ("generate", "write:candidates:3"),
    ("judge", "write:judgments:1"), ("judge", "wrote:judgments:1"), ("judge", "write:judgments:2"),
    ("select", "begin"), ("select", "selected"), ("select", "write:pairs"),
    ("finish", "write:manifest.json"), ("finish", "wrote:manifest.json"), ("finish", "write:README.md"),
]


def wait_stopped(proc: subprocess.Popen, timeout: float = 600) -> None:
    """Block until `proc` stops itself at its pause point; fail if it exits instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status = os.waitpid(proc.pid, os.WNOHANG | os.WUNTRACED)
        if pid and os.WIFSTOPPED(status):
            return
        if pid:  # it exited: reaped here, so tell Popen what the status was
            proc.returncode = os.waitstatus_to_exitcode(status)
            raise AssertionError(f"the build exited ({proc.returncode}) before its pause point")
        time.sleep(0.02)
    raise TimeoutError(f"no pause within {timeout}s")


def where(ws: Path, world: dict, pid: int) -> dict:
    """What the workspace shows at the moment of the kill."""
    parts = part_files(ws)
    return {
        "policy_parts": sum(p.startswith("candidates/part-policy-") for p in parts),
        "reference_part": any(p.startswith("candidates/part-reference-") for p in parts),
        "judged": sum(pq.read_metadata(ws / p).num_rows for p in parts if p.startswith("judgments/")),
        "pairs_part": any(p.startswith("pairs/") for p in parts),
        "card": (ws / "README.md").exists(),
        "own_temp": sorted(p.name for p in ws.rglob(f"*.{pid}.tmp")),
        "lock_held": f"pid {pid} " in lock_holder(ws),
    }


def check_landing(stage: str, point: str, seen: dict, world: dict) -> None:
    """The workspace agrees with the stage the build says it is in."""
    generated = seen["policy_parts"] == world["policy_parts"] and seen["reference_part"]
    judged = seen["judged"] == world["judgments"]
    inside = {"generate": not generated,
              "judge": generated and not judged,
              "select": judged and (not seen["pairs_part"] or point.startswith("wrote")),
              "finish": judged and seen["pairs_part"] and not seen["card"]}
    assert inside[stage], (stage, point, seen)
    assert seen["lock_held"], seen
    # mid-write: this run's temp file is complete and not yet renamed
    assert bool(seen["own_temp"]) == point.startswith("write:"), seen


def test_killed_in_every_stage_resumes_to_the_uninterrupted_result(world, record_property):
    """Three SIGKILLs inside each stage (generate, judge, select, finish), each at a named point
    the build pauses at; every run resumes the last, a final run finishes; the tables then equal
    the uninterrupted build's, row for row and column for column."""
    root, model = world["root"], world["model"]
    ws = root / "crashed"
    events, prev_pid = [], None
    started = time.monotonic()
    for cycle, (stage, point) in enumerate(KILL_POINTS):
        tag = f"cycle{cycle:02d}"
        with open(root / "logs" / f"{tag}.out", "w") as out, open(root / "logs" / f"{tag}.err", "w") as err:
            proc = subprocess.Popen(CLI + build_args(ws, model), stdout=out, stderr=err,
                                    env={**cli_env(), PAUSE_ENV: f"{stage}/{point}"})
            try:
                wait_stopped(proc)
            except AssertionError:
                raise AssertionError((root / "logs" / f"{tag}.err").read_text()[-3000:]) from None
            seen = where(ws, world, proc.pid)
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait() == -signal.SIGKILL
        check_landing(stage, point, seen, world)
        log = (root / "logs" / f"{tag}.out").read_text()
        if prev_pid is not None:  # the run before died holding the lock: this one says it recovered it
            assert f"recovered a lock left by dead process {prev_pid}" in log, log[-2000:]
        prev_pid = proc.pid
        events.append(f"cycle {cycle:2d} at {time.monotonic() - started:4.0f}s: killed at {stage}/{point}: "
                      f"{seen['policy_parts']}/{world['policy_parts']} policy shards, "
                      f"{seen['judged']}/{world['judgments']} verdicts, pairs part {seen['pairs_part']}, "
                      f"temp {seen['own_temp'] or '-'}")
        print(events[-1], flush=True)

    final = subprocess.run(CLI + build_args(ws, model), capture_output=True, text=True, env=cli_env(),
                           timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    assert f"recovered a lock left by dead process {prev_pid}" in final.stdout
    events.append(f"final resume: exit 0; {time.monotonic() - started:.0f}s of kill/resume cycles, "
                  f"reference build {world['seconds']:.0f}s")
    print(events[-1], flush=True)
    record_property("kill_landings", events)

    per_stage = {s: sum(1 for k, _ in KILL_POINTS if k == s) for s in ("generate", "judge", "select", "finish")}
    assert min(per_stage.values()) >= 3, per_stage
    assert table_rows(ws) == world["rows"]  # no row lost, none duplicated, every column equal
    for table, rows in world["rows"].items():
        assert len(rows) > 0 and len(set(rows)) == len(rows), table
    assert odd_files(ws) == [], "temp files left visible"
    manifest = json.loads((ws / MANIFEST).read_text())
    for table in TABLES:  # the manifest describes exactly the parts on disk
        on_disk = {p.name: pq.read_metadata(p).num_rows for p in (ws / table).glob("part-*.parquet")}
        assert {k: v["rows"] for k, v in manifest["tables"][table]["parts"].items()} == on_disk, table
    assert (ws / "README.md").read_text().count("scenario2") >= 1


def test_second_build_refused_and_dead_writers_lock_recovered(world, tmp_path):
    """Build A holds the lock (frozen with SIGSTOP mid-run): build B exits 3 with one line and
    changes nothing, queries still work; A is SIGKILLed; build C recovers the lock and finishes."""
    ws = tmp_path / "ws"
    shutil.copytree(world["ws"], ws)
    logs = tmp_path / "logs"
    logs.mkdir()
    a = Monitor(ws, world["model"], logs, "A")
    try:
        assert a.run_until(lambda m: m.locked), "A ended before it took the lock"
        os.kill(a.proc.pid, signal.SIGSTOP)
        before = {p: p.read_bytes() for p in ws.rglob("*") if p.is_file()}

        b = subprocess.run(CLI + build_args(ws, world["model"]) + ["--quiet"], capture_output=True, text=True,
                           env=cli_env(), timeout=300)
        lines = [line for line in b.stderr.splitlines() if line.strip()]
        assert b.returncode == 3, b.stderr[-3000:]
        assert len(lines) == 1 and "Traceback" not in b.stderr, b.stderr[-3000:]
        assert f"is being written by pid {a.proc.pid}" in lines[0] and "; wait for" in lines[0], lines[0]
        assert {p: p.read_bytes() for p in ws.rglob("*") if p.is_file()} == before

        q = subprocess.run(CLI + ["query", str(ws), "SELECT count(*) AS n FROM pairs", "--format", "csv"],
                           capture_output=True, text=True, env=cli_env(), timeout=300)
        assert q.returncode == 0 and q.stdout.split() == ["n", str(len(world["rows"]["pairs"]))], q.stderr
    finally:
        os.kill(a.proc.pid, signal.SIGKILL)
        a.finish()

    c = subprocess.run(CLI + build_args(ws, world["model"]), capture_output=True, text=True, env=cli_env(),
                       timeout=600)
    assert c.returncode == 0, c.stderr[-3000:]
    assert f"recovered a lock left by dead process {a.proc.pid}" in c.stdout, c.stdout[-2000:]
    assert table_rows(ws) == world["rows"]
    assert lock_holder(ws) == ""  # released on a clean exit
