"""Rich tables for run/compare/optimize results, rendered from their JSON dicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.markup import escape
from rich.table import Table

from enginekit.cli.common import out
from enginekit.report.markdown import fmt
from enginekit.status import Status

_STATUS_STYLE: dict[str, str] = {Status.OK: "green", Status.FAILED: "red", Status.ERROR: "red",
                                 Status.SKIPPED: "yellow"}


def status(s: str) -> str:
    return f"[{_STATUS_STYLE.get(s, 'white')}]{s}[/]"


def results_tables(results: Sequence[Mapping[str, Any]], *, show_reason: bool = True) -> None:
    t = Table("backend", "status", "output", "passed", "max abs", "max rel", "p99 abs", "cosine", "NaN", "Inf",
              "atol", "rtol", title="Outputs against the reference", title_justify="left")
    for r in results:
        name = escape(r["backend"]) + (" (reference)" if r.get("reference") else "")
        outputs = r.get("outputs") or {}
        if not outputs:
            t.add_row(name, status(r["status"]), "–", "", "", "", "", "", "", "", "", "")
        for i, (oname, o) in enumerate(outputs.items()):
            passed = "[green]yes[/]" if o["passed"] else "[red]no[/]"
            t.add_row(name if i == 0 else "", status(r["status"]) if i == 0 else "", escape(oname), passed,
                      fmt(o.get("max_abs_err")), fmt(o.get("max_rel_err")), fmt(o.get("p99_abs_err")),
                      fmt(o.get("cosine"), 6), str(o.get("nan_count")), str(o.get("inf_count")),
                      fmt(o.get("atol")), fmt(o.get("rtol")))
    out.print(t)
    if show_reason:
        for r in results:
            if r.get("reason"):
                out.print(f"  {status(r['status'])} [bold]{escape(r['backend'])}[/]: {escape(r['reason'])}")


def verdict(passed: bool, *, weak: Sequence[str] = (), skipped: Sequence[str] = ()) -> None:
    """PASSED / FAILED, and why a pass is weak (degenerate reference) or partial (candidates not run here)."""
    if not passed:
        out.print("[bold red]FAILED[/]")
        return
    for reason in weak:
        out.print(f"[yellow]weak verdict:[/] {escape(reason)}")
    if weak:
        from enginekit.compare.reference_quality import ADVICE

        out.print(f"[yellow]→[/] {escape(ADVICE)}")
    notes = ([f"weak: {len(weak)} degenerate reference output(s)"] if weak else []) + (
        [f"{len(skipped)} candidate(s) skipped: not possible on this machine"] if skipped else [])
    out.print("[bold green]PASSED[/]" + (f" [yellow]({escape('; '.join(notes))})[/]" if notes else ""))


def tolerance_text(outputs: Mapping[str, Mapping[str, Any]]) -> str:
    """``atol/rtol`` a row was judged with: one pair when every output shares it, else the range over outputs."""
    pairs = sorted({(float(o["atol"]), float(o["rtol"])) for o in outputs.values()
                    if isinstance(o.get("atol"), float) and isinstance(o.get("rtol"), float)})
    if not pairs:
        return ""
    if len(pairs) == 1:
        return f"{fmt(pairs[0][0])}/{fmt(pairs[0][1])}"
    atols = [p[0] for p in pairs]
    rtols = sorted({p[1] for p in pairs})
    rt = fmt(rtols[0]) if len(rtols) == 1 else f"{fmt(rtols[0])}..{fmt(rtols[-1])}"
    return f"{fmt(min(atols))}..{fmt(max(atols))}/{rt}"
