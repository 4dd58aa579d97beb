"""Reference pass with every intermediate tensor observed, memory-bounded.

Intermediate node outputs are requested ``chunk_size`` at a time; the model runs once per chunk (onnxruntime
CPU with graph optimizations disabled so values keep their names, or another executor of
:mod:`enginekit.debug.execute`), and each tensor is reduced to :class:`TensorStats` right away, so a large
model never holds all its activations at once (onnxruntime frees what no requested output needs; onnx's
reference evaluator, used for float64 references, keeps one run's values until it returns).

Note: onnxruntime's CPU provider has no float16 kernels for many ops and runs them in float32 between
inserted Casts; an observed float16 value is rounded when it is fetched, but its consumers may have used
the unrounded value. Low-precision candidates are therefore observed in the reference evaluator by default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from enginekit.errors import InvalidArgumentError
from enginekit.graph.values import value_types
from enginekit.tensors import ONNX_FLOAT_TYPES

if TYPE_CHECKING:
    from enginekit.debug.execute import Executor

log = logging.getLogger(__name__)

# (largest finite value, smallest subnormal, smallest normal) of each target precision
TARGET_LIMITS: dict[str, tuple[float, float, float]] = {
    "fp16": (65504.0, 2.0**-24, 2.0**-14),
    "bf16": (3.3895313892515355e38, 2.0**-133, 2.0**-126),
}
# int8 has no fixed range: symmetric quantization calibrated on the tensor scales max|x| to 127 steps, so
# nothing overflows; values under half a step round to zero, and values under INT8_COARSE_STEPS steps keep
# fewer than 3 bits (reported in the "subnormal" field for int8).
INT8_LEVELS = 127
INT8_COARSE_STEPS = 8
TARGETS: tuple[str, ...] = (*TARGET_LIMITS, "int8")


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
    fraction_overflow: float  # |x| > target max (int8: 0, the scale is calibrated on the tensor)
    fraction_underflow_to_zero: float  # 0 < |x| < target's smallest subnormal (int8: < half a step)
    fraction_subnormal: float  # smallest subnormal <= |x| < smallest normal (int8: half a step to 8 steps)
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
    """Reduce ``array`` to :class:`TensorStats` against ``target``'s range (finite elements only for min/max/mean).

    int8: per-tensor symmetric scale max|x| / 127, as a calibrator that saw this tensor would choose.
    """
    a = np.asarray(array)
    values = a.astype(np.float64, copy=False) if a.dtype != np.float64 else a
    finite = values[np.isfinite(values)]
    absf = np.abs(finite)
    if target == "int8":
        step = float(absf.max()) / INT8_LEVELS if absf.size else 0.0
        top, sub, normal = np.inf, step / 2, step * INT8_COARSE_STEPS
    else:
        top, sub, normal = _limits(target)
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
    types = value_types(model)
    out: list[ObservedValue] = []
    for node in model.graph.node:
        if node.op_type == "Constant":
            continue
        for v in node.output:
            if v and types.get(v) in ONNX_FLOAT_TYPES:
                out.append(ObservedValue(v, node_label(node), node.op_type, types[v]))
    return out


def iter_chunks(model: onnx.ModelProto, feed: Mapping[str, np.ndarray], values: Sequence[ObservedValue],
                chunk_size: int = 64, executor: Executor | None = None
                ) -> Iterator[list[tuple[ObservedValue, np.ndarray]]]:
    """Run ``model`` once per ``chunk_size`` values and yield that chunk's (value, array) pairs.

    ``executor``: onnxruntime CPU with graph optimizations off unless given (see :mod:`enginekit.debug.execute`).
    """
    from enginekit.debug.execute import Executor

    if chunk_size < 1:
        raise InvalidArgumentError(f"chunk_size must be at least 1, got {chunk_size}.")
    run = executor or Executor("ort", observing=True)
    if run.backend == "onnx-reference":
        # the reference evaluator holds every value of a run anyway: one run serves all chunks
        everything = run.run(model, feed, [v.name for v in values])
        for start in range(0, len(values), chunk_size):
            yield [(v, everything.pop(v.name)) for v in values[start:start + chunk_size]]
        return
    for start in range(0, len(values), chunk_size):
        chunk = list(values[start:start + chunk_size])
        arrays = run.run(model, feed, [v.name for v in chunk])
        yield [(v, arrays[v.name]) for v in chunk]
        del arrays


def observe(model: onnx.ModelProto, feed: Mapping[str, np.ndarray], *, chunk_size: int = 64,
            reducer: Reducer | None = None, target: str = "fp16", executor: Executor | None = None) -> Observation:
    """Stats of every float intermediate of ``model`` on ``feed``, ``chunk_size`` tensors per run.

    ``reducer(name, array, node, op_type)`` replaces :func:`tensor_stats` (whose range is ``target``'s);
    ``executor`` runs the model (default: onnxruntime CPU, graph optimizations off).
    """
    if target != "int8":
        _limits(target)

    def default(name: str, array: np.ndarray, node: str, op_type: str) -> TensorStats:
        return tensor_stats(name, array, node, op_type, target=target)

    reduce = reducer or default
    result = Observation()
    values = float_values(model)
    for pairs in iter_chunks(model, feed, values, chunk_size, executor):
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
