"""Feeds: ``--input`` parsing, seeded random data, .npz/.json load and save, feed validation.

Never uses pickle: .npz files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import stat
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from enginekit.errors import FeedError, InvalidArgumentError
from enginekit.tensors import TensorSpec, describe_array, normalize_dtype, shape_matches

if TYPE_CHECKING:
    from enginekit.settings import FeedSettings

log = logging.getLogger(__name__)

_DIMS_RE = re.compile(r"^\d+(?:[x,]\d+)*$|^$", re.ASCII)

# A feed (all inputs together) larger than this is refused before any allocation: a fixed cap, not the memory
# free right now, so that the same command is accepted or refused on every machine.
MAX_FEED_BYTES = 16 * 2**30
# JSON feeds: text larger than this is refused before parsing (use .npz for big feeds).
MAX_JSON_BYTES = 1 * 2**30


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
    raw_dims = re.split(r"[x,]", dims_text) if dims_text else []
    if any(len(d.lstrip("0")) > 19 for d in raw_dims):  # int() of thousands of digits is refused, and slow
        raise InvalidArgumentError(f"--input {text[:80]!r}: a dim has more than 19 digits; {usage}.")
    shape = tuple(int(d) for d in raw_dims)
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
    from enginekit.errors import did_you_mean

    known = [s.name for s in specs]
    for n in names:
        if n not in known:
            raise FeedError(f"{kind} names input {n!r}, which the model does not have{did_you_mean(n, known)}. "
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


def feed_nbytes(shape: Sequence[int], dtype: str | np.dtype[Any]) -> int:
    """Bytes an array of ``shape`` and ``dtype`` takes, computed with Python ints (no overflow)."""
    return math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize


def check_feed_size(arrays: Mapping[str, tuple[Sequence[int], str | np.dtype[Any]]], *, what: str = "The feed") -> None:
    """Refuse a feed of ``{name: (shape, dtype)}`` larger than :data:`MAX_FEED_BYTES`, before allocating it."""
    sizes = {name: feed_nbytes(shape, dtype) for name, (shape, dtype) in arrays.items()}
    total = sum(sizes.values())
    if total > MAX_FEED_BYTES:
        name = max(sizes, key=lambda n: sizes[n])
        shape, dtype = arrays[name]
        dims = "x".join(str(d) for d in shape)
        dims = dims if len(dims) <= 80 else dims[:77] + "..."
        raise FeedError(f"{what} would take {_bytes(total)} (input {name!r}: {dims} {dtype}, {_bytes(sizes[name])}); "
                        f"enginekit refuses feeds above {_bytes(MAX_FEED_BYTES)}. Check the --input dims or the "
                        "--dynamic ranges; give smaller shapes.")


def _bytes(n: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            value = n / size
            return f"{value:.3g} {unit}" if value < 1e6 else f"{value:.3e} {unit}"
    return f"{n} bytes"


def check_seed(seed: int, flag: str = "--seed") -> None:
    """numpy's generators take non-negative seeds only."""
    if seed < 0:
        raise InvalidArgumentError(f"{flag} {seed}: must be >= 0 (numpy's random generators take non-negative "
                                   "seeds).")


def random_feed(
    specs: Sequence[TensorSpec],
    shapes: Mapping[str, tuple[int, ...]],
    *,
    seed: int = 1,
    ranges: Sequence[ValueRange] = (),
) -> dict[str, np.ndarray]:
    """Seeded random data for every input; integer inputs get integer values in range (inclusive).

    Raises:
        FeedError: an input type that has no random data (string, bfloat16, ...), or a feed above
            :data:`MAX_FEED_BYTES`.
        InvalidArgumentError: a negative seed, or a value range the input's type cannot hold.
    """
    _check_known("--val-range", [r.name for r in ranges if r.name], specs)
    check_seed(seed)
    for spec in specs:
        if spec.dtype not in _RANDOM_DTYPES:
            raise FeedError(f"Input {spec.name!r} has type {spec.dtype}; enginekit makes random feeds for numeric "
                            f"and bool inputs only ({', '.join(_RANDOM_DTYPES)}).",
                            hint="Give the data with --load-inputs, or run the model with another tool.")
    check_feed_size({s.name: (shapes[s.name], s.dtype) for s in specs}, what="The random feed")
    rng = np.random.default_rng(seed)
    feed: dict[str, np.ndarray] = {}
    for spec in specs:
        chosen = [r for r in ranges if r.name == spec.name] or [r for r in ranges if r.name is None]
        low, high = (chosen[-1].low, chosen[-1].high) if chosen else default_range(spec)
        shape = shapes[spec.name]
        dtype = np.dtype(spec.dtype)
        try:
            feed[spec.name] = _random_array(rng, spec.name, dtype, shape, low, high)
        except MemoryError as exc:
            raise FeedError(f"Not enough memory for the random feed of input {spec.name!r} "
                            f"({'x'.join(map(str, shape))} {dtype}, {_bytes(feed_nbytes(shape, dtype))}).",
                            hint="Give smaller --input dims.") from exc
        log.debug("random feed %s: %s in [%s, %s]", spec.name, describe_array(feed[spec.name]), low, high)
    return feed


_RANDOM_DTYPES = ("float32", "float16", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                  "uint64", "bool")


def _random_array(rng: np.random.Generator, name: str, dtype: np.dtype[Any], shape: tuple[int, ...],
                  low: float, high: float) -> np.ndarray:
    if dtype == np.bool_:
        lo_b, hi_b = max(math.ceil(low), 0), min(math.floor(high), 1)
        if lo_b > hi_b:
            raise InvalidArgumentError(f"--val-range for {name!r} holds no bool value (0 or 1).")
        return rng.integers(lo_b, hi_b, size=shape, endpoint=True).astype(bool)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        lo, hi = max(math.ceil(low), int(info.min)), min(math.floor(high), int(info.max))
        if lo > hi:
            raise InvalidArgumentError(f"--val-range for {name!r} holds no {dtype} value.")
        return rng.integers(lo, hi, size=shape, endpoint=True, dtype=dtype)
    fmax = float(np.finfo(dtype).max)
    if low < -fmax or high > fmax or not math.isfinite(high - low):
        raise InvalidArgumentError(f"--val-range {low:g},{high:g} for {name!r}: the range must fit {dtype} (at most "
                                   f"{fmax:.4g} in size) and HIGH - LOW must be finite; give a narrower range.")
    return rng.uniform(low, high, size=shape).astype(dtype)


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
    if not p.exists():
        raise FeedError(f"Data file {str(p)!r} does not exist.")
    require_regular_file(p, "Data file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as npz:
                check_feed_size({k: _npz_member_header(npz.zip, k) for k in npz.files}, what=f"{str(p)!r}")
                return {k: npz[k] for k in npz.files}
        if suffix == ".json":
            from enginekit import polygraphy_json as pg

            size = p.stat().st_size
            if size > MAX_JSON_BYTES:
                raise FeedError(f"{str(p)!r} holds {_bytes(size)} of JSON; enginekit reads JSON feeds up to "
                                f"{_bytes(MAX_JSON_BYTES)}. Save big feeds as .npz.")
            try:
                obj = json.loads(p.read_text(encoding="utf-8"))
            except RecursionError:
                raise FeedError(f"{str(p)!r}: the JSON is nested too deeply to read (arrays of thousands of "
                                "levels); a feed holds arrays of at most 64 dims.") from None
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
    except MemoryError as exc:
        raise FeedError(f"Not enough memory to read {str(p)!r} as {suffix} arrays.") from exc
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, RecursionError) as exc:
        # ValueError covers numpy's refusal of pickled object arrays and malformed JSON
        raise FeedError(f"Could not read {str(p)!r} as {suffix} arrays: {safe_reason(exc)}.") from exc
    raise FeedError(f"Data file {str(p)!r}: unsupported extension {suffix!r}; use .npz or .json.")


def require_regular_file(path: Path, what: str = "File") -> None:
    """Refuse anything but a regular file (after symlinks): reading a FIFO or a device could block or never end."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise FeedError(f"{what} {str(path)!r} cannot be read: {exc.strerror or type(exc).__name__}.") from exc
    if stat.S_ISDIR(mode):
        raise FeedError(f"{what} {str(path)!r} is a folder, expected a file.")
    if not stat.S_ISREG(mode):
        raise FeedError(f"{what} {str(path)!r} is not a regular file (a pipe, device or socket); enginekit reads "
                        "regular files only.", hint="Copy the data into a regular file first.")


def safe_reason(exc: BaseException, limit: int = 160) -> str:
    """An exception's text without anything it quotes from the file being read.

    Parsers put the offending bytes in quotes or brackets (numpy: ``Cannot parse header: b'...'``); the text
    is cut at the first quote or bracket, and to ``limit`` characters. JSON errors keep their position.
    """
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} (line {exc.lineno}, column {exc.colno})"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.start})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = (str(exc).splitlines() or [""])[0]
    cut = min((i for i in (text.find(c) for c in "'\"{[(<") if i >= 0), default=len(text))
    text = text[:cut].rstrip(" :,;=")[:limit]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _npz_member_header(archive: zipfile.ZipFile, key: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """(shape, dtype) an .npz member declares, read from its .npy header before the data is allocated."""
    member = f"{key}.npy" if f"{key}.npy" in archive.namelist() else key
    with archive.open(member) as fh:
        return _npy_header(fh)


def _npy_header(fh: IO[bytes]) -> tuple[tuple[int, ...], np.dtype[Any]]:
    from numpy.lib import format as npy

    version = npy.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = npy.read_array_header_1_0(fh)
    else:
        shape, _, dtype = npy.read_array_header_2_0(fh)
    return tuple(int(d) for d in shape), np.dtype(dtype)


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


def prepare_feed(specs: Sequence[TensorSpec], settings: FeedSettings) -> dict[str, np.ndarray]:
    """Feed from --load-inputs, or seeded random data at --input shapes; validated against the model."""
    if settings.load_inputs is not None:
        feed = load_arrays(settings.load_inputs)
        where = f"--load-inputs {settings.load_inputs}"
    else:
        feed = random_feed(specs, resolve_shapes(specs, settings.inputs), seed=settings.seed,
                           ranges=settings.val_ranges)
        where = "random feed"
    check_feed(specs, feed, where=where)
    if not settings.allow_nonfinite:
        check_finite(feed, where=where)
    return feed
