"""Classification metrics (pure numpy): accuracy, macro precision, macro recall."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from enginekit.errors import FeedError


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
