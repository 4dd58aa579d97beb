"""Gates, the paired bootstrap, top-k and agreement on the digits model's real predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import top_k_accuracy_score

from enginekit.errors import FeedError, InvalidArgumentError, UnknownNameError
from enginekit.eval.agreement import agreement_metrics, agreement_sample_metrics, reference_agreement
from enginekit.eval.bootstrap import SampleMetric, paired_bootstrap_ci
from enginekit.eval.classification import (
    classification_metrics,
    classification_sample_metrics,
    macro_precision_recall,
    top_k_accuracy,
)
from enginekit.eval.gates import all_passed, evaluate_gates, parse_gate, parse_gates
from enginekit.examples import digits
from enginekit.ortsession import ort_session


@pytest.fixture(scope="module")
def preds() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reference logits, noisy-input candidate logits, labels) of the digits test split."""
    x, labels = digits.load_test_split()
    session = ort_session(digits.onnx_path(), purpose="the digits test")
    ref = np.asarray(session.run(None, {"x": x})[0])
    noisy = (x + np.random.default_rng(0).normal(0.0, 0.2, x.shape)).astype(np.float32)
    cand = np.asarray(session.run(None, {"x": noisy})[0])
    return ref, cand, labels


@pytest.mark.parametrize(("text", "metric", "op", "value", "mode", "threshold"), [
    ("accuracy>=-0.005", "accuracy", ">=", -0.005, "difference", -0.005),
    (" accuracy >= -0.5pp ", "accuracy", ">=", -0.5, "points", -0.005),
    ("accuracy>=-0.5%", "accuracy", ">=", -0.5, "relative", -0.004),  # reference 0.8
    ("top5_accuracy>=abs:0.95", "top5_accuracy", ">=", 0.95, "absolute", 0.95),
    ("macro_recall<=+1e-3", "macro_recall", "<=", 0.001, "difference", 0.001),
])
def test_grammar(text: str, metric: str, op: str, value: float, mode: str, threshold: float) -> None:
    gate = parse_gate(text)
    assert (gate.metric, gate.op, gate.value, gate.mode) == (metric, op, value, mode)
    assert gate.threshold(0.8) == pytest.approx(threshold)
    assert gate.to_dict()["gate"] == text.strip()


@pytest.mark.parametrize(("text", "match"), [
    ("accuracy>-0.5%", "must be >= or <="),
    ("accuracy==1", "must be >= or <="),
    ("", "empty"),
    ("accuracy>=abs:95%", "abs: value"),
    ("accuracy>=lots", "does not follow"),
    (">=0.1", "does not follow"),
    ("accuracy>=-0.5pts", "does not follow"),
])
def test_bad_gates(text: str, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        parse_gate(text)


def test_topk_and_macro_match_scikit_learn(preds: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    _, cand, labels = preds
    for k in (2, 3, 5):
        assert top_k_accuracy(cand, labels, k) == pytest.approx(top_k_accuracy_score(labels, cand, k=k,
                                                                                       labels=np.arange(10)))
    m = classification_metrics(cand, labels)
    p, r = macro_precision_recall(np.stack([cand.argmax(1), labels], axis=1))
    assert (p, r) == pytest.approx((m.macro_precision, m.macro_recall))
    assert set(classification_sample_metrics(cand, labels)) == {"accuracy", "macro_precision", "macro_recall",
                                                                "top5_accuracy"}


def test_self_comparison_passes_with_a_zero_interval(preds: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    ref, _, labels = preds
    metrics = classification_sample_metrics(ref, labels)
    gates = parse_gates(["accuracy>=0", "macro_precision>=0", "accuracy>=abs:0.95", "accuracy>=abs:0.98"])
    results = evaluate_gates(gates, metrics, metrics)
    assert all_passed(results)
    assert [str(r.confidence) for r in results] == ["passed", "passed", "passed", "inconclusive"]
    assert (results[0].estimate, results[0].low, results[0].high) == (0.0, 0.0, 0.0)
    assert results[3].candidate_value == pytest.approx(355 / 360) and results[3].reference_value is None
    assert results[3].low < 0.98 <= results[3].estimate  # 355/360 meets 0.98; its interval reaches below


def test_noisy_candidate_fails(preds: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    ref, cand, labels = preds
    c, r = classification_sample_metrics(cand, labels), classification_sample_metrics(ref, labels)
    assert int(c["accuracy"].per_sample.sum()) == 293 and int(r["accuracy"].per_sample.sum()) == 355
    results = evaluate_gates(parse_gates(["accuracy>=-0.5pp", "accuracy>=-20pp", "accuracy>=-2%",
                                          "macro_recall>=-0.01"]), c, r)
    by_gate = {res.gate.text: res for res in results}
    acc = by_gate["accuracy>=-0.5pp"]
    assert acc.estimate == pytest.approx((293 - 355) / 360)
    assert not acc.passed and acc.confidence == "failed" and acc.high < -0.005
    loose = by_gate["accuracy>=-20pp"]  # -17.2 points: met by the estimate, not by the interval's low end
    assert loose.passed and loose.low < -0.2 < loose.estimate and loose.confidence == "inconclusive"
    assert by_gate["accuracy>=-2%"].threshold == pytest.approx(-0.02 * 355 / 360)
    assert not all_passed(results)
    d = acc.to_dict()
    assert d["passed"] is False and d["confidence"] == "failed" and d["resamples"] == 1000 and d["samples"] == 360


def test_one_flip_is_inconclusive(preds: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    ref, _, labels = preds
    correct = ref.argmax(1) == labels
    flipped = correct.copy()
    flipped[int(np.argmax(correct))] = False  # the candidate loses one sample the reference got right
    [res] = evaluate_gates([parse_gate("accuracy>=-0.5pp")], {"accuracy": SampleMetric(flipped)},
                           {"accuracy": SampleMetric(correct)})
    assert res.estimate == pytest.approx(-1 / 360) and res.passed
    assert res.high == 0.0 and res.low < -0.005 and res.confidence == "inconclusive"


def test_bootstrap_is_seeded_paired_and_consistent(preds: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    ref, cand, labels = preds
    a, b = cand.argmax(1) == labels, ref.argmax(1) == labels
    first, again = paired_bootstrap_ci(a, b, seed=3), paired_bootstrap_ci(a, b, seed=3)
    assert first == again and paired_bootstrap_ci(a, b, seed=4) != first
    # the vectorized mean path and the generic per-resample path draw the same indices
    assert paired_bootstrap_ci(a, b, lambda v: float(np.mean(v)), seed=3) == first
    # by hand: the same indices for both sides
    rng = np.random.default_rng(3)
    diffs = [a[i].mean() - b[i].mean() for i in (rng.integers(0, 360, 360) for _ in range(1000))]
    assert (first.difference.low, first.difference.high) == pytest.approx(tuple(np.percentile(diffs, [2.5, 97.5])))
    assert first.difference.low <= first.difference.estimate <= first.difference.high
    narrow = paired_bootstrap_ci(a, b, seed=3, level=0.5)
    assert first.difference.low < narrow.difference.low < narrow.difference.high < first.difference.high
    with pytest.raises(FeedError):
        paired_bootstrap_ci(a, b[:-1])
    with pytest.raises(InvalidArgumentError):
        paired_bootstrap_ci(a, b, level=1.0)


def test_agreement_without_labels(preds: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    ref, cand, _ = preds
    m = agreement_metrics(cand, ref)
    same = int(np.sum(cand.argmax(1) == ref.argmax(1)))
    assert m.samples == 360 and m.disagreements == 360 - same and m.top1_agreement == pytest.approx(same / 360)
    assert m.topk_agreement[5] == pytest.approx(top_k_accuracy_score(ref.argmax(1), cand, k=5, labels=np.arange(10)))
    assert agreement_metrics(ref, ref).to_dict() == {"samples": 360, "top1_agreement": 1.0, "disagreements": 0,
                                                      "top5_agreement": 1.0}
    assert agreement_metrics(cand.argmax(1), ref).topk_agreement == {}  # labels only: no top-k
    c = agreement_sample_metrics(cand, ref)
    [res] = evaluate_gates([parse_gate("top1_agreement>=abs:0.99")], c, reference_agreement(c))
    assert not res.passed and res.candidate_value == pytest.approx(same / 360)
    with pytest.raises(UnknownNameError, match="did you mean 'top1_agreement'"):
        evaluate_gates([parse_gate("top1_agreemnt>=0")], c, reference_agreement(c))
