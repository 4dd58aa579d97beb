"""TensorRT optimization profiles: ``--profile NAME:MIN:OPT:MAX`` and ``--profile-from FEEDS.npz|DIR``.

Pure Python and numpy (TensorRT is never imported here): parse the options, group them into profiles,
validate them against the model inputs before TensorRT sees them, derive a profile from real feeds,
and write profiles for trtexec and the engine manifest.

Profile indices in messages are 0-based, as TensorRT numbers them (``set_optimization_profile_async``).
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enginekit.errors import FeedError, InvalidArgumentError, UnknownNameError
from enginekit.tensors import TensorSpec

log = logging.getLogger(__name__)

Shape = tuple[int, ...]
USAGE = "expected NAME:MIN:OPT:MAX with dims joined by 'x', e.g. x:1x3x32x32:1x3x192x192:1x3x1472x1224"
_DIMS_RE = re.compile(r"^\d+(?:[xX,]\d+)*$")
_MAX_DIM = 2**31 - 1  # TensorRT dims are int32
_LABELS = ("MIN", "OPT", "MAX")


def _dims(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


@dataclass(frozen=True)
class ShapeRange:
    """MIN/OPT/MAX shapes of one input in one optimization profile."""

    name: str
    min: Shape
    opt: Shape
    max: Shape

    @property
    def rank(self) -> int:
        return len(self.opt)

    def shapes(self) -> tuple[Shape, Shape, Shape]:
        return (self.min, self.opt, self.max)

    def contains(self, shape: Sequence[int]) -> bool:
        """True when a concrete ``shape`` lies within [MIN, MAX] in every dim."""
        if len(shape) != len(self.min) or len(shape) != len(self.max):
            return False
        return all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max, strict=True))

    def to_arg(self) -> str:
        """The ``--profile`` value that gives this range back."""
        return f"{self.name}:{_dims(self.min)}:{_dims(self.opt)}:{_dims(self.max)}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShapeRange:
        """Read :meth:`to_dict` output back (e.g. from an engine manifest); malformed data is refused."""
        if not isinstance(data, Mapping) or not isinstance(data.get("name"), str):
            raise InvalidArgumentError(f"Profile shape entry {data!r}: expected {{'name': str, 'min': [...], "
                                       "'opt': [...], 'max': [...]}.")
        shapes: list[Shape] = []
        for key in ("min", "opt", "max"):
            value = data.get(key)
            if not isinstance(value, list | tuple) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in value
            ):
                raise InvalidArgumentError(f"Profile shape entry for {data['name']!r}: {key!r} must be a list of "
                                           f"positive ints, got {value!r}.")
            shapes.append(tuple(value))
        return cls(data["name"], shapes[0], shapes[1], shapes[2])


@dataclass(frozen=True)
class Profile:
    """One TensorRT optimization profile: a shape range per input."""

    shapes: tuple[ShapeRange, ...]

    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.shapes)

    def get(self, name: str) -> ShapeRange | None:
        return next((r for r in self.shapes if r.name == name), None)

    def contains(self, shapes: Mapping[str, Sequence[int]]) -> bool:
        """True when every given input shape lies within this profile (inputs it does not list are ignored)."""
        for name, shape in shapes.items():
            r = self.get(name)
            if r is not None and not r.contains(shape):
                return False
        return True

    def to_dict(self) -> dict[str, Any]:
        return {"shapes": [r.to_dict() for r in self.shapes]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        shapes = data.get("shapes") if isinstance(data, Mapping) else None
        if not isinstance(shapes, list | tuple):
            raise InvalidArgumentError(f"Profile entry {data!r}: expected {{'shapes': [...]}}.")
        return cls(tuple(ShapeRange.from_dict(s) for s in shapes))


# --------------------------------------------------------------------------------------------- parsing


def _parse_dims(text: str, label: str, field: str) -> Shape:
    field = field.strip()
    if not field:
        return ()  # a scalar input: NAME:::
    if not _DIMS_RE.match(field):
        why = " (-1 is not allowed: a profile gives concrete sizes)" if "-" in field else ""
        raise InvalidArgumentError(
            f"--profile {text!r}: {label} {field!r} must be positive integers joined by 'x'{why}; {USAGE}."
        )
    digits = re.split(r"[xX,]", field)
    for axis, d in enumerate(digits):
        if len(d) > 19:  # int() refuses more than 4300 digits (ValueError), and no dim needs 20
            raise InvalidArgumentError(
                f"--profile {text[:80]!r}: {label} dim {axis} has {len(d)} digits; every dim must be between 1 "
                f"and {_MAX_DIM}."
            )
    shape = tuple(int(d) for d in digits)
    for axis, d in enumerate(shape):
        if d < 1 or d > _MAX_DIM:
            raise InvalidArgumentError(
                f"--profile {text!r}: {label} dim {axis} is {d}; every dim must be between 1 and {_MAX_DIM}."
            )
    return shape


def parse_shape_range(text: str) -> ShapeRange:
    """Parse one ``--profile NAME:MIN:OPT:MAX`` value.

    The name may contain ':' (``input:0:1x3:1x3:4x3``): the last three ':'-separated fields are the shapes.
    Dims are joined by 'x' or ','. Zero, negative and ``-1`` dims are refused here.
    """
    parts = text.split(":")
    if len(parts) < 4:
        raise InvalidArgumentError(
            f"--profile {text!r}: got {len(parts)} ':'-separated field(s), need 4; {USAGE}. "
            "A name containing ':' is fine: the last three fields are the shapes."
        )
    name = ":".join(parts[:-3]).strip()
    if not name:
        raise InvalidArgumentError(f"--profile {text!r}: empty input name; {USAGE}.")
    mn, opt, mx = (_parse_dims(text, label, f) for label, f in zip(_LABELS, parts[-3:], strict=True))
    if not len(mn) == len(opt) == len(mx):
        raise InvalidArgumentError(
            f"--profile {text!r}: MIN, OPT and MAX must have the same rank, got {len(mn)}, {len(opt)} and {len(mx)}."
        )
    return ShapeRange(name, mn, opt, mx)


def parse_profiles(values: Sequence[str]) -> tuple[Profile, ...]:
    """Group repeated ``--profile`` values, in command-line order, into optimization profiles.

    Rule: a value whose input name already appears in the profile being built starts a new profile.
    So ``--profile x:... --profile y:... --profile x:... --profile y:...`` is 2 profiles (x and y in each),
    and ``--profile x:A --profile x:B`` is 2 profiles for x. No values: no profiles.
    """
    profiles: list[Profile] = []
    current: list[ShapeRange] = []
    for text in values:
        r = parse_shape_range(text)
        if any(c.name == r.name for c in current):
            profiles.append(Profile(tuple(current)))
            current = []
        current.append(r)
    if current:
        profiles.append(Profile(tuple(current)))
    return tuple(profiles)


def profiles_to_args(profiles: Sequence[Profile]) -> list[str]:
    """``["--profile", "x:...", ...]`` that :func:`parse_profiles` reads back as the same profiles.

    Exact for validated profiles (every profile lists the same inputs), as written to reproduce.sh.
    """
    return [tok for p in profiles for r in p.shapes for tok in ("--profile", r.to_arg())]


def trtexec_args(profile: Profile) -> list[str]:
    """``--minShapes=... --optShapes=... --maxShapes=...`` for one profile.

    trtexec builds several profiles when these three options are repeated, one group per profile.
    Names containing ':' or ',' are wrapped in single quotes, as trtexec expects (``'input:0':1x3``).
    """

    def one(r: ShapeRange, shape: Shape) -> str:
        name = f"'{r.name}'" if (":" in r.name or "," in r.name) else r.name
        return f"{name}:{_dims(shape)}"

    return [
        f"--{flag}Shapes=" + ",".join(one(r, r.shapes()[i]) for r in profile.shapes)
        for i, flag in enumerate(("min", "opt", "max"))
    ]


# ------------------------------------------------------------------------------------------ validation


def _symbolic_desc(spec: TensorSpec) -> str:
    if spec.shape is None:
        return "unknown rank"
    return "symbolic dims: " + ", ".join(f"dim {axis} {name!r}" for axis, name in spec.symbolic_dims())


def example_profile_arg(spec: TensorSpec) -> str:
    """An example ``--profile`` value from the model shape: batch (dim 0) 1/1/8, other symbolic dims 1/256/1024."""
    if spec.shape is None:
        return f"{spec.name}:MIN:OPT:MAX"
    rows = []
    for batch, other in ((1, 1), (1, 256), (8, 1024)):
        rows.append([d if isinstance(d, int) else (batch if axis == 0 else other) for axis, d in enumerate(spec.shape)])
    return f"{spec.name}:" + ":".join(_dims(r) for r in rows)


def missing_profiles_error(inputs: Sequence[TensorSpec]) -> InvalidArgumentError:
    """The error for a model with dynamic inputs and no ``--profile``: enginekit never guesses a size of 1."""
    dynamic = [s for s in inputs if s.is_dynamic]
    listed = "; ".join(f"{s.name!r} {s.shape_str()} ({_symbolic_desc(s)})" for s in dynamic)
    examples = " ".join(f"--profile {example_profile_arg(s)}" for s in dynamic)
    return InvalidArgumentError(
        f"The model has {len(dynamic)} dynamic input(s) and no optimization profile was given: {listed}. "
        "TensorRT needs MIN, OPT and MAX shapes for every dynamic input; enginekit does not guess them.",
        hint=f"Give a range per dynamic input, e.g. {examples} (MIN:OPT:MAX; use the sizes your data has), "
        "or take it from real inputs with --profile-from FEEDS.npz|DIR (a .npz of named arrays, or a folder "
        "of .npz files such as a calibration set).",
    )


def _check_range(i: int, r: ShapeRange, spec: TensorSpec) -> None:
    arg = f"--profile {r.to_arg()}"
    if not len(r.min) == len(r.opt) == len(r.max):
        raise InvalidArgumentError(f"Profile {i}, input {r.name!r}: MIN, OPT and MAX have ranks "
                                   f"{len(r.min)}, {len(r.opt)} and {len(r.max)} ({arg}).")
    if spec.shape is not None and len(spec.shape) != r.rank:
        raise InvalidArgumentError(
            f"Profile {i}, input {r.name!r}: the model input has rank {len(spec.shape)} (shape {spec.shape_str()}), "
            f"the profile gives rank {r.rank} ({arg})."
        )
    static_note = "" if spec.is_dynamic else (
        f" Input {r.name!r} is static: leave it out of --profile, or give its shape "
        f"{_dims([int(d) for d in spec.shape or ()])} as MIN, OPT and MAX."
    )
    for axis in range(r.rank):
        values = {label: shape[axis] for label, shape in zip(_LABELS, r.shapes(), strict=True)}
        if any(v < 1 for v in values.values()):
            raise InvalidArgumentError(f"Profile {i}, input {r.name!r}, dim {axis}: every size must be >= 1, got "
                                       f"MIN {values['MIN']}, OPT {values['OPT']}, MAX {values['MAX']} ({arg}).")
        fixed = spec.shape[axis] if spec.shape is not None else None
        if isinstance(fixed, int):
            wrong = [f"{label} {v}" for label, v in values.items() if v != fixed]
            if wrong:
                raise InvalidArgumentError(
                    f"Profile {i}, input {r.name!r}, dim {axis}: the model fixes this dim to {fixed} "
                    f"(shape {spec.shape_str()}), but the profile has {', '.join(wrong)} ({arg}).{static_note}"
                )
        elif not values["MIN"] <= values["OPT"] <= values["MAX"]:
            raise InvalidArgumentError(
                f"Profile {i}, input {r.name!r}, dim {axis}: need MIN <= OPT <= MAX, got "
                f"MIN {values['MIN']}, OPT {values['OPT']}, MAX {values['MAX']} ({arg})."
            )


def _check_named_dims(i: int, ranges: Sequence[ShapeRange], specs: Mapping[str, TensorSpec]) -> None:
    """Dims sharing an ONNX dim name are equal at run time: TensorRT requires their [MIN, MAX] to overlap."""
    seen: dict[str, tuple[str, int, int, int]] = {}
    for r in ranges:
        shape = specs[r.name].shape
        if shape is None:
            continue
        for axis, name in specs[r.name].symbolic_dims():
            if name == "?":
                continue
            lo, hi = r.min[axis], r.max[axis]
            if name not in seen:
                seen[name] = (r.name, axis, lo, hi)
                continue
            other, o_axis, o_lo, o_hi = seen[name]
            if max(lo, o_lo) > min(hi, o_hi):
                raise InvalidArgumentError(
                    f"Profile {i}: input {other!r} dim {o_axis} and input {r.name!r} dim {axis} share the symbolic "
                    f"dim {name!r}, so they are equal at run time, but their ranges do not overlap: "
                    f"[{o_lo}, {o_hi}] and [{lo}, {hi}]. Give them the same MIN/OPT/MAX."
                )


def validate_profiles(profiles: Sequence[Profile], inputs: Sequence[TensorSpec]) -> tuple[Profile, ...]:
    """Check profiles against the model inputs and complete them; raise before TensorRT sees a bad one.

    Checks, per profile: known input names (UnknownNameError with a suggestion), no input twice, rank equal
    to the model's, fixed dims equal to the model's in MIN/OPT/MAX (a fully static input may be listed only
    with its own shape three times), MIN <= OPT <= MAX per dim, every dynamic input covered, and dims that
    share an ONNX dim name have overlapping ranges. No profiles with dynamic inputs raises
    :func:`missing_profiles_error`; no profiles for a static model returns ``()``.

    Returned profiles list every model input in model order; static inputs not mentioned get
    MIN = OPT = MAX = the model shape. TensorRT needs ranges only for dynamic inputs and accepts a range
    equal to the static shape, so this is harmless and makes every profile self-describing in the manifest.
    """
    specs = list(inputs)
    dynamic = [s for s in specs if s.is_dynamic]
    if not profiles:
        if dynamic:
            raise missing_profiles_error(specs)
        return ()
    by_name = {s.name: s for s in specs}
    from enginekit.errors import did_you_mean

    out: list[Profile] = []
    for i, profile in enumerate(profiles):
        seen: set[str] = set()
        for r in profile.shapes:
            if r.name in seen:
                raise InvalidArgumentError(f"Profile {i} lists input {r.name!r} twice.")
            seen.add(r.name)
            spec = by_name.get(r.name)
            if spec is None:
                raise UnknownNameError(
                    f"Profile {i}: --profile {r.to_arg()} names input {r.name!r}, which the model does not have"
                    f"{did_you_mean(r.name, list(by_name))}. Model inputs: {', '.join(by_name) or '(none)'}."
                )
            _check_range(i, r, spec)
        missing = [s for s in dynamic if s.name not in seen]
        if missing:
            s = missing[0]
            raise InvalidArgumentError(
                f"Profile {i} of {len(profiles)} has no range for dynamic input {s.name!r} {s.shape_str()} "
                f"({_symbolic_desc(s)}); every profile needs MIN:OPT:MAX for every dynamic input "
                f"(missing: {', '.join(m.name for m in missing)}).",
                hint=f"Add e.g. --profile {example_profile_arg(s)} to that profile. Repeating an input name "
                "starts a new profile, so list each profile's inputs together.",
            )
        _check_named_dims(i, profile.shapes, by_name)
        complete: list[ShapeRange] = []
        for s in specs:
            given = profile.get(s.name)
            if given is None:  # static and not mentioned
                shape = tuple(int(d) for d in s.shape or ())
                given = ShapeRange(s.name, shape, shape, shape)
            complete.append(given)
        out.append(Profile(tuple(complete)))
    return tuple(out)


def select_profile(profiles: Sequence[Profile], shapes: Mapping[str, Sequence[int]]) -> int | None:
    """Index of the first profile whose ranges hold all the given input shapes, or None."""
    return next((i for i, p in enumerate(profiles) if p.contains(shapes)), None)


# ----------------------------------------------------------------------------------------- from feeds


def _opt_shape(shapes: Sequence[Shape]) -> Shape:
    """The most common shape; ties go to the largest (most elements, then the larger shape)."""
    counts = Counter(shapes)
    return max(counts, key=lambda s: (counts[s], math.prod(s), s))


def profiles_from_feeds(path: str | Path) -> Profile:
    """One profile from real inputs: a ``.npz`` of named arrays, or a folder of ``.npz`` files (many feeds).

    MIN and MAX are the per-dim min and max over the feeds; OPT is the most common full shape (ties: the
    largest). The result covers exactly the inputs in the feeds: validate it with :func:`validate_profiles`.
    Files are read one at a time (no pickle) and only their shapes are kept.
    """
    from enginekit.data import load_arrays

    p = Path(path)
    if p.is_dir():
        files = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() == ".npz")
        if not files:
            raise InvalidArgumentError(f"--profile-from {str(p)!r}: the folder holds no .npz files "
                                       "(expected one .npz of named input arrays per feed).")
    elif p.is_file():
        files = [p]
    else:
        raise InvalidArgumentError(f"--profile-from {str(p)!r} does not exist (give a .npz file or a folder of them).")
    per_file: list[tuple[Path, dict[str, Shape]]] = []
    names: list[str] = []
    for f in files:
        shapes = {k: tuple(int(d) for d in v.shape) for k, v in load_arrays(f).items()}
        if not shapes:
            raise FeedError(f"--profile-from: {str(f)!r} holds no arrays.")
        for name, shape in shapes.items():
            if any(d < 1 for d in shape):
                raise FeedError(f"--profile-from: {str(f)!r}: input {name!r} has shape {list(shape)} with an empty "
                                "dim; profile sizes must be >= 1.")
            if name not in names:
                names.append(name)
        per_file.append((f, shapes))
    log.debug("--profile-from %s: %d feed file(s), inputs %s", p, len(files), names)
    ranges: list[ShapeRange] = []
    for name in names:
        seen: list[Shape] = []
        for f, shapes in per_file:
            if name not in shapes:
                raise FeedError(f"--profile-from {str(p)!r}: {str(f)!r} has no input {name!r} (it holds "
                                f"{', '.join(shapes)}); every feed file must hold the same inputs.")
            if seen and len(shapes[name]) != len(seen[0]):
                raise FeedError(f"--profile-from {str(p)!r}: input {name!r} has rank {len(shapes[name])} in "
                                f"{str(f)!r} but rank {len(seen[0])} in {str(per_file[0][0])!r}.")
            seen.append(shapes[name])
        mn = tuple(min(s[a] for s in seen) for a in range(len(seen[0])))
        mx = tuple(max(s[a] for s in seen) for a in range(len(seen[0])))
        ranges.append(ShapeRange(name, mn, _opt_shape(seen), mx))
    return Profile(tuple(ranges))
