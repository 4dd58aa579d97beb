"""The TensorRT library in use and what it can do, decided in one place by looking at the module.

``tensorrt`` (TensorRT 10.x, 11.x) and ``tensorrt_rtx`` (TensorRT for RTX) share an API. They differ in:
weak typing (precision builder flags and per-layer constraints: TensorRT 10) vs strong typing only
(precision from the ONNX types: TensorRT 11, TensorRT-RTX); INT8 calibrators; targeting compute
capabilities at build time (TensorRT-RTX builds without a GPU); version/hardware compatibility flags.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from enginekit.deps import require
from enginekit.errors import InvalidArgumentError

log = logging.getLogger(__name__)

MODULES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}


@dataclass(frozen=True)
class TrtLibrary:
    backend: str  # "tensorrt" | "tensorrt-rtx"
    module: ModuleType
    version: str
    weak_typing: bool  # BuilderFlag.FP16 etc. exist: precision can come from builder flags
    int8_calibration: bool  # implicit quantization with a calibrator
    targets_compute_capability: bool  # IBuilderConfig.set_compute_capability (build for GPUs not present)
    version_compatible: bool  # BuilderFlag.VERSION_COMPATIBLE
    hardware_compatibility: bool  # IBuilderConfig.hardware_compatibility_level
    engine_validity: bool  # Runtime.get_engine_validity: check a plan before deserializing it

    @property
    def name(self) -> str:
        return self.module.__name__

    def compute_capabilities(self) -> list[str]:
        """Compute capabilities the builder can target, as "8.6"-style strings (empty when it cannot)."""
        if not self.targets_compute_capability:
            return []
        out = []
        for name in self.module.ComputeCapability.__members__:
            if name.startswith("SM") and name[2:].isdigit():
                digits = name[2:]
                out.append(f"{digits[:-1]}.{digits[-1]}")
        return out

    def compute_capability_enum(self, cc: str) -> Any:
        name = "SM" + cc.replace(".", "")
        members = self.module.ComputeCapability.__members__
        if name not in members:
            supported = ", ".join(self.compute_capabilities())
            raise InvalidArgumentError(f"--compute-capability {cc}: {self.name} {self.version} targets {supported}.")
        return members[name]

    def describe(self) -> dict[str, Any]:
        return {
            "library": self.name,
            "version": self.version,
            "typing": "weak (builder precision flags)" if self.weak_typing else "strong (precision from ONNX types)",
            "int8_calibration": self.int8_calibration,
            "compute_capability_targets": self.compute_capabilities(),
            "version_compatible": self.version_compatible,
            "hardware_compatibility": self.hardware_compatibility,
        }


def load_library(backend: str) -> TrtLibrary:
    """Import the library for ``backend`` and read its capabilities off the module."""
    if backend not in MODULES:
        raise InvalidArgumentError(f"Backend {backend!r} is not a TensorRT backend; use tensorrt or tensorrt-rtx.")
    trt = require(MODULES[backend], purpose=f"building {backend} engines")
    flags = trt.BuilderFlag.__members__
    return TrtLibrary(
        backend=backend,
        module=trt,
        version=str(trt.__version__),
        weak_typing="FP16" in flags,
        int8_calibration="INT8" in flags and hasattr(trt, "IInt8EntropyCalibrator2"),
        targets_compute_capability=hasattr(trt.IBuilderConfig, "set_compute_capability"),
        version_compatible="VERSION_COMPATIBLE" in flags,
        hardware_compatibility=hasattr(trt.IBuilderConfig, "hardware_compatibility_level"),
        engine_validity=hasattr(trt.Runtime, "get_engine_validity"),
    )


@contextmanager
def native_stdout_captured() -> Iterator[list[str]]:
    """Redirect file descriptor 1 to a temp file (the library prints some warnings there from native code,
    which ``contextlib.redirect_stdout`` cannot catch); the yielded list gets the printed lines on exit.

    Python's and C's stdout buffers are flushed on both sides, so nothing written before leaks into the
    capture and nothing captured reaches the real stdout later. Where fd 1 cannot be duplicated (closed),
    nothing is captured.
    """
    lines: list[str] = []
    try:
        saved = os.dup(1)
    except OSError:
        yield lines
        return
    with tempfile.TemporaryFile(prefix="enginekit-stdout-") as tmp:
        _flush_stdout()
        os.dup2(tmp.fileno(), 1)
        try:
            yield lines
        finally:
            _flush_stdout()
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", errors="replace")
            lines.extend(line.rstrip() for line in text.splitlines() if line.strip())
            for line in lines:
                log.debug("printed by native code: %s", line)


def _flush_stdout() -> None:
    sys.stdout.flush()
    try:
        ctypes.CDLL(None).fflush(None)  # C stdio (std::cout shares it by default)
    except (OSError, AttributeError):  # no C library handle (not Linux/macOS): Python's flush must do
        pass


class CollectingLogger:
    """An ILogger that keeps messages (warnings go into the engine manifest) instead of printing them."""

    def __new__(cls, trt: ModuleType) -> Any:
        class _Logger(trt.ILogger):  # type: ignore[misc,name-defined]
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.messages: list[tuple[str, str]] = []

            def log(self, severity: Any, msg: str) -> None:
                level = str(severity).rsplit(".", 1)[-1]
                self.messages.append((level, msg))
                if level in ("INTERNAL_ERROR", "ERROR"):
                    log.debug("TensorRT %s: %s", level, msg)

            def warnings(self) -> list[str]:
                return [m for lv, m in self.messages if lv == "WARNING"]

            def errors(self) -> list[str]:
                return [m for lv, m in self.messages if lv in ("ERROR", "INTERNAL_ERROR")]

        return _Logger()
