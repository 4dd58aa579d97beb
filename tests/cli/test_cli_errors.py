"""User errors: exit code 2 and a message that says what is wrong and what to try; never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


# --- the model file ---------------------------------------------------------------------------
def test_missing_model_file(cli, user_error, tmp_path: Path) -> None:
    res = cli("run", tmp_path / "nope.onnx", "--input", "x:2x4")
    user_error(res, "nope.onnx", "does not exist")


def test_text_file_is_not_a_model(cli, user_error, tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("hello, this is not a model\n")
    res = cli("run", path, "--input", "x:2x4")
    user_error(res, "notes.onnx", "text file")


def test_truncated_model(cli, user_error, mlp_model: Path) -> None:
    data = mlp_model.read_bytes()
    cut = mlp_model.with_name("cut.onnx")
    cut.write_bytes(data[: len(data) // 2])
    res = cli("run", cut, "--input", "x:2x4")
    user_error(res, "cut.onnx", "truncated")


def test_inspect_missing_model_file(cli, user_error, tmp_path: Path) -> None:
    user_error(cli("inspect", tmp_path / "absent.onnx"), "absent.onnx")


# --- backends -----------------------------------------------------------------------------------
def test_unknown_backend_suggests_the_closest(cli, user_error, mlp_model: Path) -> None:
    res = cli("run", mlp_model, "--input", "x:2x4", "-b", "openvnio")
    user_error(res, "openvnio", "did you mean 'openvino'")


def test_reference_not_among_backends(cli, user_error, mlp_model: Path) -> None:
    res = cli("run", mlp_model, "--input", "x:2x4", "-b", "ort", "--reference", "openvino")
    user_error(res, "--reference", "openvino", "ort")


def test_backend_listed_twice_is_a_determinism_check(cli, user_error, mlp_model: Path) -> None:
    res = cli("run", mlp_model, "--input", "x:2x4", "-b", "ort", "-b", "onnxruntime", "--atol", "0", "--rtol", "0",
              "--json")
    assert res.code == 0, res.stdout + res.stderr
    assert [r["backend"] for r in res.json()["results"]] == ["ort", "ort#2"]
    user_error(cli("bench", mlp_model, "--input", "x:2x4", "-b", "ort", "-b", "ort"), "twice")  # bench: one row each


def test_unsupported_precision(cli, user_error, mlp_model: Path) -> None:
    res = cli("run", mlp_model, "--input", "x:2x4", "-b", "ort:bf16")
    user_error(res, "'ort'", "bf16")


# --- --input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arg", "needles"),
    [
        ("x:1xAx4", ("x:1xAx4", "1xAx4", "NAME:DIMS")),
        ("x", ("'x'", "missing ':'", "NAME:DIMS")),
        ("x:1x4:float99", ("float99", "dtype")),
        ("x:0x4", ("x:0x4", ">= 1")),
        (":1x4", ("empty input name",)),
    ],
)
def test_malformed_input(cli, user_error, mlp_model: Path, arg: str, needles: tuple[str, ...]) -> None:
    user_error(cli("run", mlp_model, "--input", arg), *needles)


def test_symbolic_dims_without_input(cli, user_error, mlp_model: Path) -> None:
    res = cli("run", mlp_model)
    user_error(res, "'x'", "'batch'", "--input x:")


def test_symbolic_dims_message_shows_the_model_shape(cli, user_error, mlp_model: Path) -> None:
    res = cli("run", mlp_model)
    user_error(res, "[batch, 4]")


def test_input_of_unknown_name(cli, user_error, mlp_model: Path) -> None:
    res = cli("run", mlp_model, "--input", "z:2x4")
    user_error(res, "'z'", "Model inputs: x")


def test_input_with_wrong_rank(cli, user_error, mlp_model: Path) -> None:
    res = cli("run", mlp_model, "--input", "x:2x4x1")
    user_error(res, "x:2x4x1", "[2, 4, 1]")


def test_input_with_wrong_dtype(cli, user_error, mlp_model: Path) -> None:
    res = cli("run", mlp_model, "--input", "x:2x4:int64")
    user_error(res, "int64", "float32")


def test_input_and_load_inputs_together(cli, user_error, mlp_model: Path, npz) -> None:
    feed = npz("feed.npz", x=np.zeros((2, 4), np.float32))
    user_error(cli("run", mlp_model, "--input", "x:2x4", "--load-inputs", feed), "--load-inputs", "--input")


# --- --load-inputs ------------------------------------------------------------------------------
def test_load_inputs_wrong_shape(cli, user_error, mlp_model: Path, npz) -> None:
    feed = npz("feed.npz", x=np.zeros((2, 5), np.float32))
    user_error(cli("run", mlp_model, "--load-inputs", feed), "feed.npz", "'x'", "[2, 5]")


def test_load_inputs_wrong_shape_names_expected_shape(cli, user_error, mlp_model: Path, npz) -> None:
    feed = npz("feed.npz", x=np.zeros((2, 5), np.float32))
    user_error(cli("run", mlp_model, "--load-inputs", feed), "[batch, 4]")


def test_load_inputs_wrong_dtype(cli, user_error, mlp_model: Path, npz) -> None:
    feed = npz("feed.npz", x=np.zeros((2, 4), np.float64))
    user_error(cli("run", mlp_model, "--load-inputs", feed), "'x'", "float64", "float32")


def test_load_inputs_missing_name(cli, user_error, mlp_model: Path, npz) -> None:
    feed = npz("feed.npz", z=np.zeros((2, 4), np.float32))
    user_error(cli("run", mlp_model, "--load-inputs", feed), "missing x", "unexpected z", "Model inputs: x")


def test_load_inputs_extra_name(cli, user_error, mlp_model: Path, npz) -> None:
    feed = npz("feed.npz", x=np.zeros((2, 4), np.float32), extra=np.zeros(3, np.float32))
    res = cli("run", mlp_model, "--load-inputs", feed)
    user_error(res, "unexpected extra", "Model inputs: x")
    assert "missing" not in res.stderr


def test_load_inputs_file_missing(cli, user_error, mlp_model: Path, tmp_path: Path) -> None:
    user_error(cli("run", mlp_model, "--load-inputs", tmp_path / "gone.npz"), "gone.npz")


def test_load_inputs_pickled_object_array_refused(cli, user_error, mlp_model: Path, npz) -> None:
    feed = npz("obj.npz", x=np.array([{"a": 1}], dtype=object))
    user_error(cli("run", mlp_model, "--load-inputs", feed), "obj.npz")


def test_load_inputs_json(cli, mlp_model: Path, tmp_path: Path) -> None:
    feed = tmp_path / "feed.json"
    feed.write_text(json.dumps({"x": [[0.1, 0.2, 0.3, 0.4], [1, 2, 3, 4]]}))  # JSON numbers -> float32
    res = cli("run", mlp_model, "--load-inputs", feed, "--json")
    assert res.code == 0, res.stderr
    assert res.json()["inputs"] == {"x": {"shape": [2, 4], "dtype": "float32"}}


def test_nan_in_loaded_feed_refused(cli, user_error, mlp_model: Path, npz) -> None:
    x = np.ones((2, 4), np.float32)
    x[0, 1] = np.nan
    x[1, 2] = np.inf
    feed = npz("nan.npz", x=x)
    user_error(cli("run", mlp_model, "--load-inputs", feed), "'x'", "1 NaN", "1 Inf", "--allow-nonfinite")


def test_nan_in_loaded_feed_accepted_with_allow_nonfinite(cli, mlp_model: Path, npz) -> None:
    x = np.ones((2, 4), np.float32)
    x[0, 1] = np.nan
    feed = npz("nan.npz", x=x)
    res = cli("run", mlp_model, "--load-inputs", feed, "--allow-nonfinite", "--json")
    assert res.code == 0, res.stderr
    (row,) = res.json()["results"]
    assert row["status"] == "ok"
    assert row["outputs"]["y"]["nan_count"] > 0  # the NaN really went through the model


def test_nan_outputs_fail_with_validate(cli, mlp_model: Path, npz) -> None:
    x = np.ones((2, 4), np.float32)
    x[0, 1] = np.nan
    feed = npz("nan.npz", x=x)
    res = cli("run", mlp_model, "--load-inputs", feed, "--allow-nonfinite", "--validate", "--json")
    assert res.code == 1, res.stderr
    assert res.json()["passed"] is False


# --- comparison options -------------------------------------------------------------------------
def test_unknown_output_in_atol_lists_real_outputs(cli, user_error, mlp_model: Path) -> None:
    res = cli("run", mlp_model, "--input", "x:2x4", "--atol", "logits:1e-3")
    user_error(res, "--atol", "'logits'", "'y'")


def test_unknown_output_in_rtol(cli, user_error, mlp_model: Path) -> None:
    user_error(cli("run", mlp_model, "--input", "x:2x4", "--rtol", "yy:1e-3"), "--rtol", "'yy'", "'y'")


@pytest.mark.parametrize("value", ["abc", "-1", "y:nan", "y:"])
def test_malformed_tolerance(cli, user_error, mlp_model: Path, value: str) -> None:
    user_error(cli("run", mlp_model, "--input", "x:2x4", "--atol", value), "--atol")


def test_bogus_error_stat(cli, user_error, mlp_model: Path) -> None:
    res = cli("run", mlp_model, "--input", "x:2x4", "--check-error-stat", "bogus")
    user_error(res, "bogus", "elemwise", "median")


@pytest.mark.parametrize("value", ["x:5,1", "x:1", "x:a,b", "x:nan,1"])
def test_bad_val_range(cli, user_error, mlp_model: Path, value: str) -> None:
    user_error(cli("run", mlp_model, "--input", "x:2x4", "--val-range", value), "--val-range", value)


def test_val_range_of_unknown_input(cli, user_error, mlp_model: Path) -> None:
    user_error(cli("run", mlp_model, "--input", "x:2x4", "--val-range", "q:0,1"), "'q'", "Model inputs: x")


def test_bad_openvino_precision(cli, user_error, mlp_model: Path) -> None:
    user_error(cli("run", mlp_model, "--input", "x:2x4", "--openvino-precision", "int3"), "int3", "fp32", "bf16")


# --- compare --------------------------------------------------------------------------------------
def test_compare_corrupt_npz(cli, user_error, tmp_path: Path, npz) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04" + b"garbage" * 20)
    good = npz("good.npz", y=np.zeros(3, np.float32))
    user_error(cli("compare", good, bad), "bad.npz")
    user_error(cli("compare", bad, good), "bad.npz")


def test_compare_missing_file(cli, user_error, tmp_path: Path, npz) -> None:
    good = npz("good.npz", y=np.zeros(3, np.float32))
    user_error(cli("compare", good, tmp_path / "absent.npz"), "absent.npz")


def test_compare_unsupported_extension(cli, user_error, tmp_path: Path, npz) -> None:
    good = npz("good.npz", y=np.zeros(3, np.float32))
    other = tmp_path / "outputs.txt"
    other.write_text("1 2 3")
    user_error(cli("compare", good, other), "outputs.txt", ".npz")


def test_compare_unknown_output_in_atol(cli, user_error, npz) -> None:
    ref = npz("r.npz", y=np.zeros(3, np.float32), z=np.zeros(2, np.float32))
    user_error(cli("compare", ref, ref, "--atol", "w:1"), "'w'", "'y'", "'z'")


# --- where outputs go ---------------------------------------------------------------------------
def test_save_outputs_needs_npz_suffix(cli, user_error, mlp_model: Path, tmp_path: Path) -> None:
    user_error(cli("run", mlp_model, "--input", "x:2x4", "--save-outputs", tmp_path / "out.txt"), "out.txt", ".npz")


def test_save_inputs_to_unwritable_path(cli, user_error, mlp_model: Path) -> None:
    # The parent of the target is a regular file, so the folder cannot be created.
    res = cli("run", mlp_model, "--input", "x:2x4", "--save-inputs", mlp_model / "in.npz")
    user_error(res, "in.npz")


def test_save_outputs_onto_a_folder(cli, user_error, mlp_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "out.npz"
    folder.mkdir()
    res = cli("run", mlp_model, "--input", "x:2x4", "--save-outputs", folder)
    user_error(res, "out.npz")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# --- onnxruntime providers ----------------------------------------------------------------------
def test_unavailable_ort_provider_is_a_user_error(cli, user_error, mlp_model: Path) -> None:
    res = cli("run", mlp_model, "--input", "x:2x4", "--ort-providers", "cuda")
    user_error(res, "CUDAExecutionProvider", "CPUExecutionProvider")


def test_unavailable_ort_provider_row_names_available_providers(cli, mlp_model: Path) -> None:
    res = cli("run", mlp_model, "--input", "x:2x4", "-b", "ort", "-b", "openvino", "--ort-providers", "cuda",
              "--json")
    assert res.code in (1, 2)  # 2 once the bug above is fixed
    if res.code == 1:
        rows = {r["backend"]: r for r in res.json()["results"]}
        assert rows["ort"]["status"] == "error"
        assert "CUDAExecutionProvider" in rows["ort"]["reason"]
        assert "CPUExecutionProvider" in rows["ort"]["reason"]
    assert "Traceback" not in res.stderr


def test_ort_provider_cpu_works(cli, mlp_model: Path) -> None:
    res = cli("run", mlp_model, "--input", "x:2x4", "--ort-providers", "cpu", "--json")
    assert res.code == 0, res.stderr
    (row,) = res.json()["results"]
    assert row["details"]["providers"] == ["CPUExecutionProvider"]


# --- click's own usage errors -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "needle"),
    [(("run",), "Missing argument"), (("run", "m.onnx", "--seed", "abc"), "--seed"), (("run", "m.onnx", "--bogus"),
                                                                                     "--bogus")],
)
def test_usage_errors(cli, args: tuple[str, ...], needle: str) -> None:
    res = cli(*args)
    assert res.code == 2
    assert needle in res.stderr
    assert "Traceback" not in res.stderr


# --- end to end, in a real process ------------------------------------------------------------
def test_subprocess_missing_file(cli_subprocess, user_error) -> None:
    user_error(cli_subprocess("run", "missing.onnx"), "missing.onnx", "does not exist")


def test_subprocess_unknown_backend(cli_subprocess, user_error, mlp_model: Path) -> None:
    user_error(cli_subprocess("run", mlp_model, "-b", "openvnio", "--input", "x:2x4"), "'openvino'")


def test_subprocess_symbolic_dims(cli_subprocess, user_error, mlp_model: Path) -> None:
    user_error(cli_subprocess("run", mlp_model), "'batch'", "--input x:")
