"""Tests for enginekit.compare.result: JSON-safe dicts and result helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from enginekit.compare import CompareSettings, Tolerances, compare_outputs, json_safe

_REQUIRED_KEYS = {
    "passed",
    "max_abs_err",
    "max_rel_err",
    "cosine",
    "nan_count",
    "inf_count",
}


def _messy_result() -> dict[str, object]:
    ref = {
        "ok": np.array([1.0, 2.0], np.float32),
        "nan": np.array([np.nan, 1.0]),
        "inf": np.array([0.0, np.inf]),
        "shape": np.zeros((1, 10)),
        "missing": np.zeros(2),
    }
    cand = {
        "ok": np.array([1.0, 2.0], np.float32),
        "nan": np.array([1.0, 1.0]),
        "inf": np.array([1.0, np.inf]),
        "shape": np.zeros((10,)),
        "extra": np.zeros(1),
    }
    settings = CompareSettings(Tolerances(1e-5), Tolerances(1e-5))
    return compare_outputs(ref, cand, settings).to_dict()


def test_to_dict_is_strict_json() -> None:
    data = _messy_result()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text) == data


def test_to_dict_layout_and_values() -> None:
    data = _messy_result()
    assert data["passed"] is False
    outputs = data["outputs"]
    assert isinstance(outputs, dict)
    assert list(outputs) == ["ok", "nan", "inf", "shape", "missing", "extra"]
    for entry in outputs.values():
        assert _REQUIRED_KEYS <= set(entry)
    ok = outputs["ok"]
    assert ok["passed"] is True
    assert ok["shape_ref"] == [2]
    assert ok["max_abs_err"] == 0.0
    assert ok["worst_index"] == [0]
    assert outputs["nan"]["nan_count"] == 1
    assert outputs["inf"]["inf_count"] == 2
    assert outputs["inf"]["max_rel_err"] == "inf"  # ref 0 vs cand 1
    assert outputs["shape"]["max_abs_err"] == "nan"  # not computed
    assert outputs["missing"]["reason"] == "missing in candidate"
    assert outputs["extra"]["dtype_ref"] is None


def test_result_passed_property_and_getitem() -> None:
    outputs = {"a": np.ones(3)}
    result = compare_outputs(outputs, outputs)
    assert result.passed
    assert result.to_dict()["passed"] is True
    assert result["a"].total_elements == 3
    with pytest.raises(KeyError):
        result["b"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (float("inf"), "inf"),
        (float("-inf"), "-inf"),
        (float("nan"), "nan"),
        (np.float32(1.5), 1.5),
        (np.int64(3), 3),
        (np.bool_(True), True),
        ((1, (2, 3)), [1, [2, 3]]),
        ({"x": np.float64("nan")}, {"x": "nan"}),
        (np.array([1.0, np.inf]), [1.0, "inf"]),
        (None, None),
    ],
)
def test_json_safe(value: object, expected: object) -> None:
    assert json_safe(value) == expected
    json.dumps(json_safe(value), allow_nan=False)


def test_numpy_scalars_become_python_scalars() -> None:
    converted = json_safe(np.float32(2.0))
    assert type(converted) is float
    assert type(json_safe(np.int32(2))) is int
