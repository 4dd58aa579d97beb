"""Classification metrics (pure numpy): accuracy, macro precision, macro recall, top-k; per-sample forms."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from enginekit.errors import FeedError
from enginekit.eval.bootstrap import SampleMetric


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
    """Metrics from scores/logits [N, C] (argmax) or predicted labels [N], against integer labels [N].

    Macro averages are over every class present in labels or predictions; a class never predicted
    has precision 0 (scikit-learn's ``zero_division=0``).
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
    precisions, recalls = [], []
    for c in classes:
        tp = float(np.sum((preds == c) & (labels == c)))
        predicted = float(np.sum(preds == c))
        actual = float(np.sum(labels == c))
        precisions.append(tp / predicted if predicted else 0.0)
        recalls.append(tp / actual if actual else 0.0)
    return ClassificationMetrics(
        samples=int(labels.size),
        accuracy=float(np.mean(preds == labels)),
        macro_precision=float(np.mean(precisions)),
        macro_recall=float(np.mean(recalls)),
    )


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


def topk_correct_per_sample(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Bool [N]: the label is among the ``k`` highest scores of scores [N, C].

    Ties at the k-th score count against the sample (a stable order is taken, lower class index first), the
    same as scikit-learn's ``top_k_accuracy_score``.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise FeedError(f"Top-{k} accuracy needs scores [N, C], got shape {list(scores.shape)}.")
    if k < 1:
        raise FeedError(f"Top-k needs k >= 1, got {k}.")
    labels = _labels_for(scores, labels)
    if k >= scores.shape[1]:
        return np.ones(labels.shape[0], dtype=bool)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.asarray((order == labels[:, None]).any(axis=1))


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of samples whose label is among the ``k`` highest scores."""
    return float(np.mean(topk_correct_per_sample(scores, labels, k)))


def macro_precision_recall(pairs: np.ndarray) -> tuple[float, float]:
    """Macro precision and recall of rows ``[prediction, label]`` [N, 2], same rules as classification_metrics."""
    preds, labels = pairs[:, 0], pairs[:, 1]
    classes, inverse = np.unique(np.concatenate([preds, labels]), return_inverse=True)
    p_idx, l_idx = inverse[: preds.shape[0]], inverse[preds.shape[0]:]
    size = classes.shape[0]
    tp = np.bincount(p_idx[p_idx == l_idx], minlength=size).astype(np.float64)
    predicted = np.bincount(p_idx, minlength=size).astype(np.float64)
    actual = np.bincount(l_idx, minlength=size).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros(size), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(size), where=actual > 0)
    return float(precision.mean()), float(recall.mean())


def _macro_precision(pairs: np.ndarray) -> float:
    return macro_precision_recall(pairs)[0]


def _macro_recall(pairs: np.ndarray) -> float:
    return macro_precision_recall(pairs)[1]


def classification_sample_metrics(
    scores: np.ndarray, labels: np.ndarray, top_k: Sequence[int] = (5,)
) -> dict[str, SampleMetric]:
    """Per-sample forms of the classification metrics, by metric name (the names gates use).

    ``accuracy``, ``macro_precision``, ``macro_recall``, and ``top{k}_accuracy`` for each k in ``top_k`` smaller
    than the number of classes (top-k needs scores [N, C]; with predicted labels it is left out).
    """
    preds = predicted_labels(scores)
    labels = _labels_for(preds, labels)
    pairs = np.stack([preds.astype(np.int64), labels.astype(np.int64)], axis=1)
    out: dict[str, SampleMetric] = {
        "accuracy": SampleMetric(np.asarray(preds == labels)),
        "macro_precision": SampleMetric(pairs, _macro_precision),
        "macro_recall": SampleMetric(pairs, _macro_recall),
    }
    arr = np.asarray(scores)
    if arr.ndim == 2:
        for k in top_k:
            if 1 < k < arr.shape[1]:
                out[f"top{k}_accuracy"] = SampleMetric(topk_correct_per_sample(arr, labels, k))
    return out
