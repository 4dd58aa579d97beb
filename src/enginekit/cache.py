"""Content-addressed engine cache: a built plan is found again by what it was built from.

The key (:func:`make_key`) is a sha256 over the model's bytes (the ``.onnx`` file and every
external data file it references), the canonical JSON of the settings that change the artifact,
the bytes of the files those settings point to (a precision plan, calibration data), the
backend library's name and version, and the device. Paths never enter the key: moving a model
or renaming a calibration file finds the same engine; changing one byte builds a new one.

Layout: ``root/<key[:2]>/<key>/`` holds ``engine.plan`` (the serialized plan, untouched) and
``manifest.json`` (the caller's manifest plus ``cache_key``, ``plan_sha256``, ``plan_bytes``,
``created``). An entry is written into a temporary folder inside ``root`` (``.tmp-*``), synced,
then renamed into place in one step, so a reader sees a whole entry or none. :meth:`EngineCache.get`
checks every entry it returns (manifest, key, plan size and sha256) and removes a damaged or
foreign one, so a caller never builds on a bad plan: it rebuilds.

Manifest fields read for listings (all optional): ``source_model`` (``{"path": ...}``) or ``model``,
``library``, ``library_version``, ``device`` (else ``target.compute_capabilities``), ``precision`` (a
string or ``{"precision": ...}``) and ``profiles`` (a list, one item per optimization profile).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import re
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePath
from typing import Any

from enginekit.errors import (
    EnginekitError,
    InvalidArgumentError,
    ModelLoadError,
    UnknownNameError,
    UserError,
    VerificationError,
)
from enginekit.fileutil import atomic_write_text

logger = logging.getLogger(__name__)

ENV_CACHE_DIR = "ENGINEKIT_CACHE_DIR"
PLAN_FILE = "engine.plan"
MANIFEST_FILE = "manifest.json"
KEY_FORMAT = 1  # bump when what the key hashes changes: every old entry then misses
CACHE_FIELDS = ("cache_key", "plan_sha256", "plan_bytes", "created")
STALE_TEMP_AGE = timedelta(hours=1)  # a temp folder untouched this long belongs to a crashed writer
_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
_CHUNK = 1 << 20
_KEY_RE = re.compile(r"[0-9a-f]{64}")
_PREFIX_RE = re.compile(r"[0-9a-f]{1,64}")


class CacheEntryDamagedError(VerificationError):
    """A cached plan no longer matches its manifest (it changed after it was checked)."""


# --- keys ------------------------------------------------------------------------------------


def canonical_json(value: Any, where: str = "value") -> str:
    """Sorted keys, no whitespace, ASCII only; refuses what JSON cannot say exactly (paths, NaN, objects)."""
    _check_jsonable(value, where)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _check_jsonable(value: Any, where: str) -> None:
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgumentError(f"{where} is {value}: a cache key needs finite numbers.")
        return
    if isinstance(value, PurePath):
        raise InvalidArgumentError(
            f"{where} is a path ('{value}'): a path would key the cache by where a file is, not by what it holds.",
            hint="Leave it out of the settings and pass the file in content_files, which hashes its bytes.",
        )
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidArgumentError(f"{where} has a non-string key {k!r}: use string keys only.")
            _check_jsonable(v, f"{where}.{k}")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_jsonable(v, f"{where}[{i}]")
        return
    raise InvalidArgumentError(
        f"{where} is a {type(value).__name__}, which has no canonical JSON form.",
        hint="Pass plain values (str, int, float, bool, None, lists and dicts of them).",
    )


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("ascii")).hexdigest()


def file_sha256(path: Path) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def model_digest(model_path: str | Path) -> str:
    """sha256 of an ONNX model with its external data files.

    Without external data this is the sha256 of the ``.onnx`` file (what ``sha256sum`` prints).
    With it, the sha256 of the canonical JSON ``{"model": [sha, size], "external_data":
    [[location, sha, size], ...]}``, locations sorted. External locations are read and checked for
    safety (no escape from the model's folder) by :func:`enginekit.graph.load.load_model`.

    Raises:
        ModelLoadError: the model or one of its external data files is missing, unsafe or unreadable.
    """
    from enginekit.graph.load import external_data_files, load_model

    path = Path(model_path)
    model = load_model(path, load_external_data=False, check=False)
    locations = sorted(external_data_files(model))
    del model
    model_sha, model_size = _hash_input(path, "model file", ModelLoadError)
    if not locations:
        return model_sha
    external = []
    for loc in locations:
        sha, size = _hash_input(path.parent / loc, f"external data file of '{path}'", ModelLoadError)
        external.append([loc, sha, size])
    return _sha256_json({"model": [model_sha, model_size], "external_data": external})


def _hash_input(path: Path, what: str, error: type[UserError] = InvalidArgumentError) -> tuple[str, int]:
    try:
        return file_sha256(path)
    except OSError as exc:
        raise error(f"Could not read {what} '{path}': {exc.strerror or exc}.",
                    hint="Check that it exists and is readable.") from exc


def content_digest(path: str | Path) -> tuple[str, int]:
    """(sha256, size) of a file, or of a folder's files (relative names and contents, sorted)."""
    p = Path(path)
    if p.is_file():
        return _hash_input(p, "content file")
    if p.is_dir():
        files = sorted((f for f in p.rglob("*") if f.is_file()), key=lambda f: f.relative_to(p).as_posix())
        listing: list[list[str | int]] = []
        total = 0
        for f in files:
            sha, size = _hash_input(f, "content file")
            listing.append([f.relative_to(p).as_posix(), sha, size])
            total += size
        return _sha256_json({"folder": listing}), total
    state = "is not a file or folder" if p.exists() else "does not exist"
    raise InvalidArgumentError(f"Build input '{p}' {state}.", hint="Check the path of the precision plan, "
                               "calibration data or other file given to the build.")


def make_key(
    model_path: str | Path,
    settings: Mapping[str, Any],
    library: str,
    library_version: str,
    device: str,
    *,
    content_files: Sequence[str | Path] = (),
) -> str:
    """The cache key (64 hex digits) of the engine built from these inputs.

    ``settings`` holds exactly the settings that change the artifact (plain JSON values; key order
    does not matter). Files that change the build go in ``content_files``: their bytes are hashed,
    in the order given (a folder: its files, by relative name), never their paths. ``device`` names
    what the plan is built for, e.g. ``"sm89"`` or ``"NVIDIA L4 (8.9)"``.
    """
    for name, value in (("library", library), ("library_version", library_version), ("device", device)):
        if not isinstance(value, str) or not value.strip():
            raise InvalidArgumentError(f"make_key: {name} must be a non-empty string, got {value!r}.")
    _check_jsonable(settings, "settings")
    return _sha256_json({
        "format": KEY_FORMAT,
        "model": model_digest(model_path),
        "settings": dict(settings),
        "content_files": [list(content_digest(p)) for p in content_files],
        "library": library,
        "library_version": library_version,
        "device": device,
    })


def check_key(key: str) -> str:
    """``key`` if it is a full cache key (64 lowercase hex digits), else InvalidArgumentError."""
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise InvalidArgumentError(f"{key!r} is not a cache key: expected 64 lowercase hex digits (a sha256).")
    return key


# --- entries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheEntry:
    """One cache entry. ``damaged`` holds the reason when it failed its checks (listings only)."""

    key: str
    path: Path
    size: int  # bytes of engine.plan on disk
    created: datetime | None
    manifest: dict[str, Any] = field(default_factory=dict)
    damaged: str | None = None

    @property
    def ok(self) -> bool:
        return self.damaged is None

    @property
    def plan_path(self) -> Path:
        return self.path / PLAN_FILE

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_FILE

    def read_plan(self) -> bytes:
        """The plan bytes, checked again against the manifest's size and sha256."""
        try:
            data = self.plan_path.read_bytes()
        except OSError as exc:
            raise CacheEntryDamagedError(f"Could not read cached plan '{self.plan_path}': {exc}.",
                                         hint="Another process may have cleared the cache; build again.") from exc
        if len(data) != self.manifest.get("plan_bytes") or hashlib.sha256(data).hexdigest() != self.manifest.get(
            "plan_sha256"
        ):
            raise CacheEntryDamagedError(f"Cached plan '{self.plan_path}' changed after it was checked.",
                                         hint="Build again; the cache drops the entry on its next lookup.")
        return data

    def summary(self) -> dict[str, Any]:
        """What a listing shows: key, where, size, created, model, library, device, precision, profiles, status."""
        m = self.manifest
        model, precision, target = m.get("source_model", m.get("model")), m.get("precision"), m.get("target")
        device = m.get("device")
        if device is None and isinstance(target, dict) and isinstance(target.get("compute_capabilities"), list):
            device = ", ".join(f"cc {cc}" for cc in target["compute_capabilities"]) or None
        profiles = m.get("profiles")
        return {
            "key": self.key,
            "path": str(self.path),
            "size": self.size,
            "created": self.created.isoformat() if self.created else None,
            "model": _text(model.get("path") if isinstance(model, dict) else model),
            "library": _text(m.get("library")),
            "library_version": _text(m.get("library_version")),
            "device": _text(device),
            "precision": _text(precision.get("precision") if isinstance(precision, dict) else precision),
            "profiles": len(profiles) if isinstance(profiles, list) else profiles if _is_int(profiles) else None,
            "status": "ok" if self.ok else "damaged",
            "reason": self.damaged,
        }


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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

        Intact: the manifest parses, names this key, and the plan's size and sha256 match it (the
        plan is read once to hash it).
        """
        path = self.entry_dir(key)
        for _ in range(3):
            before = _ident(path, changes=True)
            if before is None:
                return None
            entry = self._read_entry(key, path, verify=True)
            if entry.ok:
                return entry
            if _ident(path, changes=True) != before:
                continue  # replaced or removed by another process while it was checked: look again
            logger.warning("Engine cache entry %s is damaged (%s); removing it, the engine will be rebuilt.",
                           path, entry.damaged)
            self._remove(path, expect=before[:2])
            return None
        return None

    def _read_entry(self, key: str, path: Path, *, verify: bool) -> CacheEntry:
        """The entry at ``path`` with ``damaged`` set to why it cannot be used (hashes the plan if ``verify``)."""
        manifest: dict[str, Any] = {}
        created = _mtime(path)
        size = 0
        try:
            size = (path / PLAN_FILE).stat().st_size
        except OSError:
            pass

        def bad(reason: str) -> CacheEntry:
            return CacheEntry(key, path, size, created, manifest, reason)

        if not path.is_dir():
            return bad("it is not a folder")
        try:
            text = (path / MANIFEST_FILE).read_text(encoding="utf-8")
        except FileNotFoundError:
            return bad(f"{MANIFEST_FILE} is missing (an interrupted write or a partial copy)")
        except (OSError, UnicodeDecodeError) as exc:
            return bad(f"{MANIFEST_FILE} cannot be read: {exc}")
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            return bad(f"{MANIFEST_FILE} is not valid JSON: {exc}")
        if not isinstance(loaded, dict):
            return bad(f"{MANIFEST_FILE} holds a {type(loaded).__name__}, expected an object")
        manifest = loaded
        created = _parse_time(manifest.get("created")) or created
        if manifest.get("cache_key") != key:
            return bad(f"its manifest belongs to key {manifest.get('cache_key')!r}, not this one (a foreign entry)")
        want_sha, want_size = manifest.get("plan_sha256"), manifest.get("plan_bytes")
        if not isinstance(want_sha, str) or not _is_int(want_size):
            return bad(f"{MANIFEST_FILE} lacks plan_sha256 or plan_bytes")
        plan = path / PLAN_FILE
        try:
            st = plan.stat()
        except OSError:
            return bad(f"{PLAN_FILE} is missing")
        if not stat.S_ISREG(st.st_mode):
            return bad(f"{PLAN_FILE} is not a regular file")
        if st.st_size != want_size:
            return bad(f"{PLAN_FILE} has {st.st_size} bytes, its manifest says {want_size} (truncated or replaced)")
        if verify:
            try:
                got_sha, _ = file_sha256(plan)
            except OSError as exc:
                return bad(f"{PLAN_FILE} cannot be read: {exc}")
            if got_sha != want_sha:
                return bad(f"{PLAN_FILE} has sha256 {got_sha[:12]}…, its manifest says {want_sha[:12]}… (corrupt)")
        return CacheEntry(key, path, size, created, manifest)

    def entries(self, *, verify: bool = False) -> list[CacheEntry]:
        """Every entry, newest first; damaged ones are listed with the reason, not removed.

        Without ``verify`` the plan's size is checked but not its sha256 (fast on large caches).
        """
        found = [self._read_entry(key, path, verify=verify) for key, path in self._entry_dirs()]
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
            text = json.dumps(record, indent=2, allow_nan=False, default=_json_default) + "\n"
        except ValueError as exc:
            raise InvalidArgumentError(f"The manifest of cache entry {key[:12]} is not strict JSON: {exc}.") from exc
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=self.root))
        try:
            _write_synced(tmp / PLAN_FILE, plan)
            _write_synced(tmp / MANIFEST_FILE, text.encode("utf-8"))
            _fsync_dir(tmp)
            for _ in range(10):
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
                _fsync_dir(target.parent)
                _fsync_dir(self.root)
                logger.debug("cached %d-byte plan as %s", len(plan), target)
                return CacheEntry(key, target, len(plan), _parse_time(record["created"]), record)
            raise EnginekitError(f"Could not store engine cache entry '{target}': it kept changing under "
                                 "concurrent writers.", hint="Try again.")
        finally:
            if tmp.exists():
                _remove_tree(tmp)

    # -- removal and export -------------------------------------------------------------------

    def select(self, keys: Iterable[str] | None = None, older_than: timedelta | None = None, *,
               now: datetime | None = None) -> list[CacheEntry]:
        """Entries that :meth:`clear` with the same arguments removes (all when both are None)."""
        wanted = None if keys is None else {check_key(k) for k in keys}
        cutoff = None if older_than is None else (now or datetime.now(timezone.utc)) - older_than
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

        Also removes temp folders left by crashed writers (untouched for :data:`STALE_TEMP_AGE`)
        and empty shard folders. Returns how many entries were removed.
        """
        removed = sum(self._remove(e.path) for e in self.select(keys, older_than, now=now))
        if self.root.is_dir():
            stale = (now or datetime.now(timezone.utc)).timestamp() - STALE_TEMP_AGE.total_seconds()
            for p in self.root.iterdir():
                if p.name.startswith((_TMP_PREFIX, _TRASH_PREFIX)) and _last_change(p) < stale:
                    logger.info("removing leftover %s", p)
                    _remove_tree(p)
                elif len(p.name) == 2 and p.is_dir():
                    try:
                        p.rmdir()  # only when empty
                    except OSError:
                        pass
        return removed

    def _remove(self, path: Path, *, expect: tuple[int, ...] | None = None) -> bool:
        """Move an entry out of its place in one step, then delete it. ``expect``: the (dev, inode) checked."""
        trash = self.root / f"{_TRASH_PREFIX}{uuid.uuid4().hex}"
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
        _remove_tree(trash)
        return True

    def export(self, key: str, dest_plan: str | Path) -> tuple[Path, Path]:
        """Copy the plan of ``key`` to ``dest_plan`` and its manifest to ``<dest_plan>.json``, atomically.

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
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, open(entry.plan_path, "rb") as src:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if h.hexdigest() != entry.manifest["plan_sha256"]:
                raise CacheEntryDamagedError(f"Cached plan '{entry.plan_path}' changed while it was exported.",
                                             hint="Build the engine again.")
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        manifest_path = dest.with_name(dest.name + ".json")
        atomic_write_text(manifest_path, json.dumps(entry.manifest, indent=2) + "\n")
        return dest, manifest_path


# --- file helpers ----------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
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


def _ident(path: Path, *, changes: bool = False) -> tuple[int, ...] | None:
    """(device, inode), plus the change time with ``changes`` (a rename into place sets it); None if absent."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns) if changes else (st.st_dev, st.st_ino)


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    except OSError:
        return None


def _last_change(path: Path) -> float:
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


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
