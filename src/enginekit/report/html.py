"""report.html: one self-contained page rendered from the dict that goes into report.json.

No network: inline CSS, inline SVG plots, no scripts, no external fonts or images (a Content-Security-Policy
meta tag makes the browser refuse any that slipped in). Every piece of text from the doc is escaped. Sections
appear when the doc carries their data: the candidates (verdict, errors against atol/rtol, latency median with
p90 and CV, speed-up with its unstable warning, task metrics), the best engines (fastest passing candidate; the
configuration search's best per batch), the precision debugger (what was kept in FP32 and, when the doc carries a
layerwise diff, the error-growth plot along the graph), export/prepare, the steps, and the environment.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from enginekit.report.markdown import speedup_cell, timing_warnings
from enginekit.report.metric_columns import (
    MetricColumn,
    best_row,
    interval_note,
    interval_text,
    metric_cell,
    metric_columns,
    metric_number,
)
from enginekit.report.search_md import ROW_HEADERS, SUMMARY_HEADERS, row_cells, summary_cells, unstable_notes
from enginekit.report.tables import fmt

__all__ = ["error_growth_svg", "escape_cell", "page", "render_html", "status_class"]

MAX_PLOT_POINTS = 600  # a layerwise plot of more tensors shows each bucket's worst one (the envelope)
TOP_TENSORS = 20  # rows of the worst-tensors table under the plot

_GOOD = {"ok", "OK", "passed", "applied", "PASSED"}
_BAD = {"failed", "error", "FAIL", "rejected", "FAILED"}
_SKIP = {"skipped", "SKIPPED", "inconclusive", "INCONCLUSIVE"}

_CSS = """
:root{--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--bg:#fff;--alt:#f6f8fa;--good:#1a7f37;--bad:#cf222e;
--skip:#9a6700;--accent:#0969da}
*{box-sizing:border-box}
body{margin:0 auto;max-width:1400px;padding:16px 24px 48px;color:var(--fg);background:var(--bg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
h1{font-size:22px;margin:8px 0 4px;word-break:break-all}h2{font-size:18px;margin:28px 0 8px;
border-bottom:1px solid var(--line);padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.scroll{overflow-x:auto}table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid var(--line);padding:3px 7px;text-align:left;vertical-align:top}
th{background:var(--alt);position:sticky;top:0}tr:nth-child(even) td{background:#fbfcfd}
td.reason{min-width:280px}pre{white-space:pre-wrap;word-break:break-all}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.good{color:var(--good);font-weight:600}.bad{color:var(--bad);font-weight:600}.skip{color:var(--skip);font-weight:600}
.warn{color:var(--skip)}.muted{color:var(--muted)}.small{font-size:12px}
.verdict{display:inline-block;padding:4px 12px;border-radius:6px;font-size:16px;font-weight:700;color:#fff}
.verdict.good{background:var(--good);color:#fff}.verdict.bad{background:var(--bad);color:#fff}
.verdict.skip{background:var(--skip);color:#fff}
.tag{display:inline-block;border:1px solid var(--line);border-radius:10px;padding:0 6px;font-size:11px;
color:var(--muted);margin-left:4px}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid var(--line);border-radius:8px;padding:10px 14px;
min-width:260px;max-width:640px}.card .big{font-size:18px;font-weight:700;word-break:break-all}
ul{margin:4px 0 8px;padding-left:22px}svg{display:block;max-width:100%;height:auto}
svg text{font:11px system-ui,sans-serif;fill:var(--fg)}
"""


# --- small helpers ------------------------------------------------------------------------------


def _e(value: Any, digits: int = 4) -> str:
    """A value as escaped text (numbers formatted as in report.md)."""
    return html.escape(fmt(value, digits), quote=True)


def _num(value: Any) -> float | None:
    """A number from the doc: ints, floats and json_safe's "nan"/"inf"/"-inf" strings; else None."""
    return metric_number(value)


def _status_class(word: Any) -> str:
    text = str(word)
    return "good" if text in _GOOD else "bad" if text in _BAD else "skip" if text in _SKIP else ""


def _status(word: Any) -> str:
    cls = _status_class(word)
    return f'<span class="{cls}">{_e(word)}</span>' if cls else _e(word)


def _status_td(word: Any) -> str:
    """A status cell, coloured by its word."""
    cls = _status_class(word)
    return f'<td class="{cls}">{_e(word)}</td>' if cls else f"<td>{_e(word)}</td>"


def _td(value: Any, *, cls: str = "", title: str = "") -> str:
    """A cell of text (escaped); numbers are right-aligned."""
    classes = " ".join(c for c in (("num" if _num(value) is not None else ""), cls) if c)
    attrs = (f' class="{classes}"' if classes else "") + (f' title="{html.escape(title, quote=True)}"' if title else "")
    return f"<td{attrs}>{_e(value)}</td>"


def _raw(markup: str, *, cls: str = "") -> str:
    """A cell of markup built here from escaped parts."""
    return f'<td class="{cls}">{markup}</td>' if cls else f"<td>{markup}</td>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table of already rendered <td> cells (headers are escaped here)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(r) + "</tr>\n" for r in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table></div>\n'


def _plain_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    return _table(headers, [[_td(v) for v in row] for row in rows])


def _section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>\n{body}</section>\n' if body else ""


def _pct(value: Any) -> str:
    x = _num(value)
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:.1f} %"


# --- candidates ---------------------------------------------------------------------------------


def _worst_output(outputs: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """The output that decides a row: a failing one first, then the largest max abs err over atol."""
    def key(item: tuple[str, Any]) -> tuple[int, float]:
        o = item[1]
        err, atol = _num(o.get("max_abs_err")), _num(o.get("atol"))
        ratio = math.inf if err is None or not math.isfinite(err) else (err / atol if atol else err)
        return (0 if o.get("passed", True) else 1, ratio)

    items = [(str(k), v) for k, v in outputs.items() if isinstance(v, Mapping)]
    return max(items, key=key) if items else None


def _candidate_rows(doc: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    results: Sequence[Mapping[str, Any]] = doc.get("results") or []
    columns: list[tuple[str, Callable[[Mapping[str, Any]], str], Callable[[Mapping[str, Any]], bool]]] = []

    def has_timing(r: Mapping[str, Any]) -> bool:
        return bool(r.get("timing"))

    def metric(column: MetricColumn) -> Callable[[Mapping[str, Any]], str]:
        """The value, then (muted) the difference from the reference with its interval; the cell's text is
        metric_cell's, as in report.md and the CLI."""
        def cell(r: Mapping[str, Any]) -> str:
            value = (r.get("metrics") or {}).get(column.name)
            if metric_number(value) is None:
                return _td(None)
            extra = interval_text(r, column.name)
            if not extra:
                return _td(value)
            iv = ((r.get("metrics") or {}).get("intervals") or {}).get(column.name) or {}
            level = metric_number(iv.get("level"))
            title = (f"{column.name} {metric_cell(r, column.name)}: Δ difference from the reference, [its "
                     f"{'95' if level is None else f'{100 * level:g}'} % paired bootstrap interval]")
            return (f'<td class="num" title="{html.escape(title, quote=True)}">{_e(value)} '
                    f'<span class="small muted">{html.escape(extra)}</span></td>')
        return cell

    def has_metric(name: str) -> Callable[[Mapping[str, Any]], bool]:
        return lambda r: metric_number((r.get("metrics") or {}).get(name)) is not None

    def name_cell(r: Mapping[str, Any]) -> str:
        tag = '<span class="tag">reference</span>' if r.get("reference") else ""
        fixes = (r.get("details") or {}).get("fixes")
        tag += f'<span class="tag">fixes {_e(fixes)}</span>' if fixes else ""
        return _raw(f'<span class="mono">{_e(r.get("backend"))}</span>{tag}')

    def err_cell(key: str, tol: str) -> Callable[[Mapping[str, Any]], str]:
        def cell(r: Mapping[str, Any]) -> str:
            worst = _worst_output(r.get("outputs") or {})
            if worst is None:
                return _td(None)
            name, o = worst
            many = len(r.get("outputs") or {}) > 1
            cls = "" if o.get("passed", True) else "bad"
            where = f"output {name}: " if many else ""
            return _td(o.get(key), cls=cls, title=f"{where}{key} {fmt(o.get(key))} vs {tol} {fmt(o.get(tol))}")
        return cell

    def tol_cell(tol: str) -> Callable[[Mapping[str, Any]], str]:
        def cell(r: Mapping[str, Any]) -> str:
            worst = _worst_output(r.get("outputs") or {})
            return _td(None if worst is None else worst[1].get(tol))
        return cell

    def nonfinite_cell(r: Mapping[str, Any]) -> str:
        outputs = [o for o in (r.get("outputs") or {}).values() if isinstance(o, Mapping)]
        if not outputs:
            return _td(None)
        count = sum(int(_num(o.get(k)) or 0) for o in outputs for k in ("nan_count", "inf_count"))
        return _td(count, cls="bad" if count else "")

    def timing(key: str) -> Callable[[Mapping[str, Any]], str]:
        return lambda r: _td((r.get("timing") or {}).get(key))

    def cv_cell(r: Mapping[str, Any]) -> str:
        t = r.get("timing") or {}
        if t.get("cv") is None:
            return _td(None)
        unstable = bool(t.get("unstable"))
        return _raw(_e(_pct(t.get("cv"))) + (" ⚠" if unstable else ""), cls="num warn" if unstable else "num")

    def speed_cell(r: Mapping[str, Any]) -> str:
        if r.get("speedup") is None:
            return _td(None)
        text = speedup_cell(r, results, 3)
        if not r.get("unstable"):
            return _td(text)
        warn = "; ".join(str(w) for w in r.get("timing_warnings") or ()) or "timing unstable"
        return f'<td class="num warn" title="{html.escape(warn, quote=True)}">⚠ {_e(text)}</td>'

    columns = [
        ("candidate", name_cell, lambda r: True),
        ("precision", lambda r: _td(r.get("precision")), lambda r: True),
        ("status", lambda r: _status_td(r.get("status")), lambda r: True),
        ("max abs err", err_cell("max_abs_err", "atol"), lambda r: bool(r.get("outputs"))),
        ("atol", tol_cell("atol"), lambda r: bool(r.get("outputs"))),
        ("max rel err", err_cell("max_rel_err", "rtol"), lambda r: bool(r.get("outputs"))),
        ("rtol", tol_cell("rtol"), lambda r: bool(r.get("outputs"))),
        ("NaN/Inf", nonfinite_cell, lambda r: bool(r.get("outputs"))),
        ("median ms", timing("median_ms"), has_timing),
        ("p90 ms", timing("p90_ms"), has_timing),
        ("CV", cv_cell, has_timing),
        ("speed-up", speed_cell, lambda r: r.get("speedup") is not None),
        *((c.header, metric(c), has_metric(c.name)) for c in metric_columns(results)),
        ("reason", lambda r: _td(r.get("reason") or "", cls="reason"), lambda r: bool(r.get("reason"))),
    ]
    shown = [c for c in columns if any(c[2](r) for r in results)]
    return [c[0] for c in shown], [[c[1](r) for c in shown] for r in results]


def _latency_svg(results: Sequence[Mapping[str, Any]]) -> str:
    """Horizontal bars: median latency per timed candidate, a whisker to p90."""
    timed = [(str(r.get("backend")), _num((r.get("timing") or {}).get("median_ms")),
              _num((r.get("timing") or {}).get("p90_ms")), bool(r.get("unstable")), str(r.get("status")))
             for r in results]
    bars = [(n, m, p if p is not None else m, u, s) for n, m, p, u, s in timed
            if m is not None and math.isfinite(m) and m > 0]
    if not bars:
        return ""
    label_w, width, row_h = 260, 1000, 24
    plot_w = width - label_w - 90
    top = max(max(m, p) for _, m, p, _, _ in bars if math.isfinite(p))
    scale = plot_w / top if top > 0 else 1.0
    height = 26 + row_h * len(bars)
    parts = [f'<svg role="img" aria-label="median latency per candidate" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}">']
    parts.append(f'<text x="{label_w}" y="14" class="muted">median ms (bar), p90 (whisker); ⚠ unstable</text>')
    for i, (name, med, p90, unstable, status) in enumerate(bars):
        y = 22 + i * row_h
        w = max(1.0, med * scale)
        colour = "#cf222e" if _status_class(status) == "bad" else "#0969da"
        short = name if len(name) <= 38 else name[:37] + "…"
        tip = f"{name}: median {fmt(med)} ms, p90 {fmt(p90)} ms" + (" (unstable)" if unstable else "")
        parts.append(f"<g><title>{html.escape(tip)}</title>"
                     f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{html.escape(short)}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" fill="{colour}" '
                     f'fill-opacity="0.75"/>')
        if math.isfinite(p90) and p90 > med:
            x0, x1, ym = label_w + w, label_w + p90 * scale, y + 3 + (row_h - 8) / 2
            parts.append(f'<line x1="{x0:.1f}" y1="{ym:.1f}" x2="{x1:.1f}" y2="{ym:.1f}" stroke="#57606a"/>'
                         f'<line x1="{x1:.1f}" y1="{ym - 5:.1f}" x2="{x1:.1f}" y2="{ym + 5:.1f}" stroke="#57606a"/>')
        end = label_w + max(w, (p90 * scale) if math.isfinite(p90) else w) + 6
        parts.append(f'<text x="{end:.1f}" y="{y + 14}">{html.escape(fmt(med))}{" ⚠" if unstable else ""}</text></g>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _candidates(doc: Mapping[str, Any]) -> str:
    results = doc.get("results") or []
    if not results:
        return ""
    headers, rows = _candidate_rows(doc)
    note = interval_note(metric_columns(results))
    out = _table(headers, rows)
    out += ('<p class="small muted">Errors: the output furthest beyond its tolerance (hover a cell for which '
            "output); an element fails when |candidate − reference| &gt; atol <strong>and</strong> "
            "|candidate − reference| / |reference| &gt; rtol. Latency: host time per call with the protocol of "
            "<code>enginekit bench</code> (median, p90, coefficient of variation); speed-up against the reference, "
            "marked ⚠ when its timing or the reference's is unstable."
            + (f" {html.escape(note)}" if note else "") + "</p>\n")
    warnings = timing_warnings(results)
    if warnings:
        out += '<ul class="warn">' + "".join(f"<li>Timing warning: {html.escape(w)}</li>" for w in warnings) + "</ul>\n"
    out += _latency_svg(results)
    outputs = [[_td(r.get("backend")), _td(name), _status_td("ok" if o.get("passed") else "failed"),
                _td(o.get("max_abs_err")), _td(o.get("max_rel_err")), _td(o.get("p99_abs_err")), _td(o.get("cosine")),
                _td(o.get("nan_count")), _td(o.get("inf_count")), _td(o.get("atol")), _td(o.get("rtol")),
                _td(o.get("reason") or "")]
               for r in results for name, o in (r.get("outputs") or {}).items() if isinstance(o, Mapping)]
    if outputs:
        out += "<h3>Outputs against the reference</h3>\n" + _table(
            ["candidate", "output", "passed", "max abs", "max rel", "p99 abs", "cosine", "NaN", "Inf", "atol", "rtol",
             "note"], outputs)
    return out


# --- best engines -------------------------------------------------------------------------------


def _card(title: str, big: str, lines: Sequence[str]) -> str:
    return (f'<div class="card"><div class="muted">{html.escape(title)}</div><div class="big mono">{big}</div>'
            + "".join(f"<div>{line}</div>" for line in lines) + "</div>")


def _best(doc: Mapping[str, Any]) -> str:
    results: Sequence[Mapping[str, Any]] = doc.get("results") or []
    passing = [r for r in results if str(r.get("status")) == "ok" and _num((r.get("timing") or {}).get("median_ms"))]
    cards = []
    if passing:
        fast = min(passing, key=lambda r: _num((r.get("timing") or {}).get("median_ms")) or math.inf)
        t = fast.get("timing") or {}
        lines = [f"median {_e(t.get('median_ms'))} ms, p90 {_e(t.get('p90_ms'))} ms, CV {_e(_pct(t.get('cv')))}"]
        if fast.get("speedup") is not None:
            lines.append(f"speed-up {_e(speedup_cell(fast, results, 3))} against the reference")
        if fast.get("unstable"):
            lines.append('<span class="warn">⚠ unstable timing: measure longer before trusting this ranking</span>')
        if fast.get("reference"):
            lines.append('<span class="muted">the reference itself is the fastest passing candidate</span>')
        cards.append(_card("fastest passing candidate (latency)", _e(fast.get("backend")), lines))
    columns = metric_columns(results)
    best = best_row([r for r in results if str(r.get("status")) == "ok"], columns[0]) if columns else None
    if best is not None:
        first = columns[0]
        m = best.get("metrics") or {}
        lines = [", ".join(f"{html.escape(c.header)} {_e(m.get(c.name))}" for c in columns
                           if metric_number(m.get(c.name)) is not None)]
        if not first.higher_is_better:
            lines.append(f'<span class="muted">lower {html.escape(first.header)} is better</span>')
        cards.append(_card(f"best {first.header} (passing)", _e(best.get("backend")), lines))
    out = f'<div class="cards">{"".join(cards)}</div>\n' if cards else ""
    if not passing and results:
        out += '<p class="bad">No candidate passed with a timing.</p>\n'
    return out + _search(doc.get("search"))


def _search(search: Mapping[str, Any] | None) -> str:
    if not search:
        return ""
    where = str(search.get("device")) + (f" ({search['gpu']})" if search.get("gpu") else "")
    out = (f"<h3>Configuration search on {html.escape(where)}: best per batch</h3>\n"
           '<p class="small muted">Every configuration ran the same feed per batch, was compared with eager FP32 '
           "PyTorch and timed with the protocol of <code>enginekit bench</code>; only passing rows may be best.</p>\n")
    best = [summary_cells(s) for s in search.get("best") or []]
    if best:
        out += _plain_table(SUMMARY_HEADERS, best)
    rows = search.get("rows") or []
    if rows:
        cells = []
        for r in rows:
            values = row_cells(r)
            status_at = ROW_HEADERS.index("status")
            cells.append([_status_td(v) if i == status_at else
                          _td(v, cls="warn" if isinstance(v, str) and "(unstable)" in v else "")
                          for i, v in enumerate(values)])
        out += f"<details><summary>All {len(rows)} configuration rows</summary>\n" + _table(ROW_HEADERS, cells)
        notes = unstable_notes(rows) + [f"{r.get('candidate')} at batch {r.get('batch')}: {r.get('status')} — "
                                        f"{r.get('reason')}" for r in rows if r.get("reason")]
        out += ('<ul class="small">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>\n"
                if notes else "") + "</details>\n"
    return out


# --- precision debugger -------------------------------------------------------------------------


def _log10(value: float, floor: float) -> float:
    return math.log10(max(value, floor))


def error_growth_svg(rows: Sequence[Mapping[str, Any]], first_bad: Mapping[str, Any] | None = None,
                     precision: str = "") -> str:
    """Per-tensor max abs / rel error and atol along the graph (topological order, log scale), inline SVG.

    ``rows`` are the layerwise diff's rows (``LayerwiseResult.to_dict()["rows"]``: tensor, node, op_type, passed,
    max_abs_err, max_rel_err, atol, rtol, cosine, nan_candidate, inf_candidate). Every point has a hover title;
    failing tensors are red, NaN/Inf ones a red triangle on the top edge. Above :data:`MAX_PLOT_POINTS` tensors each
    bucket of neighbours is drawn by its worst one, so the SVG stays bounded whatever the graph's size.
    """
    n = len(rows)
    if n == 0:
        return ""
    width, height, left, right, top, bottom = 1200, 380, 64, 16, 34, 46
    pw, ph = width - left - right, height - top - bottom
    values = [v for r in rows for k in ("max_abs_err", "max_rel_err", "atol")
              if (v := _num(r.get(k))) is not None and math.isfinite(v) and v > 0]
    atols = [v for r in rows if (v := _num(r.get("atol"))) is not None and math.isfinite(v) and v > 0]
    lo = math.floor(math.log10(min(values))) if values else -8
    hi = math.ceil(math.log10(max(values))) if values else 0
    # errors far below every tolerance say nothing: the axis ends 4 decades under the smallest atol (lower: clipped)
    lo = max(lo, -12, math.floor(math.log10(min(atols))) - 4 if atols else -12)
    hi = max(hi, lo + 1)
    floor = 10.0 ** lo

    def x_of(i: int) -> float:
        return left + (pw * (i + 0.5) / n)

    def y_of(v: float | None) -> float | None:
        if v is None or math.isnan(v):
            return None
        if math.isinf(v):
            return float(top)
        return top + ph * (hi - _log10(v, floor)) / (hi - lo)

    def nonfinite(r: Mapping[str, Any]) -> bool:
        err = _num(r.get("max_abs_err"))
        return bool(r.get("nan_candidate") or r.get("inf_candidate")) or err is None or not math.isfinite(err)

    def badness(i: int) -> tuple[int, int, float]:
        r = rows[i]
        err, atol = _num(r.get("max_abs_err")), _num(r.get("atol"))
        ratio = (err / atol if atol else err) if err is not None and math.isfinite(err) else math.inf
        return (int(nonfinite(r)), int(not r.get("passed", True)), ratio)

    size = max(1, math.ceil(n / MAX_PLOT_POINTS))
    buckets = [range(s, min(n, s + size)) for s in range(0, n, size)]
    shown = [max(b, key=badness) for b in buckets]
    parts = [f'<svg role="img" aria-label="{html.escape(precision)} error growth along the graph" '
             f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#d0d7de"/>']
    for k in range(lo, hi + 1):  # decades
        yd = top + ph * (hi - k) / (hi - lo)
        parts.append(f'<line x1="{left}" y1="{yd:.1f}" x2="{left + pw}" y2="{yd:.1f}" stroke="#eaeef2"/>'
                     f'<text x="{left - 6}" y="{yd + 4:.1f}" text-anchor="end">1e{k}</text>')
    ticks = sorted({round(i * (n - 1) / 10) for i in range(11)}) if n > 1 else [0]
    for i in ticks:
        parts.append(f'<line x1="{x_of(i):.1f}" y1="{top + ph}" x2="{x_of(i):.1f}" y2="{top + ph + 4}" '
                     f'stroke="#57606a"/><text x="{x_of(i):.1f}" y="{top + ph + 16}" text-anchor="middle">{i}</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 8}" text-anchor="middle">tensor index in topological '
                 f"order ({n} tensors{f', each point the worst of {size}' if size > 1 else ''})</text>"
                 f'<text transform="translate(14 {top + ph / 2:.1f}) rotate(-90)" text-anchor="middle">'
                 "error (log scale)</text>")
    series = (("max_abs_err", "#0969da", ""), ("max_rel_err", "#bc4c00", ""), ("atol", "#8c959f", "4 3"))
    for key, colour, dash in series:
        segment: list[str] = []
        paths: list[list[str]] = [segment]
        for i in shown:
            y = y_of(_num(rows[i].get(key)))
            if y is None or (key != "atol" and nonfinite(rows[i])):
                segment = []
                paths.append(segment)
                continue
            segment.append(f"{x_of(i):.1f},{y:.1f}")
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        for seg in paths:
            if len(seg) > 1:
                parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.3"{dash_attr} '
                             f'points="{" ".join(seg)}"/>')
    if first_bad is not None:
        idx = next((i for i, r in enumerate(rows) if r.get("tensor") == first_bad.get("tensor")), None)
        if idx is not None:
            x = x_of(idx)
            name = str(first_bad.get("node") or first_bad.get("tensor"))
            name = name if len(name) <= 48 else name[:47] + "…"
            anchor = "start" if x < left + pw * 0.7 else "end"
            dx = 4 if anchor == "start" else -4
            parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#cf222e" '
                         f'stroke-dasharray="5 3"/><text x="{x + dx:.1f}" y="{top + 24}" text-anchor="{anchor}" '
                         f'fill="#cf222e">first bad: {html.escape(name)}</text>')
    for j, i in enumerate(shown):
        r = rows[i]
        b = buckets[j]
        tip = (f"#{i} {r.get('node')} ({r.get('op_type')}) tensor {r.get('tensor')}\n"
               f"max abs {fmt(r.get('max_abs_err'))} vs atol {fmt(r.get('atol'))}; max rel {fmt(r.get('max_rel_err'))}"
               f" vs rtol {fmt(r.get('rtol'))}; cosine {fmt(r.get('cosine'))}; NaN {fmt(r.get('nan_candidate'))}, "
               f"Inf {fmt(r.get('inf_candidate'))}; {'passes' if r.get('passed', True) else 'FAILS'}"
               + (f"\nworst of tensors #{b.start}–#{b.stop - 1}" if len(b) > 1 else ""))
        title = f"<title>{html.escape(tip)}</title>"
        x = x_of(i)
        if nonfinite(r):
            parts.append(f'<path d="M{x - 4:.1f},{top + 1} L{x + 4:.1f},{top + 1} L{x:.1f},{top + 8}Z" '
                         f'fill="#cf222e">{title}</path>')
            continue
        y = y_of(_num(r.get("max_abs_err")))
        if y is None:
            continue
        fill = "#cf222e" if not r.get("passed", True) else "#0969da"
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{2.6 if n > 150 else 3.5}" fill="{fill}">{title}</circle>')
    legend = (("#0969da", "max abs err", ""), ("#bc4c00", "max rel err", ""), ("#8c959f", "atol", "4 3"))
    lx = left + 6
    for colour, label, dash in legend:
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<line x1="{lx}" y1="{top - 12}" x2="{lx + 22}" y2="{top - 12}" stroke="{colour}" '
                     f'stroke-width="2"{dash_attr}/><text x="{lx + 26}" y="{top - 8}">{label}</text>')
        lx += 110
    parts.append(f'<circle cx="{lx + 4}" cy="{top - 12}" r="3.5" fill="#cf222e"/><text x="{lx + 12}" y="{top - 8}">'
                 "outside tolerance</text>"
                 f'<path d="M{lx + 130},{top - 16} L{lx + 138},{top - 16} L{lx + 134},{top - 9}Z" fill="#cf222e"/>'
                 f'<text x="{lx + 142}" y="{top - 8}">NaN/Inf in candidate</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _layerwise(lw: Mapping[str, Any]) -> str:
    rows: Sequence[Mapping[str, Any]] = [r for r in lw.get("rows") or [] if isinstance(r, Mapping)]
    if not rows:
        return '<p class="muted">The layerwise diff compared no tensors.</p>\n'
    bad = lw.get("first_bad")
    failing = [r for r in rows if not r.get("passed", True)]
    precision = str(lw.get("precision") or "")
    out = (f"<h3>Error growth along the graph (all {html.escape(precision)})</h3>\n<p>{len(rows)} tensors compared "
           f"with the FP32 reference, {len(failing)} outside tolerance; first: "
           + (f'<span class="mono bad">{_e(bad.get("tensor"))}</span> ({_e(bad.get("op_type"))} '
              f'<span class="mono">{_e(bad.get("node"))}</span>)' if isinstance(bad, Mapping) else "none")
           + ". Hover a point for its node and numbers.</p>\n")
    out += error_growth_svg(rows, bad if isinstance(bad, Mapping) else None, precision)
    index = {id(r): i for i, r in enumerate(rows)}

    def key(r: Mapping[str, Any]) -> tuple[int, int, float]:
        """NaN/Inf first (earliest in the graph first: where they start), then failing, by error over atol."""
        if r.get("nan_candidate") or r.get("inf_candidate"):
            return (1, 1, -float(index[id(r)]))
        err, atol = _num(r.get("max_abs_err")), _num(r.get("atol"))
        ratio = (err / atol if atol else err) if err is not None and math.isfinite(err) else math.inf
        return (0, int(not r.get("passed", True)), ratio)

    worst = sorted(rows, key=key, reverse=True)[:TOP_TENSORS]
    out += f"<h3>Worst {len(worst)} tensors (furthest beyond tolerance)</h3>\n" + _table(
        ["#", "node", "op", "tensor", "max abs", "atol", "max rel", "rtol", "cosine", "NaN", "Inf", "passed"],
        [[_td(index[id(r)]), _td(r.get("node")), _td(r.get("op_type")), _td(r.get("tensor")),
          _td(r.get("max_abs_err"), cls="" if r.get("passed", True) else "bad"), _td(r.get("atol")),
          _td(r.get("max_rel_err")), _td(r.get("rtol")), _td(r.get("cosine")), _td(r.get("nan_candidate")),
          _td(r.get("inf_candidate")), _status_td("ok" if r.get("passed", True) else "failed")] for r in worst])
    if lw.get("skipped"):
        out += f'<p class="small muted">{len(lw["skipped"])} FP32 tensors had no counterpart in the candidate.</p>\n'
    return out


def _debugger_optimize(doc: Mapping[str, Any]) -> str:
    """optimize: the fixed (+plan) rows the debugger added; the plot when a row carries its layerwise diff."""
    out = ""
    for r in doc.get("results") or []:
        d = r.get("details") or {}
        if not d.get("fixes"):
            continue
        nodes = d.get("nodes") or []
        out += (f'<h3><span class="mono">{_e(r.get("backend"))}</span> fixes <span class="mono">{_e(d.get("fixes"))}'
                f"</span>: {_status(r.get('status'))}</h3>\n<ul>"
                f"<li>{_e(d.get('fp32_nodes'))} of {_e(d.get('total_nodes'))} nodes kept in FP32 "
                f"({_e(_pct(d.get('fp32_flops_fraction')))} of FLOPs); everything after the first bad layer would be "
                f"{_e(d.get('naive_fp32_nodes'))}; {_e(d.get('evaluations'))} evaluations</li>"
                f"<li>plan <code>{_e(d.get('plan'))}</code>, fixed model <code>{_e(d.get('fixed_model'))}</code></li>"
                + (f"<li>{html.escape(str(r.get('reason')))}</li>" if r.get("reason") else "")
                + "</ul>\n")
        if nodes:
            out += ("<details><summary>Nodes kept in FP32</summary>\n"
                    + _plain_table(["#", "node"], [[i, n] for i, n in enumerate(nodes)]) + "</details>\n")
        lw = d.get("layerwise")
        if isinstance(lw, Mapping):
            out += _layerwise(lw)
        else:
            out += ('<p class="small muted">No per-node error growth in this report: the row carries no '
                    "<code>details.layerwise</code> (run <code>enginekit debug precision --report</code> on the "
                    "model for the layerwise plot).</p>\n")
    return out


def _debugger_doc(doc: Mapping[str, Any]) -> str:
    """debug-precision: verdict, what was kept in FP32 and why, and the layerwise diff."""
    before, after = doc.get("before") or {}, doc.get("after") or {}
    base = doc.get("baseline") or {}
    kept = (doc.get("plan") or {}).get("keep_fp32") or []
    out = (f"<ul><li>all {_e(doc.get('precision'))}: {_status('ok' if before.get('passed') else 'failed')} (max abs "
           f"err {_e(before.get('max_abs_err'))}, {_e(before.get('nonfinite', 0))} NaN/Inf); with the plan: "
           f"{_status('ok' if after.get('passed') else 'failed')} (max abs err {_e(after.get('max_abs_err'))})</li>"
           f"<li>{_e(doc.get('kept'))} of {_e(doc.get('total_nodes'))} nodes kept in FP32 "
           f"({_e(_pct(doc.get('fp32_flops_fraction')))} of FLOPs); everything after the first bad layer "
           f"(<span class=\"mono\">{_e(base.get('first_bad_node'))}</span>) would be {_e(base.get('nodes'))}; "
           f"{_e(doc.get('evaluations'))} evaluations</li>"
           + (f"<li class=\"warn\">{_e(doc.get('warning'))}</li>" if doc.get("warning") else "")
           + "".join(f'<li class="warn">weak reference: {_e(w)}</li>' for w in doc.get("weak_reference") or [])
           + "</ul>\n")
    if kept:
        out += "<h3>Nodes kept in FP32</h3>\n" + _plain_table(
            ["node", "reason"], [[e.get("node"), e.get("reason")] for e in kept if isinstance(e, Mapping)])
    ranges = doc.get("range_analysis") or []
    if ranges:
        out += (f"<details><summary>Range analysis: {len(ranges)} risky nodes</summary>\n"
                + _plain_table(["node", "reason"], [[e.get("node"), e.get("reason")] for e in ranges
                                                     if isinstance(e, Mapping)]) + "</details>\n")
    lw = doc.get("layerwise")
    if isinstance(lw, Mapping):
        out += _layerwise(lw)
    return out


# --- stages, steps, environment -----------------------------------------------------------------


def _stages(stages: Mapping[str, Any]) -> str:
    out = ""
    exp = stages.get("export")
    if isinstance(exp, Mapping):
        out += (f"<h3>Export</h3>\n<p><code>{_e(exp.get('source'))}</code> → <code>{_e(exp.get('output'))}</code> "
                f"({_e(exp.get('framework'))}, {_e(exp.get('exporter'))} exporter, opset "
                f"{_e(exp.get('opset_produced'))})</p>\n")
        notes = exp.get("notes") or []
        out += "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>\n" if notes else ""
        rows = [[_td(c.get("label")), _td(c.get("shapes")), _td(name),
                 _status_td("ok" if o.get("passed") else "failed"), _td(o.get("max_abs_err")),
                 _td(o.get("max_rel_err"))]
                for c in exp.get("verification") or [] for name, o in (c.get("outputs") or {}).items()]
        out += _table(["case", "shapes", "output", "passed", "max abs", "max rel"], rows) if rows else ""
    prep = stages.get("prepare")
    if isinstance(prep, Mapping) and prep.get("passes"):
        out += "<h3>Prepare</h3>\n" + _table(
            ["pass", "status", "nodes before", "nodes after", "what changed", "reason"],
            [[_td(p.get("name")), _status_td(p.get("status")), _td(p.get("nodes_before")),
              _td(p.get("nodes_after")), _td(p.get("summary", "")), _td(p.get("reason", ""))]
             for p in prep["passes"]])
    return out


def _steps(doc: Mapping[str, Any]) -> str:
    steps = doc.get("steps") or []
    if not steps:
        return ""
    return _table(["step", "status", "duration s", "required", "reason"],
                  [[_td(s.get("name")), _status_td(s.get("status")), _td(s.get("duration_s")),
                    _td(s.get("required")), _td(s.get("reason") or "")] for s in steps])


def _environment(doc: Mapping[str, Any]) -> str:
    out = (f"<p>Created {_e(doc.get('created'))}.</p>\n" if doc.get("created") else "")
    if doc.get("command"):
        out += f"<p>Command:</p>\n<pre class=\"mono scroll\">{_e(doc.get('command'))}</pre>\n"
    env = doc.get("environment") or {}
    if env:
        out += _plain_table(["package / fact", "version"], [[k, v] for k, v in env.items()])
    files = doc.get("files") or {}
    if files:
        out += "<h3>Files</h3>\n" + _plain_table(["what", "file"], [[k, v] for k, v in files.items()])
    return out


# --- the page -----------------------------------------------------------------------------------


def _verdict(doc: Mapping[str, Any]) -> tuple[str, str]:
    verdict = doc.get("verdict")
    if verdict is not None and str(verdict) in _GOOD | _BAD | _SKIP:
        word = str(verdict).upper()
    else:
        word = "PASSED" if doc.get("passed") else "FAILED"
    return word, _status_class(word) or "bad"


def _header(doc: Mapping[str, Any]) -> str:
    kind = str(doc.get("kind") or "report")
    word, cls = _verdict(doc)
    title = f"enginekit {kind}: {fmt(doc.get('model'))}"
    out = f'<h1>{html.escape(title)}</h1>\n<p><span class="verdict {cls}">{html.escape(word)}</span> '
    facts = []
    if doc.get("reference"):
        facts.append(f'reference <span class="mono">{_e(doc.get("reference"))}</span>')
    if doc.get("precision") and kind == "debug-precision":
        facts.append(f"precision {_e(doc.get('precision'))}")
    if doc.get("dataset"):
        facts.append(f'dataset <span class="mono">{_e(doc.get("dataset"))}</span>')
    inputs = doc.get("inputs") or {}
    if inputs:
        facts.append("inputs " + ", ".join(f'<span class="mono">{_e(k)}</span> {_e(v.get("shape"))} '
                                           f'{_e(v.get("dtype"))}' for k, v in inputs.items()
                                           if isinstance(v, Mapping)))
    out += "; ".join(facts) + "</p>\n"
    if doc.get("message"):
        out += f"<p>{_e(doc.get('message'))}</p>\n"
    info = doc.get("model_info") or {}
    if info:
        out += (f"<p>Model: {_e(info.get('node_count'))} nodes, {_e(info.get('parameter_count'))} parameters, "
                f"opset {_e(info.get('max_opset'))}.</p>\n")
    notes = [f'<li class="warn">weak reference: {_e(w)}</li>' for w in doc.get("weak_reference") or []
             if kind != "debug-precision"]
    notes += [f'<li class="skip">skipped: {_e(s)}</li>' for s in doc.get("skipped") or []]
    return out + (f"<ul>{''.join(notes)}</ul>\n" if notes else "")


def render_html(doc: Mapping[str, Any]) -> str:
    """report.html for a report doc (the dict written to report.json: optimize, run, or debug-precision).

    Pure: returns the page; the caller writes it. Self-contained (no network) and every text escaped.
    """
    kind = str(doc.get("kind") or "report")
    word, _ = _verdict(doc)
    debugger = _debugger_doc(doc) if kind == "debug-precision" else _debugger_optimize(doc)
    body = (_header(doc)
            + _section("Candidates", _candidates(doc), "candidates")
            + _section("Best engines", _best(doc) if kind == "optimize" else "", "best")
            + _section("Precision debugger", debugger, "debugger")
            + _section("Export and prepare", _stages(doc.get("stages") or {}), "stages")
            + _section("Steps", _steps(doc), "steps")
            + _section("Environment", _environment(doc), "environment"))
    return page(f"{word} – enginekit {kind}: {fmt(doc.get('model'))}", body)


def page(title: str, body: str) -> str:
    """A self-contained page: the report style, no network (Content-Security-Policy), ``title`` escaped, ``body``
    as given (already escaped HTML)."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
            "img-src data:\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}</body>\n</html>\n")


escape_cell = _e  # a value as escaped text, numbers formatted as in report.md
status_class = _status_class  # the CSS class (good, bad, skip) of a status word
