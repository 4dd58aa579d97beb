"""ONNX Runtime runner."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from enginekit.backends.base import Runner
from enginekit.deps import require
from enginekit.errors import InvalidArgumentError

log = logging.getLogger(__name__)

_SHORT_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}


def resolve_providers(requested: tuple[str, ...]) -> list[str]:
    """Map short names (cpu, cuda, trt) to provider names and check them against the installed build."""
    from enginekit.registry import suggest

    ort = require("onnxruntime", purpose="the 'ort' backend")
    available: list[str] = list(ort.get_available_providers())
    if not requested:
        return ["CPUExecutionProvider"]
    out = []
    for name in requested:
        full = _SHORT_PROVIDERS.get(name.strip().lower(), name.strip())
        if full not in available:
            raise InvalidArgumentError(
                f"--ort-providers {name!r}: provider {full!r} is not available in this onnxruntime build"
                f"{suggest(full, available)} Available: {', '.join(available)}.",
                hint="GPU providers need the onnxruntime-gpu package (and no plain onnxruntime beside it).",
            )
        out.append(full)
    return out


class OrtRunner(Runner):
    backend = "ort"

    def _load(self) -> None:
        ort = require("onnxruntime", purpose="the 'ort' backend")
        ort.set_default_logger_severity(4)  # errors come back as exceptions; don't also print them
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.settings.ort_intra_op_threads:
            opts.intra_op_num_threads = self.settings.ort_intra_op_threads
        self._providers = resolve_providers(self.settings.ort_providers)
        self._session: Any = ort.InferenceSession(str(self.model), sess_options=opts, providers=self._providers)
        self._version = ort.__version__

    def _release(self) -> None:
        del self._session

    def _infer(self, feed: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        names = [o.name for o in self.outputs()]
        values = self._session.run(names, dict(feed))
        return {n: np.asarray(v) for n, v in zip(names, values, strict=True)}

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "version": self._version, "providers": self._session.get_providers()}
