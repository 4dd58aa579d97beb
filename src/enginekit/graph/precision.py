"""Low-precision ONNX: FP16 / BF16 conversion with FP32 islands, and the precision plan (``plan.json``).

Strongly typed TensorRT (TensorRT 11, TensorRT-RTX) takes each layer's precision from the ONNX types, so the
low-precision model is made here. :func:`convert_precision` runs float32 compute in fp16 or bf16 except:

* the nodes a :class:`PrecisionPlan` keeps in FP32 ("FP32 islands"),
* nodes whose schema at the model's opset does not allow the target type (e.g. ``Range``; ``Conv`` for bf16
  before opset 22), custom-domain nodes and nodes with subgraphs ("auto-kept", each with its reason),
* integer-derived arithmetic that only feeds FP32 or integer consumers (``Shape -> Cast -> Mul -> Cast``,
  ``Cast -> Range``): it stays exact instead of losing integers above 2048 (fp16) or 256 (bf16).

Casts are inserted where a value crosses between precisions (one per value and type, shared by consumers);
float32 constants are rewritten in the target type (a converted copy is added when FP32 consumers remain).
Graph inputs and outputs keep float32 by default. Nodes reading a constant with finite values beyond the type's
range (fp16: +-65504) stay FP32 too, so no weight is clipped (graph/fp16_range.py; ``range_kept`` in the result);
non-zero values that would round to zero become the smallest subnormal of the type (keeps ``eps > 0``, named).

onnxconverter-common's ``convert_float_to_float16`` is not used: it breaks on unnamed nodes (duplicate Cast
names), on initializers shared between blocked and converted nodes, on graph outputs that are also consumed,
on float-only ops outside its fixed list (e.g. ``Celu``), clips at 1e4 by default, and has no bf16.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from enginekit.errors import InternalError, InvalidArgumentError, UnknownNameError
from enginekit.graph.fp16_range import FP16_MAX, RangeKeep, find_range_keeps
from enginekit.graph.schemas import DEFAULT_DOMAINS, node_schema, opset_map, subgraph_reads, subgraphs

log = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("fp16", "bf16")  # low-precision conversion targets
PLAN_PRECISIONS: tuple[str, ...] = (*PRECISIONS, "int8")  # int8 plans: nodes left out of quantization
WIDE = "fp64"  # convert_precision's other target: the float64 reference of the precision debugger
PLAN_VERSION = 1
_LOW_TYPE = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16, WIDE: TensorProto.DOUBLE}
_LOW_STR = {"fp16": "tensor(float16)", "bf16": "tensor(bfloat16)", WIDE: "tensor(double)"}
_FLOAT = TensorProto.FLOAT
_ANY = 0  # a consumer slot that accepts float32 and the low type alike (Shape, Cast's input)
_FLOATISH = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
_ATTRIBUTE_TYPED = ("Cast", "ConstantOfShape")  # output type set by an attribute this module rewrites


# --- precision plan ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanEntry:
    """One node kept in FP32: its ONNX node name, why, and the measurements that led there."""

    node: str
    reason: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from enginekit.compare.result import json_safe

        return {"node": self.node, "reason": self.reason, "evidence": json_safe(dict(self.evidence))}


@dataclass(frozen=True)
class PrecisionPlan:
    """Target precision and the nodes that stay FP32; shared with the precision debugger as ``plan.json``."""

    precision: str
    keep_fp32: tuple[PlanEntry, ...] = ()
    version: int = PLAN_VERSION
    source: str = ""

    def __post_init__(self) -> None:
        _check_precision(self.precision, "plan precision", PLAN_PRECISIONS)
        if self.version != PLAN_VERSION:
            raise InvalidArgumentError(f"Precision plan version {self.version!r} is not supported "
                                       f"(this enginekit reads version {PLAN_VERSION}).")
        entries: dict[str, PlanEntry] = {}
        for entry in self.keep_fp32:
            entries.setdefault(entry.node, entry)  # a node listed twice: the first entry wins
        object.__setattr__(self, "keep_fp32", tuple(entries.values()))

    def node_names(self) -> list[str]:
        return [e.node for e in self.keep_fp32]

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "precision": self.precision,
                "keep_fp32": [e.to_dict() for e in self.keep_fp32], "source": self.source}

    @classmethod
    def from_dict(cls, data: object, *, where: str = "precision plan") -> PrecisionPlan:
        """Build a plan from parsed JSON; InvalidArgumentError names the malformed field."""
        if not isinstance(data, dict):
            raise InvalidArgumentError(f"{where}: expected a JSON object, got {type(data).__name__}.")
        unknown = sorted(set(data) - {"version", "precision", "keep_fp32", "source"})
        if unknown:
            raise InvalidArgumentError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; "
                                       "expected version, precision, keep_fp32, source.")
        version = data.get("version", PLAN_VERSION)
        if not isinstance(version, int) or isinstance(version, bool):
            raise InvalidArgumentError(f"{where}: 'version' must be an integer, got {version!r}.")
        precision = data.get("precision")
        if not isinstance(precision, str):
            raise InvalidArgumentError(f"{where}: 'precision' must be one of {', '.join(PLAN_PRECISIONS)}, "
                                       f"got {precision!r}.")
        source = data.get("source", "")
        if not isinstance(source, str):
            raise InvalidArgumentError(f"{where}: 'source' must be a string, got {source!r}.")
        raw = data.get("keep_fp32", [])
        if not isinstance(raw, list):
            raise InvalidArgumentError(f"{where}: 'keep_fp32' must be a list, got {type(raw).__name__}.")
        entries = tuple(_entry_from(item, f"{where}: keep_fp32[{i}]") for i, item in enumerate(raw))
        try:
            return cls(precision, entries, version, source)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"{where}: {exc.message}", hint=exc.hint) from exc


def _entry_from(item: object, where: str) -> PlanEntry:
    if isinstance(item, str):
        item = {"node": item}  # a bare node name is accepted for hand-written plans
    if not isinstance(item, dict):
        raise InvalidArgumentError(f"{where} must be an object with 'node', got {type(item).__name__}.")
    node, reason, evidence = item.get("node"), item.get("reason", ""), item.get("evidence", {})
    if not isinstance(node, str) or not node:
        raise InvalidArgumentError(f"{where}.node must be a non-empty string (an ONNX node name), got {node!r}.")
    if not isinstance(reason, str):
        raise InvalidArgumentError(f"{where}.reason must be a string, got {reason!r}.")
    if not isinstance(evidence, dict):
        raise InvalidArgumentError(f"{where}.evidence must be an object, got {type(evidence).__name__}.")
    extra = sorted(set(item) - {"node", "reason", "evidence"})
    if extra:
        raise InvalidArgumentError(f"{where}: unknown field(s) {', '.join(map(repr, extra))}.")
    return PlanEntry(node, reason, dict(evidence))


def load_plan(path: str | Path) -> PrecisionPlan:
    """Read ``plan.json``; InvalidArgumentError says what is wrong with a missing or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise InvalidArgumentError(f"Precision plan {str(p)!r} does not exist or is not a file.")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"Precision plan {str(p)!r} is not valid JSON: {exc.msg} at line {exc.lineno} "
                                   f"column {exc.colno}.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"Cannot read precision plan {str(p)!r}: {exc}.") from exc
    return PrecisionPlan.from_dict(data, where=f"precision plan {str(p)!r}")


def save_plan(plan: PrecisionPlan, path: str | Path) -> Path:
    """Write ``plan`` as JSON atomically (temp file + rename)."""
    from enginekit.fileutil import atomic_write_text

    return atomic_write_text(path, json.dumps(plan.to_dict(), indent=2, allow_nan=False) + "\n")


def check_plan_nodes(plan: PrecisionPlan, model: onnx.ModelProto) -> None:
    """Raise UnknownNameError (with a suggestion) when the plan names nodes the model's graph lacks."""
    from enginekit.errors import did_you_mean

    known = [n.name for n in model.graph.node if n.name]
    known_set = set(known)
    unknown = [name for name in plan.node_names() if name not in known_set]
    if unknown:
        shown = "; ".join(f"{name!r}{did_you_mean(name, known)}" for name in unknown[:5])
        more = f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""
        raise UnknownNameError(
            f"The precision plan keeps {len(unknown)} node(s) in FP32 that the model does not have: {shown}{more}. "
            f"The model has {len(known)} named nodes.",
            hint="Plan entries are ONNX node names (see `enginekit inspect`); was the plan made for another model?")


def _check_precision(precision: str, what: str, allowed: Sequence[str] = PRECISIONS) -> None:
    if precision not in allowed:
        from enginekit.errors import did_you_mean

        raise InvalidArgumentError(f"{what} {precision!r} is not one of {', '.join(allowed)}"
                                   f"{did_you_mean(str(precision), allowed)}.")


# --- conversion result and numbers ------------------------------------------------------------


@dataclass(frozen=True)
class ConversionResult:
    """The converted model and what the conversion did (``to_dict`` leaves the model out)."""

    model: onnx.ModelProto
    precision: str
    kept_fp32: list[str]  # plan nodes kept in FP32
    auto_kept: list[tuple[str, str]]  # (node, reason) kept in FP32 without being asked
    clipped_initializers: list[str]  # constants with finite values beyond the type's range (clipped)
    casts_inserted: int
    nodes_converted: int
    constants_converted: int = 0
    tiny_initializers: list[str] = field(default_factory=list)  # non-zero values raised to the smallest subnormal
    range_kept: list[RangeKeep] = field(default_factory=list)  # nodes kept FP32: a constant beyond the type's range

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "kept_fp32": list(self.kept_fp32),
                "auto_kept": [{"node": n, "reason": r} for n, r in self.auto_kept],
                "clipped_initializers": list(self.clipped_initializers), "casts_inserted": self.casts_inserted,
                "nodes_converted": self.nodes_converted, "constants_converted": self.constants_converted,
                "tiny_initializers": list(self.tiny_initializers),
                "range_kept": [k.to_dict() for k in self.range_kept]}

    def warnings(self) -> list[str]:
        """What the conversion changed on its own, one line each: range-kept nodes, raised tiny values, clips."""
        from enginekit.graph.fp16_range import summary_lines

        lines = summary_lines(self.range_kept, self.tiny_initializers, self.precision)
        if self.clipped_initializers:
            lines.append(f"{self.precision}: clipped constant(s) {', '.join(map(repr, self.clipped_initializers))} "
                         "to the type's range")
        return lines


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


# --- analysis ----------------------------------------------------------------------------------


@dataclass
class _Decision:
    """What one node does: 'convert', 'keep' (FP32) or 'neutral'; the type each float slot wants/produces."""

    status: str
    ins: list[int | None]
    outs: list[int | None]
    reason: str = ""


def _label(node: onnx.NodeProto) -> str:
    return node.name or f"<unnamed {node.op_type} -> {node.output[0] if node.output else '?'}>"


def _formal(params: Sequence[onnx.defs.OpSchema.FormalParameter], index: int) -> str | None:
    if index < len(params):
        return str(params[index].type_str)
    if params and params[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
        return str(params[-1].type_str)
    return None


@functools.lru_cache(maxsize=256)
def _opset_allowing(op_type: str, var: str, type_str: str, current: int) -> int | None:
    """The first ai.onnx opset after ``current`` whose ``op_type`` schema allows ``type_str`` for ``var``."""
    for version in range(current + 1, onnx.defs.onnx_opset_version() + 1):
        try:
            schema = onnx.defs.get_schema(op_type, version, "")
        except onnx.defs.SchemaError:
            return None
        if schema.since_version <= current:
            continue
        if any(tc.type_param_str == var and type_str in tc.allowed_type_strs for tc in schema.type_constraints):
            return int(schema.since_version)
    return None


def _analyze(node: onnx.NodeProto, types: Mapping[str, int], precision: str, opsets: Mapping[str, int],
             plan_nodes: set[str]) -> _Decision:
    low = _LOW_TYPE[precision]
    d = _Decision("neutral", [None] * len(node.input), [None] * len(node.output))
    fin = [j for j, v in enumerate(node.input) if v and types.get(v) == _FLOAT]
    fout = [j for j, v in enumerate(node.output) if v and types.get(v) == _FLOAT]
    if not fin and not fout:
        return d

    def keep(reason: str) -> _Decision:
        d.status, d.reason = "keep", reason
        for j in fin:
            d.ins[j] = _FLOAT
        for j in fout:
            d.outs[j] = _FLOAT
        return d

    if node.name and node.name in plan_nodes:
        return keep("in the precision plan")
    if any(True for _ in subgraphs(node)):
        return keep(f"{node.op_type} has a subgraph; the node and its body stay FP32")
    schema = node_schema(node, opsets)
    if schema is None:
        domain = node.domain or "ai.onnx"
        return keep(f"no ONNX schema for {domain}::{node.op_type} at this opset to check {precision} support")
    allowed = {tc.type_param_str: set(tc.allowed_type_strs) for tc in schema.type_constraints}
    groups: dict[str, list[tuple[list[int | None], str, int]]] = defaultdict(list)
    for slots, names, params in ((d.ins, node.input, schema.inputs), (d.outs, node.output, schema.outputs)):
        for j, name in enumerate(names):
            type_str = _formal(params, j) if name else None
            if type_str is not None:
                groups[type_str].append((slots, name, j))
    reasons: list[str] = []
    flexible: list[tuple[list[int | None], int]] = []
    converted = False
    where = f"opset {opsets.get('', '?')}"
    for var, members in groups.items():
        floats = [(slots, j) for slots, name, j in members if types.get(name) == _FLOAT]
        if not floats:
            continue
        problem = ""
        if var not in allowed:
            problem = f"input/output typed {var}"
        elif any(types.get(name) not in (None, _FLOAT) for _, name, _ in members):
            problem = f"type {var} is shared with a non-float32 tensor"
        elif _LOW_STR[precision] not in allowed[var]:
            problem = f"type {var} does not allow {_LOW_STR[precision]} at {where}"
            since = _opset_allowing(node.op_type, var, _LOW_STR[precision], opsets.get("", 0))
            if since is not None:
                problem += f" (it does from opset {since}: convert the model's opset first)"
        elif all(slots is d.outs for slots, _, _ in members) and node.op_type not in _ATTRIBUTE_TYPED:
            problem = f"output type {var} is set by an attribute"
        if problem:
            for slots, j in floats:
                slots[j] = _FLOAT
            reasons.append(problem)
        elif len(members) == 1 and members[0][0] is d.ins:
            flexible.append((d.ins, members[0][2]))  # a lone input whose type ties no other tensor
        else:
            for slots, _, j in members:
                slots[j] = low
            converted = True
    for slots, j in flexible:
        slots[j] = low if converted else _ANY
    if converted:
        d.status = "convert"
    elif any(t == _FLOAT for t in (*d.ins, *d.outs)):
        d.status, d.reason = "keep", f"{node.op_type}: " + "; ".join(reasons)
    return d


def _shape_arithmetic(nodes: Sequence[onnx.NodeProto], decisions: list[_Decision], types: Mapping[str, int],
                      constants: set[str], uses: Mapping[str, list[tuple[int, int]]], fp32_names: set[str]) -> set[int]:
    """Converted nodes computing on integer-derived floats whose results reach integer or FP32 consumers.

    Forward: a Cast from an integer type seeds; a node whose float inputs are all integer-derived or constant
    (at least one derived) continues. Backward: such a node is kept when one of its outputs feeds a Cast to a
    non-float type, an FP32 slot, an FP32 name (graph output, subgraph read) or another kept node. Derived
    values that only feed data ops (an attention mask) are converted as usual.
    """
    derived: set[str] = set()
    candidates: list[int] = []
    for i, node in enumerate(nodes):
        d = decisions[i]
        if d.status != "convert":
            continue
        if node.op_type == "Cast" and node.domain in DEFAULT_DOMAINS and node.input:
            seed = types.get(node.input[0]) not in (None, *_FLOATISH)
        else:
            fl = [v for j, v in enumerate(node.input) if v and d.ins[j] is not None]
            seed = bool(fl) and all(v in derived or v in constants for v in fl) and any(v in derived for v in fl)
        if seed:
            candidates.append(i)
            derived.update(v for j, v in enumerate(node.output) if v and d.outs[j] is not None)

    def exact_consumer(c: int, k: int) -> bool:
        node = nodes[c]
        if node.op_type == "Cast" and node.domain in DEFAULT_DOMAINS:
            to = next((a.i for a in node.attribute if a.name == "to"), _FLOAT)
            if to not in _FLOATISH:
                return True
        return decisions[c].ins[k] == _FLOAT or c in kept

    kept: set[int] = set()
    changed = True
    while changed:
        changed = False
        for i in reversed(candidates):
            if i in kept:
                continue
            outs = [v for j, v in enumerate(nodes[i].output) if v and decisions[i].outs[j] is not None]
            if any(v in fp32_names or any(exact_consumer(c, k) for c, k in uses.get(v, [])) for v in outs):
                kept.add(i)
                changed = True
    return kept


# --- conversion --------------------------------------------------------------------------------


def _value_types(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    from enginekit.graph.passes import infer_shapes

    try:
        inferred = infer_shapes(model, strict=False)
    except Exception as exc:  # noqa: BLE001 - types then come from the model's own value_info
        log.warning("shape inference failed (%s); using the model's own value_info for types", exc)
        inferred = onnx.ModelProto()
        inferred.CopyFrom(model)
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*g.value_info, *g.input, *g.output)
             if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type}
    types.update({t.name: t.data_type for t in g.initializer})
    for node in g.node:
        if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    types[node.output[0]] = attr.t.data_type
                elif attr.name in ("value_float", "value_floats"):
                    types[node.output[0]] = _FLOAT
    return inferred, types


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


def _constant_value(node: onnx.NodeProto) -> TensorProto | None:
    for attr in node.attribute:
        if attr.name == "value" and attr.HasField("t"):
            value: TensorProto = attr.t
            return value
        if attr.name == "value_float":
            return numpy_helper.from_array(np.array(attr.f, np.float32))
        if attr.name == "value_floats":
            return numpy_helper.from_array(np.array(list(attr.floats), np.float32))
    return None


def convert_precision(model: onnx.ModelProto, precision: str, plan: PrecisionPlan | None = None, *,
                      keep_io_types: bool = True) -> ConversionResult:
    """Run float32 compute in ``precision`` ('fp16' or 'bf16') except the plan's FP32 islands (see module doc).

    ``precision`` 'fp64' widens instead (float64 compute, no plan): the precision debugger's float64 reference.

    ``keep_io_types``: float32 graph inputs and outputs stay float32 (Casts after inputs, before outputs);
    otherwise they take the low type. The input model is not changed. Raises InvalidArgumentError (bad
    precision, plan made for another precision) and UnknownNameError (plan names unknown nodes).
    """
    if precision != WIDE:
        _check_precision(precision, "precision")
    if plan is not None:
        if plan.precision != precision:
            raise InvalidArgumentError(f"The precision plan is for {plan.precision}, the conversion is to "
                                       f"{precision}.", hint=f"Use a plan made for {precision}, or change its "
                                       "'precision' field if its islands apply to both.")
        check_plan_nodes(plan, model)
    plan_nodes = set(plan.node_names()) if plan else set()
    work, types = _value_types(model)
    g = work.graph
    opsets = opset_map(work)
    nodes = list(g.node)
    is_const = [n.op_type == "Constant" and n.domain in DEFAULT_DOMAINS for n in nodes]
    decisions = [_Decision("neutral", [None] * len(n.input), [None] * len(n.output)) if is_const[i]
                 else _analyze(n, types, precision, opsets, plan_nodes) for i, n in enumerate(nodes)]
    rw = _Rewriter(g, precision, decisions, types, keep_io_types)
    range_kept = [] if precision == WIDE else _keep_out_of_range(nodes, decisions, _float_constants(g, types),
                                                                 types, precision)
    for i in _shape_arithmetic(nodes, decisions, types, rw.constants, rw.uses, set(rw.required)):
        d = decisions[i]
        d.status, d.reason = "keep", "integer-derived arithmetic feeding integer or FP32 consumers (kept exact)"
        d.ins = [None if t is None else _FLOAT for t in d.ins]
        d.outs = [None if t is None else _FLOAT for t in d.outs]
    rw.run(nodes, is_const)
    kept = plan.node_names() if plan else []
    auto = [(_label(n), d.reason) for n, d in zip(nodes, decisions, strict=True)
            if d.status == "keep" and not (n.name and n.name in plan_nodes)]
    converted = sum(1 for i, d in enumerate(decisions) if d.status == "convert" and not is_const[i])
    _verify(work, model, precision)
    log.info("%s: converted %d nodes and %d constants, %d plan islands, %d auto-kept, %d casts, %d clipped",
             precision, converted, rw.constants_converted, len(kept), len(auto), rw.casts, len(rw.clipped))
    result = ConversionResult(work, precision, kept, auto, rw.clipped, rw.casts, converted, rw.constants_converted,
                              rw.tiny, range_kept)
    for line in result.warnings():  # callers show them (build manifest, runner logs)
        log.info("%s", line)
    return result


def _float_constants(g: onnx.GraphProto, types: Mapping[str, int]) -> dict[str, TensorProto]:
    """The float32 constants a conversion rewrites: initializers that are not graph inputs, Constant values."""
    inputs = {v.name for v in g.input}
    out = {t.name: t for t in g.initializer if t.data_type == _FLOAT and t.name not in inputs}
    for n in g.node:
        if n.op_type == "Constant" and n.domain in DEFAULT_DOMAINS and n.output and types.get(n.output[0]) == _FLOAT:
            value = _constant_value(n)
            if value is not None:
                out[n.output[0]] = value
    return out


def _keep_out_of_range(nodes: Sequence[onnx.NodeProto], decisions: list[_Decision],
                       constants: Mapping[str, TensorProto], types: Mapping[str, int],
                       precision: str) -> list[RangeKeep]:
    """Keep converted nodes that read out-of-range constants in FP32; the entries applied."""
    applied = []
    for k in find_range_keeps(nodes, constants, types, precision):
        d = decisions[k.index]
        if d.status != "convert":
            continue  # already FP32 (plan, schema) or no float compute: nothing would be clipped for it
        d.status, d.reason = "keep", k.reason
        d.ins = [None if t is None else _FLOAT for t in d.ins]
        d.outs = [None if t is None else _FLOAT for t in d.outs]
        applied.append(k)
    return applied


def out_of_range_nodes(model: onnx.ModelProto, precision: str) -> list[RangeKeep]:
    """The nodes a conversion to ``precision`` keeps in FP32 for out-of-range constants, without converting:
    weak-typing TensorRT pins their layers to FP32 (the builder's FP16 flag would clip their weights)."""
    _check_precision(precision, "precision")
    work, types = _value_types(model)
    return find_range_keeps(list(work.graph.node), _float_constants(work.graph, types), types, precision)


class _Rewriter:
    """Rewrites a graph from per-node decisions: converts constants, inserts Casts, retypes value_info."""

    def __init__(self, g: onnx.GraphProto, precision: str, decisions: Sequence[_Decision], types: Mapping[str, int],
                 keep_io_types: bool) -> None:
        self.g, self.precision, self.decisions, self.keep_io = g, precision, decisions, keep_io_types
        self.low = _LOW_TYPE[precision]
        self.names = _Names(g)
        self.input_names = {v.name for v in g.input}
        self.float_inputs = [v for v in self.input_names if types.get(v) == _FLOAT]
        self.inits = {t.name: t for t in g.initializer if t.data_type == _FLOAT and t.name not in self.input_names}
        self.const_nodes = {n.output[0] for n in g.node if n.op_type == "Constant" and n.domain in DEFAULT_DOMAINS
                            and n.output and types.get(n.output[0]) == _FLOAT and _constant_value(n) is not None}
        self.constants = set(self.inits) | self.const_nodes
        self.uses: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for i, n in enumerate(g.node):
            for j, v in enumerate(n.input):
                if v:
                    self.uses[v].append((i, j))
        self.sub_reads = subgraph_reads(g)
        float_outputs = [v.name for v in g.output if v.type.tensor_type.elem_type == _FLOAT]
        # names that must hold float32 under their own name: subgraph reads, and graph outputs with keep_io_types
        self.required = dict.fromkeys([*self.sub_reads, *(float_outputs if keep_io_types else [])], _FLOAT)
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
            self._hold(v, low if not self.keep_io and v not in self.sub_reads else _FLOAT)
        for v, tensor in self.inits.items():
            w = self._wants(v)
            self._hold(v, low if w == {low} else _FLOAT)
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
        return "fp32" if t == _FLOAT else self.precision

    def _wants(self, v: str) -> set[int]:
        out = {self.decisions[c].ins[k] for c, k in self.uses.get(v, [])} | {self.required.get(v, _ANY)}
        return {t for t in out if t in (_FLOAT, self.low)}

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
        value = _constant_value(node)
        if value is None:
            raise InternalError(f"Constant node {_label(node)!r} lost its value.")
        self._hold(v, low if w == {low} else _FLOAT)
        if w == {low}:
            node.ClearField("attribute")
            node.attribute.append(helper.make_attribute("value", self._low_copy(v, value, "")))
        self.new_nodes.append(node)
        if w == {low, _FLOAT}:
            copy_name = self._new_value(f"{v}_{self.precision}", v, low)
            self.new_nodes.append(helper.make_node("Constant", [], [copy_name], value=self._low_copy(v, value, ""),
                                                   name=self.names.fresh(f"Constant_{self.precision}:{v}")))

    def _node(self, node: onnx.NodeProto, d: _Decision) -> None:
        for j, v in enumerate(node.input):
            want = d.ins[j]
            if not v or want is None or want == _ANY:
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


def _retype_attributes(node: onnx.NodeProto, d: _Decision, low: int, precision: str) -> None:
    """Rewrite the attributes that set a converted output's type (Cast 'to', ConstantOfShape 'value')."""
    if not d.outs or d.outs[0] != low:
        return
    if node.op_type == "Cast":
        for attr in node.attribute:
            if attr.name == "to" and attr.i == _FLOAT:
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


def _verify(converted: onnx.ModelProto, original: onnx.ModelProto, precision: str) -> None:
    """Full ONNX check of the result; a failure the original model does not have is a bug here."""
    from enginekit.graph.passes import PROTOBUF_LIMIT

    if converted.ByteSize() >= PROTOBUF_LIMIT:
        return
    try:
        onnx.checker.check_model(converted, full_check=True)
    except Exception as exc:  # noqa: BLE001 - checker and inference errors
        try:
            onnx.checker.check_model(original, full_check=True)
        except Exception:  # noqa: BLE001 - the original fails too: not this conversion's fault
            log.warning("the %s model fails the full ONNX check, as the original does: %s", precision, exc)
            return
        raise InternalError(f"The {precision} conversion produced a model that fails the ONNX checker: "
                            f"{' '.join(str(exc).split())[:500]}",
                            hint="Keep the failing node in FP32 with a precision plan, and report this bug.") from exc
