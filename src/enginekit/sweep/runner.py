"""Running a sweep: every job of a :class:`SweepSpec`, locally in this process (default) or as Ray tasks, each result
written as it finishes; jobs already in OUT/results.jsonl are skipped (resume)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enginekit.errors import InvalidArgumentError
from enginekit.sweep.job import check_jobs, error_summary, node_cache_dir, run_job, run_job_on_node
from enginekit.sweep.report import write_report
from enginekit.sweep.spec import Job, SweepSpec
from enginekit.sweep.store import append_result, read_results

__all__ = ["SweepResult", "run_sweep"]

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    """Every job's summary in spec order, which of them ran now and which were resumed."""

    spec: SweepSpec
    out: Path
    results: list[dict[str, Any]]
    ran: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    mode: str = "local"

    @property
    def passed(self) -> bool:
        return all(r.get("status") == "passed" for r in self.results)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        from enginekit.sweep.report import sweep_document

        return dict(sweep_document(self.spec, self.results, self.out, self.mode), ran=self.ran, resumed=self.resumed,
                    exit_code=self.exit_code)


def run_sweep(spec: SweepSpec, out: Path | None = None, *, ray: bool = False, ray_address: str | None = None,
              retries: int | None = None, on_result: Callable[[dict[str, Any]], None] | None = None) -> SweepResult:
    """Run every job of ``spec`` not yet in OUT/results.jsonl and write OUT/sweep.{json,md,html}.

    ``ray``/``ray_address``: run jobs as Ray tasks (a local instance, or the cluster at the address; an instance
    this process already started is used as it is). ``retries``: how often Ray re-runs a job whose worker died
    (default: the spec's). ``on_result``: called with each summary as it is written.
    """
    out = Path(out or spec.out or "sweep-out")
    out.mkdir(parents=True, exist_ok=True)
    done = read_results(out)
    todo = [j for j in spec.jobs if j.id not in done]
    check_jobs(todo, out)
    resumed = [j.id for j in spec.jobs if j.id in done]
    ran: list[str] = []
    use_ray = ray or ray_address is not None
    mode = "ray" if use_ray else "local"

    def record(summary: dict[str, Any]) -> None:
        append_result(out, summary)
        done[summary["id"]] = summary
        ran.append(summary["id"])
        write_report(spec, [done[j.id] for j in spec.jobs if j.id in done], out, mode)
        if on_result is not None:
            on_result(summary)

    if resumed:
        log.info("sweep: %d of %d jobs already finished in %s (skipped)", len(resumed), len(spec.jobs), out)
    if use_ray:
        _run_ray(todo, out, ray_address, spec.retries if retries is None else retries, record)
    else:
        for job in todo:
            record(run_job(job, out, cache_dir=node_cache_dir(job)))
    results = [done[j.id] for j in spec.jobs]
    write_report(spec, results, out, mode)
    return SweepResult(spec=spec, out=out, results=results, ran=ran, resumed=resumed, mode=mode)


def _ray_module() -> Any:
    from enginekit.deps import require

    return require("ray", purpose="sweep --ray (pip install 'enginekit[ray]')")


def _run_ray(jobs: list[Job], out: Path, address: str | None, retries: int,
             record: Callable[[dict[str, Any]], None]) -> None:
    if retries < 0:
        raise InvalidArgumentError(f"--retries {retries}: must be >= 0.")
    ray = _ray_module()
    started = False
    if not ray.is_initialized():
        # address None: a new local instance; "auto" or HOST:PORT or ray://...: join that cluster
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        remote = ray.remote(run_job_on_node)
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        pending: dict[Any, Job] = {}
        for job in jobs:
            why = _infeasible(job, nodes)
            if why:
                record(error_summary(job, why))
                continue
            ref = remote.options(num_cpus=job.resources.cpus, num_gpus=job.resources.gpus,
                                 resources=dict(job.resources.custom) or None, max_retries=retries,
                                 retry_exceptions=False, name=f"enginekit-sweep:{job.id}").remote(job, str(out))
            pending[ref] = job
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    summary = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - worker lost after every retry, or the task failed
                    summary = error_summary(job, f"{type(exc).__name__} after {retries} retries: "
                                            f"{str(exc).splitlines()[0] if str(exc) else ''}"[:2000])
                record(summary)
    finally:
        if started:
            ray.shutdown()


def _infeasible(job: Job, nodes: list[dict[str, float]]) -> str:
    """Why no node of the cluster can ever run ``job`` ('' when one can): Ray would wait for it forever."""
    need = {"CPU": float(job.resources.cpus), "GPU": job.resources.gpus, **dict(job.resources.custom)}
    need = {k: v for k, v in need.items() if v > 0}
    if any(all(node.get(k, 0.0) >= v for k, v in need.items()) for node in nodes):
        return ""
    asked = ", ".join(f"{k}={v:g}" for k, v in need.items())
    return f"no node of the Ray cluster has the resources this job asks for ({asked})"
