"""A short timed loop: warm-up excluded, then at least N runs and T seconds, monotonic clock.

This is the quick timing used by `optimize`; it reports host latency per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

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
        ms = np.asarray(samples_s, dtype=np.float64) * 1e3
        if ms.size == 0:
            raise ValueError("no timing samples")
        return cls(
            runs=int(ms.size),
            warmup_runs=warmup_runs,
            mean_ms=float(ms.mean()),
            median_ms=float(np.median(ms)),
            p90_ms=float(np.percentile(ms, 90)),
            min_ms=float(ms.min()),
            max_ms=float(ms.max()),
            std_ms=float(ms.std()),
        )

    def to_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def time_callable(
    fn: Callable[[], object],
    settings: TimingSettings,
    clock: Callable[[], float] = time.perf_counter,
) -> TimingStats:
    """Warm up (at least ``warmup_runs`` calls and ``warmup_s``), then time each call separately.

    Measures at least ``min_runs`` calls and ``min_time_s``, but stops after ``max_time_s`` (keeping at
    least one sample) so that a very slow backend cannot stall a run; ``runs`` says how many were timed.
    """
    warm = 0
    start = clock()
    while warm < settings.warmup_runs or clock() - start < settings.warmup_s:
        fn()
        warm += 1
        if clock() - start > settings.max_time_s:
            break
    samples: list[float] = []
    start = clock()
    while len(samples) < settings.max_runs and (
        len(samples) < settings.min_runs or clock() - start < settings.min_time_s
    ):
        if samples and clock() - start > settings.max_time_s:
            break
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    return TimingStats.from_samples(samples, warm)
