"""Export inputs with symbolic dims, ``--dynamic`` ranges, and the shapes used to trace and to verify.

``--input x:batch,3,h,w[:float32]`` names symbolic dims (commas), ``--input x:1x3x224x224`` fixes them;
``--dynamic x:0=batch[1..32]`` makes an axis dynamic, names it and bounds it. The model is traced at one
shape and verified there and at another valid value of every dynamic axis, so that sizes baked in by
tracing are caught.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from enginekit.errors import InvalidArgumentError
from enginekit.settings import DynamicDim
from enginekit.tensors import Dim, TensorSpec, normalize_dtype

_DYNAMIC_RE = re.compile(r"^(?P<name>.+):(?P<axis>\d{1,19})=(?P<label>[A-Za-z_][A-Za-z0-9_]*)"
                         r"(?:\[(?P<min>\d{1,19})?\.\.(?P<max>\d{1,19})?\])?$", re.ASCII)
MIN_OPSET = 7  # the oldest opset the exporters write
_LABEL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ExportInput:
    name: str
    dims: tuple[Dim, ...]
    dtype: str = "float32"


def parse_export_input(text: str) -> ExportInput:
    """``NAME:DIMS[:DTYPE]``; DIMS are ints or symbolic names, separated by ',' (or 'x' when all ints)."""
    usage = "expected NAME:DIMS[:DTYPE], e.g. x:batch,3,224,224 or x:1x3x224x224 or ids:batch,seq:int64"
    parts = text.split(":")
    if len(parts) < 2:
        raise InvalidArgumentError(f"--input {text!r}: {usage}.")
    dtype = "float32"
    if len(parts) >= 3 and normalize_dtype(parts[-1]) is not None:
        dtype = normalize_dtype(parts[-1]) or dtype
        parts = parts[:-1]
    name, dims_text = ":".join(parts[:-1]), parts[-1]
    if not name:
        raise InvalidArgumentError(f"--input {text!r}: empty name; {usage}.")
    raw = dims_text.split(",") if "," in dims_text else (dims_text.split("x") if dims_text else [])
    dims: list[Dim] = []
    for d in raw:
        d = d.strip()
        # str.isdigit() alone accepts "²", which int() refuses; thousands of digits are refused by int() too
        if d.isascii() and d.isdigit() and len(d) <= 19 and int(d) > 0:
            dims.append(int(d))
        elif _LABEL_RE.match(d):
            dims.append(d)
        else:
            raise InvalidArgumentError(f"--input {text!r}: bad dim {d!r} (a positive int or a name); {usage}.")
    return ExportInput(name, tuple(dims), dtype)


def parse_opset(text: str) -> int | None:
    """``--opset``: ``auto`` (None) or an opset number the installed onnx knows."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    value = text.strip()
    if value == "auto":
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 4) or not MIN_OPSET <= int(value) <= newest:
        raise InvalidArgumentError(f"--opset {text[:40]!r}: give 'auto' or a number from {MIN_OPSET} to {newest} "
                                   f"(the newest opset of the installed onnx {onnx.__version__}), such as 17.")
    return int(value)


def check_plan_sizes(plans: list[InputPlan]) -> None:
    """Refuse trace or verification shapes whose feeds would exceed :data:`enginekit.data.MAX_FEED_BYTES`."""
    from enginekit.data import check_feed_size

    for which in ("trace", "other"):
        check_feed_size({p.name: (p.shape_with(which), p.dtype) for p in plans},
                        what=f"The export's {which}-shape feed")


def parse_dynamic(text: str) -> DynamicDim:
    """``NAME:AXIS=LABEL[MIN..MAX]`` (the range, or either end of it, may be left out)."""
    m = _DYNAMIC_RE.match(text.strip())
    if not m:
        raise InvalidArgumentError(f"--dynamic {text!r}: expected NAME:AXIS=LABEL[MIN..MAX], e.g. x:0=batch[1..32].")
    lo = int(m["min"]) if m["min"] else None
    hi = int(m["max"]) if m["max"] else None
    if (lo is not None and lo < 1) or (lo is not None and hi is not None and lo > hi):
        raise InvalidArgumentError(f"--dynamic {text!r}: need 1 <= MIN <= MAX.")
    return DynamicDim(m["name"], int(m["axis"]), m["label"], lo, hi)


@dataclass(frozen=True)
class AxisPlan:
    axis: int
    label: str
    trace: int
    other: int | None  # a second valid size for verification (None: the range allows only one)
    min: int | None
    max: int | None


@dataclass(frozen=True)
class InputPlan:
    name: str
    dtype: str
    trace_shape: tuple[int, ...]
    dynamic: tuple[AxisPlan, ...]

    def spec(self) -> TensorSpec:
        dims: list[Dim] = list(self.trace_shape)
        for a in self.dynamic:
            dims[a.axis] = a.label
        return TensorSpec(self.name, tuple(dims), self.dtype)

    def shape_with(self, which: str) -> tuple[int, ...]:
        shape = list(self.trace_shape)
        for a in self.dynamic:
            if which == "other" and a.other is not None:
                shape[a.axis] = a.other
        return tuple(shape)


def _trace_size(given: int | None, lo: int | None, hi: int | None) -> int:
    # Sizes 0 and 1 get specialized by torch.export, so trace dynamic axes at >= 2 when the range allows.
    size = given if given is not None else max(lo or 2, 2)
    if size == 1 and (hi is None or hi >= 2):
        size = 2
    if hi is not None:
        size = min(size, hi)
    return max(size, lo or 1)


def _other_size(trace: int, lo: int | None, hi: int | None) -> int | None:
    for cand in (trace * 2, trace + 1, hi, lo):
        if cand is not None and cand != trace and (lo is None or cand >= lo) and (hi is None or cand <= hi):
            return cand
    return None


def plan_inputs(inputs: tuple[ExportInput, ...], dynamic: tuple[DynamicDim, ...]) -> list[InputPlan]:
    """Trace shape and dynamic axes per input; every symbolic dim and --dynamic axis is dynamic."""
    names = [i.name for i in inputs]
    for d in dynamic:
        if d.input not in names:
            raise InvalidArgumentError(f"--dynamic {d.input}:{d.axis}=...: no --input named {d.input!r} "
                                       f"(inputs: {', '.join(names) or 'none'}).")
    plans = []
    for inp in inputs:
        declared = {d.axis: d for d in dynamic if d.input == inp.name}
        for axis in declared:
            if axis >= len(inp.dims):
                raise InvalidArgumentError(f"--dynamic {inp.name}:{axis}=...: input {inp.name!r} has rank "
                                           f"{len(inp.dims)}.")
        shape: list[int] = []
        axes: list[AxisPlan] = []
        for axis, dim in enumerate(inp.dims):
            decl = declared.get(axis)
            if decl is None and isinstance(dim, int):
                shape.append(dim)
                continue
            label = decl.label if decl else str(dim)
            lo, hi = (decl.min, decl.max) if decl else (None, None)
            trace = _trace_size(dim if isinstance(dim, int) else None, lo, hi)
            shape.append(trace)
            axes.append(AxisPlan(axis, label, trace, _other_size(trace, lo, hi), lo, hi))
        plans.append(InputPlan(inp.name, inp.dtype, tuple(shape), tuple(axes)))
    check_plan_sizes(plans)
    return plans
