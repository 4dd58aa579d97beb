"""`inspect`, `doctor`, `--help`/`--version`, and that the CLI does not import heavy packages for help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "openvino", "tensorrt_rtx", "tensorrt", "onnxruntime", "paddle")


def test_inspect_json_ocr(cli, ocr_cls_model: Path) -> None:
    res = cli("inspect", ocr_cls_model, "--json")
    assert res.code == 0, res.stderr
    info = res.json()
    assert info["producer_name"] == "PaddlePaddle"
    assert info["opset_imports"] == {"ai.onnx": 11}
    assert info["max_opset"] == 11
    (inp,) = info["inputs"]
    assert inp == {"name": "x", "shape": ["?", 3, "?", "?"], "dtype": "float32"}
    (out,) = info["outputs"]
    assert out["dtype"] == "float32" and out["shape"][-1] == 2
    assert info["node_count"] > 100
    assert info["op_counts"]["Conv"] > 10
    assert info["parameter_count"] > 0
    assert info["external_data_files"] == []


def test_inspect_text(cli, mlp_model: Path) -> None:
    res = cli("inspect", mlp_model)
    assert res.code == 0, res.stderr
    assert "mlp.onnx" in res.stdout
    assert "MatMul 2" in res.stdout
    assert "float32" in res.stdout


def test_inspect_text_ocr_shape(cli, ocr_cls_model: Path) -> None:
    res = cli("inspect", ocr_cls_model)
    assert res.code == 0, res.stderr
    assert "[?, 3, ?, ?]" in res.stdout  # a bracket starting with '?' is not taken for rich markup


def test_inspect_text_shows_symbolic_dims(cli, mlp_model: Path) -> None:
    res = cli("inspect", mlp_model)
    assert "[batch, 4]" in res.stdout


def test_inspect_mlp_json_symbolic_dims(cli, mlp_model: Path) -> None:
    info = cli("inspect", mlp_model, "--json").json()
    assert info["inputs"] == [{"name": "x", "shape": ["batch", 4], "dtype": "float32"}]
    assert info["outputs"] == [{"name": "y", "shape": ["batch", 3], "dtype": "float32"}]
    assert info["op_counts"] == {"MatMul": 2, "Add": 1, "Relu": 1}
    assert info["parameter_count"] == 4 * 8 + 8 + 8 * 3


def test_doctor_json(cli) -> None:
    res = cli("doctor", "--json")
    assert res.code == 0, res.stderr
    doc = res.json()
    backends = {b["name"]: b for b in doc["backends"]}
    assert {"ort", "openvino", "onnx-reference"} <= set(backends)
    for name in ("ort", "openvino", "onnx-reference"):
        assert backends[name]["available"] is True, backends[name]
        assert backends[name]["reason"] == ""
    assert "bf16" in backends["openvino"]["precisions"]
    assert isinstance(doc["packages"], dict) and "numpy" in doc["packages"]
    assert isinstance(doc["warnings"], list)


def test_doctor_text(cli) -> None:
    res = cli("doctor")
    assert res.code == 0, res.stderr
    for name in ("ort", "openvino", "onnx-reference"):
        assert name in res.stdout


def test_help_subprocess(cli_subprocess) -> None:
    res = cli_subprocess("--help")
    assert res.code == 0, res.stderr
    for cmd in ("run", "compare", "inspect", "doctor"):
        assert cmd in res.stdout
    assert "Exit codes" in res.stdout


def test_subcommand_help(cli) -> None:
    res = cli("run", "--help")
    assert res.code == 0
    for opt in ("--backend", "--input", "--load-inputs", "--save-outputs", "--atol", "--report", "--json"):
        assert opt in res.stdout


def test_version(cli) -> None:
    import enginekit

    res = cli("--version")
    assert res.code == 0
    assert enginekit.__version__ in res.stdout


def test_help_imports_no_heavy_package() -> None:
    code = (
        "import json, sys\n"
        "from enginekit.cli.main import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        f"print(json.dumps({{'code': code, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["code"] in (0, None)
    assert result["heavy"] == []
