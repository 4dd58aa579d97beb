"""`enginekit run PACKAGE`: the packaged engine of one objective, on this machine, checked against what was recorded.

The engine runs the package's saved inputs; its outputs are compared with the outputs recorded when the package
was made, with the tolerance the engine was judged by then. An engine that cannot run here (another GPU, a
missing library or package) is a SKIPPED row with the runner's own reason (exit 3), never a crash.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enginekit.deploy.package import OBJECTIVES, backend_settings_from_json, package_member, read_package, require
from enginekit.errors import InvalidArgumentError
from enginekit.multirun import BackendRow, Candidate, use_runner
from enginekit.status import Status


@dataclass
class PackageRun:
    package: Path
    objective: str
    candidate: str
    row: BackendRow

    @property
    def exit_code(self) -> int:
        from enginekit.errors import EXIT_CHECK_FAILED, EXIT_MISSING_DEPENDENCY, EXIT_OK

        if self.row.status == Status.OK:
            return EXIT_OK
        return EXIT_MISSING_DEPENDENCY if self.row.status == Status.SKIPPED else EXIT_CHECK_FAILED

    def to_dict(self) -> dict[str, Any]:
        return {"package": str(self.package), "objective": self.objective, "candidate": self.candidate,
                "passed": self.row.status == Status.OK, "result": self.row.to_dict()}


def packaged_candidate(spec: dict[str, Any], objective: str) -> tuple[Candidate, dict[str, Any]]:
    if objective not in OBJECTIVES:
        raise InvalidArgumentError(f"--objective {objective!r}: choose {' or '.join(OBJECTIVES)}.")
    entry = (spec.get("engines") or {}).get(objective)
    if not isinstance(entry, dict):
        raise InvalidArgumentError(f"The package has no {objective} engine.")
    if not isinstance(entry.get("candidate"), str):
        raise InvalidArgumentError(f"The package's {objective} engine names no candidate.")
    return Candidate.parse(str(entry["candidate"])), entry


def packaged_model(package: Path, spec: dict[str, Any], entry: dict[str, Any]) -> Path:
    key = "engines.file" if entry.get("file") else "model"
    return package_member(package, entry.get("file") or spec["model"], key)


def run_package(package: str | Path, objective: str = "min_latency", *, trust_remote_code: bool = False) -> PackageRun:
    """Run the packaged engine of ``objective`` on the package's inputs and compare with the recorded outputs."""
    from enginekit.compare import CompareSettings, Tolerances, compare_outputs
    from enginekit.data import load_arrays

    path = Path(package)
    spec = read_package(path)
    cand, entry = packaged_candidate(spec, objective)
    require(path, spec, ["samples.inputs", f"engines.{objective}.outputs"])
    feed = load_arrays(package_member(path, spec["samples"]["inputs"], "samples.inputs"))
    recorded = load_arrays(package_member(path, entry["outputs"], f"engines.{objective}.outputs"))
    settings = dataclasses.replace(backend_settings_from_json(spec.get("backend_settings"), path),
                                   trust_remote_code=trust_remote_code)  # trust from the caller, never the file
    row, outputs = use_runner(cand, packaged_model(path, spec, entry), settings, lambda r: r.infer(feed))
    if outputs is not None:
        tol = entry.get("tolerance") or {}
        atol = Tolerances(1e-5, tuple((n, float(t["atol"])) for n, t in tol.items() if t.get("atol") is not None))
        rtol = Tolerances(1e-5, tuple((n, float(t["rtol"])) for n, t in tol.items() if t.get("rtol") is not None))
        row.outputs = dict(outputs)
        row.comparison = compare_outputs(recorded, outputs, CompareSettings(atol=atol, rtol=rtol))
        if not row.comparison.passed:
            row.status = Status.FAILED
            row.reason = "outputs differ from the recorded ones: " + "; ".join(
                f"{o.name}: {o.reason}" for o in row.comparison.outputs if not o.passed)
    return PackageRun(path, objective, cand.label, row)
