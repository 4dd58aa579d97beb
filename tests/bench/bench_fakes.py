"""Fake clocks and runners for the benchmark protocol: time advances only when the fake backend works."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from enginekit.backends.base import Runner
from enginekit.settings import BackendSettings
from enginekit.tensors import TensorSpec

MS = 1_000_000


class FakeClock:
    """A nanosecond clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now

    def advance(self, ns: int) -> None:
        self.now += ns


CLOCK = FakeClock()  # the clock of runners created through the registry (reset by `fake_backends`)


class FakeRunner(Runner):
    """x[batch,4] → y[batch,3]; compute, stage and fetch each take scripted fake-clock time."""

    backend = "fake"
    compute_ns: Iterable[int] = (MS,)
    stage_ns = 0
    fetch_ns = 0
    sync_ns = 0
    fail_at_batch: int | None = None
    fail_load = False
    instances: list[FakeRunner] = []

    def __init__(self, model: Path = Path("fake.onnx"), settings: BackendSettings | None = None,
                 precision: str = "fp32", *, clock: FakeClock | None = None) -> None:
        super().__init__(model, settings or BackendSettings(), precision)
        self.clock = clock or CLOCK
        self._durations = itertools.cycle(type(self).compute_ns)
        self.calls = 0
        self.checked_calls = 0
        type(self).instances.append(self)

    def _io_specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        return [TensorSpec("x", ("batch", 4), "float32")], [TensorSpec("y", ("batch", 3), "float32")]

    def _load(self) -> None:
        if self.fail_load:
            raise RuntimeError("fake backend cannot load")

    def _release(self) -> None:
        pass

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.checked_calls += 1
        return super().infer(feed)

    def _infer(self, feed: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        x = feed["x"]
        if self.fail_at_batch is not None and x.shape[0] == self.fail_at_batch:
            raise RuntimeError(f"fake kernel failure at batch {x.shape[0]}")
        self.calls += 1
        self.clock.advance(next(self._durations))
        return {"y": np.zeros((x.shape[0], 3), np.float32)}

    def stage(self, feed: Mapping[str, np.ndarray]) -> Any:
        self.clock.advance(self.stage_ns)
        return feed

    def fetch(self, outputs: Any) -> dict[str, np.ndarray]:
        self.clock.advance(self.fetch_ns)
        return super().fetch(outputs)

    def synchronize(self) -> None:
        self.clock.advance(self.sync_ns)


def runner_class(name: str, **attrs: Any) -> type[FakeRunner]:
    return type(name, (FakeRunner,), {"instances": [], **attrs})


# Backends registered by the `fake_backends` fixture ("bench_fakes:<class>").
FakeFast = runner_class("FakeFast", backend="fake-fast", compute_ns=(MS,))
FakeSlow = runner_class("FakeSlow", backend="fake-slow", compute_ns=(4 * MS,))
FakeJittery = runner_class("FakeJittery", backend="fake-jittery", compute_ns=(MS, 3 * MS))
FakeBroken = runner_class("FakeBroken", backend="fake-broken", fail_load=True)
FakeBatch8Fails = runner_class("FakeBatch8Fails", backend="fake-b8", fail_at_batch=8)
FakeTransfers = runner_class("FakeTransfers", backend="fake-xfer", compute_ns=(5 * MS,), stage_ns=MS, fetch_ns=2 * MS)
FAKES: dict[str, type[FakeRunner]] = {c.backend: c for c in (FakeFast, FakeSlow, FakeJittery, FakeBroken,
                                                               FakeBatch8Fails, FakeTransfers)}
