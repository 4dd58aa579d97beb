"""`enginekit doctor`: what is installed, which backends can run here, and known version traps."""

from __future__ import annotations

import importlib.metadata
import platform
from dataclasses import dataclass, field
from typing import Any

from enginekit.deps import dist_version, is_installed
from enginekit.hardware import nvidia_smi_gpus
from enginekit.registry import RTX_CAPABILITIES

# ONNX Runtime ships as several distributions that all install the same `onnxruntime` module.
ORT_DISTS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml", "onnxruntime-training")
# cuDNN (major.minor) each TensorRT release was built and tested against (TensorRT support matrices).
TENSORRT_CUDNN = {"8.5": "8.6", "8.6": "8.9", "10.0": "8.9", "10.1": "8.9", "10.2": "8.9", "10.3": "8.9"}


@dataclass
class Report:
    packages: dict[str, Any] = field(default_factory=dict)
    gpus: list[dict[str, str]] = field(default_factory=list)
    backends: list[dict[str, object]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _try(fn: Any) -> Any:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - doctor reports broken installs instead of dying on them
        return f"error: {type(exc).__name__}: {exc}"


def _installed_dists(prefix: str) -> dict[str, str]:
    found = {}
    for d in importlib.metadata.distributions():
        name = (d.metadata["Name"] or "").lower().replace("_", "-")
        if name.startswith(prefix):
            found[name] = d.version
    return found


def collect() -> Report:
    from enginekit import __version__
    from enginekit.registry import BACKENDS

    r = Report()
    p = r.packages
    p["python"] = platform.python_version()
    p["enginekit"] = __version__
    p["numpy"] = dist_version("numpy")

    def onnx_info() -> dict[str, Any]:
        import onnx.defs

        return {"version": dist_version("onnx"), "max_opset": onnx.defs.onnx_opset_version()}

    def ort_info() -> dict[str, Any]:
        import onnxruntime as ort

        return {"version": ort.__version__, "providers": list(ort.get_available_providers())}

    def ov_info() -> dict[str, Any]:
        import openvino as ov

        core = ov.Core()
        return {"version": str(ov.get_version()), "devices": list(core.available_devices)}

    def torch_info() -> dict[str, Any]:
        import torch

        info: dict[str, Any] = {"version": torch.__version__, "cuda": torch.version.cuda,
                                "cudnn": torch.backends.cudnn.version(),  # type: ignore[no-untyped-call]
                                "cuda_available": torch.cuda.is_available()}
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                major, minor = torch.cuda.get_device_capability(i)
                r.gpus.append({"name": torch.cuda.get_device_name(i), "compute_capability": f"{major}.{minor}"})
        return info

    p["onnx"] = _try(onnx_info) if is_installed("onnx") else None
    p["onnxruntime"] = _try(ort_info) if is_installed("onnxruntime") else None
    p["openvino"] = _try(ov_info) if is_installed("openvino") else None
    p["torch"] = _try(torch_info) if is_installed("torch") else None
    p["tensorrt"] = _try(lambda: __import__("tensorrt").__version__) if is_installed("tensorrt") else None
    p["tensorrt_rtx"] = _try(lambda: __import__("tensorrt_rtx").__version__) if is_installed("tensorrt_rtx") else None
    if not r.gpus:
        r.gpus = nvidia_smi_gpus()
    r.backends = [b.to_dict() for b in BACKENDS]
    r.warnings = traps(r)
    return r


def traps(r: Report) -> list[str]:
    """Known version traps, each with what to do."""
    warnings: list[str] = []
    ort = {d: v for d in ORT_DISTS if (v := dist_version(d))}
    if len(ort) > 1:
        warnings.append(
            f"Several ONNX Runtime packages are installed together ({', '.join(f'{k} {v}' for k, v in ort.items())}); "
            "they overwrite the same 'onnxruntime' module and the GPU providers may silently vanish. "
            "Uninstall all of them and install exactly one."
        )
    torch = r.packages.get("torch")
    cudnn_wheels = _installed_dists("nvidia-cudnn")
    majors = {v.split(".")[0] for v in cudnn_wheels.values()}
    if len(majors) > 1:
        warnings.append(f"cuDNN wheels of different major versions are installed: {cudnn_wheels}.")
    trt = r.packages.get("tensorrt")
    if isinstance(trt, str) and not trt.startswith("error") and isinstance(torch, dict) and torch.get("cudnn"):
        cudnn = int(torch["cudnn"])  # e.g. 8902 -> 8.9, 90100 -> 9.1
        have = f"{cudnn // 1000}.{cudnn % 1000 // 100}" if cudnn < 10000 else f"{cudnn // 10000}.{cudnn % 10000 // 100}"
        key = ".".join(trt.split(".")[:2])
        want = TENSORRT_CUDNN.get(key) or TENSORRT_CUDNN.get(trt.split(".")[0])
        if want and want != have:
            warnings.append(f"TensorRT {trt} was built against cuDNN {want}, but PyTorch loads cuDNN {have}; tactics "
                            "that use cuDNN may fail or differ. Match the versions or disable cuDNN tactics.")
    trt_cuda = {k: v for k, v in _installed_dists("tensorrt-cu").items() if "cu" in k}
    if isinstance(torch, dict) and torch.get("cuda"):
        tmajor = str(torch["cuda"]).split(".")[0]
        for name in trt_cuda:
            if f"cu{tmajor}" not in name:
                warnings.append(f"{name} targets another CUDA major version than PyTorch (CUDA {torch['cuda']}); "
                                "both load their own CUDA runtime.")
    if r.packages.get("tensorrt_rtx"):
        for g in r.gpus:
            if g.get("compute_capability") not in RTX_CAPABILITIES:
                warnings.append(f"TensorRT for RTX engines do not run on {g['name']} (compute capability "
                                f"{g.get('compute_capability')}); it runs on {', '.join(RTX_CAPABILITIES)}. "
                                "Building works; use the full TensorRT to run on this GPU.")
    return warnings
