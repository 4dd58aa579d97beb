"""Pure-numpy comparison of model outputs (Polygraphy-compatible tolerances and statistics)."""

from __future__ import annotations

from enginekit.compare.metrics import compare_arrays, compare_outputs
from enginekit.compare.per_precision import FORMAT_EPSILON, base_precision, settings_for_precision
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
    "FORMAT_EPSILON",
    "CompareResult",
    "CompareSettings",
    "OutputComparison",
    "Tolerances",
    "base_precision",
    "compare_arrays",
    "compare_outputs",
    "json_safe",
    "parse_tolerances",
    "settings_for_precision",
    "validate_tolerance_names",
]
