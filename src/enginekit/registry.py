"""Backends as data: name, aliases, capabilities, and how to check availability and create a runner.

The registry holds no per-call state. Runner modules are imported only when a runner is created.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from enginekit.deps import KNOWN, is_installed
from enginekit.errors import InvalidArgumentError, UnknownNameError, did_you_mean

if TYPE_CHECKING:
    from enginekit.backends.base import Runner
    from enginekit.settings import BackendSettings


# Precisions, declared once: the runners, the builders and the precision plans take them from here.
REDUCED_FLOAT_PRECISIONS: tuple[str, ...] = ("fp16", "bf16")  # reduced floats: fp16/bf16 conversions and plans
TORCH_PRECISIONS: tuple[str, ...] = ("fp32", "tf32", *REDUCED_FLOAT_PRECISIONS)  # PyTorch-native backends
TENSORRT_PRECISIONS: tuple[str, ...] = ("fp32", *REDUCED_FLOAT_PRECISIONS, "int8", "best")  # TensorRT builders

# Compute capabilities TensorRT-RTX engines run on (its builder's ComputeCapability targets).
RTX_CAPABILITIES: tuple[str, ...] = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class BackendInfo:
    name: str
    description: str
    runner: str  # "module:Class", imported lazily
    requires: tuple[str, ...]  # Python modules that must be importable
    devices: tuple[str, ...] = ("cpu",)
    precisions: tuple[str, ...] = ("fp32",)
    dynamic_shapes: bool = True
    aliases: tuple[str, ...] = ()
    formats: tuple[str, ...] = ("onnx",)  # model formats the runner loads (see model_format)
    default_precisions: tuple[str, ...] | None = None  # what `optimize` runs unasked (None: every precision)
    plan_precisions: tuple[str, ...] = ()  # precisions at which the runner applies BackendSettings.precision_plan
    extra_check: Callable[[], Availability] | None = field(default=None, compare=False)

    def available(self) -> Availability:
        """Whether this backend can run here; the reason and install hint when not. Imports nothing heavy."""
        for mod in self.requires:
            if not is_installed(mod):
                dist, extra = KNOWN.get(mod, (mod, None))
                how = f"pip install 'enginekit[{extra}]'" if extra else f"pip install {dist}"
                return Availability(False, f"Python package '{dist}' is not installed ({how})")
        if self.extra_check is not None:
            return self.extra_check()
        return Availability(True)

    def create_runner(self, model: Path, settings: BackendSettings, precision: str = "fp32") -> Runner:
        mod_name, cls_name = self.runner.split(":")
        cls = getattr(importlib.import_module(mod_name), cls_name)
        runner: Runner = cls(model, settings, precision)
        return runner

    def to_dict(self) -> dict[str, object]:
        avail = self.available()
        return {
            "name": self.name,
            "description": self.description,
            "devices": list(self.devices),
            "precisions": list(self.precisions),
            "dynamic_shapes": self.dynamic_shapes,
            "formats": list(self.formats),
            "precision_plan": list(self.plan_precisions),
            "available": avail.ok,
            "reason": avail.reason,
        }


BACKENDS: tuple[BackendInfo, ...] = (
    BackendInfo(
        name="ort",
        description="ONNX Runtime (CPU execution provider unless --ort-providers says otherwise); fp16: the model "
        "converted to float16 (the CPU provider computes many fp16 ops in float32)",
        runner="enginekit.backends.ort:OrtRunner",
        requires=("onnxruntime",),
        precisions=("fp32", "fp16"),
        default_precisions=("fp32",),
        plan_precisions=("fp16",),
        aliases=("onnxruntime", "onnxrt"),
    ),
    BackendInfo(
        name="openvino",
        description="OpenVINO on CPU (f32 inference precision unless asked for bf16)",
        runner="enginekit.backends.openvino:OpenVinoRunner",
        requires=("openvino",),
        precisions=("fp32", "bf16"),
        aliases=("ov",),
    ),
    BackendInfo(
        name="tensorrt",
        description="TensorRT 10/11 engines (build from ONNX through the engine cache, or a built .engine)",
        runner="enginekit.backends.tensorrt.runner:TensorRTRunner",
        requires=("tensorrt", "torch"),
        devices=("cuda",),
        precisions=TENSORRT_PRECISIONS,
        plan_precisions=REDUCED_FLOAT_PRECISIONS,  # the engine is built with the plan
        aliases=("trt",),
        formats=("onnx", "engine"),
        extra_check=lambda: _gpu_check(None),
    ),
    BackendInfo(
        name="tensorrt-rtx",
        description="TensorRT for RTX engines (builds without a GPU; runs on compute capability 7.5-12.x "
        "consumer/workstation GPUs)",
        runner="enginekit.backends.tensorrt.runner:TensorRTRtxRunner",
        requires=("tensorrt_rtx", "torch"),
        devices=("cuda",),
        precisions=TENSORRT_PRECISIONS,
        plan_precisions=REDUCED_FLOAT_PRECISIONS,  # the engine is built with the plan
        aliases=("trt-rtx", "tensorrt_rtx", "rtx"),
        formats=("onnx", "engine"),
        extra_check=lambda: _gpu_check(RTX_CAPABILITIES),
    ),
    BackendInfo(
        name="torch",
        description="PyTorch eager (the source model itself, inference mode): the reference for PyTorch sources",
        runner="enginekit.backends.torch_eager:TorchEagerRunner",
        requires=("torch",),
        devices=("cpu", "cuda"),
        precisions=TORCH_PRECISIONS,
        plan_precisions=REDUCED_FLOAT_PRECISIONS,
        aliases=("pytorch", "eager"),
        formats=("torch",),
    ),
    BackendInfo(
        name="inductor",
        description="torch.compile with TorchInductor (freezing, modes, fp32/tf32/fp16/bf16, CUDA graphs); "
        "fallbacks to eager are detected",
        runner="enginekit.backends.inductor:InductorRunner",
        requires=("torch",),
        devices=("cpu", "cuda"),
        precisions=TORCH_PRECISIONS,
        plan_precisions=REDUCED_FLOAT_PRECISIONS,
        aliases=("torch-compile", "compile"),
        formats=("torch",),
    ),
    BackendInfo(
        name="aoti",
        description="torch.export + AOTInductor package (.pt2): a deployable artifact run without the model's "
        "Python code",
        runner="enginekit.backends.aoti:AotiRunner",
        requires=("torch",),
        devices=("cpu", "cuda"),
        precisions=TORCH_PRECISIONS,
        aliases=("aotinductor",),
        formats=("torch", "aoti"),
    ),
    BackendInfo(
        name="paddle",
        description="Paddle Inference on CPU (Paddle inference models: .json/.pdmodel + .pdiparams, not ONNX)",
        runner="enginekit.backends.paddle:PaddleRunner",
        requires=("paddle",),
        aliases=("paddlepaddle", "paddle-inference"),
        formats=("paddle",),
    ),
    BackendInfo(
        name="onnx-reference",
        description="onnx.reference.ReferenceEvaluator: slow, pure Python/numpy, independent of any runtime",
        runner="enginekit.backends.onnx_reference:ReferenceRunner",
        requires=("onnx",),
        precisions=("fp32", *REDUCED_FLOAT_PRECISIONS),
        default_precisions=("fp32",),
        plan_precisions=REDUCED_FLOAT_PRECISIONS,
        aliases=("reference", "onnx_reference", "ref"),
    ),
)


def check_format(info: BackendInfo, fmt: str) -> None:
    if fmt not in info.formats:
        raise InvalidArgumentError(
            f"Backend {info.name!r} runs {' or '.join(info.formats)} models, and this is a {fmt} model.",
            hint="Export it first (enginekit export) to run it on ONNX backends." if fmt == "paddle" else None,
        )


def _gpu_check(capabilities: tuple[str, ...] | None) -> Availability:
    """An NVIDIA GPU (seen by nvidia-smi; no CUDA library is loaded) with a supported compute capability."""
    from enginekit.hardware import gpu_unavailable_reason

    reason = gpu_unavailable_reason(capabilities)
    return Availability(False, reason) if reason else Availability(True)


def declared_precisions(name: str) -> tuple[str, ...]:
    """The precisions the registry declares for the backend ``name`` (fp32 alone for a runner it does not list)."""
    info = next((b for b in BACKENDS if b.name == name), None)
    return info.precisions if info is not None else ("fp32",)


def backend_names() -> list[str]:
    return [b.name for b in BACKENDS]


def get_backend(name: str) -> BackendInfo:
    """Look a backend up by name or alias; unknown names get a 'did you mean' suggestion."""
    key = name.strip().lower()
    for b in BACKENDS:
        if key == b.name or key in b.aliases:
            return b
    everything = backend_names() + [a for b in BACKENDS for a in b.aliases]
    raise UnknownNameError(
        f"Unknown backend {name!r}{did_you_mean(key, everything)} Known backends: {', '.join(backend_names())}."
    )
