"""A short timed loop: warm-up excluded, then at least N runs and T seconds, monotonic clock.

This is the quick timing used by `optimize`; it reports host latency per call. Its settings are the
TimingSettings of the full protocol (enginekit.bench.protocol), with `optimize`'s short defaults.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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

    @classmethod
    def from_samples(cls, samples_s: Sequence[float], warmup_runs: int) -> TimingStats:
        """Statistics by the same functions as `enginekit bench` (enginekit.bench.stats)."""
        from enginekit.bench.stats import summarize

        s = summarize([round(x * 1e9) for x in samples_s])
        return cls(runs=s.count, warmup_runs=warmup_runs, mean_ms=s.mean_ms, median_ms=s.median_ms, p90_ms=s.p90_ms,
                   min_ms=s.min_ms, max_ms=s.max_ms, std_ms=s.std_ms)

    def to_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def time_callable(
    fn: Callable[[], object],
    settings: TimingSettings,
    clock: Callable[[], float] = time.perf_counter,
) -> TimingStats:
    """Warm up (at least ``warmup_iterations`` calls and ``warmup_s``), then time each call separately.

    Measures at least ``iterations`` calls and ``duration_s`` (at most ``max_iterations``), but stops after
    ``max_time_s`` (keeping at least one sample) so that a very slow backend cannot stall a run; ``runs`` says
    how many were timed.
    """
    cap = settings.max_time_s
    warm = 0
    start = clock()
    while warm < settings.warmup_iterations or clock() - start < settings.warmup_s:
        fn()
        warm += 1
        if cap is not None and clock() - start > cap:
            break
    samples: list[float] = []
    start = clock()
    while len(samples) < settings.max_iterations and (
        len(samples) < settings.iterations or clock() - start < settings.duration_s
    ):
        if samples and cap is not None and clock() - start > cap:
            break
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    return TimingStats.from_samples(samples, warm)
