"""Temp folders of the engine cache: named after their owner, listed, and removed once their owner is gone.

A build works in ``enginekit-build-<pid>-<host>-*`` inside the cache folder; an entry is written in
``.tmp-<pid>-<host>-*`` and renamed into place; an entry being removed is first renamed to
``.trash-<pid>-<host>-*``. A process killed (``kill -9``) in the middle leaves its folder behind. The next
build, ``cache list`` or ``cache clear`` removes a leftover when its owner process (same host) is dead, or,
when the owner cannot be known (another host, an older name), when nothing in it changed for
:data:`STALE_TEMP_AGE`. A live process's folder is never removed, however long its build takes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
BUILD_PREFIX = "enginekit-build-"
TEMP_PREFIXES = (TMP_PREFIX, TRASH_PREFIX, BUILD_PREFIX)
STALE_TEMP_AGE = timedelta(hours=1)  # a temp folder of unknown owner untouched this long is a crashed writer's
_OWNER_RE = re.compile(r"(?:\.tmp-|\.trash-|enginekit-build-)(\d+)-([0-9a-f]{8})-")
_KINDS = {TMP_PREFIX: "entry being written", TRASH_PREFIX: "entry being removed", BUILD_PREFIX: "build"}


def host_tag() -> str:
    """8 hex digits naming this host (a pid means something only on the host that made it)."""
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def owned_name(prefix: str) -> str:
    """``prefix`` plus this process's pid and host tag, for :func:`tempfile.mkdtemp` or a rename target."""
    return f"{prefix}{os.getpid()}-{host_tag()}-"


def make_temp_dir(folder: Path, prefix: str) -> Path:
    """A new temp folder in ``folder`` named after this process (see :func:`owned_name`)."""
    return Path(tempfile.mkdtemp(prefix=owned_name(prefix), dir=folder))


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): kill(0) is all we know
    return stat_line.rsplit(")", 1)[-1].split()[:1] != ["Z"]


@dataclass(frozen=True)
class TempFolder:
    """A temp folder in the cache: who owns it, and whether it is a leftover that may be removed."""

    path: Path
    kind: str
    size: int
    changed: datetime
    pid: int | None
    stale: bool
    reason: str

    def summary(self) -> dict[str, Any]:
        return {"path": str(self.path), "kind": self.kind, "size": self.size, "changed": self.changed.isoformat(),
                "pid": self.pid, "state": "stale" if self.stale else "in use", "reason": self.reason}


def scan_temp(folder: Path, *, prefixes: tuple[str, ...] = TEMP_PREFIXES,
              now: datetime | None = None) -> list[TempFolder]:
    """The temp folders directly in ``folder`` (names starting with ``prefixes``), oldest first."""
    try:
        children = [p for p in folder.iterdir() if p.name.startswith(prefixes)]
    except OSError:
        return []
    now_ts = (now or datetime.now(timezone.utc)).timestamp()
    found = []
    for path in children:
        changed = last_change(path)
        prefix = next(p for p in prefixes if path.name.startswith(p))
        owner = _OWNER_RE.match(path.name)
        pid = int(owner.group(1)) if owner else None
        if owner is not None and owner.group(2) == host_tag():
            assert pid is not None
            alive = pid_alive(pid)
            stale, reason = (False, f"its process {pid} is running") if alive else \
                (True, f"its process {pid} is gone (killed or crashed)")
        else:
            who = "another host's process" if owner else "an unknown process"
            stale = now_ts - changed > STALE_TEMP_AGE.total_seconds()
            reason = f"{who}'s, untouched for {_age(now_ts - changed)}" + (
                "" if stale else f" (removed after {_age(STALE_TEMP_AGE.total_seconds())})")
        found.append(TempFolder(path, _KINDS[prefix], _tree_size(path),
                                datetime.fromtimestamp(changed, timezone.utc), pid, stale, reason))
    return sorted(found, key=lambda t: (t.changed, t.path.name))


def clean_temp(folder: Path, *, prefixes: tuple[str, ...] = TEMP_PREFIXES,
               now: datetime | None = None) -> list[TempFolder]:
    """Remove the stale temp folders in ``folder``; returns what was removed."""
    removed = []
    for t in scan_temp(folder, prefixes=prefixes, now=now):
        if t.stale:
            logger.info("removing leftover temp folder %s: %s", t.path, t.reason)
            remove_tree(t.path)
            removed.append(t)
    return removed


def remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def write_synced(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` (it must not exist) with ``data`` and ``mode``, synced to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):
        return  # Windows: folders cannot be opened for fsync
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def last_change(path: Path) -> float:
    """Newest change of a folder and the files in it (a file being written updates its own; a rename, the ctime)."""
    times = [0.0]
    try:
        with os.scandir(path) as it:
            children = [e.path for e in it]
    except OSError:
        children = []
    for p in [str(path), *children]:
        try:
            st = os.lstat(p)
        except OSError:
            continue
        times += [st.st_mtime, st.st_ctime]
    return max(times)


def _tree_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h"
