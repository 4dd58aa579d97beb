"""One sweep job, run in this process: `plan_optimize` + `optimize` into OUT/jobs/<id>/report, summed up in a small
JSON-ready dict. A job that raises is a row with status ``error`` and the reason, never a crash of the sweep."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from enginekit.sweep.spec import Job
from enginekit.sweep.store import append_jsonl

__all__ = ["CACHE_ROOT_ENV", "check_jobs", "error_summary", "node_cache_dir", "run_job", "run_job_on_node"]

CACHE_ROOT_ENV = "ENGINEKIT_SWEEP_CACHE_ROOT"
_NOT_METRICS = ("samples", "disagreements")  # counts that sit among a row's metric values


def node_cache_dir(job: Job) -> Path:
    """This node's engine cache: the job's cache_dir (or $ENGINEKIT_SWEEP_CACHE_ROOT, or the system temp folder)
    plus the host name, so nodes that share a file system never share engines built for other hardware."""
    root = job.cache_dir or os.environ.get(CACHE_ROOT_ENV) or str(Path(tempfile.gettempdir()) / "enginekit-sweep")
    return Path(root) / "engines" / socket.gethostname()


def run_job_on_node(job: Job, out: str) -> dict[str, Any]:
    """The Ray task body: the same job, with the engine cache on this node (and the Ray node id in its row)."""
    import importlib

    summary = run_job(job, Path(out), cache_dir=node_cache_dir(job))
    try:
        summary["node_id"] = importlib.import_module("ray").get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - the node id is for the report only
        summary["node_id"] = None
    return summary


def run_job(job: Job, out: Path, *, cache_dir: Path | None = None) -> dict[str, Any]:
    """Run ``job`` (its report under OUT/jobs/<id>/report) and return its summary; never raises for a job's own
    failure. Each attempt is logged to OUT/jobs/<id>/attempts.jsonl (pid, host) before it starts."""
    job_dir = out / "jobs" / job.id
    start = time.perf_counter()
    where: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    try:
        job_dir.mkdir(parents=True, exist_ok=True)
        append_jsonl(job_dir / "attempts.jsonl", where)
        report = job_dir / "report"
        if report.exists():
            shutil.rmtree(report)  # a retried attempt starts clean
        result = _optimize(job, report, cache_dir)
    except Exception as exc:  # noqa: BLE001 - a job's failure is a row (with its reason), not a crash
        summary = error_summary(job, f"{type(exc).__name__}: {exc}")
        summary["traceback"] = traceback.format_exc(limit=8)
    else:
        summary = _summary(job, result, report)
    summary.update(where, finished=time.time(), duration_s=round(time.perf_counter() - start, 3))
    return summary


def error_summary(job: Job, reason: str) -> dict[str, Any]:
    """A job that did not run to a verdict: status error, with the reason."""
    return {"id": job.id, "model": job.model_name, "config": job.config, "backend": job.backend,
            "candidates": list(job.candidates), "batch": job.batch, "status": "error", "exit_code": 4,
            "reason": reason, "best": None, "rows": [], "report_dir": None}


def check_jobs(jobs: Sequence[Job], out: Path) -> None:
    """Plan every job now, so that a bad option (gate, task, input, backend) is a user error (exit 2) before any
    job runs, named by the job."""
    from enginekit.errors import EnginekitError, InvalidArgumentError

    for job in jobs:
        try:
            _plan(job, out / "jobs" / job.id / "report", None)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"sweep job {job.id}: {exc.message}") from None
        except EnginekitError:
            pass  # e.g. a missing optional package: that job's row says so when it runs


def _optimize(job: Job, report: Path, cache_dir: Path | None) -> Any:
    from enginekit.pipeline.run import optimize

    return optimize(_plan(job, report, cache_dir), ["enginekit", "sweep", job.id])


def _plan(job: Job, report: Path, cache_dir: Path | None) -> Any:
    from dataclasses import replace

    from enginekit.pipeline.plan import plan_optimize
    from enginekit.settings import BackendSettings, CompareSettings, TimingSettings

    compare = None
    if job.atol is not None or job.rtol is not None:
        from enginekit.compare import Tolerances

        base = CompareSettings()
        compare = replace(base,
                          atol=base.atol if job.atol is None else Tolerances(job.atol, default_given=True),
                          rtol=base.rtol if job.rtol is None else Tolerances(job.rtol, default_given=True))
    dataset = None if job.dataset is None else Path(job.dataset)
    settings = plan_optimize(
        Path(job.model), backends=job.candidates, reference=job.reference, inputs=job.inputs, seed=job.seed,
        cache_dir=cache_dir, backend=BackendSettings(ort_intra_op_threads=job.resources.cpus), compare=compare,
        dataset=dataset, batch_size=(job.batch or 0) if dataset is not None else 0, report_dir=report,
        preprocess=job.preprocess, limit=job.limit, gates=job.gates, task=job.task, threshold=job.threshold,
        ctc_blank=job.ctc_blank, postprocess=job.postprocess,
        masks=None if job.masks is None else Path(job.masks),
        annotations=None if job.annotations is None else Path(job.annotations),
    )
    if job.timing:
        values: dict[str, Any] = {k: int(v) if k.endswith("iterations") else v for k, v in job.timing}
        settings = replace(settings, timing=replace(TimingSettings(), **values))
    return settings


def _summary(job: Job, result: Any, report: Path) -> dict[str, Any]:
    doc = result.to_dict()
    from enginekit.multirun import Candidate

    rows = []
    for r in doc["results"]:
        timing = r.get("timing") or {}
        metrics = r.get("metrics") or {}
        label = str(r["backend"])  # the candidate's label (NAME or NAME:PRECISION)
        rows.append({"label": label, "backend": Candidate.parse(label).backend, "precision": r["precision"],
                     "status": str(r["status"]),
                     "reference": bool(r.get("reference")), "reason": r.get("reason") or "",
                     "median_ms": timing.get("median_ms"), "p90_ms": timing.get("p90_ms"),
                     "speedup": r.get("speedup"),
                     "metrics": {k: v for k, v in metrics.items() if k not in _NOT_METRICS
                                 and isinstance(v, int | float) and not isinstance(v, bool)}})
    # the best engine of this configuration: the fastest passing row among the job's own candidates
    own = {Candidate.parse(c).label for c in job.candidates}
    timed = [r for r in rows if r["status"] == "ok" and r["label"] in own and isinstance(r["median_ms"], int | float)]
    best = min(timed, key=lambda r: float(r["median_ms"]), default=None)
    failed_steps = [f"{s['name']}: {s['reason']}" for s in doc["steps"] if s["status"] == "FAIL"]
    return {"id": job.id, "model": job.model_name, "config": job.config, "backend": job.backend,
            "candidates": list(job.candidates), "batch": job.batch,
            "status": "passed" if result.passed else "failed", "exit_code": result.exit_code,
            "reason": "; ".join(failed_steps)[:2000], "skipped": list(doc.get("skipped") or []),
            "best": None if best is None else {"label": best["label"], "median_ms": best["median_ms"]},
            "rows": rows, "report_dir": str(report)}
