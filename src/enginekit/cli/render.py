"""Rich tables for run/compare/optimize results, rendered from their JSON dicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.markup import escape
from rich.table import Table

from enginekit.cli.common import out
from enginekit.report.markdown import fmt

_STATUS_STYLE = {"ok": "green", "failed": "red", "error": "red", "skipped": "yellow"}


def status(s: str) -> str:
    return f"[{_STATUS_STYLE.get(s, 'white')}]{s}[/]"


def results_tables(results: Sequence[Mapping[str, Any]], *, show_reason: bool = True) -> None:
    t = Table("backend", "status", "output", "passed", "max abs", "max rel", "p99 abs", "cosine", "NaN", "Inf",
              title="Outputs against the reference", title_justify="left")
    for r in results:
        name = escape(r["backend"]) + (" (reference)" if r.get("reference") else "")
        outputs = r.get("outputs") or {}
        if not outputs:
            t.add_row(name, status(r["status"]), "–", "", "", "", "", "", "", "")
        for i, (oname, o) in enumerate(outputs.items()):
            passed = "[green]yes[/]" if o["passed"] else "[red]no[/]"
            t.add_row(name if i == 0 else "", status(r["status"]) if i == 0 else "", escape(oname), passed,
                      fmt(o.get("max_abs_err")), fmt(o.get("max_rel_err")), fmt(o.get("p99_abs_err")),
                      fmt(o.get("cosine"), 6), str(o.get("nan_count")), str(o.get("inf_count")))
    out.print(t)
    if show_reason:
        for r in results:
            if r.get("reason"):
                out.print(f"  {status(r['status'])} [bold]{escape(r['backend'])}[/]: {escape(r['reason'])}")


def verdict(passed: bool) -> None:
    out.print("[bold green]PASSED[/]" if passed else "[bold red]FAILED[/]")
