"""onnx.reference runner: slow, but independent of every optimized runtime."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from enginekit.backends.base import Runner
from enginekit.deps import require
from enginekit.registry import REDUCED_FLOAT_PRECISIONS

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)


def inference_batchnorm_ops(model: onnx.ModelProto) -> list[type]:
    """Replacement op implementations onnx.reference needs for ``model`` (empty when none).

    In opsets 9-13 BatchNormalization is inference-only and ``momentum`` has no effect, but
    onnx.reference's BatchNormalization_9 fills in the schema default momentum=0.9 and then always
    normalizes with the batch statistics (training behaviour). Seen on PaddleOCR's classifier: outputs
    off by 0.4 where onnxruntime, OpenVINO and the formula agree. For those opsets the runner
    registers an implementation of the inference formula instead.
    """
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    uses_bn = any(n.op_type == "BatchNormalization" and n.domain in ("", "ai.onnx") for n in model.graph.node)
    if not (9 <= opset < 14 and uses_bn):
        return []
    from onnx.reference.op_run import OpRun

    class BatchNormalization(OpRun):  # name and domain select the op it replaces
        op_domain = ""

        def _run(  # type: ignore[no-untyped-def]
            self, x, scale, bias, mean, var, epsilon=1e-5, momentum=None, training_mode=None
        ):
            shape = (-1,) + (1,) * (x.ndim - 2)
            y = scale.reshape(shape) * (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + epsilon)
            return ((y + bias.reshape(shape)).astype(x.dtype),)

    return [BatchNormalization]


class ReferenceRunner(Runner):
    """fp32 runs the model as given; fp16/bf16 run it converted (graph/precision.py, IO types kept), each
    value stored in the low type: a faithful low-precision emulator on the CPU (onnxruntime's CPU provider
    computes many fp16 ops in float32 and hides overflows). The nodes of ``--precision-plan`` stay FP32."""

    backend = "onnx-reference"

    def _load(self) -> None:
        from enginekit.graph.load import load_model

        require("onnx", purpose="the 'onnx-reference' backend")
        from onnx.reference import ReferenceEvaluator

        model = load_model(self.model, check=False)
        self._conversion: dict[str, Any] | None = None
        if self.precision in REDUCED_FLOAT_PRECISIONS:
            from enginekit.backends.onnx_plan import convert_for_runner

            model, self._conversion = convert_for_runner(model, self.precision, self.settings)
        new_ops = inference_batchnorm_ops(model)
        if new_ops:
            log.info("onnx-reference: using the inference BatchNormalization formula (opset 9-13)")
        self._evaluator: Any = ReferenceEvaluator(model, new_ops=new_ops or None)

    def _release(self) -> None:
        del self._evaluator

    def _infer(self, feed: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        names = [o.name for o in self.outputs()]
        with np.errstate(all="ignore"):  # overflow to inf is a result to report, not a warning
            values = self._evaluator.run(names, dict(feed))
        return {n: np.asarray(v) for n, v in zip(names, values, strict=True)}

    def describe(self) -> dict[str, object]:
        import onnx

        info: dict[str, object] = {**super().describe(), "version": onnx.__version__}
        if self._conversion is not None:
            info["conversion"] = self._conversion
        return info
