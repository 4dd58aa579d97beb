"""Verification feeds of an export: both signs and several scales, declared ranges kept (no torch needed)."""

from __future__ import annotations

import numpy as np

from enginekit.data import ValueRange
from enginekit.export.feeds import verification_feeds
from enginekit.sources.shapes import parse_export_input, plan_inputs


def _plans(*inputs: str):  # type: ignore[no-untyped-def]
    return plan_inputs(tuple(parse_export_input(t) for t in inputs), ())


def test_float_inputs_get_both_signs_and_three_scales() -> None:
    cases = verification_feeds(_plans("x:batch,8"), 1, ())
    by_label = {c.label: c.feed["x"] for c in cases}
    assert list(by_label) == ["trace shape, seed 1", "trace shape, seed 2", "trace shape, seed 1 negated",
                              "trace shape, N(0,1)", "trace shape, N(0,1) x100", "trace shape, N(0,1) x0.01",
                              "other shape, seed 1", "other shape, seed 2", "other shape, seed 1 negated"]
    np.testing.assert_array_equal(by_label["trace shape, seed 1 negated"], -by_label["trace shape, seed 1"])
    normal = by_label["trace shape, N(0,1)"]
    assert normal.min() < 0 < normal.max()
    np.testing.assert_allclose(by_label["trace shape, N(0,1) x100"], 100 * normal, rtol=1e-6)
    np.testing.assert_allclose(by_label["trace shape, N(0,1) x0.01"], 0.01 * normal, rtol=1e-6)
    assert all(f.dtype == np.float32 for f in by_label.values())
    assert [c.variant for c in cases] == [False, False, True, True, True, True, False, False, True]


def test_declared_ranges_are_kept_and_integers_mirrored_bools_untouched() -> None:
    plans = _plans("x:2x8", "ids:2x8:int64", "keep:2x8:bool")
    ranges = (ValueRange("x", 0.5, 2.0), ValueRange("ids", 3, 9))
    cases = verification_feeds(plans, 7, ranges)
    seed = cases[0].feed
    for c in cases:
        assert 0.5 <= c.feed["x"].min() and c.feed["x"].max() <= 2.0, c.label
        assert 3 <= c.feed["ids"].min() and c.feed["ids"].max() <= 9, c.label
        if c.variant:  # bool inputs keep the seed's values
            np.testing.assert_array_equal(c.feed["keep"], seed["keep"])
    mirrored = cases[2]
    assert mirrored.label == "trace shape, seed 7 x mirrored in its range, ids mirrored in its range"
    np.testing.assert_allclose(mirrored.feed["x"], 2.5 - seed["x"], rtol=1e-6)
    np.testing.assert_array_equal(mirrored.feed["ids"], 12 - seed["ids"])
    ends = cases[3]
    assert ends.label == "trace shape, x the ends of its range"
    assert set(np.unique(ends.feed["x"])) == {0.5, 2.0}
    np.testing.assert_array_equal(ends.feed["ids"], seed["ids"])  # only mirrored


def test_no_variants_when_nothing_can_vary() -> None:
    cases = verification_feeds(_plans("mask:2x4:int64"), 1, ())  # masks default to the range 1..1
    assert [c.label for c in cases] == ["trace shape, seed 1", "trace shape, seed 2"]
