"""Reported task metrics are the libraries' (scikit-learn, rapidfuzz); the bootstrap's per-sample forms must agree.

(a) values equal scikit-learn's / rapidfuzz's on real-ish data; (b) a per-sample function that disagrees with the
library raises InternalError naming the metric; (c) a missing library is a MissingDependencyError naming
``enginekit[metrics]``, never an ImportError.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from rapidfuzz.distance import Levenshtein
from sklearn.datasets import load_digits
from sklearn.metrics import (
    accuracy_score,
    jaccard_score,
    precision_score,
    recall_score,
    top_k_accuracy_score,
)

from enginekit.errors import (
    EXIT_INTERNAL_ERROR,
    EXIT_MISSING_DEPENDENCY,
    FeedError,
    InternalError,
    MissingDependencyError,
)
from enginekit.eval import classification, segmentation
from enginekit.eval.agreement import agreement_metrics, agreement_sample_metrics
from enginekit.eval.bootstrap import LIBRARY_TOLERANCE, SampleMetric, check_library_value
from enginekit.eval.classification import (
    classification_metrics,
    classification_sample_metrics,
    top_k_accuracy,
    topk_correct_per_sample,
)
from enginekit.eval.ctc import ctc_sample_metrics, edit_distance, sequence_sample_metrics
from enginekit.eval.segmentation import library_values, segmentation_sample_metrics


@pytest.fixture(scope="module")
def digits_scores() -> tuple[np.ndarray, np.ndarray]:
    """(scores [N, 10], labels [N]) of scikit-learn's digits: negative distances to the class means of the other
    half of the data, with noise so that a fair share is wrong (about 80 % top-1)."""
    x, y = load_digits(return_X_y=True)
    train, test = np.arange(0, x.shape[0], 2), np.arange(1, x.shape[0], 2)
    means = np.stack([x[train][y[train] == c].mean(axis=0) for c in range(10)])
    dist = np.sqrt(((x[test][:, None, :] - means[None]) ** 2).sum(axis=2))
    scores = -dist + np.random.default_rng(0).normal(0.0, 6.0, dist.shape)
    return scores, y[test]


def _macro(labels: np.ndarray, preds: np.ndarray) -> tuple[float, float]:
    present = np.union1d(labels, preds)
    return (precision_score(labels, preds, labels=present, average="macro", zero_division=0),
            recall_score(labels, preds, labels=present, average="macro", zero_division=0))


# --- (a) classification and agreement ---------------------------------------------------------------------------


def test_classification_values_are_scikit_learns_on_digits(digits_scores: tuple[np.ndarray, np.ndarray]) -> None:
    scores, labels = digits_scores
    preds = scores.argmax(1)
    acc = accuracy_score(labels, preds)
    assert 0.6 < acc < 0.95  # a real mix of right and wrong
    p, r = _macro(labels, preds)
    m = classification_metrics(scores, labels)
    assert (m.accuracy, m.macro_precision, m.macro_recall) == (acc, p, r)
    sm = classification_sample_metrics(scores, labels, top_k=(2, 3, 5))
    assert sm["accuracy"].value() == acc
    assert sm["macro_precision"].value() == p and sm["macro_recall"].value() == r
    for k in (2, 3, 5):
        expected = top_k_accuracy_score(labels, scores, k=k, labels=np.arange(10))
        assert sm[f"top{k}_accuracy"].value() == expected == top_k_accuracy(scores, labels, k)
    for name, metric in sm.items():  # the bootstrap's per-sample forms give the same on the full sample
        assert metric.library_value is not None and metric.name == name
        own = float(np.mean(metric.per_sample)) if metric.fn is None else metric.fn(metric.per_sample)
        assert abs(own - metric.value()) <= LIBRARY_TOLERANCE


def test_classes_never_predicted_and_a_narrowed_class_range() -> None:
    labels = np.array([0, 1, 2, 2, 3, 3, 3])
    preds = np.array([0, 1, 1, 1, 3, 4, 4])  # class 2 never predicted, class 4 never labelled
    m = classification_metrics(preds, labels)
    assert (m.macro_precision, m.macro_recall) == _macro(labels, preds)
    sm = classification_sample_metrics(preds, labels)
    assert set(sm) == {"accuracy", "macro_precision", "macro_recall"}  # labels only: no top-k
    assert sm["macro_precision"].value() == m.macro_precision
    narrowed = classification_metrics(preds, labels, num_classes=4)  # class 4 left out of the averages
    assert narrowed.macro_precision == precision_score(labels, preds, labels=[0, 1, 2, 3], average="macro",
                                                       zero_division=0)


def test_top_k_ties_and_nan_follow_scikit_learn(digits_scores: tuple[np.ndarray, np.ndarray]) -> None:
    scores, labels = digits_scores
    coarse = np.round(scores / 8.0)  # integers: many ties at the k-th score, as from a quantised model
    for k in (2, 3, 5):
        expected = top_k_accuracy_score(labels, coarse, k=k, labels=np.arange(10))
        assert top_k_accuracy(coarse, labels, k) == expected
        assert np.mean(topk_correct_per_sample(coarse, labels, k)) == pytest.approx(expected, abs=1e-12)
    # among equal scores the higher class ranks first (scikit-learn's order)
    flat = np.zeros((2, 4))
    assert topk_correct_per_sample(flat, np.array([3, 0]), 2).tolist() == [True, False]
    # NaN ranks below every number (scikit-learn refuses NaN; the value is scikit-learn's on that ranking)
    broken = scores.copy()
    broken[np.arange(50), labels[:50]] = np.nan  # the label's own score is NaN: never among the best
    broken[50:60] = np.nan  # whole rows: all tied
    broken[60:70, 0] = np.inf
    sm = classification_sample_metrics(broken, labels, top_k=(3,))
    finite = broken[np.isfinite(broken)]
    ranked = np.where(np.isnan(broken), finite.min() - 1.0, np.minimum(broken, finite.max() + 1.0))
    assert sm["top3_accuracy"].value() == top_k_accuracy_score(labels, ranked, k=3, labels=np.arange(10))
    hits = topk_correct_per_sample(broken, labels, 3)
    assert not hits[:50].any() and hits[50:60].tolist() == (labels[50:60] >= 7).tolist()
    two = scores[:, :2]  # two classes: top-1 is the better of the two (scikit-learn's binary case takes one column)
    assert top_k_accuracy(two, np.minimum(labels, 1), 1) == accuracy_score(np.minimum(labels, 1), two.argmax(1))


def test_labels_outside_the_score_classes_are_a_feed_error(digits_scores: tuple[np.ndarray, np.ndarray]) -> None:
    scores, labels = digits_scores
    with pytest.raises(FeedError, match="Label 12 is outside the 10 classes"):
        classification_sample_metrics(scores, np.where(np.arange(labels.shape[0]) == 3, 12, labels))
    with pytest.raises(FeedError, match="cannot score"):
        classification_metrics(np.array([0.5, 1.5, 2.0]), np.array([0, 1, 2]))  # continuous "predictions"


def test_agreement_values_are_scikit_learns(digits_scores: tuple[np.ndarray, np.ndarray]) -> None:
    ref, _ = digits_scores
    cand = ref + np.random.default_rng(1).normal(0.0, 4.0, ref.shape)
    ref_top1 = ref.argmax(1)
    sm = agreement_sample_metrics(cand, ref, top_k=(2, 5))
    assert sm["top1_agreement"].value() == accuracy_score(ref_top1, cand.argmax(1)) < 1.0
    for k in (2, 5):
        assert sm[f"top{k}_agreement"].value() == top_k_accuracy_score(ref_top1, cand, k=k, labels=np.arange(10))
    m = agreement_metrics(cand, ref)
    assert m.top1_agreement == sm["top1_agreement"].value()
    assert m.disagreements == int(np.sum(cand.argmax(1) != ref_top1))


# --- (a) segmentation -------------------------------------------------------------------------------------------


def _maps(seed: int, n: int = 6, k: int = 5, size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = rng.integers(0, k, (n, size, size))
    pred = np.where(rng.random(target.shape) < 0.75, target, rng.integers(0, k, target.shape))
    return pred, target


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_segmentation_values_are_scikit_learns(seed: int) -> None:
    pred, target = _maps(seed)
    target[target == 3] = 2  # class 3 only in the predictions
    pred[pred == 4] = 0
    target[target == 4] = 0  # class 4 in neither: left out of the mean
    m = segmentation_sample_metrics(pred, target, num_classes=6)  # class 5 never appears either
    t, p = target.ravel(), pred.ravel()
    present = np.union1d(t, p)
    assert present.tolist() == [0, 1, 2, 3]
    assert m["miou"].value() == pytest.approx(jaccard_score(t, p, labels=present, average="macro"), abs=1e-15)
    assert m["pixel_accuracy"].value() == accuracy_score(t, p)
    assert m["miou"].fn is not None and m["pixel_accuracy"].fn is not None
    assert abs(m["miou"].fn(m["miou"].per_sample) - m["miou"].value()) <= LIBRARY_TOLERANCE
    lib = library_values(pred, target)
    assert list(lib.class_iou) == [0, 1, 2, 3]
    assert lib.class_iou[3] == 0.0  # predicted, never labelled


def test_segmentation_ignore_index_and_foreground() -> None:
    pred, target = _maps(3, k=2)
    target[:, :4] = 255  # unlabelled band
    m = segmentation_sample_metrics(pred, target, num_classes=2, ignore_index=255)
    valid = target != 255
    t, p = target[valid], pred[valid]
    assert m["miou"].value() == pytest.approx(jaccard_score(t, p, average="macro"), abs=1e-15)
    assert m["pixel_accuracy"].value() == accuracy_score(t, p)
    assert m["foreground_iou"].value() == jaccard_score(t, p)  # binary: class 1
    # no pixel of class 1 on either side: 1.0 by convention, also from the per-sample form
    none = segmentation_sample_metrics(np.zeros((2, 4, 4), np.int64), np.zeros((2, 4, 4), np.int64), num_classes=2)
    assert {k: v.value() for k, v in none.items()} == {"miou": 1.0, "pixel_accuracy": 1.0, "foreground_iou": 1.0}
    everything_ignored = segmentation_sample_metrics(pred, np.full_like(target, 255), num_classes=2, ignore_index=255)
    assert everything_ignored["miou"].value() == everything_ignored["pixel_accuracy"].value() == 1.0


# --- (a) CTC --------------------------------------------------------------------------------------------------


TEXT_PAIRS = [("kitten", "sitting"), ("", ""), ("", "abc"), ("abc", ""), ("Region-based segmentatoin",
              "Region-based segmentation"), ("flaw", "lawn"), ("ünïcödé", "unicode"), ("same", "same")]


def test_edit_distances_are_rapidfuzz() -> None:
    preds, targets = [p for p, _ in TEXT_PAIRS], [t for _, t in TEXT_PAIRS]
    for p, t in TEXT_PAIRS:
        assert edit_distance(p, t) == Levenshtein.distance(p, t)
    m = sequence_sample_metrics(preds, targets)
    assert m["sequence_accuracy"].per_sample.tolist() == [p == t for p, t in TEXT_PAIRS]
    assert m["normalized_edit_distance"].per_sample.tolist() == pytest.approx(
        [Levenshtein.normalized_distance(p, t) for p, t in TEXT_PAIRS], abs=1e-15)
    edits = sum(Levenshtein.distance(p, t) for p, t in TEXT_PAIRS)
    assert m["char_error_rate"].value() == pytest.approx(edits / sum(len(t) for t in targets), abs=1e-15)
    # index sequences (decoded CTC outputs) the same way, empty ones included
    seqs = [[list(map(ord, p)), list(map(ord, t))] for p, t in TEXT_PAIRS]
    idx = sequence_sample_metrics([p for p, _ in seqs], [t for _, t in seqs])
    for name in m:
        assert idx[name].per_sample.tolist() == m[name].per_sample.tolist()
    only_empty = sequence_sample_metrics([[]], [[1, 2]])
    assert only_empty["char_error_rate"].value() == 1.0 and only_empty["normalized_edit_distance"].value() == 1.0
    assert sequence_sample_metrics(["abc"], [""])["char_error_rate"].value() == float("inf")


def test_ctc_padded_targets_and_mixed_element_kinds() -> None:
    best = np.array([[0, 3, 3, 0, 3, 1], [0, 0, 0, 0, 0, 0]])
    targets = np.array([[3, 3, 1, -1], [2, -1, -1, -1]])
    m = ctc_sample_metrics(best, targets)
    assert m["normalized_edit_distance"].per_sample.tolist() == [0.0, 1.0]
    with pytest.raises(FeedError, match="different kinds of elements"):
        sequence_sample_metrics([[97, 98]], ["ab"])  # rapidfuzz would call 97 and "a" equal


# --- (b) the library-value check --------------------------------------------------------------------------------


def test_a_wrong_per_sample_function_raises_internal_error() -> None:
    correct = np.array([True, False, True, True])
    SampleMetric(correct, library_value=0.75, name="accuracy")  # agrees
    SampleMetric(correct, library_value=0.75 + LIBRARY_TOLERANCE / 2, name="accuracy")  # within the tolerance
    with pytest.raises(InternalError, match="'accuracy'.*sklearn.metrics.accuracy_score") as info:
        SampleMetric(correct, lambda v: float(np.mean(v)) + 0.01, library_value=0.75, name="accuracy",
                     library="sklearn.metrics.accuracy_score")
    assert info.value.exit_code == EXIT_INTERNAL_ERROR and "bug" in str(info.value)
    with pytest.raises(InternalError, match="'top3_accuracy'"):
        SampleMetric(correct, library_value=0.5, name="top3_accuracy")
    check_library_value("char_error_rate", float("inf"), float("inf"))  # equal infinities agree
    with pytest.raises(InternalError):
        check_library_value("miou", float("nan"), 0.5)
    # value() reports the library's number, not the per-sample form's
    assert SampleMetric(correct, lambda v: 0.75 + 1e-12, library_value=0.75).value() == 0.75


def test_builders_check_their_per_sample_forms(monkeypatch: pytest.MonkeyPatch,
                                               digits_scores: tuple[np.ndarray, np.ndarray]) -> None:
    scores, labels = digits_scores
    monkeypatch.setattr(classification, "_macro_precision", lambda pairs: 0.5)
    with pytest.raises(InternalError, match="'macro_precision'.*precision_score"):
        classification_sample_metrics(scores, labels)
    pred, target = _maps(0)
    first_image_only = segmentation.mean_iou  # a plausible bug: the rows of one image, not summed over all
    monkeypatch.setattr(segmentation, "mean_iou", lambda rows: first_image_only(rows[:1]))
    with pytest.raises(InternalError, match="'miou'.*jaccard_score"):
        segmentation_sample_metrics(pred, target)


# --- (c) a missing library ------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["sklearn", "rapidfuzz"])
def test_a_missing_library_names_the_metrics_extra(monkeypatch: pytest.MonkeyPatch, module: str,
                                                   digits_scores: tuple[np.ndarray, np.ndarray]) -> None:
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails as if it were not installed
    scores, labels = digits_scores
    pred, target = _maps(0)
    calls = {
        "sklearn": [lambda: classification_metrics(scores, labels),
                    lambda: classification_sample_metrics(scores, labels), lambda: top_k_accuracy(scores, labels, 3),
                    lambda: agreement_sample_metrics(scores, scores),
                    lambda: segmentation_sample_metrics(pred, target)],
        "rapidfuzz": [lambda: sequence_sample_metrics(["ab"], ["abc"]), lambda: edit_distance("a", "b")],
    }[module]
    for call in calls:
        with pytest.raises(MissingDependencyError) as info:
            call()
        assert info.value.exit_code == EXIT_MISSING_DEPENDENCY
        assert info.value.hint == "pip install 'enginekit[metrics]'"
        assert info.value.package == {"sklearn": "scikit-learn", "rapidfuzz": "rapidfuzz"}[module]
