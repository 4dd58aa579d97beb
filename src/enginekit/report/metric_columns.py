"""The task-metric columns of the `optimize` tables (report.md, report.html and the CLI table).

One column per task metric the results carry (``--dataset``), in the order the names first appear in the rows'
``metrics`` dicts; the bookkeeping keys (samples, labels, intervals, gates, disagreements) and values that are not
numbers are no columns. A cell is the value and, for a row with an interval for that metric (every candidate but the
reference), the difference from the reference with its 95 % paired bootstrap interval::

    0.9861 (Δ -0.002778 [-0.008333, +0])

The numbers are those of report.md's "Task metrics against the reference" section (value as every cell, difference
and bounds to 4 significant digits with their sign). The names are :mod:`enginekit.eval`'s metric names; this module
does not import it (report and eval are independent layers), so a new metric shows under its own name until it gets
a header here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from enginekit.report.tables import fmt

__all__ = ["HEADERS", "LOWER_IS_BETTER", "NON_METRIC_KEYS", "MetricColumn", "best_row", "interval_note",
           "interval_text", "metric_cell", "metric_columns", "metric_header", "metric_number", "metric_value"]

NON_METRIC_KEYS = frozenset({"samples", "labels", "intervals", "gates", "disagreements"})

HEADERS: Mapping[str, str] = {
    "accuracy": "accuracy",
    "macro_precision": "macro P",
    "macro_recall": "macro R",
    "top1_agreement": "top-1 agreement",
    "miou": "mIoU",
    "pixel_accuracy": "pixel acc.",
    "foreground_iou": "fg IoU",
    "sequence_accuracy": "seq. acc.",
    "normalized_edit_distance": "norm. edit dist.",
    "char_error_rate": "CER",
    "map": "mAP",
    "map50": "mAP@.5",
}

LOWER_IS_BETTER = frozenset({"normalized_edit_distance", "char_error_rate"})

_TOPK_ACCURACY = re.compile(r"top(\d+)_accuracy")
_TOPK_AGREEMENT = re.compile(r"top(\d+)_agreement")


@dataclass(frozen=True)
class MetricColumn:
    name: str  # the metric's key in ``metrics`` (and in --gate)
    header: str
    higher_is_better: bool


def metric_number(value: Any) -> float | None:
    """A metric value as a float: ints, floats and json_safe's "nan"/"inf"/"-inf" strings; else None (bools too)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity"):
        return float(value.strip().lower().replace("infinity", "inf"))
    return None


def metric_header(name: str) -> str:
    """The column header of a metric name ("macro_precision" → "macro P"); an unknown name as it is."""
    if name in HEADERS:
        return HEADERS[name]
    if match := _TOPK_ACCURACY.fullmatch(name):
        return f"top-{match[1]}"
    if match := _TOPK_AGREEMENT.fullmatch(name):
        return f"top-{match[1]} agreement"
    return name


def _metrics(row: Mapping[str, Any]) -> Mapping[str, Any]:
    m = row.get("metrics")
    return m if isinstance(m, Mapping) else {}


def metric_columns(results: Sequence[Mapping[str, Any]]) -> list[MetricColumn]:
    """The metric columns of these result rows (none when no row has a metric)."""
    names: dict[str, None] = {}
    for r in results:
        for name, value in _metrics(r).items():
            if name not in NON_METRIC_KEYS and metric_number(value) is not None:
                names.setdefault(str(name), None)
    return [MetricColumn(n, metric_header(n), n not in LOWER_IS_BETTER) for n in names]


def metric_value(row: Mapping[str, Any], name: str) -> float | None:
    return metric_number(_metrics(row).get(name))


def _interval(row: Mapping[str, Any], name: str) -> tuple[float, float, float] | None:
    intervals = _metrics(row).get("intervals")
    iv = intervals.get(name) if isinstance(intervals, Mapping) else None
    if not isinstance(iv, Mapping):
        return None
    d, low, high = (metric_number(iv.get(k)) for k in ("difference", "low", "high"))
    return None if d is None or low is None or high is None else (d, low, high)


def _signed(x: float) -> str:
    return f"{x:+.4g}" if math.isfinite(x) else str(x)


def interval_text(row: Mapping[str, Any], name: str) -> str:
    """"(Δ -0.002778 [-0.008333, +0])": the row's difference from the reference and its interval ("(Δ 0)" when both
    are exactly 0); "" without one."""
    iv = _interval(row, name)
    if iv is None:
        return ""
    d, low, high = iv
    if d == low == high == 0:  # the same value on every resample: the predictions agree where it matters
        return "(Δ 0)"
    return f"(Δ {_signed(d)} [{_signed(low)}, {_signed(high)}])"


def metric_cell(row: Mapping[str, Any], name: str) -> str:
    """The cell of one metric column: the value, then :func:`interval_text` when the row has one; "–" without a
    value."""
    value = _metrics(row).get(name)
    if metric_number(value) is None:
        return fmt(None)
    extra = interval_text(row, name)
    return fmt(value) + (f" {extra}" if extra else "")


def interval_note(columns: Sequence[MetricColumn]) -> str:
    """One sentence saying how to read the metric cells ("" without metric columns)."""
    if not columns:
        return ""
    lower = [c.header for c in columns if not c.higher_is_better]
    return ("Task metrics: value (Δ difference from the reference on the same samples [its 95 % paired bootstrap "
            "interval]); the reference's row has no Δ" + (f"; lower is better for {' and '.join(lower)}" if lower
                                                         else "") + ".")


def best_row(results: Sequence[Mapping[str, Any]], column: MetricColumn) -> Mapping[str, Any] | None:
    """The row with the best finite value of the column (highest, or lowest where lower is better); None if no row
    has one. Ties: the first such row."""
    scored = [(v, r) for r in results if (v := metric_value(r, column.name)) is not None and math.isfinite(v)]
    if not scored:
        return None
    pick = max if column.higher_is_better else min
    return pick(scored, key=lambda item: item[0])[1]
