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
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from enginekit.debug.observe import TARGET_LIMITS, TensorStats, node_label, observe, tensor_stats

AMPLIFIERS = frozenset({"ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "Softmax",
                        "LogSoftmax", "LayerNormalization", "BatchNormalization", "InstanceNormalization",
                        "GroupNormalization", "LpNormalization", "Pow", "Exp", "Sqrt", "Reciprocal", "Div"})
UNDERFLOW_MIN_FRACTION = 0.01  # report underflow when at least this share of values round to zero


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
                   chunk_size: int = 64) -> RangeReport:
    """Rank ``model``'s nodes by range risk for ``precision``; ``stats`` (from :func:`observe` with the same
    target) saves the reference pass, else it is run on ``feed``."""
    top, sub, _ = TARGET_LIMITS[precision] if precision in TARGET_LIMITS else TARGET_LIMITS["fp16"]
    if stats is None:
        if feed is None:
            from enginekit.errors import InvalidArgumentError

            raise InvalidArgumentError("analyze_ranges needs either a feed or observed stats.")
        stats = observe(model, feed, chunk_size=chunk_size, target=precision)
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
