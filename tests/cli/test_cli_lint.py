"""`enginekit lint`: exit codes 0/1/2, the --json structure, --no-parse, and lazy imports."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from enginekit.cli import lint_cmd
from enginekit.cli.main import app

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None

if not any(c.name == "lint" for c in app.registered_commands):  # until cli/main.py registers it
    app.command("lint")(lint_cmd.lint)


@pytest.fixture
def layernorm_model(tmp_path: Path) -> Path:
    scale = numpy_helper.from_array(np.ones(8, np.float32), "scale")
    bias = numpy_helper.from_array(np.zeros(8, np.float32), "bias")
    node = helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y"], name="ln[0]", axis=-1)
    graph = helper.make_graph([node], "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], [scale, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "ln.onnx"
    onnx.save(model, path)
    return path


def test_clean_model_exits_0(cli, mlp_model: Path) -> None:
    res = cli("lint", mlp_model)
    assert res.code == 0, res.stderr
    assert "EK-TRT-DYNAMIC-SHAPE" in res.stdout and "x [batch, 4]" in res.stdout
    assert "0 errors" in res.stdout


def test_unsupported_op_exits_1_and_shows_the_fix(cli, layernorm_model: Path) -> None:
    res = cli("lint", layernorm_model, "--target", "tensorrt==8.5", "--no-parse")
    assert res.code == 1, res.stderr
    assert "EK-TRT-UNSUPPORTED-OP" in res.stdout and "LayerNormalization" in res.stdout
    assert "ln[0]" in res.stdout  # user text is escaped, not taken for rich markup
    assert "opset <= 16" in res.stdout
    assert cli("lint", layernorm_model, "--target", "tensorrt==8.6", "--no-parse").code == 0


def test_json_structure(cli, layernorm_model: Path) -> None:
    res = cli("lint", layernorm_model, "--target", "tensorrt==8.5", "--json")
    assert res.code == 1, res.stderr
    data = res.json()
    assert {"path", "target", "target_version", "table_version", "table_source", "ok", "counts", "parser",
            "parser_note", "model", "findings"} <= set(data)
    assert data["target"] == "tensorrt" and data["target_version"] == "8.5" and data["ok"] is False
    assert data["counts"]["error"] == sum(f["severity"] == "error" for f in data["findings"])
    first = data["findings"][0]
    assert first["severity"] == "error" and first["code"] == "EK-TRT-UNSUPPORTED-OP" and first["nodes"] == ["ln[0]"]
    if HAS_RTX:
        assert data["parser"]["library"] == "tensorrt_rtx" and data["parser"]["ok"] is True
    else:
        assert data["parser"] is None


def test_no_parse_in_json(cli, mlp_model: Path) -> None:
    data = cli("lint", mlp_model, "--no-parse", "--json").json()
    assert data["parser"] is None
    assert all(f["code"] != "EK-TRT-PARSER" for f in data["findings"])


@pytest.mark.skipif(not HAS_RTX, reason="tensorrt_rtx is not installed")
def test_ocr_model_on_tensorrt_rtx(cli, ocr_cls_model: Path) -> None:
    res = cli("lint", ocr_cls_model, "--target", "tensorrt-rtx", "--json")
    assert res.code == 0, res.stdout
    data = res.json()
    assert data["parser"]["ok"] is True and data["parser"]["num_layers"] > 100
    dyn = [f for f in data["findings"] if f["code"] == "EK-TRT-DYNAMIC-SHAPE"]
    assert dyn and dyn[0]["tensors"] == ["x"]


def test_contrib_op_ok_for_ort_error_for_tensorrt(cli, contrib_model: Path) -> None:
    assert cli("lint", contrib_model, "--target", "ort").code == 0
    res = cli("lint", contrib_model, "--target", "tensorrt", "--no-parse", "--json")
    assert res.code == 1
    assert any(f["code"] == "EK-TRT-CUSTOM-OP" for f in res.json()["findings"])


def test_user_errors_exit_2(cli, user_error, mlp_model: Path, tmp_path: Path) -> None:
    user_error(cli("lint", tmp_path / "missing.onnx"), "does not exist")
    user_error(cli("lint", mlp_model, "--target", "tensorrtt"), "did you mean 'tensorrt'")
    user_error(cli("lint", mlp_model, "--target", "tensorrt==9.2"), "not in the support table")
    user_error(cli("lint", mlp_model, "--target", "tensorrt=8.5"), "NAME==VERSION")
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("hello")
    user_error(cli("lint", not_onnx), "text file")


def test_lint_command_imports_no_heavy_package() -> None:
    code = ("import sys, enginekit.cli.lint_cmd, enginekit.graph.lint, enginekit.graph.trt_parser; "
            "heavy = [m for m in ('tensorrt', 'tensorrt_rtx', 'onnxruntime', 'torch') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(not HAS_RTX, reason="tensorrt_rtx is not installed")
def test_json_stdout_stays_clean_when_the_native_parser_prints(tmp_path: Path) -> None:
    node = helper.make_node("StringNormalizer", ["x"], ["y"], name="strnorm")
    graph = helper.make_graph([node], "s", [helper.make_tensor_value_info("x", TensorProto.STRING, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.STRING, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "s.onnx")
    code = ("import sys; from enginekit.cli.main import app, main; from enginekit.cli import lint_cmd\n"
            "if not any(c.name == 'lint' for c in app.registered_commands): app.command('lint')(lint_cmd.lint)\n"
            "main(sys.argv[1:])")
    proc = subprocess.run([sys.executable, "-c", code, "lint", str(tmp_path / "s.onnx"), "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)  # nothing but JSON on stdout
    assert "Unsupported ONNX data type" not in proc.stderr  # the library's own print is kept in the parser log
    assert any("Unsupported ONNX data type" in line for line in data["parser"]["log"])


def test_profile_with_shared_question_mark_dims_exits_1(cli, user_error, ocr_cls_model: Path, tmp_path: Path) -> None:
    """PaddleOCR's classifier x [?, 3, ?, ?]: H 48 and W 192 cannot share the name '?' in TensorRT."""
    args = ("lint", ocr_cls_model, "--target", "tensorrt-rtx", "--no-parse", "--json")
    plain = cli(*args)
    assert plain.code == 0 and [f["severity"] for f in plain.json()["findings"]
                                if f["code"] == "EK-TRT-DIM-NAMES"] == ["warning"]
    res = cli(*args, "--profile", "x:1x3x48x192:4x3x48x192:8x3x48x192")
    assert res.code == 1, res.stdout + res.stderr
    (err,) = [f for f in res.json()["findings"] if f["code"] == "EK-TRT-DIM-NAMES"]
    assert err["severity"] == "error" and "x dim 2 (48) and x dim 3 (192)" in err["message"]
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, x=np.zeros((2, 3, 48, 192), np.float32))
    assert cli(*args, "--profile-from", feeds).code == 1
    user_error(cli(*args, "--profile", "y:1x3x48x192:4x3x48x192:8x3x48x192"), "does not have")
