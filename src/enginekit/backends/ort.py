"""ONNX Runtime runner: CPU tuning (threads, graph optimization level, saved optimized model) and, with
onnxruntime-gpu, the CUDA and TensorRT execution providers and their options.

Precision ``fp16`` runs the model converted to float16 by enginekit (graph/precision.py, IO types kept), with
the nodes of ``--precision-plan`` as the conversion's node block list (kept FP32). Mind what that measures:
onnxruntime's CPU provider is no fp16 emulator: it has float16 kernels for few ops and computes the others in
float32 between inserted Casts, so overflows and roundings of fp16 hardware often do not show on the CPU. Real
fp16 compute needs the CUDA or TensorRT execution providers (onnxruntime-gpu). enginekit's faithful fp16 emulator
on the CPU is the ``onnx-reference`` backend.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from enginekit.backends.base import Runner
from enginekit.deps import require
from enginekit.errors import InvalidArgumentError
from enginekit.ortsession import GRAPH_LEVELS, ort_session
from enginekit.settings import BackendSettings

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
    from enginekit.errors import did_you_mean

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
                f"{did_you_mean(full, available)} Available: {', '.join(available)}.",
                hint="GPU providers need the onnxruntime-gpu package (and no plain onnxruntime beside it).",
            )
        out.append(full)
    return out


def _shape_list(profiles: tuple[str, ...], which: int) -> str:
    """TensorRT EP shape option ("x:1x3x224x224,y:...") from NAME:MIN:OPT:MAX ranges."""
    from enginekit.backends.tensorrt.profiles import parse_shape_range

    parts = []
    for text in profiles:
        r = parse_shape_range(text)
        parts.append(f"{r.name}:" + "x".join(str(d) for d in r.shapes()[which]))
    return ",".join(parts)


def provider_options(providers: list[str], s: BackendSettings) -> list[tuple[str, dict[str, Any]]]:
    """(provider, options) pairs: fp16, engine/timing caches and explicit shape ranges for the TensorRT EP."""
    out: list[tuple[str, dict[str, Any]]] = []
    for p in providers:
        opts: dict[str, Any] = {}
        if p == "TensorrtExecutionProvider":
            if s.ort_cuda_fp16:
                opts["trt_fp16_enable"] = True
            if s.ort_trt_cache_dir is not None:
                opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(s.ort_trt_cache_dir),
                            trt_timing_cache_enable=True, trt_timing_cache_path=str(s.ort_trt_cache_dir))
            if s.ort_trt_profiles:
                opts.update(trt_profile_min_shapes=_shape_list(s.ort_trt_profiles, 0),
                            trt_profile_opt_shapes=_shape_list(s.ort_trt_profiles, 1),
                            trt_profile_max_shapes=_shape_list(s.ort_trt_profiles, 2))
        elif p == "CUDAExecutionProvider":
            opts["cudnn_conv_algo_search"] = "EXHAUSTIVE"
        out.append((p, opts))
    return out


def check_graph_level(s: BackendSettings) -> None:
    if s.ort_graph_optimization not in GRAPH_LEVELS:
        raise InvalidArgumentError(f"--ort-graph-optimization {s.ort_graph_optimization!r}: choose "
                                   f"{', '.join(GRAPH_LEVELS)}.")


def check_optimized_target(target: Path, model: Path) -> None:
    """--ort-save-optimized: a file path (not a folder or device) in a writable folder, and not the model."""
    from enginekit.fileutil import check_output_file, refuse_overwriting_inputs

    check_output_file(target, "--ort-save-optimized")
    refuse_overwriting_inputs(target, [("the model", model)], "--ort-save-optimized")


@contextmanager
def _optimized_model_staging(target: Path | None, model: Path) -> Iterator[Path | None]:
    """Let onnxruntime write the optimized model into a fresh private folder beside ``target`` (the path
    yielded), then rename it over ``target``: a symlink (or anything else) at ``target`` is replaced, never
    followed. Yields None when no optimized model is asked for."""
    if target is None:
        yield None
        return
    check_optimized_target(target, model)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        yield staging / target.name
        os.replace(staging / target.name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class OrtRunner(Runner):
    backend = "ort"

    def _load(self) -> None:
        ort = require("onnxruntime", purpose="the 'ort' backend")
        self._providers = resolve_providers(self.settings.ort_providers)
        self._conversion: dict[str, Any] | None = None
        model: str | bytes = str(self.model)
        if self.precision == "fp16":
            from enginekit.backends.onnx_plan import convert_for_runner
            from enginekit.graph.load import load_model

            proto, self._conversion = convert_for_runner(load_model(self.model, check=False), "fp16", self.settings)
            model = proto.SerializeToString()
        s = self.settings
        check_graph_level(s)
        with _optimized_model_staging(s.ort_optimized_model, self.model) as optimized:
            self._session: Any = ort_session(
                model, purpose="the 'ort' backend", providers=provider_options(self._providers, s),
                graph_optimization=s.ort_graph_optimization, intra_op_threads=s.ort_intra_op_threads,
                inter_op_threads=s.ort_inter_op_threads, optimized_model_path=optimized,
                # failures come back as exceptions (with the node name); do not also print them
                log_severity=4, default_logger_severity=4,
            )
        self._version = ort.__version__

    def _release(self) -> None:
        del self._session

    def _infer(self, feed: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        names = [o.name for o in self.outputs()]
        values = self._session.run(names, dict(feed))
        return {n: np.asarray(v) for n, v in zip(names, values, strict=True)}

    def describe(self) -> dict[str, object]:
        info = {**super().describe(), "version": self._version, "providers": self._session.get_providers(),
                "graph_optimization": self.settings.ort_graph_optimization}
        if self._conversion is not None:
            info["conversion"] = self._conversion
        return info
