"""onnx.reference runner: slow, but independent of every optimized runtime."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from enginekit.backends.base import Runner
from enginekit.deps import require


class ReferenceRunner(Runner):
    backend = "onnx-reference"

    def _load(self) -> None:
        from enginekit.graph.load import load_model

        require("onnx", purpose="the 'onnx-reference' backend")
        from onnx.reference import ReferenceEvaluator

        self._evaluator: Any = ReferenceEvaluator(load_model(self.model, check=False))

    def _release(self) -> None:
        del self._evaluator

    def _infer(self, feed: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        names = [o.name for o in self.outputs()]
        values = self._evaluator.run(names, dict(feed))
        return {n: np.asarray(v) for n, v in zip(names, values, strict=True)}

    def describe(self) -> dict[str, object]:
        import onnx

        return {**super().describe(), "version": onnx.__version__}
