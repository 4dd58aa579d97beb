"""Verdicts that must not mislead: per-precision tolerances for engine files, runtime errors that name the node,
optimize's exit code when a build or candidate failed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from enginekit.examples import digits

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None


@pytest.mark.skipif(not HAS_RTX, reason="tensorrt_rtx is not installed")
def test_run_takes_an_engine_files_precision_from_its_manifest(cli, tmp_path: Path) -> None:
    engine = tmp_path / "d.fp16.engine"
    built = cli("build", digits.onnx_path(), "--backend", "tensorrt-rtx", "--precision", "fp16", "--profile",
                "x:1x1x8x8:8x1x8x8:64x1x8x8", "--cache-dir", tmp_path / "c", "-o", engine)
    assert built.code == 0, built.stdout + built.stderr
    res = cli("run", engine, "-b", "tensorrt-rtx", "--input", "x:4x1x8x8", "--json")
    (row,) = res.json()["results"]
    assert row["precision"] == "fp16" and row["backend"] == "tensorrt-rtx:fp16"  # judged by fp16's rule


def _bad_reshape(path: Path) -> Path:
    """x[n,4] -> Relu -> Reshape to [3,-1]: valid ONNX that fails at run time for n=2 (8 elements)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape = numpy_helper.from_array(np.array([3, -1], np.int64), "shp")
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu0"),
             helper.make_node("Reshape", ["r", "shp"], ["y"], name="bad_reshape")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, "m"])], initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_error_rows_name_the_failing_node(cli, tmp_path: Path) -> None:
    """Each runtime says it differently (onnxruntime by node name, OpenVINO by output name, onnx's reference
    evaluator not at all but on its traceback): the row names the model's node every time."""
    model = _bad_reshape(tmp_path / "bad.onnx")
    res = cli("run", model, "-b", "ort,openvino,onnx-reference", "--input", "x:2x4", "--json")
    assert res.code == 1
    rows = res.json()["results"]
    assert [r["status"] for r in rows] == ["error"] * 3
    for r in rows:
        assert r["details"]["failing_node"]["name"] == "bad_reshape", r
        assert r["details"]["failing_node"]["op_type"] == "Reshape"
        assert r["reason"].startswith("node 'bad_reshape' (Reshape): ")
    text = cli("run", model, "-b", "ort", "--input", "x:2x4")
    assert "node 'bad_reshape' (Reshape)" in " ".join(text.stdout.split())


def test_debugger_refuses_to_pass_on_a_degenerate_reference(cli, ocr_det_model: Path, text_image,
                                                            tmp_path: Path) -> None:
    """PaddleOCR's v4 detector finds nothing on a random 64x64 feed (output ~0 everywhere), so every fp16 plan
    'passes' there; on a real scanned page the same empty plan fails. The first is INCONCLUSIVE, not PASSED."""
    import numpy as np

    args = ("debug", "precision", ocr_det_model, "--precision", "fp16", "--max-evaluations", "2", "--json")
    rand = cli(*args, "--input", "x:1x3x64x64")
    doc = rand.json()
    assert rand.code == 1 and doc["verdict"] == "inconclusive" and doc["passed"] is False
    assert doc["before"]["passed"] and doc["kept"] == 0  # the search itself 'passed' with an empty plan
    assert any("near-constant" in w for w in doc["weak_reference"])
    allowed = cli(*args, "--input", "x:1x3x64x64", "--allow-weak-reference")
    assert allowed.code == 0 and allowed.json()["verdict"] == "passed"
    text = cli(*args[:-1], "--input", "x:1x3x64x64")
    assert "INCONCLUSIVE" in text.stdout and "--load-inputs" in text.stdout

    page = tmp_path / "page.npz"
    np.savez(page, **text_image(64, 128))
    real = cli(*args, "--load-inputs", page)
    doc = real.json()
    assert doc["weak_reference"] == [] and doc["verdict"] == "failed"
    assert not doc["before"]["passed"] and doc["before"]["max_abs_err"] > 10 * 2**-10  # the empty plan fails here


def test_run_and_optimize_mark_a_pass_on_a_degenerate_reference_weak(cli, ocr_det_model: Path) -> None:
    res = cli("run", ocr_det_model, "-b", "ort,openvino", "--input", "x:1x3x64x64", "--json")
    assert res.code == 0 and any("near-constant" in w for w in res.json()["weak_reference"])
    text = cli("run", ocr_det_model, "-b", "ort,openvino", "--input", "x:1x3x64x64")
    assert "weak verdict" in text.stdout and "PASSED (weak" in " ".join(text.stdout.split())
    opt = cli("optimize", ocr_det_model, "-b", "ort,openvino", "--input", "x:1x3x64x64", "--report", "rep", "--json")
    assert opt.code == 0 and opt.json()["weak_reference"], opt.stdout


@pytest.mark.skipif(not HAS_RTX, reason="tensorrt_rtx is not installed")
def test_optimize_fails_when_a_build_failed(cli, contrib_model: Path, tmp_path: Path) -> None:
    """A com.microsoft op TensorRT-RTX's parser rejects: both builds fail, so optimize is FAILED (exit 1) even
    though ort itself passed; the rows say the build failed and why (it printed PASSED, exit 0, before)."""
    res = cli("optimize", contrib_model, "--target", "tensorrt-rtx", "-b", "ort", "--report", tmp_path / "r",
              "--cache-dir", tmp_path / "c", "--json")
    doc = res.json()
    assert res.code == 1 and doc["passed"] is False
    steps = {s["name"]: s["status"] for s in doc["steps"]}
    assert steps["build tensorrt-rtx"] == steps["build tensorrt-rtx:fp16"] == "FAIL"
    rows = {r["backend"]: r for r in doc["results"]}
    assert rows["ort"]["status"] == "ok"
    assert rows["tensorrt-rtx"]["status"] == "error" and "its build failed" in rows["tensorrt-rtx"]["reason"]
    text = cli("optimize", contrib_model, "--target", "tensorrt-rtx", "-b", "ort", "--report", tmp_path / "r2",
               "--cache-dir", tmp_path / "c")
    assert text.code == 1 and "FAILED" in text.stdout and "PASSED" not in text.stdout


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="needs a machine without TensorRT")
def test_optimize_says_builds_were_skipped_for_a_missing_package(cli, tmp_path: Path) -> None:
    res = cli("optimize", digits.onnx_path(), "--target", "tensorrt", "-b", "ort", "--input", "x:4x1x8x8",
              "--report", tmp_path / "r", "--json")
    doc = res.json()
    assert res.code == 0 and doc["passed"] is True, res.stdout
    build = next(s for s in doc["steps"] if s["name"] == "build tensorrt")
    assert build["status"] == "SKIPPED" and build["reason"].startswith("missing package")
    rows = {r["backend"]: r for r in doc["results"]}
    assert rows["tensorrt"]["status"] == "skipped" and "tensorrt" in rows["tensorrt"]["reason"]
    assert any(s.startswith("tensorrt:") for s in doc["skipped"])
