"""`enginekit compare REF CAND`: saved outputs compared with Polygraphy's rule; exit 0 / 1 / 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

OUTPUT_KEYS = {"passed", "max_abs_err", "max_rel_err", "cosine", "nan_count", "inf_count"}


def test_identical_files_pass(cli, npz) -> None:
    y = np.arange(12, dtype=np.float32).reshape(3, 4)
    ref = npz("ref.npz", y=y)
    cand = npz("cand.npz", y=y.copy())
    res = cli("compare", ref, cand)
    assert res.code == 0, res.stdout + res.stderr
    assert "PASSED" in res.stdout


def test_difference_beyond_tolerance_fails(cli, npz) -> None:
    y = np.linspace(1, 2, 10, dtype=np.float32)
    ref = npz("ref.npz", y=y)
    cand = npz("cand.npz", y=y + np.float32(0.01))
    res = cli("compare", ref, cand)
    assert res.code == 1
    assert "FAILED" in res.stdout
    assert "Traceback" not in res.stderr


def test_json_shape(cli, npz) -> None:
    y = np.linspace(1, 2, 10, dtype=np.float32)
    ref = npz("ref.npz", y=y, z=np.zeros(2, np.float32))
    cand = npz("cand.npz", y=y * np.float32(1.5), z=np.zeros(2, np.float32))
    res = cli("compare", ref, cand, "--json")
    assert res.code == 1
    doc = res.json()
    assert doc["passed"] is False
    (row,) = doc["results"]
    assert {"backend", "status", "reason", "outputs"} <= set(row)
    assert row["status"] == "failed"
    assert "y" in row["reason"]
    assert set(row["outputs"]) == {"y", "z"}
    for out in row["outputs"].values():
        assert OUTPUT_KEYS <= set(out)
    y_res = row["outputs"]["y"]
    assert y_res["passed"] is False
    assert y_res["max_abs_err"] == np.float32(1.0)  # 2 * 1.5 - 2
    assert abs(y_res["max_rel_err"] - 0.5) < 1e-6
    assert y_res["cosine"] > 0.99  # a scaled vector still points the same way
    assert row["outputs"]["z"]["passed"] is True


def test_missing_output_in_candidate_fails(cli, npz) -> None:
    ref = npz("ref.npz", y=np.ones(3, np.float32), z=np.ones(2, np.float32))
    cand = npz("cand.npz", y=np.ones(3, np.float32))
    res = cli("compare", ref, cand, "--json")
    assert res.code == 1
    doc = res.json()  # strict JSON even with NaN statistics
    z = doc["results"][0]["outputs"]["z"]
    assert z["passed"] is False
    assert "missing" in z["reason"]


def test_shape_mismatch_fails(cli, npz) -> None:
    ref = npz("ref.npz", y=np.ones((2, 3), np.float32))
    cand = npz("cand.npz", y=np.ones((3, 2), np.float32))
    res = cli("compare", ref, cand, "--json")
    assert res.code == 1
    assert "shape" in res.json()["results"][0]["outputs"]["y"]["reason"]


def test_error_stat_mean_is_looser_than_elemwise(cli, npz) -> None:
    y = np.ones(100, np.float32)
    cand_y = y.copy()
    cand_y[0] += np.float32(0.5)  # one outlier: max abs err 0.5, mean abs err 0.005
    ref, cand = npz("ref.npz", y=y), npz("cand.npz", y=cand_y)
    assert cli("compare", ref, cand, "--atol", "0.01", "--rtol", "0").code == 1
    assert cli("compare", ref, cand, "--atol", "0.01", "--rtol", "0", "--check-error-stat", "mean").code == 0
    assert cli("compare", ref, cand, "--atol", "0.01", "--rtol", "0", "--check-error-stat", "max").code == 1


def test_validate_flags_nan(cli, npz) -> None:
    y = np.ones(4, np.float32)
    y[1] = np.nan
    ref, cand = npz("ref.npz", y=y), npz("cand.npz", y=y.copy())
    plain = cli("compare", ref, cand, "--json")
    assert plain.code == 1, plain.stdout  # NaN never equals NaN by default, as in Polygraphy
    out = plain.json()["results"][0]["outputs"]["y"]
    assert out["nan_count"] == 2 and out["nonfinite_mismatches"] == 1
    assert "NaN on both sides" in out["reason"] and "--equal-nan" in out["reason"]
    equal = cli("compare", ref, cand, "--equal-nan", "--json")
    assert equal.code == 0, equal.stdout  # NaN in the same place on both sides is equal when asked
    assert equal.json()["results"][0]["outputs"]["y"]["nan_count"] == 2
    assert cli("compare", ref, cand, "--equal-nan", "--validate").code == 1
    y2 = y.copy()
    y2[2] = np.nan  # NaN on one side only fails even with --equal-nan
    assert cli("compare", ref, npz("one_sided.npz", y=y2), "--equal-nan").code == 1


def test_json_files(cli, tmp_path: Path) -> None:
    ref = tmp_path / "ref.json"
    cand = tmp_path / "cand.json"
    ref.write_text(json.dumps({"y": [[1.0, 2.0], [3.0, 4.0]]}))
    cand.write_text(json.dumps({"y": {"data": [[1.0, 2.0], [3.0, 4.0]], "dtype": "float32"}}))
    res = cli("compare", ref, cand, "--json")
    assert res.code == 0, res.stdout + res.stderr
    assert res.json()["passed"] is True


def test_subprocess_compare(cli_subprocess, npz) -> None:
    y = np.linspace(0, 1, 6, dtype=np.float32)
    ref, same, far = npz("a.npz", y=y), npz("b.npz", y=y), npz("c.npz", y=y + 1)
    assert cli_subprocess("compare", ref, same).code == 0
    res = cli_subprocess("compare", ref, far)
    assert res.code == 1
    assert "Traceback" not in res.stderr


def test_polygraphy_outputs_pick_runners(cli, user_error, tmp_path: Path) -> None:
    """Polygraphy's --save-outputs JSON with two runners: each side picks one by (part of) its name."""
    pytest.importorskip("polygraphy")
    from polygraphy.comparator import IterationResult, RunResults

    y = np.linspace(1, 2, 6, dtype=np.float32)
    path = tmp_path / "pg.json"
    RunResults([(name, [IterationResult(outputs={"y": arr}, runner_name=name)])
                for name, arr in (("onnxrt-runner-N0-01/01/26", y), ("trt-runner-N1-01/01/26", y * 1.01))]
               ).save(str(path))
    user_error(cli("compare", path, path), "2 Polygraphy runners", "'onnxrt-runner-N0-01/01/26'",
               "'trt-runner-N1-01/01/26'", "--reference-runner")
    same = cli("compare", path, path, "--reference-runner", "onnxrt", "--candidate-runner", "N0", "--json")
    assert same.code == 0, same.stderr
    far = cli("compare", path, path, "--reference-runner", "onnxrt", "--candidate-runner", "trt", "--json")
    assert far.code == 1
    assert abs(far.json()["results"][0]["outputs"]["y"]["max_rel_err"] - 0.01) < 1e-6
    user_error(cli("compare", path, path, "--reference-runner", "tf", "--candidate-runner", "trt"),
               "--reference-runner 'tf' matches none")
    user_error(cli("compare", path, path, "--reference-runner", "onnxrt", "--candidate-runner", "trt",
                   "--iteration", "1"), "iteration 1 does not exist")
