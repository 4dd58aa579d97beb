"""Verification of an exported ONNX model against its source, and the export result."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from enginekit.compare import CompareResult, CompareSettings, compare_outputs
from enginekit.tensors import TensorSpec


@dataclass
class VerifyCase:
    label: str  # "traced shape, seed 1", ...
    shapes: dict[str, list[int]]
    comparison: CompareResult

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "shapes": self.shapes, "passed": self.comparison.passed,
                **self.comparison.to_dict()}


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
    external_data: bool = False
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0

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
                                compare_outputs(ref, got, settings, check_names=False)))
    return cases


def failure_table(cases: Sequence[VerifyCase]) -> str:
    """A plain-text table of the failed comparisons, for error messages."""
    lines = [f"{'case':<34} {'output':<20} {'max abs':>10} {'max rel':>10}  reason"]
    for c in cases:
        for o in c.comparison.outputs:
            if not o.passed:
                lines.append(f"{c.label:<34} {o.name:<20} {o.max_abs_err:>10.3g} {o.max_rel_err:>10.3g}  {o.reason}")
    return "\n".join(lines)
