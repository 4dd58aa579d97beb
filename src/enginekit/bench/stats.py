"""Statistics of a timed loop: pure functions over lists of nanosecond samples.

Percentiles use linear interpolation between the two closest ranks, numpy's default ``method="linear"``
(Hyndman & Fan type 7): for sorted samples ``x[0..n-1]`` the q-th percentile sits at rank
``h = (n - 1) * q / 100`` and is ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``.
So the median of 1..100 ms is 50.5 ms and its p90 is 90.1 ms. The standard deviation is the population
one (``ddof=0``) and the coefficient of variation is ``std / mean``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000


def percentile(samples_ns: Sequence[int], q: float) -> float:
    """The q-th percentile (0..100) of ``samples_ns`` in ns, linear interpolation (numpy's default)."""
    if not samples_ns:
        raise ValueError("no timing samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    xs = sorted(samples_ns)
    h = (len(xs) - 1) * q / 100
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (h - lo) * (xs[hi] - xs[lo]))


def mean(samples_ns: Sequence[int]) -> float:
    if not samples_ns:
        raise ValueError("no timing samples")
    return math.fsum(samples_ns) / len(samples_ns)


def std(samples_ns: Sequence[int]) -> float:
    """Population standard deviation (ddof=0)."""
    m = mean(samples_ns)
    return math.sqrt(math.fsum((x - m) ** 2 for x in samples_ns) / len(samples_ns))


def coefficient_of_variation(samples_ns: Sequence[int]) -> float:
    """std / mean (0 when the mean is 0)."""
    m = mean(samples_ns)
    return std(samples_ns) / m if m > 0 else 0.0


def throughput(batch: int, runs: int, wall_ns: int) -> float:
    """Items per second: ``batch * runs / wall time``."""
    if wall_ns <= 0:
        return 0.0
    return batch * runs * NS_PER_S / wall_ns


@dataclass(frozen=True)
class LatencyStats:
    """Summary of one list of samples, in milliseconds."""

    count: int
    min_ms: float
    mean_ms: float
    median_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    std_ms: float
    cv: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def summarize(samples_ns: Sequence[int]) -> LatencyStats:
    """min, mean, median, p90, p95, p99, max, std and CV of ``samples_ns`` (reported in ms)."""
    if not samples_ns:
        raise ValueError("no timing samples")

    def ms(v: float) -> float:
        return v / NS_PER_MS

    return LatencyStats(
        count=len(samples_ns),
        min_ms=ms(min(samples_ns)),
        mean_ms=ms(mean(samples_ns)),
        median_ms=ms(percentile(samples_ns, 50)),
        p90_ms=ms(percentile(samples_ns, 90)),
        p95_ms=ms(percentile(samples_ns, 95)),
        p99_ms=ms(percentile(samples_ns, 99)),
        max_ms=ms(max(samples_ns)),
        std_ms=ms(std(samples_ns)),
        cv=coefficient_of_variation(samples_ns),
    )


def unstable_warning(stats: LatencyStats, threshold: float) -> str | None:
    """A warning when the coefficient of variation is above ``threshold``; None for a stable run."""
    if stats.cv <= threshold:
        return None
    return (f"unstable run: coefficient of variation {stats.cv:.1%} > {threshold:.0%} "
            f"(min {stats.min_ms:.3g} ms, median {stats.median_ms:.3g} ms, max {stats.max_ms:.3g} ms); "
            "close other programs, measure longer (--duration) or pin threads")
