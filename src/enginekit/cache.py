"""Content-addressed engine cache: a built plan is found again by what it was built from.

The key (:func:`make_key`, in :mod:`enginekit.cache_keys`) is a sha256 over the model's bytes (the ``.onnx``
file and every external data file it references), the canonical JSON of the settings that change the
artifact, the bytes of the files those settings point to (a precision plan, calibration data), the backend
library's name and version, and the device. Paths never enter the key.

Layout: ``root/<key[:2]>/<key>/`` holds ``engine.plan`` (the serialized plan, untouched) and
``manifest.json`` (the caller's manifest plus ``cache_key``, ``plan_sha256``, ``plan_bytes``, ``created``
and, last, ``manifest_sha256`` sealing the manifest's own bytes: :mod:`enginekit.cache_entry`). An entry is
written into a temporary folder inside ``root`` (``.tmp-<pid>-<host>-*``), synced, then renamed into place
in one step, so a reader sees a whole entry or none. :meth:`EngineCache.get` checks every entry it returns
(manifest seal, key, plan size and sha256) and removes a damaged or foreign one, so a caller never builds on
a bad plan: it rebuilds. Temp folders left by killed processes are listed and removed once their owner is
gone (:mod:`enginekit.cache_cleanup`).

Manifest fields read for listings (all optional): ``source_model`` (``{"path": ...}``) or ``model``,
``library``, ``library_version``, ``device`` (else ``target.compute_capabilities``), ``precision`` (a
string or ``{"precision": ...}``) and ``profiles`` (a list, one item per optimization profile).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from enginekit.cache_cleanup import (
    BUILD_PREFIX,
    STALE_TEMP_AGE,
    TMP_PREFIX,
    TRASH_PREFIX,
    TempFolder,
    clean_temp,
    fsync_dir,
    make_temp_dir,
    owned_name,
    remove_tree,
    scan_temp,
    write_synced,
)
from enginekit.cache_entry import (
    CACHE_FIELDS,
    MANIFEST_FILE,
    PLAN_FILE,
    CacheEntry,
    CacheEntryDamagedError,
    parse_time,
    read_entry,
    seal_manifest,
    unseal_manifest,
)
from enginekit.cache_keys import (
    KEY_FORMAT,
    canonical_json,
    check_key,
    content_digest,
    file_sha256,
    make_key,
    model_digest,
)
from enginekit.errors import EnginekitError, InvalidArgumentError, OutputPathError, UnknownNameError
from enginekit.fileutil import (
    atomic_write_pair,
    check_output_file,
    check_writable_folder,
    current_umask,
    new_file_mode,
)

__all__ = [
    "BUILD_PREFIX", "CACHE_FIELDS", "ENV_CACHE_DIR", "KEY_FORMAT", "MANIFEST_FILE", "PLAN_FILE", "STALE_TEMP_AGE",
    "CacheEntry", "CacheEntryDamagedError", "EngineCache", "TempFolder", "canonical_json", "check_key",
    "content_digest", "default_cache_dir", "file_sha256", "make_key", "model_digest", "seal_manifest",
]

logger = logging.getLogger(__name__)

ENV_CACHE_DIR = "ENGINEKIT_CACHE_DIR"
_CHUNK = 1 << 20
_KEY_RE = re.compile(r"[0-9a-f]{64}")
_PREFIX_RE = re.compile(r"[0-9a-f]{1,64}")


def default_cache_dir() -> Path:
    """``$ENGINEKIT_CACHE_DIR`` when set, else the user cache folder's ``enginekit/engines``."""
    env = os.environ.get(ENV_CACHE_DIR, "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("enginekit")) / "engines"


class EngineCache:
    """Engine plans by cache key, under ``root`` (default: :func:`default_cache_dir`)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def entry_dir(self, key: str) -> Path:
        return self.root / key[:2] / check_key(key)

    # -- lookup -------------------------------------------------------------------------------

    def get(self, key: str) -> CacheEntry | None:
        """The entry for ``key`` if it is complete and intact, else None (a damaged one is removed).

        Intact: the manifest's seal (its own sha256) holds, it names this key, and the plan's size and
        sha256 match it (the plan is read once to hash it).
        """
        path = self.entry_dir(key)
        for _ in range(3):
            before = _ident(path, changes=True)
            if before is None:
                return None
            entry = read_entry(key, path, verify=True)
            if entry.ok:
                return entry
            if _ident(path, changes=True) != before:
                continue  # replaced or removed by another process while it was checked: look again
            logger.warning("Engine cache entry %s is damaged (%s); removing it, the engine will be rebuilt.",
                           path, entry.damaged)
            self._remove(path, expect=before[:2])
            return None
        return None

    def entries(self, *, verify: bool = False) -> list[CacheEntry]:
        """Every entry, newest first; damaged ones are listed with the reason, not removed.

        Without ``verify`` the manifest's seal and the plan's size are checked but not the plan's sha256
        (fast on large caches).
        """
        found = [read_entry(key, path, verify=verify) for key, path in self._entry_dirs()]
        epoch = datetime.min.replace(tzinfo=timezone.utc)
        return sorted(found, key=lambda e: (e.created or epoch, e.key), reverse=True)

    def _entry_dirs(self) -> list[tuple[str, Path]]:
        if not self.root.exists():
            return []
        if not self.root.is_dir():
            raise InvalidArgumentError(f"Engine cache folder '{self.root}' is not a folder.",
                                       hint=f"Pass another --cache-dir or set {ENV_CACHE_DIR}.")
        found = []
        for shard in sorted(self.root.iterdir()):
            if len(shard.name) != 2 or not _PREFIX_RE.fullmatch(shard.name) or not shard.is_dir():
                continue  # temp and trash folders start with '.', so they never look like entries
            try:
                children = sorted(shard.iterdir())
            except OSError:
                continue  # removed by a concurrent clear
            for path in children:
                if _KEY_RE.fullmatch(path.name) and path.name.startswith(shard.name):
                    found.append((path.name, path))
        return found

    def resolve(self, prefix: str) -> str:
        """The full key of the one entry whose key starts with ``prefix`` (as ``cache list`` shows it)."""
        p = prefix.strip().lower()
        if not _PREFIX_RE.fullmatch(p):
            raise InvalidArgumentError(f"Key {prefix!r} is not a cache key or key prefix (hex digits).")
        matches = [k for k, _ in self._entry_dirs() if k.startswith(p)]
        if not matches:
            raise UnknownNameError(f"No engine cache entry has a key starting with '{p}' in '{self.root}'.",
                                   hint="`enginekit cache list` shows the keys.")
        if len(matches) > 1:
            shown = ", ".join(m[:16] for m in matches[:5])
            raise InvalidArgumentError(f"Key prefix '{p}' matches {len(matches)} entries ({shown}…).",
                                       hint="Give more digits of the key.")
        return matches[0]

    # -- writing ------------------------------------------------------------------------------

    def put(self, key: str, plan: bytes, manifest: Mapping[str, Any]) -> CacheEntry:
        """Store ``plan`` under ``key`` atomically; when a valid entry is already there, keep it and return it."""
        target = self.entry_dir(key)
        record = {k: v for k, v in manifest.items() if k not in CACHE_FIELDS}
        record.update(cache_key=key, plan_sha256=hashlib.sha256(plan).hexdigest(), plan_bytes=len(plan),
                      created=datetime.now(timezone.utc).isoformat())
        try:
            sealed = seal_manifest(record)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"The manifest of cache entry {key[:12]} is not strict JSON: "
                                       f"{exc.message}") from exc
        self.ensure_writable()
        tmp = make_temp_dir(self.root, TMP_PREFIX)
        try:
            os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; entries follow the umask
            write_synced(tmp / PLAN_FILE, plan, new_file_mode())
            write_synced(tmp / MANIFEST_FILE, sealed, new_file_mode())
            fsync_dir(tmp)
            for _ in range(100):  # a clear may remove the shard folder between mkdir and rename
                try:
                    target.parent.mkdir()
                except FileExistsError:
                    pass
                try:
                    os.rename(tmp, target)
                except FileNotFoundError:
                    continue  # the shard folder was just removed by a clear: make it again
                except OSError as exc:
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) and not target.exists():
                        raise
                    existing = self.get(key)  # removes a damaged one, so the next rename can succeed
                    if existing is not None:
                        logger.debug("cache entry %s was written by another process; keeping that one", key)
                        return existing
                    continue
                fsync_dir(target.parent)
                fsync_dir(self.root)
                logger.debug("cached %d-byte plan as %s", len(plan), target)
                stored, _ = unseal_manifest(sealed)
                return CacheEntry(key, target, len(plan), parse_time(record["created"]), stored or record)
            raise EnginekitError(f"Could not store engine cache entry '{target}': it kept changing under "
                                 "concurrent writers.", hint="Try again.")
        except OSError as exc:
            raise OutputPathError(f"Could not write to the engine cache folder '{self.root}': "
                                  f"{exc.strerror or exc}.",
                                  hint=f"Pass another --cache-dir, set {ENV_CACHE_DIR}, or --no-cache.") from exc
        finally:
            if tmp.exists():
                remove_tree(tmp)

    def ensure_writable(self) -> None:
        """Create the cache folder, or say clearly why it cannot be used for writing (exit 2)."""
        if self.root.exists() and not self.root.is_dir():
            raise OutputPathError(f"Engine cache folder '{self.root}' is a file, not a folder.",
                                  hint=f"Pass another --cache-dir or set {ENV_CACHE_DIR}.")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputPathError(f"Could not create the engine cache folder '{self.root}': "
                                  f"{exc.strerror or exc}.",
                                  hint=f"Pass another --cache-dir, set {ENV_CACHE_DIR}, or --no-cache.") from exc
        check_writable_folder(self.root, "Engine cache folder", probe=True)

    def build_dir(self) -> Path:
        """A new temp folder for a build, in the cache folder and named after this process, so that a build
        killed with ``kill -9`` leaves a folder the next build or ``cache list`` recognises and removes."""
        self.ensure_writable()
        return make_temp_dir(self.root, BUILD_PREFIX)

    # -- leftovers ----------------------------------------------------------------------------

    def temp_folders(self, *, now: datetime | None = None) -> list[TempFolder]:
        """Temp folders in the cache (builds, writes, removals in progress or left by killed processes)."""
        return scan_temp(self.root, now=now) if self.root.is_dir() else []

    def clean_temp(self, *, now: datetime | None = None) -> list[TempFolder]:
        """Remove leftover temp folders whose owner is gone (see :mod:`enginekit.cache_cleanup`)."""
        return clean_temp(self.root, now=now) if self.root.is_dir() else []

    # -- removal and export -------------------------------------------------------------------

    def select(self, keys: Iterable[str] | None = None, older_than: timedelta | None = None, *,
               now: datetime | None = None) -> list[CacheEntry]:
        """Entries that :meth:`clear` with the same arguments removes (all when both are None)."""
        wanted = None if keys is None else {check_key(k) for k in keys}
        cutoff = None
        if older_than is not None:
            try:
                cutoff = (now or datetime.now(timezone.utc)) - older_than
            except OverflowError:
                cutoff = datetime.min.replace(tzinfo=timezone.utc)  # longer ago than any date: nothing is that old
        chosen = []
        for entry in self.entries():
            if wanted is not None and entry.key not in wanted:
                continue
            if cutoff is not None and entry.created is not None and entry.created >= cutoff:
                continue
            chosen.append(entry)
        return chosen

    def clear(self, keys: Iterable[str] | None = None, older_than: timedelta | None = None, *,
              now: datetime | None = None) -> int:
        """Remove the chosen entries (``keys`` and/or older than ``older_than``; all by default).

        Also removes temp folders left by killed processes (:meth:`clean_temp`) and empty shard folders.
        Returns how many entries were removed.
        """
        removed = sum(self._remove(e.path) for e in self.select(keys, older_than, now=now))
        if self.root.is_dir():
            self.clean_temp(now=now)
            for p in self.root.iterdir():
                if len(p.name) == 2 and p.is_dir():
                    try:
                        p.rmdir()  # only when empty
                    except OSError:
                        pass
        return removed

    def _remove(self, path: Path, *, expect: tuple[int, ...] | None = None) -> bool:
        """Move an entry out of its place in one step, then delete it. ``expect``: the (dev, inode) checked."""
        trash = self.root / f"{owned_name(TRASH_PREFIX)}{uuid.uuid4().hex}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return False  # another process removed it first
        except OSError as exc:
            logger.warning("Could not remove engine cache entry %s: %s", path, exc)
            return False
        moved = _ident(trash)
        if expect is not None and moved is not None and moved != expect:
            # Between the check and the move, another process replaced the damaged entry with a good one.
            try:
                os.rename(trash, path)
                return False
            except OSError:
                pass
        remove_tree(trash)
        return True

    def export(self, key: str, dest_plan: str | Path) -> tuple[Path, Path]:
        """Copy the plan of ``key`` to ``dest_plan`` and its manifest to ``<dest_plan>.json``, as a pair.

        Returns (plan path, manifest path). The copy is checked against the manifest's sha256.
        """
        entry = self.get(key)
        if entry is None:
            raise UnknownNameError(f"No valid engine cache entry for key {key[:12]} in '{self.root}'.",
                                   hint="`enginekit cache list` shows the keys; build the engine again.")
        dest = Path(dest_plan)
        if dest.is_dir():
            raise InvalidArgumentError(f"Export destination '{dest}' is a folder, expected a plan file path.",
                                       hint=f"Name the file, e.g. '{dest / 'model.plan'}'.")
        check_output_file(dest, "Export destination")
        manifest_path = dest.with_name(dest.name + ".json")
        write_plan_pair(dest, entry.read_plan(), entry.manifest)
        return dest, manifest_path


def write_plan_pair(dest: Path, plan: bytes, manifest: Mapping[str, Any]) -> Path:
    """Write ``plan`` to ``dest`` and ``manifest`` (with the plan's size and sha256) to ``<dest>.json`` as a
    pair (both staged before either is renamed into place); returns the manifest's path."""
    import json

    record = {k: v for k, v in manifest.items() if k != "manifest_sha256"}  # the cache's own seal stays there
    record.update(plan_bytes=len(plan), plan_sha256=hashlib.sha256(plan).hexdigest())
    manifest_path = dest.with_name(dest.name + ".json")
    text = json.dumps(record, indent=2, default=str) + "\n"
    atomic_write_pair((dest, plan), (manifest_path, text.encode("utf-8")))
    return manifest_path


def _ident(path: Path, *, changes: bool = False) -> tuple[int, ...] | None:
    """(device, inode), plus the change time with ``changes`` (a rename into place sets it); None if absent."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns) if changes else (st.st_dev, st.st_ino)
