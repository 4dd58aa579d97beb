"""`enginekit sweep SWEEP.yaml`: every model x configuration of a sweep file, locally or on Ray, in one report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from enginekit.cli import common
from enginekit.cli.common import JsonOpt

HELP = ("Run a sweep file: every model (with its inputs or dataset) x backend (its precisions together) x batch size "
        "is one `optimize` job; writes OUT/results.jsonl as each job finishes (a killed sweep resumes and skips "
        "finished jobs), OUT/jobs/ID/report and one report, OUT/sweep.{json,md,html}: a matrix of verdicts and best "
        "engines plus a table per model. Runs in this process by default; --ray starts a local Ray instance, "
        "--ray-address joins a cluster (docs/SCALE.md). Exit 0 when every job passed, 1 when any failed.")


def sweep(
    sweep_file: Annotated[Path, typer.Argument(metavar="SWEEP.yaml", help="The sweep file (docs/SCALE.md).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default: the file's 'out', else "
                   "sweep-out). An existing one is resumed.", show_default=False)] = None,
    ray: Annotated[bool, typer.Option("--ray", help="Run the jobs as Ray tasks on a new local Ray instance "
                   "(pip install 'enginekit[ray]').")] = False,
    ray_address: Annotated[str | None, typer.Option("--ray-address", metavar="ADDR", help="Join this Ray cluster "
                           "(auto, HOST:PORT or ray://HOST:PORT) instead.", show_default=False)] = None,
    retries: Annotated[int | None, typer.Option("--retries", help="Ray: re-runs of a job whose worker died "
                       "(default: the file's 'retries', else 2).", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run every job of a sweep file and write one report."""
    from rich.markup import escape
    from rich.table import Table

    from enginekit.report.tables import fmt
    from enginekit.sweep import load_sweep, run_sweep

    spec = load_sweep(sweep_file)

    def status(word: str) -> str:
        return f"[{ {'passed': 'green', 'failed': 'red', 'error': 'red'}.get(word, 'yellow') }]{escape(word)}[/]"

    def progress(summary: dict[str, object]) -> None:
        if not as_json:
            common.err.print(f"  {status(str(summary['status']))} {escape(str(summary['id']))}")

    result = run_sweep(spec, out, ray=ray, ray_address=ray_address, retries=retries, on_result=progress)
    doc = result.to_dict()
    if as_json:
        common.print_json(doc)
        common.exit_with(result.exit_code)
    t = Table("model", *doc["configs"], title=f"Sweep ({len(result.ran)} run, {len(result.resumed)} resumed)",
              title_justify="left")
    for m in doc["models"]:
        cells = []
        for cfg in doc["configs"]:
            e = doc["matrix"].get(m, {}).get(cfg)
            if e is None:
                cells.append("–")
                continue
            best = e.get("best")
            cells.append(status(e["status"]) + (f"\n{escape(best['label'])} {fmt(best.get('median_ms'))} ms"
                                                if best else ""))
        t.add_row(escape(m), *cells)
    common.out.print(t)
    for j in doc["jobs"]:
        if j["status"] != "passed" and j.get("reason"):
            common.out.print(f"  {status(j['status'])} [bold]{escape(j['id'])}[/]: {escape(str(j['reason']))}")
    c = doc["counts"]
    common.out.print(f"{c['passed']} passed, {c['failed']} failed, {c['error']} errors. "
                     f"Report: {escape(str(result.out))}/sweep.md")
    common.exit_with(result.exit_code)
