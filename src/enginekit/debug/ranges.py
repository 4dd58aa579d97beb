"""Range analysis: which nodes of an FP32 model will not survive a lower precision, from one observed pass.

From the FP32 reference's :class:`~enginekit.debug.observe.TensorStats` and the weights (initializers and
Constant values), nodes are ranked by risk for the target: fp16 (max 65504, smallest subnormal 2**-24)
overflows and underflows; bf16 has FP32's range, so only values beyond it are flagged (its risk is precision,
which the layerwise diff measures). A node whose output overflows while its inputs do not is an *origin*
(highest score); reductions and normalizations downstream of a risky node amplify its error and are flagged.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import numpy_helper

from enginekit.debug.observe import TARGET_LIMITS, TensorStats, node_label, observe, tensor_stats

if TYPE_CHECKING:
    from enginekit.debug.execute import Reference

AMPLIFIERS = frozenset({"ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "Softmax",
                        "LogSoftmax", "LayerNormalization", "BatchNormalization", "InstanceNormalization",
                        "GroupNormalization", "LpNormalization", "Pow", "Exp", "Sqrt", "Reciprocal", "Div"})
UNDERFLOW_MIN_FRACTION = 0.01  # report underflow when at least this share of values round to zero
INT8_ZERO_MIN_FRACTION = 0.05  # int8: report when this share of a quantized input rounds to zero
INT8_COARSE_MIN_FRACTION = 0.5  # ... or when this share keeps fewer than 3 bits
# per-channel weight axis of ONNX Runtime's quantizer (Gemm: 0 with transB, else 1)
_WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1, "MatMul": -1}


@dataclass(frozen=True)
class RiskyNode:
    node: str
    op_type: str
    reason: str
    score: float
    stats: TensorStats | None = None
    kind: str = "activation"  # activation | weight | underflow | amplifier | inherited

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "op_type": self.op_type, "reason": self.reason, "score": round(self.score, 3),
                "kind": self.kind, "stats": self.stats.to_dict() if self.stats else None}


@dataclass(frozen=True)
class RangeReport:
    precision: str
    risky: list[RiskyNode] = field(default_factory=list)  # highest score first
    tensors_observed: int = 0

    def nodes(self) -> list[str]:
        return [r.node for r in self.risky]

    def origins(self) -> list[RiskyNode]:
        """Risks that start at a node (activation/weight/underflow), not ones inherited or amplified."""
        return [r for r in self.risky if r.kind in ("activation", "weight", "underflow")]

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "tensors_observed": self.tensors_observed,
                "risky": [r.to_dict() for r in self.risky]}


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for t in model.graph.initializer:
        if t.data_type == onnx.TensorProto.FLOAT and t.data_location != onnx.TensorProto.EXTERNAL:
            out[t.name] = numpy_helper.to_array(t)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value" and a.HasField("t") and a.t.data_type == onnx.TensorProto.FLOAT:
                    out[n.output[0]] = numpy_helper.to_array(a.t)
    return out


def _overflow_score(max_abs: float, top: float) -> float:
    return 100.0 + 10.0 * math.log10(max(max_abs, top) / top)


def analyze_ranges(model: onnx.ModelProto, feed: Mapping[str, np.ndarray] | None = None, *,
                   precision: str = "fp16", stats: Mapping[str, TensorStats] | None = None,
                   chunk_size: int = 64, reference: Reference | None = None) -> RangeReport:
    """Rank ``model``'s nodes by range risk for ``precision``; ``stats`` (from :func:`observe` with the same
    target) saves the reference pass, else it is run on ``feed`` (with ``reference``'s model and executor
    when given, e.g. the float64 reference). int8: see :func:`analyze_int8`."""
    if stats is None:
        if feed is None:
            from enginekit.errors import InvalidArgumentError

            raise InvalidArgumentError("analyze_ranges needs either a feed or observed stats.")
        ref_model = reference.model if reference is not None else model
        stats = observe(ref_model, feed, chunk_size=chunk_size, target=precision,
                        executor=reference.executor if reference is not None else None)
    if precision == "int8":
        return analyze_int8(model, stats, feed or {})
    top, sub, _ = TARGET_LIMITS[precision] if precision in TARGET_LIMITS else TARGET_LIMITS["fp16"]
    nodes = [n for n in model.graph.node if n.op_type != "Constant"]
    weights = _weights(model)
    risky: dict[str, RiskyNode] = {}

    def add(r: RiskyNode) -> None:
        if r.node not in risky or risky[r.node].score < r.score:
            risky[r.node] = r

    overflowing = {name for name, s in stats.items() if s.max_abs > top}
    for node in nodes:
        label = node_label(node)
        for w in (v for v in node.input if v in weights):
            ws = tensor_stats(w, weights[w], label, node.op_type, target=precision)
            if ws.max_abs > top:
                add(RiskyNode(label, node.op_type, f"weight {w!r} overflows {precision} (max |w| = {ws.max_abs:.3g})",
                              _overflow_score(ws.max_abs, top) + 5.0, ws, "weight"))
            elif ws.fraction_underflow_to_zero >= UNDERFLOW_MIN_FRACTION:
                share = ws.fraction_underflow_to_zero
                add(RiskyNode(label, node.op_type, f"{share:.0%} of weight {w!r} values underflow to zero in "
                              f"{precision}", 10.0 * share, ws, "underflow"))
        for v in node.output:
            s = stats.get(v)
            if s is None:
                continue
            if v in overflowing:
                inherited = any(i in overflowing for i in node.input)
                if inherited:
                    add(RiskyNode(label, node.op_type, f"activation overflows {precision} (max |x| = {s.max_abs:.3g}), "
                                  "inherited from an overflowing input", 0.5 * _overflow_score(s.max_abs, top), s,
                                  "inherited"))
                else:
                    add(RiskyNode(label, node.op_type, f"activation overflows {precision} (max |x| = {s.max_abs:.3g}, "
                                  f"{s.fraction_overflow:.1%} of values)", _overflow_score(s.max_abs, top), s))
            elif s.fraction_underflow_to_zero >= UNDERFLOW_MIN_FRACTION:
                add(RiskyNode(label, node.op_type, f"{s.fraction_underflow_to_zero:.0%} of values underflow to zero "
                              f"in {precision}", 10.0 * s.fraction_underflow_to_zero, s, "underflow"))
    # reductions / normalizations downstream of a risky node amplify its error
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in nodes:
        for v in node.input:
            consumers[v].append(node)
    by_label = {node_label(n): n for n in nodes}
    for origin in [r for r in list(risky.values()) if r.kind != "inherited"]:
        queue: deque[tuple[onnx.NodeProto, int]] = deque([(by_label[origin.node], 0)])
        seen = {origin.node}
        while queue:
            node, depth = queue.popleft()
            for v in node.output:
                for c in consumers.get(v, []):
                    label = node_label(c)
                    if label in seen:
                        continue
                    seen.add(label)
                    queue.append((c, depth + 1))
                    if c.op_type in AMPLIFIERS:
                        out = stats.get(c.output[0]) if c.output else None
                        add(RiskyNode(label, c.op_type, f"{c.op_type} downstream of risky node {origin.node!r} "
                                      f"({depth + 1} step(s)) amplifies its error", origin.score / (4.0 + depth),
                                      out, "amplifier"))
    ranked = sorted(risky.values(), key=lambda r: -r.score)
    return RangeReport(precision, ranked, len(stats))


def _weight_axis(node: onnx.NodeProto) -> int:
    if node.op_type == "Gemm":
        return 0 if any(a.name == "transB" and a.i for a in node.attribute) else 1
    return _WEIGHT_AXIS.get(node.op_type, 0)


def per_channel_zero_fraction(weight: np.ndarray, axis: int) -> float:
    """Share of a weight's non-zero values that round to zero with per-channel symmetric INT8 scales."""
    w = np.moveaxis(np.asarray(weight, dtype=np.float64), axis, 0).reshape(weight.shape[axis], -1)
    step = np.abs(w).max(axis=1, keepdims=True) / 127.0
    zero = (w != 0) & (np.abs(w) < step / 2)
    return float(zero.sum()) / max(w.size, 1)


def analyze_int8(model: onnx.ModelProto, stats: Mapping[str, TensorStats],
                 feed: Mapping[str, np.ndarray]) -> RangeReport:
    """INT8 risks of the quantizable nodes (Conv, ConvTranspose, Gemm, MatMul): inputs that lose resolution.

    A calibrated symmetric scale maps max|x| to 127 steps, so one outlier (an outlier channel, a spike)
    sends every small value to zero. Activations are quantized per tensor; weights per output channel
    (a large weight within one channel has the same effect). Scores: 100 x the share rounding to zero
    plus 20 x the share left with fewer than 3 bits. The plan's candidates are these nodes: an INT8 plan
    leaves nodes out of quantization; nothing else can be kept in float.
    """
    from enginekit.debug.observe import INT8_COARSE_STEPS
    from enginekit.graph.quantize import WEIGHTED_OPS

    weights = _weights(model)
    observed: dict[str, TensorStats] = dict(stats)
    for name, value in feed.items():  # graph inputs are not node outputs: reduce them here
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            observed.setdefault(name, tensor_stats(name, np.asarray(value), "<input>", "", target="int8"))
    risky: dict[str, RiskyNode] = {}
    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS:
            continue
        label = node_label(node)
        for slot, v in enumerate(node.input[:2]):
            if not v:
                continue
            if v in weights:
                share = per_channel_zero_fraction(weights[v], _weight_axis(node)) if weights[v].ndim > 1 else 0.0
                if share >= INT8_ZERO_MIN_FRACTION:
                    ws = tensor_stats(v, weights[v], label, node.op_type, target="int8")
                    r = RiskyNode(label, node.op_type, f"{share:.0%} of weight {v!r} values round to zero at their "
                                  "channel's INT8 step (a few large weights set each channel's scale)",
                                  100.0 * share, ws, "weight")
                    if label not in risky or risky[label].score < r.score:
                        risky[label] = r
                continue
            s = observed.get(v)
            if s is None:
                continue
            zero, coarse = s.fraction_underflow_to_zero, s.fraction_subnormal
            if zero < INT8_ZERO_MIN_FRACTION and coarse < INT8_COARSE_MIN_FRACTION:
                continue
            step = s.max_abs / 127.0
            more = f", a further {coarse:.0%} keep fewer than {INT8_COARSE_STEPS} of 127 steps" if coarse else ""
            r = RiskyNode(label, node.op_type, f"input {slot} {v!r}: {zero:.0%} of values round to zero{more} at "
                          f"the INT8 step {step:.3g} (max |x| = {s.max_abs:.3g}, mean {s.mean:.3g})",
                          100.0 * zero + 20.0 * coarse, s, "underflow")
            if label not in risky or risky[label].score < r.score:
                risky[label] = r
    ranked = sorted(risky.values(), key=lambda r: -r.score)
    return RangeReport("int8", ranked, len(stats))
