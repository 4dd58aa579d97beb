"""The CUDA path of the protocol on a real GPU: CUDA events, H2D/compute/D2H split, CUDA graph, streams.

A small torch runner stands in for a GPU backend (it implements the benchmarking hooks of Runner).
Skipped without a CUDA GPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from enginekit.backends.base import Runner
from enginekit.bench.protocol import make_step, run_concurrent, run_protocol
from enginekit.bench.result import Timing
from enginekit.settings import BackendSettings, BenchSettings
from enginekit.tensors import TensorSpec

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
N = 2048


class TorchMatmulRunner(Runner):
    """x[batch, N] → y = relu(x @ w) @ w, on the GPU."""

    backend = "torch-test"
    device = "cuda"
    supports_cuda_graph = True

    def __init__(self) -> None:
        super().__init__(Path("none.onnx"), BackendSettings())

    def _io_specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        return [TensorSpec("x", ("batch", N), "float32")], [TensorSpec("y", ("batch", N), "float32")]

    def _load(self) -> None:
        self.w = torch.randn(N, N, device="cuda") / N**0.5

    def _release(self) -> None:
        del self.w

    def stage(self, feed: Mapping[str, np.ndarray]) -> Any:
        return {k: torch.from_numpy(np.ascontiguousarray(v)).to("cuda", non_blocking=True) for k, v in feed.items()}

    def run_staged(self, staged: Any) -> Any:
        return {"y": torch.relu(staged["x"] @ self.w) @ self.w}

    def fetch(self, outputs: Any) -> dict[str, np.ndarray]:
        return {k: v.cpu().numpy() for k, v in outputs.items()}

    def _infer(self, feed: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        out = self.fetch(self.run_staged(self.stage(feed)))
        self.synchronize()
        return out

    def synchronize(self) -> None:
        torch.cuda.synchronize()

    def capture_cuda_graph(self, staged: Any) -> Any:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.run_staged(staged)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.run_staged(staged)

        def replay() -> Any:
            graph.replay()
            return static_out

        return replay


FEED = {"x": np.random.default_rng(0).standard_normal((256, N)).astype(np.float32)}
S = BenchSettings(warmup_s=0.05, warmup_iterations=3, duration_s=0.2, iterations=20)


def test_cuda_events_time_compute() -> None:
    with TorchMatmulRunner() as r:
        r.infer(FEED)
        t = Timing.from_samples(run_protocol(make_step(r, FEED), S), 256, "cuda-events")
    assert t.runs >= 20 and t.latency.median_ms > 0
    assert t.latency.median_ms <= t.host.median_ms * 1.05  # device time never much above host time
    assert set(t.phases) == {"compute"}


def test_transfers_split() -> None:
    with TorchMatmulRunner() as r:
        resident = run_protocol(make_step(r, FEED), S)
        both = run_protocol(make_step(r, FEED, with_transfers=True), S)
    t = Timing.from_samples(both, 256, "cuda-events")
    assert set(t.phases) == {"h2d", "compute", "d2h"}
    assert t.phases["h2d"].median_ms > 0 and t.phases["d2h"].median_ms > 0
    assert np.median(both.latency_ns) > np.median(resident.latency_ns)  # 2 MiB each way costs something
    total = t.phases["h2d"].median_ms + t.phases["compute"].median_ms + t.phases["d2h"].median_ms
    assert total == pytest.approx(t.latency.median_ms, rel=0.2)


def test_cuda_graph_replays() -> None:
    with TorchMatmulRunner() as r:
        graph = run_protocol(make_step(r, FEED, cuda_graph=True), S)
        plain = run_protocol(make_step(r, FEED), S)
    assert graph.runs >= 20
    assert np.median(graph.latency_ns) < np.median(plain.latency_ns) * 1.5


def test_two_streams() -> None:
    with TorchMatmulRunner() as r:
        s = run_concurrent([lambda: make_step(r, FEED, own_stream=True)] * 2, S)
    assert s.runs >= 40 and min(s.latency_ns) > 0
