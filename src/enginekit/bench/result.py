"""Rows and result of `enginekit bench`: one row per backend × precision × shape point."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from enginekit.bench.stats import LatencyStats, summarize, throughput, unstable_warning
from enginekit.errors import EXIT_CHECK_FAILED, EXIT_MISSING_DEPENDENCY, EXIT_OK
from enginekit.status import Status
from enginekit.variants import Options, format_options

if TYPE_CHECKING:
    from enginekit.bench.protocol import Samples
    from enginekit.settings import BenchSettings


@dataclass
class Timing:
    """Statistics of one measured loop."""

    clock: str  # perf_counter_ns | cuda-events
    latency: LatencyStats  # device time with cuda-events, host time otherwise
    host: LatencyStats
    phases: dict[str, LatencyStats]  # h2d / compute / d2h, when the loop split them
    items_per_s: float
    runs_per_s: float
    runs: int
    warmup_iterations: int
    warmup_s: float
    wall_s: float

    @classmethod
    def from_samples(cls, samples: Samples, batch: int, clock: str) -> Timing:
        phases = {name: summarize(values) for name, values in (
            ("h2d", samples.h2d_ns), ("compute", samples.compute_ns), ("d2h", samples.d2h_ns)) if values}
        return cls(
            clock=clock,
            latency=summarize(samples.latency_ns),
            host=summarize(samples.host_ns),
            phases=phases,
            items_per_s=throughput(batch, samples.runs, samples.wall_ns),
            runs_per_s=throughput(1, samples.runs, samples.wall_ns),
            runs=samples.runs,
            warmup_iterations=samples.warmup_iterations,
            warmup_s=samples.warmup_ns / 1e9,
            wall_s=samples.wall_ns / 1e9,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "clock": self.clock,
            "runs": self.runs,
            "warmup_iterations": self.warmup_iterations,
            "warmup_s": self.warmup_s,
            "wall_s": self.wall_s,
            "runs_per_s": self.runs_per_s,
            "items_per_s": self.items_per_s,
            "latency": self.latency.to_dict(),
            "host_latency": self.host.to_dict(),
            "phases": {k: v.to_dict() for k, v in self.phases.items()},
        }


@dataclass
class BenchRow:
    backend: str
    precision: str
    point: str  # the shape point's label
    status: str = Status.OK
    reason: str = ""
    batch: int | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    streams: int = 1
    timing: Timing | None = None
    speedup: float | None = None
    warnings: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    load_s: float | None = None
    options: Options = ()  # the candidate's options (enginekit.variants)

    @property
    def label(self) -> str:
        base = self.backend if self.precision == "fp32" else f"{self.backend}:{self.precision}"
        return base + format_options(self.options)

    @property
    def median_ms(self) -> float | None:
        return self.timing.latency.median_ms if self.timing else None

    @property
    def p99_ms(self) -> float | None:
        return self.timing.latency.p99_ms if self.timing else None

    @property
    def items_per_s(self) -> float | None:
        return self.timing.items_per_s if self.timing else None

    def check_stability(self, threshold: float) -> None:
        if self.timing is not None:
            warning = unstable_warning(self.timing.latency, threshold)
            if warning:
                self.warnings.append(warning)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.label,
            "precision": self.precision,
            "point": self.point,
            "status": self.status,
            "reason": self.reason,
            "batch": self.batch,
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "streams": self.streams,
            "median_ms": self.median_ms,
            "p99_ms": self.p99_ms,
            "items_per_s": self.items_per_s,
            "speedup": self.speedup,
            "unstable": any(w.startswith("unstable") for w in self.warnings),
            "warnings": list(self.warnings),
            "timing": self.timing.to_dict() if self.timing else None,
            "details": self.details,
            "load_s": self.load_s,
        }


def fill_speedups(rows: Sequence[BenchRow], baseline: str) -> None:
    """speed-up = baseline median latency / row median latency, at the same shape point."""
    base = {r.point: r.median_ms for r in rows if r.label == baseline and r.status == Status.OK}
    for r in rows:
        ref, ms = base.get(r.point), r.median_ms
        r.speedup = ref / ms if ref is not None and ms is not None and ms > 0 and r.status == Status.OK else None


def machine_info() -> dict[str, Any]:
    """CPU model and cores, for the record (no library is imported)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "usable_cpus": usable, "platform": platform.platform(),
            "python": platform.python_version()}


@dataclass
class BenchResult:
    model: str
    baseline: str
    settings: BenchSettings
    rows: list[BenchRow]
    machine: dict[str, Any] = field(default_factory=machine_info)

    @property
    def passed(self) -> bool:
        return all(r.status == Status.OK for r in self.rows)

    @property
    def exit_code(self) -> int:
        """0 every row ran, 1 a row errored, 3 some rows were skipped (and none errored)."""
        if any(r.status == Status.ERROR for r in self.rows):
            return EXIT_CHECK_FAILED
        if any(r.status == Status.SKIPPED for r in self.rows):
            return EXIT_MISSING_DEPENDENCY
        return EXIT_OK

    def row(self, label: str, point: str | None = None) -> BenchRow | None:
        return next((r for r in self.rows if r.label == label and (point is None or r.point == point)), None)

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        return {
            "kind": "bench",
            "passed": self.passed,
            "model": self.model,
            "baseline": self.baseline,
            "settings": {
                "warmup_s": s.warmup_s, "warmup_iterations": s.warmup_iterations, "duration_s": s.duration_s,
                "iterations": s.iterations, "max_iterations": s.max_iterations, "batches": list(s.batches),
                "shapes": [[g.to_arg() for g in shape_set] for shape_set in s.shapes],
                "with_transfers": s.with_transfers, "cuda_graph": s.cuda_graph, "streams": s.streams,
                "unstable_cv": s.unstable_cv, "seed": s.seed,
            },
            "machine": self.machine,
            "rows": [r.to_dict() for r in self.rows],
        }
