"""The timing protocol shared by every backend.

1. The feed is validated once (``runner.infer``, a checked call that is not timed); the loop then uses the
   unchecked hooks ``stage`` / ``run_staged`` / ``fetch``.
2. Warm-up by time: at least ``warmup_iterations`` calls and ``warmup_s`` seconds, excluded from the samples.
3. Measurement: at least ``iterations`` calls and ``duration_s`` seconds (at most ``max_iterations``; both
   phases stop after ``max_time_s`` when it is set, keeping at least one sample).
4. What is timed: by default the data is resident where the backend computes (staged once) and each sample
   brackets ``run_staged`` alone; ``with_transfers`` brackets ``stage`` + ``run_staged`` + ``fetch`` and
   splits the sample into H2D / compute / D2H. ``cuda_graph`` captures ``run_staged`` once and times replays.
5. Clocks: on CPU (``runner.device != "cuda"``) the monotonic ``time.perf_counter_ns`` around each call, after
   ``runner.synchronize()``; on CUDA, CUDA events recorded around each phase give the device time (torch is
   imported only then), and the host clock still gives the host latency of each call.
6. Concurrency: ``streams`` threads run the same loop at once (each with its own CUDA stream on GPU), started
   together after their warm-up; latency percentiles pool every request and throughput counts every run
   over the common wall time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from enginekit.errors import HardwareUnavailableError

if TYPE_CHECKING:
    from enginekit.backends.base import Runner
    from enginekit.settings import TimingSettings

Clock = Callable[[], int]  # nanoseconds, monotonic
CPU_CLOCK = "perf_counter_ns"
CUDA_CLOCK = "cuda-events"


@dataclass(frozen=True)
class IterationTiming:
    """One timed call. ``latency_ns`` is what the statistics use: device time on CUDA, host time on CPU."""

    latency_ns: int
    host_ns: int
    h2d_ns: int | None = None
    compute_ns: int | None = None
    d2h_ns: int | None = None


Step = Callable[[], IterationTiming]


@dataclass
class Samples:
    """Every measured call of one loop (or of all concurrent loops), in ns."""

    latency_ns: list[int] = field(default_factory=list)
    host_ns: list[int] = field(default_factory=list)
    h2d_ns: list[int] = field(default_factory=list)
    compute_ns: list[int] = field(default_factory=list)
    d2h_ns: list[int] = field(default_factory=list)
    warmup_iterations: int = 0
    warmup_ns: int = 0
    wall_ns: int = 0  # wall time of the measured phase (all streams together)

    @property
    def runs(self) -> int:
        return len(self.latency_ns)

    def add(self, t: IterationTiming) -> None:
        self.latency_ns.append(t.latency_ns)
        self.host_ns.append(t.host_ns)
        for name in ("h2d_ns", "compute_ns", "d2h_ns"):
            value = getattr(t, name)
            if value is not None:
                getattr(self, name).append(value)

    def extend(self, other: Samples) -> None:
        for name in ("latency_ns", "host_ns", "h2d_ns", "compute_ns", "d2h_ns"):
            getattr(self, name).extend(getattr(other, name))
        self.warmup_iterations += other.warmup_iterations
        self.warmup_ns = max(self.warmup_ns, other.warmup_ns)


def _cap_ns(settings: TimingSettings) -> int | None:
    return None if settings.max_time_s is None else int(settings.max_time_s * 1e9)


def warm_up(step: Step, settings: TimingSettings, clock: Clock) -> tuple[int, int]:
    """Call ``step`` for at least ``warmup_iterations`` calls and ``warmup_s``; returns (calls, ns)."""
    limit, cap = int(settings.warmup_s * 1e9), _cap_ns(settings)
    start = clock()
    n = 0
    while n < settings.warmup_iterations or clock() - start < limit:
        step()
        n += 1
        if cap is not None and clock() - start > cap:
            break
    return n, clock() - start


def measure(step: Step, settings: TimingSettings, clock: Clock) -> Samples:
    """Time calls until at least ``iterations`` calls and ``duration_s`` have passed (or ``max_iterations``)."""
    limit, cap = int(settings.duration_s * 1e9), _cap_ns(settings)
    samples = Samples()
    start = clock()
    while samples.runs < settings.max_iterations and (
        samples.runs < settings.iterations or clock() - start < limit
    ):
        if samples.runs and cap is not None and clock() - start > cap:
            break
        samples.add(step())
    samples.wall_ns = clock() - start
    return samples


def run_protocol(step: Step, settings: TimingSettings, clock: Clock = time.perf_counter_ns) -> Samples:
    """Warm up, then measure, one loop."""
    warm, warm_ns = warm_up(step, settings, clock)
    samples = measure(step, settings, clock)
    samples.warmup_iterations, samples.warmup_ns = warm, warm_ns
    return samples


def run_concurrent(
    step_factories: Sequence[Callable[[], Step]], settings: TimingSettings, clock: Clock = time.perf_counter_ns
) -> Samples:
    """One loop per factory, each in its own thread; measurement starts together after every warm-up.

    A factory is called inside its thread (so that per-thread state such as a CUDA stream is created there).
    The wall time runs from the common start to the end of the last loop.
    """
    if len(step_factories) == 1:
        return run_protocol(step_factories[0](), settings, clock)
    n = len(step_factories)
    barrier = threading.Barrier(n)
    results: list[Samples | None] = [None] * n
    errors: list[BaseException] = []
    starts: list[int] = [0] * n
    ends: list[int] = [0] * n

    def worker(i: int) -> None:
        try:
            step = step_factories[i]()
            warm, warm_ns = warm_up(step, settings, clock)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            errors.append(exc)
            barrier.abort()
            return
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return
        try:
            starts[i] = clock()
            s = measure(step, settings, clock)
            ends[i] = clock()
            s.warmup_iterations, s.warmup_ns = warm, warm_ns
            results[i] = s
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), name=f"enginekit-bench-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    total = Samples()
    for s in results:
        assert s is not None  # every worker either stored samples or recorded an error
        total.extend(s)
    total.wall_ns = max(ends) - min(starts)
    return total


# --------------------------------------------------------------------------------------------------
# Steps built from a runner


def make_step(
    runner: Runner,
    feed: Mapping[str, np.ndarray],
    *,
    with_transfers: bool = False,
    cuda_graph: bool = False,
    clock: Clock = time.perf_counter_ns,
    own_stream: bool = False,
) -> Step:
    """One timed call of ``runner`` on ``feed`` as the protocol defines it (see the module docstring)."""
    staged = runner.stage(feed)
    runner.synchronize()
    compute: Callable[[Any], Any] = runner.run_staged
    if cuda_graph and getattr(runner, "graphs_itself", False):
        cuda_graph = False  # its run_staged is a graph replay already (cuda_graph=on)
    if cuda_graph:
        if not runner.supports_cuda_graph:
            raise HardwareUnavailableError(f"CUDA graph: not supported by {runner.backend}")
        replay = runner.capture_cuda_graph(staged)
        runner.synchronize()

        def compute(_staged: Any) -> Any:
            return replay()

    if runner.device == "cuda":
        return _cuda_step(runner, feed, staged, compute, with_transfers, clock, own_stream)
    return _host_step(runner, feed, staged, compute, with_transfers, clock)


def _host_step(
    runner: Runner, feed: Mapping[str, np.ndarray], staged: Any, compute: Callable[[Any], Any],
    with_transfers: bool, clock: Clock,
) -> Step:
    sync = runner.synchronize
    if not with_transfers:
        def resident() -> IterationTiming:
            t0 = clock()
            compute(staged)
            sync()
            t1 = clock()
            return IterationTiming(t1 - t0, t1 - t0, compute_ns=t1 - t0)

        return resident

    def round_trip() -> IterationTiming:
        t0 = clock()
        data = runner.stage(feed)
        sync()
        t1 = clock()
        out = compute(data)
        sync()
        t2 = clock()
        runner.fetch(out)
        t3 = clock()
        return IterationTiming(t3 - t0, t3 - t0, t1 - t0, t2 - t1, t3 - t2)

    return round_trip


def _cuda_step(
    runner: Runner, feed: Mapping[str, np.ndarray], staged: Any, compute: Callable[[Any], Any],
    with_transfers: bool, clock: Clock, own_stream: bool,
) -> Step:
    """CUDA events on the current stream (a new one per thread when ``own_stream``) around each phase."""
    from enginekit.deps import require

    torch: Any = require("torch", purpose="CUDA event timing")
    stream = torch.cuda.Stream() if own_stream else torch.cuda.current_stream()
    events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]

    def ns(a: Any, b: Any) -> int:
        return int(round(a.elapsed_time(b) * 1e6))  # elapsed_time is in ms

    def resident() -> IterationTiming:
        e0, e1 = events[0], events[1]
        with torch.cuda.stream(stream):
            t0 = clock()
            e0.record()
            compute(staged)
            e1.record()
            runner.synchronize()
            e1.synchronize()
            t1 = clock()
        dev = ns(e0, e1)
        return IterationTiming(dev, t1 - t0, compute_ns=dev)

    def round_trip() -> IterationTiming:
        e0, e1, e2, e3 = events
        with torch.cuda.stream(stream):
            t0 = clock()
            e0.record()
            data = runner.stage(feed)
            e1.record()
            out = compute(data)
            e2.record()
            runner.fetch(out)
            e3.record()
            runner.synchronize()
            e3.synchronize()
            t1 = clock()
        return IterationTiming(ns(e0, e3), t1 - t0, ns(e0, e1), ns(e1, e2), ns(e2, e3))

    return round_trip if with_transfers else resident
