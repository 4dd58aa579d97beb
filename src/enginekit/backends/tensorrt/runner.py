"""Running a TensorRT / TensorRT-RTX engine with the named-tensor API (needs a CUDA GPU and torch).

Buffers are torch CUDA tensors; outputs are sized from the actual input shapes, and outputs whose
shape depends on data get an output allocator, so results are never slices of a max-size buffer.
This file is the only TensorRT code that needs a GPU; tests that run it are marked `gpu`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from enginekit.backends.base import Runner
from enginekit.errors import BackendError, HardwareUnavailableError, ModelLoadError
from enginekit.registry import REDUCED_FLOAT_PRECISIONS
from enginekit.tensors import TensorSpec

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
_TORCH_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16", "int8": "int8",
                 "int32": "int32", "int64": "int64", "bool": "bool", "uint8": "uint8"}


def _spec(t: dict[str, Any]) -> TensorSpec:
    return TensorSpec(t["name"], tuple(d if d >= 0 else "?" for d in t["shape"]), t["dtype"])


def engine_io(plan: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of an engine file, from the enginekit manifest beside it (``PLAN.json``)."""
    from enginekit.backends.tensorrt.manifest import read_manifest

    manifest = read_manifest(plan)
    if manifest is None:
        raise ModelLoadError(f"{str(plan)!r} has no enginekit manifest beside it ({plan.name}.json), so its inputs "
                             "and outputs are unknown.", hint="Build it with `enginekit build`, which writes one.")
    return [_spec(t) for t in manifest["inputs"]], [_spec(t) for t in manifest["outputs"]]


class TensorRTRunner(Runner):
    backend = "tensorrt"

    def _plan_and_manifest(self) -> tuple[Path, dict[str, Any] | None]:
        from enginekit.backends.tensorrt.manifest import read_manifest

        if self.model.suffix.lower() in ENGINE_SUFFIXES:
            return self.model, read_manifest(self.model)
        from enginekit.backends.tensorrt.build import build_engine  # an ONNX model: build through the cache
        from enginekit.settings import BuildSettings

        plan = self.settings.precision_plan if self.precision in REDUCED_FLOAT_PRECISIONS else None
        result = build_engine(self.model, BuildSettings(backend=self.backend, precision=self.precision,
                                                        profiles=self.settings.trt_profiles, precision_plan=plan))
        return result.plan_path, result.manifest

    def _io_specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        if self.model.suffix.lower() not in ENGINE_SUFFIXES:
            return super()._io_specs()
        return engine_io(self.model)

    def _load(self) -> None:
        import torch

        from enginekit.backends.tensorrt.lib import CollectingLogger, load_library
        from enginekit.backends.tensorrt.manifest import check_plan_digest, check_runnable

        lib = load_library(self.backend)
        if not torch.cuda.is_available():
            raise HardwareUnavailableError(f"{self.backend} engines run on NVIDIA GPUs; no CUDA GPU is available.")
        major, minor = torch.cuda.get_device_capability()
        plan, manifest = self._plan_and_manifest()
        if manifest is not None:
            check_runnable(manifest, lib, f"{major}.{minor}")
        trt = lib.module
        self._logger = CollectingLogger(trt)
        runtime = trt.Runtime(self._logger)
        data = plan.read_bytes()
        check_plan_digest(plan, data, manifest)  # never deserialize a plan that is not the one described
        if lib.engine_validity:
            validity, diagnostics = runtime.get_engine_validity(data)
            if str(validity).endswith("INVALID"):
                raise HardwareUnavailableError(f"{lib.name} {lib.version} says this plan cannot run here "
                                               f"(diagnostics {diagnostics}).")
        self._engine = runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise BackendError(f"Could not deserialize {str(plan)!r}: {'; '.join(self._logger.errors()[-3:])}")
        self._context = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        self._trt = trt

    def _release(self) -> None:
        del self._context, self._engine, self._stream

    def _infer(self, feed: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        import torch

        ctx, keep = self._context, []
        for spec in self.inputs():
            t = torch.from_numpy(np.ascontiguousarray(feed[spec.name])).cuda()
            keep.append(t)
            ctx.set_input_shape(spec.name, tuple(t.shape))
            ctx.set_tensor_address(spec.name, t.data_ptr())
        outputs: dict[str, Any] = {}
        allocator = None
        for spec in self.outputs():
            shape = tuple(ctx.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):  # data-dependent: TensorRT asks for memory once it knows
                allocator = allocator or _OutputAllocator(self._trt, torch)
                ctx.set_output_allocator(spec.name, allocator)
                continue
            outputs[spec.name] = torch.empty(shape, dtype=getattr(torch, _TORCH_DTYPES[spec.dtype]), device="cuda")
            ctx.set_tensor_address(spec.name, outputs[spec.name].data_ptr())
        if not ctx.execute_async_v3(self._stream.cuda_stream):
            raise BackendError(f"execute_async_v3 failed: {'; '.join(self._logger.errors()[-3:])}")
        self._stream.synchronize()
        result = {}
        for spec in self.outputs():
            if spec.name in outputs:
                result[spec.name] = outputs[spec.name].cpu().numpy()
            else:
                assert allocator is not None
                result[spec.name] = allocator.result(spec.name, getattr(torch, _TORCH_DTYPES[spec.dtype]))
        return result


class TensorRTRtxRunner(TensorRTRunner):
    backend = "tensorrt-rtx"


def _OutputAllocator(trt: Any, torch: Any) -> Any:  # noqa: N802 - a class factory over the library's base
    class Allocator(trt.IOutputAllocator):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.IOutputAllocator.__init__(self)
            self.buffers: dict[str, Any] = {}
            self.shapes: dict[str, tuple[int, ...]] = {}

        def reallocate_output_async(self, name: str, memory: int, size: int, alignment: int, stream: int) -> int:
            self.buffers[name] = torch.empty(max(size, 1), dtype=torch.uint8, device="cuda")
            return int(self.buffers[name].data_ptr())

        def notify_shape(self, name: str, shape: Any) -> None:
            self.shapes[name] = tuple(int(d) for d in shape)

        def result(self, name: str, dtype: Any) -> np.ndarray:
            shape = self.shapes[name]
            n = int(np.prod(shape)) if shape else 1
            raw = self.buffers[name][: n * torch.tensor([], dtype=dtype).element_size()]
            return np.asarray(raw.view(dtype).reshape(shape).cpu().numpy())

    return Allocator()
