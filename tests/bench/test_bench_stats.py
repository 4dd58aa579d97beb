"""Statistics are exact on known samples; percentiles follow numpy's linear interpolation."""

from __future__ import annotations

import numpy as np
import pytest

from enginekit.bench.stats import (
    coefficient_of_variation,
    percentile,
    summarize,
    throughput,
    unstable_warning,
)

MS = 1_000_000


def test_percentiles_on_1_to_100_ms() -> None:
    samples = [i * MS for i in range(1, 101)]
    s = summarize(samples)
    assert s.count == 100
    assert s.min_ms == 1.0 and s.max_ms == 100.0
    assert s.mean_ms == pytest.approx(50.5)
    assert s.median_ms == pytest.approx(50.5)
    # rank h = 99 * q / 100, interpolated between x[floor(h)] and the next sample
    assert s.p90_ms == pytest.approx(90.1)
    assert s.p95_ms == pytest.approx(95.05)
    assert s.p99_ms == pytest.approx(99.01)


def test_percentile_small_sample_by_hand() -> None:
    samples = [40, 10, 30, 20]  # sorted: 10 20 30 40; p90 at rank 2.7 → 30 + 0.7 * 10
    assert percentile(samples, 90) == pytest.approx(37.0)
    assert percentile(samples, 50) == pytest.approx(25.0)
    assert percentile(samples, 0) == 10 and percentile(samples, 100) == 40
    assert percentile([7], 99) == 7


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 95, 99, 99.9, 100])
def test_percentile_matches_numpy_linear(q: float) -> None:
    rng = np.random.default_rng(3)
    samples = [int(v) for v in rng.integers(1, 10**9, size=257)]
    assert percentile(samples, q) == pytest.approx(float(np.percentile(samples, q, method="linear")), rel=1e-12)


def test_std_and_cv_are_population() -> None:
    samples = [MS, 3 * MS] * 10  # mean 2 ms, population std 1 ms
    s = summarize(samples)
    assert s.std_ms == pytest.approx(1.0)
    assert s.cv == pytest.approx(0.5)
    assert coefficient_of_variation(samples) == pytest.approx(float(np.std(samples) / np.mean(samples)))


def test_throughput_is_batch_times_runs_per_second() -> None:
    assert throughput(batch=8, runs=100, wall_ns=200 * MS) == pytest.approx(4000.0)
    assert throughput(batch=1, runs=3, wall_ns=0) == 0.0


def test_unstable_warning_above_threshold_only() -> None:
    jittery = summarize([MS, 3 * MS] * 10)
    warning = unstable_warning(jittery, 0.1)
    assert warning is not None and "50.0%" in warning and "unstable" in warning
    assert unstable_warning(jittery, 0.6) is None
    assert unstable_warning(summarize([2 * MS] * 10), 0.1) is None


def test_empty_samples_refused() -> None:
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        percentile([1], 101)
