"""Every parser of an option string, fuzzed: for any text it returns a value or raises a user error (exit 2).

Another exception (ValueError, OverflowError, IndexError...) would reach the CLI's last line of defence and exit 4,
"a bug in enginekit", for what is a typo. Examples are derandomized and bounded so this file runs in seconds and
gives the same result on every machine; failures found once are kept as explicit ``@example``s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from enginekit.backends.tensorrt.profiles import parse_profiles, parse_shape_range
from enginekit.bench.points import parse_batches, parse_shape_set
from enginekit.cli.bench_cmd import parse_duration as parse_bench_duration
from enginekit.cli.cache_cmd import parse_duration as parse_age
from enginekit.compare.tolerances import parse_tolerances
from enginekit.data import parse_input_shape, parse_value_range
from enginekit.errors import EXIT_USER_ERROR, EnginekitError
from enginekit.export.targets import parse_target as parse_export_target
from enginekit.graph.support import parse_target as parse_lint_target
from enginekit.multirun import Candidate
from enginekit.sources.shapes import parse_dynamic, parse_export_input

FUZZ = settings(derandomize=True, max_examples=200, deadline=None, database=None)

# Pieces the parsers give meaning to, plus the characters and numbers that break naive code: huge and negative
# numbers, exponents, non-ASCII digits ('²' is str.isdigit() but not int()-able, '٣' is both), NUL, markup.
TOKENS = [
    ":", ":", ":", "x", "X", ",", ",", "..", "=", "[", "]", "-", "+", ".", "e", " ", "\t", "\n",
    "0", "1", "2", "3", "8", "32", "-1", "1e308", "-1e308", "1e999", "inf", "-inf", "nan", "NaN",
    "99999999999999999999999", "9999999999", "2147483648", "0x10", "1_000",
    "x", "ids", "input", "batch", "seq", "float32", "fp16", "int64", "bool", "float99", "uint8",
    "s", "ms", "m", "h", "d", "w", "ort", "onnxruntime", "openvino", "tensorrt", "tensorrt-rtx", "==", "8.5",
    "10", "fp32", "bf16", "int8", "²", "٣", "\x00", "é", "[bold]", ":x:", "\\",
]
option_text = st.one_of(
    st.lists(st.sampled_from(TOKENS), max_size=12).map("".join),
    st.text(max_size=30),
    st.text(alphabet="0123456789x,:.-e[]= ", max_size=30),
)


def user_error_or_value(parse: Callable[[], Any]) -> Any:
    """Call ``parse``; a typed user error is fine (returns None), any other exception fails the test."""
    try:
        return parse()
    except EnginekitError as exc:
        assert exc.exit_code == EXIT_USER_ERROR, f"{type(exc).__name__} exits {exc.exit_code}, not 2: {exc}"
        assert exc.message.strip(), "an error without a message"
        return None


# --- --input (run/bench/prepare/optimize), --fix-input-shapes ----------------------------------------------------
@FUZZ
@given(option_text)
@example("x:99999999999999999999999x1")
@example("x:" + "9" * 5000)  # int() refuses more than 4300 digits with a ValueError
@example("x:²")
@example("x::float32")
@example("a:b:1x2:int64")
def test_input_shape(text: str) -> None:
    shape = user_error_or_value(lambda: parse_input_shape(text))
    if shape is not None:
        assert shape.name and all(isinstance(d, int) and d >= 1 for d in shape.shape)
        assert parse_input_shape(shape.to_arg()) == shape  # what reproduce.sh writes reads back the same


# --- --val-range --------------------------------------------------------------------------------------------------
@FUZZ
@given(option_text)
@example("-1e308,1e308")
@example("x:1e999,2")
@example("nan,1")
def test_value_range(text: str) -> None:
    rng = user_error_or_value(lambda: parse_value_range(text))
    if rng is not None:
        assert math.isfinite(rng.low) and math.isfinite(rng.high) and rng.low <= rng.high


# --- --atol / --rtol --------------------------------------------------------------------------------------------
@FUZZ
@given(st.lists(option_text, max_size=3))
@example(["-0"])
@example(["out:nan"])
@example([":1e-3"])
def test_tolerances(values: list[str]) -> None:
    tol = user_error_or_value(lambda: parse_tolerances(values, 1e-5, "atol"))
    if tol is not None:
        assert tol.default >= 0 and all(v >= 0 and not math.isnan(v) for _, v in tol.per_output)


# --- export: --input NAME:DIMS[:DTYPE] with symbolic dims, --dynamic ----------------------------------------------
@FUZZ
@given(option_text)
@example("x:²")
@example("x:batch,²")
@example("x:" + "9" * 5000)
@example("x:1x3x224x224:float32")
def test_export_input(text: str) -> None:
    spec = user_error_or_value(lambda: parse_export_input(text))
    if spec is not None:
        assert spec.name and all((isinstance(d, int) and d >= 1) or (isinstance(d, str) and d) for d in spec.dims)


@FUZZ
@given(option_text)
@example("x:0=batch[1..32]")
@example("x:0=batch[0..]")
@example("x:99999999999999999999=b[..1]")
@example("x:" + "9" * 5000 + "=b")
def test_dynamic(text: str) -> None:
    dyn = user_error_or_value(lambda: parse_dynamic(text))
    if dyn is not None:
        assert dyn.axis >= 0
        assert dyn.min is None or dyn.min >= 1
        assert dyn.min is None or dyn.max is None or dyn.min <= dyn.max


# --- --profile NAME:MIN:OPT:MAX (build, lint, optimize, --ort-trt-profile) -----------------------------------------
@FUZZ
@given(option_text)
@example("x:1x3:1x3:4x3")
@example("x:1x99999999999999999999999:1x3:4x3")
@example("x:1x" + "9" * 5000 + ":1x3:4x3")
@example("input:0:1x3:1x3:4x3")
def test_profile(text: str) -> None:
    rng = user_error_or_value(lambda: parse_shape_range(text))
    if rng is not None:
        assert rng.name.strip() and len(rng.min) == len(rng.opt) == len(rng.max)
        assert all(1 <= d <= 2**31 - 1 for shape in (rng.min, rng.opt, rng.max) for d in shape)


@FUZZ
@given(st.lists(option_text, max_size=4))
def test_profiles(values: list[str]) -> None:
    user_error_or_value(lambda: parse_profiles(values))


# --- durations: bench --warmup/--duration, cache clear --older-than ----------------------------------------------
@FUZZ
@given(option_text)
@example("9" * 400)
@example("1e999")
@example("0.5s")
def test_bench_duration(text: str) -> None:
    seconds = user_error_or_value(lambda: parse_bench_duration(text, "--duration"))
    if seconds is not None:
        assert math.isfinite(seconds) and seconds >= 0  # an infinite --duration would never end


@FUZZ
@given(option_text)
@example("9999999999w")
@example("9" * 400 + "d")
@example("9" * 5000 + "w")
@example("1.5h")
def test_older_than(text: str) -> None:
    age = user_error_or_value(lambda: parse_age(text))
    if age is not None:
        assert isinstance(age, timedelta) and age >= timedelta(0)


# --- bench --shapes / --batch ---------------------------------------------------------------------------------
@FUZZ
@given(option_text)
@example("ids:1,128,mask:1,128")
@example(",,,")
def test_shape_set(text: str) -> None:
    shapes = user_error_or_value(lambda: parse_shape_set(text))
    if shapes is not None:
        assert shapes and len({s.name for s in shapes}) == len(shapes)


@FUZZ
@given(option_text)
@example("1,8,32")
@example("9" * 5000)
@example("²")
def test_batches(text: str) -> None:
    batches = user_error_or_value(lambda: parse_batches(text))
    if batches is not None:
        assert batches and all(b >= 1 for b in batches)


# --- --target (lint, export, optimize) and -b NAME[:PRECISION] ------------------------------------------------
@FUZZ
@given(option_text)
@example("tensorrt==8.5")
@example("tensorrt==99")
@example("tensorrt=8.5")
def test_targets(text: str) -> None:
    user_error_or_value(lambda: parse_lint_target(text))
    user_error_or_value(lambda: parse_export_target(text))


@FUZZ
@given(option_text)
@example("ort:bf16")
@example("openvino:")
def test_backend_candidate(text: str) -> None:
    cand = user_error_or_value(lambda: Candidate.parse(text))
    if cand is not None:
        assert cand.backend and cand.precision


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (parse_input_shape, "x:1x4"),
        (parse_value_range, "0,1"),
        (parse_export_input, "x:batch,4"),
        (parse_dynamic, "x:0=batch[1..8]"),
        (parse_shape_range, "x:1x4:2x4:8x4"),
        (parse_age, "7d"),
        (parse_shape_set, "x:1x4"),
        (parse_batches, "1,8"),
        (Candidate.parse, "ort"),
    ],
)
def test_valid_values_still_parse(parse: Callable[[str], Any], text: str) -> None:
    """The property above must not pass by refusing everything: a valid value still parses."""
    assert parse(text) is not None
