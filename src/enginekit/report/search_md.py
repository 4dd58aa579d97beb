"""The configuration search in reports: the per-batch summary (best latency / throughput, plain torch.compile,
best plain configuration, floor) and every row, for report.md and the CLI."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from enginekit.report.tables import table

ROW_HEADERS = ("batch", "configuration", "role", "status", "median ms", "p99 ms", "items/s", "vs plain compile",
               "vs eager fp32", "max abs err", "atol")
SUMMARY_HEADERS = ("batch", "precision", "plain torch.compile ms", "best plain configuration ms", "enginekit best ms",
                   "best / plain", "best vs best plain", "floor ms", "best (latency)", "best (throughput)")


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else a / b


def speed_cell(row: Mapping[str, Any], key: str) -> str:
    """A speed-up, never shown bare when the row's timing is unstable."""
    value = row.get(key)
    if value is None:
        return "–"
    text = f"{value:.3g}×"
    return f"{text} (unstable)" if row.get("unstable") else text


def row_cells(r: Mapping[str, Any]) -> list[Any]:
    t = r.get("timing") or {}
    return [r["batch"], r["candidate"], r["role"], r["status"], t.get("median_ms"), t.get("p99_ms"),
            t.get("items_per_s"), speed_cell(r, "speedup_vs_plain"), speed_cell(r, "speedup_vs_eager"),
            r.get("max_abs_err"), r.get("atol")]


def summary_cells(s: Mapping[str, Any]) -> list[Any]:
    best, plain, flags = s.get("best_latency_ms"), s.get("plain_compile_ms"), s.get("best_plain_ms")
    ratio = _ratio(plain, best)
    vs_flags = _ratio(flags, best)
    mark = " (unstable)" if s.get("unstable") else ""
    return [s["batch"], s.get("precision"), plain, flags, best, None if ratio is None else f"{ratio:.3g}×{mark}",
            None if vs_flags is None else f"{vs_flags:.3g}×{mark}", s.get("floor_ms"), s.get("best_latency"),
            s.get("best_throughput")]


def unstable_notes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return [f"{r['candidate']} at batch {r['batch']}: {r['unstable']}" for r in rows if r.get("unstable")]


def render_search(search: Mapping[str, Any] | None) -> str:
    if not search:
        return ""
    where = search["device"] + (f" ({search['gpu']})" if search.get("gpu") else "")
    peak = search.get("peak_tflops")
    out = (f"## Configuration search ({where})\n\nEvery configuration ran the same feed at each batch size, was "
           "compared with eager FP32 PyTorch (the tolerance rule of its precision) and timed with the protocol of "
           "`enginekit bench` (data resident on the device; CUDA-event medians on GPU). Only passing rows may be "
           "best. \"plain torch.compile\" is `torch.compile` of the model cast to the best row's precision (default "
           "mode, no freezing); the best plain configuration is the fastest passing row that flags reach.")
    if peak:
        out += f" The floor is the model's FLOPs over the measured fp16 GEMM peak ({peak:.0f} TFLOP/s)."
    out += "\n\n" + table(SUMMARY_HEADERS, [summary_cells(s) for s in search["best"]])
    out += "\n" + table(ROW_HEADERS, [row_cells(r) for r in search["rows"]])
    notes = unstable_notes(search["rows"]) + [f"{r['candidate']} at batch {r['batch']}: {r['status']} — {r['reason']}"
                                              for r in search["rows"] if r.get("reason")]
    return out + ("\n" + "".join(f"- {n}\n" for n in notes) if notes else "") + "\n"

