"""`enginekit prepare`: exit codes 0/1/2, the table, --json, on small models and PaddleOCR's classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

PASS_KEYS = {"name", "status", "nodes_before", "nodes_after", "summary", "reason", "details", "duration_s",
             "verify_s", "verified", "comparison"}
TOP_KEYS = {"passed", "message", "model", "output", "external_data", "verified", "inputs", "tolerances",
            "nodes_before", "nodes_after", "passes"}


@pytest.fixture(autouse=True)
def _registered() -> None:
    # cli/main.py registers the command with app.command("prepare")(prepare_cmd.prepare); do it here
    # when this checkout's main.py does not yet.
    from enginekit.cli import prepare_cmd
    from enginekit.cli.main import app

    if not any(c.name == "prepare" for c in app.registered_commands):
        app.command("prepare")(prepare_cmd.prepare)


@pytest.fixture
def mlp(tmp_path: Path) -> Path:
    """x[batch,4] -> MatMul -> Add(Constant) -> y[batch,3] at opset 17."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(np.ones(3, np.float32))),
        helper.make_node("Add", ["h", "b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "mlp.onnx"
    onnx.save(model, path)
    return path


def test_ocr_classifier_table_exit_0(cli, ocr_cls_model: Path, tmp_path: Path) -> None:
    res = cli("prepare", ocr_cls_model, "-o", tmp_path / "cls.onnx", "--input", "x:1x3x48x192")
    assert res.code == 0, res.stdout + res.stderr
    for needle in ("shape-inference", "simplify", "int64-to-int32", "applied", "PASSED", "566 -> 179"):
        assert needle in res.stdout, needle
    assert (tmp_path / "cls.onnx").is_file()


def test_json_shape(cli, mlp: Path, tmp_path: Path) -> None:
    res = cli("prepare", mlp, "-o", tmp_path / "o.onnx", "--fix-input-shapes", "x:2x4", "--json")
    assert res.code == 0, res.stderr
    doc = res.json()
    assert set(doc) == TOP_KEYS
    assert doc["passed"] is True and doc["verified"] is True and doc["external_data"] is None
    assert doc["inputs"] == {"x": {"shape": [2, 4], "dtype": "float32"}}
    assert doc["tolerances"] == {"atol": 1e-5, "rtol": 1e-5, "check_error_stat": "elemwise"}
    assert [p["name"] for p in doc["passes"]] == ["fix-input-shapes", "unique-dim-names", "shape-inference", "simplify",
                                                  "int64-to-int32"]
    for p in doc["passes"]:
        assert set(p) == PASS_KEYS
    fixed = doc["passes"][0]
    assert fixed["status"] == "applied" and fixed["details"]["outputs"] == {"y": "[batch, 3] -> [2, 3]"}
    assert fixed["comparison"]["outputs"]["y"]["passed"] is True
    written = onnx.load(tmp_path / "o.onnx")
    assert [d.dim_value for d in written.graph.output[0].type.tensor_type.shape.dim] == [2, 3]


def test_failed_pass_exits_1_and_still_writes(cli, mlp: Path, tmp_path: Path) -> None:
    res = cli("prepare", mlp, "-o", tmp_path / "o.onnx", "-i", "x:2x4", "--opset", "13")
    assert res.code == 1, res.stdout + res.stderr
    assert "failed" in res.stdout and "No Adapter From Version" in res.stdout
    assert "FAILED" in res.stdout and "opset failed: the model before it was kept" in res.stdout
    assert (tmp_path / "o.onnx").is_file()

    res = cli("prepare", mlp, "-o", tmp_path / "o2.onnx", "-i", "x:2x4", "--opset", "13", "--json")
    assert res.code == 1
    doc = res.json()
    assert doc["passed"] is False
    rows = [(p["name"], p["status"]) for p in doc["passes"]]
    assert rows[:3] == [("opset", "failed"), ("unique-dim-names", "skipped"), ("shape-inference", "applied")]


def test_no_verify_and_pass_selection(cli, mlp: Path, tmp_path: Path) -> None:
    res = cli("prepare", mlp, "-o", tmp_path / "o.onnx", "--no-verify", "--pass", "simplify", "--json")
    assert res.code == 0, res.stderr
    doc = res.json()
    assert doc["verified"] is False and [p["name"] for p in doc["passes"]] == ["simplify"]
    assert doc["passes"][0]["status"] == "applied" and doc["passes"][0]["verified"] is False

    res = cli("prepare", mlp, "-o", tmp_path / "o3.onnx", "--pass", "none", "--opset", "18", "-i", "x:1x4", "--json")
    assert res.code == 0, res.stderr
    assert [(p["name"], p["status"]) for p in res.json()["passes"]] == [("opset", "applied")]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("--pass", "simplfy", "-i", "x:2x4"), ("Unknown pass 'simplfy'", "did you mean 'simplify'")),
        (("--fix-input-shapes", "x:2x4x1"), ("rank 3 does not match", "--fix-input-shapes x:1x4")),
        (("--fix-input-shapes", "nope:2x4"), ("no input 'nope'",)),
        ((), ("symbolic dim 'batch'", "--input x:1x4")),
        (("-i", "x:2x4", "--opset", "99"), ("--opset 99",)),
        (("-i", "x:2x4", "--atol", "logits:1e-3"), ("not an output of the model",)),
    ],
)
def test_user_errors_exit_2(cli, user_error, mlp: Path, tmp_path: Path, args: tuple[str, ...],
                            needles: tuple[str, ...]) -> None:
    res = cli("prepare", mlp, "-o", tmp_path / "o.onnx", *args)
    user_error(res, *needles)
    assert not (tmp_path / "o.onnx").exists()


def test_missing_model_and_output_folder_exit_2(cli, user_error, mlp: Path, tmp_path: Path) -> None:
    user_error(cli("prepare", tmp_path / "missing.onnx", "-o", tmp_path / "o.onnx"), "does not exist")
    user_error(cli("prepare", mlp, "-o", tmp_path, "-i", "x:2x4"), "is a folder")
