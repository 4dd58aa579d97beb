"""Pure-numpy comparison of model outputs (Polygraphy-compatible tolerances and statistics)."""

from __future__ import annotations

from enginekit.compare.metrics import compare_arrays, compare_outputs
from enginekit.compare.result import CompareResult, OutputComparison, json_safe
from enginekit.compare.tolerances import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    ERROR_STATS,
    CompareSettings,
    Tolerances,
    parse_tolerances,
    validate_tolerance_names,
)

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
    "ERROR_STATS",
    "CompareResult",
    "CompareSettings",
    "OutputComparison",
    "Tolerances",
    "compare_arrays",
    "compare_outputs",
    "json_safe",
    "parse_tolerances",
    "validate_tolerance_names",
]
