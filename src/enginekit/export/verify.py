"""Verification of an exported ONNX model against its source, and the export result."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from enginekit.compare import CompareResult, CompareSettings, compare_outputs
from enginekit.export.trace_check import DATA, TraceWarning
from enginekit.tensors import TensorSpec


@dataclass
class VerifyCase:
    label: str  # "trace shape, seed 1", "trace shape, seed 1 negated", "trace shape, N(0,1) x100", ...
    shapes: dict[str, list[int]]
    comparison: CompareResult
    values: dict[str, list[float]] = field(default_factory=dict)  # [min, max] of each input's feed

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "shapes": self.shapes, "values": self.values, "passed": self.comparison.passed,
                **self.comparison.to_dict()}

    def describe_inputs(self) -> str:
        """``x 2x8 in -0.98..-0.01; ids 2x6 in 0..49`` (shape and value range of every input)."""
        parts = []
        for name, shape in self.shapes.items():
            text = f"{name} {'x'.join(map(str, shape)) or 'scalar'}"
            if name in self.values:
                lo, hi = self.values[name]
                text += f" in {lo:.3g}..{hi:.3g}"
            parts.append(text)
        return "; ".join(parts)


def value_ranges(feed: Mapping[str, np.ndarray]) -> dict[str, list[float]]:
    """[min, max] of every non-empty numeric input (finite values only)."""
    out: dict[str, list[float]] = {}
    for name, arr in feed.items():
        if arr.size and (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            values = arr.astype(np.float64)
            finite = values[np.isfinite(values)]
            if finite.size:
                out[name] = [float(finite.min()), float(finite.max())]
    return out


@dataclass
class ExportResult:
    output: Path
    source: str
    framework: str
    exporter: str
    opset_requested: int
    opset_produced: int
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    cases: list[VerifyCase] = field(default_factory=list)
    verified: bool | None = None  # None: --no-verify
    trace_warnings: list[TraceWarning] = field(default_factory=list)  # the TorchScript tracer's, classified
    external_data: bool = False
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def data_dependent_warnings(self) -> list[TraceWarning]:
        return [w for w in self.trace_warnings if w.kind == DATA]

    @property
    def shape_dependent_warnings(self) -> list[TraceWarning]:
        return [w for w in self.trace_warnings if w.kind != DATA]

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "source": self.source,
            "framework": self.framework,
            "exporter": self.exporter,
            "opset_requested": self.opset_requested,
            "opset_produced": self.opset_produced,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "verified": self.verified,
            "verification": [c.to_dict() for c in self.cases],
            "trace_warnings": [w.to_dict() for w in self.trace_warnings],
            "external_data": self.external_data,
            "notes": self.notes,
            "duration_s": self.duration_s,
        }


def verify_cases(
    run_source: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]],
    run_onnx: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]],
    feeds: Sequence[tuple[str, dict[str, np.ndarray]]],
    settings: CompareSettings,
) -> list[VerifyCase]:
    """Run source and ONNX on every (label, feed) and compare, source as the reference."""
    from enginekit.errors import VerificationError

    cases = []
    for label, feed in feeds:
        ref = run_source(feed)
        try:
            got = run_onnx(feed)
        except Exception as exc:  # noqa: BLE001 - the exported model cannot run at this shape: a failed check
            shapes = {k: list(v.shape) for k, v in feed.items()}
            text = " ".join(str(exc).split())
            raise VerificationError(
                f"The exported ONNX fails in onnxruntime at {label} {shapes}: {text[:400]}"
            ) from exc
        cases.append(VerifyCase(label, {k: list(v.shape) for k, v in feed.items()},
                                compare_outputs(ref, got, settings, check_names=False), value_ranges(feed)))
    return cases


def failure_table(cases: Sequence[VerifyCase]) -> str:
    """A plain-text table of the failed comparisons, for error messages."""
    lines = [f"{'case':<34} {'output':<20} {'max abs':>10} {'max rel':>10}  {'inputs':<30}  reason"]
    for c in cases:
        for o in c.comparison.outputs:
            if not o.passed:
                lines.append(f"{c.label:<34} {o.name:<20} {o.max_abs_err:>10.3g} {o.max_rel_err:>10.3g}  "
                             f"{c.describe_inputs():<30}  {o.reason}")
    return "\n".join(lines)


def summary(cases: Sequence[VerifyCase]) -> str:
    """One line: how many cases matched, and the largest errors seen."""
    failed = [c for c in cases if not c.comparison.passed]
    errs = [o for c in cases for o in c.comparison.outputs]
    worst_abs = max((o.max_abs_err for o in errs if o.max_abs_err == o.max_abs_err), default=0.0)
    worst_rel = max((o.max_rel_err for o in errs if o.max_rel_err == o.max_rel_err), default=0.0)
    return (f"{len(cases) - len(failed)} of {len(cases)} verification cases match the source "
            f"(largest errors: {worst_abs:.3g} absolute, {worst_rel:.3g} relative).")
