"""`enginekit debug precision`: plan + fixed model written, exit codes 0 / 1 / 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from enginekit.cli import debug_cmd
from enginekit.cli.main import app
from enginekit.graph.precision import convert_precision, load_plan

Cli = Callable[..., Any]

sys.path.insert(0, str(Path(__file__).parents[1] / "debug"))
import fp16_models  # noqa: E402

if not any(g.name == "debug" for g in app.registered_groups):  # until cli/main.py registers it
    app.add_typer(debug_cmd.debug_app, name="debug")


def _save(tmp_path: Path, builder: Callable[[], tuple[onnx.ModelProto, dict[str, np.ndarray], list[str]]]
          ) -> tuple[Path, Path, list[str]]:
    model, feed, culprits = builder()
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    feeds = tmp_path / "feed.npz"
    np.savez(feeds, **feed)  # type: ignore[arg-type]
    return path, feeds, culprits


def test_fixes_planted_culprit_and_writes_plan_and_model(cli: Cli, tmp_path: Path) -> None:
    model, feeds, culprits = _save(tmp_path, fp16_models.attention_logits_overflow)
    res = cli("debug", "precision", model, "--precision", "fp16", "--load-inputs", feeds,
              "-o", tmp_path / "fixed.onnx", "--plan", tmp_path / "plan.json", "--json")
    assert res.code == 0, res.stderr
    doc = res.json()
    assert doc["passed"] and doc["kept"] < doc["baseline"]["nodes"]
    assert doc["range_analysis"][0]["node"] == culprits[0]
    plan = load_plan(tmp_path / "plan.json")
    assert culprits[0] in plan.node_names()
    fixed = onnx.load(tmp_path / "fixed.onnx")
    onnx.checker.check_model(fixed)
    assert convert_precision(onnx.load(model), "fp16", plan).model.graph.node  # plan is consumable


def test_table_output(cli: Cli, tmp_path: Path) -> None:
    model, feeds, culprits = _save(tmp_path, fp16_models.large_activation_before_norm)
    res = cli("debug", "precision", model, "--load-inputs", feeds)
    assert res.code == 0, res.stderr
    assert culprits[0] in res.stdout and "range analysis" in res.stdout
    assert "for everything after the first bad layer" in res.stdout and "of FLOPs in FP32" in res.stdout
    assert "PASSED" in res.stdout


def test_healthy_model_random_feed_empty_plan(cli: Cli, tmp_path: Path) -> None:
    model, _, _ = _save(tmp_path, fp16_models.healthy_mlp)
    res = cli("debug", "precision", model, "--seed", "3", "--plan", tmp_path / "plan.json", "--json")
    assert res.code == 0, res.stderr
    assert res.json()["kept"] == 0 and load_plan(tmp_path / "plan.json").keep_fp32 == ()


def test_check_command(cli: Cli, tmp_path: Path) -> None:
    model, feeds, _ = _save(tmp_path, fp16_models.large_activation_before_norm)
    ok = cli("debug", "precision", model, "--load-inputs", feeds, "--check",
             f'{sys.executable} -c "import sys; sys.exit(0)"', "--json")
    assert ok.code == 0, ok.stderr
    assert ok.json()["kept"] == 0
    bad = cli("debug", "precision", model, "--load-inputs", feeds, "--check", "test -f \"$MODEL\" && exit 1",
              "--max-evaluations", "4", "-o", tmp_path / "never.onnx", "--json")
    assert bad.code == 1 and not bad.json()["passed"]
    assert not (tmp_path / "never.onnx").exists()


@pytest.mark.parametrize("args,needle", [
    (["--precision", "fp8"], "--precision"),
    (["--max-evaluations", "1"], "--max-evaluations"),
    (["--check", " "], "--check"),
])
def test_user_errors_exit_2(cli: Cli, tmp_path: Path, user_error: Callable[..., None], args: list[str],
                            needle: str) -> None:
    model, feeds, _ = _save(tmp_path, fp16_models.healthy_mlp)
    user_error(cli("debug", "precision", model, "--load-inputs", feeds, *args), needle)


def test_missing_model_exit_2(cli: Cli, tmp_path: Path, user_error: Callable[..., None]) -> None:
    user_error(cli("debug", "precision", tmp_path / "nope.onnx"), "nope.onnx")


def test_report_folder(tmp_path: Path) -> None:
    import subprocess
    import sys as _sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "debug"))
    import fp16_models  # type: ignore[import-not-found]

    model, feed, culprits = fp16_models.attention_logits_overflow()
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    np.savez(tmp_path / "in.npz", **feed)
    exe = str(Path(_sys.executable).with_name("enginekit"))
    res = subprocess.run([exe, "debug", "precision", str(path), "--precision", "fp16", "--load-inputs",
                          str(tmp_path / "in.npz"), "--report", str(tmp_path / "rep")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    rep = tmp_path / "rep"
    for name in ("report.json", "report.md", "reproduce.sh", "plan.json", "fixed.onnx", "error_growth.png"):
        assert (rep / name).is_file(), name
    md = (rep / "report.md").read_text()
    assert culprits[0] in md and "first tensor outside tolerance" in md
    import json

    doc = json.loads((rep / "report.json").read_text())
    assert doc["layerwise"]["first_bad"]["tensor"] == culprits[0]


import int8_models  # noqa: E402


def test_int8_plan_from_calibration_file_is_built_by_tensorrt_rtx(cli: Cli, tmp_path: Path) -> None:
    model, feeds, culprits = _save(tmp_path, int8_models.activation_outlier_channel)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.concatenate([f["x"] for f in int8_models.calibration()]))
    res = cli("debug", "precision", model, "--precision", "int8", "--load-inputs", feeds, "--calibration", calib,
              "--plan", tmp_path / "plan.json", "-o", tmp_path / "fixed.onnx", "--json")
    assert res.code == 0, res.stderr
    doc = res.json()
    assert doc["passed"] and doc["plan"]["precision"] == "int8" and doc["kept"] == 1
    assert doc["runs"]["candidates"]["backend"] == "ort" and "warning" not in doc
    assert load_plan(tmp_path / "plan.json").node_names() == culprits
    assert "DequantizeLinear" in {n.op_type for n in onnx.load(tmp_path / "fixed.onnx").graph.node}
    pytest.importorskip("tensorrt_rtx")
    build = cli("build", model, "--backend", "tensorrt-rtx", "--precision", "int8", "--calib-data", calib,
                "--precision-plan", tmp_path / "plan.json", "--cache-dir", tmp_path / "cache",
                "--profile", "x:1x32:32x32:128x32", "--compute-capability", "8.6", "--json")
    assert build.code == 0, build.stderr
    precision = build.json()["manifest"]["precision"]
    assert "1 plan node(s) left in float" in precision["how"]
    assert precision["quantization"]["excluded_nodes"] == culprits


def test_fp64_reference_and_report(cli: Cli, tmp_path: Path) -> None:
    model, feeds, culprits = _save(tmp_path, fp16_models.attention_logits_overflow)
    res = cli("debug", "precision", model, "--load-inputs", feeds, "--reference", "fp64", "--backend",
              "onnx-reference", "--report", tmp_path / "report", "--json")
    assert res.code == 0, res.stderr
    doc = res.json()
    assert doc["runs"]["reference"] == {"precision": "fp64", "backend": "onnx-reference"}
    assert culprits[0] in [e["node"] for e in doc["plan"]["keep_fp32"]]
    assert (tmp_path / "report" / "report.md").is_file()


@pytest.mark.parametrize("args, message", [
    (["--backend", "tensorrt"], "--check"),
    (["--backend", "nope"], "not one of"),
    (["--reference", "fp16"], "not one of"),
    (["--calibration", "x.npz"], "int8 only"),
    (["--precision", "int8", "--calib-method", "kl"], "minmax"),
    (["--precision", "int4"], "fp16, bf16, int8"),
])
def test_bad_debug_flags_exit_2(cli: Cli, tmp_path: Path, args: list[str], message: str) -> None:
    model, feeds, _ = _save(tmp_path, fp16_models.healthy_mlp)
    res = cli("debug", "precision", model, "--load-inputs", feeds, *args)
    assert res.code == 2 and message in res.stderr + res.stdout, res.stderr
    assert "Traceback" not in res.stderr


def test_int8_plan_is_refused_for_an_fp16_build(cli: Cli, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt_rtx")
    from enginekit.graph.precision import PlanEntry, PrecisionPlan, save_plan

    model, _, _ = _save(tmp_path, int8_models.activation_outlier_channel)
    save_plan(PrecisionPlan("int8", (PlanEntry("mix_matmul"),)), tmp_path / "plan.json")
    res = cli("build", model, "--backend", "tensorrt-rtx", "--precision", "fp16", "--precision-plan",
              tmp_path / "plan.json", "--cache-dir", tmp_path / "cache", "--profile", "x:1x32:32x32:128x32")
    assert res.code == 2 and "int8" in res.stderr + res.stdout
