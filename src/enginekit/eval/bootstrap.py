"""Paired bootstrap confidence intervals of a metric's difference between a candidate and a reference.

A metric is computed from a per-sample array (axis 0 = samples): the mean of 0/1 correctness for accuracy,
or any function of the rows (macro precision from ``[prediction, label]`` rows). *Paired*: each resample draws
one set of sample indices and applies it to the candidate's and the reference's arrays alike, so the interval
is that of ``metric(candidate) - metric(reference)`` on the same samples. Percentile intervals, seeded.

The reported value of a classification, agreement or segmentation metric is scikit-learn's (detection's rows
re-do pycocotools' own accumulation: :mod:`enginekit.eval.detection`): its :class:`SampleMetric` carries that
``library_value``, and its per-sample function, which the bootstrap applies to every resample because calling the
library 1000 times per metric would be too slow, is checked to give the same value on the full sample (to
``LIBRARY_TOLERANCE``) when the SampleMetric is made. A disagreement is a bug in enginekit and raises
:class:`~enginekit.errors.InternalError` naming the metric: it is never reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from enginekit.errors import FeedError, InternalError, InvalidArgumentError

MetricFn = Callable[[np.ndarray], float]

# the largest difference allowed between a library's value and the per-sample function's on the full sample
LIBRARY_TOLERANCE = 1e-9

# indices drawn at once by the vectorized mean path (resamples x samples)
_CHUNK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class SampleMetric:
    """A metric as a per-sample array and the function that reduces it (None: the mean over axis 0).

    ``library_value``: the metric on the full sample as a library computes it (``library`` names the function, for
    messages), which :meth:`value` reports. Construction checks that the per-sample function on the full sample
    agrees with it (module doc); ``name`` is the metric's, for that check's error.
    """

    per_sample: np.ndarray
    fn: MetricFn | None = None
    library_value: float | None = None
    name: str = ""
    library: str = ""

    def __post_init__(self) -> None:
        if self.library_value is not None:
            check_library_value(self.name or "metric", _apply(self.fn, self.per_sample), self.library_value,
                                self.library)

    def __len__(self) -> int:
        return int(self.per_sample.shape[0])

    def value(self) -> float:
        if self.library_value is not None:
            return float(self.library_value)
        return _apply(self.fn, self.per_sample)


def check_library_value(name: str, own: float, library_value: float, library: str = "") -> None:
    """Raise InternalError unless ``own`` (enginekit's per-sample form on the full sample) equals ``library_value``
    to ``LIBRARY_TOLERANCE`` (equal infinities agree; NaN agrees with nothing)."""
    own, lib = float(own), float(library_value)
    if own == lib or abs(own - lib) <= LIBRARY_TOLERANCE:
        return
    source = library or "the library"
    raise InternalError(f"Metric {name!r}: enginekit's per-sample form gives {own!r} on the full sample, "
                        f"{source} gives {lib!r} (they must agree to {LIBRARY_TOLERANCE:g}); this is a bug in "
                        "enginekit, the metric is not reported.")


@dataclass(frozen=True)
class Interval:
    estimate: float  # on the full sample
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class PairedBootstrap:
    """Intervals of the candidate's metric, the reference's, and their difference (candidate - reference)."""

    candidate: Interval
    reference: Interval
    difference: Interval
    level: float
    resamples: int
    seed: int
    samples: int

    def to_dict(self) -> dict[str, object]:
        return {"candidate": self.candidate.to_dict(), "reference": self.reference.to_dict(),
                "difference": self.difference.to_dict(), "level": self.level, "resamples": self.resamples,
                "seed": self.seed, "samples": self.samples}


def _apply(fn: MetricFn | None, values: np.ndarray) -> float:
    if fn is None:
        return float(np.mean(values, dtype=np.float64))
    return float(fn(values))


def _check(cand: np.ndarray, ref: np.ndarray, n: int, level: float) -> None:
    if cand.shape[:1] != ref.shape[:1]:
        raise FeedError(f"Paired bootstrap needs the same samples: candidate has {cand.shape[:1]}, "
                        f"reference {ref.shape[:1]} along axis 0.")
    if cand.ndim == 0 or cand.shape[0] == 0:
        raise FeedError("Paired bootstrap needs at least one sample.")
    if n < 1:
        raise InvalidArgumentError(f"Bootstrap resamples must be at least 1, got {n}.")
    if not 0.0 < level < 1.0:
        raise InvalidArgumentError(f"Confidence level must be between 0 and 1 (exclusive), got {level}.")


def _resampled_values(cand: np.ndarray, ref: np.ndarray, fn: MetricFn | None, n: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = cand.shape[0]
    if fn is None and cand.ndim == 1 and ref.ndim == 1:
        c64, r64 = cand.astype(np.float64), ref.astype(np.float64)
        rows = max(1, _CHUNK_ELEMENTS // size)
        cs, rs = [], []
        for start in range(0, n, rows):
            idx = rng.integers(0, size, size=(min(rows, n - start), size))
            cs.append(c64[idx].mean(axis=1))
            rs.append(r64[idx].mean(axis=1))
        return np.concatenate(cs), np.concatenate(rs)
    cvals, rvals = np.empty(n), np.empty(n)
    for i in range(n):
        one = rng.integers(0, size, size=size)
        cvals[i] = _apply(fn, cand[one])
        rvals[i] = _apply(fn, ref[one])
    return cvals, rvals


def paired_bootstrap_ci(
    cand_per_sample: np.ndarray,
    ref_per_sample: np.ndarray,
    metric_fn: MetricFn | None = None,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedBootstrap:
    """Percentile intervals at ``level`` from ``n`` paired resamples (seeded: the same inputs give the same result).

    ``metric_fn`` reduces a per-sample array (rows along axis 0) to the metric; None is the mean. Every resample
    draws N indices with replacement from the N samples and applies them to both arrays.
    """
    cand = np.asarray(cand_per_sample)
    ref = np.asarray(ref_per_sample)
    _check(cand, ref, n, level)
    rng = np.random.default_rng(seed)
    cvals, rvals = _resampled_values(cand, ref, metric_fn, n, rng)
    # a resample on which the metric is undefined on either side (NaN: e.g. mAP of images without ground truth)
    # has no difference to give; the interval is that of the others (the estimate alone if none has one)
    defined = ~(np.isnan(cvals) | np.isnan(rvals))
    cvals, rvals = cvals[defined], rvals[defined]
    tail = (1.0 - level) / 2.0 * 100.0
    qs = [tail, 100.0 - tail]

    def interval(estimate: float, values: np.ndarray) -> Interval:
        if values.size == 0:
            return Interval(estimate=estimate, low=estimate, high=estimate)
        low, high = np.percentile(values, qs)
        return Interval(estimate=estimate, low=float(low), high=float(high))

    c_hat, r_hat = _apply(metric_fn, cand), _apply(metric_fn, ref)
    return PairedBootstrap(
        candidate=interval(c_hat, cvals),
        reference=interval(r_hat, rvals),
        difference=interval(c_hat - r_hat, cvals - rvals),
        level=level,
        resamples=n,
        seed=seed,
        samples=int(cand.shape[0]),
    )
