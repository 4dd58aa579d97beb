"""The precision-debug workflow, declared once: range analysis → FP32-island search → verdict.

:func:`debug_precision` is what `enginekit debug precision` runs, and what `optimize` runs on a low-precision
candidate that failed verification. The search itself is :func:`enginekit.debug.fix.find_fp32_islands`; this
module wires it: the settings checked, the calibration feeds loaded, one reference for range analysis and the
search, and the weak-reference verdict (a pass on a reference that carries no signal is inconclusive).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from enginekit.debug.execute import Reference, check_backend, default_backend, make_reference
from enginekit.debug.fix import FixResult, command_check, find_fp32_islands, range_analysis_initial
from enginekit.errors import InvalidArgumentError
from enginekit.settings import DebugSettings
from enginekit.status import Status

log = logging.getLogger(__name__)

__all__ = ["DebugResult", "check_debug_settings", "debug_precision"]

_NO_SIGNAL = "the reference output carries no signal on these feeds, so this plan is not verified. "
_SELF_CALIBRATED = ("Calibrated on the debug feeds themselves: pass --calibration with real samples for ranges that "
                    "match deployment.")


@dataclass(frozen=True)
class DebugResult:
    """The search's result (``fix``), the range analysis it started from, and the verdict.

    ``verdict`` is passed, failed, or inconclusive: the search passed, but the reference output is near-constant
    or saturated on the feeds (so any plan passes) and the settings do not allow a weak reference.
    """

    fix: FixResult
    reference: Reference  # the reference the search compared with (the layerwise report re-runs it)
    range_analysis: tuple[tuple[str, str], ...]  # (node, reason), most risky first; () when turned off
    verdict: Status
    message: str
    warning: str = ""

    @property
    def passed(self) -> bool:
        return self.verdict == Status.PASSED

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self, model: str | None = None) -> dict[str, Any]:
        """The search's document with ``model`` (when given), the verdict, the range analysis and the warning."""
        doc = self.fix.to_dict()
        if model is not None:
            doc["model"] = model
        doc["verdict"] = self.verdict
        if self.verdict == Status.INCONCLUSIVE:
            doc["passed"], doc["message"] = False, self.message
        doc["range_analysis"] = [{"node": n, "reason": r} for n, r in self.range_analysis]
        if self.warning:
            doc["warning"] = self.warning
        return doc

    def save(self, plan_path: Path | None = None, output: Path | None = None) -> dict[str, str]:
        """Write the plan and the fixed model where asked when the search passed; {"plan_path"/"output": path}."""
        from enginekit.fileutil import atomic_write_bytes
        from enginekit.graph.precision import save_plan

        written: dict[str, str] = {}
        if not self.fix.passed:
            return written
        if plan_path is not None:
            save_plan(self.fix.plan, plan_path)
            written["plan_path"] = str(plan_path)
        if output is not None:
            atomic_write_bytes(output, self.fix.model.SerializeToString())
            written["output"] = str(output)
        return written


def check_debug_settings(settings: DebugSettings) -> str:
    """Refuse bad settings (user errors, exit 2) before any model is loaded; the backend that runs candidates."""
    from enginekit.graph.precision import PLAN_PRECISIONS
    from enginekit.graph.quantize import METHODS

    if settings.precision not in PLAN_PRECISIONS:
        raise InvalidArgumentError(f"--precision {settings.precision!r}: choose one of {', '.join(PLAN_PRECISIONS)}.")
    if settings.max_evaluations < 2:
        raise InvalidArgumentError(f"--max-evaluations {settings.max_evaluations}: must be >= 2.")
    if settings.calib_method not in METHODS:
        raise InvalidArgumentError(f"--calib-method {settings.calib_method!r}: choose one of {', '.join(METHODS)}.")
    if settings.precision != "int8" and settings.calibration is not None:
        raise InvalidArgumentError("--calibration applies to --precision int8 only.")
    return check_backend(settings.backend or default_backend(settings.precision))


def debug_precision(model: onnx.ModelProto, feeds: Sequence[Mapping[str, np.ndarray]],
                    settings: DebugSettings) -> DebugResult:
    """Search the FP32 islands that make ``model`` (FP32 ONNX) pass in ``settings.precision`` on ``feeds``."""
    from enginekit.graph.calibration import load_calibration_feeds
    from enginekit.graph.io import input_specs

    backend = check_debug_settings(settings)
    calibration = (load_calibration_feeds(settings.calibration, input_specs(model))
                   if settings.calibration is not None else None)
    feed_list = [dict(f) for f in feeds]
    ref = make_reference(model, settings.reference)
    initial = range_analysis_initial(model, feed_list, settings.precision, ref) if settings.range_analysis else []
    fix = find_fp32_islands(model, feed_list, settings.precision, initial=[n for n, _ in initial],
                            initial_reasons=dict(initial), compare=settings.compare,
                            check=command_check(settings.check) if settings.check is not None else None,
                            max_evaluations=settings.max_evaluations, backend=backend, reference=ref,
                            calibration=calibration, calib_method=settings.calib_method)
    verdict, message = (Status.PASSED if fix.passed else Status.FAILED), fix.message
    if fix.passed and fix.weak_reference and not settings.allow_weak_reference:
        verdict, message = Status.INCONCLUSIVE, _NO_SIGNAL + fix.message
    warning = _SELF_CALIBRATED if settings.precision == "int8" and settings.calibration is None else ""
    return DebugResult(fix, ref, tuple(initial), verdict, message, warning)
