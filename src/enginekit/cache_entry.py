"""Engine cache entries and their integrity checks (the manifest is sealed like the plan).

An entry folder holds ``engine.plan`` and ``manifest.json``. The manifest carries ``plan_sha256`` and
``plan_bytes`` for the plan, and ends with ``"manifest_sha256"``: the sha256 of the manifest file's exact
bytes with that digest written as 64 zeros. So a change to any byte of the manifest (a flipped bit, an edit)
or of the plan makes the entry damaged: it is never served, and the engine is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePath
from typing import Any

from enginekit.cache_keys import file_sha256
from enginekit.errors import InvalidArgumentError, VerificationError

PLAN_FILE = "engine.plan"
MANIFEST_FILE = "manifest.json"
DIGEST_FIELD = "manifest_sha256"
CACHE_FIELDS = ("cache_key", "plan_sha256", "plan_bytes", "created", DIGEST_FIELD)
_PLACEHOLDER = "0" * 64
_SEAL_RE = re.compile(rb'[,{]\n  "' + DIGEST_FIELD.encode() + rb'": "([0-9a-f]{64})"\n}\n\Z')


class CacheEntryDamagedError(VerificationError):
    """A cached plan no longer matches its manifest (it changed after it was checked)."""


def seal_manifest(record: dict[str, Any]) -> bytes:
    """The manifest file's bytes: ``record`` as indented JSON, ending with its own ``manifest_sha256``.

    Raises:
        InvalidArgumentError: ``record`` is not strict JSON (NaN, infinity, objects).
    """
    body = {k: v for k, v in record.items() if k != DIGEST_FIELD}
    body[DIGEST_FIELD] = _PLACEHOLDER
    try:
        text = json.dumps(body, indent=2, allow_nan=False, ensure_ascii=True, default=_json_default) + "\n"
    except ValueError as exc:
        raise InvalidArgumentError(f"An engine cache manifest is not strict JSON: {exc}.") from exc
    data = text.encode("ascii")
    digest = hashlib.sha256(data).hexdigest()
    match = _SEAL_RE.search(data)
    assert match is not None  # json.dumps(indent=2) of a dict whose last key is DIGEST_FIELD
    return data[: match.start(1)] + digest.encode("ascii") + data[match.end(1):]


def unseal_manifest(data: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(manifest, None) when ``data`` is a sealed manifest whose digest matches, else (None, why not)."""
    match = _SEAL_RE.search(data)
    if match is None:
        return None, f"{MANIFEST_FILE} has no {DIGEST_FIELD} at its end (damaged, edited, or written by an " \
                     "older enginekit)"
    want = match.group(1).decode("ascii")
    got = hashlib.sha256(data[: match.start(1)] + _PLACEHOLDER.encode("ascii") + data[match.end(1):]).hexdigest()
    if got != want:
        return None, f"{MANIFEST_FILE} has sha256 {got[:12]}…, its {DIGEST_FIELD} says {want[:12]}… (damaged or edited)"
    try:
        loaded = json.loads(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"{MANIFEST_FILE} is not valid JSON: {exc}"
    if not isinstance(loaded, dict):
        return None, f"{MANIFEST_FILE} holds a {type(loaded).__name__}, expected an object"
    return loaded, None


def _json_default(value: Any) -> Any:
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


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


def read_entry(key: str, path: Path, *, verify: bool) -> CacheEntry:
    """The entry at ``path`` with ``damaged`` set to why it cannot be used.

    Always checks the manifest's seal, its key and the plan's size; with ``verify`` also the plan's sha256.
    """
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
        data = (path / MANIFEST_FILE).read_bytes()
    except FileNotFoundError:
        return bad(f"{MANIFEST_FILE} is missing (an interrupted write or a partial copy)")
    except OSError as exc:
        return bad(f"{MANIFEST_FILE} cannot be read: {exc}")
    loaded, why = unseal_manifest(data)
    if loaded is None:
        try:  # show what it claims in listings, but never trust it
            guess = json.loads(data)
            manifest = guess if isinstance(guess, dict) else {}
        except (UnicodeDecodeError, ValueError):
            pass
        return bad(why or "unreadable manifest")
    manifest = loaded
    created = parse_time(manifest.get("created")) or created
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


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    except OSError:
        return None


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
