"""Optional dependencies: imported only by the functions that need them, with install hints."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from types import ModuleType

from enginekit.errors import MissingDependencyError

# module name -> (distribution name for `pip install`, enginekit extra that installs it)
KNOWN: dict[str, tuple[str, str | None]] = {
    "onnx": ("onnx", None),
    "onnxruntime": ("onnxruntime", None),
    "openvino": ("openvino", "openvino"),
    "torch": ("torch", "torch"),
    "tensorrt": ("tensorrt", "tensorrt"),
    "tensorrt_rtx": ("tensorrt-rtx-cu13", "tensorrt-rtx"),
    "sklearn": ("scikit-learn", "metrics"),
    "onnxslim": ("onnxslim", None),
    "onnxconverter_common": ("onnxconverter-common", None),
    "paddle": ("paddlepaddle", "paddle"),
    "paddle2onnx": ("paddle2onnx", None),
    "matplotlib": ("matplotlib", "plot"),
    "PIL": ("pillow", "images"),
    "pycocotools": ("pycocotools", "metrics"),
    "rapidfuzz": ("rapidfuzz", "metrics"),
    "ray": ("ray", "ray"),
    "yaml": ("pyyaml", "images"),
    "onnxscript": ("onnxscript", "torch"),
}


def require(module: str, *, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the package and extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        dist, extra = KNOWN.get(module, (module, None))
        err = MissingDependencyError(dist, extra=extra, purpose=purpose)
        if not isinstance(exc, ModuleNotFoundError) or exc.name not in (module, module.split(".")[0]):
            # Installed but broken (e.g. a missing shared library): say so, keep the cause.
            err.message = f"Python package '{dist}' is installed but failed to import: {exc}"
        raise err from exc


def is_installed(module: str) -> bool:
    """True when ``module`` can be found, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def dist_version(dist: str) -> str | None:
    """Installed version of a distribution, or None; never imports the package."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
