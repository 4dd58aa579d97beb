"""The timing protocol on fake runners and a fake clock: exact, no sleeping."""

from __future__ import annotations

import sys
import time
import types
from typing import Any

import numpy as np
import pytest
from bench_fakes import MS, FakeClock, FakeRunner, runner_class

from enginekit.bench.protocol import (
    IterationTiming,
    make_step,
    run_concurrent,
    run_protocol,
)
from enginekit.bench.stats import summarize
from enginekit.errors import HardwareUnavailableError
from enginekit.settings import BenchSettings

FEED = {"x": np.zeros((2, 4), np.float32)}


def settings(**kw: Any) -> BenchSettings:
    base = {"warmup_s": 0.0, "warmup_iterations": 0, "duration_s": 0.0, "iterations": 10}
    return BenchSettings(**{**base, **kw})


def run(runner: FakeRunner, clock: FakeClock, s: BenchSettings, **kw: Any) -> Any:
    with runner:
        return run_protocol(make_step(runner, FEED, clock=clock, **kw), s, clock)


def test_warmup_by_time_is_excluded() -> None:
    clock = FakeClock()
    # three slow first calls (100 ms), then 1 ms: a 0.25 s warm-up must swallow exactly the slow ones
    slow_start = runner_class("SlowStart", compute_ns=(100 * MS,) * 3 + (MS,) * 10_000)
    samples = run(slow_start(clock=clock), clock, settings(warmup_s=0.25, warmup_iterations=1, iterations=50))
    assert samples.warmup_iterations == 3
    assert samples.warmup_ns == 300 * MS
    assert samples.runs == 50
    assert max(samples.latency_ns) == MS  # no warm-up call leaked into the samples


def test_warmup_at_least_n_iterations() -> None:
    clock = FakeClock()
    samples = run(FakeRunner(clock=clock), clock, settings(warmup_s=0.0, warmup_iterations=7))
    assert samples.warmup_iterations == 7


def test_duration_and_minimum_iterations_both_hold() -> None:
    clock = FakeClock()
    ten_ms = runner_class("TenMs", compute_ns=(10 * MS,))
    assert run(ten_ms(clock=clock), clock, settings(duration_s=0.5, iterations=5)).runs == 50  # 0.5 s of 10 ms
    assert run(ten_ms(clock=clock), clock, settings(duration_s=0.01, iterations=80)).runs == 80
    capped = settings(duration_s=10.0, iterations=5, max_iterations=30)
    assert run(ten_ms(clock=clock), clock, capped).runs == 30


def test_percentiles_and_throughput_of_a_timed_loop() -> None:
    clock = FakeClock()
    ramp = runner_class("Ramp", compute_ns=tuple(i * MS for i in range(1, 101)))
    samples = run(ramp(clock=clock), clock, settings(iterations=100))
    s = summarize(samples.latency_ns)
    assert (s.median_ms, s.p90_ms, s.p99_ms) == (pytest.approx(50.5), pytest.approx(90.1), pytest.approx(99.01))
    assert samples.wall_ns == sum(i * MS for i in range(1, 101))  # the clock moves only inside the backend

    from enginekit.bench.result import Timing

    two_ms = runner_class("TwoMs", compute_ns=(2 * MS,))
    t = Timing.from_samples(run(two_ms(clock=clock), clock, settings(iterations=100)), batch=8, clock="fake")
    assert t.runs_per_s == pytest.approx(500.0)
    assert t.items_per_s == pytest.approx(4000.0)  # batch × runs/s


def test_transfers_timed_only_when_asked() -> None:
    clock = FakeClock()
    xfer = runner_class("Xfer", compute_ns=(5 * MS,), stage_ns=MS, fetch_ns=2 * MS)
    resident = run(xfer(clock=clock), clock, settings())
    assert set(resident.latency_ns) == {5 * MS}
    assert resident.h2d_ns == [] and resident.d2h_ns == []
    both = run(xfer(clock=clock), clock, settings(), with_transfers=True)
    assert set(both.latency_ns) == {8 * MS}
    assert set(both.h2d_ns) == {MS} and set(both.compute_ns) == {5 * MS} and set(both.d2h_ns) == {2 * MS}


def test_staged_once_in_resident_mode() -> None:
    clock = FakeClock()
    counting = runner_class("Counting")
    r = counting(clock=clock)
    staged: list[int] = []
    r.stage = lambda feed: staged.append(1) or feed  # type: ignore[method-assign]
    run(r, clock, settings(iterations=20))
    assert len(staged) == 1


def test_cuda_graph_unsupported_message() -> None:
    clock = FakeClock()
    with FakeRunner(clock=clock) as r:
        with pytest.raises(HardwareUnavailableError, match="CUDA graph: not supported by fake"):
            make_step(r, FEED, cuda_graph=True, clock=clock)


def test_cuda_graph_captured_once_and_replayed() -> None:
    clock = FakeClock()
    captures: list[Any] = []

    class Graphable(FakeRunner):
        supports_cuda_graph = True

        def capture_cuda_graph(self, staged: Any) -> Any:
            captures.append(staged)
            return lambda: clock.advance(MS // 2)  # a replay is faster than run_staged (1 ms)

    r = Graphable(clock=clock)
    samples = run(r, clock, settings(iterations=12), cuda_graph=True)
    assert len(captures) == 1
    assert set(samples.latency_ns) == {MS // 2}
    assert r.calls == 0  # run_staged itself is never called in the timed loop


def _fake_torch(clock: FakeClock) -> types.ModuleType:
    """Enough of torch.cuda for the event path: events read the fake clock when recorded."""

    class Event:
        def __init__(self, enable_timing: bool = False) -> None:
            self.t = 0

        def record(self) -> None:
            self.t = clock.now

        def synchronize(self) -> None:
            pass

        def elapsed_time(self, end: Event) -> float:
            return (end.t - self.t) / 1e6

    class Stream:
        pass

    class StreamContext:
        def __init__(self, stream: Stream) -> None:
            pass

        def __enter__(self) -> None:
            return None

        def __exit__(self, *args: object) -> None:
            return None

    cuda = types.SimpleNamespace(Event=Event, Stream=Stream, current_stream=Stream, stream=StreamContext)
    mod = types.ModuleType("torch")
    mod.cuda = cuda  # type: ignore[attr-defined]
    return mod


def test_cuda_device_time_from_events(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setitem(sys.modules, "torch", _fake_torch(clock))
    gpu = runner_class("Gpu", device="cuda", compute_ns=(3 * MS,), sync_ns=MS // 10, stage_ns=MS, fetch_ns=2 * MS)
    resident = run(gpu(clock=clock), clock, settings())
    assert set(resident.latency_ns) == {3 * MS}  # device time: event to event
    assert set(resident.host_ns) == {3 * MS + MS // 10}  # host time also pays the synchronize
    split = run(gpu(clock=clock), clock, settings(), with_transfers=True)
    assert set(split.h2d_ns) == {MS} and set(split.compute_ns) == {3 * MS} and set(split.d2h_ns) == {2 * MS}
    assert set(split.latency_ns) == {6 * MS}


def test_concurrent_loops_aggregate_throughput() -> None:
    def sleeper() -> IterationTiming:
        t0 = time.perf_counter_ns()
        time.sleep(0.01)
        dt = time.perf_counter_ns() - t0
        return IterationTiming(dt, dt)

    s = settings(duration_s=0.2, iterations=5)
    one = run_concurrent([lambda: sleeper], s)
    two = run_concurrent([lambda: sleeper, lambda: sleeper], s)
    rate_one = one.runs / (one.wall_ns / 1e9)
    rate_two = two.runs / (two.wall_ns / 1e9)
    assert two.runs >= 10
    assert 1.6 < rate_two / rate_one < 2.2  # two concurrent requests, each ~10 ms, twice the runs per second
    assert 9 < np.median(two.latency_ns) / 1e6 < 20  # latency per request, not per wall time


def test_concurrent_error_is_raised() -> None:
    def broken() -> IterationTiming:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_concurrent([lambda: broken, lambda: broken], settings())
