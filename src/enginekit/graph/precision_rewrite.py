"""How :func:`enginekit.graph.precision.convert_precision` rewrites a graph from its per-node decisions:
float32 constants in the low type (clipped to its range, tiny values raised), Casts where a value crosses between
precisions, value_info retyped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from enginekit.errors import InternalError, InvalidArgumentError
from enginekit.graph.fp16_range import FP16_MAX
from enginekit.graph.precision_analysis import ANY, FLOAT, LOW_TYPE, Decision, label
from enginekit.graph.precision_plan import WIDE
from enginekit.graph.schemas import DEFAULT_DOMAINS, subgraph_reads


def round_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 values -> bfloat16 bit patterns (uint16), round to nearest even; NaN stays a quiet NaN."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        rounded[nan] = ((bits[nan] >> 16).astype(np.uint16) | np.uint16(0x0040))
    return rounded


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def _low_tensor(tensor: TensorProto, precision: str, name: str) -> tuple[TensorProto, bool, bool]:
    """(converted tensor, values were clipped, tiny values were raised) for a float32 tensor."""
    if tensor.data_location == TensorProto.EXTERNAL:
        raise InvalidArgumentError(f"Tensor {tensor.name!r} still references external data; load the model "
                                   "with its external data before converting its precision.")
    if precision == WIDE:
        return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float64), name), False, False
    values = numpy_helper.to_array(tensor).astype(np.float32)
    finite = np.isfinite(values)
    max_value = FP16_MAX if precision == "fp16" else float(bf16_bits_to_float32(np.array([0x7F7F]))[0])
    tiny_value = float(np.float16(2.0**-24)) if precision == "fp16" else float(2.0**-133)
    clipped = bool((finite & (np.abs(values) > max_value)).any())
    values = np.where(finite, np.clip(values, -max_value, max_value), values).astype(np.float32)
    nonzero_tiny = finite & (values != 0) & (np.abs(values) < tiny_value / 2)
    tiny = bool(nonzero_tiny.any())
    values = np.where(nonzero_tiny, np.copysign(np.float32(tiny_value), values), values).astype(np.float32)
    if precision == "fp16":
        out = numpy_helper.from_array(values.astype(np.float16), name)
    else:
        out = TensorProto(name=name, data_type=TensorProto.BFLOAT16, dims=list(values.shape))
        out.raw_data = round_to_bf16_bits(values).astype("<u2").tobytes()
    return out, clipped, tiny


class _Names:
    def __init__(self, graph: onnx.GraphProto) -> None:
        self.used = {n.name for n in graph.node} | {v.name for v in (*graph.input, *graph.output, *graph.initializer)}
        self.used |= {o for n in graph.node for o in n.output} | {i for n in graph.node for i in n.input}

    def fresh(self, base: str) -> str:
        name, k = base, 0
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name


def constant_value(node: onnx.NodeProto) -> TensorProto | None:
    for attr in node.attribute:
        if attr.name == "value" and attr.HasField("t"):
            value: TensorProto = attr.t
            return value
        if attr.name == "value_float":
            return numpy_helper.from_array(np.array(attr.f, np.float32))
        if attr.name == "value_floats":
            return numpy_helper.from_array(np.array(list(attr.floats), np.float32))
    return None


class Rewriter:
    """Rewrites a graph from per-node decisions: converts constants, inserts Casts, retypes value_info."""

    def __init__(self, g: onnx.GraphProto, precision: str, decisions: Sequence[Decision], types: Mapping[str, int],
                 keep_io_types: bool) -> None:
        self.g, self.precision, self.decisions, self.keep_io = g, precision, decisions, keep_io_types
        self.low = LOW_TYPE[precision]
        self.names = _Names(g)
        self.input_names = {v.name for v in g.input}
        self.float_inputs = [v for v in self.input_names if types.get(v) == FLOAT]
        self.inits = {t.name: t for t in g.initializer if t.data_type == FLOAT and t.name not in self.input_names}
        self.const_nodes = {n.output[0] for n in g.node if n.op_type == "Constant" and n.domain in DEFAULT_DOMAINS
                            and n.output and types.get(n.output[0]) == FLOAT and constant_value(n) is not None}
        self.constants = set(self.inits) | self.const_nodes
        self.uses: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for i, n in enumerate(g.node):
            for j, v in enumerate(n.input):
                if v:
                    self.uses[v].append((i, j))
        self.sub_reads = subgraph_reads(g)
        float_outputs = [v.name for v in g.output if v.type.tensor_type.elem_type == FLOAT]
        # names that must hold float32 under their own name: subgraph reads, and graph outputs with keep_io_types
        self.required = dict.fromkeys([*self.sub_reads, *(float_outputs if keep_io_types else [])], FLOAT)
        self.at_name: dict[str, int] = {}  # float value -> type held under its original name
        self.available: dict[tuple[str, int], str] = {}  # (value, type) -> name holding it
        self.extra_vi: dict[str, tuple[str, int]] = {}  # new value name -> (original value, type)
        self.new_nodes: list[onnx.NodeProto] = []
        self.clipped: list[str] = []
        self.tiny: list[str] = []
        self.casts = 0
        self.constants_converted = 0

    def run(self, nodes: Sequence[onnx.NodeProto], is_const: Sequence[bool]) -> None:
        low = self.low
        for v in self.float_inputs:
            self._hold(v, low if not self.keep_io and v not in self.sub_reads else FLOAT)
        for v, tensor in self.inits.items():
            w = self._wants(v)
            self._hold(v, low if w == {low} else FLOAT)
            if w == {low}:
                tensor.CopyFrom(self._low_copy(v, tensor, v))
            elif low in w:
                copy_name = self._new_value(f"{v}_{self.precision}", v, low)
                self.g.initializer.append(self._low_copy(v, tensor, copy_name))
        for i, node in enumerate(nodes):
            if is_const[i] and node.output and node.output[0] in self.const_nodes:
                self._constant_node(node)
            else:
                self._node(node, self.decisions[i])
        del self.g.node[:]
        self.g.node.extend(self.new_nodes)
        _retype_value_info(self.g, self.at_name, self.extra_vi, self.keep_io)

    def _hold(self, v: str, t: int) -> None:
        self.at_name[v] = t
        self.available[(v, t)] = v

    def _new_value(self, base: str, original: str, t: int) -> str:
        name = self.names.fresh(base)
        self.extra_vi[name] = (original, t)
        self.available[(original, t)] = name
        return name

    def _suffix(self, t: int) -> str:
        return "fp32" if t == FLOAT else self.precision

    def _wants(self, v: str) -> set[int]:
        out = {self.decisions[c].ins[k] for c, k in self.uses.get(v, [])} | {self.required.get(v, ANY)}
        return {t for t in out if t in (FLOAT, self.low)}

    def _low_copy(self, v: str, tensor: TensorProto, new_name: str) -> TensorProto:
        out, clipped, tiny = _low_tensor(tensor, self.precision, new_name)
        if clipped:
            self.clipped.append(v)
        if tiny:
            self.tiny.append(v)
        self.constants_converted += 1
        return out

    def _cast(self, src: str, dst: str, to: int, original: str) -> None:
        """Cast node named 'Cast_<type>:<value>' (not prefixed by the producer's name, unlike its tensors)."""
        name = self.names.fresh(f"Cast_{self._suffix(to)}:{original}")
        self.new_nodes.append(helper.make_node("Cast", [src], [dst], name=name, to=to))
        self.casts += 1

    def _constant_node(self, node: onnx.NodeProto) -> None:
        v, low = node.output[0], self.low
        w = self._wants(v)
        value = constant_value(node)
        if value is None:
            raise InternalError(f"Constant node {label(node)!r} lost its value.")
        self._hold(v, low if w == {low} else FLOAT)
        if w == {low}:
            node.ClearField("attribute")
            node.attribute.append(helper.make_attribute("value", self._low_copy(v, value, "")))
        self.new_nodes.append(node)
        if w == {low, FLOAT}:
            copy_name = self._new_value(f"{v}_{self.precision}", v, low)
            self.new_nodes.append(helper.make_node("Constant", [], [copy_name], value=self._low_copy(v, value, ""),
                                                   name=self.names.fresh(f"Constant_{self.precision}:{v}")))

    def _node(self, node: onnx.NodeProto, d: Decision) -> None:
        for j, v in enumerate(node.input):
            want = d.ins[j]
            if not v or want is None or want == ANY:
                continue
            src = self.available.get((v, want))
            if src is None:
                src = self._new_value(f"{v}_{self._suffix(want)}", v, want)
                self._cast(v, src, want, v)
            node.input[j] = src
        if d.status == "convert" and node.domain in DEFAULT_DOMAINS:
            _retype_attributes(node, d, self.low, self.precision)
        self.new_nodes.append(node)
        for j, v in enumerate(node.output):
            t = d.outs[j]
            if not v or t is None:
                continue
            need = self.required.get(v, t)
            if need != t:  # the name must hold float32: write to a new name and Cast back into it
                node.output[j] = self._new_value(f"{v}_{self._suffix(t)}", v, t)
                self._cast(node.output[j], v, need, v)
            self._hold(v, need)


def _retype_attributes(node: onnx.NodeProto, d: Decision, low: int, precision: str) -> None:
    """Rewrite the attributes that set a converted output's type (Cast 'to', ConstantOfShape 'value')."""
    if not d.outs or d.outs[0] != low:
        return
    if node.op_type == "Cast":
        for attr in node.attribute:
            if attr.name == "to" and attr.i == FLOAT:
                attr.i = low
    elif node.op_type == "ConstantOfShape":
        value = next((a for a in node.attribute if a.name == "value"), None)
        tensor = value.t if value is not None else numpy_helper.from_array(np.zeros(1, np.float32))
        converted, _, _ = _low_tensor(tensor, precision, tensor.name)
        if value is not None:
            value.t.CopyFrom(converted)
        else:
            node.attribute.append(helper.make_attribute("value", converted))


def _retype_value_info(g: onnx.GraphProto, at_name: Mapping[str, int], extra: Mapping[str, tuple[str, int]],
                       keep_io_types: bool) -> None:
    shapes = {vi.name: vi for vi in (*g.value_info, *g.input, *g.output)}
    for vi in g.value_info:
        if vi.name in at_name and vi.type.HasField("tensor_type"):
            vi.type.tensor_type.elem_type = at_name[vi.name]
    if not keep_io_types:
        for vi in (*g.input, *g.output):
            if vi.name in at_name:
                vi.type.tensor_type.elem_type = at_name[vi.name]
    for name, (original, t) in extra.items():
        vi = onnx.ValueInfoProto()
        if original in shapes:
            vi.CopyFrom(shapes[original])
        else:
            vi.type.tensor_type.SetInParent()
        vi.name = name
        vi.type.tensor_type.elem_type = t
        g.value_info.append(vi)
