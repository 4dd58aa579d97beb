"""Read Polygraphy's JSON files (``polygraphy run --save-inputs`` / ``--save-outputs``) without Polygraphy.

Polygraphy encodes a numpy array as ``{"array": BASE64, "polygraphy_class": "ndarray"}`` where BASE64 is the
output of ``np.save(..., allow_pickle=False)``; older versions mark the type with
``"__polygraphy_encoded_ndarray": "polygraphy_serialized_json_type"`` and may store latin-1 text or an .npz
archive instead. Arrays are read with ``allow_pickle=False`` and object arrays are refused: nothing in these
files is ever executed.

* ``--save-inputs`` writes a list of feeds, one per iteration: ``[{name: array}, ...]``.
* ``--save-outputs`` writes ``RunResults``: ``{"lst": [[runner_name, [IterationResult, ...]], ...]}`` where an
  ``IterationResult`` is ``{"outputs": {name: LazyArray}, "runtime": s, "runner_name": ...}`` and a
  ``LazyArray`` is ``{"values": array}``.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from enginekit.errors import FeedError

log = logging.getLogger(__name__)

TYPE_KEY = "polygraphy_class"
_LEGACY_PREFIX = "__polygraphy_encoded_"
_LEGACY_MARKER = "polygraphy_serialized_json_type"
_ARRAY_TYPES = ("ndarray",)
_LAZY_TYPES = ("LazyArray", "LazyNumpyArray")


def type_name(obj: object) -> str | None:
    """The Polygraphy type an encoded JSON object stands for (``"ndarray"``, ``"RunResults"``, ...), else None."""
    if not isinstance(obj, Mapping):
        return None
    name = obj.get(TYPE_KEY)
    if isinstance(name, str):
        return name
    for key, value in obj.items():
        if isinstance(key, str) and key.startswith(_LEGACY_PREFIX) and value == _LEGACY_MARKER:
            return key[len(_LEGACY_PREFIX):]
    return None


def is_encoded_array(obj: object) -> bool:
    return type_name(obj) in (*_ARRAY_TYPES, *_LAZY_TYPES, "Tensor")


def _np_load(raw: bytes, where: str) -> np.ndarray:
    try:
        loaded = np.load(io.BytesIO(raw), allow_pickle=False)
    except ValueError as exc:
        # numpy refuses object arrays without allow_pickle; the message says "Object arrays cannot be loaded"
        raise FeedError(f"{where}: the array cannot be read without unpickling Python objects ({exc}); enginekit "
                        "reads numeric arrays only and never unpickles.") from exc
    if isinstance(loaded, np.lib.npyio.NpzFile):  # old Polygraphy versions stored an .npz archive
        with loaded:
            if not loaded.files:
                raise FeedError(f"{where}: the encoded .npz archive holds no array.")
            loaded = loaded[loaded.files[0]]
    arr = np.asarray(loaded)
    if arr.dtype.hasobject:
        raise FeedError(f"{where}: the array holds Python objects ({arr.dtype}); only numeric arrays are read.")
    return arr


def decode_array(obj: object, where: str) -> np.ndarray:
    """Decode one Polygraphy-encoded array (``ndarray`` or ``LazyArray``)."""
    kind = type_name(obj)
    if kind in _LAZY_TYPES and isinstance(obj, Mapping):
        return decode_array(obj.get("values"), where)
    if kind in _ARRAY_TYPES and isinstance(obj, Mapping):
        data = obj.get("array")
        if not isinstance(data, str):
            raise FeedError(f"{where}: a Polygraphy ndarray without its 'array' text.")
        try:
            raw = base64.b64decode(data.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raw = data.encode("latin-1")  # Polygraphy before base64
        return _np_load(raw, where)
    if kind == "Tensor":
        raise FeedError(f"{where}: a torch.Tensor saved by Polygraphy; reading it needs torch.load, which enginekit "
                        "does not do. Save numpy arrays instead (Polygraphy saves numpy arrays unless the "
                        "runner returns torch tensors).")
    found = f"a Polygraphy {kind}" if kind else f"a {type(obj).__name__}"
    raise FeedError(f"{where}: expected a Polygraphy-encoded array, found {found}.")


def _arrays(mapping: object, where: str) -> dict[str, np.ndarray]:
    if not isinstance(mapping, Mapping):
        raise FeedError(f"{where}: expected an object mapping names to arrays, found a {type(mapping).__name__}.")
    return {str(name): decode_array(value, f"{where}, array {name!r}") for name, value in mapping.items()
            if name != TYPE_KEY}


def is_feed_list(obj: object) -> bool:
    """True for ``polygraphy run --save-inputs`` content: a list of {name: encoded array}."""
    return (isinstance(obj, list) and bool(obj) and all(isinstance(f, Mapping) for f in obj)
            and all(is_encoded_array(v) for f in obj for k, v in f.items() if k != TYPE_KEY))


def read_feeds(obj: Sequence[Any], path: Path, iteration: int | None = None) -> dict[str, np.ndarray]:
    """One feed of a ``--save-inputs`` list: ``iteration`` (default: the first, with a warning when there are more)."""
    where = f"{str(path)!r}"
    count = len(obj)
    index = _pick_iteration(count, iteration, where, "feeds")
    if iteration is None and count > 1:
        log.warning("%s holds %d Polygraphy feeds (one per iteration); using the first (iteration 0)", path, count)
    return _arrays(obj[index], f"{where}, feed {index}")


def _pick_iteration(count: int, iteration: int | None, where: str, what: str) -> int:
    if count == 0:
        raise FeedError(f"{where}: holds no {what}.")
    index = 0 if iteration is None else iteration
    if not 0 <= index < count:
        raise FeedError(f"{where}: iteration {index} does not exist; it holds {count} {what} (iterations 0 to "
                        f"{count - 1}).")
    return index


@dataclass(frozen=True)
class RunnerResults:
    """One runner of a Polygraphy ``RunResults``: its name and its iterations (still encoded)."""

    name: str
    iterations: tuple[Mapping[str, Any], ...]


def is_run_results(obj: object) -> bool:
    return type_name(obj) == "RunResults"


def runners(obj: Mapping[str, Any], path: Path) -> list[RunnerResults]:
    """The runners of a ``--save-outputs`` RunResults, in the order Polygraphy ran them."""
    where = f"{str(path)!r}"
    entries = obj.get("lst")
    if not isinstance(entries, list):
        raise FeedError(f"{where}: Polygraphy RunResults without its 'lst' of runners.")
    found = []
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], list)):
            raise FeedError(f"{where}: a RunResults entry is not [runner_name, [iteration results]].")
        found.append(RunnerResults(str(entry[0]), tuple(entry[1])))
    return found


def select_runner(found: Sequence[RunnerResults], runner: str | None, where: str, flag: str) -> RunnerResults:
    """The runner named ``runner``: its exact name, else the one whose name contains it (``onnxrt``)."""
    names = [r.name for r in found]
    listing = ", ".join(repr(n) for n in names) or "(none)"
    if not found:
        raise FeedError(f"{where}: the Polygraphy results hold no runner.")
    if runner is None:
        if len(found) == 1:
            return found[0]
        raise FeedError(f"{where} holds the results of {len(found)} Polygraphy runners: {listing}; choose one "
                        f"with {flag} NAME (its name, or a part of it that no other runner's name contains, "
                        "such as onnxrt or trt).")
    exact = [r for r in found if r.name == runner]
    partial = exact or [r for r in found if runner in r.name]
    if len(partial) == 1:
        return partial[0]
    why = "matches several" if partial else "matches none"
    raise FeedError(f"{where}: {flag} {runner!r} {why} of its Polygraphy runners: {listing}.")


def read_outputs(
    obj: Mapping[str, Any], path: Path, *, runner: str | None = None, iteration: int | None = None,
    runner_flag: str = "--runner",
) -> dict[str, np.ndarray]:
    """The outputs of one runner and iteration of a ``polygraphy run --save-outputs`` file.

    With several runners, ``runner`` must pick one (else a FeedError lists them); ``iteration`` defaults to the
    first, with a warning when there are more.
    """
    where = f"{str(path)!r}"
    chosen = select_runner(runners(obj, path), runner, where, runner_flag)
    count = len(chosen.iterations)
    index = _pick_iteration(count, iteration, f"{where}, runner {chosen.name!r}", "iterations")
    if iteration is None and count > 1:
        log.warning("%s: runner %s has %d iterations; using the first (iteration 0)", path, chosen.name, count)
    result = chosen.iterations[index]
    if not isinstance(result, Mapping) or "outputs" not in result:
        raise FeedError(f"{where}: iteration {index} of runner {chosen.name!r} is not a Polygraphy IterationResult.")
    log.info("%s: outputs of Polygraphy runner %s, iteration %d", path, chosen.name, index)
    return _arrays(result["outputs"], f"{where}, runner {chosen.name!r} iteration {index}")
