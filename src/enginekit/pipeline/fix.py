"""`optimize`'s precision-debug step: a failed fp16/bf16/int8 candidate gets a plan and a fixed model beside it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from enginekit.compare.per_precision import settings_for_precision
from enginekit.multirun import BackendRow, Candidate, use_runner
from enginekit.pipeline.steps import CandidateResult
from enginekit.status import Status

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import onnx

    from enginekit.settings import OptimizeSettings


def fix_candidate(failed: CandidateResult, model: Path, feed: dict[str, np.ndarray], reference: BackendRow,
                  settings: OptimizeSettings, *, loaded: onnx.ModelProto | None = None) -> CandidateResult | None:
    """Run the precision debugger on a failed fp16/bf16/int8 candidate; evaluate the fixed model beside it.

    fp16/bf16: the fixed ONNX (FP32 islands from the plan, IO types kept) is run by the onnx-reference backend,
    which stores every value in its type (a faithful low-precision run on any machine). int8 (a TensorRT INT8
    build): the Q/DQ model without the plan's nodes, calibrated on that build's --calib-data (else the feed),
    is run by onnxruntime's CPU INT8 kernels. plan.json and the fixed model are written to the report folder
    for `enginekit build --precision-plan` and other backends. ``loaded``: ``model`` as the pipeline loaded it
    (without external data; the file is read again only when some weights are external).
    """
    import onnx

    from enginekit.compare import compare_outputs
    from enginekit.compare.reference_quality import weak_reference_reasons
    from enginekit.debug.workflow import debug_precision
    from enginekit.graph.precision import save_plan
    from enginekit.settings import DebugSettings

    precision = failed.row.precision
    calibration = _calibration_for(failed, settings) if precision == "int8" else None
    # the search's own verdict: a weak reference is reported on the row below, not turned into "inconclusive"
    debug = DebugSettings(precision=precision, calibration=calibration, allow_weak_reference=True)
    proto = _with_weights(model, loaded)
    result = debug_precision(proto, [feed], debug)
    fix = result.fix
    runner = "ort" if precision == "int8" else "onnx-reference"
    folder = settings.report_dir / f"precision-{failed.row.label.replace(':', '-')}"
    folder.mkdir(parents=True, exist_ok=True)
    save_plan(fix.plan, folder / "plan.json")
    fixed = folder / "fixed.onnx"
    onnx.save_model(fix.model, str(fixed))
    label = f"{precision}+plan"
    row = BackendRow(runner, label, Status.OK)
    row.details = {"fixes": failed.row.label, "plan": str(folder / "plan.json"), "fixed_model": str(fixed),
                   "fp32_nodes": fix.kept, "total_nodes": fix.total_nodes,
                   "naive_fp32_nodes": fix.baseline_nodes, "fp32_flops_fraction": fix.fp32_flops_fraction,
                   "evaluations": fix.evaluations, "nodes": [e.node for e in fix.plan.keep_fp32]}
    row.details["layerwise"] = _layerwise(proto, feed, precision, result)
    cand_row, outputs = use_runner(Candidate(runner), fixed, settings.backend, lambda r: r.infer(feed))
    if outputs is None or reference.outputs is None:
        row.status, row.reason = cand_row.status, cand_row.reason or "no reference outputs"
        return CandidateResult(row)
    row.outputs = outputs
    judged = settings_for_precision(settings.compare, precision, reference.outputs)
    row.comparison = compare_outputs(reference.outputs, outputs, judged)
    weak = weak_reference_reasons(reference.outputs, judged)
    if weak:
        row.details["weak_reference"] = weak
    nodes = ", ".join(row.details["nodes"][:6]) + ("…" if fix.kept > 6 else "")
    if fix.passed and row.comparison.passed:
        row.reason = (f"fixes {failed.row.label}: {fix.kept} node(s) kept in FP32 ({nodes}) vs "
                      f"{fix.baseline_nodes} for everything after the first bad layer; plan {folder / 'plan.json'}")
    else:
        row.status = Status.FAILED
        row.reason = f"no passing plan for {failed.row.label} ({fix.message or 'outputs still differ'})"
    return CandidateResult(row)


def _layerwise(proto: onnx.ModelProto, feed: dict[str, np.ndarray], precision: str,
               result: Any) -> dict[str, Any] | None:
    """Per-tensor errors of the all-low-precision model against FP32 (report.html's error-growth plot), as
    `debug precision --report` computes them; None (logged) when that diff fails, which must not lose the fix."""
    from enginekit.debug.execute import Executor
    from enginekit.debug.layerwise import layerwise_diff

    fix = result.fix
    if fix.all_low_model is None:
        return None
    try:
        layers = layerwise_diff(proto, feed, precision=precision, candidate=fix.all_low_model,
                                executor=Executor(fix.runs["candidates"]["backend"]), reference=result.reference)
    except Exception:  # noqa: BLE001 - a diagnostic; the plan and its verdict stand without it
        log.warning("layerwise diff for %s failed", precision, exc_info=True)
        return None
    return layers.to_dict()


def _with_weights(model: Path, loaded: onnx.ModelProto | None) -> onnx.ModelProto:
    """``loaded`` when it holds every weight, else ``model`` read with its external data."""
    from enginekit.graph.load import external_data_files, load_model

    if loaded is not None and not external_data_files(loaded):
        return loaded
    return load_model(model, check=False)


def _calibration_for(failed: CandidateResult, settings: OptimizeSettings) -> Path | None:
    """The --calib-data of the INT8 build behind ``failed`` (None: calibrate on the debug feed)."""
    for b in settings.builds:
        if b.precision == "int8" and b.backend == failed.row.backend and b.calib_data is not None:
            return b.calib_data
    return None
