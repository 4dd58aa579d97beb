"""`optimize`'s timing: the bench protocol's loop and statistics around one callable, on the host clock.

The loop is enginekit.bench.protocol's (``run_protocol``: warm-up by time, then at least N runs and T seconds,
monotonic clock) and the statistics are enginekit.bench.stats' (median, p90, coefficient of variation and the
"unstable run" warning), exactly as `enginekit bench` computes them; only the defaults differ (TimingSettings:
`optimize`'s short loop). It reports the host latency of each call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from enginekit.bench.protocol import CPU_CLOCK, IterationTiming, run_protocol
from enginekit.bench.stats import summarize, unstable_warning
from enginekit.settings import TimingSettings


@dataclass(frozen=True)
class TimingStats:
    runs: int
    warmup_runs: int
    mean_ms: float
    median_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float
    std_ms: float
    cv: float = 0.0  # coefficient of variation (std / mean), as `enginekit bench` reports it
    unstable: bool = False  # cv above TimingSettings.unstable_cv
    warning: str | None = None  # the "unstable run" warning of `enginekit bench`, when unstable
    clock: str = CPU_CLOCK

    @classmethod
    def from_samples(
        cls, samples_s: Sequence[float], warmup_runs: int, unstable_cv: float = TimingSettings.unstable_cv
    ) -> TimingStats:
        """Statistics (and the unstable verdict) by the same functions as `enginekit bench`."""
        return cls.from_ns([round(x * 1e9) for x in samples_s], warmup_runs, unstable_cv)

    @classmethod
    def from_ns(
        cls, samples_ns: Sequence[int], warmup_runs: int, unstable_cv: float = TimingSettings.unstable_cv
    ) -> TimingStats:
        s = summarize(samples_ns)
        warning = unstable_warning(s, unstable_cv)
        return cls(runs=s.count, warmup_runs=warmup_runs, mean_ms=s.mean_ms, median_ms=s.median_ms, p90_ms=s.p90_ms,
                   min_ms=s.min_ms, max_ms=s.max_ms, std_ms=s.std_ms, cv=s.cv, unstable=warning is not None,
                   warning=warning)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def time_callable(
    fn: Callable[[], object],
    settings: TimingSettings,
    clock: Callable[[], float] = time.perf_counter,
) -> TimingStats:
    """The bench protocol (enginekit.bench.protocol.run_protocol) around ``fn``, timed on the host clock.

    Warms up (at least ``warmup_iterations`` calls and ``warmup_s``), then measures at least ``iterations`` calls
    and ``duration_s`` (at most ``max_iterations``), but stops after ``max_time_s`` (keeping at least one sample)
    so that a very slow backend cannot stall a run; ``runs`` says how many were timed. ``clock`` is in seconds.
    """

    def clock_ns() -> int:
        return round(clock() * 1e9)

    def step() -> IterationTiming:
        t0 = clock_ns()
        fn()
        dt = clock_ns() - t0
        return IterationTiming(dt, dt, compute_ns=dt)

    samples = run_protocol(step, settings, clock_ns)
    return TimingStats.from_ns(samples.latency_ns, samples.warmup_iterations, settings.unstable_cv)
