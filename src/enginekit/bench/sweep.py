"""`benchmark()`: every candidate × every shape point through one protocol, one row each.

A candidate that cannot load becomes rows with status error/skipped for every point; a point that fails on
one candidate becomes that row's error. Neither aborts the sweep.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from enginekit.bench.points import PointSkipped, ShapePoint, plan_points, resolve_point
from enginekit.bench.protocol import CPU_CLOCK, CUDA_CLOCK, Clock, Step, make_step, run_concurrent
from enginekit.bench.result import BenchResult, BenchRow, Timing, fill_speedups
from enginekit.data import InputShape
from enginekit.errors import (
    EnginekitError,
    HardwareUnavailableError,
    InvalidArgumentError,
    MissingDependencyError,
    UserError,
)
from enginekit.settings import BackendSettings, BenchSettings
from enginekit.status import Status

if TYPE_CHECKING:
    from enginekit.backends.base import Runner
    from enginekit.multirun import Candidate

log = logging.getLogger(__name__)

# Backends whose runner may be called from several threads at once (an onnxruntime session's Run is
# thread-safe). Others (an OpenVINO infer request, for one) get a runner per stream, loaded once.
THREAD_SAFE_BACKENDS = frozenset({"ort"})
Progress = Callable[[str], None]


def check_bench_settings(s: BenchSettings) -> None:
    """Refuse impossible protocol settings (user errors)."""
    problems = []
    if s.warmup_s < 0 or s.duration_s < 0:
        problems.append("--warmup and --duration must be >= 0 s")
    if s.warmup_iterations < 0:
        problems.append("--warmup-iterations must be >= 0")
    if s.iterations < 1 or s.max_iterations < s.iterations:
        problems.append("--iterations must be >= 1 (and at most max_iterations)")
    if s.streams < 1:
        problems.append("--streams must be >= 1")
    if any(b < 1 for b in s.batches):
        problems.append("--batch values must be >= 1")
    if s.unstable_cv <= 0:
        problems.append("the unstable-CV threshold must be > 0")
    if problems:
        raise InvalidArgumentError("Bad benchmark settings: " + "; ".join(problems) + ".")


def resolve_bench_candidates(
    names: Sequence[Candidate | str], baseline: str | None, default_precision: dict[str, str] | None = None
) -> tuple[list[Candidate], Candidate]:
    """Candidates in order (duplicates refused) and the baseline (default: the first)."""
    from enginekit.multirun import Candidate, resolve_candidates

    texts = [c.label if isinstance(c, Candidate) else c for c in names]
    try:
        return resolve_candidates(texts, baseline, default_precision or {})
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(exc.message.replace("--reference", "--baseline"), hint=exc.hint) from None


def classify(exc: BaseException) -> tuple[str, str]:
    """(status, reason) of a failure, as use_runner does: missing deps/hardware are skips, the rest errors."""
    if isinstance(exc, MissingDependencyError | HardwareUnavailableError):
        return Status.SKIPPED, str(exc)
    if isinstance(exc, EnginekitError):
        return Status.ERROR, str(exc)
    return Status.ERROR, f"{type(exc).__name__}: {exc}".strip()


def benchmark(
    model: Path,
    candidates: Sequence[Candidate | str],
    bench: BenchSettings | None = None,
    backend: BackendSettings | None = None,
    inputs: Sequence[InputShape] = (),
    *,
    clock: Clock = time.perf_counter_ns,
    progress: Progress | None = None,
) -> BenchResult:
    """Time ``model`` on every candidate at every shape point of ``bench`` (the library call of `enginekit bench`).

    ``bench`` defaults to ``BenchSettings()`` and ``backend`` to ``BackendSettings()``.
    ``inputs`` are the base shapes (``--input``) for symbolic dims; ``bench.shapes`` and ``bench.batches``
    make the sweep. Rows come shape point by shape point, candidates in the order given.
    """
    from enginekit.multirun import check_backend_settings, model_io, use_runner
    from enginekit.registry import check_format, get_backend
    from enginekit.sources.detect import model_format

    bench = bench if bench is not None else BenchSettings()
    backend = backend if backend is not None else BackendSettings()
    check_bench_settings(bench)
    cands, base = resolve_bench_candidates(candidates, bench.baseline, {"openvino": backend.openvino_precision})
    model = Path(model)
    fmt = model_format(model)
    for c in cands:
        check_format(get_backend(c.backend), fmt)
    points = plan_points(inputs, bench.shapes, bench.batches)
    if fmt != "engine":  # shape errors are user errors, found before any backend runs
        specs, _ = model_io(model, fmt, backend)
        for p in points:
            with contextlib.suppress(PointSkipped):
                resolve_point(specs, p)
    check_backend_settings(cands, backend)

    by_candidate: dict[Candidate, list[BenchRow]] = {}
    for cand in cands:
        if progress:
            progress(f"{cand.label}: loading")

        def work(runner: Runner, cand: Candidate = cand) -> list[BenchRow]:
            return _bench_runner(runner, cand, model, points, bench, backend, clock, progress)

        row, rows = use_runner(cand, model, backend, work)
        if rows is None:  # the candidate did not load: one row per point with its status
            rows = [BenchRow(cand.backend, cand.precision, p.label, row.status, row.reason, batch=p.batch,
                             streams=bench.streams, options=cand.options) for p in points]
        for r in rows:
            r.details, r.load_s = row.details, row.load_s
        by_candidate[cand] = rows
    ordered = [by_candidate[c][i] for i in range(len(points)) for c in cands]
    fill_speedups(ordered, base.label)
    return BenchResult(str(model), base.label, bench, ordered)


def _bench_runner(
    runner: Runner, cand: Candidate, model: Path, points: Sequence[ShapePoint], bench: BenchSettings,
    backend: BackendSettings, clock: Clock, progress: Progress | None,
) -> list[BenchRow]:
    """Every point on one loaded runner (plus one runner per extra stream when the backend needs it)."""
    from enginekit.registry import get_backend

    with contextlib.ExitStack() as stack:
        runners = [runner]
        if bench.streams > 1:
            if getattr(runner, "thread_safe", runner.backend in THREAD_SAFE_BACKENDS):
                runners = [runner] * bench.streams
            else:
                info = get_backend(cand.backend)
                for _ in range(bench.streams - 1):
                    runners.append(stack.enter_context(info.create_runner(model, cand.settings(backend),
                                                                          cand.precision)))
        rows = []
        for p in points:
            if progress:
                progress(f"{cand.label}: {p.label}")
            rows.append(_bench_point(runners, cand, p, bench, clock))
        return rows


def _bench_point(
    runners: Sequence[Runner], cand: Candidate, point: ShapePoint, bench: BenchSettings, clock: Clock
) -> BenchRow:
    from enginekit.data import random_feed

    runner = runners[0]
    row = BenchRow(cand.backend, cand.precision, point.label, batch=point.batch, streams=len(runners),
                   options=cand.options)
    try:
        if bench.cuda_graph and not runner.supports_cuda_graph:
            raise HardwareUnavailableError(f"CUDA graph: not supported by {runner.backend}")
        specs = runner.inputs()
        shapes, batch = resolve_point(specs, point)
        row.shapes, row.batch = shapes, batch
        feed = random_feed(specs, shapes, seed=bench.seed)
        for r in dict.fromkeys(runners):  # validated once per runner (checked, not timed)
            r.infer(feed)

        def factory(r: Runner) -> Callable[[], Step]:
            return lambda: make_step(r, feed, with_transfers=bench.with_transfers, cuda_graph=bench.cuda_graph,
                                     clock=clock, own_stream=len(runners) > 1)

        samples = run_concurrent([factory(r) for r in runners], bench, clock)
        row.timing = Timing.from_samples(samples, batch, CUDA_CLOCK if runner.device == "cuda" else CPU_CLOCK)
        row.check_stability(bench.unstable_cv)
        for w in row.warnings:  # kept in the row (the CLI prints it); logged for library users
            log.info("%s at %s: %s", cand.label, point.label, w)
    except PointSkipped as exc:
        row.status, row.reason = Status.SKIPPED, str(exc)
    except UserError as exc:  # a feed the backend refuses: this row's error, not the whole sweep's
        row.status, row.reason = Status.ERROR, str(exc)
    except Exception as exc:  # noqa: BLE001 - a backend's own failure becomes a row, never a crash
        log.debug("%s at %s failed", cand.label, point.label, exc_info=True)
        row.status, row.reason = classify(exc)
    return row
