"""`optimize`'s timing: the bench protocol's statistics with its unstable-run warning, and speed-ups that are never
shown bare when the timing behind them (the row's or the reference's) is unstable. Deterministic: fixed samples or
a fake clock, never real sleeps."""

from __future__ import annotations

import itertools

import pytest

from enginekit.bench.timing import TimingStats, time_callable
from enginekit.multirun import BackendRow
from enginekit.pipeline.run import fill_speedups
from enginekit.pipeline.steps import CandidateResult
from enginekit.report.markdown import render_optimize, speedup_cell, timing_warnings
from enginekit.settings import BenchSettings, TimingSettings

# 20 runs alternating 1 ms and 100 ms: CV ~98 %, the kind of loop that gave a 155x "speed-up" on a busy CPU
JITTERY = [0.001, 0.100] * 10
STEADY = [0.010] * 20


class FakeClock:
    """Advances only when the timed function runs, by a scripted duration per call (seconds)."""

    def __init__(self, durations: list[float]) -> None:
        self.now = 0.0
        self.durations = itertools.cycle(durations)

    def __call__(self) -> float:
        return self.now

    def work(self) -> None:
        self.now += next(self.durations)


def test_unstable_cv_is_one_timing_setting_shared_with_bench() -> None:
    assert TimingSettings().unstable_cv == BenchSettings().unstable_cv == 0.1


def test_wildly_varying_samples_are_flagged_unstable_with_the_bench_warning() -> None:
    stats = TimingStats.from_samples(JITTERY, warmup_runs=0)
    assert stats.cv == pytest.approx(0.98, abs=0.01)
    assert stats.unstable and stats.warning is not None
    assert stats.warning.startswith("unstable run: coefficient of variation 98.0% > 10%")
    d = stats.to_dict()
    assert d["unstable"] is True and d["warning"] == stats.warning and d["cv"] == stats.cv


def test_steady_samples_are_not_flagged() -> None:
    stats = TimingStats.from_samples(STEADY, warmup_runs=0)
    assert stats.cv == pytest.approx(0.0) and not stats.unstable and stats.warning is None


def test_time_callable_runs_the_protocol_and_flags_an_alternating_callable() -> None:
    s = TimingSettings(warmup_s=0.0, warmup_iterations=2, iterations=20, duration_s=0.0, max_iterations=20)
    clock = FakeClock([0.001, 0.100])
    jittery = time_callable(clock.work, s, clock=clock)
    assert jittery.runs == 20 and jittery.warmup_runs == 2
    assert jittery.unstable and jittery.warning and jittery.clock == "perf_counter_ns"
    steady_clock = FakeClock([0.002])
    steady = time_callable(steady_clock.work, s, clock=steady_clock)
    assert not steady.unstable and steady.median_ms == pytest.approx(2.0)
    # the threshold is TimingSettings.unstable_cv
    lenient = TimingSettings(warmup_s=0.0, warmup_iterations=0, iterations=20, duration_s=0.0, max_iterations=20,
                             unstable_cv=2.0)
    lenient_clock = FakeClock([0.001, 0.100])
    lenient_stats = time_callable(lenient_clock.work, lenient, clock=lenient_clock)
    assert lenient_stats.cv == pytest.approx(jittery.cv) and not lenient_stats.unstable


def _cand(label: str, samples: list[float], *, reference: bool = False) -> CandidateResult:
    row = BackendRow(label, "fp32", "ok")
    row.is_reference = reference
    return CandidateResult(row, timing=TimingStats.from_samples(samples, warmup_runs=0).to_dict())


def _doc(results: list[CandidateResult]) -> dict[str, object]:
    return {"model": "m.onnx", "passed": True, "reference": "ort", "steps": [],
            "results": [c.to_dict() for c in results]}


def test_an_unstable_candidate_speedup_carries_the_warning() -> None:
    ref, fast, noisy = _cand("ort", STEADY, reference=True), _cand("a", [0.005] * 20), _cand("b", JITTERY)
    fill_speedups([ref, fast, noisy], ref, "ort")
    assert fast.speedup == pytest.approx(2.0) and not fast.unstable and fast.timing_warnings == []
    assert not ref.unstable
    assert noisy.speedup is not None and noisy.unstable
    assert noisy.timing_warnings[0].startswith("unstable run: coefficient of variation 98.0%")
    doc = _doc([ref, fast, noisy])
    rows = {r["backend"]: r for r in doc["results"]}  # type: ignore[attr-defined]
    assert rows["b"]["unstable"] is True and rows["b"]["timing_warnings"] == noisy.timing_warnings
    assert rows["a"]["unstable"] is False and rows["a"]["timing_warnings"] == []
    assert speedup_cell(rows["a"], doc["results"]) == "2"  # type: ignore[arg-type]
    cell = speedup_cell(rows["b"], doc["results"])  # type: ignore[arg-type]
    assert cell.endswith("(unstable: CV 98 %)")
    md = render_optimize(doc)
    assert "(unstable: CV 98 %)" in md
    assert "**Timing warning** b: unstable run: coefficient of variation 98.0%" in md
    assert "**Timing warning** a" not in md


def test_an_unstable_reference_makes_every_speedup_unstable() -> None:
    ref, fast = _cand("ort", JITTERY, reference=True), _cand("a", [0.005] * 20)
    fill_speedups([ref, fast], ref, "ort")
    assert ref.unstable and fast.unstable
    assert "whose timing is unstable (coefficient of variation 98.0%)" in fast.timing_warnings[0]
    doc = _doc([ref, fast])
    results = doc["results"]
    assert all(speedup_cell(r, results).endswith("(unstable: CV 98 %)") for r in results)  # type: ignore[union-attr,arg-type]
    assert len(timing_warnings(results)) == 2  # type: ignore[arg-type]
