"""The feeds an export is verified on: seeded random feeds at every verification shape, and value variants.

Two seeds of uniform values (``--val-range``, by default [0, 1) for floats) only ever show a model positive
inputs of one scale, so a branch on ``x.sum() > 0`` or on ``x.abs().max() > 10`` that tracing baked in goes
unnoticed. Each shape therefore also gets the first seed's feed *negated*; the traced shape also gets a
standard-normal feed (both signs) and that feed scaled by 100 and by 0.01.

An input with a ``--val-range`` keeps its values in that range in every case (mirrored in the range instead of
negated, the two ends of the range, values near its top and near its bottom); integer inputs are mirrored in
their range and keep the seed's values otherwise; bool inputs always keep the seed's values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from enginekit.data import ValueRange, default_range, random_feed
from enginekit.sources.shapes import InputPlan

Unbounded = Callable[[np.ndarray, np.random.Generator], np.ndarray]
Bounded = Callable[[np.ndarray, float, float, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Variant:
    unbounded_label: str  # what happens to a float input without --val-range
    bounded_label: str  # what happens to an input that stays in its range
    unbounded: Unbounded
    bounded: Bounded
    integers: bool = False  # integer inputs are mirrored in their range too


def _normal(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(v.shape)


VARIANTS: tuple[Variant, ...] = (
    Variant("negated", "mirrored in its range", lambda v, rng: -v,
            lambda v, lo, hi, rng: lo + hi - v, integers=True),
    Variant("N(0,1)", "the ends of its range", _normal,
            lambda v, lo, hi, rng: np.where(rng.random(v.shape) < 0.5, lo, hi)),
    Variant("N(0,1) x100", "near the top of its range", lambda v, rng: 100.0 * _normal(v, rng),
            lambda v, lo, hi, rng: hi - (hi - lo) * 0.01 * rng.random(v.shape)),
    Variant("N(0,1) x0.01", "near the bottom of its range", lambda v, rng: 0.01 * _normal(v, rng),
            lambda v, lo, hi, rng: lo + (hi - lo) * 0.01 * rng.random(v.shape)),
)


@dataclass(frozen=True)
class FeedCase:
    label: str  # "trace shape, seed 1", "trace shape, seed 1 negated", "other shape, seed 2", ...
    feed: dict[str, np.ndarray]
    variant: bool = False  # values beyond the seeded range: a NaN there may be the model's own domain


def _range(plan: InputPlan, ranges: Sequence[ValueRange]) -> tuple[float, float, bool]:
    """(low, high, declared) as random_feed uses them: the input's --val-range, the global one, or the default."""
    chosen = [r for r in ranges if r.name == plan.name] or [r for r in ranges if r.name is None]
    if chosen:
        return chosen[-1].low, chosen[-1].high, True
    low, high = default_range(plan.spec())
    return low, high, False


def _vary(base: dict[str, np.ndarray], plans: Sequence[InputPlan], ranges: Sequence[ValueRange],
          variant: Variant, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], str]:
    """``base`` with ``variant`` applied to each input it applies to, and the case's label ('' if none did)."""
    feed = dict(base)
    labels: list[str] = []
    for plan in plans:
        v = base[plan.name]
        low, high, declared = _range(plan, ranges)
        if np.issubdtype(v.dtype, np.floating):
            if not declared:
                feed[plan.name] = variant.unbounded(v.astype(np.float64), rng).astype(v.dtype)
                labels.append(variant.unbounded_label)
            elif low < high:
                feed[plan.name] = variant.bounded(v.astype(np.float64), low, high, rng).astype(v.dtype)
                labels.append(f"{plan.name} {variant.bounded_label}")
        elif variant.integers and np.issubdtype(v.dtype, np.integer) and v.dtype != np.bool_:
            info = np.iinfo(v.dtype)
            lo, hi = max(int(np.ceil(low)), info.min), min(int(np.floor(high)), info.max)
            if lo < hi:
                feed[plan.name] = (lo + hi - v.astype(np.int64)).astype(v.dtype)
                labels.append(f"{plan.name} {variant.bounded_label}")
    return feed, ", ".join(dict.fromkeys(labels))


def verification_feeds(plans: Sequence[InputPlan], seed: int, ranges: Sequence[ValueRange]) -> list[FeedCase]:
    """Every case an export is verified on, in the order of the result table."""
    specs = [p.spec() for p in plans]
    shapes = ["trace"]
    if any(a.other is not None for p in plans for a in p.dynamic):
        shapes.append("other")
    cases: list[FeedCase] = []
    for which in shapes:
        dims = {p.name: p.shape_with(which) for p in plans}
        seeded = [(s, random_feed(specs, dims, seed=s, ranges=ranges)) for s in (seed, seed + 1)]
        cases += [FeedCase(f"{which} shape, seed {s}", feed) for s, feed in seeded]
        # the other shape checks what tracing baked into shapes: a sign flip there is enough
        for k, variant in enumerate(VARIANTS if which == "trace" else VARIANTS[:1]):
            # one standard-normal draw for N(0,1) and its scaled copies, so they differ by scale alone
            feed, label = _vary(seeded[0][1], plans, ranges, variant, np.random.default_rng([seed, min(k, 1)]))
            if not label:
                continue
            if k == 0:
                label = f"seed {seed} {label}"
            cases.append(FeedCase(f"{which} shape, {label}", feed, variant=True))
    return cases
