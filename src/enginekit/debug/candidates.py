"""Candidates of the precision debugger: how a plan becomes a model, how it runs, what the graph offers.

* :class:`FloatCandidates`: fp16/bf16 by :func:`enginekit.graph.precision.convert_precision`, the plan's
  nodes kept in FP32 (casts around them, IO types kept).
* :class:`Int8Candidates`: INT8 Q/DQ by onnxruntime's static quantizer with TensorRT's settings
  (:class:`enginekit.graph.quantize.Quantizer`, calibrated once), the plan's nodes left out of quantization.
* :func:`graph_facts`: the nodes a plan may keep, FLOPs; :func:`first_bad_node`: the naive baseline.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx

from enginekit.compare import CompareSettings, compare_arrays
from enginekit.debug.execute import Executor, Reference
from enginekit.graph.precision import PrecisionPlan, convert_precision
from enginekit.graph.values import elem_type, value_infos
from enginekit.registry import REDUCED_FLOAT_PRECISIONS
from enginekit.tensors import ONNX_FLOAT_TYPES

log = logging.getLogger(__name__)

Feed = dict[str, np.ndarray]


def run_onnx(model: onnx.ModelProto, feed: Mapping[str, np.ndarray], precision: str = "fp32") -> Feed:
    """Outputs of ``model`` on ``feed``: onnxruntime CPU for fp32 and int8; onnx's reference evaluator for
    fp16/bf16 (each value stored in its type; onnxruntime's CPU provider hides fp16 overflow, see
    :mod:`enginekit.debug.execute`)."""
    return Executor("onnx-reference" if precision in REDUCED_FLOAT_PRECISIONS else "ort").run(model, feed)


class FloatCandidates:
    """fp16/bf16 candidates: the model converted with the plan's nodes kept in FP32."""

    op_types: Sequence[str] | None = None  # every float node can be kept

    def __init__(self, model: onnx.ModelProto, precision: str) -> None:
        self.model, self.precision = model, precision

    def make(self, plan: PrecisionPlan | None) -> onnx.ModelProto:
        return convert_precision(self.model, self.precision, plan).model

    def close(self) -> None:
        return None


class Int8Candidates:
    """INT8 Q/DQ candidates: the plan's nodes are left out of quantization (calibrated once)."""

    def __init__(self, model: onnx.ModelProto, calibration: Iterable[Mapping[str, np.ndarray]],
                 method: str = "minmax") -> None:
        from enginekit.graph.quantize import WEIGHTED_OPS, Quantizer

        self.op_types: Sequence[str] | None = WEIGHTED_OPS
        self.precision = "int8"
        self.quantizer = Quantizer(model, calibration, method=method)
        self.info: dict[str, object] = {"calibration_method": method}

    def make(self, plan: PrecisionPlan | None) -> onnx.ModelProto:
        result = self.quantizer.quantize(plan.node_names() if plan else ())
        self.info.update({"calibration_feeds": result.calibration_feeds, "preprocess": result.preprocess})
        if plan is None:
            self.info["quantized_nodes"] = result.quantized_nodes  # of the all-INT8 model
        return result.load()

    def close(self) -> None:
        self.quantizer.close()


Candidates = FloatCandidates | Int8Candidates


# --- graph facts --------------------------------------------------------------------------------


def _with_feed_shapes(model: onnx.ModelProto, feed: Mapping[str, np.ndarray] | None) -> onnx.ModelProto:
    from enginekit.graph.passes import infer_shapes

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        if feed and vi.name in feed and vi.type.HasField("tensor_type"):
            shape = vi.type.tensor_type.shape
            shape.ClearField("dim")
            for d in np.asarray(feed[vi.name]).shape:
                shape.dim.add().dim_value = int(d)
    try:
        return infer_shapes(m, strict=False)
    except Exception as exc:  # noqa: BLE001 - FLOPs and types then come from what the model declares
        log.warning("shape inference failed (%s); FLOP estimates may be rough", exc)
        return m


def _dims(tp: onnx.TypeProto | None) -> list[int] | None:
    if tp is None or not tp.HasField("tensor_type") or not tp.tensor_type.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tp.tensor_type.shape.dim]
    return None if any(d < 0 for d in dims) else dims


def _flops(node: onnx.NodeProto, infos: Mapping[str, onnx.TypeProto]) -> float:
    """2*M*N*K for MatMul/Gemm, 2*out*(Cin/group*kernel) for Conv, else the output elements."""
    out = _dims(infos.get(node.output[0])) if node.output else None
    out_elems = float(np.prod(out)) if out is not None else 1.0
    ins = [_dims(infos.get(v)) if v else None for v in node.input]
    if node.op_type in ("MatMul", "Gemm") and ins and ins[0]:
        a = ins[0]
        trans_a = any(at.name == "transA" and at.i for at in node.attribute)
        k = a[0] if node.op_type == "Gemm" and trans_a and len(a) == 2 else a[-1]
        return 2.0 * out_elems * k
    if node.op_type == "Conv" and len(ins) > 1 and ins[1]:
        return 2.0 * out_elems * float(np.prod(ins[1][1:]))
    return out_elems


@dataclass(frozen=True)
class GraphFacts:
    """What the search works over: the nodes a plan may keep, in topological order, and their FLOPs."""

    order: list[str]  # named nodes a plan may keep (float compute; int8: quantizable ops), topological order
    flops: dict[str, float]  # every named float node
    total_flops: float
    unnamed: int
    position: dict[str, int]  # topological index of every named node

    def after(self, node: str) -> int:
        """Plan candidates from ``node`` (inclusive) to the end: the naive "everything after" plan's size."""
        start = self.position.get(node, 0)
        return sum(1 for n in self.order if self.position[n] >= start)


def graph_facts(model: onnx.ModelProto, feed: Mapping[str, np.ndarray] | None,
                op_types: Sequence[str] | None = None) -> GraphFacts:
    """Plan candidates of ``model``: named nodes with float compute (restricted to ``op_types`` if given)."""
    inferred = _with_feed_shapes(model, feed)
    infos = value_infos(inferred.graph)
    order: list[str] = []
    flops: dict[str, float] = {}
    position: dict[str, int] = {}
    unnamed = 0
    for i, node in enumerate(inferred.graph.node):
        if node.name:
            position.setdefault(node.name, i)
        if node.op_type == "Constant":
            continue
        floats = any(elem_type(infos.get(v)) in ONNX_FLOAT_TYPES for v in (*node.input, *node.output) if v)
        if not floats:
            continue
        if not node.name:
            unnamed += 1
            continue
        if node.name not in flops:
            flops[node.name] = _flops(node, infos)
            if op_types is None or node.op_type in op_types:
                order.append(node.name)
    return GraphFacts(order, flops, sum(flops.values()) or 1.0, unnamed, position)


# --- baseline -----------------------------------------------------------------------------------


def first_bad_node(model: onnx.ModelProto, reference: Reference, candidate: onnx.ModelProto, executor: Executor,
                   feeds: Sequence[Mapping[str, np.ndarray]], precision: str, nodes: Sequence[str],
                   compare: CompareSettings | None) -> str | None:
    """The first of ``nodes`` (topological order) whose candidate output has NaN/Inf the reference lacks, or
    fails the scale-aware comparison; None when no node output can be told apart. Values are matched by
    name (the candidate keeps the original names of node outputs)."""
    from enginekit.compare.per_precision import settings_for_precision

    wanted = set(nodes)
    produced = {o for n in candidate.graph.node for o in n.output}
    node_outputs = [(str(n.name), [str(v) for v in n.output if v and v in produced])
                    for n in model.graph.node if n.name in wanted]
    values = list(dict.fromkeys(v for _, outs in node_outputs for v in outs))
    observing = Executor(executor.backend, observing=True)
    try:
        refs = [reference.run(f, values) for f in feeds]
        lows = [observing.run(candidate, f, values) for f in feeds]
    except Exception as exc:  # noqa: BLE001 - the baseline is informative only
        log.info("baseline (first bad layer) not measured: %s", exc)
        return None
    base = compare or CompareSettings()
    plain = replace(base, atol=replace(base.atol, per_output=()), rtol=replace(base.rtol, per_output=()))
    for name, outs in node_outputs:
        for v in outs:
            for ref, low in zip(refs, lows, strict=True):
                r, c = ref.get(v), low.get(v)
                if r is None or c is None or not np.issubdtype(r.dtype, np.floating):
                    continue
                c32 = c.astype(np.float32)
                if int((~np.isfinite(c32)).sum()) > int((~np.isfinite(r)).sum()):
                    return name
                settings = settings_for_precision(plain, precision, {v: r})
                if r.shape == c32.shape and not compare_arrays(v, r.astype(np.float32), c32, settings).passed:
                    return name
    return None
