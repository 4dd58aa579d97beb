"""How :func:`enginekit.graph.precision.convert_precision` decides, node by node, what runs in the low type.

Each node gets a :class:`Decision`: 'convert' (its float32 slots take the low type), 'keep' (FP32, with the reason)
or 'neutral' (no float compute); :func:`shape_arithmetic` then keeps integer-derived arithmetic exact.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import onnx
from onnx import TensorProto

from enginekit.graph.precision_plan import WIDE
from enginekit.graph.schemas import DEFAULT_DOMAINS, node_schema, subgraphs
from enginekit.tensors import NUMPY_TO_ONNX, ONNX_FLOAT_TYPES, PRECISION_DTYPES, onnx_type_str

LOW_TYPE = {p: NUMPY_TO_ONNX[PRECISION_DTYPES[p]] for p in ("fp16", "bf16", WIDE)}  # precision -> ONNX type
LOW_STR = {p: onnx_type_str(t) for p, t in LOW_TYPE.items()}  # precision -> schema type string
FLOAT = TensorProto.FLOAT
ANY = 0  # a consumer slot that accepts float32 and the low type alike (Shape, Cast's input)
FLOATISH = set(ONNX_FLOAT_TYPES)
_ATTRIBUTE_TYPED = ("Cast", "ConstantOfShape")  # output type set by an attribute the rewriter rewrites


@dataclass
class Decision:
    """What one node does: 'convert', 'keep' (FP32) or 'neutral'; the type each float slot wants/produces."""

    status: str
    ins: list[int | None]
    outs: list[int | None]
    reason: str = ""


def label(node: onnx.NodeProto) -> str:
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


def analyze(node: onnx.NodeProto, types: Mapping[str, int], precision: str, opsets: Mapping[str, int],
             plan_nodes: set[str]) -> Decision:
    low = LOW_TYPE[precision]
    d = Decision("neutral", [None] * len(node.input), [None] * len(node.output))
    fin = [j for j, v in enumerate(node.input) if v and types.get(v) == FLOAT]
    fout = [j for j, v in enumerate(node.output) if v and types.get(v) == FLOAT]
    if not fin and not fout:
        return d

    def keep(reason: str) -> Decision:
        d.status, d.reason = "keep", reason
        for j in fin:
            d.ins[j] = FLOAT
        for j in fout:
            d.outs[j] = FLOAT
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
        floats = [(slots, j) for slots, name, j in members if types.get(name) == FLOAT]
        if not floats:
            continue
        problem = ""
        if var not in allowed:
            problem = f"input/output typed {var}"
        elif any(types.get(name) not in (None, FLOAT) for _, name, _ in members):
            problem = f"type {var} is shared with a non-float32 tensor"
        elif LOW_STR[precision] not in allowed[var]:
            problem = f"type {var} does not allow {LOW_STR[precision]} at {where}"
            since = _opset_allowing(node.op_type, var, LOW_STR[precision], opsets.get("", 0))
            if since is not None:
                problem += f" (it does from opset {since}: convert the model's opset first)"
        elif all(slots is d.outs for slots, _, _ in members) and node.op_type not in _ATTRIBUTE_TYPED:
            problem = f"output type {var} is set by an attribute"
        if problem:
            for slots, j in floats:
                slots[j] = FLOAT
            reasons.append(problem)
        elif len(members) == 1 and members[0][0] is d.ins:
            flexible.append((d.ins, members[0][2]))  # a lone input whose type ties no other tensor
        else:
            for slots, _, j in members:
                slots[j] = low
            converted = True
    for slots, j in flexible:
        slots[j] = low if converted else ANY
    if converted:
        d.status = "convert"
    elif any(t == FLOAT for t in (*d.ins, *d.outs)):
        d.status, d.reason = "keep", f"{node.op_type}: " + "; ".join(reasons)
    return d


def shape_arithmetic(nodes: Sequence[onnx.NodeProto], decisions: list[Decision], types: Mapping[str, int],
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
            seed = types.get(node.input[0]) not in (None, *FLOATISH)
        else:
            fl = [v for j, v in enumerate(node.input) if v and d.ins[j] is not None]
            seed = bool(fl) and all(v in derived or v in constants for v in fl) and any(v in derived for v in fl)
        if seed:
            candidates.append(i)
            derived.update(v for j, v in enumerate(node.output) if v and d.outs[j] is not None)

    def exact_consumer(c: int, k: int) -> bool:
        node = nodes[c]
        if node.op_type == "Cast" and node.domain in DEFAULT_DOMAINS:
            to = next((a.i for a in node.attribute if a.name == "to"), FLOAT)
            if to not in FLOATISH:
                return True
        return decisions[c].ins[k] == FLOAT or c in kept

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
