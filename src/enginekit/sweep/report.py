"""The sweep's report: OUT/sweep.json, sweep.md and sweep.html (self-contained, every text escaped).

A summary matrix (model x configuration: the verdict and the best engine with its median latency), then one table
per model with every candidate row of every configuration.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enginekit.fileutil import atomic_write_text
from enginekit.report.html import escape_cell as _e
from enginekit.report.html import page
from enginekit.report.html import status_class as _status_class
from enginekit.report.tables import fmt, table

if TYPE_CHECKING:
    from enginekit.sweep.spec import SweepSpec

__all__ = ["sweep_document", "write_report"]

_MODEL_HEADERS = ("configuration", "candidate", "status", "median ms", "p90 ms", "speed-up", "metrics", "reason")
_ICON = {"passed": "✅", "failed": "❌", "error": "💥", "pending": "…"}


def sweep_document(spec: SweepSpec, results: Sequence[dict[str, Any]], out: Path, mode: str) -> dict[str, Any]:
    """sweep.json: counts, the matrix and every job's summary (jobs not finished yet are ``pending``)."""
    by_id = {r["id"]: r for r in results}
    jobs = [by_id.get(j.id) or {"id": j.id, "model": j.model_name, "config": j.config, "status": "pending",
                                "best": None, "rows": [], "reason": ""} for j in spec.jobs]
    matrix: dict[str, dict[str, dict[str, Any]]] = {}
    for j in jobs:
        matrix.setdefault(j["model"], {})[j["config"]] = {"id": j["id"], "status": j["status"], "best": j.get("best")}
    counts = {s: sum(1 for j in jobs if j["status"] == s) for s in ("passed", "failed", "error", "pending")}
    return {"kind": "sweep", "sweep_file": str(spec.path), "out": str(out), "mode": mode, "jobs_total": len(jobs),
            "counts": counts, "passed": counts["passed"] == len(jobs), "models": spec.models,
            "configs": spec.configs, "matrix": matrix, "jobs": jobs}


def write_report(spec: SweepSpec, results: Sequence[dict[str, Any]], out: Path, mode: str) -> dict[str, Any]:
    """Write OUT/sweep.json, sweep.md and sweep.html (atomically); returns the document."""
    doc = sweep_document(spec, results, out, mode)
    atomic_write_text(out / "sweep.json", json.dumps(doc, indent=1, default=str) + "\n")
    atomic_write_text(out / "sweep.md", render_markdown(doc))
    atomic_write_text(out / "sweep.html", render_html(doc))
    return doc


def _cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "–"
    best = entry.get("best")
    text = f"{_ICON.get(entry['status'], '')} {entry['status']}"
    if best:
        text += f" · best {best['label']} {fmt(best.get('median_ms'))} ms"
    return text


def _metrics(row: dict[str, Any]) -> str:
    return ", ".join(f"{k} {fmt(v)}" for k, v in (row.get("metrics") or {}).items())


def _model_rows(doc: dict[str, Any], model: str) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for j in doc["jobs"]:
        if j["model"] != model:
            continue
        if not j.get("rows"):
            rows.append([j["config"], "–", j["status"], None, None, None, "", j.get("reason") or ""])
        for r in j.get("rows") or []:
            label = r["label"] + (" (reference)" if r.get("reference") else "")
            rows.append([j["config"], label, r["status"], r.get("median_ms"), r.get("p90_ms"), r.get("speedup"),
                         _metrics(r), r.get("reason") or ""])
    return rows


def render_markdown(doc: dict[str, Any]) -> str:
    c = doc["counts"]
    parts = [f"# enginekit sweep: {doc['sweep_file']}\n",
             f"{doc['jobs_total']} jobs ({doc['mode']}): {c['passed']} passed, {c['failed']} failed, "
             f"{c['error']} errors, {c['pending']} pending.\n", "## Summary\n"]
    parts.append(table(["model", *doc["configs"]],
                       [[m, *(_cell(doc["matrix"].get(m, {}).get(cfg)) for cfg in doc["configs"])]
                        for m in doc["models"]]))
    for m in doc["models"]:
        parts.append(f"\n## {m}\n")
        parts.append(table(_MODEL_HEADERS, _model_rows(doc, m)))
    errors = [j for j in doc["jobs"] if j["status"] == "error"]
    if errors:
        parts.append("\n## Errors\n")
        parts += [f"- `{j['id']}`: {j.get('reason') or ''}\n" for j in errors]
    return "\n".join(parts)


def render_html(doc: dict[str, Any]) -> str:
    c = doc["counts"]
    body = [f"<h1>enginekit sweep: {html.escape(doc['sweep_file'])}</h1>",
            f"<p>{doc['jobs_total']} jobs ({html.escape(doc['mode'])}): <span class=\"good\">{c['passed']} passed"
            f"</span>, <span class=\"bad\">{c['failed']} failed</span>, <span class=\"bad\">{c['error']} errors"
            f"</span>, {c['pending']} pending.</p>", "<h2>Summary</h2>", "<table><tr><th>model</th>"]
    body += [f"<th>{html.escape(cfg)}</th>" for cfg in doc["configs"]]
    body.append("</tr>")
    for m in doc["models"]:
        cells = []
        for cfg in doc["configs"]:
            entry = doc["matrix"].get(m, {}).get(cfg)
            if entry is None:
                cells.append("<td class=\"muted\">–</td>")
                continue
            best = entry.get("best")
            extra = (f"<br><span class=\"muted\">best {html.escape(str(best['label']))} "
                     f"{_e(best.get('median_ms'))} ms</span>") if best else ""
            cells.append(f"<td><span class=\"{_status_class(entry['status'])}\">{html.escape(entry['status'])}"
                         f"</span>{extra}</td>")
        body.append(f"<tr><th>{html.escape(m)}</th>{''.join(cells)}</tr>")
    body.append("</table>")
    for m in doc["models"]:
        body.append(f"<h2>{html.escape(m)}</h2><table><tr>"
                    + "".join(f"<th>{html.escape(h)}</th>" for h in _MODEL_HEADERS) + "</tr>")
        for row in _model_rows(doc, m):
            tds = [f"<td>{_e(row[0])}</td>", f"<td>{_e(row[1])}</td>",
                   f"<td class=\"{_status_class(str(row[2]))}\">{_e(row[2])}</td>",
                   *(f"<td class=\"num\">{_e(v)}</td>" for v in row[3:6]),
                   f"<td>{_e(row[6])}</td>", f"<td>{_e(row[7])}</td>"]
            body.append(f"<tr>{''.join(tds)}</tr>")
        body.append("</table>")
    return page(f"enginekit sweep: {doc['sweep_file']}", "\n".join(body) + "\n")
