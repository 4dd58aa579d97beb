"""`enginekit doctor`: versions, GPUs, backend availability and known traps."""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from enginekit.cli import common
from enginekit.cli.common import JsonOpt


def doctor(as_json: JsonOpt = False) -> None:
    """Show what is installed, which backends can run here and why not, and known version traps."""
    from rich.table import Table

    from enginekit.doctor import collect

    report = collect()
    if as_json:
        common.print_json(report.to_dict())
        return
    out = common.out
    pk = Table("package", "version / details", title="Environment", title_justify="left")
    for name, value in report.packages.items():
        pk.add_row(name, _describe(value))  # _describe escapes
    out.print(pk)
    if report.gpus:
        for g in report.gpus:
            out.print(f"GPU: {g['name']} (compute capability {g['compute_capability']})")
    else:
        out.print("GPU: none found")
    bk = Table("backend", "available", "devices", "precisions", "reason / install hint", title="Backends",
               title_justify="left")
    for b in report.backends:
        ok = "[green]yes[/]" if b["available"] else "[red]no[/]"
        bk.add_row(str(b["name"]), ok, ", ".join(b["devices"]), ", ".join(b["precisions"]),  # type: ignore[arg-type]
                   escape(str(b["reason"])))
    out.print(bk)
    for w in report.warnings:
        out.print(f"[yellow]warning[/]: {escape(w)}")
    if not report.warnings:
        out.print("No known version traps found.")


def _describe(value: Any) -> str:
    if value is None:
        return "[dim]not installed[/]"
    if isinstance(value, dict):
        text = ", ".join(f"{k}={v if not isinstance(v, list) else '/'.join(map(str, v))}" for k, v in value.items())
        return escape(text)
    return escape(str(value))
