"""Fixtures of the benchmark tests: fake backends registered for one test."""

from __future__ import annotations

import pytest
from bench_fakes import CLOCK, FAKES, FakeClock

from enginekit import registry
from enginekit.registry import BackendInfo


@pytest.fixture
def fake_backends(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Register the fake backends; returns their (reset) fake clock."""
    infos = tuple(BackendInfo(name=name, description="fake", runner=f"bench_fakes:{cls.__name__}", requires=())
                  for name, cls in FAKES.items())
    monkeypatch.setattr(registry, "BACKENDS", registry.BACKENDS + infos)
    CLOCK.now = 0
    for cls in FAKES.values():
        cls.instances = []
    return CLOCK
