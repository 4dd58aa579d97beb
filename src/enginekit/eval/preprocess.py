"""Image preprocessing settings, from CLI-style ``KEY=VALUE`` options or a small YAML file, and applying them.

Steps, in order: read (Pillow) → convert to ``color`` → resize to ``size`` → float64 pixels × ``scale`` →
``(x - mean) / std`` per channel → ``layout`` → ``dtype`` (integer dtypes: rounded, clipped to their range).

Keys (options and YAML alike)::

    size:   224 | 224x224 | [224, 224]   (height, width); unset: the model input's fixed H, W, else the image's own
    interpolation: nearest | bilinear | bicubic | lanczos   (default bilinear)
    color:  rgb | gray                  unset: from the model input's channel dim (1 → gray, otherwise rgb)
    scale:  1/255                       a number or a fraction (default 1/255)
    mean:   [0.485, 0.456, 0.406]       one value, or one per channel (default 0)
    std:    [0.229, 0.224, 0.225]       one value, or one per channel (default 1)
    layout: NCHW | NHWC                 (default NCHW)
    dtype:  float32 | float16 | uint8 | ...   (default float32)

The ImageNet normalisation is ``scale=1/255 mean=0.485,0.456,0.406 std=0.229,0.224,0.225``.

YAML: PyYAML's ``safe_load`` when PyYAML is installed; otherwise a reader of the flat subset above
(``key: value`` lines, ``[a, b]`` lists, ``#`` comments), which rejects anything else.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from enginekit.errors import FeedError, InvalidArgumentError, MissingDependencyError, UnknownNameError, did_you_mean
from enginekit.tensors import TensorSpec

if TYPE_CHECKING:
    from PIL import Image

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")
COLORS = ("rgb", "gray")
LAYOUTS = ("NCHW", "NHWC")
KEYS = ("size", "interpolation", "color", "scale", "mean", "std", "layout", "dtype")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    size: tuple[int, int] | None = None  # (height, width)
    interpolation: str = "bilinear"
    color: str | None = None
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = "NCHW"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        _choice("interpolation", self.interpolation, INTERPOLATIONS)
        if self.color is not None:
            _choice("color", self.color, COLORS)
        _choice("layout", self.layout, LAYOUTS)
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise InvalidArgumentError(f"Preprocess size must be two positive ints (height, width), got {self.size}.")
        if not self.mean or not self.std:
            raise InvalidArgumentError("Preprocess mean and std need at least one value each.")
        if any(s == 0 for s in self.std):
            raise InvalidArgumentError(f"Preprocess std must not be 0, got {list(self.std)}.")
        try:
            np.dtype(self.dtype)
        except TypeError as exc:
            raise InvalidArgumentError(f"Preprocess dtype {self.dtype!r} is not a numpy dtype.") from exc

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    def to_dict(self) -> dict[str, object]:
        return {"size": None if self.size is None else list(self.size), "interpolation": self.interpolation,
                "color": self.color, "scale": self.scale, "mean": list(self.mean), "std": list(self.std),
                "layout": self.layout, "dtype": self.dtype}


def _choice(key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise InvalidArgumentError(f"Preprocess {key} {value!r} is not one of {', '.join(choices)}.")


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise InvalidArgumentError(f"Preprocess {key}: expected a number, got {value!r}.")
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError) as exc:
        raise InvalidArgumentError(f"Preprocess {key}: expected a number or a fraction like 1/255, got {value!r}.") \
            from exc


def _numbers(key: str, value: Any) -> tuple[float, ...]:
    items = value if isinstance(value, (list, tuple)) else [v for v in re.split(r"[,\s]+", str(value).strip()) if v]
    if not items:
        raise InvalidArgumentError(f"Preprocess {key}: expected one or more numbers, got {value!r}.")
    return tuple(_number(key, v) for v in items)


def _size(value: Any) -> tuple[int, int]:
    items = value if isinstance(value, (list, tuple)) else re.split(r"[x,\s]+", str(value).strip().lower())
    try:
        sizes = [int(v) for v in items if str(v).strip()]
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"Preprocess size: expected 224, 224x224 or [224, 224], got {value!r}.") from exc
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2:
        raise InvalidArgumentError(f"Preprocess size: expected 224, 224x224 or [224, 224], got {value!r}.")
    return sizes[0], sizes[1]


def preprocess_from_mapping(values: Mapping[str, Any], *, source: str = "options") -> Preprocess:
    """Settings from a mapping of the keys in the module doc (values as strings, numbers or lists)."""
    unknown = [k for k in values if k not in KEYS]
    if unknown:
        raise UnknownNameError(f"Unknown preprocess key {unknown[0]!r} in {source}{did_you_mean(unknown[0], KEYS)} "
                               f"(keys: {', '.join(KEYS)}).")
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if key == "size":
            kwargs[key] = _size(value)
        elif key == "scale":
            kwargs[key] = _number(key, value)
        elif key in ("mean", "std"):
            kwargs[key] = _numbers(key, value)
        elif key == "layout":
            kwargs[key] = str(value).strip().upper()
        else:
            kwargs[key] = str(value).strip().lower() if key != "dtype" else str(value).strip()
    return Preprocess(**kwargs)


def parse_preprocess_options(options: Sequence[str], base: Preprocess | None = None) -> Preprocess:
    """Settings from ``KEY=VALUE`` texts (``size=224``, ``mean=0.485,0.456,0.406``), over ``base`` when given."""
    values: dict[str, str] = {}
    for text in options:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise InvalidArgumentError(f"Invalid preprocess option {text!r}: expected KEY=VALUE, like size=224.")
        values[key.strip().lower()] = value
    parsed = preprocess_from_mapping(values)
    if base is None:
        return parsed
    return replace(base, **{k: getattr(parsed, k) for k in values})


def _scalar(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text in ("", "~", "null"):
        return None
    return text


def read_simple_yaml(text: str, *, source: str = "YAML") -> dict[str, Any]:
    """The flat YAML subset of the module doc: ``key: value`` and ``key: [a, b, c]`` lines, ``#`` comments."""
    out: dict[str, Any] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip() or line.strip() == "---":
            continue
        match = re.match(r"^([A-Za-z_][\w]*)\s*:\s*(.*)$", line)
        if match is None or raw[:1].isspace():
            raise InvalidArgumentError(f"{source} line {number}: expected 'key: value' at the start of the line, "
                                       f"got {raw.strip()!r} (nested YAML needs PyYAML installed).")
        key, value = match[1], match[2].strip()
        if value.startswith("["):
            if not value.endswith("]"):
                raise InvalidArgumentError(f"{source} line {number}: a list must close on the same line: {value!r}.")
            out[key] = [_scalar(v) for v in value[1:-1].split(",") if v.strip()]
        else:
            out[key] = _scalar(value)
    return out


def load_preprocess_yaml(path: str | Path) -> Preprocess:
    """Settings from a YAML file holding a mapping of the keys in the module doc."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidArgumentError(f"Cannot read preprocess file {str(path)!r}: {exc.strerror or exc}.") from exc
    try:
        yaml = importlib.import_module("yaml")
    except ImportError:
        values: Any = read_simple_yaml(text, source=str(path))
    else:
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InvalidArgumentError(f"Preprocess file {str(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(values, dict):
        raise InvalidArgumentError(f"Preprocess file {str(path)!r} must hold a mapping of keys "
                                   f"({', '.join(KEYS)}).")
    return preprocess_from_mapping(values, source=str(path))


# --- applying -----------------------------------------------------------------------------------------------


def resolve_for_input(pre: Preprocess, spec: TensorSpec) -> Preprocess:
    """Fill ``color`` and ``size`` from the model input when unset; check the input is an image tensor."""
    if spec.shape is None or len(spec.shape) != 4:
        raise FeedError(f"Input {spec.name!r} {spec.shape_str()} is not an image batch (rank 4, {pre.layout}).")
    c_axis, h_axis, w_axis = (1, 2, 3) if pre.layout == "NCHW" else (3, 1, 2)
    channels = spec.shape[c_axis]
    color = pre.color
    if color is None:
        color = "gray" if channels == 1 else "rgb"
    want = 1 if color == "gray" else 3
    if isinstance(channels, int) and channels != want:
        raise FeedError(f"Input {spec.name!r} {spec.shape_str()} has {channels} channels in {pre.layout}, "
                        f"but color {color!r} gives {want}; set layout or color.")
    size = pre.size
    height, width = spec.shape[h_axis], spec.shape[w_axis]
    if isinstance(height, int) and isinstance(width, int):
        if size is None:
            size = (height, width)
        elif size != (height, width):
            raise FeedError(f"Preprocess size {size[0]}x{size[1]} does not match input {spec.name!r} "
                            f"{spec.shape_str()}.")
    for key, values in (("mean", pre.mean), ("std", pre.std)):
        if len(values) not in (1, want):
            raise InvalidArgumentError(f"Preprocess {key} has {len(values)} values for {want} channel(s).")
    return replace(pre, color=color, size=size)


def _pillow() -> Any:
    try:
        return importlib.import_module("PIL.Image")
    except ImportError as exc:
        raise MissingDependencyError("pillow", purpose="reading images") from exc


def preprocess_image(image: Image.Image, pre: Preprocess) -> np.ndarray:
    """One image → an array [C, H, W] (NCHW) or [H, W, C] (NHWC) of ``pre.dtype``; color unset means rgb."""
    pil = _pillow()
    img = image.convert("L" if pre.color == "gray" else "RGB")
    if pre.size is not None and (img.height, img.width) != pre.size:
        resample = getattr(pil.Resampling, pre.interpolation.upper())
        img = img.resize((pre.size[1], pre.size[0]), resample=resample)
    x = np.asarray(img, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, :, None]
    x = x * pre.scale
    x = (x - np.asarray(pre.mean)) / np.asarray(pre.std)
    if pre.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    dtype = np.dtype(pre.dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        x = np.clip(np.rint(x), info.min, info.max)
    return np.ascontiguousarray(x.astype(dtype))


def load_image(path: str | Path, pre: Preprocess) -> np.ndarray:
    """Read an image file and preprocess it (:func:`preprocess_image`). Unreadable files raise FeedError."""
    return read_image(path, pre)[0]


def read_image(path: str | Path, pre: Preprocess) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`load_image` and the file's own (height, width) before resizing (to map boxes back to it)."""
    pil = _pillow()
    try:
        with pil.open(path) as img:
            img.load()
            return preprocess_image(img, pre), (int(img.height), int(img.width))
    except (OSError, ValueError) as exc:
        raise FeedError(f"Cannot read image {str(path)!r}: {exc}") from exc
