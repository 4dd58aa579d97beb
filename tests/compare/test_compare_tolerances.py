"""Tests for enginekit.compare.tolerances: parsing, settings validation, unknown names."""

from __future__ import annotations

import math

import numpy as np
import pytest

from enginekit.compare import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    CompareSettings,
    Tolerances,
    compare_outputs,
    parse_tolerances,
    validate_tolerance_names,
)
from enginekit.errors import InvalidArgumentError, UnknownNameError, UserError


def test_defaults_are_polygraphy_defaults() -> None:
    settings = CompareSettings()
    assert settings.atol.default == DEFAULT_ATOL == 1e-5
    assert settings.rtol.default == DEFAULT_RTOL == 1e-5
    assert settings.check_error_stat == "elemwise"
    assert settings.validate is False


def test_parse_default_and_per_output() -> None:
    tol = parse_tolerances(["1e-4", "logits:1e-3"], default=1e-5, kind="atol")
    assert tol.default == 1e-4
    assert tol.for_output("logits") == 1e-3
    assert tol.for_output("other") == 1e-4
    assert tol.names == ("logits",)


def test_parse_keeps_given_default_when_no_bare_value() -> None:
    tol = parse_tolerances(["probs:0.5"], default=1e-5, kind="rtol")
    assert tol.default == 1e-5
    assert tol.for_output("probs") == 0.5


def test_parse_empty_list_gives_default() -> None:
    assert parse_tolerances([], default=2e-3, kind="atol") == Tolerances(2e-3)


def test_parse_splits_on_last_colon() -> None:
    tol = parse_tolerances(["encoder:layer.0:out:0.25"], default=1e-5, kind="atol")
    assert tol.per_output == (("encoder:layer.0:out", 0.25),)
    assert tol.for_output("encoder:layer.0:out") == 0.25
    assert tol.for_output("encoder:layer.0") == 1e-5


def test_parse_last_value_wins() -> None:
    tol = parse_tolerances(["1", "2", "x:3", "x:4"], default=0.0, kind="atol")
    assert tol.default == 2.0
    assert tol.per_output == (("x", 4.0),)


def test_parse_allows_zero_and_inf() -> None:
    tol = parse_tolerances(["0", "y:inf"], default=1e-5, kind="atol")
    assert tol.default == 0.0
    assert math.isinf(tol.for_output("y"))


def test_tolerances_are_hashable() -> None:
    a = parse_tolerances(["1e-3", "x:1"], default=1e-5, kind="atol")
    b = Tolerances(1e-3, (("x", 1.0),))
    assert a == b
    assert hash(a) == hash(b)
    assert hash(CompareSettings(atol=a)) == hash(CompareSettings(atol=b))


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("abc", "'abc'"),
        ("logits:", "not a number"),
        ("logits:abc", "not a number"),
        ("-1e-3", "must be >= 0"),
        ("logits:-1", "must be >= 0"),
        ("nan", "NaN"),
        ("logits:nan", "NaN"),
        (":1e-3", "empty output name"),
        ("", "empty"),
    ],
)
def test_parse_rejects_malformed_values(value: str, fragment: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        parse_tolerances(["1e-4", value], default=1e-5, kind="atol")
    message = str(info.value)
    assert "--atol" in message
    assert repr(value) in message
    assert fragment in message
    assert "NAME:FLOAT" in message
    assert isinstance(info.value, UserError)
    assert info.value.exit_code == 2


def test_parse_error_names_given_flag() -> None:
    with pytest.raises(InvalidArgumentError, match="--rtol"):
        parse_tolerances(["oops"], default=1e-5, kind="--rtol")


@pytest.mark.parametrize("bad", [-1.0, math.nan])
def test_tolerances_constructor_rejects_bad_values(bad: float) -> None:
    with pytest.raises(InvalidArgumentError):
        Tolerances(bad)
    with pytest.raises(InvalidArgumentError):
        Tolerances(1e-5, (("x", bad),))


def test_settings_reject_unknown_error_stat_with_suggestion() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        CompareSettings(check_error_stat="meen")
    assert "elemwise, max, mean, median" in str(info.value)
    assert "Did you mean 'mean'?" in str(info.value)


@pytest.mark.parametrize("stat", ["elemwise", "max", "mean", "median"])
def test_settings_accept_known_error_stats(stat: str) -> None:
    assert CompareSettings(check_error_stat=stat).check_error_stat == stat


def test_unknown_output_name_suggests_closest() -> None:
    settings = CompareSettings(
        atol=parse_tolerances(["logit:1e-3"], default=1e-5, kind="atol")
    )
    with pytest.raises(UnknownNameError) as info:
        settings.check_names(["logits", "probs"])
    message = str(info.value)
    assert "--atol" in message
    assert "'logit'" in message
    assert "Did you mean 'logits'?" in message
    assert "'logits', 'probs'" in message


def test_unknown_rtol_name_without_close_match() -> None:
    settings = CompareSettings(rtol=Tolerances(1e-5, (("zzzzzz", 1.0),)))
    with pytest.raises(UnknownNameError) as info:
        validate_tolerance_names(settings, ["logits"])
    assert "--rtol" in str(info.value)
    assert "Did you mean" not in str(info.value)


def test_known_names_pass_validation() -> None:
    settings = CompareSettings(
        atol=Tolerances(1e-5, (("a", 1.0),)), rtol=Tolerances(1e-5, (("b", 1.0),))
    )
    settings.check_names(["a", "b"])  # no error


def test_compare_outputs_checks_tolerance_names() -> None:
    settings = CompareSettings(atol=Tolerances(1e-5, (("logitz", 1.0),)))
    outputs = {"logits": np.zeros(3, np.float32)}
    with pytest.raises(UnknownNameError, match="Did you mean 'logits'"):
        compare_outputs(outputs, outputs, settings)
    result = compare_outputs(outputs, outputs, settings, check_names=False)
    assert result.passed
