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

Modules: the plan file in :mod:`~enginekit.graph.precision_plan` (its names are re-exported here), per-node
decisions in :mod:`~enginekit.graph.precision_analysis`, the graph rewrite in :mod:`~enginekit.graph.precision_rewrite`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx
from onnx import TensorProto

from enginekit.errors import InternalError, InvalidArgumentError
from enginekit.graph.fp16_range import RangeKeep, find_range_keeps
from enginekit.graph.precision_analysis import FLOAT, Decision, analyze, label, shape_arithmetic
from enginekit.graph.precision_plan import (
    PLAN_PRECISIONS,
    PLAN_VERSION,
    PRECISIONS,
    WIDE,
    PlanEntry,
    PrecisionPlan,
    check_plan_nodes,
    check_precision,
    load_plan,
    save_plan,
)
from enginekit.graph.precision_rewrite import Rewriter, bf16_bits_to_float32, constant_value, round_to_bf16_bits
from enginekit.graph.schemas import DEFAULT_DOMAINS, opset_map
from enginekit.graph.values import inferred_types

__all__ = [
    "PLAN_PRECISIONS", "PLAN_VERSION", "PRECISIONS", "WIDE", "ConversionResult", "PlanEntry", "PrecisionPlan",
    "bf16_bits_to_float32", "check_plan_nodes", "convert_precision", "load_plan", "out_of_range_nodes",
    "round_to_bf16_bits", "save_plan",
]

log = logging.getLogger(__name__)


# --- conversion result ------------------------------------------------------------------------


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


def convert_precision(model: onnx.ModelProto, precision: str, plan: PrecisionPlan | None = None, *,
                      keep_io_types: bool = True) -> ConversionResult:
    """Run float32 compute in ``precision`` ('fp16' or 'bf16') except the plan's FP32 islands (see module doc).

    ``precision`` 'fp64' widens instead (float64 compute, no plan): the precision debugger's float64 reference.

    ``keep_io_types``: float32 graph inputs and outputs stay float32 (Casts after inputs, before outputs);
    otherwise they take the low type. The input model is not changed. Raises InvalidArgumentError (bad
    precision, plan made for another precision) and UnknownNameError (plan names unknown nodes).
    """
    if precision != WIDE:
        check_precision(precision, "precision")
    if plan is not None:
        if plan.precision != precision:
            raise InvalidArgumentError(f"The precision plan is for {plan.precision}, the conversion is to "
                                       f"{precision}.", hint=f"Use a plan made for {precision}, or change its "
                                       "'precision' field if its islands apply to both.")
        check_plan_nodes(plan, model)
    plan_nodes = set(plan.node_names()) if plan else set()
    work, types = inferred_types(model)
    g = work.graph
    opsets = opset_map(work)
    nodes = list(g.node)
    is_const = [n.op_type == "Constant" and n.domain in DEFAULT_DOMAINS for n in nodes]
    decisions = [Decision("neutral", [None] * len(n.input), [None] * len(n.output)) if is_const[i]
                 else analyze(n, types, precision, opsets, plan_nodes) for i, n in enumerate(nodes)]
    rw = Rewriter(g, precision, decisions, types, keep_io_types)
    range_kept = [] if precision == WIDE else _keep_out_of_range(nodes, decisions, _float_constants(g, types),
                                                                 types, precision)
    for i in shape_arithmetic(nodes, decisions, types, rw.constants, rw.uses, set(rw.required)):
        d = decisions[i]
        d.status, d.reason = "keep", "integer-derived arithmetic feeding integer or FP32 consumers (kept exact)"
        d.ins = [None if t is None else FLOAT for t in d.ins]
        d.outs = [None if t is None else FLOAT for t in d.outs]
    rw.run(nodes, is_const)
    kept = plan.node_names() if plan else []
    auto = [(label(n), d.reason) for n, d in zip(nodes, decisions, strict=True)
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
    out = {t.name: t for t in g.initializer if t.data_type == FLOAT and t.name not in inputs}
    for n in g.node:
        if n.op_type == "Constant" and n.domain in DEFAULT_DOMAINS and n.output and types.get(n.output[0]) == FLOAT:
            value = constant_value(n)
            if value is not None:
                out[n.output[0]] = value
    return out


def _keep_out_of_range(nodes: Sequence[onnx.NodeProto], decisions: list[Decision],
                       constants: Mapping[str, TensorProto], types: Mapping[str, int],
                       precision: str) -> list[RangeKeep]:
    """Keep converted nodes that read out-of-range constants in FP32; the entries applied."""
    applied = []
    for k in find_range_keeps(nodes, constants, types, precision):
        d = decisions[k.index]
        if d.status != "convert":
            continue  # already FP32 (plan, schema) or no float compute: nothing would be clipped for it
        d.status, d.reason = "keep", k.reason
        d.ins = [None if t is None else FLOAT for t in d.ins]
        d.outs = [None if t is None else FLOAT for t in d.outs]
        applied.append(k)
    return applied


def out_of_range_nodes(model: onnx.ModelProto, precision: str) -> list[RangeKeep]:
    """The nodes a conversion to ``precision`` keeps in FP32 for out-of-range constants, without converting:
    weak-typing TensorRT pins their layers to FP32 (the builder's FP16 flag would clip their weights)."""
    check_precision(precision, "precision")
    work, types = inferred_types(model)
    return find_range_keeps(list(work.graph.node), _float_constants(work.graph, types), types, precision)


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
