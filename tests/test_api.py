"""The Python API (enginekit.api, exposed lazily as enginekit.inspect/export/run/compare/bench/optimize/load)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from tests.conftest import make_mlp

import enginekit
from enginekit import api
from enginekit.compare import CompareSettings, Tolerances
from enginekit.errors import (
    FeedError,
    InvalidArgumentError,
    ModelLoadError,
    UnknownNameError,
    VerificationError,
)
from enginekit.examples.digits import onnx_path
from enginekit.registry import get_backend
from enginekit.settings import BackendSettings, BenchSettings, ExportSettings, RunSettings
from enginekit.status import Status

HEAVY = ("torch", "openvino", "tensorrt_rtx", "tensorrt", "onnxruntime", "paddle")
DIGITS = onnx_path()
EXPORT_MODELS = Path(__file__).parent / "export" / "models_for_export.py"


def _python(code: str) -> Any:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ort_outputs(model: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed), strict=True))


def _digits_feed(batch: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).random((batch, 1, 8, 8), dtype=np.float32)}


# import enginekit: light, lazy, and callable subpackages ----------------------------------------------------
def test_import_enginekit_is_light() -> None:
    result = _python(
        "import json, sys\n"
        "import enginekit\n"
        "light = sorted(m for m in ('numpy', 'onnx', *" + repr(HEAVY) + ") if m in sys.modules)\n"
        "enginekit.load, enginekit.run, enginekit.inspect, enginekit.optimize, enginekit.RunSettings\n"
        "enginekit.export, enginekit.compare, enginekit.bench\n"
        "after = sorted(m for m in " + repr(HEAVY) + " if m in sys.modules)\n"
        "print(json.dumps({'light': light, 'after': after, 'api': 'enginekit.api' in sys.modules}))\n"
    )
    assert result == {"light": [], "after": [], "api": True}


@pytest.mark.parametrize("first", ["call", "import"])
def test_subpackages_are_callable_and_stay_subpackages(first: str) -> None:
    """enginekit.export/compare/bench are the subpackages (one object, their submodules reachable) and the API
    functions, whichever way they are reached first."""
    call = "r = enginekit.compare({'y': np.ones(3)}, {'y': np.ones(3)}); assert r.passed\n"
    imports = ("import enginekit.compare.metrics, enginekit.bench.sweep\n"
               "from enginekit.export.api import export_model\n"
               "from enginekit.compare import CompareSettings\n")
    result = _python(
        "import json, sys\nimport numpy as np\nimport enginekit\n"
        + (call + imports if first == "call" else imports + call)
        + "mods = [enginekit.export, enginekit.compare, enginekit.bench]\n"
        "print(json.dumps({\n"
        "  'callable': [callable(m) for m in mods],\n"
        "  'same': [m is sys.modules[m.__name__] for m in mods],\n"
        "  'metrics': enginekit.compare.metrics.compare_outputs is enginekit.compare.compare_outputs,\n"
        "  'sweep': callable(enginekit.bench.sweep.benchmark),\n"
        "  'export_api': export_model is enginekit.export.api.export_model,\n"
        "}))\n"
    )
    assert result == {"callable": [True] * 3, "same": [True] * 3, "metrics": True, "sweep": True,
                      "export_api": True}


def test_lazy_names_and_errors() -> None:
    assert enginekit.run is api.run
    assert enginekit.load is api.load
    assert enginekit.RunSettings is RunSettings
    assert {"inspect", "export", "run", "compare", "bench", "optimize", "load"} <= set(dir(enginekit))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        enginekit.nope  # type: ignore[attr-defined]  # noqa: B018
    from enginekit import polygraphy_json  # a submodule is still importable by `from enginekit import`

    assert polygraphy_json.__name__ == "enginekit.polygraphy_json"


# inspect ----------------------------------------------------------------------------------------------------
def test_inspect_is_the_command_summary() -> None:
    info = enginekit.inspect(DIGITS)
    doc = info.to_dict()
    assert [(t["name"], t["shape"], t["dtype"]) for t in doc["inputs"]] == [("x", ["batch", 1, 8, 8], "float32")]
    assert doc["outputs"][0]["name"] == "logits"
    assert doc["op_counts"]["Conv"] == 3
    assert info.parameter_count == doc["parameter_count"] > 0


def test_inspect_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        enginekit.inspect(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError):
        enginekit.inspect(tmp_path / "junk.onnx")
    with pytest.raises(InvalidArgumentError, match="must be a path"):
        enginekit.inspect(3)  # type: ignore[arg-type]


# compare ----------------------------------------------------------------------------------------------------
def test_compare_in_memory_and_files(tmp_path: Path) -> None:
    ref = {"y": np.array([1.0, 2.0, 3.0], np.float32), "z": np.zeros(2, np.float32)}
    close = {"y": ref["y"] + 1e-6, "z": ref["z"]}
    far = {"y": ref["y"] + 1e-2, "z": ref["z"]}
    assert enginekit.compare(ref, close).passed
    result = enginekit.compare(ref, far)
    assert not result.passed
    assert [o.name for o in result.outputs if not o.passed] == ["y"]
    assert enginekit.compare(ref, far, atol=0.02).passed
    assert enginekit.compare(ref, far, atol={"y": 0.02}).passed  # per output
    assert enginekit.compare(ref, far, atol=["1e-5", "y:0.02"]).passed  # the CLI's values
    assert enginekit.compare(ref, far, settings=CompareSettings(atol=Tolerances(0.02))).passed
    assert enginekit.compare(ref, far, check_error_stat="mean", atol=0.011).passed
    np.savez(tmp_path / "ref.npz", **ref)
    np.savez(tmp_path / "far.npz", **far)
    assert not enginekit.compare(tmp_path / "ref.npz", str(tmp_path / "far.npz")).passed
    nan = {"y": np.array([np.nan, 2, 3], np.float32), "z": ref["z"]}
    assert not enginekit.compare(nan, nan).passed
    assert enginekit.compare(nan, nan, equal_nan=True).passed


def test_compare_bad_input() -> None:
    ref = {"y": np.ones(3)}
    with pytest.raises(UnknownNameError, match="Did you mean 'y'"):
        enginekit.compare(ref, ref, atol={"yy": 1e-3})
    with pytest.raises(InvalidArgumentError, match="not both"):
        enginekit.compare(ref, ref, atol=1e-3, settings=CompareSettings())
    with pytest.raises(InvalidArgumentError, match="must be a non-negative number"):
        enginekit.compare(ref, ref, atol=-1.0)
    with pytest.raises(InvalidArgumentError, match="not a number"):
        enginekit.compare(ref, ref, rtol="abc")
    with pytest.raises(InvalidArgumentError, match="check-error-stat"):
        enginekit.compare(ref, ref, check_error_stat="maximum")
    with pytest.raises(FeedError, match="mapping"):
        enginekit.compare([np.ones(3)], ref)  # type: ignore[arg-type]
    with pytest.raises(FeedError, match="Python objects"):
        enginekit.compare({"y": np.array([object()])}, ref)


# run --------------------------------------------------------------------------------------------------------
def test_run_in_memory_feeds_on_two_backends() -> None:
    pytest.importorskip("openvino")
    feed = _digits_feed()
    result = enginekit.run(DIGITS, feed, backends=["ort", "openvino"])
    assert result.passed, [(r.label, r.status, r.reason) for r in result.rows]
    assert result.reference == "ort"
    assert [r.label for r in result.rows] == ["ort", "openvino"]
    np.testing.assert_array_equal(result.feed["x"], feed["x"])
    expected = _ort_outputs(DIGITS, feed)
    np.testing.assert_array_equal(result.outputs_of("ort")["logits"], expected["logits"])  # type: ignore[index]
    np.testing.assert_allclose(result.outputs_of("openvino")["logits"], expected["logits"],  # type: ignore[index]
                               rtol=1e-4, atol=1e-4)
    comparison = result.rows[1].comparison
    assert comparison is not None and comparison.passed
    assert "logits" in result.to_dict()["results"][1]["outputs"]


def test_run_judges_with_the_compare_settings() -> None:
    feed = _digits_feed()
    strict = enginekit.run(DIGITS, feed, backends=["ort", "ort:fp16"], atol=0.0, rtol=0.0)
    assert strict.rows[1].status == Status.FAILED
    loose = enginekit.run(DIGITS, feed, backends=["ort", "ort:fp16"],
                          compare=CompareSettings(atol=Tolerances(0.5, default_given=True),
                                                  rtol=Tolerances(0.5, default_given=True)))
    assert loose.passed, loose.rows[1].reason
    default = enginekit.run(DIGITS, feed, backends=["ort", "ort:fp16"])  # the per-precision rule, as the CLI
    assert default.rows[1].status == Status.OK, default.rows[1].reason


def test_run_random_feed_and_settings(tmp_path: Path) -> None:
    mlp = make_mlp(tmp_path / "mlp.onnx")
    result = enginekit.run(mlp, inputs=["x:5x4"], seed=3, backends="ort")
    assert result.passed and result.feed["x"].shape == (5, 4)
    again = enginekit.run(RunSettings(model=mlp, backends=("ort", "onnx-reference")), {"x": result.feed["x"]})
    assert again.passed
    np.testing.assert_array_equal(again.outputs_of("ort")["y"], result.outputs_of("ort")["y"])  # type: ignore[index]


def test_run_bad_input(tmp_path: Path) -> None:
    mlp = make_mlp(tmp_path / "mlp.onnx")
    with pytest.raises(FeedError) as info:
        enginekit.run(mlp, {"x": np.ones((2, 5), np.float32)})
    assert "feeds" in str(info.value) and "enginekit-feeds-" not in str(info.value)
    with pytest.raises(FeedError):
        enginekit.run(mlp, {"nope": np.ones((2, 4), np.float32)})
    with pytest.raises(FeedError, match="mapping"):
        enginekit.run(mlp, np.ones((2, 4), np.float32))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="not both"):
        enginekit.run(mlp, {"x": np.ones((2, 4), np.float32)}, inputs=["x:2x4"])
    with pytest.raises(UnknownNameError, match="did you mean 'openvino'"):
        enginekit.run(mlp, backends=["openvin"], inputs=["x:2x4"])
    with pytest.raises(InvalidArgumentError, match="at least one backend"):
        enginekit.run(mlp, backends=[], inputs=["x:2x4"])
    with pytest.raises(InvalidArgumentError, match="RunSettings alone"):
        enginekit.run(RunSettings(model=mlp), atol=1e-3)
    with pytest.raises(ModelLoadError):
        enginekit.run(tmp_path / "missing.onnx", inputs=["x:2x4"])
    with pytest.raises(UnknownNameError, match="'y'"):
        enginekit.run(mlp, inputs=["x:2x4"], atol={"why": 1e-3})


def test_run_and_load_a_pytorch_source() -> None:
    """A PyTorch source takes its forward() specs from the feeds' arrays, or from export-style inputs (as `run`)."""
    pytest.importorskip("torch")
    source = f"{EXPORT_MODELS}:convnet"
    x = np.random.default_rng(2).random((2, 3, 16, 16), dtype=np.float32)
    result = enginekit.run(source, {"x": x}, backends=["torch"])
    assert result.passed, result.rows[0].reason
    shaped = enginekit.run(source, inputs=["x:batch,3,16,16"], backends="torch")
    assert shaped.passed and shaped.feed["x"].shape[1:] == (3, 16, 16)
    with enginekit.load(source, inputs=["x:2x3x16x16"]) as model:
        assert model.label == "torch"
        np.testing.assert_allclose(model(x=x)["output"], result.outputs_of("torch")["output"],  # type: ignore[index]
                                   rtol=1e-5, atol=1e-6)


# bench ------------------------------------------------------------------------------------------------------
def test_bench_sweeps_batches() -> None:
    result = enginekit.bench(DIGITS, ["ort"], batches=[1, 4], inputs=["x:1x1x8x8"], warmup_s=0.0, duration_s=0.02,
                             iterations=3)
    assert [(r.label, r.batch, r.status) for r in result.rows] == [("ort", 1, Status.OK), ("ort", 4, Status.OK)]
    assert all(r.median_ms is not None and r.median_ms > 0 for r in result.rows)
    assert result.settings.duration_s == 0.02 and result.settings.batches == (1, 4)
    base = BenchSettings(warmup_s=0.0, duration_s=0.01, iterations=2)
    shaped = enginekit.bench(DIGITS, "ort", shapes=["x:2x1x8x8"], settings=base)
    assert shaped.rows[0].shapes == {"x": (2, 1, 8, 8)} and shaped.settings.iterations == 2


def test_bench_bad_input() -> None:
    with pytest.raises(InvalidArgumentError, match="positive integer"):
        enginekit.bench(DIGITS, ["ort"], batches=[0])
    with pytest.raises(InvalidArgumentError, match="--streams"):
        enginekit.bench(DIGITS, ["ort"], streams=0, inputs=["x:1x1x8x8"])
    with pytest.raises(InvalidArgumentError, match="BenchSettings"):
        enginekit.bench(DIGITS, ["ort"], settings=RunSettings(model=DIGITS))  # type: ignore[arg-type]


# optimize ---------------------------------------------------------------------------------------------------
def test_optimize_with_options_and_settings(tmp_path: Path) -> None:
    report = tmp_path / "report"
    result = enginekit.optimize(DIGITS, backends=["ort"], inputs=["x:4x1x8x8"], report_dir=report)
    assert result.passed and [c.row.label for c in result.candidates] == ["ort"]
    assert (report / "report.json").is_file()
    from enginekit.pipeline import plan_optimize

    settings = plan_optimize(DIGITS, backends=["ort"], inputs=["x:2x1x8x8"], report_dir=tmp_path / "r2")
    assert enginekit.optimize(settings).passed
    with pytest.raises(InvalidArgumentError, match="did you mean 'report_dir'"):
        enginekit.optimize(DIGITS, report_dri=Path("r"))
    with pytest.raises(InvalidArgumentError, match="must be a BackendSettings"):
        enginekit.optimize(DIGITS, backend=["ort"])
    with pytest.raises(InvalidArgumentError, match="OptimizeSettings alone"):
        enginekit.optimize(settings, backends=["ort"])


# export -----------------------------------------------------------------------------------------------------
def test_export_a_pytorch_factory(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "conv.onnx"
    result = enginekit.export(f"{EXPORT_MODELS}:convnet", out, inputs=["x:batch,3,16,16"],
                              dynamic=["x:0=batch[1..8]"], output_names=["y"], exporter="torchscript")
    assert result.verified is True and out.is_file()
    assert [o.name for o in result.outputs] == ["y"]
    info = enginekit.inspect(out)
    assert info.inputs[0].shape[0] == "batch"
    with pytest.raises(VerificationError):
        enginekit.export(f"{EXPORT_MODELS}:sign_branch", tmp_path / "sign.onnx", inputs=["x:batch,8"],
                         exporter="torchscript")
    assert (tmp_path / "sign.failed.onnx").is_file() and not (tmp_path / "sign.onnx").exists()


def test_export_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"\.onnx"):
        enginekit.export(f"{EXPORT_MODELS}:convnet", tmp_path / "conv.txt", inputs=["x:1x3x16x16"])
    with pytest.raises(InvalidArgumentError, match="output="):
        enginekit.export(f"{EXPORT_MODELS}:convnet")
    with pytest.raises(InvalidArgumentError, match="alone"):
        enginekit.export(ExportSettings(source="m.py:f", output=tmp_path / "m.onnx"), tmp_path / "m.onnx")
    with pytest.raises(InvalidArgumentError, match="already ONNX"):
        enginekit.export(DIGITS, tmp_path / "again.onnx")
    with pytest.raises(InvalidArgumentError):
        enginekit.export(f"{EXPORT_MODELS}:convnet", tmp_path / "c.onnx", dynamic=["x:zero=batch"])


# load -------------------------------------------------------------------------------------------------------
def test_load_an_onnx_model() -> None:
    feed = _digits_feed()
    expected = _ort_outputs(DIGITS, feed)
    with enginekit.load(DIGITS) as model:
        assert (model.label, model.backend, model.precision) == ("ort", "ort", "fp32")
        assert [s.name for s in model.inputs] == ["x"] and [s.name for s in model.outputs] == ["logits"]
        np.testing.assert_array_equal(model(feed)["logits"], expected["logits"])
        np.testing.assert_array_equal(model(x=feed["x"])["logits"], expected["logits"])
        with pytest.raises(FeedError):
            model({"x": feed["x"][:, :, :4]})
        with pytest.raises(InvalidArgumentError, match="not both"):
            model(feed, x=feed["x"])
    assert model.closed and "closed" in repr(model)
    with pytest.raises(InvalidArgumentError, match="closed"):
        model(feed)
    model.close()  # twice: nothing


def test_load_other_backends_and_precisions() -> None:
    feed = _digits_feed()
    expected = _ort_outputs(DIGITS, feed)["logits"]
    model = enginekit.load(DIGITS, "ort", precision="fp16")
    try:
        assert model.label == "ort:fp16"
        np.testing.assert_allclose(model(feed)["logits"], expected, atol=0.05, rtol=0.05)
    finally:
        model.close()
    with enginekit.load(DIGITS, "onnx-reference", settings=BackendSettings()) as ref:
        np.testing.assert_allclose(ref(feed)["logits"], expected, atol=1e-4, rtol=1e-4)
    if not get_backend("openvino").available().ok:
        return
    with enginekit.load(DIGITS, "openvino") as ov:
        np.testing.assert_allclose(ov(feed)["logits"], expected, atol=1e-4, rtol=1e-4)


def test_load_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        enginekit.load(tmp_path / "missing.onnx")
    with pytest.raises(UnknownNameError, match="did you mean 'ort'"):
        enginekit.load(DIGITS, "ortt")
    with pytest.raises(InvalidArgumentError, match="runs torch models"):
        enginekit.load(DIGITS, "torch")
    with pytest.raises(InvalidArgumentError, match="precisions"):
        enginekit.load(DIGITS, "ort:int4")
    with pytest.raises(InvalidArgumentError, match="disagree"):
        enginekit.load(DIGITS, "ort:fp16", precision="fp32")
    with pytest.raises(InvalidArgumentError, match="must be a BackendSettings"):
        enginekit.load(DIGITS, settings="ort")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="backends="):
        enginekit.run(DIGITS, backend="openvino", inputs=["x:1x1x8x8"])  # type: ignore[arg-type]


# load(package) --------------------------------------------------------------------------------------------------
def _write_package(folder: Path, *, engines: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    """A package folder laid out as docs/PACKAGE.md says, by hand: model.onnx, samples, package.json."""
    (folder / "samples").mkdir(parents=True)
    (folder / "engines" / "min_latency").mkdir(parents=True)
    shutil.copy2(DIGITS, folder / "model.onnx")
    feed = _digits_feed(2)
    outputs = _ort_outputs(folder / "model.onnx", feed)
    np.savez(folder / "samples" / "inputs.npz", **feed)
    np.savez(folder / "samples" / "outputs.npz", **outputs)
    np.savez(folder / "samples" / "outputs.min_latency.npz", **outputs)
    timing = {"median_ms": 0.05, "p90_ms": 0.06, "items_per_s": 40000.0, "batch": 2}
    doc: dict[str, Any] = {
        "format": "enginekit-package",
        "version": 1,
        "name": "digits",
        "model": "model.onnx",
        "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 1, 8, 8]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", 10]}],
        "engines": engines if engines is not None else {
            "min_latency": {
                "candidate": "ort", "backend": "ort", "precision": "fp32", "options": [],
                "file": None, "manifest": None, "timing": timing,
                "outputs": "samples/outputs.min_latency.npz", "tolerance": {"atol": 1e-05, "rtol": 1e-05},
            },
            "max_throughput": {
                "candidate": "onnx-reference", "backend": "onnx-reference", "precision": "fp32", "options": [],
                "file": None, "manifest": None, "timing": timing,
                "outputs": "samples/outputs.max_throughput.npz", "tolerance": {"atol": 1e-05, "rtol": 1e-05},
            },
        },
        "reference": "ort",
        "samples": {"inputs": "samples/inputs.npz", "reference_outputs": "samples/outputs.npz"},
        "backend_settings": {"ort_providers": [], "ort_intra_op_threads": 1, "openvino_device": "CPU",
                             "ort_graph_optimization": "basic", "precision_plan": None, "trust_remote_code": True,
                             "ort_optimized_model": "/somewhere/else/optimized.onnx", "a_future_field": 1},
        "versions": {"enginekit": enginekit.__version__, "python": sys.version.split()[0]},
        "created": "2026-12-04T21:00:00+00:00",
    }
    doc.update(changes)
    (folder / "package.json").write_text(json.dumps(doc, indent=2))
    return doc


def test_load_a_package(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    doc = _write_package(pkg)
    feed = dict(np.load(pkg / "samples" / "inputs.npz"))
    recorded = dict(np.load(pkg / "samples" / "outputs.min_latency.npz"))
    with enginekit.load(pkg) as model:
        assert (model.label, model.objective, model.package) == ("ort", "min_latency", doc)
        assert model.model_path == (pkg / "model.onnx").resolve()
        settings = model.runner.settings
        assert (settings.ort_intra_op_threads, settings.ort_graph_optimization) == (1, "basic")
        assert settings.trust_remote_code is False  # never taken from the package's file
        assert settings.ort_optimized_model is None
        assert enginekit.compare(recorded, model(feed)).passed
    with enginekit.load(str(pkg), objective="max_throughput") as model:
        assert model.label == "onnx-reference"
        assert enginekit.compare(recorded, model(feed), atol=1e-4, rtol=1e-4).passed
    with pytest.raises(UnknownNameError, match="did you mean 'max_throughput'"):
        enginekit.load(pkg, objective="max_througput")
    with pytest.raises(InvalidArgumentError, match="is a package"):
        enginekit.load(pkg, "ort")


def test_load_a_package_applies_candidate_options(tmp_path: Path) -> None:
    """A TorchScript engine packaged as `torch/channels_last=off`: the option reaches the runner's settings, and
    the file (which runs code when loaded) needs trust_remote_code=True from the caller."""
    torch = pytest.importorskip("torch")
    pkg = tmp_path / "pkg"
    lin = torch.nn.Linear(4, 3).eval()
    timing = {"median_ms": 0.05, "p90_ms": 0.06, "items_per_s": 40000.0, "batch": 2}
    engine = {"candidate": "torch/channels_last=off", "backend": "torch", "precision": "fp32",
              "options": ["channels_last=off"], "file": "engines/min_latency/model.pt", "manifest": None,
              "timing": timing, "outputs": "samples/outputs.min_latency.npz",
              "tolerance": {"atol": 1e-05, "rtol": 1e-05}}
    _write_package(pkg, engines={"min_latency": engine},
                   backend_settings={"torch_inputs": ["x:2x4"], "torch_device": "cpu", "trust_remote_code": True})
    torch.jit.trace(lin, torch.zeros(2, 4)).save(str(pkg / "engines" / "min_latency" / "model.pt"))
    with pytest.raises(ModelLoadError, match="trust-remote-code|trust_remote_code"):
        enginekit.load(pkg)
    x = np.random.default_rng(1).random((2, 4), dtype=np.float32)
    with enginekit.load(pkg, trust_remote_code=True) as model:
        assert model.label == "torch/channels_last=off"
        assert model.runner.settings.channels_last == "off"
        assert model.runner.settings.torch_inputs == ("x:2x4",)
        with torch.no_grad():
            expected = lin(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(next(iter(model({"x": x}).values())), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("change", "match"), [
    ({"format": "something-else"}, "not an enginekit package"),
    ({"version": 2}, "version 2"),
    ({"model": "../outside.onnx"}, "outside the package"),
    ({"model": "/abs/model.onnx"}, "absolute path"),
    ({"model": "gone.onnx"}, "missing from the package"),
    ({"engines": {}}, "lists no engines"),
    ({"engines": {"min_latency": {"candidate": "ort", "backend": "openvino", "file": None}}}, "says 'ort'"),
    ({"backend_settings": {"ort_intra_op_threads": "many"}}, "ort_intra_op_threads"),
])
def test_load_a_bad_package(tmp_path: Path, change: dict[str, Any], match: str) -> None:
    pkg = tmp_path / "pkg"
    change = dict(change)
    engines = change.pop("engines", None)
    _write_package(pkg, engines=engines, **change)
    with pytest.raises(ModelLoadError, match=match):
        enginekit.load(pkg)


def test_load_a_package_with_unreadable_json(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    _write_package(pkg)
    (pkg / "package.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not a readable package"):
        enginekit.load(pkg)
