"""The step machinery of `optimize` and its results: StepResult(OK|FAIL|SKIPPED, reason, duration, artifacts)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from enginekit.errors import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    EnginekitError,
    HardwareUnavailableError,
    MissingDependencyError,
)
from enginekit.multirun import BackendRow, weak_reasons
from enginekit.status import Status

if TYPE_CHECKING:
    from enginekit.settings import OptimizeSettings

log = logging.getLogger(__name__)


@dataclass
class StepResult:
    name: str
    status: Status
    reason: str = ""
    duration_s: float = 0.0
    artifacts: list[str] = field(default_factory=list)
    required: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class StepFailed(Exception):
    """Raised inside a step to mark it FAIL with a reason."""


class StepSkipped(Exception):
    """Raised inside a step to mark it SKIPPED with a reason."""


@dataclass
class CandidateResult:
    row: BackendRow
    timing: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    speedup: float | None = None
    # the timing (or the speed-up) is unstable: this row's coefficient of variation, or the reference's, is above
    # TimingSettings.unstable_cv; timing_warnings says which (the warning text of `enginekit bench`)
    unstable: bool = False
    timing_warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**self.row.to_dict(), "timing": self.timing, "metrics": self.metrics, "speedup": self.speedup,
                "unstable": self.unstable, "timing_warnings": list(self.timing_warnings)}


@dataclass
class OptimizeResult:
    settings: OptimizeSettings
    model: Path | None = None
    steps: list[StepResult] = field(default_factory=list)
    candidates: list[CandidateResult] = field(default_factory=list)
    reference: str | None = None
    model_info: dict[str, Any] | None = None
    feed: dict[str, np.ndarray] = field(default_factory=dict)
    dataset: str | None = None
    stages: dict[str, Any] = field(default_factory=dict)  # export / prepare results
    search: dict[str, Any] | None = None  # the configuration search (PyTorch sources), SearchResult.to_dict()

    @property
    def passed(self) -> bool:
        """No step failed (a failed build fails the run as much as a failed comparison) and every candidate is ok
        or skipped because a package or device is missing here."""
        return (all(s.status != Status.STEP_FAIL for s in self.steps)
                and all(c.row.status in (Status.OK, Status.SKIPPED) for c in self.candidates))

    @property
    def weak_reference(self) -> list[str]:
        """Why a pass means little: reference outputs near-constant or saturated (see compare.reference_quality)."""
        return weak_reasons([c.row for c in self.candidates])

    @property
    def skipped(self) -> list[str]:
        """``label: reason`` of every candidate that did not run here (missing package or device)."""
        return [f"{c.row.label}: {c.row.reason}" for c in self.candidates if c.row.status == Status.SKIPPED]

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.passed else EXIT_CHECK_FAILED

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "optimize",
            "passed": self.passed,
            "skipped": self.skipped,
            "weak_reference": self.weak_reference,
            "model": str(self.model) if self.model else None,
            "model_info": self.model_info,
            "reference": self.reference,
            "dataset": self.dataset,
            "stages": self.stages,
            "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in self.feed.items()},
            "steps": [s.to_dict() for s in self.steps],
            "results": [c.to_dict() for c in self.candidates],
            "search": self.search,
        }


def _skip_reason(exc: Exception) -> str:
    """A skip says why: the missing package or hardware, in the error's own words."""
    if isinstance(exc, MissingDependencyError):
        return f"missing package: {exc}"
    if isinstance(exc, HardwareUnavailableError):
        return f"not possible on this machine: {exc}"
    return str(exc)


class Pipeline:
    """Runs steps in order; a required step that fails stops the pipeline, an optional one does not."""

    def __init__(self, result: OptimizeResult) -> None:
        self.result = result
        self.stopped = False

    def step(
        self, name: str, fn: Callable[[StepResult], None], *, required: bool = True, always: bool = False
    ) -> StepResult:
        """Run ``fn``; ``always`` steps (the report) run even after a required step failed."""
        res = StepResult(name, Status.STEP_OK, required=required)
        if self.stopped and not always:
            res.status, res.reason = Status.STEP_SKIPPED, "an earlier required step failed"
        else:
            t0 = time.perf_counter()
            try:
                fn(res)
            except (StepSkipped, MissingDependencyError, HardwareUnavailableError) as exc:
                res.status, res.reason = Status.STEP_SKIPPED, _skip_reason(exc)
            except (StepFailed, EnginekitError) as exc:
                res.status, res.reason = Status.STEP_FAIL, str(exc)
            except Exception as exc:  # noqa: BLE001 - a bug in a step fails that step, with its type, never the run
                log.debug("step %s failed", name, exc_info=True)
                res.status, res.reason = Status.STEP_FAIL, f"unexpected {type(exc).__name__}: {exc}"
            res.duration_s = time.perf_counter() - t0
            if res.status == Status.STEP_FAIL and required:
                self.stopped = True
        log.info("step %-24s %s %s", name, res.status, res.reason)
        self.result.steps.append(res)
        return res
