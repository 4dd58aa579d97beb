"""How the precision debugger runs ONNX models: executors for the candidate and the reference.

* ``onnx-reference``: onnx's ReferenceEvaluator (numpy), every value stored in its own type (fp16, bf16
  through ml_dtypes, float64), with the inference-mode BatchNormalization fix of the onnx-reference backend.
  The faithful low-precision emulator on a CPU; slow, and it holds one run's activations in memory.
* ``ort``: onnxruntime's CPU provider. Real INT8 kernels for Q/DQ models; but no fp16 emulator: fp16 nodes
  without CPU kernels run in float32 between Casts it removes, so an fp16 overflow between two such nodes
  never happens there (a candidate can pass in ``ort`` that a GPU engine fails).

Candidates run with the backend the user picks (``--backend``); the reference is FP32 in onnxruntime, or
float64 in the reference evaluator (``--reference fp64``: the model widened by ``convert_precision``, IO
float32, so values and names match the FP32 model).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from enginekit.errors import InvalidArgumentError

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("onnx-reference", "ort")
REFERENCES: tuple[str, ...] = ("fp32", "fp64")
# where a backend of enginekit's registry cannot be the debugger's candidate runner, and what to do instead
_ELSEWHERE = {
    "tensorrt": "TensorRT cannot expose every intermediate without changing its fusions, and needs a GPU",
    "tensorrt-rtx": "TensorRT-RTX cannot expose every intermediate without changing its fusions, and needs a GPU",
    "openvino": "OpenVINO's CPU plugin runs fp16 models at its own inference precision (no per-node fp16 "
                "emulation)",
}


def default_backend(precision: str) -> str:
    """int8: onnxruntime (real INT8 kernels for Q/DQ); fp16/bf16: the reference evaluator (faithful rounding)."""
    return "ort" if precision == "int8" else "onnx-reference"


def check_backend(name: str) -> str:
    """``name`` if the debugger can run candidates with it, else InvalidArgumentError saying what to do."""
    if name in BACKENDS:
        return name
    why = _ELSEWHERE.get(name)
    hint = ("Debug on the CPU here, then verify the plan on the target with --check \"CMD\" (e.g. a script that "
            "builds the candidate $MODEL with `enginekit build` and compares it), or build with "
            "`enginekit build --precision-plan plan.json`.")
    if why:
        raise InvalidArgumentError(f"--backend {name}: {why}; the precision debugger runs candidates with "
                                   f"{' or '.join(BACKENDS)}.", hint=hint)
    raise InvalidArgumentError(f"--backend {name!r} is not one of {', '.join(BACKENDS)}.")


@dataclass(frozen=True)
class Executor:
    """Runs a model on one feed and returns the named values (graph outputs or intermediates)."""

    backend: str
    observing: bool = False  # onnxruntime: graph optimizations off, so intermediate values keep their names

    def run(self, model: onnx.ModelProto, feed: Mapping[str, np.ndarray],
            names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        inputs = {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer}
        run_feed = {k: v for k, v in feed.items() if k in inputs}
        if self.backend == "onnx-reference":
            return _run_reference(model, run_feed, names)
        if self.backend == "ort":
            return _run_ort(model, run_feed, names, self.observing)
        raise InvalidArgumentError(f"Unknown debugger backend {self.backend!r}.")


def _with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs are ``names`` (types left to the runtime)."""
    from enginekit.graph.values import value_types

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    existing = {o.name: o for o in model.graph.output}
    types = value_types(model)
    del copy.graph.output[:]
    for name in names:
        if name in existing:
            copy.graph.output.append(existing[name])
        else:
            copy.graph.output.append(onnx.helper.make_tensor_value_info(name, types.get(name, 0), None))
    return copy


def _run_reference(model: onnx.ModelProto, feed: Mapping[str, np.ndarray],
                   names: Sequence[str] | None) -> dict[str, np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    from enginekit.backends.onnx_reference import inference_batchnorm_ops

    wanted = list(names) if names is not None else [o.name for o in model.graph.output]
    with np.errstate(all="ignore"):
        sess = ReferenceEvaluator(model, new_ops=inference_batchnorm_ops(model) or None)
        values = sess.run(wanted, dict(feed))  # intermediates are returned by name as well
    return {n: np.asarray(v) for n, v in zip(wanted, values, strict=True)}


def _run_ort(model: onnx.ModelProto, feed: Mapping[str, np.ndarray], names: Sequence[str] | None,
             observing: bool) -> dict[str, np.ndarray]:
    from enginekit.ortsession import ort_session

    graph_outputs = [o.name for o in model.graph.output]
    wanted = list(names) if names is not None else graph_outputs
    if set(wanted) - set(graph_outputs):
        model = _with_outputs(model, wanted)
    sess = ort_session(model.SerializeToString(), purpose="the precision debugger's onnxruntime runs",
                       log_severity=3, graph_optimization="disable" if observing else None)
    values = sess.run(wanted, dict(feed))
    return {n: np.asarray(v) for n, v in zip(wanted, values, strict=True)}


@dataclass(frozen=True)
class Reference:
    """The reference of a debugging session: the model as run (float64-widened for fp64) and its executor."""

    precision: str
    model: onnx.ModelProto
    executor: Executor

    def run(self, feed: Mapping[str, np.ndarray], names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Values as float32 where they are float64 (computed wide, compared at the model's own type)."""
        out = self.executor.run(self.model, feed, names)
        return {k: v.astype(np.float32) if v.dtype == np.float64 and self.precision == "fp64" else v
                for k, v in out.items()}


def make_reference(model: onnx.ModelProto, precision: str = "fp32") -> Reference:
    """FP32 in onnxruntime, or the model widened to float64 in the reference evaluator."""
    if precision not in REFERENCES:
        raise InvalidArgumentError(f"--reference {precision!r} is not one of {', '.join(REFERENCES)}.")
    if precision == "fp32":
        return Reference("fp32", model, Executor("ort", observing=True))
    from enginekit.graph.precision import WIDE, convert_precision

    wide = convert_precision(model, WIDE).model
    log.info("float64 reference: the model widened to float64, run in onnx's reference evaluator")
    return Reference("fp64", wide, Executor("onnx-reference"))


def describe(executor: Executor | Reference) -> dict[str, Any]:
    if isinstance(executor, Reference):
        return {"precision": executor.precision, "backend": executor.executor.backend}
    return {"backend": executor.backend}
