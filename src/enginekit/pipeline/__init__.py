"""`optimize`: an ordered list of steps, each returning StepResult(OK|FAIL|SKIPPED, reason, duration, artifacts).

Steps: [export → prepare →] load → inspect → feeds → one step per backend candidate (run, time,
evaluate) → compare → report. Export runs for framework sources, prepare when asked (always after an
export); later stages (engine builds) plug in as more steps.

Modules: :mod:`~enginekit.pipeline.plan` (options → OptimizeSettings), :mod:`~enginekit.pipeline.candidates`
(which backends run, the reference), :mod:`~enginekit.pipeline.steps` (step machinery and results),
:mod:`~enginekit.pipeline.run` (the steps of `optimize`), :mod:`~enginekit.pipeline.fix` (the precision-debug
step).
"""

from __future__ import annotations

from enginekit.pipeline.candidates import (
    TORCH_DEFAULTS,
    candidate_format,
    default_candidates,
    is_torch_source,
    resolve_build_profiles,
    resolve_optimize_candidates,
)
from enginekit.pipeline.fix import fix_candidate
from enginekit.pipeline.plan import plan_optimize, tensorrt_builds
from enginekit.pipeline.run import optimize
from enginekit.pipeline.steps import (
    CandidateResult,
    OptimizeResult,
    Pipeline,
    StepFailed,
    StepResult,
    StepSkipped,
)

__all__ = [
    "TORCH_DEFAULTS",
    "CandidateResult",
    "OptimizeResult",
    "Pipeline",
    "StepFailed",
    "StepResult",
    "StepSkipped",
    "candidate_format",
    "default_candidates",
    "fix_candidate",
    "is_torch_source",
    "optimize",
    "plan_optimize",
    "resolve_build_profiles",
    "resolve_optimize_candidates",
    "tensorrt_builds",
]
