"""Precision debugger on the planted-culprit models of tests/debug: plan size vs the naive plan, errors, time.

Run: .venv/bin/python benchmarks/precision_debug.py   (CPU only; prints a markdown table)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "debug"))

import fp16_models  # noqa: E402
import int8_models  # noqa: E402

from enginekit.debug.fix import find_fp32_islands, range_analysis_initial  # noqa: E402

CASES = [("fp16", b) for b in (fp16_models.large_activation_before_norm, fp16_models.attention_logits_overflow,
                               fp16_models.detection_head_exp, fp16_models.dfl_detection_head,
                               fp16_models.healthy_mlp)]
CASES += [("int8", b) for b in (int8_models.activation_outlier_channel, int8_models.weight_outlier_per_channel)]


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.3g}"


def main() -> None:
    print("| model | target | nodes | all low: max abs err / NaN+Inf | plan | naive | with plan: max abs err "
          "| evaluations | time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for precision, build in CASES:
        model, feed, _ = build()
        start = time.perf_counter()
        ranked = range_analysis_initial(model, [feed], precision)
        extra = {"calibration": int8_models.calibration()} if precision == "int8" else {}
        r = find_fp32_islands(model, [feed], precision, initial=[n for n, _ in ranked],
                              initial_reasons=dict(ranked), **extra)  # type: ignore[arg-type]
        took = time.perf_counter() - start
        print(f"| {build.__name__} | {precision} | {len(model.graph.node)} | {_fmt(r.before.max_abs_err)} / "
              f"{r.before.nonfinite} | {r.kept} ({', '.join(r.plan.node_names())}) | {r.baseline_nodes or '–'} | "
              f"{_fmt(r.after.max_abs_err)} | {r.evaluations} | {took:.1f} s |")


if __name__ == "__main__":
    main()
