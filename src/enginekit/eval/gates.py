"""Accuracy gates: thresholds on a candidate's task metrics, against the reference row, with bootstrap intervals.

Grammar (spaces around the parts are allowed; metric names are lower case)::

    GATE   := METRIC OP VALUE
    OP     := ">=" | "<="
    VALUE  := NUMBER              difference candidate - reference, in the metric's own units
                                  (accuracy is a fraction: accuracy>=-0.005 allows half a point less)
            | NUMBER "pp"         difference candidate - reference in percentage points (1pp = 0.01)
                                  accuracy>=-0.5pp  is the same gate as  accuracy>=-0.005
            | NUMBER "%"          difference relative to the reference value: (candidate - reference) / |reference|
                                  accuracy>=-0.5%  with a reference accuracy of 0.80 allows 0.80 -> 0.796
            | "abs:" NUMBER       the candidate's own value, no reference: accuracy>=abs:0.95
    NUMBER := a signed decimal (1, -0.5, +2, 1e-3)

``>=`` is for metrics where higher is better, ``<=`` for lower is better. Relative thresholds become absolute
ones with the reference's full-sample value (a reference value of 0 makes the threshold 0).

Verdicts. ``d`` is the point estimate (candidate - reference, or the candidate's value for ``abs:``) on all
samples, ``[lo, hi]`` its paired bootstrap interval, ``t`` the threshold; ``>=`` gates (``<=`` mirrored):

* ``passed`` (bool): ``d >= t``. This alone decides whether the candidate fails the gate.
* ``confidence``: ``passed`` when ``lo >= t`` (met even at the interval's low end), ``failed`` when ``hi < t``
  (missed even at its high end), ``inconclusive`` otherwise: the data cannot tell at this level.

Comparisons allow 1e-12 for floating-point rounding (a difference of exactly the threshold is met).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from enginekit.errors import FeedError, InvalidArgumentError, UnknownNameError, did_you_mean
from enginekit.eval.bootstrap import PairedBootstrap, SampleMetric, paired_bootstrap_ci
from enginekit.status import Status

EPS = 1e-12
MODES = ("difference", "points", "relative", "absolute")  # NUMBER, NUMBER pp, NUMBER %, abs: NUMBER
_GATE = re.compile(
    r"^\s*(?P<metric>[a-z][a-z0-9_]*)\s*(?P<op>>=|<=)\s*(?P<abs>abs:)?\s*"
    r"(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)\s*(?P<unit>pp|%)?\s*$",
    re.IGNORECASE,
)
_HINT = ('A gate is METRIC>=VALUE or METRIC<=VALUE; VALUE is a difference to the reference (-0.005), in '
         'percentage points (-0.5pp), relative to the reference (-0.5%), or the candidate\'s own value '
         '(abs:0.95). Example: --gate "accuracy>=-0.5pp".')


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str  # ">=" | "<="
    value: float  # as written (before pp/% scaling)
    mode: str  # one of MODES
    text: str

    def threshold(self, reference_value: float) -> float:
        """The threshold on ``d`` (the difference, or the candidate's value for absolute gates)."""
        if self.mode == "points":
            return self.value / 100.0
        if self.mode == "relative":
            return self.value / 100.0 * abs(reference_value)
        return self.value

    def to_dict(self) -> dict[str, object]:
        return {"gate": self.text, "metric": self.metric, "op": self.op, "value": self.value, "mode": self.mode}


def parse_gate(text: str) -> Gate:
    """One gate (module doc). Raises InvalidArgumentError on text that does not follow the grammar."""
    match = _GATE.match(text)
    if match is None:
        stripped = text.strip()
        if re.match(r"^\s*[A-Za-z][\w]*\s*(==|=|>|<|!=)(?![=])", stripped):
            reason = "the comparison must be >= or <="
        elif not stripped:
            reason = "it is empty"
        else:
            reason = "it does not follow METRIC>=VALUE"
        raise InvalidArgumentError(f"Invalid gate {text!r}: {reason}.", hint=_HINT)
    if match["abs"] and match["unit"]:
        raise InvalidArgumentError(f"Invalid gate {text!r}: an abs: value is in the metric's own units, "
                                   f"without {match['unit']!r}.", hint=_HINT)
    unit = (match["unit"] or "").lower()
    mode = "absolute" if match["abs"] else {"pp": "points", "%": "relative", "": "difference"}[unit]
    return Gate(metric=match["metric"].lower(), op=match["op"], value=float(match["num"]), mode=mode,
                text=text.strip())


def parse_gates(texts: Sequence[str]) -> list[Gate]:
    return [parse_gate(t) for t in texts]


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    candidate_value: float
    reference_value: float | None  # None for absolute gates
    threshold: float  # on the difference, or on the candidate's value for absolute gates
    estimate: float  # the point estimate d compared with the threshold
    low: float  # d's bootstrap interval
    high: float
    passed: bool  # by the point estimate: decides the gate
    confidence: Status  # passed | failed | inconclusive, by the interval (module doc)
    bootstrap: PairedBootstrap

    def to_dict(self) -> dict[str, object]:
        return {
            **self.gate.to_dict(),
            "candidate_value": self.candidate_value,
            "reference_value": self.reference_value,
            "threshold": self.threshold,
            "estimate": self.estimate,
            "ci_low": self.low,
            "ci_high": self.high,
            "level": self.bootstrap.level,
            "resamples": self.bootstrap.resamples,
            "seed": self.bootstrap.seed,
            "samples": self.bootstrap.samples,
            "passed": self.passed,
            "confidence": str(self.confidence),
        }


def _meets(value: float, op: str, threshold: float) -> bool:
    return value >= threshold - EPS if op == ">=" else value <= threshold + EPS


def _confidence(op: str, low: float, high: float, threshold: float) -> Status:
    sure, never = (low, high) if op == ">=" else (high, low)
    if _meets(sure, op, threshold):
        return Status.PASSED
    if not _meets(never, op, threshold):
        return Status.FAILED
    return Status.INCONCLUSIVE


def evaluate_gates(
    gates: Sequence[Gate],
    candidate: Mapping[str, SampleMetric],
    reference: Mapping[str, SampleMetric],
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> list[GateResult]:
    """Each gate on the candidate's per-sample metrics against the reference's (the same samples, in order).

    Raises UnknownNameError for a gate metric the candidate does not have, FeedError when the two sides have
    different sample counts. A metric's reference side must use the same reduce function as the candidate's.
    """
    results = []
    for gate in gates:
        if gate.metric not in candidate or gate.metric not in reference:
            names = sorted(set(candidate) & set(reference))
            raise UnknownNameError(f"Gate {gate.text!r}: no metric {gate.metric!r}"
                                   f"{did_you_mean(gate.metric, names)} (available: {', '.join(names) or 'none'}).")
        cand, ref = candidate[gate.metric], reference[gate.metric]
        if len(cand) != len(ref):
            raise FeedError(f"Gate {gate.text!r}: the candidate has {len(cand)} samples, the reference {len(ref)}.")
        boot = paired_bootstrap_ci(cand.per_sample, ref.per_sample, cand.fn, n=resamples, seed=seed, level=level)
        ref_value = boot.reference.estimate
        interval = boot.candidate if gate.mode == "absolute" else boot.difference
        threshold = gate.threshold(ref_value)
        results.append(GateResult(
            gate=gate,
            candidate_value=boot.candidate.estimate,
            reference_value=None if gate.mode == "absolute" else ref_value,
            threshold=threshold,
            estimate=interval.estimate,
            low=interval.low,
            high=interval.high,
            passed=_meets(interval.estimate, gate.op, threshold),
            confidence=_confidence(gate.op, interval.low, interval.high, threshold),
            bootstrap=boot,
        ))
    return results


def all_passed(results: Sequence[GateResult]) -> bool:
    return all(r.passed for r in results)
