from __future__ import annotations

import itertools

import numpy as np
import pytest

from enginekit.bench.timing import TimingStats, time_callable
from enginekit.settings import TimingSettings


class FakeClock:
    """A clock that advances only when the timed function runs, by a scripted duration per call."""

    def __init__(self, durations: list[float]) -> None:
        self.now = 0.0
        self.durations = itertools.cycle(durations)
        self.calls = 0

    def __call__(self) -> float:
        return self.now

    def work(self) -> None:
        self.calls += 1
        self.now += next(self.durations)


def test_warmup_is_excluded_and_counted() -> None:
    # The first 3 calls are slow (warm-up); afterwards every call takes 1 ms.
    clock = FakeClock([1.0, 1.0, 1.0] + [0.001] * 10_000)
    durations = iter([1.0, 1.0, 1.0])

    def fn() -> None:
        clock.calls += 1
        clock.now += next(durations, 0.001)

    s = TimingSettings(warmup_s=0.0, warmup_iterations=3, iterations=50, duration_s=0.0, max_iterations=50)
    stats = time_callable(fn, s, clock=clock)
    assert stats.warmup_runs == 3
    assert stats.runs == 50
    assert stats.max_ms == pytest.approx(1.0)  # no 1-second warm-up call leaked into the samples
    assert stats.median_ms == pytest.approx(1.0)


def test_percentiles_on_known_timings() -> None:
    samples = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    stats = TimingStats.from_samples(samples, warmup_runs=0)
    assert stats.median_ms == pytest.approx(50.5)
    assert stats.p90_ms == pytest.approx(np.percentile(np.arange(1, 101), 90))
    assert stats.min_ms == pytest.approx(1.0) and stats.max_ms == pytest.approx(100.0)
    assert stats.mean_ms == pytest.approx(50.5)


def test_min_runs_and_min_time_both_hold() -> None:
    clock = FakeClock([0.01])
    s = TimingSettings(warmup_s=0.0, warmup_iterations=0, iterations=5, duration_s=0.5, max_iterations=1000)
    stats = time_callable(clock.work, s, clock=clock)
    assert stats.runs >= 50  # 0.5 s of 10 ms calls
    clock2 = FakeClock([0.01])
    s2 = TimingSettings(warmup_s=0.0, warmup_iterations=0, iterations=80, duration_s=0.01, max_iterations=1000)
    assert time_callable(clock2.work, s2, clock=clock2).runs == 80


def test_slow_backend_stops_at_max_time_with_at_least_one_sample() -> None:
    clock = FakeClock([30.0])
    s = TimingSettings(warmup_s=0.0, warmup_iterations=1, iterations=20, duration_s=0.5, max_time_s=10.0)
    stats = time_callable(clock.work, s, clock=clock)
    assert stats.runs == 1
    assert stats.median_ms == pytest.approx(30_000.0)
