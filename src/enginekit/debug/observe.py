"""Reference pass with every intermediate tensor observed, memory-bounded.

Intermediate node outputs are added as graph outputs ``chunk_size`` at a time; onnxruntime (CPU, graph
optimizations disabled so values keep their names) runs once per chunk, and each tensor is reduced to
:class:`TensorStats` right away, so a large model never holds all its activations at once.

Note: onnxruntime's CPU provider has no float16 kernels for many ops and runs them in float32 between
inserted Casts; an observed float16 value is rounded when it is fetched, but its consumers may have used
the unrounded value. Observed low-precision tensors are therefore faithful up to the first bad one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from enginekit.errors import InvalidArgumentError

log = logging.getLogger(__name__)

FLOAT_TYPES = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16",
               TensorProto.BFLOAT16: "bfloat16", TensorProto.DOUBLE: "float64"}
# (largest finite value, smallest subnormal, smallest normal) of each target precision
TARGET_LIMITS: dict[str, tuple[float, float, float]] = {
    "fp16": (65504.0, 2.0**-24, 2.0**-14),
    "bf16": (3.3895313892515355e38, 2.0**-133, 2.0**-126),
}


@dataclass(frozen=True)
class TensorStats:
    """Statistics of one tensor, relative to a target precision's range."""

    name: str
    node: str
    op_type: str
    dtype: str
    shape: tuple[int, ...]
    max_abs: float
    min: float
    max: float
    mean: float
    fraction_overflow: float  # |x| > target max
    fraction_underflow_to_zero: float  # 0 < |x| < target's smallest subnormal
    fraction_subnormal: float  # smallest subnormal <= |x| < smallest normal
    nan_count: int
    inf_count: int

    def to_dict(self) -> dict[str, Any]:
        from enginekit.compare.result import json_safe

        data = dict(self.__dict__)
        data["shape"] = list(self.shape)
        result: dict[str, Any] = json_safe(data)
        return result


Reducer = Callable[[str, np.ndarray, str, str], TensorStats]  # (name, array, node, op_type) -> stats


def tensor_stats(name: str, array: np.ndarray, node: str = "", op_type: str = "", *, target: str = "fp16"
                 ) -> TensorStats:
    """Reduce ``array`` to :class:`TensorStats` against ``target``'s range (finite elements only for min/max/mean)."""
    top, sub, normal = _limits(target)
    a = np.asarray(array)
    values = a.astype(np.float64, copy=False) if a.dtype != np.float64 else a
    finite = values[np.isfinite(values)]
    absf = np.abs(finite)
    n = max(int(a.size), 1)
    return TensorStats(
        name=name, node=node, op_type=op_type, dtype=str(a.dtype), shape=tuple(int(d) for d in a.shape),
        max_abs=float(absf.max()) if absf.size else 0.0,
        min=float(finite.min()) if finite.size else 0.0,
        max=float(finite.max()) if finite.size else 0.0,
        mean=float(finite.mean()) if finite.size else 0.0,
        fraction_overflow=float(np.count_nonzero(absf > top)) / n,
        fraction_underflow_to_zero=float(np.count_nonzero((absf > 0) & (absf < sub))) / n,
        fraction_subnormal=float(np.count_nonzero((absf >= sub) & (absf < normal))) / n,
        nan_count=int(np.count_nonzero(np.isnan(values))),
        inf_count=int(np.count_nonzero(np.isinf(values))),
    )


def _limits(target: str) -> tuple[float, float, float]:
    if target not in TARGET_LIMITS:
        raise InvalidArgumentError(f"target precision {target!r} is not one of {', '.join(TARGET_LIMITS)}.")
    return TARGET_LIMITS[target]


class Observation(dict[str, TensorStats]):
    """``observe``'s result: tensor name -> stats in topological order, plus how the pass ran."""

    def __init__(self) -> None:
        super().__init__()
        self.peak_arrays = 0  # most arrays held at once
        self.chunks = 0  # onnxruntime runs


@dataclass(frozen=True)
class ObservedValue:
    """A float value produced by a node: what observe and the layerwise diff iterate over."""

    name: str
    node: str
    op_type: str
    elem_type: int


def node_label(node: onnx.NodeProto) -> str:
    return node.name or f"<{node.op_type} -> {node.output[0] if node.output else '?'}>"


def float_values(model: onnx.ModelProto) -> list[ObservedValue]:
    """Float outputs of the graph's nodes (Constant nodes excluded), in topological (node) order."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # noqa: BLE001 - fall back to the model's own value_info
        log.warning("shape inference failed (%s); using the model's own value_info", exc)
        inferred = model
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*g.value_info, *g.output, *g.input)
             if vi.type.HasField("tensor_type")}
    out: list[ObservedValue] = []
    for node in model.graph.node:
        if node.op_type == "Constant":
            continue
        for v in node.output:
            if v and types.get(v) in FLOAT_TYPES:
                out.append(ObservedValue(v, node_label(node), node.op_type, types[v]))
    return out


def _session(model: onnx.ModelProto) -> Any:
    from enginekit.deps import require

    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _with_outputs(model: onnx.ModelProto, values: Sequence[ObservedValue]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs are exactly ``values`` (other outputs removed)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    existing = {o.name: o for o in model.graph.output}
    del copy.graph.output[:]
    for v in values:
        if v.name in existing:
            copy.graph.output.append(existing[v.name])
        else:
            copy.graph.output.append(onnx.helper.make_tensor_value_info(v.name, v.elem_type, None))
    return copy


def iter_chunks(model: onnx.ModelProto, feed: Mapping[str, np.ndarray], values: Sequence[ObservedValue],
                chunk_size: int = 64) -> Iterator[list[tuple[ObservedValue, np.ndarray]]]:
    """Run ``model`` once per ``chunk_size`` values and yield that chunk's (value, array) pairs."""
    if chunk_size < 1:
        raise InvalidArgumentError(f"chunk_size must be at least 1, got {chunk_size}.")
    inputs = {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer}
    run_feed = {k: v for k, v in feed.items() if k in inputs}
    for start in range(0, len(values), chunk_size):
        chunk = list(values[start:start + chunk_size])
        session = _session(_with_outputs(model, chunk))
        arrays = session.run([v.name for v in chunk], run_feed)
        del session
        yield list(zip(chunk, arrays, strict=True))


def observe(model: onnx.ModelProto, feed: Mapping[str, np.ndarray], *, chunk_size: int = 64,
            reducer: Reducer | None = None, target: str = "fp16") -> Observation:
    """Stats of every float intermediate of ``model`` on ``feed``, ``chunk_size`` tensors per run.

    ``reducer(name, array, node, op_type)`` replaces :func:`tensor_stats` (whose range is ``target``'s).
    """
    _limits(target)

    def default(name: str, array: np.ndarray, node: str, op_type: str) -> TensorStats:
        return tensor_stats(name, array, node, op_type, target=target)

    reduce = reducer or default
    result = Observation()
    values = float_values(model)
    for pairs in iter_chunks(model, feed, values, chunk_size):
        result.chunks += 1
        result.peak_arrays = max(result.peak_arrays, len(pairs))
        for value, array in pairs:
            result[value.name] = reduce(value.name, array, value.node, value.op_type)
        del pairs
    log.info("observed %d tensors in %d runs (at most %d arrays at once)", len(result), result.chunks,
             result.peak_arrays)
    return result


def observe_arrays(model: onnx.ModelProto, feed: Mapping[str, np.ndarray], names: Sequence[str], *,
                   chunk_size: int = 64) -> dict[str, np.ndarray]:
    """Raw arrays of the named node outputs (keep ``names`` small: they are all returned)."""
    by_name = {v.name: v for v in float_values(model)}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise InvalidArgumentError(f"{len(unknown)} name(s) are not float node outputs of the model: "
                                   f"{', '.join(map(repr, unknown[:5]))}.")
    out: dict[str, np.ndarray] = {}
    for pairs in iter_chunks(model, feed, [by_name[n] for n in names], chunk_size):
        out.update((v.name, a) for v, a in pairs)
    return out
