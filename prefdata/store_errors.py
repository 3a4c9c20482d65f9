"""What the workspace store tells a user when the disk or a workspace file is at fault.

Two kinds of trouble end up here, both as one-line `PrefdataError`s that name the file:

* the file system refuses a write: no space left (ENOSPC, EDQUOT), a read-only mount
  (EROFS), no permission (EACCES, EPERM), a file-size limit (EFBIG, `ulimit -f`);
* a workspace file is not what it should be: a manifest that is not a JSON object
  (a list, null, a string, invalid UTF-8, a directory).

>>> import errno
>>> str(storage_error(OSError(errno.EROFS, "Read-only file system"), Path("/tmp")))  # doctest: +ELLIPSIS
'workspace /tmp is on a read-only file system...'
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

from prefdata.errors import PrefdataError

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_READ_ONLY = {errno.EROFS}
_NO_PERMISSION = {errno.EACCES, errno.EPERM}


def device_of(path: Path) -> str:
    """The device (or file system) holding `path`, from the mount table; the mount point if unknown."""
    try:
        target = os.path.realpath(path)
        best, device = "", ""
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) < 2:
                    continue
                mount = fields[1].replace("\\040", " ")
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, device = mount, fields[0]
        if best:
            return f"{device} (mounted at {best})"
    except OSError:
        pass
    return f"the device holding {path}"


def storage_error(err: OSError, root: Path) -> PrefdataError | None:
    """The one-line error for an OSError met while writing workspace `root`, or None when the
    error is not a storage refusal (then the caller re-raises it: it is a bug or another file)."""
    where = f" ({err.filename})" if getattr(err, "filename", None) else ""
    if err.errno in _NO_SPACE:
        return PrefdataError(f"no space left on {device_of(root)} for workspace {root}{where}",
                             "free space (or move the workspace) and re-run the same command: "
                             "it resumes where it stopped, nothing half-written was kept")
    if err.errno in _READ_ONLY:
        return PrefdataError(f"workspace {root} is on a read-only file system{where}",
                             "remount it read-write, or build into a writable workspace path; "
                             "`prefdata query` and `prefdata info` still read it")
    if err.errno in _NO_PERMISSION and _inside(err, root):
        return PrefdataError(f"workspace {root} is not writable by this user{where}",
                             "fix its permissions (chmod u+w), or build into a writable workspace path")
    if err.errno == errno.EFBIG:
        return PrefdataError(f"a file of workspace {root} hit the file-size limit{where}",
                             "raise the limit (ulimit -f unlimited) and re-run the same command: it resumes")
    return None


def _inside(err: OSError, root: Path) -> bool:
    if not getattr(err, "filename", None):
        return True  # Arrow's writers give no file name; they only ever write inside the workspace
    try:
        Path(os.path.abspath(err.filename)).relative_to(os.path.abspath(root))
        return True
    except ValueError:
        return False


def parse_manifest(path: Path) -> dict:
    """The manifest at `path` as a dict ({} when absent), or a one-line error naming the file."""
    fix = ("move it out of the workspace (or restore it) and re-run the build: the manifest is re-derived "
           "from the parts; `prefdata check` lists any other damage")
    if not os.path.lexists(path):
        return {}
    if path.is_dir():
        raise PrefdataError(f"{path} is a directory, not a workspace manifest", fix)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise PrefdataError(f"cannot read {path}: {err.strerror}", fix) from None
    try:
        manifest = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise PrefdataError(f"{path} is not UTF-8 text", fix) from None
    except (json.JSONDecodeError, RecursionError):
        raise PrefdataError(f"{path} is not valid JSON", fix) from None
    if not isinstance(manifest, dict):
        kind = "null" if manifest is None else type(manifest).__name__
        raise PrefdataError(f"{path} is not a workspace manifest (a JSON {kind}, not an object)", fix)
    for key in ("tables", "stages"):
        if not isinstance(manifest.get(key, {}), dict):
            raise PrefdataError(f"{path} is not a workspace manifest ({key!r} is not an object)", fix)
    return manifest
