"""Classification metrics: accuracy, macro precision, macro recall, top-k, as scikit-learn computes them.

Reported values come from ``sklearn.metrics``: ``accuracy_score``; ``precision_score`` and ``recall_score`` with
``average="macro"``, ``labels=`` the classes present in the labels or the predictions and ``zero_division=0``
(a class never predicted has precision 0, one never labelled recall 0); ``top_k_accuracy_score`` with
``labels=np.arange(C)`` (among tied scores the higher class index ranks first, as scikit-learn orders them).

The paired bootstrap (:mod:`enginekit.eval.bootstrap`) needs the metric of 1000 resamples per metric and
candidate, too many scikit-learn calls, so each metric also has a vectorised per-sample form (0/1 correctness
rows, or ``[prediction, label]`` rows and :func:`macro_precision_recall`). :func:`classification_sample_metrics`
checks that form against scikit-learn's value on the full sample and reports scikit-learn's (a disagreement
is an InternalError, never a reported number).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from enginekit.deps import require
from enginekit.errors import FeedError
from enginekit.eval.bootstrap import SampleMetric

PURPOSE = "classification metrics"


def sklearn_metrics(purpose: str = PURPOSE) -> ModuleType:
    """``sklearn.metrics``, or MissingDependencyError naming ``enginekit[metrics]``."""
    require("sklearn", purpose=purpose)
    return importlib.import_module("sklearn.metrics")


@dataclass(frozen=True)
class ClassificationMetrics:
    samples: int
    accuracy: float
    macro_precision: float
    macro_recall: float

    def to_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def classification_metrics(
    scores: np.ndarray, labels: np.ndarray, num_classes: int | None = None
) -> ClassificationMetrics:
    """Metrics from scores/logits [N, C] (argmax) or predicted labels [N], against integer labels [N], by
    scikit-learn (module doc).

    Macro averages are over every class present in labels or predictions (below ``num_classes`` when it is set);
    a class never predicted has precision 0 (scikit-learn's ``zero_division=0``).
    """
    labels = np.asarray(labels).reshape(-1)
    preds = np.asarray(scores)
    if preds.ndim == 2:
        preds = preds.argmax(axis=1)
    preds = preds.reshape(-1)
    if preds.shape != labels.shape:
        raise FeedError(f"{preds.shape[0]} predictions for {labels.shape[0]} labels; the dataset and outputs disagree.")
    if labels.size == 0:
        raise FeedError("The dataset has no samples.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise FeedError(f"Labels must be integers, got {labels.dtype}.")
    classes = np.union1d(labels, preds) if num_classes is None else np.arange(num_classes)
    classes = classes[np.isin(classes, np.union1d(labels, preds))]
    accuracy, precision, recall = _library_scores(preds, labels, classes)
    return ClassificationMetrics(samples=int(labels.size), accuracy=accuracy, macro_precision=precision,
                                 macro_recall=recall)


def _library_scores(preds: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> tuple[float, float, float]:
    """scikit-learn's accuracy, macro precision and macro recall over ``classes`` (0 when there is none)."""
    sk = sklearn_metrics()
    try:
        accuracy = float(sk.accuracy_score(labels, preds))
        if classes.size == 0:  # num_classes below every class seen: nothing to average
            return accuracy, 0.0, 0.0
        precision = float(sk.precision_score(labels, preds, labels=classes, average="macro", zero_division=0))
        recall = float(sk.recall_score(labels, preds, labels=classes, average="macro", zero_division=0))
    except ValueError as exc:  # e.g. predicted "labels" that are not class indices
        raise FeedError(f"scikit-learn cannot score these predictions against the labels: {exc}") from exc
    return accuracy, precision, recall


# --- per-sample forms (for the paired bootstrap and gates) -----------------------------------------------------


def predicted_labels(scores: np.ndarray) -> np.ndarray:
    """Argmax over axis 1 of scores/logits [N, C]; predicted labels [N] are returned as they are."""
    preds = np.asarray(scores)
    if preds.ndim == 2:
        return np.asarray(preds.argmax(axis=1))
    if preds.ndim != 1:
        raise FeedError(f"Classification outputs must be scores [N, C] or labels [N], got shape {list(preds.shape)}.")
    return preds


def _labels_for(preds_or_scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels).reshape(-1)
    if preds_or_scores.shape[0] != labels.shape[0]:
        raise FeedError(f"{preds_or_scores.shape[0]} predictions for {labels.shape[0]} labels; "
                        "the dataset and outputs disagree.")
    if labels.size == 0:
        raise FeedError("The dataset has no samples.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise FeedError(f"Labels must be integers, got {labels.dtype}.")
    return labels


def correct_per_sample(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Bool [N]: the top-1 prediction equals the label (the mean is the accuracy)."""
    preds = predicted_labels(scores)
    return np.asarray(preds == _labels_for(preds, labels))


def _check_topk(scores: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores [N, C] with NaN ranked lowest (module doc) and labels [N] inside ``0..C-1``; FeedError otherwise."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise FeedError(f"Top-{k} accuracy needs scores [N, C], got shape {list(scores.shape)}.")
    if k < 1:
        raise FeedError(f"Top-k needs k >= 1, got {k}.")
    labels = _labels_for(scores, labels)
    outside = (labels < 0) | (labels >= scores.shape[1])
    if outside.any():
        raise FeedError(f"Label {int(labels[outside][0])} is outside the {scores.shape[1]} classes of the scores; "
                        "the dataset and outputs disagree.")
    if scores.dtype == np.bool_:
        scores = scores.astype(np.uint8)
    if not np.issubdtype(scores.dtype, np.number) or np.issubdtype(scores.dtype, np.complexfloating):
        raise FeedError(f"Top-{k} accuracy needs real-valued scores, got {scores.dtype}.")
    if np.issubdtype(scores.dtype, np.floating) and not np.isfinite(scores).all():
        scores = _finite_ranks(scores)
    return scores, labels


def _finite_ranks(scores: np.ndarray) -> np.ndarray:
    """Finite float64 scores in the same order, as scikit-learn needs them: +inf just above the largest finite
    score, -inf and NaN (a NaN score ranks below every number) just below the smallest."""
    out = scores.astype(np.float64)
    finite = np.isfinite(out)
    lo, hi = (float(out[finite].min()), float(out[finite].max())) if finite.any() else (0.0, 0.0)
    below, above = np.nextafter(lo, -np.inf), np.nextafter(hi, np.inf)
    below = below if np.isfinite(below) else lo  # scores at the ends of float64 tie with the infinities
    above = above if np.isfinite(above) else hi
    out[np.isposinf(out)] = above
    out[~np.isfinite(out)] = below  # -inf and NaN
    return out


def topk_correct_per_sample(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Bool [N]: the label is among the ``k`` highest scores of scores [N, C].

    Ties are ordered as scikit-learn's ``top_k_accuracy_score`` orders them (a stable ascending sort, reversed:
    among equal scores the higher class index ranks first); a NaN score ranks below every number.
    """
    scores, labels = _check_topk(scores, labels, k)
    if k >= scores.shape[1]:
        return np.ones(labels.shape[0], dtype=bool)
    # the label's rank without sorting: classes scoring more, plus classes scoring the same with a higher index
    rows = np.arange(labels.shape[0])
    own = scores[rows, labels][:, None]
    above = np.count_nonzero(scores > own, axis=1)
    above += np.count_nonzero((scores == own) & (np.arange(scores.shape[1])[None, :] > labels[:, None]), axis=1)
    return np.asarray(above < k)


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of samples whose label is among the ``k`` highest of scores [N, C]: scikit-learn's
    ``top_k_accuracy_score`` with ``labels=np.arange(C)`` (1.0 when k >= C: every class is among the k best)."""
    scores, labels = _check_topk(scores, labels, k)
    classes = scores.shape[1]
    if k >= classes:
        return 1.0  # scikit-learn returns it too, with a warning that it is meaningless
    sk = sklearn_metrics()
    if classes == 2:  # k == 1: scikit-learn takes two classes for a binary problem with one score column
        top1 = np.argsort(scores, axis=1, kind="mergesort")[:, -1]
        return float(sk.accuracy_score(labels, top1))
    return float(sk.top_k_accuracy_score(labels, scores, k=k, labels=np.arange(classes)))


def macro_precision_recall(pairs: np.ndarray) -> tuple[float, float]:
    """Macro precision and recall of rows ``[prediction, label]`` [N, 2], same rules as classification_metrics."""
    preds, labels = pairs[:, 0], pairs[:, 1]
    low, high = (int(pairs.min()), int(pairs.max())) if pairs.size else (0, 0)
    if low >= 0 and high < _DIRECT_INDEX_LIMIT:  # class ids index the counts directly (no sort per resample)
        p_idx, l_idx, size = preds, labels, high + 1
    else:
        classes, inverse = np.unique(np.concatenate([preds, labels]), return_inverse=True)
        p_idx, l_idx, size = inverse[: preds.shape[0]], inverse[preds.shape[0]:], classes.shape[0]
    tp = np.bincount(p_idx[p_idx == l_idx], minlength=size).astype(np.float64)
    predicted = np.bincount(p_idx, minlength=size).astype(np.float64)
    actual = np.bincount(l_idx, minlength=size).astype(np.float64)
    present = (predicted > 0) | (actual > 0)  # the classes in labels or predictions
    precision = np.divide(tp, predicted, out=np.zeros(size), where=predicted > 0)[present]
    recall = np.divide(tp, actual, out=np.zeros(size), where=actual > 0)[present]
    return float(precision.mean()), float(recall.mean())


_DIRECT_INDEX_LIMIT = 1 << 20


def _macro_precision(pairs: np.ndarray) -> float:
    return macro_precision_recall(pairs)[0]


def _macro_recall(pairs: np.ndarray) -> float:
    return macro_precision_recall(pairs)[1]


def classification_sample_metrics(
    scores: np.ndarray, labels: np.ndarray, top_k: Sequence[int] = (5,)
) -> dict[str, SampleMetric]:
    """Per-sample forms of the classification metrics, by metric name (the names gates use), each carrying
    scikit-learn's value on the full sample (checked against the per-sample form: module doc).

    ``accuracy``, ``macro_precision``, ``macro_recall``, and ``top{k}_accuracy`` for each k in ``top_k`` smaller
    than the number of classes (top-k needs scores [N, C]; with predicted labels it is left out).
    """
    preds = predicted_labels(scores)
    labels = _labels_for(preds, labels)
    pairs = np.stack([preds.astype(np.int64), labels.astype(np.int64)], axis=1)
    accuracy, precision, recall = _library_scores(preds, labels, np.union1d(labels, preds))
    out: dict[str, SampleMetric] = {
        "accuracy": SampleMetric(np.asarray(preds == labels), library_value=accuracy, name="accuracy",
                                 library="sklearn.metrics.accuracy_score"),
        "macro_precision": SampleMetric(pairs, _macro_precision, library_value=precision, name="macro_precision",
                                        library="sklearn.metrics.precision_score"),
        "macro_recall": SampleMetric(pairs, _macro_recall, library_value=recall, name="macro_recall",
                                     library="sklearn.metrics.recall_score"),
    }
    arr = np.asarray(scores)
    if arr.ndim == 2:
        for k in top_k:
            if 1 < k < arr.shape[1]:
                out[f"top{k}_accuracy"] = SampleMetric(
                    topk_correct_per_sample(arr, labels, k), library_value=top_k_accuracy(arr, labels, k),
                    name=f"top{k}_accuracy", library="sklearn.metrics.top_k_accuracy_score")
    return out
