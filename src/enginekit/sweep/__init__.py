"""`enginekit sweep SWEEP.yaml`: many models x backends x precisions x batch sizes, as jobs (locally, or on a Ray
cluster), resumable, in one report (docs/SCALE.md)."""

from __future__ import annotations

from enginekit.sweep.runner import SweepResult, run_sweep
from enginekit.sweep.spec import Job, Resources, SweepSpec, load_sweep, parse_sweep

__all__ = ["Job", "Resources", "SweepResult", "SweepSpec", "load_sweep", "parse_sweep", "run_sweep"]
