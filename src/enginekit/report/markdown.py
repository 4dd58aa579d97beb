"""Markdown tables a person reads, rendered from the same dicts that go into report.json."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from enginekit.report.metric_columns import interval_note, metric_cell, metric_columns
from enginekit.report.search_md import render_search
from enginekit.report.tables import fmt as fmt
from enginekit.report.tables import table as table


def speedup_cell(r: Mapping[str, Any], results: Sequence[Mapping[str, Any]], digits: int = 4) -> str:
    """An `optimize` row's speed-up, never shown bare when it is unstable: "3.1 (unstable: CV 117 %)", the CV being
    the larger of this row's and the reference's unstable ones (an unstable reference makes every speed-up so)."""
    speedup = r.get("speedup")
    if speedup is None or not r.get("unstable"):
        return fmt(speedup, digits)
    ref = next((x for x in results if x.get("reference")), None)
    cvs = [float(t["cv"]) for t in ((r.get("timing") or {}), ((ref or {}).get("timing") or {}))
           if t.get("unstable") and t.get("cv") is not None]
    cv = f" CV {max(cvs) * 100:.0f} %" if cvs else ""
    return f"{fmt(speedup, digits)} (unstable:{cv})"


def timing_warnings(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """"backend: warning" for every timing warning of an `optimize` row (unstable runs, unstable reference)."""
    return [f"{r['backend']}: {w}" for r in results for w in r.get("timing_warnings") or ()]


def output_table(results: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for r in results:
        for name, o in r.get("outputs", {}).items():
            rows.append([r["backend"], name, o["passed"], o.get("max_abs_err"), o.get("max_rel_err"),
                         o.get("p99_abs_err"), o.get("cosine"), o.get("nan_count"), o.get("inf_count"),
                         f"{fmt(o.get('atol'))} / {fmt(o.get('rtol'))}", o.get("reason", "")])
    if not rows:
        return "_No outputs were compared._\n"
    return table(["backend", "output", "passed", "max abs", "max rel", "p99 abs", "cosine", "NaN", "Inf",
                  "atol / rtol", "note"], rows)


def status_table(results: Sequence[Mapping[str, Any]]) -> str:
    return table(["backend", "status", "reference", "reason"],
                 [[r["backend"], r["status"], r["reference"], r["reason"]] for r in results])


def render_run(doc: Mapping[str, Any]) -> str:
    inputs = ", ".join(f"{k} {v['shape']} {v['dtype']}" for k, v in doc["inputs"].items())
    return (
        f"# enginekit run: {doc['model']}\n\n"
        f"**Result: {'PASSED' if doc['passed'] else 'FAILED'}** — reference `{doc['reference']}`; inputs {inputs}.\n\n"
        "## Backends\n\n" + status_table(doc["results"]) + "\n## Outputs against the reference\n\n"
        + output_table(doc["results"])
        + "\nAn element fails when |candidate − reference| > atol **and** "
        "|candidate − reference| / |reference| > rtol.\n"
    )


def _stages(stages: Mapping[str, Any]) -> str:
    """Export verification and prepare passes, when the run had them."""
    text = ""
    exp = stages.get("export")
    if exp:
        text += (f"## Export\n\n`{exp['source']}` → `{exp['output']}` ({exp['framework']}, {exp['exporter']} exporter, "
                 f"opset {exp['opset_produced']}).\n\n")
        text += "".join(f"- {n}\n" for n in exp.get("notes", [])) + ("\n" if exp.get("notes") else "")
        rows = [[c["label"], c["shapes"], name, o["passed"], o.get("max_abs_err"), o.get("max_rel_err")]
                for c in exp.get("verification", []) for name, o in c["outputs"].items()]
        if rows:
            text += table(["case", "shapes", "output", "passed", "max abs", "max rel"], rows) + "\n"
    prep = stages.get("prepare")
    if prep:
        text += "## Prepare\n\n" + table(
            ["pass", "status", "nodes before", "nodes after", "what changed", "reason"],
            [[p["name"], p["status"], p["nodes_before"], p["nodes_after"], p.get("summary", ""), p.get("reason", "")]
             for p in prep.get("passes", [])]) + "\n"
    return text


def render_optimize(doc: Mapping[str, Any]) -> str:
    rows = []
    metrics = metric_columns(doc["results"])
    for r in doc["results"]:
        t = r.get("timing") or {}
        worst = max((o.get("max_abs_err") for o in r.get("outputs", {}).values()
                     if isinstance(o.get("max_abs_err"), float)), default=None)
        rows.append([r["backend"], r["precision"], r["status"], t.get("median_ms"), t.get("p90_ms"),
                     speedup_cell(r, doc["results"]), *(metric_cell(r, c.name) for c in metrics), worst])
    steps = table(["step", "status", "duration s", "reason"],
                  [[s["name"], s["status"], s["duration_s"], s["reason"]] for s in doc["steps"]])
    info = doc.get("model_info") or {}
    head = f"# enginekit optimize: {doc['model']}\n\n**Result: {'PASSED' if doc['passed'] else 'FAILED'}**"
    head += f" — reference `{doc['reference']}`"
    if doc.get("dataset"):
        head += f"; dataset `{doc['dataset']}`"
    head += ".\n\n"
    if info:
        head += (f"Model: {info.get('node_count')} nodes, {info.get('parameter_count')} parameters, "
                 f"opset {info.get('max_opset')}.\n\n")
    summary = table(["backend", "precision", "status", "median ms", "p90 ms", "speed-up",
                     *(c.header for c in metrics), "max abs err"], rows)
    note = interval_note(metrics)
    notes = [f"- `{r['backend']}`: {r['status']} — {r['reason']}" for r in doc["results"] if r["reason"]]
    return (
        head + _stages(doc.get("stages") or {}) + "## Backends\n\n" + summary
        + "\nLatency: host time per call on the comparison batch, measured with the protocol of `enginekit bench` "
        "(warm-up by time, then at least N runs and T seconds; median and p90); speed-up against the reference. "
        "A speed-up whose timing (or the reference's) varies too much is marked unstable."
        + (f" {note}" if note else "") + "\n\n"
        + "".join(f"- **Timing warning** {w}\n" for w in timing_warnings(doc["results"]))
        + ("\n" if timing_warnings(doc["results"]) else "")
        + ("## Notes\n\n" + "\n".join(notes) + "\n\n" if notes else "")
        + "## Outputs against the reference\n\n" + output_table(doc["results"])
        + task_metrics_section(doc["results"])
        + "\n" + render_search(doc.get("search"))
        + "## Steps\n\n" + steps
    )


def task_metrics_section(results: Sequence[Mapping[str, Any]]) -> str:
    """Each candidate's task metrics with the 95 % interval of its difference from the reference, and its gates."""
    rows, gates = [], []
    for r in results:
        m = r.get("metrics") or {}
        for name, iv in (m.get("intervals") or {}).items():
            rows.append([r["backend"], name, m.get(name), f"{iv['difference']:+.4g}",
                         f"{iv['low']:+.4g} .. {iv['high']:+.4g}"])
        for g in m.get("gates") or []:
            gates.append([r["backend"], g.get("gate"), "passed" if g.get("passed") else "FAILED", g.get("estimate"),
                          f"{g['ci_low']:+.4g} .. {g['ci_high']:+.4g}", g.get("threshold"),
                          g.get("confidence")])
    if not rows and not gates:
        return ""
    out = ("## Task metrics against the reference\n\nDifference from the reference on the same samples, with its 95 % "
           "paired bootstrap interval (1000 resamples).\n\n")
    out += table(["backend", "metric", "value", "difference", "95 % interval"], rows) if rows else ""
    if gates:
        out += ("\nGates (judged on the point estimate; the interval says whether the data are sure of it: "
                "confidence passed / failed / inconclusive):\n\n")
        out += table(["backend", "gate", "result", "estimate", "95 % interval", "threshold", "confidence"], gates)
    return out + "\n"
