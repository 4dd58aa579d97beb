"""`run --precision-plan` (and `optimize`'s option): plans applied by ort:fp16, onnx-reference and the torch
backends; every misuse is a user error (exit 2, one paragraph, no traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enginekit.graph.precision import PlanEntry, PrecisionPlan, save_plan

LOOSE = ("--atol", "1e-2", "--rtol", "1e-2")
BREAKER = Path(__file__).parents[1] / "backends" / "torch_breaker_model.py"


def _plan(path: Path, nodes: list[str], precision: str = "fp16") -> Path:
    save_plan(PrecisionPlan(precision, tuple(PlanEntry(n, "test") for n in nodes)), path)
    return path


def test_help_documents_the_options(cli) -> None:
    for command in ("run", "optimize"):
        res = cli(command, "--help")
        assert res.code == 0
        text = " ".join(res.stdout.split())
        assert "--precision-plan PLAN.json" in text
        assert "--precision-plan-model" in text


def test_run_ort_fp16_with_plan(cli, scaled_model: Path, tmp_path: Path) -> None:
    res = cli("run", scaled_model, "--input", "x:2x4", "-b", "ort,ort:fp16", *LOOSE, "--val-range", "0.5,1")
    assert res.code == 1, res.stdout + res.stderr  # without the plan 1e-7 rounds to 1.19e-7 in fp16
    plan = _plan(tmp_path / "plan.json", ["scale_up", "scale_down"])
    res = cli("run", scaled_model, "--input", "x:2x4", "-b", "ort,ort:fp16,onnx-reference:fp16", *LOOSE,
              "--val-range", "0.5,1", "--precision-plan", plan, "--json")
    assert res.code == 0, res.stdout + res.stderr
    rows = {r["backend"]: r for r in res.json()["results"]}
    assert rows["ort:fp16"]["details"]["conversion"]["plan_nodes_fp32"] == ["scale_up", "scale_down"]
    assert rows["onnx-reference:fp16"]["details"]["conversion"]["plan_nodes_fp32"] == ["scale_up", "scale_down"]
    assert "conversion" not in rows["ort"]["details"]  # fp32 ignores the plan


def test_run_judges_fp16_rows_by_the_per_precision_rule(cli, scaled_model: Path, tmp_path: Path) -> None:
    """The README's example as written: no --atol/--rtol, the fp16 rows get fp16's scale-aware tolerances (they
    were judged with FP32's 1e-5 before); tolerances given explicitly, even equal to the defaults, are kept."""
    plan = _plan(tmp_path / "plan.json", ["scale_up", "scale_down"])
    args = ("run", scaled_model, "--input", "x:2x4", "-b", "ort,ort:fp16,onnx-reference:fp16", "--val-range", "0.5,1",
            "--precision-plan", plan)
    res = cli(*args, "--json")
    assert res.code == 0, res.stdout + res.stderr
    rows = {r["backend"]: r for r in res.json()["results"]}
    for label in ("ort:fp16", "onnx-reference:fp16"):
        (out,) = rows[label]["outputs"].values()
        assert out["rtol"] == pytest.approx(4 * 2**-10) and out["atol"] >= 4 * 2**-10
    (ref_out,) = rows["ort"]["outputs"].values()
    assert ref_out["atol"] == ref_out["rtol"] == 1e-5
    table = cli(*args)
    assert table.code == 0 and "atol" in table.stdout and "rtol" in table.stdout
    strict = cli(*args, "--atol", "1e-5", "--rtol", "1e-5", "--json")
    assert strict.code == 1, strict.stdout + strict.stderr
    rows = {r["backend"]: r for r in strict.json()["results"]}
    assert all(o["atol"] == 1e-5 for o in rows["ort:fp16"]["outputs"].values())


@pytest.mark.parametrize(("backends", "plan_precision", "nodes", "needles"), [
    ("ort,ort:fp16", "bf16", ["scale_up"], ("bf16 plan", "ort:fp16")),
    ("ort,ort:fp16", "fp16", ["scale_upp"], ("scale_upp", "did you mean 'scale_up'")),
    ("ort,openvino:bf16,onnx-reference:bf16", "bf16", ["scale_up"], ("openvino:bf16", "cannot apply")),
    ("ort,onnx-reference", "fp16", ["scale_up"], ("No listed backend applies", "--backend ort:fp16")),
])
def test_run_plan_misuse_is_a_user_error(cli, user_error, scaled_model: Path, tmp_path: Path, backends: str,
                                         plan_precision: str, nodes: list[str], needles: tuple[str, ...]) -> None:
    plan = _plan(tmp_path / "plan.json", nodes, plan_precision)
    res = cli("run", scaled_model, "--input", "x:2x4", "-b", backends, "--precision-plan", plan)
    user_error(res, *needles)


def test_run_malformed_plan_file(cli, user_error, scaled_model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "plan.json"
    bad.write_text(json.dumps({"precision": "fp8", "keep_fp32": []}))
    user_error(cli("run", scaled_model, "--input", "x:2x4", "-b", "ort:fp16", "--precision-plan", bad), "fp8")


def test_run_torch_source_with_plan(cli, user_error, tmp_path: Path) -> None:
    source = f"{BREAKER}:breaker"
    res = cli("export", source, "-o", tmp_path / "breaker.onnx", "--input", "x:2x8")
    assert res.code == 0, res.stdout + res.stderr
    import onnx

    model = onnx.load(str(tmp_path / "breaker.onnx"))
    nodes = [n.name for n in model.graph.node if n.op_type == "ReduceSum"]
    plan = _plan(tmp_path / "plan.json", nodes)
    args = ("run", source, "--input", "x:2x8", "--torch-device", "cpu", "-b", "torch,torch:fp16", *LOOSE)
    user_error(cli(*args, "--precision-plan", plan), "--precision-plan-model")
    res = cli(*args, "--precision-plan", plan, "--precision-plan-model", tmp_path / "breaker.onnx", "--json")
    assert res.code == 0, res.stdout + res.stderr
    info = res.json()["results"][1]["details"]["precision_plan"]
    assert [(m["module"], m["plan_nodes"], m["widened"]) for m in info["fp32_modules"]] == [("energy", 1, True)]


def test_optimize_applies_the_plan(cli, scaled_model: Path, tmp_path: Path) -> None:
    plan = _plan(tmp_path / "plan.json", ["scale_up", "scale_down"])
    res = cli("optimize", scaled_model, "-b", "ort,ort:fp16", "--input", "x:2x4", "--val-range", "0.5,1", *LOOSE,
              "--precision-plan", plan, "--report", tmp_path / "report", "--json")
    assert res.code == 0, res.stdout + res.stderr
    rows = {r["backend"]: r for r in res.json()["results"]}
    assert rows["ort:fp16"]["details"]["conversion"]["plan_nodes_fp32"] == ["scale_up", "scale_down"]


def test_optimize_gives_the_plan_to_tensorrt_builds_at_its_precision(tmp_path: Path) -> None:
    from enginekit.pipeline.plan import tensorrt_builds as _builds

    plan = _plan(tmp_path / "plan.json", ["scale_up"])
    builds = {b.precision: b.precision_plan for b in _builds("tensorrt-rtx", (), (), None, (), None, plan)}
    assert builds == {"fp32": None, "fp16": plan}
