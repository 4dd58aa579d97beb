"""``--inductor-freezing`` really freezes: dynamo traces with ``torch._inductor.config.freezing`` set, so the
parameters become constants of the graph (not graph inputs), and the global setting is unchanged afterwards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from enginekit.settings import BackendSettings

torch = pytest.importorskip("torch")

from enginekit.backends import inductor  # noqa: E402
from enginekit.backends.inductor import InductorRunner  # noqa: E402

MLP = Path(f"{Path(__file__).with_name('torch_models.py')}:mlp")  # x[batch,8] -> [batch,4]; 4 parameters


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """(graph inputs, torch._inductor.config.freezing) at every graph the runner's backend compiles."""
    calls: list[tuple[int, bool]] = []
    original = inductor.CountingBackend.__call__

    def spy(self: Any, gm: Any, example_inputs: Any) -> Any:
        calls.append((len(example_inputs), bool(torch._inductor.config.freezing)))
        return original(self, gm, example_inputs)

    monkeypatch.setattr(inductor.CountingBackend, "__call__", spy)
    return calls


def _run(freezing: bool) -> dict[str, object]:
    settings = BackendSettings(torch_inputs=("x:batch,8",), torch_device="cpu", inductor_freezing=freezing)
    with InductorRunner(MLP, settings) as runner:
        runner.infer({"x": np.ones((3, 8), np.float32)})  # a new shape: a recompilation, frozen too
        return runner.describe()


def test_freezing_folds_the_parameters(seen: list[tuple[int, bool]]) -> None:
    before = torch._inductor.config.freezing
    details = _run(True)
    assert details["freezing"] is True
    # both compilations (load, then the new shape) traced with freezing on: only x is a graph input
    assert seen == [(1, True), (1, True)]
    assert torch._inductor.config.freezing is before is False  # the global setting did not leak


def test_no_freezing_overrides_a_global_setting(seen: list[tuple[int, bool]]) -> None:
    with torch._inductor.config.patch(freezing=True):
        _run(False)
        assert torch._inductor.config.freezing is True
    assert seen == [(5, False), (5, False)]  # x and the 4 parameters stay graph inputs
