"""`optimize --dataset`: task metrics per candidate with confidence intervals against the reference, and gates.

With labels, the classification metrics (accuracy, macro precision/recall, top-5 where there are more than 5
classes); each candidate's value comes with a paired bootstrap interval of its difference from the reference
(the same samples resampled on both sides, 1000 times, seeded). ``--gate`` thresholds
(:mod:`enginekit.eval.gates`) are judged on the point estimate of that difference; a candidate that fails a gate
becomes a FAILED row (not eligible as best engine, and the run exits 1), its interval says how sure that is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from enginekit.status import Status

if TYPE_CHECKING:
    from enginekit.eval.bootstrap import SampleMetric
    from enginekit.eval.gates import Gate
    from enginekit.pipeline.steps import CandidateResult

RESAMPLES = 1000
LEVEL = 0.95


def sample_metrics(scores: np.ndarray, labels: np.ndarray | None,
                   reference: np.ndarray | None) -> dict[str, SampleMetric]:
    """Per-sample metrics: against the labels, or (without labels) agreement with the reference's predictions."""
    from enginekit.eval.agreement import agreement_sample_metrics
    from enginekit.eval.classification import classification_sample_metrics

    if labels is not None:
        return classification_sample_metrics(scores, labels)
    assert reference is not None
    return agreement_sample_metrics(scores, reference)


def judge(results: Mapping[str, CandidateResult], scores: Mapping[str, np.ndarray], reference: str,
          labels: np.ndarray | None, gates: Sequence[Gate]) -> list[str]:
    """Fill every scored candidate's ``metrics`` (values, intervals of the difference, gate results); a candidate
    failing a gate becomes FAILED. Returns the labels of the candidates that failed a gate."""
    from enginekit.eval.agreement import reference_agreement
    from enginekit.eval.bootstrap import paired_bootstrap_ci
    from enginekit.eval.gates import all_passed, evaluate_gates

    ref_scores = scores.get(reference)
    if ref_scores is None:
        if gates:  # never let gates look judged when they were not
            from enginekit.errors import BackendError

            raise BackendError(f"the gates were not evaluated: the reference {reference} produced no scores")
        return []
    ref_metrics = sample_metrics(ref_scores, labels, ref_scores)
    if labels is None:
        ref_metrics = reference_agreement(ref_metrics)
    failed = []
    for label, cres in results.items():
        if label not in scores:
            continue
        cand = sample_metrics(scores[label], labels, ref_scores) if label != reference else ref_metrics
        values: dict[str, Any] = {name: m.value() for name, m in cand.items()}
        intervals = {}
        for name, m in cand.items():
            if label == reference or name not in ref_metrics:
                continue
            boot = paired_bootstrap_ci(m.per_sample, ref_metrics[name].per_sample, m.fn, n=RESAMPLES, seed=0,
                                       level=LEVEL)
            d = boot.difference
            intervals[name] = {"difference": d.estimate, "low": d.low, "high": d.high, "level": LEVEL}
        doc: dict[str, Any] = {**(cres.metrics or {}), **values, "samples": len(scores[label]),
                               "labels": labels is not None, "intervals": intervals}
        # abs: gates judge the reference too (they do not depend on it); relative ones only the other rows
        mine = [g for g in gates if label != reference or g.mode == "absolute"]
        if mine:
            judged = evaluate_gates(mine, cand, ref_metrics, resamples=RESAMPLES, seed=0, level=LEVEL)
            doc["gates"] = [r.to_dict() for r in judged]
            if not all_passed(judged) and cres.row.status == Status.OK:
                bad = [r for r in judged if not r.passed]
                cres.row.status = Status.FAILED
                cres.row.reason = "; ".join(
                    f"gate {r.gate.text} failed: {'value' if r.reference_value is None else 'difference'} "
                    f"{r.estimate:+.4g} (95 % CI {r.low:+.4g} .. {r.high:+.4g}), threshold {r.threshold:+.4g}, "
                    f"confidence {r.confidence}" for r in bad)
                failed.append(label)
        cres.metrics = doc
    return failed
