"""Sequence (OCR / CTC) metrics: greedy CTC decoding, exact-match accuracy, edit distances by rapidfuzz.

A CTC recogniser (PaddleOCR's PP-OCR, CRNN) outputs per-frame class scores [N, T, C]; greedy decoding takes the
best class of every frame, collapses repeats and drops the blank (``ctc_greedy_decode``). Sequences are lists
of class indices; :func:`sequences_to_text` maps them through a character table (PaddleOCR models hold theirs in
the ONNX metadata ``character``: see :func:`ctc_character_table`).

Per-sample metrics (:func:`sequence_sample_metrics`), by gate metric name:

* ``sequence_accuracy``: 1 when the predicted sequence equals the target (higher is better);
* ``normalized_edit_distance``: Levenshtein distance / max(len(pred), len(target)), 0 for two empty sequences,
  mean over samples (lower is better, in [0, 1]);
* ``char_error_rate``: total edits / total target length over the samples (the corpus CER, lower is better; can
  exceed 1). Its per-sample rows are ``[edits, target length]`` and its function sums them, so the bootstrap
  resamples whole samples.

Every Levenshtein distance (insertions, deletions and substitutions, each costing 1) is rapidfuzz's
``rapidfuzz.distance.Levenshtein.distance``, of strings or of sequences of class indices alike; the sums and means
above are numpy's over those distances.

Without labels, the targets are the reference's decoded sequences (agreement); the reference's own side is
``sequence_sample_metrics(ref, ref)`` (accuracy 1, distances 0 on every sample).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from enginekit.deps import require
from enginekit.errors import FeedError
from enginekit.eval.bootstrap import SampleMetric

IndexSequence = list[int]


def ctc_greedy_decode(probs: np.ndarray, blank: int = 0) -> list[IndexSequence]:
    """Greedy (best-path) CTC decoding of scores [N, T, C] (probabilities, log-probabilities or logits: only the
    argmax matters) or of best-class indices [N, T]: collapse repeated classes, then drop ``blank``."""
    arr = np.asarray(probs)
    if arr.ndim == 3:
        if not 0 <= blank < arr.shape[2]:
            raise FeedError(f"CTC blank index {blank} is outside the {arr.shape[2]} classes of the outputs.")
        best = arr.argmax(axis=2)
    elif arr.ndim == 2 and np.issubdtype(arr.dtype, np.integer):
        best = arr
    else:
        raise FeedError(f"CTC decoding needs scores [N, T, C] or class indices [N, T], got shape {list(arr.shape)} "
                        f"of {arr.dtype}.")
    out: list[IndexSequence] = []
    for row in best:
        if row.size == 0:
            out.append([])
            continue
        keep = np.ones(row.shape[0], dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        kept = row[keep]
        out.append([int(v) for v in kept[kept != blank]])
    return out


def ctc_character_table(characters: Sequence[str], *, blank_first: bool = True, space_last: bool = True) -> list[str]:
    """PaddleOCR's decoding table from its character list (the ONNX metadata ``character`` split into lines, or
    the lines of a keys file): ``blank`` at index 0 and a space appended at the end, as PaddleOCR's
    ``CTCLabelDecode`` builds it (``use_space_char``)."""
    table = list(characters)
    if space_last:
        table.append(" ")
    if blank_first:
        table.insert(0, "")
    return table


def ctc_character_table_from_metadata(metadata: Mapping[str, str], key: str = "character") -> list[str] | None:
    """:func:`ctc_character_table` of a model's custom metadata (``onnx`` metadata_props or onnxruntime's
    ``custom_metadata_map``), None when the model holds no ``key``."""
    text = metadata.get(key)
    if text is None:
        return None
    return ctc_character_table(text.splitlines())


def sequences_to_text(sequences: Sequence[Sequence[int]], table: Sequence[str]) -> list[str]:
    """Decoded index sequences as text through ``table`` (index i is ``table[i]``)."""
    out = []
    for seq in sequences:
        bad = [i for i in seq if not 0 <= i < len(table)]
        if bad:
            raise FeedError(f"Class index {bad[0]} is outside the character table of {len(table)} entries.")
        out.append("".join(table[i] for i in seq))
    return out


def _levenshtein() -> Callable[..., int]:
    """``rapidfuzz.distance.Levenshtein.distance``, or MissingDependencyError naming ``enginekit[metrics]``."""
    require("rapidfuzz", purpose="edit distances of sequence (CTC) outputs")
    from rapidfuzz.distance import Levenshtein

    distance: Callable[..., int] = Levenshtein.distance
    return distance


def edit_distance(a: Sequence[object], b: Sequence[object]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions, each costing 1), by rapidfuzz."""
    return int(_levenshtein()(a, b))


def _char_error_rate(rows: np.ndarray) -> float:
    total = float(rows[:, 1].sum())
    edits = float(rows[:, 0].sum())
    if total == 0:
        return 0.0 if edits == 0 else float("inf")
    return edits / total


def sequence_sample_metrics(
    pred_sequences: Sequence[Sequence[object]], target_sequences: Sequence[Sequence[object]]
) -> dict[str, SampleMetric]:
    """Per-sample sequence metrics (module doc) of predictions against targets (index lists or strings)."""
    if len(pred_sequences) != len(target_sequences):
        raise FeedError(f"{len(pred_sequences)} predicted sequences for {len(target_sequences)} targets; the dataset "
                        "and outputs disagree.")
    if not pred_sequences:
        raise FeedError("The dataset has no samples.")
    distance = _levenshtein()
    exact = np.empty(len(pred_sequences), dtype=bool)
    normalized = np.empty(len(pred_sequences), dtype=np.float64)
    rows = np.empty((len(pred_sequences), 2), dtype=np.float64)
    for i, (pred, target) in enumerate(zip(pred_sequences, target_sequences, strict=True)):
        p, t = list(pred), list(target)
        if p and t and isinstance(p[0], str) != isinstance(t[0], str):
            # rapidfuzz would compare the index 97 with "a" (a one-character string) by its code point: equal
            raise FeedError(f"Sample {i}: the prediction {p[:5]!r} and the target {t[:5]!r} hold different kinds "
                            "of elements; compare text with text and class indices with class indices.")
        edits = int(distance(p, t))
        exact[i] = p == t
        longest = max(len(p), len(t))
        normalized[i] = edits / longest if longest else 0.0
        rows[i] = (edits, len(t))
    return {
        "sequence_accuracy": SampleMetric(exact),
        "normalized_edit_distance": SampleMetric(normalized),
        "char_error_rate": SampleMetric(rows, _char_error_rate),
    }


def ctc_sample_metrics(
    probs: np.ndarray, targets: np.ndarray | Sequence[Sequence[int]], blank: int = 0
) -> dict[str, SampleMetric]:
    """:func:`sequence_sample_metrics` of greedily decoded scores [N, T, C]. ``targets`` are index sequences,
    an integer array [N, L] padded with negative values (a dataset's ``labels``; the padding is dropped), or the
    reference's scores [N, T, C] (decoded the same way: agreement)."""
    preds = ctc_greedy_decode(probs, blank)
    target_seqs: Sequence[Sequence[int]]
    if isinstance(targets, np.ndarray) and targets.ndim == 3:
        target_seqs = ctc_greedy_decode(targets, blank)
    elif isinstance(targets, np.ndarray):
        if targets.ndim != 2 or not np.issubdtype(targets.dtype, np.integer):
            raise FeedError(f"CTC targets must be integer sequences [N, L] padded with -1, got shape "
                            f"{list(targets.shape)} of {targets.dtype}.")
        target_seqs = [[int(v) for v in row if v >= 0] for row in targets]
    else:
        target_seqs = targets
    return sequence_sample_metrics(preds, target_seqs)
