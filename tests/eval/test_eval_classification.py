from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, precision_score, recall_score

from enginekit.errors import FeedError
from enginekit.eval.classification import classification_metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, 200)
    logits = rng.standard_normal((200, 5)) + np.eye(5)[labels] * 1.5  # better than chance, not perfect
    preds = logits.argmax(1)
    m = classification_metrics(logits, labels)
    assert m.samples == 200
    assert m.accuracy == pytest.approx(accuracy_score(labels, preds))
    assert m.macro_precision == pytest.approx(precision_score(labels, preds, average="macro", zero_division=0))
    assert m.macro_recall == pytest.approx(recall_score(labels, preds, average="macro", zero_division=0))


def test_class_never_predicted_has_zero_precision() -> None:
    labels = np.array([0, 1, 2, 2])
    preds = np.array([0, 1, 1, 1])
    m = classification_metrics(preds, labels)
    assert m.macro_precision == pytest.approx(precision_score(labels, preds, average="macro", zero_division=0))
    assert m.macro_recall == pytest.approx((1 + 1 + 0) / 3)


def test_mismatched_lengths_and_float_labels_are_user_errors() -> None:
    with pytest.raises(FeedError, match="3 predictions for 2 labels"):
        classification_metrics(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(FeedError, match="integers"):
        classification_metrics(np.zeros((2, 2)), np.array([0.0, 1.0]))


@pytest.mark.parametrize("offset", [0, -5, 1 << 21])  # small ids are counted directly, others through np.unique
def test_macro_precision_recall_rows_equal_scikit_learn_for_any_class_ids(offset: int) -> None:
    from enginekit.eval.classification import macro_precision_recall

    rng = np.random.default_rng(offset & 0xFFFF)
    labels = rng.integers(0, 12, 300) + offset
    preds = np.where(rng.uniform(size=300) < 0.7, labels, rng.integers(0, 15, 300) + offset)
    p, r = macro_precision_recall(np.stack([preds, labels], axis=1))
    classes = np.union1d(preds, labels)
    assert p == pytest.approx(precision_score(labels, preds, labels=classes, average="macro", zero_division=0))
    assert r == pytest.approx(recall_score(labels, preds, labels=classes, average="macro", zero_division=0))
