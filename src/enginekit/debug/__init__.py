"""Precision debugger: observed reference pass, range analysis, layerwise diff (and plan search in fix.py)."""

from __future__ import annotations

from enginekit.debug.layerwise import LayerRow, LayerwiseResult, layerwise_diff, plot_error_growth
from enginekit.debug.observe import Observation, TensorStats, observe, observe_arrays, tensor_stats
from enginekit.debug.ranges import RangeReport, RiskyNode, analyze_ranges

__all__ = [
    "LayerRow",
    "LayerwiseResult",
    "Observation",
    "RangeReport",
    "RiskyNode",
    "TensorStats",
    "analyze_ranges",
    "layerwise_diff",
    "observe",
    "observe_arrays",
    "plot_error_growth",
    "tensor_stats",
]
