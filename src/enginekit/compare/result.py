"""Result types of a comparison: one :class:`OutputComparison` per output, and :class:`CompareResult`.

Statistics that could not be computed (shape mismatch, missing output) are ``nan``; statistics
are taken over elements that are finite on both sides, so a computed statistic is never ``nan``.
``to_dict()`` gives JSON-safe values: non-finite floats become the strings ``"inf"``, ``"-inf"``
and ``"nan"``, tuples become lists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
    """Convert ``value`` to something ``json.dumps(..., allow_nan=False)`` accepts."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, (tuple, list)):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    return str(value)


@dataclass(frozen=True)
class OutputComparison:
    """Comparison of one output: verdict, reason and the measured error.

    Errors are relative to the reference: ``abs_err = |cand - ref|``, ``rel_err = abs_err / |ref|``
    (``rel_err`` is 0 where both are 0 and ``inf`` where only the reference is 0).
    ``failed_elements`` counts elements that break the element-wise rule (``abs_err > atol and
    rel_err > rtol``) plus NaN/Inf mismatches, whatever ``check_error_stat`` is.
    ``worst_index`` is the first NaN/Inf mismatch if there is one, else the element with the
    largest absolute error; ``None`` when there is no element to point at.
    """

    name: str
    passed: bool
    reason: str
    shape_ref: tuple[int, ...] | None
    shape_cand: tuple[int, ...] | None
    dtype_ref: str | None
    dtype_cand: str | None
    atol: float
    rtol: float
    check_error_stat: str
    max_abs_err: float
    mean_abs_err: float
    median_abs_err: float
    p99_abs_err: float
    max_rel_err: float
    mean_rel_err: float
    median_rel_err: float
    p99_rel_err: float
    cosine: float
    worst_index: tuple[int, ...] | None
    worst_ref: float | None
    worst_cand: float | None
    failed_elements: int
    total_elements: int
    nonfinite_mismatches: int
    nan_count_ref: int
    nan_count_cand: int
    inf_count_ref: int
    inf_count_cand: int

    @property
    def nan_count(self) -> int:
        """NaN elements on both sides together."""
        return self.nan_count_ref + self.nan_count_cand

    @property
    def inf_count(self) -> int:
        """Inf elements (either sign) on both sides together."""
        return self.inf_count_ref + self.inf_count_cand

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field plus ``nan_count`` and ``inf_count``."""
        out: dict[str, Any] = {
            f.name: json_safe(getattr(self, f.name)) for f in fields(self)
        }
        out["nan_count"] = self.nan_count
        out["inf_count"] = self.inf_count
        return out


@dataclass(frozen=True)
class CompareResult:
    """Comparison of all outputs: reference outputs in reference order, then candidate-only ones."""

    outputs: tuple[OutputComparison, ...]

    @property
    def passed(self) -> bool:
        """True when at least one output was compared and every output passed."""
        return bool(self.outputs) and all(o.passed for o in self.outputs)

    def failed_outputs(self) -> tuple[OutputComparison, ...]:
        """The outputs that failed, in result order."""
        return tuple(o for o in self.outputs if not o.passed)

    def __getitem__(self, name: str) -> OutputComparison:
        for output in self.outputs:
            if output.name == name:
                return output
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        """Output names in result order."""
        return tuple(o.name for o in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        """``{"passed": bool, "outputs": {name: OutputComparison.to_dict()}}``, JSON-safe."""
        return {
            "passed": self.passed,
            "outputs": {o.name: o.to_dict() for o in self.outputs},
        }
