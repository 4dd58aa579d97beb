"""`optimize`: an ordered list of steps, each returning StepResult(OK|FAIL|SKIPPED, reason, duration, artifacts).

Steps: [export → prepare →] load → inspect → feeds → one step per backend candidate (run, time,
evaluate) → compare → report. Export runs for framework sources, prepare when asked (always after an
export); later stages (engine builds) plug in as more steps.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from enginekit.compare.per_precision import settings_for_precision
from enginekit.errors import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    EnginekitError,
    HardwareUnavailableError,
    InvalidArgumentError,
    MissingDependencyError,
)
from enginekit.multirun import (
    ERROR,
    OK,
    SKIPPED,
    BackendRow,
    Candidate,
    check_backend_settings,
    compare_rows,
    use_runner,
    weak_reasons,
)
from enginekit.registry import BACKENDS, get_backend

if TYPE_CHECKING:
    from enginekit.backends.base import Runner
    from enginekit.eval.datasets import Dataset
    from enginekit.settings import BuildSettings, OptimizeSettings
    from enginekit.tensors import TensorSpec

log = logging.getLogger(__name__)

STEP_OK, STEP_FAIL, STEP_SKIPPED = "OK", "FAIL", "SKIPPED"


@dataclass
class StepResult:
    name: str
    status: str
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

    def to_dict(self) -> dict[str, Any]:
        return {**self.row.to_dict(), "timing": self.timing, "metrics": self.metrics, "speedup": self.speedup}


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

    @property
    def passed(self) -> bool:
        """No step failed (a failed build fails the run as much as a failed comparison) and every candidate is ok
        or skipped because a package or device is missing here."""
        return (all(s.status != STEP_FAIL for s in self.steps)
                and all(c.row.status in (OK, SKIPPED) for c in self.candidates))

    @property
    def weak_reference(self) -> list[str]:
        """Why a pass means little: reference outputs near-constant or saturated (see compare.reference_quality)."""
        return weak_reasons([c.row for c in self.candidates])

    @property
    def skipped(self) -> list[str]:
        """``label: reason`` of every candidate that did not run here (missing package or device)."""
        return [f"{c.row.label}: {c.row.reason}" for c in self.candidates if c.row.status == SKIPPED]

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
        res = StepResult(name, STEP_OK, required=required)
        if self.stopped and not always:
            res.status, res.reason = STEP_SKIPPED, "an earlier required step failed"
        else:
            t0 = time.perf_counter()
            try:
                fn(res)
            except (StepSkipped, MissingDependencyError, HardwareUnavailableError) as exc:
                res.status, res.reason = STEP_SKIPPED, _skip_reason(exc)
            except (StepFailed, EnginekitError) as exc:
                res.status, res.reason = STEP_FAIL, str(exc)
            res.duration_s = time.perf_counter() - t0
            if res.status == STEP_FAIL and required:
                self.stopped = True
        log.info("step %-24s %s %s", name, res.status, res.reason)
        self.result.steps.append(res)
        return res


# PyTorch-native candidates added for PyTorch sources (precisions beyond fp32 are chosen with --backend).
TORCH_DEFAULTS = (Candidate("torch"), Candidate("inductor"), Candidate("aoti"))


def default_candidates(torch_source: bool = False) -> list[Candidate]:
    """Every backend and precision that runs ONNX models (TensorRT ones come from --target builds), and,
    for a PyTorch source, eager PyTorch, torch.compile and AOTInductor on the source itself."""
    onnx = [Candidate(b.name, p) for b in BACKENDS if "onnx" in b.formats and "cuda" not in b.devices
            for p in (b.default_precisions or b.precisions)]
    return onnx + (list(TORCH_DEFAULTS) if torch_source else [])


def is_torch_source(settings: OptimizeSettings) -> bool:
    from enginekit.export.source import PADDLE, detect_source

    return settings.export is not None and detect_source(settings.export.source).kind != PADDLE


def candidate_format(c: Candidate) -> str:
    """The model a candidate runs: the ONNX model, or the PyTorch source for torch/inductor/aoti."""
    return "onnx" if "onnx" in get_backend(c.backend).formats else "torch"


def resolve_optimize_candidates(settings: OptimizeSettings) -> tuple[list[Candidate], Candidate]:
    from enginekit.registry import check_format

    torch_source = is_torch_source(settings)
    cands = [Candidate.parse(n) for n in settings.backends] if settings.backends else default_candidates(torch_source)
    for c in cands:
        check_format(get_backend(c.backend), "torch" if torch_source and candidate_format(c) == "torch" else "onnx")
    if len(set(cands)) != len(cands):
        raise InvalidArgumentError("A --backend is listed twice.")
    if settings.reference:
        ref = Candidate.parse(settings.reference)
        if ref not in cands:
            cands.insert(0, ref)
    else:
        usable = [c for c in cands if get_backend(c.backend).available().ok]
        preferred = Candidate("torch") if torch_source and Candidate("torch") in usable else Candidate("ort")
        ref = preferred if preferred in usable else (usable[0] if usable else cands[0])
    return cands, ref


def resolve_build_profiles(b: BuildSettings, inputs: list[TensorSpec], feed: Mapping[str, np.ndarray]) -> BuildSettings:
    """Without --profile, a dynamic model gets one profile around the comparison feed: MIN 1 on every
    dynamic dim, OPT = MAX = the feed's shape (the dataset is evaluated in batches no larger than it)."""
    if b.profiles or b.profile_from is not None or not any(i.is_dynamic for i in inputs):
        return b
    parts = []
    for spec in inputs:
        shape = tuple(feed[spec.name].shape)
        lo = tuple(1 if not isinstance(d, int) else s for d, s in zip(spec.shape or (), shape, strict=False))
        dims = ["x".join(str(v) for v in t) for t in (lo or shape, shape, shape)]
        parts.append(f"{spec.name}:{dims[0]}:{dims[1]}:{dims[2]}")
    return replace(b, profiles=tuple(parts))


def _batch_size(specs: list[TensorSpec], requested: int) -> int:
    fixed = {s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], int)}
    if fixed:
        size = int(fixed.pop())
        if requested and requested != size:
            raise InvalidArgumentError(f"--batch-size {requested}: the model's batch dim is fixed at {size}.")
        return size
    return requested


def optimize(settings: OptimizeSettings, command: Sequence[str] | None = None) -> OptimizeResult:
    """The main job. Never raises for a backend's failure; raises EnginekitError for bad settings.

    ``command`` is what reproduce.sh runs; by default the CLI command equivalent to ``settings``.
    """
    from enginekit.compare import validate_tolerance_names
    from enginekit.eval.classification import classification_metrics
    from enginekit.eval.datasets import load_dataset
    from enginekit.fileutil import check_writable_folder
    from enginekit.graph.inspect import inspect_model
    from enginekit.graph.io import input_specs, output_specs
    from enginekit.graph.load import load_model
    from enginekit.multirun import prepare_feed

    if settings.model is not None:  # a missing or unreadable model is a user error (exit 2): no report folder
        load_model(settings.model, load_external_data=False, check=False)
    if settings.export is not None:  # a TorchScript/.pt2 source runs code when loaded: refused (exit 2) untrusted
        from enginekit.backends.torch_load import check_source_trust

        check_source_trust(settings.export.source, settings.export.trust_remote_code)
    check_writable_folder(settings.report_dir, "--report")
    result = OptimizeResult(settings)
    cands, ref = resolve_optimize_candidates(settings)
    cands += [c for c in (Candidate(b.backend, b.precision) for b in settings.builds) if c not in cands]
    check_backend_settings(cands, settings.backend)
    from enginekit.report.writer import prepare_report_dir

    prepare_report_dir(settings.report_dir)  # before anything is written there: refuse a folder of unrelated files
    result.reference = ref.label
    pipe = Pipeline(result)
    state: dict[str, Any] = {}

    def export(step: StepResult) -> None:
        from enginekit.export.api import export_model

        assert settings.export is not None
        res = export_model(settings.export)
        state["model_path"] = res.output
        result.stages["export"] = res.to_dict()
        how = f"verified on {len(res.cases)} feeds" if res.verified else "not verified (--no-verify)"
        step.reason = f"{res.framework} → ONNX ({res.exporter}, opset {res.opset_produced}); {how}"
        step.artifacts.append(str(res.output))

    def prepare(step: StepResult) -> None:
        from enginekit.graph.prepare import prepare_model

        assert settings.prepare is not None
        source = state.get("model_path") or settings.model
        if source is None:
            raise StepSkipped("no model to prepare")
        res = prepare_model(Path(source), settings.prepare)
        result.stages["prepare"] = res.to_dict()
        state["model_path"] = Path(res.output)
        step.reason = res.message
        step.artifacts.append(res.output)

    def load(step: StepResult) -> None:
        path = state.get("model_path") or settings.model
        dataset = settings.dataset
        if path is None:
            from enginekit.examples import digits

            path, dataset = digits.onnx_path(), dataset or digits.test_data_path()
        proto = load_model(path, load_external_data=False, check=False)
        state["inputs"], state["outputs"] = input_specs(proto), output_specs(proto)
        validate_tolerance_names(settings.compare, [o.name for o in state["outputs"]])
        result.model, state["dataset_path"] = Path(path), dataset
        step.artifacts.append(str(path))

    def inspect(step: StepResult) -> None:
        assert result.model is not None
        result.model_info = inspect_model(result.model).to_dict()

    def feeds(step: StepResult) -> None:
        dpath = state["dataset_path"]
        if dpath is not None:
            ds = load_dataset(dpath, state["inputs"])
            state["dataset"] = ds
            result.dataset = str(dpath)
            bs = _batch_size(state["inputs"], settings.batch_size)
            state["batch_size"] = bs
            result.feed = next(ds.batches(bs))  # compare on the first batch of real data
            from enginekit.data import check_feed, check_finite

            check_feed(state["inputs"], result.feed, where=f"dataset {dpath}")
            check_finite(result.feed, where=f"dataset {dpath}")
            step.reason = f"{len(ds)} samples from {dpath}; comparisons on the first batch of {bs or len(ds)}"
        else:
            result.feed = prepare_feed(state["inputs"], settings.feeds)

    if settings.export is not None:
        pipe.step("export", export)
    if settings.prepare is not None:
        pipe.step("prepare", prepare)
    pipe.step("load", load)
    pipe.step("inspect", inspect, required=False)
    pipe.step("feeds", feeds)

    engines: dict[Candidate, Path] = {}

    def build(step: StepResult, b: BuildSettings) -> None:
        from enginekit.backends.tensorrt.build import build_engine

        assert result.model is not None
        b = resolve_build_profiles(b, state["inputs"], result.feed)
        res = build_engine(result.model, b)
        engines[Candidate(b.backend, b.precision)] = res.plan_path
        p = res.manifest["precision"]
        where = "engine cache hit" if res.cached else f"built in {res.manifest['build_time_s']} s"
        step.reason = (f"{where}; {p['path']} path: {p['how']}; targets compute capability "
                       f"{', '.join(res.manifest['target']['compute_capabilities'])}")
        step.artifacts.append(str(res.plan_path))
        result.stages.setdefault("builds", []).append({"backend": b.backend, "precision": b.precision,
                                                        "cached": res.cached, "manifest": res.manifest})

    for b in settings.builds:
        pipe.step(f"build {Candidate(b.backend, b.precision).label}", functools.partial(build, b=b), required=False)

    rows: dict[Candidate, CandidateResult] = {}
    ordered = [ref] + [c for c in cands if c != ref]
    for cand in ordered:

        def run_candidate(step: StepResult, cand: Candidate = cand) -> None:
            assert result.model is not None
            if any(Candidate(b.backend, b.precision) == cand for b in settings.builds) and cand not in engines:
                built = next(st for st in result.steps if st.name == f"build {cand.label}")
                if built.status == STEP_SKIPPED:  # a missing package or GPU, said as such
                    rows[cand] = CandidateResult(BackendRow(cand.backend, cand.precision, SKIPPED, built.reason))
                    raise StepSkipped(f"not built: {built.reason}")
                reason = f"its build failed: {built.reason}"
                rows[cand] = CandidateResult(BackendRow(cand.backend, cand.precision, ERROR, reason))
                raise StepFailed(reason)
            model, backend_settings = engines.get(cand, result.model), settings.backend
            if candidate_format(cand) == "torch" and settings.export is not None:  # runs on the source
                model = Path(settings.export.source)
                backend_settings = replace(settings.backend, torch_inputs=settings.export.inputs)
            row, value = use_runner(
                cand, model, backend_settings, lambda r: _work(r, result.feed, settings, state.get("dataset"))
            )
            cres = CandidateResult(row)
            rows[cand] = cres
            if value is not None:
                row.outputs, row.infer_s, cres.timing, scores = value
                if scores is not None:
                    cres.metrics = classification_metrics(scores, state["dataset"].labels).to_dict()
            if row.status == SKIPPED:
                raise StepSkipped(row.reason)
            if row.status != OK:
                raise StepFailed(row.reason)

        pipe.step(f"run {cand.label}", run_candidate, required=False)

    def compare(step: StepResult) -> None:
        ref_res = rows.get(ref)
        if ref_res is None:
            raise StepSkipped("no backend ran")
        ref_res.row.is_reference = True
        ref_out = ref_res.row.outputs or {}
        compare_rows([rows[c].row for c in ordered if c in rows], ref_res.row,
                     lambda precision: settings_for_precision(settings.compare, precision, ref_out))
        ref_ms = (ref_res.timing or {}).get("median_ms")
        for c in rows.values():
            ms = (c.timing or {}).get("median_ms")
            if ref_ms and ms:
                c.speedup = ref_ms / ms
        bad = [c.row.label for c in rows.values() if c.row.status not in (OK, SKIPPED)]
        if bad:
            raise StepFailed(f"outputs differ from {ref.label}: {', '.join(bad)}")

    pipe.step("compare", compare)
    result.candidates = [rows[c] for c in cands if c in rows]

    def debug_precision(step: StepResult) -> None:
        failed = [c for c in result.candidates if c.row.status == "failed"
                  and c.row.precision in ("fp16", "bf16", "int8")
                  and candidate_format(Candidate(c.row.backend, c.row.precision)) == "onnx"]
        if not failed:
            raise StepSkipped("no low-precision candidate failed verification")
        assert result.model is not None
        fixes = [fix_candidate(c, result.model, result.feed, rows[ref].row, settings) for c in failed]
        result.candidates += [f for f in fixes if f is not None]
        step.reason = "; ".join(f"{c.row.label}: {c.row.reason}" for c in fixes if c is not None)

    pipe.step("debug precision", debug_precision, required=False, always=True)  # runs because compare failed

    def report(step: StepResult) -> None:
        from enginekit.report.markdown import render_optimize
        from enginekit.report.reproduce import optimize_command
        from enginekit.report.writer import write_report

        doc = result.to_dict()
        arrays = {"inputs": result.feed, **{f"outputs.{c.row.label}": c.row.outputs or {} for c in result.candidates}}
        paths = write_report(settings.report_dir, doc, render_optimize(doc), command or optimize_command(settings),
                             arrays)
        step.artifacts = [str(p) for p in paths]

    pipe.step("report", report, always=True)
    return result


def fix_candidate(failed: CandidateResult, model: Path, feed: dict[str, np.ndarray], reference: BackendRow,
                  settings: OptimizeSettings) -> CandidateResult | None:
    """Run the precision debugger on a failed fp16/bf16/int8 candidate; evaluate the fixed model beside it.

    fp16/bf16: the fixed ONNX (FP32 islands from the plan, IO types kept) is run by the onnx-reference backend,
    which stores every value in its type (a faithful low-precision run on any machine). int8 (a TensorRT INT8
    build): the Q/DQ model without the plan's nodes, calibrated on that build's --calib-data (else the feed),
    is run by onnxruntime's CPU INT8 kernels. plan.json and the fixed model are written to the report folder
    for `enginekit build --precision-plan` and other backends.
    """
    import onnx

    from enginekit.compare import compare_outputs
    from enginekit.compare.reference_quality import weak_reference_reasons
    from enginekit.debug.fix import find_fp32_islands, range_analysis_initial
    from enginekit.graph.load import load_model
    from enginekit.graph.precision import save_plan

    precision = failed.row.precision
    proto = load_model(model, check=False)
    calibration = _calibration_for(failed, proto, settings) if precision == "int8" else None
    ranked = range_analysis_initial(proto, [feed], precision)
    fix = find_fp32_islands(proto, [feed], precision, initial=[n for n, _ in ranked], initial_reasons=dict(ranked),
                            calibration=calibration)
    runner = "ort" if precision == "int8" else "onnx-reference"
    folder = settings.report_dir / f"precision-{failed.row.label.replace(':', '-')}"
    folder.mkdir(parents=True, exist_ok=True)
    save_plan(fix.plan, folder / "plan.json")
    fixed = folder / "fixed.onnx"
    onnx.save_model(fix.model, str(fixed))
    label = f"{precision}+plan"
    row = BackendRow(runner, label, OK)
    row.details = {"fixes": failed.row.label, "plan": str(folder / "plan.json"), "fixed_model": str(fixed),
                   "fp32_nodes": fix.kept, "total_nodes": fix.total_nodes,
                   "naive_fp32_nodes": fix.baseline_nodes, "fp32_flops_fraction": fix.fp32_flops_fraction,
                   "evaluations": fix.evaluations, "nodes": [e.node for e in fix.plan.keep_fp32]}
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
        row.status = "failed"
        row.reason = f"no passing plan for {failed.row.label} ({fix.message or 'outputs still differ'})"
    return CandidateResult(row)


def _calibration_for(failed: CandidateResult, model: Any, settings: OptimizeSettings
                     ) -> list[dict[str, np.ndarray]] | None:
    """The --calib-data feeds of the INT8 build behind ``failed`` (None: calibrate on the debug feed)."""
    from enginekit.graph.io import input_specs
    from enginekit.graph.quantize import load_calibration_feeds

    for b in settings.builds:
        if b.precision == "int8" and b.backend == failed.row.backend and b.calib_data is not None:
            return load_calibration_feeds(b.calib_data, input_specs(model))
    return None


def _work(
    runner: Runner, feed: dict[str, np.ndarray], settings: OptimizeSettings, ds: Dataset | None
) -> tuple[dict[str, np.ndarray], float, dict[str, Any], np.ndarray | None]:
    """Run the comparison feed, time it, and score the dataset (first output = class scores)."""
    from enginekit.bench.timing import time_callable

    t0 = time.perf_counter()
    outputs = runner.infer(feed)
    infer_s = time.perf_counter() - t0
    timing = time_callable(lambda: runner.infer_unchecked(feed), settings.timing).to_dict()
    scores = None
    if ds is not None:
        first_out = runner.outputs()[0].name
        bs = _batch_size(runner.inputs(), settings.batch_size)
        scores = np.concatenate([runner.infer(b)[first_out] for b in ds.batches(bs)], axis=0)
    return outputs, infer_s, timing, scores
