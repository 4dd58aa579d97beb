"""Constants a low-precision type cannot hold: their consumers stay FP32 instead of seeing clipped values.

A float32 constant (initializer, ``Constant`` node value, ``ConstantOfShape`` value) with a finite value beyond the
target type's range (fp16: +-65504) would be clipped by the conversion and silently change the model (the PaddleOCR
v4 detector holds a BatchNorm variance of 9.79e7). :func:`find_range_keeps` names every node that reads such a
value, following it through nodes that only move data (Reshape, Transpose, Concat, ...), so that
:func:`enginekit.graph.precision.convert_precision` keeps those nodes in FP32 (casts around them, like a plan's
islands) and weak-typing TensorRT pins their layers to FP32. Normalization nodes whose ``epsilon`` attribute rounds
to zero in the target type are kept too (``var + eps`` could become a division by zero).

Non-zero constant values that would round to zero are not kept: the conversion raises them to the type's
smallest subnormal (``eps > 0`` stays true) and names them (``tiny_initializers``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from enginekit.graph.schemas import DEFAULT_DOMAINS

FP16_MAX = 65504.0
BF16_MAX = 3.3895313892515355e38  # bfloat16 0x7F7F
_SMALLEST = {"fp16": 2.0**-24, "bf16": 2.0**-133}  # smallest subnormal of the type
_MAX = {"fp16": FP16_MAX, "bf16": BF16_MAX}
# ops whose float outputs hold (a subset of) their float inputs' values unchanged
PASS_THROUGH = frozenset({"Identity", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Flatten", "Expand", "Tile",
                          "Slice", "Gather", "GatherElements", "GatherND", "Concat", "Split", "Cast", "CastLike",
                          "Pad", "DepthToSpace", "SpaceToDepth", "ReduceMax", "ReduceMin", "Max", "Min"})
_EPSILON_OPS = frozenset({"BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization"})


@dataclass(frozen=True)
class RangeKeep:
    """A node kept in FP32 because a value it reads does not fit the target type."""

    node: str  # ONNX node name (or "<unnamed Op -> output>")
    index: int  # position in graph.node (unnamed nodes have no other identity)
    tensor: str  # the constant (or attribute) that does not fit
    max_abs: float  # its largest finite |value|
    limit: float  # the type's largest finite value (overflow) or smallest subnormal (underflow)
    kind: str  # "overflow" | "underflow"
    precision: str
    via: str = ""  # the data-movement value the constant reached the node through, if any

    @property
    def reason(self) -> str:
        through = f" (through {self.via!r})" if self.via else ""
        if self.kind == "overflow":
            return (f"constant {self.tensor!r}{through} holds |value| up to {self.max_abs:.4g}, beyond "
                    f"{self.precision}'s {self.limit:.6g}: kept FP32 instead of clipping")
        return (f"{self.tensor} {self.max_abs:.3g} rounds to 0 in {self.precision} (smallest {self.limit:.3g}): "
                "kept FP32")

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "tensor": self.tensor, "max_abs": float(self.max_abs), "limit": float(self.limit),
                "kind": self.kind, "via": self.via, "reason": self.reason}


def type_range(precision: str) -> tuple[float, float]:
    """(largest finite value, smallest subnormal) of 'fp16' or 'bf16'."""
    return _MAX[precision], _SMALLEST[precision]


def max_finite_abs(values: np.ndarray) -> float:
    """Largest finite |value| (0.0 for an empty or all non-finite array)."""
    finite = values[np.isfinite(values)]
    return float(np.abs(finite).max()) if finite.size else 0.0


def node_label(node: onnx.NodeProto) -> str:
    return node.name or f"<unnamed {node.op_type} -> {node.output[0] if node.output else '?'}>"


def find_range_keeps(nodes: Sequence[onnx.NodeProto], constants: Mapping[str, TensorProto], types: Mapping[str, int],
                     precision: str) -> list[RangeKeep]:
    """The nodes to keep in FP32 at ``precision`` because of out-of-range constants (see module doc).

    ``constants``: the float32 constants the conversion would rewrite (initializers that are not graph inputs,
    ``Constant`` outputs) by value name; ``types``: element type per value name. One entry per node (the first
    cause found), in graph order.
    """
    if precision not in _MAX:
        return []
    limit, smallest = type_range(precision)
    uses: dict[str, list[int]] = defaultdict(list)
    for i, n in enumerate(nodes):
        for v in n.input:
            if v:
                uses[v].append(i)
    found: dict[int, RangeKeep] = {}
    # (value, constant it carries, max |value|, data-movement value it came through)
    work: list[tuple[str, str, float, str]] = []
    for name, tensor in constants.items():
        if tensor.data_location == TensorProto.EXTERNAL:
            continue  # the conversion itself refuses external data
        big = max_finite_abs(numpy_helper.to_array(tensor))
        if big > limit:
            work.append((name, name, big, ""))
    for i, n in enumerate(nodes):
        if n.op_type == "ConstantOfShape" and n.domain in DEFAULT_DOMAINS and n.output:
            value = next((a.t for a in n.attribute if a.name == "value" and a.HasField("t")), None)
            if value is not None and value.data_type == TensorProto.FLOAT:
                big = max_finite_abs(numpy_helper.to_array(value))
                if big > limit:
                    found[i] = RangeKeep(node_label(n), i, f"{node_label(n)}.value", big, limit, "overflow",
                                         precision)
                    work.append((n.output[0], f"{node_label(n)}.value", big, ""))
        elif n.op_type in _EPSILON_OPS and n.domain in DEFAULT_DOMAINS:
            eps = next((a.f for a in n.attribute if a.name == "epsilon"), None)
            if eps is not None and 0.0 < eps < smallest / 2:
                found[i] = RangeKeep(node_label(n), i, "epsilon", float(eps), smallest, "underflow", precision)
    seen: set[str] = set()
    while work:
        read, carried, big, via = work.pop(0)
        if read in seen:
            continue
        seen.add(read)
        for i in uses.get(read, []):
            n = nodes[i]
            found.setdefault(i, RangeKeep(node_label(n), i, carried, big, limit, "overflow", precision, via))
            if n.op_type in PASS_THROUGH and n.domain in DEFAULT_DOMAINS:
                work.extend((o, carried, big, o) for o in n.output if o and types.get(o) == TensorProto.FLOAT)
    return [found[i] for i in sorted(found)]


def summary_lines(keeps: Sequence[RangeKeep], tiny: Sequence[str] = (), precision: str = "") -> list[str]:
    """One warning line per kept node (and one for raised tiny values), for manifests and logs."""
    lines = [f"{k.precision}: kept node {k.node!r} in FP32: {k.reason}" for k in keeps]
    if tiny and precision in _SMALLEST:
        shown = ", ".join(repr(t) for t in tiny[:5]) + (f" and {len(tiny) - 5} more" if len(tiny) > 5 else "")
        lines.append(f"{precision}: {len(tiny)} constant(s) hold non-zero values that round to 0, raised to the "
                     f"smallest subnormal {_SMALLEST[precision]:.3g}: {shown}")
    return lines
