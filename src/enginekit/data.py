"""Feeds: ``--input`` parsing, seeded random data, .npz/.json load and save, feed validation.

Never uses pickle: .npz files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from enginekit.errors import FeedError, InvalidArgumentError
from enginekit.tensors import TensorSpec, describe_array, normalize_dtype, shape_matches

log = logging.getLogger(__name__)

_DIMS_RE = re.compile(r"^\d+(?:[x,]\d+)*$|^$")


@dataclass(frozen=True)
class InputShape:
    """A user's ``--input NAME:DIMS[:DTYPE]``."""

    name: str
    shape: tuple[int, ...]
    dtype: str | None = None

    def to_arg(self) -> str:
        dims = "x".join(str(d) for d in self.shape)
        return f"{self.name}:{dims}" + (f":{self.dtype}" if self.dtype else "")


@dataclass(frozen=True)
class ValueRange:
    """``--val-range [NAME:]LOW,HIGH``; name None applies to every input."""

    name: str | None
    low: float
    high: float


def parse_input_shape(text: str) -> InputShape:
    """Parse ``NAME:DIMS[:DTYPE]``, e.g. ``x:1x3x224x224`` or ``ids:1,128:int64``.

    The name may itself contain ':' (``input:0:1x3:float32``); dims and dtype are taken from the right.
    A scalar input is written with empty dims (``temperature::float32``).
    """
    usage = "expected NAME:DIMS[:DTYPE], e.g. x:1x3x224x224 or ids:1x128:int64"
    parts = text.split(":")
    if len(parts) < 2:
        raise InvalidArgumentError(f"--input {text!r}: missing ':' between name and dims; {usage}.")
    dtype: str | None = None
    if len(parts) >= 3 and not _DIMS_RE.match(parts[-1]):
        dtype = normalize_dtype(parts[-1])
        if dtype is None:
            raise InvalidArgumentError(f"--input {text!r}: unknown dtype {parts[-1]!r}; {usage}.")
        parts = parts[:-1]
    dims_text = parts[-1]
    name = ":".join(parts[:-1])
    if not name:
        raise InvalidArgumentError(f"--input {text!r}: empty input name; {usage}.")
    if not _DIMS_RE.match(dims_text):
        raise InvalidArgumentError(
            f"--input {text!r}: dims {dims_text!r} must be positive integers joined by 'x'; {usage}."
        )
    shape = tuple(int(d) for d in re.split(r"[x,]", dims_text)) if dims_text else ()
    if any(d <= 0 for d in shape):
        raise InvalidArgumentError(f"--input {text!r}: every dim must be >= 1; {usage}.")
    return InputShape(name, shape, dtype)


def parse_value_range(text: str) -> ValueRange:
    """Parse ``[NAME:]LOW,HIGH``."""
    usage = "expected [NAME:]LOW,HIGH, e.g. x:0,255 or -1,1"
    name, _, rng = text.rpartition(":")
    try:
        low_s, high_s = rng.split(",")
        low, high = float(low_s), float(high_s)
    except ValueError:
        raise InvalidArgumentError(f"--val-range {text!r}: {usage}.") from None
    if not (np.isfinite(low) and np.isfinite(high)) or low > high:
        raise InvalidArgumentError(f"--val-range {text!r}: need finite LOW <= HIGH; {usage}.")
    return ValueRange(name or None, low, high)


def _check_known(kind: str, names: Sequence[str], specs: Sequence[TensorSpec]) -> None:
    from enginekit.registry import suggest

    known = [s.name for s in specs]
    for n in names:
        if n not in known:
            raise FeedError(f"{kind} names input {n!r}, which the model does not have{suggest(n, known)}. "
                            f"Model inputs: {', '.join(known)}.")


def resolve_shapes(specs: Sequence[TensorSpec], given: Sequence[InputShape]) -> dict[str, tuple[int, ...]]:
    """Concrete shape for every input: from ``--input`` or, when fully static, from the model."""
    _check_known("--input", [g.name for g in given], specs)
    by_name = {g.name: g for g in given}
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        g = by_name.get(spec.name)
        if g is not None:
            if not shape_matches(spec, g.shape):
                raise FeedError(
                    f"--input {g.to_arg()}: shape {list(g.shape)} does not fit input {spec.name!r} "
                    f"of shape {spec.shape_str()} (rank and fixed dims must match)."
                )
            if g.dtype and g.dtype != spec.dtype:
                raise FeedError(f"--input {g.to_arg()}: dtype {g.dtype} differs from the model's {spec.dtype} "
                                f"for input {spec.name!r}.")
            shapes[spec.name] = g.shape
            continue
        if spec.shape is None:
            raise FeedError(f"Input {spec.name!r} has unknown rank; give its shape with --input {spec.name}:DIMS.")
        sym = spec.symbolic_dims()
        if sym:
            axis, dim = sym[0]
            example = "x".join(str(d) if isinstance(d, int) else "1" for d in spec.shape)
            raise FeedError(
                f"Input {spec.name!r} has symbolic dim {dim!r} at axis {axis} (shape {spec.shape_str()}); "
                f"give a concrete shape, e.g. --input {spec.name}:{example}."
            )
        shapes[spec.name] = tuple(int(d) for d in spec.shape)
    return shapes


def default_range(spec: TensorSpec) -> tuple[float, float]:
    """Sensible random range: [0, 1) for floats; ids small non-negative ints; masks all ones."""
    if spec.dtype == "bool":
        return (0, 1)
    if spec.dtype.startswith(("int", "uint")):
        lname = spec.name.lower()
        if "mask" in lname:
            return (1, 1)
        if "type" in lname or "segment" in lname:
            return (0, 1)
        return (0, 100)
    return (0.0, 1.0)


def random_feed(
    specs: Sequence[TensorSpec],
    shapes: Mapping[str, tuple[int, ...]],
    *,
    seed: int = 1,
    ranges: Sequence[ValueRange] = (),
) -> dict[str, np.ndarray]:
    """Seeded random data for every input; integer inputs get integer values in range (inclusive)."""
    _check_known("--val-range", [r.name for r in ranges if r.name], specs)
    rng = np.random.default_rng(seed)
    feed: dict[str, np.ndarray] = {}
    for spec in specs:
        chosen = [r for r in ranges if r.name == spec.name] or [r for r in ranges if r.name is None]
        low, high = (chosen[-1].low, chosen[-1].high) if chosen else default_range(spec)
        shape = shapes[spec.name]
        dtype = np.dtype(spec.dtype)
        if dtype == np.bool_:
            arr = rng.integers(int(low), int(high) + 1, size=shape).astype(bool)
        elif np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            lo, hi = max(int(np.ceil(low)), info.min), min(int(np.floor(high)), info.max)
            if lo > hi:
                raise InvalidArgumentError(f"--val-range for {spec.name!r} holds no {dtype} value.")
            arr = rng.integers(lo, hi, size=shape, endpoint=True, dtype=dtype)
        else:
            arr = rng.uniform(low, high, size=shape).astype(dtype)
        feed[spec.name] = arr
        log.debug("random feed %s: %s in [%s, %s]", spec.name, describe_array(arr), low, high)
    return feed


def check_feed(specs: Sequence[TensorSpec], feed: Mapping[str, np.ndarray], *, where: str = "feed") -> None:
    """Raise FeedError naming expected and received values when the feed does not fit the inputs."""
    expected = {s.name: s for s in specs}
    missing = [n for n in expected if n not in feed]
    extra = [n for n in feed if n not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected {', '.join(extra)}")
        raise FeedError(f"{where}: input names do not match the model ({'; '.join(parts)}). "
                        f"Model inputs: {', '.join(expected) or '(none)'}.")
    for name, spec in expected.items():
        arr = feed[name]
        if not isinstance(arr, np.ndarray):
            raise FeedError(f"{where}: input {name!r} is a {type(arr).__name__}, expected a numpy array.")
        if str(arr.dtype) != spec.dtype:
            raise FeedError(f"{where}: input {name!r} has dtype {arr.dtype}, the model expects {spec.dtype}.")
        if not shape_matches(spec, tuple(arr.shape)):
            raise FeedError(f"{where}: input {name!r} has shape {list(arr.shape)}, the model expects "
                            f"{spec.shape_str()}.")


def check_finite(feed: Mapping[str, np.ndarray], *, where: str = "feed") -> None:
    """Raise FeedError when a floating-point input holds NaN or Inf."""
    for name, arr in feed.items():
        if np.issubdtype(arr.dtype, np.floating) and arr.size and not np.isfinite(arr).all():
            n_nan, n_inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
            raise FeedError(f"{where}: input {name!r} holds {n_nan} NaN and {n_inf} Inf values; "
                            "models are compared on finite data (pass --allow-nonfinite to feed it anyway).")


def load_arrays(
    path: str | Path, *, runner: str | None = None, iteration: int | None = None, runner_flag: str = "--runner"
) -> dict[str, np.ndarray]:
    """Read named arrays from ``.npz`` (no pickle) or ``.json``.

    JSON holds ``{name: nested list}`` or ``{name: {"data": nested list, "dtype": "float32"}}``, or is a file
    Polygraphy wrote (see :mod:`enginekit.polygraphy_json`): ``polygraphy run --save-inputs`` (a list of feeds;
    ``iteration``, default the first) or ``--save-outputs`` (results per runner and iteration: ``runner`` picks
    one by name, required when there are several; ``runner_flag`` names the option in that error).
    """
    p = Path(path)
    if not p.is_file():
        raise FeedError(f"Data file {str(p)!r} does not exist or is not a file.")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        if suffix == ".json":
            from enginekit import polygraphy_json as pg

            obj = json.loads(p.read_text())
            if pg.is_run_results(obj):
                return pg.read_outputs(obj, p, runner=runner, iteration=iteration, runner_flag=runner_flag)
            if pg.is_feed_list(obj):
                return pg.read_feeds(obj, p, iteration)
            if pg.type_name(obj) is not None:
                raise FeedError(f"{str(p)!r} is a Polygraphy {pg.type_name(obj)}, not inputs or outputs; give a "
                                "file written by `polygraphy run --save-inputs` or `--save-outputs`.")
            return _arrays_from_json(obj, p)
    except FeedError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        # ValueError covers numpy's refusal of pickled object arrays and malformed JSON
        raise FeedError(f"Could not read {str(p)!r} as {suffix} arrays: {exc}") from exc
    raise FeedError(f"Data file {str(p)!r}: unsupported extension {suffix!r}; use .npz or .json.")


def _arrays_from_json(obj: object, p: Path) -> dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise FeedError(f"{str(p)!r}: expected a JSON object mapping input names to arrays.")
    from enginekit.polygraphy_json import decode_array, is_encoded_array

    out: dict[str, np.ndarray] = {}
    for name, value in obj.items():
        dtype: str | None = None
        if is_encoded_array(value):  # {name: array} saved with Polygraphy's JSON encoder
            out[str(name)] = decode_array(value, f"{str(p)!r}, input {name!r}")
            continue
        if isinstance(value, dict):
            if "data" not in value:
                raise FeedError(f"{str(p)!r}: input {name!r} is an object without a 'data' field "
                                '(expected {"data": [...], "dtype": "float32"} or a plain nested list).')
            dtype = value.get("dtype")
            value = value["data"]
        try:
            arr = np.asarray(value)
            if dtype is not None:
                norm = normalize_dtype(str(dtype))
                if norm is None:
                    raise FeedError(f"{str(p)!r}: input {name!r} has unknown dtype {dtype!r}.")
                arr = arr.astype(norm)
            elif arr.dtype == np.float64:
                arr = arr.astype(np.float32)  # JSON numbers: float32 unless asked otherwise
        except (TypeError, ValueError) as exc:
            raise FeedError(f"{str(p)!r}: input {name!r} is not a rectangular numeric array ({exc}).") from exc
        if arr.dtype == object or arr.dtype.kind in "US":
            raise FeedError(f"{str(p)!r}: input {name!r} is not a rectangular numeric array.")
        out[str(name)] = arr
    return out


def save_arrays(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write arrays to ``.npz`` atomically (temp file + rename)."""
    from enginekit.fileutil import atomic_write_bytes

    p = check_npz_target(path)
    import io

    values = {k: np.asarray(v) for k, v in arrays.items()}
    for k, v in values.items():
        if v.dtype.hasobject:
            raise FeedError(f"Array {k!r} holds Python objects ({v.dtype}); only numeric arrays are saved (no pickle).")
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **values)
    try:
        atomic_write_bytes(p, buf.getvalue())
    except OSError as exc:
        raise InvalidArgumentError(f"Cannot write {str(p)!r}: {exc.strerror or exc}.") from exc
    return p


def check_npz_target(path: str | Path) -> Path:
    """Refuse a save path that is not a writable-looking .npz file name, before any work is done."""
    p = Path(path)
    if p.suffix.lower() != ".npz":
        raise InvalidArgumentError(f"{str(p)!r}: outputs and inputs are saved as .npz; use a .npz file name.")
    if p.is_dir():
        raise InvalidArgumentError(f"{str(p)!r} is a folder; give a .npz file name.")
    parent = next((q for q in p.parents if q.exists()), None)
    if parent is not None and not parent.is_dir():
        raise InvalidArgumentError(f"Cannot write {str(p)!r}: {str(parent)!r} is a file, not a folder.")
    return p
