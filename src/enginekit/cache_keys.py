"""Cache keys: a sha256 over what an engine is built from (model bytes, settings, content files, library, device).

Paths never enter the key: moving a model or renaming a calibration file finds the same engine; changing one
byte builds a new one. See :mod:`enginekit.cache` for the cache itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

from enginekit.errors import InvalidArgumentError, ModelLoadError, UserError

KEY_FORMAT = 1  # bump when what the key hashes changes: every old entry then misses
_CHUNK = 1 << 20
_KEY_RE = re.compile(r"[0-9a-f]{64}")


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
