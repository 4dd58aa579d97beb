"""The `optimize` table never prints a bare speed-up for an unstable row (its warning is printed under it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import enginekit.pipeline
from enginekit.bench.timing import TimingStats
from enginekit.examples import digits
from enginekit.multirun import BackendRow
from enginekit.pipeline.run import fill_speedups
from enginekit.pipeline.steps import CandidateResult, OptimizeResult


def _fake_optimize(settings: Any, command: Any = None, progress: Any = None) -> OptimizeResult:
    ref = CandidateResult(BackendRow("ort", "fp32", "ok"),
                          timing=TimingStats.from_samples([0.010] * 20, warmup_runs=0).to_dict())
    ref.row.is_reference = True
    noisy = CandidateResult(BackendRow("openvino", "fp32", "ok"),
                            timing=TimingStats.from_samples([0.001, 0.100] * 10, warmup_runs=0).to_dict())
    fill_speedups([ref, noisy], ref, "ort")
    return OptimizeResult(settings, model=Path("m.onnx"), candidates=[ref, noisy], reference="ort")


def test_optimize_table_marks_an_unstable_speedup(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(enginekit.pipeline, "optimize", _fake_optimize)
    monkeypatch.setenv("COLUMNS", "250")
    res = cli("optimize", digits.onnx_path(), "-b", "ort,openvino", "--report", "rep")
    assert res.code == 0, res.stdout + res.stderr
    assert "(unstable: CV 98 %)" in res.stdout
    assert "warning openvino: unstable run: coefficient of variation 98.0%" in res.stdout
    js = cli("optimize", digits.onnx_path(), "-b", "ort,openvino", "--report", "rep", "--json")
    assert '"unstable": true' in js.stdout and '"timing_warnings"' in js.stdout
