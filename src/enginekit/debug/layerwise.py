"""Layerwise diff: where a low-precision model first departs from its FP32 reference.

Both models run with their intermediates observed (chunked). :func:`convert_precision` keeps the original
names of node outputs (a value that must stay float32 under its name, e.g. a graph output, is Cast back from
``<name>_fp16``), so tensors are matched by name; the candidate's are cast to float32 and compared in the
FP32 model's topological order with precision-aware tolerances (:func:`compare.per_precision.settings_for_precision`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from enginekit.compare import CompareSettings, compare_arrays, json_safe
from enginekit.debug.execute import Executor, Reference
from enginekit.debug.observe import float_values, iter_chunks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerRow:
    tensor: str
    node: str
    op_type: str
    passed: bool
    max_abs_err: float
    max_rel_err: float
    cosine: float
    nan_candidate: int
    inf_candidate: int
    atol: float
    rtol: float
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = json_safe(dict(self.__dict__))
        return result


@dataclass(frozen=True)
class LayerwiseResult:
    precision: str
    rows: list[LayerRow] = field(default_factory=list)  # FP32 topological order
    first_bad: LayerRow | None = None
    skipped: list[str] = field(default_factory=list)  # FP32 tensors without a counterpart in the candidate

    @property
    def passed(self) -> bool:
        return self.first_bad is None

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "passed": self.passed,
                "first_bad": self.first_bad.to_dict() if self.first_bad else None,
                "rows": [r.to_dict() for r in self.rows], "skipped": list(self.skipped)}


def layerwise_diff(model: onnx.ModelProto, feed: Mapping[str, np.ndarray], *, precision: str = "fp16",
                   candidate: onnx.ModelProto | None = None, plan: Any = None,
                   settings: CompareSettings | None = None, chunk_size: int = 64,
                   executor: Executor | None = None, reference: Reference | None = None) -> LayerwiseResult:
    """Compare every float tensor of ``model`` (FP32) with the same-named tensor of ``candidate``.

    ``candidate`` defaults to ``convert_precision(model, precision, plan).model`` (int8: give the Q/DQ
    model). ``executor`` runs the candidate (default: the reference evaluator for fp16/bf16, which rounds every
value as a GPU engine does; onnxruntime, graph optimizations off, for int8);
    ``reference`` the reference (default: FP32 in onnxruntime; its values are matched by name). Tolerances:
    ``settings`` (default CompareSettings()) made precision-aware per tensor, scaled by that tensor's
    reference magnitude.
    """
    from enginekit.compare.per_precision import settings_for_precision

    if candidate is None:
        from enginekit.graph.precision import convert_precision

        if precision == "int8":
            from enginekit.errors import InvalidArgumentError

            raise InvalidArgumentError("layerwise_diff for int8 needs the quantized candidate model.")
        candidate = convert_precision(model, precision, plan).model
    base = settings or CompareSettings()
    cand_values = {v.name: v for v in float_values(candidate)}
    ref_values = float_values(model)
    common = [v for v in ref_values if v.name in cand_values]
    skipped = [v.name for v in ref_values if v.name not in cand_values]
    rows: list[LayerRow] = []
    from enginekit.debug.execute import default_backend

    observing = Executor(executor.backend if executor is not None else default_backend(precision), observing=True)
    cand_chunks = iter_chunks(candidate, feed, [cand_values[v.name] for v in common], chunk_size, observing)
    ref_model, ref_run = (reference.model, reference.executor) if reference is not None else (model, None)
    ref_chunks = iter_chunks(ref_model, feed, common, chunk_size, ref_run)
    for ref_pairs, cand_pairs in zip(ref_chunks, cand_chunks, strict=True):
        for (value, ref_raw), (_, cand) in zip(ref_pairs, cand_pairs, strict=True):
            ref = np.asarray(ref_raw).astype(np.float32) if ref_raw.dtype == np.float64 else ref_raw
            cand32 = np.asarray(cand).astype(np.float32)
            tol = settings_for_precision(base, precision, {value.name: ref})
            c = compare_arrays(value.name, ref, cand32, tol)
            rows.append(LayerRow(value.name, value.node, value.op_type, c.passed, c.max_abs_err, c.max_rel_err,
                                 c.cosine, c.nan_count_cand, c.inf_count_cand, c.atol, c.rtol, c.reason))
        del ref_pairs, cand_pairs
    first_bad = next((r for r in rows if not r.passed), None)
    if first_bad:
        log.info("first tensor beyond tolerance: %s (node %s, %s)", first_bad.tensor, first_bad.node, first_bad.reason)
    return LayerwiseResult(precision, rows, first_bad, skipped)


def plot_error_growth(result: LayerwiseResult, path: str | Path) -> Path:
    """Max abs / rel error per tensor in topological order (log scale), first bad tensor marked; PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * len(result.rows)), 4.0))
    xs = np.arange(len(result.rows))
    floor = 1e-12

    def series(values: list[float]) -> np.ndarray:
        a = np.array(values, dtype=np.float64)
        return np.where(np.isfinite(a), np.maximum(a, floor), np.nan)

    ax.semilogy(xs, series([r.max_abs_err for r in result.rows]), marker="o", label="max abs err")
    ax.semilogy(xs, series([r.max_rel_err for r in result.rows]), marker=".", label="max rel err")
    for i, r in enumerate(result.rows):
        if r.nan_candidate or r.inf_candidate:
            ax.axvspan(i - 0.5, i + 0.5, color="red", alpha=0.15, lw=0)
    if result.first_bad is not None:
        i = result.rows.index(result.first_bad)
        ax.axvline(i, color="red", ls="--", label=f"first bad: {result.first_bad.node}")
    ax.set_xticks(xs, [r.node for r in result.rows], rotation=90, fontsize=6)
    ax.set_ylabel("error")
    ax.set_title(f"{result.precision} error growth (shaded: NaN/Inf in candidate)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
