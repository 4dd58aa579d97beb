"""`enginekit run`: exit codes 0/1, JSON output, saved feeds/outputs, reports, real backends (no mocks)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ALL = ("-b", "ort", "-b", "openvino", "-b", "onnx-reference")
BIN_DIR = Path(sys.executable).parent  # where the venv installed the `enginekit` script
OUTPUT_KEYS = {"passed", "max_abs_err", "max_rel_err", "cosine", "nan_count", "inf_count"}


def _strict_json(text: str) -> object:
    def refuse(token: str) -> object:
        raise ValueError(f"non-strict JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


def test_three_backends_agree(cli, mlp_model: Path) -> None:
    res = cli("run", mlp_model, "--input", "x:2x4", *ALL)
    assert res.code == 0, res.stdout + res.stderr
    assert "PASSED" in res.stdout
    for name in ("ort", "openvino", "onnx-reference"):
        assert name in res.stdout


def test_three_backends_json(cli, mlp_model: Path) -> None:
    res = cli("run", mlp_model, "--input", "x:2x4", *ALL, "--json")
    assert res.code == 0, res.stderr
    doc = res.json()
    assert doc["passed"] is True
    assert doc["reference"] == "ort"
    assert doc["inputs"] == {"x": {"shape": [2, 4], "dtype": "float32"}}
    assert [r["backend"] for r in doc["results"]] == ["ort", "openvino", "onnx-reference"]
    assert [r["reference"] for r in doc["results"]] == [True, False, False]
    for row in doc["results"]:
        assert {"backend", "status", "reason", "outputs"} <= set(row)
        assert row["status"] == "ok" and row["reason"] == ""
        assert set(row["outputs"]) == {"y"}
        y = row["outputs"]["y"]
        assert OUTPUT_KEYS <= set(y)
        assert y["passed"] is True
        assert y["max_abs_err"] <= 1e-5
        assert y["cosine"] == pytest.approx(1.0, abs=1e-6)
        assert y["nan_count"] == 0 and y["inf_count"] == 0


def test_reference_option_reorders_comparison(cli, mlp_model: Path) -> None:
    res = cli("run", mlp_model, "--input", "x:3x4", "-b", "ort,openvino", "--reference", "ov", "--json")
    assert res.code == 0, res.stderr
    doc = res.json()
    assert doc["reference"] == "openvino"
    rows = {r["backend"]: r for r in doc["results"]}
    assert rows["openvino"]["reference"] is True and rows["ort"]["reference"] is False


def test_backend_error_becomes_a_row(cli, contrib_model: Path) -> None:
    """onnx-reference cannot run com.microsoft FusedMatMul: exit 1, ort's row is still there."""
    res = cli("run", contrib_model, "-b", "ort", "-b", "onnx-reference", "--json")
    assert res.code == 1, res.stderr
    doc = res.json()
    assert doc["passed"] is False
    rows = {r["backend"]: r for r in doc["results"]}
    assert set(rows) == {"ort", "onnx-reference"}
    assert rows["ort"]["status"] == "ok"
    assert rows["ort"]["outputs"]["y"]["passed"] is True
    err = rows["onnx-reference"]
    assert {"backend", "status", "reason", "outputs"} <= set(err)
    assert err["status"] == "error"
    assert "FusedMatMul" in err["reason"]
    assert err["outputs"] == {}
    assert "Traceback" not in res.stderr


def test_backend_error_text_output(cli, contrib_model: Path) -> None:
    res = cli("run", contrib_model, "-b", "ort", "-b", "onnx-reference")
    assert res.code == 1
    assert "FAILED" in res.stdout
    assert "FusedMatMul" in res.stdout
    assert "Traceback" not in res.stdout + res.stderr


def test_erroring_reference_skips_the_others(cli, contrib_model: Path) -> None:
    res = cli("run", contrib_model, "-b", "onnx-reference", "-b", "ort", "--json")
    assert res.code == 1
    rows = {r["backend"]: r for r in res.json()["results"]}
    assert rows["onnx-reference"]["status"] == "error"
    assert rows["ort"]["status"] == "skipped"
    assert "onnx-reference" in rows["ort"]["reason"]


def test_seed_makes_feeds_reproducible(cli, mlp_model: Path, tmp_path: Path) -> None:
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        res = cli("run", mlp_model, "--input", "x:2x4", "--seed", seed, "--save-inputs", tmp_path / f"{name}.npz")
        assert res.code == 0, res.stderr
    a, b, c = (np.load(tmp_path / f"{n}.npz")["x"] for n in "abc")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_val_range_applies_to_random_feed(cli, mlp_model: Path, tmp_path: Path) -> None:
    res = cli("run", mlp_model, "--input", "x:16x4", "--val-range", "x:-3,-2", "--save-inputs", tmp_path / "in.npz")
    assert res.code == 0, res.stderr
    x = np.load(tmp_path / "in.npz")["x"]
    assert x.dtype == np.float32 and x.shape == (16, 4)
    assert x.min() >= -3 and x.max() <= -2


def test_integer_inputs_and_masks(cli, two_input_model: Path, tmp_path: Path) -> None:
    res = cli("run", two_input_model, "--input", "ids:2x16", "--input", "mask:2x16", "-b", "ort,onnx-reference",
              "--save-inputs", tmp_path / "in.npz", "--json")
    assert res.code == 0, res.stderr
    feed = np.load(tmp_path / "in.npz")
    assert feed["ids"].dtype == np.int64 and feed["mask"].dtype == np.int64
    assert feed["ids"].min() >= 0 and feed["ids"].max() <= 100
    assert (feed["mask"] == 1).all()


def test_save_outputs_one_backend_exact_file(cli, mlp_model: Path, tmp_path: Path) -> None:
    target = tmp_path / "out" / "y.npz"
    res = cli("run", mlp_model, "--input", "x:2x4", "--save-outputs", target, "--save-inputs", tmp_path / "in.npz")
    assert res.code == 0, res.stderr
    assert sorted(p.name for p in target.parent.iterdir()) == ["y.npz"]
    with np.load(target) as out:
        assert out.files == ["y"]
        assert out["y"].shape == (2, 3) and out["y"].dtype == np.float32


def test_save_outputs_several_backends_and_roundtrip(cli, mlp_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.npz"
    inp = tmp_path / "in.npz"
    res = cli("run", mlp_model, "--input", "x:3x4", *ALL, "--save-outputs", out, "--save-inputs", inp)
    assert res.code == 0, res.stderr
    names = {"out.ort.npz", "out.openvino.npz", "out.onnx-reference.npz"}
    assert names <= {p.name for p in tmp_path.iterdir()}
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with np.load(inp) as feed:
        assert feed.files == ["x"] and feed["x"].shape == (3, 4)

    # Two saved output files compare equal.
    cmp = cli("compare", tmp_path / "out.ort.npz", tmp_path / "out.openvino.npz", "--json")
    assert cmp.code == 0, cmp.stderr
    assert cmp.json()["passed"] is True

    # The saved feed reproduces identical outputs.
    again = tmp_path / "again.npz"
    res = cli("run", mlp_model, "--load-inputs", inp, "--save-outputs", again)
    assert res.code == 0, res.stderr
    with np.load(again) as a, np.load(tmp_path / "out.ort.npz") as b:
        np.testing.assert_array_equal(a["y"], b["y"])
    assert cli("compare", tmp_path / "out.ort.npz", again, "--atol", "0", "--rtol", "0").code == 0


def test_per_output_tolerance_only_loosens_that_output(cli, mlp_model: Path, npz, tmp_path: Path) -> None:
    """A saved run's outputs, shifted by 1e-3: only --atol y:BIG (not z:BIG, not the default) passes."""
    inp = npz("in.npz", x=np.linspace(0, 1, 8, dtype=np.float32).reshape(2, 4))
    ref = tmp_path / "ref.npz"
    assert cli("run", mlp_model, "--load-inputs", inp, "--save-outputs", ref).code == 0
    with np.load(ref) as r:
        y = r["y"]
    npz("ref2.npz", y=y, z=np.ones(5, np.float32))
    cand = npz("cand.npz", y=y + np.float32(1e-3), z=np.ones(5, np.float32))
    ref2 = tmp_path / "ref2.npz"

    strict = cli("compare", ref2, cand, "--json")
    assert strict.code == 1
    outputs = strict.json()["results"][0]["outputs"]
    assert outputs["y"]["passed"] is False and outputs["z"]["passed"] is True
    assert outputs["y"]["max_abs_err"] == pytest.approx(1e-3, rel=1e-2)

    assert cli("compare", ref2, cand, "--atol", "z:1").code == 1
    assert cli("compare", ref2, cand, "--atol", "y:1e-6").code == 1
    loose = cli("compare", ref2, cand, "--atol", "y:1e-2", "--json")
    assert loose.code == 0, loose.stdout
    outputs = loose.json()["results"][0]["outputs"]
    assert outputs["y"]["atol"] == pytest.approx(1e-2) and outputs["z"]["atol"] == pytest.approx(1e-5)
    assert cli("compare", ref2, cand, "--rtol", "y:1").code == 0


def test_per_output_tolerance_accepted_by_run(cli, mlp_model: Path) -> None:
    res = cli("run", mlp_model, "--input", "x:2x4", "-b", "ort,openvino", "--atol", "y:1e-3", "--rtol", "1e-4",
              "--json")
    assert res.code == 0, res.stderr
    y = res.json()["results"][1]["outputs"]["y"]
    assert y["atol"] == pytest.approx(1e-3) and y["rtol"] == pytest.approx(1e-4)


def test_report_folder(cli, mlp_model: Path, tmp_path: Path) -> None:
    rep = tmp_path / "rep"
    res = cli("run", mlp_model, "--input", "x:2x4", "-b", "ort", "-b", "openvino", "--report", rep)
    assert res.code == 0, res.stderr
    files = {p.name for p in rep.iterdir()}
    assert {"report.json", "report.md", "reproduce.sh", "inputs.npz"} <= files
    assert {"outputs.ort.npz", "outputs.openvino.npz"} <= files
    doc = _strict_json((rep / "report.json").read_text())
    assert isinstance(doc, dict)
    assert doc["kind"] == "run" and doc["passed"] is True
    assert [r["backend"] for r in doc["results"]] == ["ort", "openvino"]
    assert doc["files"]["inputs"] == "inputs.npz"
    assert doc["command"].startswith("enginekit")  # the exact command: see the subprocess test below
    md = (rep / "report.md").read_text()
    assert "PASSED" in md and "openvino" in md
    assert os.access(rep / "reproduce.sh", os.X_OK)
    with np.load(rep / "inputs.npz") as feed:
        assert feed["x"].shape == (2, 4)


def test_report_command_in_process(cli, mlp_model: Path, tmp_path: Path) -> None:
    rep = tmp_path / "rep"
    assert cli("run", mlp_model, "--input", "x:2x4", "--report", rep).code == 0
    script = (rep / "reproduce.sh").read_text()
    assert f"enginekit run {shlex.quote(str(mlp_model))} --input x:2x4 --report" in script


def test_report_reproduce_script_end_to_end(cli_subprocess, mlp_model: Path, tmp_path: Path) -> None:
    """A real process writes reproduce.sh with its exact command, and the script reruns it."""
    args = ["run", str(mlp_model), "--input", "x:2x4", "--seed", "3", "-b", "ort", "-b", "openvino",
            "--report", "rep", "--save-outputs", "first.npz"]
    res = cli_subprocess(*args)
    assert res.code == 0, res.stdout + res.stderr
    script = (tmp_path / "rep" / "reproduce.sh").read_text()
    assert shlex.join(["enginekit", *args]) in script
    assert f"cd {shlex.quote(str(tmp_path))}" in script
    doc = _strict_json((tmp_path / "rep" / "report.json").read_text())
    assert isinstance(doc, dict) and doc["command"] == shlex.join(["enginekit", *args])

    first = np.load(tmp_path / "first.ort.npz")["y"]
    (tmp_path / "first.ort.npz").unlink()
    env = {"PATH": f"{BIN_DIR}:/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(["bash", str(tmp_path / "rep" / "reproduce.sh")], capture_output=True, text=True,
                          env=env, cwd="/", timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "first.ort.npz")["y"], first)


def test_subprocess_json_error_row(cli_subprocess, contrib_model: Path) -> None:
    res = cli_subprocess("run", contrib_model, "-b", "ort", "-b", "onnx-reference", "--json")
    assert res.code == 1, res.stderr
    doc = _strict_json(res.stdout)
    assert isinstance(doc, dict)
    rows = {r["backend"]: r for r in doc["results"]}
    assert rows["onnx-reference"]["status"] == "error" and "FusedMatMul" in rows["onnx-reference"]["reason"]
    assert rows["ort"]["status"] == "ok"


def test_ocr_classifier_ort_and_openvino(cli, ocr_cls_model: Path) -> None:
    """A real trained PaddleOCR model: symbolic dims need --input; ort and OpenVINO (f32) agree."""
    res = cli("run", ocr_cls_model, "--input", "x:1x3x48x192", "-b", "ort", "-b", "openvino", "--atol", "1e-4",
              "--json")
    assert res.code == 0, res.stdout + res.stderr
    doc = res.json()
    (out_name,) = doc["results"][0]["outputs"]
    for row in doc["results"]:
        assert row["status"] == "ok"
        assert row["outputs"][out_name]["cosine"] > 0.9999


def test_ocr_classifier_needs_input_shape(cli, user_error, ocr_cls_model: Path) -> None:
    user_error(cli("run", ocr_cls_model), "'x'", "--input x:1x3x1x1")


def test_ocr_classifier_onnx_reference_agrees(cli, ocr_cls_model: Path) -> None:
    """Opset-11 BatchNormalization: onnx.reference alone would use batch statistics (onnx/onnx PR #8442)."""
    res = cli("run", ocr_cls_model, "--input", "x:1x3x48x192", "-b", "ort", "-b", "onnx-reference", "--atol", "1e-4",
              "--json")
    assert res.code == 0, res.stdout
    (out_name,) = res.json()["results"][1]["outputs"]
    assert res.json()["results"][1]["outputs"][out_name]["max_abs_err"] < 1e-4
