"""benchmark(): rows per candidate × shape point, speed-ups, statuses, JSON, plot; fake and real backends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bench_fakes import FAKES, FakeClock

from enginekit.bench.points import parse_shape_set, plan_points, resolve_point
from enginekit.bench.result import BenchResult
from enginekit.bench.sweep import benchmark
from enginekit.data import InputShape
from enginekit.errors import FeedError, InvalidArgumentError
from enginekit.settings import BackendSettings, BenchSettings
from enginekit.tensors import TensorSpec

QUICK = {"warmup_s": 0.0, "warmup_iterations": 1, "duration_s": 0.0, "iterations": 10}


def fake_bench(model: Path, clock: FakeClock, names: list[str], **kw: Any) -> BenchResult:
    base = () if "batches" in kw else (InputShape("x", (1, 4)),)  # the batch dim is symbolic
    return benchmark(model, names, BenchSettings(**{**QUICK, **kw}), inputs=base, clock=clock)


def test_rows_and_speedups(mlp_model: Path, fake_backends: FakeClock) -> None:
    res = fake_bench(mlp_model, fake_backends, ["fake-fast", "fake-slow"], batches=(1, 8))
    assert [(r.label, r.point) for r in res.rows] == [
        ("fake-fast", "batch 1"), ("fake-slow", "batch 1"), ("fake-fast", "batch 8"), ("fake-slow", "batch 8")]
    assert res.baseline == "fake-fast"
    fast, slow = res.row("fake-fast", "batch 8"), res.row("fake-slow", "batch 8")
    assert fast is not None and slow is not None
    assert fast.shapes == {"x": (8, 4)} and fast.batch == 8
    assert fast.median_ms == pytest.approx(1.0) and slow.median_ms == pytest.approx(4.0)
    assert fast.speedup == pytest.approx(1.0) and slow.speedup == pytest.approx(0.25)
    assert fast.items_per_s == pytest.approx(8000.0)  # 8 items per 1 ms
    assert res.exit_code == 0 and res.passed

    res = fake_bench(mlp_model, fake_backends, ["fake-fast", "fake-slow"], baseline="fake-slow")
    fast = res.row("fake-fast")
    assert fast is not None and fast.speedup == pytest.approx(4.0)


def test_unknown_baseline_is_a_user_error(mlp_model: Path, fake_backends: FakeClock) -> None:
    with pytest.raises(InvalidArgumentError, match="--baseline"):
        fake_bench(mlp_model, fake_backends, ["fake-fast"], baseline="fake-slow")


def test_failing_backend_becomes_rows(mlp_model: Path, fake_backends: FakeClock) -> None:
    res = fake_bench(mlp_model, fake_backends, ["fake-fast", "fake-broken", "fake-b8"], batches=(1, 8))
    broken = [r for r in res.rows if r.label == "fake-broken"]
    assert [r.status for r in broken] == ["error", "error"]
    assert "cannot load" in broken[0].reason
    b8 = {r.point: r for r in res.rows if r.label == "fake-b8"}
    assert b8["batch 1"].status == "ok" and b8["batch 8"].status == "error"
    assert "fake kernel failure" in b8["batch 8"].reason
    assert res.exit_code == 1


def test_static_batch_row_skipped_with_reason(tmp_path: Path, mlp_model: Path, fake_backends: FakeClock) -> None:
    import onnx

    proto = onnx.load(mlp_model)
    for vi in (proto.graph.input[0], proto.graph.output[0]):
        vi.type.tensor_type.shape.dim[0].dim_value = 2  # batch fixed at 2
    model = tmp_path / "static.onnx"
    onnx.save(proto, model)

    class Static(FAKES["fake-fast"]):  # type: ignore[misc, valid-type]
        def _io_specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
            return [TensorSpec("x", (2, 4), "float32")], [TensorSpec("y", (2, 3), "float32")]

    import bench_fakes

    bench_fakes.Static = Static  # type: ignore[attr-defined]
    from enginekit import registry
    from enginekit.registry import BackendInfo

    info = BackendInfo(name="fake-static", description="fake", runner="bench_fakes:Static", requires=())
    registry.BACKENDS = registry.BACKENDS + (info,)  # restored by the fake_backends fixture
    res = fake_bench(model, fake_backends, ["fake-static"], batches=(1, 2))
    one, two = res.rows
    assert one.status == "skipped" and "static batch dim of 2" in one.reason
    assert two.status == "ok"
    assert res.exit_code == 3


def test_unstable_run_is_flagged(mlp_model: Path, fake_backends: FakeClock) -> None:
    res = fake_bench(mlp_model, fake_backends, ["fake-jittery", "fake-fast"], iterations=20, unstable_cv=0.1)
    jittery, fast = res.rows
    assert jittery.timing is not None and jittery.timing.latency.cv == pytest.approx(0.5)
    assert jittery.to_dict()["unstable"] is True and "unstable run" in jittery.warnings[0]
    assert fast.to_dict()["unstable"] is False and fast.warnings == []


def test_transfers_in_rows(mlp_model: Path, fake_backends: FakeClock) -> None:
    plain = fake_bench(mlp_model, fake_backends, ["fake-xfer"]).rows[0]
    split = fake_bench(mlp_model, fake_backends, ["fake-xfer"], with_transfers=True).rows[0]
    assert plain.median_ms == pytest.approx(5.0) and split.median_ms == pytest.approx(8.0)
    assert split.timing is not None and set(split.timing.phases) == {"h2d", "compute", "d2h"}
    assert split.timing.phases["d2h"].median_ms == pytest.approx(2.0)


def test_cuda_graph_unsupported_row(mlp_model: Path, fake_backends: FakeClock) -> None:
    res = fake_bench(mlp_model, fake_backends, ["fake-fast"], cuda_graph=True)
    assert res.rows[0].status == "skipped"
    assert res.rows[0].reason == "CUDA graph: not supported by fake-fast"
    assert res.exit_code == 3


def test_streams_runner_per_thread_unless_thread_safe(mlp_model: Path, fake_backends: FakeClock) -> None:
    # the fake clock is shared by the threads, so only counts are checked here
    res = fake_bench(mlp_model, fake_backends, ["fake-fast"], streams=3, iterations=4)
    row = res.rows[0]
    assert row.status == "ok" and row.streams == 3
    assert row.timing is not None and row.timing.runs == 12  # 3 streams × 4 calls
    assert len(FAKES["fake-fast"].instances) == 3  # not thread-safe: one runner per stream, loaded once


def test_json_structure(mlp_model: Path, fake_backends: FakeClock) -> None:
    res = fake_bench(mlp_model, fake_backends, ["fake-fast", "fake-broken"], batches=(1, 4))
    doc = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert doc["kind"] == "bench" and doc["baseline"] == "fake-fast" and doc["passed"] is False
    assert doc["settings"]["batches"] == [1, 4] and doc["settings"]["iterations"] == 10
    assert {"cpu", "logical_cpus"} <= set(doc["machine"])
    ok = doc["rows"][0]
    assert {"backend", "precision", "point", "status", "reason", "batch", "shapes", "streams", "median_ms",
            "p99_ms", "items_per_s", "speedup", "unstable", "warnings", "timing"} <= set(ok)
    assert ok["shapes"] == {"x": [1, 4]}
    assert set(ok["timing"]["latency"]) == {"count", "min_ms", "mean_ms", "median_ms", "p90_ms", "p95_ms",
                                            "p99_ms", "max_ms", "std_ms", "cv"}
    assert ok["timing"]["clock"] == "perf_counter_ns"
    bad = doc["rows"][1]
    assert bad["status"] == "error" and bad["timing"] is None and bad["median_ms"] is None


def test_plot_written(tmp_path: Path, mlp_model: Path, fake_backends: FakeClock) -> None:
    pytest.importorskip("matplotlib")
    from enginekit.bench.plot import plot_result

    res = fake_bench(mlp_model, fake_backends, ["fake-fast", "fake-slow", "fake-broken"], batches=(1, 8, 32))
    out = plot_result(res, tmp_path / "plots" / "bench.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from enginekit import deps
    from enginekit.bench.plot import check_plot_target
    from enginekit.errors import MissingDependencyError

    monkeypatch.setattr(deps, "is_installed", lambda name: False)
    with pytest.raises(MissingDependencyError) as info:
        check_plot_target(tmp_path / "x.png")
    assert info.value.extra == "plot" and "matplotlib" in str(info.value)


def test_points_planning() -> None:
    specs = [TensorSpec("ids", ("batch", "seq"), "int64"), TensorSpec("mask", ("batch", "seq"), "int64")]
    sets = [parse_shape_set("ids:1x16,mask:1x16"), parse_shape_set("ids:1,32,mask:1,32")]
    points = plan_points([], sets, [2, 4])
    assert [p.label for p in points] == ["ids:1x16,mask:1x16, batch 2", "ids:1x16,mask:1x16, batch 4",
                                         "ids:1x32,mask:1x32, batch 2", "ids:1x32,mask:1x32, batch 4"]
    shapes, batch = resolve_point(specs, points[3])
    assert shapes == {"ids": (4, 32), "mask": (4, 32)} and batch == 4
    # base --input shapes are overridden by a set; other dims still need values
    with pytest.raises(FeedError, match="symbolic dim"):
        resolve_point(specs, plan_points([InputShape("ids", (1, 8))], [], [2])[0])


def test_real_ort_and_openvino_on_mlp(mlp_model: Path) -> None:
    s = BenchSettings(warmup_s=0.0, duration_s=0.02, iterations=5, batches=(1, 16))
    res = benchmark(mlp_model, ["ort", "openvino"], s, BackendSettings())
    assert [r.status for r in res.rows] == ["ok"] * 4, [r.reason for r in res.rows]
    for r in res.rows:
        assert r.timing is not None and r.timing.runs >= 5 and r.timing.clock == "perf_counter_ns"
        assert r.median_ms is not None and r.median_ms > 0
    assert res.row("ort", "batch 1").speedup == 1.0  # type: ignore[union-attr]


def test_real_ort_and_openvino_on_ocr_classifier(ocr_cls_model: Path) -> None:
    s = BenchSettings(warmup_s=0.0, warmup_iterations=1, duration_s=0.0, iterations=3, streams=2)
    res = benchmark(ocr_cls_model, ["ort", "openvino"], s, inputs=[InputShape("x", (1, 3, 48, 192))])
    assert [r.status for r in res.rows] == ["ok", "ok"], [r.reason for r in res.rows]
    for r in res.rows:
        assert r.timing is not None and r.timing.runs >= 6 and r.items_per_s
        assert r.details["backend"] == r.backend
