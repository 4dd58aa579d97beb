"""The argv reproduce.sh writes for a Python-API run builds the same settings again: settings -> argv -> settings
through the real CLI parser (only the final call that would run the job is replaced, to capture its settings)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from enginekit.cli.main import main
from enginekit.compare import CompareSettings, Tolerances
from enginekit.pipeline.plan import plan_optimize
from enginekit.report.reproduce import optimize_command
from enginekit.settings import BackendSettings, OptimizeSettings


def _parse(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> OptimizeSettings:
    from enginekit.cli import optimize_cmd

    seen: list[Any] = []
    monkeypatch.setattr(optimize_cmd, "_run", lambda settings, as_json, package=None: seen.append(settings))
    assert argv[0] == "enginekit"
    with pytest.raises(SystemExit) as done:
        main(argv[1:])
    assert done.value.code in (0, None) and len(seen) == 1
    settings = seen[0]
    assert isinstance(settings, OptimizeSettings)
    return settings


def _same(a: OptimizeSettings, b: OptimizeSettings) -> None:
    assert a == b
    for x, y in ((a.compare.atol, b.compare.atol), (a.compare.rtol, b.compare.rtol)):
        assert x.default_given == y.default_given  # not part of ==, and it changes the fp16 rule


MODELS = Path(__file__).parents[1] / "backends" / "torch_models.py"


@pytest.mark.parametrize("case", ["onnx", "builds", "export", "search", "detection", "masks"])
def test_optimize_settings_round_trip(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    plan = tmp_path / "plan.json"
    plan.write_text('{"version": 1, "precision": "fp16", "keep_fp32": []}')
    tight = CompareSettings(atol=Tolerances(1e-4, (("logits", 1e-3),), default_given=True),
                            rtol=Tolerances(1e-5, (("logits", 2e-3),)), check_error_stat="median")
    if case == "onnx":
        s = plan_optimize("m.onnx", backends=["ort", "openvino:bf16"], reference="ort", inputs=["x:2x3x8x8"],
                          seed=7, val_ranges=["x:-1.0,1.0"], allow_nonfinite=True, prepare=True,
                          dataset=Path("d.npz"), batch_size=4, compare=tight, report_dir=Path("rep"), limit=50,
                          gates=["accuracy>=-0.5pp", "top5_accuracy>=abs:0.9"], task="segmentation", threshold=0.3,
                          ctc_blank=2, postprocess="enginekit.examples.digits:onnx_path",
                          backend=BackendSettings(ort_providers=("cpu",)))
    elif case == "builds":
        s = plan_optimize("m.onnx", target="tensorrt-rtx", precisions=["fp32", "fp16"],
                          profiles=["x:1x3x8x8:4x3x8x8:8x3x8x8"], calib_data=None, compute_capabilities=["8.6"],
                          cache_dir=Path("cache"), precision_plan=plan, report_dir=Path("rep"))
    elif case == "export":
        s = plan_optimize(f"{MODELS}:convnet", inputs=["x:batch,3,16,16"], dynamic=[], exporter="dynamo",
                          opset="18", seed=3, val_ranges=["0.0,1.0"], prepare=False, backends=["torch", "ort"],
                          trust_remote_code=True, report_dir=Path("rep"))
    elif case in ("detection", "masks"):
        (tmp_path / "images").mkdir()
        (tmp_path / "masks").mkdir()
        (tmp_path / "coco.json").write_text('{"images": []}')
        labels = {"annotations": Path("coco.json")} if case == "detection" else {"masks": Path("masks")}
        s = plan_optimize("m.onnx", dataset=Path("images"), task="segmentation" if case == "masks" else case,
                          threshold=0.25, postprocess="enginekit.examples.digits:onnx_path", limit=3,
                          preprocess=["size=32,48", "mean=0.5"], gates=["map50>=-2pp"], report_dir=Path("rep"),
                          **labels)  # type: ignore[arg-type]
    else:
        s = plan_optimize(f"{MODELS}:convnet", inputs=["x:batch,3,16,16"], report_dir=Path("rep"),
                          backend=BackendSettings(torch_device="cpu"), search_batches=[1, 8],
                          search_candidates=["inductor/mode=default/freezing=on"], search_precisions=["fp32"],
                          search_duration=0.25, search_compile_limit=42.0)
    argv = optimize_command(s)
    again = _parse(argv, monkeypatch)
    _same(s, again)


def test_default_tolerances_stay_unwritten(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A default tolerance the user never gave must not come back as a given one (fp16 rows would lose their
    scale-aware rule in the rerun)."""
    monkeypatch.chdir(tmp_path)
    s = plan_optimize(None, report_dir=Path("rep"))
    argv = optimize_command(s)
    assert "--atol" not in argv and "--rtol" not in argv
    again = _parse(argv, monkeypatch)
    _same(s, again)
    given = replace(s, compare=CompareSettings(atol=Tolerances(1e-5, default_given=True)))
    assert "--atol" in optimize_command(given)


def _parse_run(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    import enginekit.multirun

    seen: list[Any] = []

    def capture(settings: Any, feed: Any = None) -> None:
        seen.append(settings)
        raise SystemExit(0)

    monkeypatch.setattr(enginekit.multirun, "run_backends", capture)
    with pytest.raises(SystemExit):
        main(argv[1:])
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("case", ["plain", "everything"])
def test_run_settings_round_trip(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from enginekit.data import parse_input_shape, parse_value_range
    from enginekit.report.reproduce import run_command
    from enginekit.settings import FeedSettings, RunSettings

    monkeypatch.chdir(tmp_path)
    if case == "plain":
        s = RunSettings(model=Path("m.onnx"))
    else:
        s = RunSettings(
            model=Path("m.onnx"), backends=("ort", "openvino", "ort:fp16"), reference="openvino",
            feeds=FeedSettings(inputs=(parse_input_shape("x:2x3"),), seed=5,
                               val_ranges=(parse_value_range("x:-2.0,2.0"),), allow_nonfinite=True),
            backend=BackendSettings(ort_providers=("cpu",), openvino_precision="bf16", ort_graph_optimization="basic",
                                    ort_intra_op_threads=2, ort_optimized_model=Path("opt.onnx"),
                                    ort_cuda_fp16=True, ort_trt_cache_dir=Path("trt"),
                                    ort_trt_profiles=("x:1x3:2x3:4x3",), torch_device="cpu",
                                    inductor_mode="max-autotune", inductor_freezing=False, channels_last="on",
                                    dynamic_shapes="dynamic", trust_remote_code=True),
            compare=CompareSettings(atol=Tolerances(1e-3, (("y", 1e-2),), default_given=True),
                                    rtol=Tolerances(1e-5, (("y", 2e-3),)), check_error_stat="mean",
                                    validate=True, equal_nan=True),
            save_inputs=Path("in.npz"), save_outputs=Path("out.npz"), report_dir=Path("rep"), check_model=False)
    again = _parse_run(run_command(s), monkeypatch)
    assert again == s
    assert again.compare.atol.default_given == s.compare.atol.default_given


def test_export_settings_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import enginekit.export.api
    from enginekit.data import parse_value_range
    from enginekit.report.reproduce import export_command
    from enginekit.settings import EXPORT_TOLERANCE, DynamicDim, ExportSettings

    monkeypatch.chdir(tmp_path)
    seen: list[Any] = []

    def capture(settings: Any) -> None:
        seen.append(settings)
        raise SystemExit(0)

    monkeypatch.setattr(enginekit.export.api, "export_model", capture)
    cases = [
        ExportSettings(source=f"{MODELS}:convnet", output=Path("m.onnx")),
        ExportSettings(source=f"{MODELS}:convnet", output=Path("out/m.onnx"), inputs=("x:batch,3,16,16",),
                       dynamic=(DynamicDim("x", 0, "batch", 1, 64),), output_names=("logits",),
                       weights=Path("w.pt"), exporter="torchscript", opset=17, target="tensorrt==10", verify=False,
                       seed=4, val_ranges=(parse_value_range("x:0.0,1.0"),),
                       compare=CompareSettings(atol=Tolerances(1e-3, default_given=True),
                                               rtol=Tolerances(EXPORT_TOLERANCE, (("logits", 1e-2),))),
                       trust_remote_code=True),
    ]
    (tmp_path / "out").mkdir()
    for s in cases:
        seen.clear()
        with pytest.raises(SystemExit):
            main(export_command(s)[1:])
        assert seen == [s]
        assert seen[0].compare.atol.default_given == s.compare.atol.default_given


def test_build_settings_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import enginekit.backends.tensorrt.build
    from enginekit.report.reproduce import build_command
    from enginekit.settings import BuildSettings

    monkeypatch.chdir(tmp_path)
    seen: list[Any] = []

    def capture(model: Any, settings: Any, *progress: Any) -> None:
        seen.append((Path(model), settings))
        raise SystemExit(0)

    monkeypatch.setattr(enginekit.backends.tensorrt.build, "build_engine", capture)
    cases = [
        BuildSettings(backend="tensorrt-rtx"),
        BuildSettings(backend="tensorrt", output=Path("m.engine"), profiles=("x:1x3:4x3:8x3", "x:1x3:2x3:2x3"),
                      profile_from=Path("feeds.npz"), precision="int8", precision_plan=Path("plan.json"),
                      calib_data=Path("calib"), calib_method="entropy", calib_cache=Path("c.cache"), workspace_mib=512,
                      optimization_level=5, timing_cache=Path("t.cache"), version_compatible=True,
                      hardware_compatibility="ampere-plus", compute_capabilities=("8.6", "12.0"),
                      cache_dir=Path("cache"), use_cache=False, unique_dim_names=False),
    ]
    for s in cases:
        seen.clear()
        with pytest.raises(SystemExit):
            main(build_command("m.onnx", s)[1:])
        assert seen == [(Path("m.onnx"), s)]


def test_prepare_settings_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import enginekit.graph.prepare
    from enginekit.data import parse_input_shape
    from enginekit.report.reproduce import prepare_command
    from enginekit.settings import FeedSettings, PrepareSettings

    monkeypatch.chdir(tmp_path)
    seen: list[Any] = []

    def capture(model: Any, settings: Any) -> None:
        seen.append(settings)
        raise SystemExit(0)

    monkeypatch.setattr(enginekit.graph.prepare, "prepare_model", capture)
    cases = [
        PrepareSettings(output=Path("out.onnx")),
        PrepareSettings(output=Path("out.onnx"), passes=()),
        PrepareSettings(output=Path("out.onnx"), passes=("shape-inference", "int64-to-int32"), target_opset=17,
                        fix_input_shapes=(parse_input_shape("x:1x3x8x8"),), verify=False,
                        feeds=FeedSettings(inputs=(parse_input_shape("x:1x3x8x8"),), seed=9),
                        compare=CompareSettings(atol=Tolerances(1e-4, default_given=True), check_error_stat="max")),
    ]
    for s in cases:
        seen.clear()
        with pytest.raises(SystemExit):
            main(prepare_command("m.onnx", s)[1:])
        assert seen == [s]


def test_debug_settings_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import enginekit.debug.workflow
    from enginekit.data import parse_input_shape
    from enginekit.examples import digits
    from enginekit.report.reproduce import debug_command
    from enginekit.settings import DebugSettings, FeedSettings

    monkeypatch.chdir(tmp_path)
    seen: list[Any] = []

    def capture(model: Any, feeds: Any, settings: Any) -> None:
        seen.append(settings)
        raise SystemExit(0)

    monkeypatch.setattr(enginekit.debug.workflow, "debug_precision", capture)
    validated = CompareSettings(validate=True)  # debug precision always validates (NaN/Inf fail)
    cases = [
        DebugSettings(compare=validated),
        DebugSettings(precision="bf16", backend="ort", reference="fp64", max_evaluations=50, range_analysis=False,
                      allow_weak_reference=True, compare=replace(validated, atol=Tolerances(1e-3, default_given=True),
                                                                  check_error_stat="median")),
        DebugSettings(precision="int8", calibration=Path("calib.npz"), calib_method="entropy", compare=validated),
    ]
    for s in cases:
        seen.clear()
        with pytest.raises(SystemExit):
            feeds = FeedSettings(inputs=(parse_input_shape("x:4x1x8x8"),), seed=2)
            main(debug_command(digits.onnx_path(), s, feeds)[1:])
        assert seen == [s]


def test_bench_settings_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import enginekit.bench.sweep
    from enginekit.data import parse_input_shape
    from enginekit.report.reproduce import bench_command
    from enginekit.settings import BenchSettings

    monkeypatch.chdir(tmp_path)
    seen: list[Any] = []

    def capture(model: Any, candidates: Any, bench: Any, backend: Any, inputs: Any, **kw: Any) -> None:
        seen.append((tuple(candidates), bench, backend, tuple(inputs)))
        raise SystemExit(0)

    monkeypatch.setattr(enginekit.bench.sweep, "benchmark", capture)
    x = parse_input_shape("x:1x3x8x8")
    cases = [
        (("ort",), BenchSettings(), BackendSettings(), ()),
        (("ort", "openvino", "ort:fp16"),
         BenchSettings(warmup_s=0.25, warmup_iterations=5, duration_s=1.5, iterations=7, batches=(1, 8),
                       shapes=((x,), (parse_input_shape("x:2x3x8x8"),)), baseline="openvino", with_transfers=True,
                       cuda_graph=True, streams=2, unstable_cv=0.2, seed=3),
         BackendSettings(ort_providers=("cpu",), ort_intra_op_threads=2, openvino_precision="bf16",
                         torch_device="cpu", inductor_mode="reduce-overhead", inductor_freezing=False,
                         channels_last="off", dynamic_shapes="auto", trust_remote_code=True),
         (x,)),
    ]
    for cands, bench, backend, inputs in cases:
        seen.clear()
        with pytest.raises(SystemExit):
            main(bench_command("m.onnx", cands, bench, backend, inputs)[1:])
        assert seen == [(cands, bench, backend, inputs)]
