"""`optimize --dataset`: task metrics per candidate with confidence intervals against the reference, and gates.

``--task``: classification (accuracy, macro precision/recall, top-5 where there are more than 5 classes),
segmentation (mIoU, pixel accuracy; a one-channel probability map is thresholded) or ctc (sequence accuracy,
normalised edit distance, character error rate of greedily decoded outputs) or detection (COCO mAP@[.5:.95] and
mAP@.5 by pycocotools of a post-processing hook's boxes, :mod:`enginekit.eval.detection`). Without labels the metrics
are agreement with the reference's own predictions (top-1 agreement, mIoU vs its masks, its decoded text, mAP
against its detections scoring at least ``threshold``). Each
candidate's value comes with a paired bootstrap interval of its difference from the reference
(the same samples resampled on both sides, 1000 times, seeded). ``--gate`` thresholds
(:mod:`enginekit.eval.gates`) are judged on the point estimate of that difference; a candidate that fails a gate
becomes a FAILED row (not eligible as best engine, and the run exits 1), its interval says how sure that is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from enginekit.status import Status

if TYPE_CHECKING:
    from enginekit.eval.bootstrap import SampleMetric
    from enginekit.eval.gates import Gate
    from enginekit.pipeline.steps import CandidateResult

RESAMPLES = 1000
LEVEL = 0.95


TASKS = ("classification", "segmentation", "ctc", "detection")


@dataclass(frozen=True)
class Task:
    name: str = "classification"
    # segmentation: a one-channel probability map above it is foreground; detection without labels: the
    # reference's detections scoring at least this are the ground truth
    threshold: float = 0.5
    blank: int = 0  # ctc: the blank index


def sample_metrics(task: Task, scores: Any, labels: Any, reference: Any) -> dict[str, SampleMetric]:
    """Per-sample metrics of one output: against the labels, or (without labels) against the reference's
    predictions (agreement). The reference itself goes through the same call with itself as the target.

    ``scores``/``reference``: arrays with the samples on axis 0, or for detection a list of
    :class:`~enginekit.eval.detection.ImageDetections`; ``labels``: an array, a COCO ground truth (detection) or
    None."""
    if task.name == "detection":
        from enginekit.eval.detection import detection_task_metrics

        return detection_task_metrics(scores, labels, reference, task.threshold)
    if task.name == "segmentation":
        from enginekit.eval.segmentation import predicted_masks, segmentation_sample_metrics

        classes = int(scores.shape[1]) if scores.ndim == 4 and scores.shape[1] > 1 else 2
        target = labels if labels is not None else predicted_masks(reference, task.threshold)
        return segmentation_sample_metrics(scores, target, num_classes=classes, threshold=task.threshold)
    if task.name == "ctc":
        from enginekit.eval.ctc import ctc_sample_metrics

        return ctc_sample_metrics(scores, labels if labels is not None else reference, task.blank)
    from enginekit.eval.agreement import agreement_sample_metrics
    from enginekit.eval.classification import classification_sample_metrics

    if labels is not None:
        return classification_sample_metrics(scores, labels)
    return agreement_sample_metrics(scores, reference)


def judge(results: Mapping[str, CandidateResult], scores: Mapping[str, Any], reference: str,
          labels: Any, gates: Sequence[Gate], task: Task | None = None) -> list[str]:
    """Fill every scored candidate's ``metrics`` (values, intervals of the difference, gate results); a candidate
    failing a gate becomes FAILED. Returns the labels of the candidates that failed a gate."""
    from enginekit.eval.bootstrap import paired_bootstrap_ci
    from enginekit.eval.gates import all_passed, evaluate_gates

    ref_scores = scores.get(reference)
    if ref_scores is None:
        if gates:  # never let gates look judged when they were not
            from enginekit.errors import BackendError

            raise BackendError(f"the gates were not evaluated: the reference {reference} produced no scores")
        return []
    task = task or Task()
    ref_metrics = sample_metrics(task, ref_scores, labels, ref_scores)
    failed = []
    for label, cres in results.items():
        if label not in scores:
            continue
        cand = sample_metrics(task, scores[label], labels, ref_scores) if label != reference else ref_metrics
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
