"""Agreement of a candidate's classification outputs with the reference's (FP32), for data without labels.

``top1_agreement``: share of samples whose top-1 class is the same for both. With scores [N, C] on both sides
also ``top{k}_agreement``: share of samples whose reference top-1 class is among the candidate's k best.
As gate metrics their reference value is 1 on every sample (the reference agrees with itself).

The values are scikit-learn's with the reference's top-1 class as the label: ``accuracy_score`` for top-1
agreement, ``top_k_accuracy_score`` (``labels=np.arange(C)``) for top-k; the per-sample forms the bootstrap
resamples are checked against them (:mod:`enginekit.eval.classification`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from enginekit.errors import FeedError
from enginekit.eval.bootstrap import SampleMetric
from enginekit.eval.classification import predicted_labels, sklearn_metrics, top_k_accuracy, topk_correct_per_sample


@dataclass(frozen=True)
class AgreementMetrics:
    samples: int
    top1_agreement: float
    disagreements: int
    topk_agreement: dict[int, float]

    def to_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {"samples": self.samples, "top1_agreement": self.top1_agreement,
                                       "disagreements": self.disagreements}
        out.update({f"top{k}_agreement": v for k, v in self.topk_agreement.items()})
        return out


def _check_pair(candidate: np.ndarray, reference: np.ndarray) -> None:
    if candidate.shape[:1] != reference.shape[:1]:
        raise FeedError(f"Candidate and reference outputs have different sample counts: {candidate.shape[:1]} "
                        f"vs {reference.shape[:1]}.")
    if candidate.ndim == 0 or candidate.shape[0] == 0:
        raise FeedError("Agreement needs at least one sample.")
    if candidate.ndim == 2 and reference.ndim == 2 and candidate.shape[1] != reference.shape[1]:
        raise FeedError(f"Candidate and reference have different class counts: {candidate.shape[1]} "
                        f"vs {reference.shape[1]}.")


def top1_agreement_per_sample(candidate: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Bool [N]: same top-1 class. Each side is scores [N, C] (argmax) or predicted labels [N]."""
    cand, ref = np.asarray(candidate), np.asarray(reference)
    _check_pair(cand, ref)
    return np.asarray(predicted_labels(cand) == predicted_labels(ref))


def topk_agreement_per_sample(candidate: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """Bool [N]: the reference's top-1 class is among the candidate's ``k`` highest scores (candidate scores [N, C])."""
    cand, ref = np.asarray(candidate), np.asarray(reference)
    _check_pair(cand, ref)
    return topk_correct_per_sample(cand, predicted_labels(ref), k)


def agreement_metrics(candidate: np.ndarray, reference: np.ndarray, top_k: Sequence[int] = (5,)) -> AgreementMetrics:
    """Top-1 agreement; top-k agreement for each k in ``top_k`` below the class count when the candidate has scores."""
    samples = agreement_sample_metrics(candidate, reference, top_k)
    top1 = samples["top1_agreement"]
    topk = {int(name[3:-len("_agreement")]): m.value() for name, m in samples.items() if name != "top1_agreement"}
    return AgreementMetrics(samples=len(top1), top1_agreement=top1.value(),
                            disagreements=int(np.sum(~top1.per_sample)), topk_agreement=topk)


def agreement_sample_metrics(
    candidate: np.ndarray, reference: np.ndarray, top_k: Sequence[int] = (5,)
) -> dict[str, SampleMetric]:
    """Per-sample agreement metrics of the candidate, by gate metric name (see :func:`reference_agreement`), each
    carrying scikit-learn's value (module doc)."""
    cand, ref = np.asarray(candidate), np.asarray(reference)
    top1 = top1_agreement_per_sample(cand, ref)
    ref_top1 = predicted_labels(ref)
    try:
        library = float(sklearn_metrics("agreement metrics").accuracy_score(ref_top1, predicted_labels(cand)))
    except ValueError as exc:  # e.g. predicted "labels" that are not class indices
        raise FeedError(f"scikit-learn cannot compare the candidate's predictions with the reference's: {exc}") from exc
    out = {"top1_agreement": SampleMetric(top1, library_value=library, name="top1_agreement",
                                          library="sklearn.metrics.accuracy_score")}
    if cand.ndim == 2:
        for k in top_k:
            if 1 < k < cand.shape[1]:
                out[f"top{k}_agreement"] = SampleMetric(
                    topk_agreement_per_sample(cand, ref, k), library_value=top_k_accuracy(cand, ref_top1, k),
                    name=f"top{k}_agreement", library="sklearn.metrics.top_k_accuracy_score")
    return out


def reference_agreement(metrics: dict[str, SampleMetric]) -> dict[str, SampleMetric]:
    """The reference's side of agreement metrics: 1 on every sample (for paired gates against the reference)."""
    return {name: SampleMetric(np.ones(len(m), dtype=bool), m.fn) for name, m in metrics.items()}
