"""Tests for enginekit.compare.metrics: the Polygraphy rule, statistics, NaN/Inf, shapes, dtypes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from enginekit.compare import (
    CompareSettings,
    OutputComparison,
    Tolerances,
    compare_arrays,
    compare_outputs,
)


def _settings(
    atol: float = 1e-5,
    rtol: float = 1e-5,
    stat: str = "elemwise",
    validate: bool = False,
    equal_nan: bool = False,
) -> CompareSettings:
    return CompareSettings(Tolerances(atol), Tolerances(rtol), stat, validate, equal_nan)


def _cmp(ref: object, cand: object, **kwargs: object) -> OutputComparison:
    return compare_arrays(
        "out",
        np.asarray(ref),
        np.asarray(cand),
        _settings(**kwargs),  # type: ignore[arg-type]
    )


# --- the AND rule ------------------------------------------------------------------------


def test_abs_over_atol_but_rel_under_rtol_passes() -> None:
    # abs err 1.0 > atol 0.01, rel err 1/1000 = 1e-3 <= rtol 0.01
    result = _cmp([1000.0], [1001.0], atol=0.01, rtol=0.01)
    assert result.passed
    assert result.max_abs_err == pytest.approx(1.0)
    assert result.max_rel_err == pytest.approx(1e-3)
    assert result.failed_elements == 0


def test_rel_over_rtol_but_abs_under_atol_passes() -> None:
    # abs err 1e-4 <= atol 1e-3, rel err 1e-4/1e-3 = 0.1 > rtol 0.01
    result = _cmp([1e-3], [1.1e-3], atol=1e-3, rtol=0.01)
    assert result.passed
    assert result.max_rel_err == pytest.approx(0.1)


def test_both_over_fails() -> None:
    result = _cmp([1.0, 2.0, 3.0], [1.0, 2.5, 3.0], atol=0.1, rtol=0.1)
    assert not result.passed
    assert result.failed_elements == 1
    assert result.total_elements == 3
    assert result.max_abs_err == pytest.approx(0.5)
    assert result.max_rel_err == pytest.approx(0.25)
    assert "1 of 3 elements exceed atol=0.1 and rtol=0.1" in result.reason


def test_polygraphy_rule_differs_from_allclose() -> None:
    ref = np.array([1000.0])
    cand = np.array([1000.15])
    # allclose sums the tolerances: 0.15 <= 0.1 + 1e-4 * 1000 = 0.2 -> passes
    assert np.allclose(cand, ref, atol=0.1, rtol=1e-4)
    # Polygraphy: abs 0.15 > atol 0.1 AND rel 1.5e-4 > rtol 1e-4 -> fails
    result = _cmp(ref, cand, atol=0.1, rtol=1e-4)
    assert not result.passed
    assert result.max_rel_err == pytest.approx(1.5e-4)


def test_error_is_relative_to_reference() -> None:
    result = _cmp([2.0], [1.0])
    assert result.max_rel_err == pytest.approx(0.5)  # |1-2| / |2|, not / |1|
    swapped = _cmp([1.0], [2.0])
    assert swapped.max_rel_err == pytest.approx(1.0)


def test_exact_equality_passes_with_zero_tolerances() -> None:
    result = _cmp(
        [[1.5, -2.0], [0.0, 7.0]], [[1.5, -2.0], [0.0, 7.0]], atol=0.0, rtol=0.0
    )
    assert result.passed
    assert result.reason == ""
    assert result.max_abs_err == 0.0
    assert result.cosine == pytest.approx(1.0)


# --- check_error_stat modes ----------------------------------------------------------------

_REF = np.array([1.0, 1.0, 1.0, 1.0])
_CAND = np.array([1.0, 1.0, 1.0, 2.0])  # abs errors 0,0,0,1: max 1, mean 0.25, median 0


@pytest.mark.parametrize(
    ("stat", "atol", "rtol", "passed"),
    [
        ("elemwise", 0.5, 0.5, False),
        ("max", 0.5, 0.5, False),
        ("max", 1.0, 0.0, True),
        ("mean", 0.3, 0.3, True),  # mean 0.25 <= 0.3
        ("mean", 0.2, 0.2, False),  # mean 0.25 > 0.2 on both
        ("mean", 0.2, 0.3, True),  # abs over, rel under -> AND rule passes
        ("median", 0.0, 0.0, True),  # median 0 is not > 0
        ("elemwise", 0.0, 0.0, False),
    ],
)
def test_error_stat_modes(stat: str, atol: float, rtol: float, passed: bool) -> None:
    result = _cmp(_REF, _CAND, atol=atol, rtol=rtol, stat=stat)
    assert result.passed is passed
    assert result.check_error_stat == stat
    assert result.max_abs_err == pytest.approx(1.0)
    assert result.mean_abs_err == pytest.approx(0.25)
    assert result.median_abs_err == pytest.approx(0.0)
    if not passed and stat != "elemwise":
        assert f"{stat} abs err" in result.reason


def test_stat_mode_still_reports_failed_elements() -> None:
    result = _cmp(_REF, _CAND, atol=0.3, rtol=0.3, stat="mean")
    assert result.passed
    assert result.failed_elements == 1


# --- per-output tolerances ----------------------------------------------------------------


def test_per_output_tolerance_overrides_default() -> None:
    ref = {"a": np.array([1.0]), "b": np.array([1.0])}
    cand = {"a": np.array([1.1]), "b": np.array([1.1])}
    settings = CompareSettings(
        atol=Tolerances(1e-5, (("a", 0.2),)), rtol=Tolerances(1e-5)
    )
    result = compare_outputs(ref, cand, settings)
    assert result["a"].passed
    assert result["a"].atol == 0.2
    assert not result["b"].passed
    assert result["b"].atol == 1e-5
    assert not result.passed
    assert [o.name for o in result.failed_outputs()] == ["b"]


def test_per_output_rtol_overrides_default() -> None:
    ref, cand = {"a": np.array([10.0])}, {"a": np.array([11.0])}
    settings = CompareSettings(
        atol=Tolerances(0.0), rtol=Tolerances(0.0, (("a", 0.1),))
    )
    result = compare_outputs(ref, cand, settings)
    assert result.passed
    assert result["a"].rtol == 0.1


# --- zeros, NaN, Inf --------------------------------------------------------------------------


def test_zero_reference_is_judged_by_atol() -> None:
    equal = _cmp([0.0, 1.0], [0.0, 1.0], atol=0.0, rtol=0.0)
    assert equal.passed
    assert equal.max_rel_err == 0.0
    small = _cmp([0.0], [1e-6], atol=1e-5, rtol=0.0)
    assert small.passed
    assert math.isinf(small.max_rel_err)
    big = _cmp([0.0], [1e-3], atol=1e-5, rtol=1e9)
    assert not big.passed  # rel is inf, so only atol can save it


def test_nan_on_one_side_fails_even_with_infinite_tolerance() -> None:
    for ref, cand in (([1.0, np.nan], [1.0, 2.0]), ([1.0, 2.0], [1.0, np.nan])):
        result = _cmp(ref, cand, atol=math.inf, rtol=math.inf)
        assert not result.passed
        assert result.nonfinite_mismatches == 1
        assert result.failed_elements == 1
        assert result.worst_index == (1,)
        assert "NaN/Inf mismatch" in result.reason
        assert result.nan_count == 1
        # statistics only over the finite pair (1.0, 1.0)
        assert result.max_abs_err == 0.0


@pytest.mark.parametrize("stat", ["max", "mean", "median"])
def test_nan_mismatch_fails_in_stat_modes(stat: str) -> None:
    assert not _cmp([1.0, 2.0], [1.0, np.nan], atol=1.0, rtol=1.0, stat=stat).passed


@pytest.mark.parametrize("stat", ["elemwise", "max", "mean", "median"])
def test_nan_on_both_sides_fails_by_default_like_polygraphy(stat: str) -> None:
    result = _cmp([1.0, np.nan, 2.0], [1.0, np.nan, 2.0], atol=math.inf, rtol=math.inf, stat=stat)
    assert not result.passed
    assert result.nonfinite_mismatches == 1
    assert result.failed_elements == 1
    assert result.worst_index == (1,)
    assert "1 element is NaN on both sides, first at (1,)" in result.reason
    assert "--equal-nan" in result.reason
    assert "NaN/Inf mismatch" not in result.reason  # no one-sided mismatch to report


def test_nan_on_both_sides_and_one_sided_are_reported_apart() -> None:
    result = _cmp([np.nan, np.nan, 1.0], [np.nan, np.nan, np.nan])
    assert "1 NaN/Inf mismatch, first at (2,)" in result.reason
    assert "2 elements are NaN on both sides, first at (0,)" in result.reason
    assert result.nonfinite_mismatches == 3


def test_nan_on_both_sides_is_equal_with_equal_nan_but_counted() -> None:
    result = _cmp([np.nan, 1.0], [np.nan, 1.0], equal_nan=True)
    assert result.passed
    assert result.nan_count_ref == 1
    assert result.nan_count_cand == 1
    assert result.nan_count == 2
    assert result.nonfinite_mismatches == 0


def test_all_nan_output_never_passes_silently_when_one_sided() -> None:
    result = _cmp(
        [1.0, 2.0, 3.0], [np.nan, np.nan, np.nan], atol=1e9, rtol=1e9, stat="max"
    )
    assert not result.passed
    assert result.nonfinite_mismatches == 3


def test_equal_infinities_are_equal() -> None:
    result = _cmp([np.inf, -np.inf, 1.0], [np.inf, -np.inf, 1.0], atol=0.0, rtol=0.0)
    assert result.passed
    assert result.inf_count == 4
    assert result.max_abs_err == 0.0


@pytest.mark.parametrize(
    ("ref", "cand"),
    [
        ([np.inf], [-np.inf]),
        ([np.inf], [1e30]),
        ([1.0], [np.inf]),
        ([np.inf], [np.nan]),
    ],
)
def test_unequal_infinities_fail(ref: list[float], cand: list[float]) -> None:
    result = _cmp(ref, cand, atol=math.inf, rtol=math.inf)
    assert not result.passed
    assert result.nonfinite_mismatches == 1
    assert result.worst_index == (0,)


def test_validate_fails_on_any_nan_or_inf() -> None:
    ref, cand = [np.nan, np.inf, 1.0], [np.nan, np.inf, 1.0]
    assert _cmp(ref, cand, equal_nan=True).passed
    result = _cmp(ref, cand, validate=True, equal_nan=True)
    assert not result.passed
    assert "validate" in result.reason
    assert "reference has 1 NaN and 1 Inf" in result.reason
    assert _cmp([1.0, 2.0], [1.0, 2.0], validate=True).passed


# --- shapes, dtypes, missing outputs ----------------------------------------------------------


def test_shape_mismatch_never_broadcasts() -> None:
    result = _cmp(np.zeros((1, 10)), np.zeros((10,)))
    assert not result.passed
    assert result.reason == "shape mismatch: reference (1, 10) vs candidate (10,)"
    assert result.shape_ref == (1, 10)
    assert result.shape_cand == (10,)
    assert math.isnan(result.max_abs_err)


def test_shape_mismatch_message() -> None:
    result = _cmp(np.zeros((1, 10)), np.zeros((1, 12)))
    assert result.reason == "shape mismatch: reference (1, 10) vs candidate (1, 12)"


def test_dtype_mismatch_fails_but_reports_numbers() -> None:
    ref = np.array([1.0, 2.0], dtype=np.float32)
    cand = np.array([1.0, 2.5], dtype=np.float16)
    result = compare_arrays("out", ref, cand, _settings(atol=1.0, rtol=1.0))
    assert not result.passed
    assert result.reason == "dtype mismatch: reference float32 vs candidate float16"
    assert result.dtype_ref == "float32"
    assert result.dtype_cand == "float16"
    assert result.max_abs_err == pytest.approx(0.5)


def test_int_and_bool_outputs_compared_as_float64() -> None:
    ints = _cmp(
        np.array([3, 5], np.int64), np.array([3, 7], np.int64), atol=0.0, rtol=0.0
    )
    assert not ints.passed
    assert ints.max_abs_err == 2.0
    assert ints.max_rel_err == pytest.approx(0.4)
    bools = _cmp(np.array([True, False]), np.array([True, True]), atol=0.5, rtol=0.5)
    assert not bools.passed
    assert bools.max_abs_err == 1.0
    assert math.isinf(bools.max_rel_err)  # reference 0 -> rel inf


def test_uint_subtraction_does_not_wrap() -> None:
    result = _cmp(np.array([5], np.uint8), np.array([3], np.uint8), atol=0.0, rtol=0.0)
    assert result.max_abs_err == 2.0


def test_string_outputs_compared_for_equality() -> None:
    assert _cmp(np.array(["a", "b"]), np.array(["a", "b"])).passed
    result = _cmp(np.array(["a", "b"]), np.array(["a", "c"]))
    assert not result.passed
    assert result.failed_elements == 1
    assert result.worst_index == (1,)


def test_missing_and_extra_outputs() -> None:
    ref = {"a": np.ones(2), "b": np.ones(3)}
    cand = {"c": np.ones(4), "a": np.ones(2)}
    result = compare_outputs(ref, cand, _settings())
    assert result.names == ("a", "b", "c")
    assert result["a"].passed
    assert not result["b"].passed
    assert result["b"].reason == "missing in candidate"
    assert result["b"].shape_cand is None
    assert result["b"].total_elements == 3
    assert not result["c"].passed
    assert result["c"].reason == "not in reference"
    assert result["c"].shape_ref is None
    assert not result.passed
    assert [o.name for o in result.failed_outputs()] == ["b", "c"]


def test_no_outputs_does_not_pass() -> None:
    assert not compare_outputs({}, {}, _settings()).passed


def test_all_equal_outputs_pass() -> None:
    ref = {"x": np.arange(6.0).reshape(2, 3), "y": np.array(3, np.int32)}
    result = compare_outputs(ref, dict(ref))
    assert result.passed
    assert result.failed_outputs() == ()
    assert result["y"].shape_ref == ()


def test_empty_arrays_pass_with_zero_stats() -> None:
    result = _cmp(np.zeros((0, 3)), np.zeros((0, 3)), atol=0.0, rtol=0.0)
    assert result.passed
    assert result.total_elements == 0
    assert result.max_abs_err == 0.0
    assert result.p99_rel_err == 0.0
    assert result.cosine == 1.0
    assert result.worst_index is None


# --- statistics on known arrays ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "cand", "expected"),
    [
        ([1.0, 0.0], [1.0, 0.0], 1.0),
        ([1.0, 0.0], [0.0, 1.0], 0.0),
        ([1.0, 2.0], [-1.0, -2.0], -1.0),
        ([1.0, 1.0], [1.0, 0.0], 1 / math.sqrt(2)),
        ([3.0, 4.0], [6.0, 8.0], 1.0),
        ([0.0, 0.0], [0.0, 0.0], 1.0),
        ([0.0, 0.0], [1.0, 0.0], 0.0),
        ([1.0, 0.0], [0.0, 0.0], 0.0),
        ([1e300, 1e300], [1e300, 1e300], 1.0),  # no overflow
    ],
)
def test_cosine_of_known_vectors(
    ref: list[float], cand: list[float], expected: float
) -> None:
    assert _cmp(ref, cand).cosine == pytest.approx(expected)


def test_worst_index_on_known_array() -> None:
    ref = np.zeros((2, 3, 4))
    cand = ref.copy()
    cand[1, 2, 0] = 5.0
    cand[0, 1, 1] = -3.0
    result = _cmp(ref, cand)
    assert result.worst_index == (1, 2, 0)
    assert result.worst_ref == 0.0
    assert result.worst_cand == 5.0
    assert result.failed_elements == 2
    assert result.max_abs_err == 5.0


def test_p99_and_median_on_known_array() -> None:
    ref = np.ones(101)
    cand = ref + np.arange(101.0)  # abs errors 0..100, rel errors the same
    result = _cmp(ref, cand)
    assert result.p99_abs_err == pytest.approx(99.0)
    assert result.median_abs_err == pytest.approx(50.0)
    assert result.mean_abs_err == pytest.approx(50.0)
    assert result.max_abs_err == pytest.approx(100.0)
    assert result.p99_rel_err == pytest.approx(99.0)


def test_p99_with_infinite_relative_errors_is_not_nan() -> None:
    ref = np.zeros(10)
    cand = np.ones(10)
    result = _cmp(ref, cand)
    assert math.isinf(result.p99_rel_err)
    assert math.isinf(result.median_rel_err)
