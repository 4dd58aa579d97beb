"""`optimize`: [export → prepare →] load → inspect → feeds → builds → one step per candidate → compare →
debug precision → report. The model is parsed once (without its external data) and handed down."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from enginekit.compare.per_precision import settings_for_precision
from enginekit.errors import MissingDependencyError
from enginekit.multirun import BackendRow, Candidate, check_backend_settings, compare_rows, use_runner
from enginekit.pipeline.candidates import (
    batch_size,
    candidate_format,
    resolve_build_profiles,
    resolve_optimize_candidates,
)
from enginekit.pipeline.fix import fix_candidate
from enginekit.pipeline.steps import CandidateResult, OptimizeResult, Pipeline, StepFailed, StepResult, StepSkipped
from enginekit.status import Status

log = logging.getLogger(__name__)
DatasetProgress = Callable[[str, int, int], None]  # (what, done, total)

if TYPE_CHECKING:
    from enginekit.backends.base import Runner
    from enginekit.eval.datasets import Dataset
    from enginekit.settings import BuildSettings, FeedSettings, OptimizeSettings


def optimize(settings: OptimizeSettings, command: Sequence[str] | None = None,
             progress: DatasetProgress | None = None) -> OptimizeResult:
    """The main job. Never raises for a backend's failure; raises EnginekitError for bad settings.

    ``command`` is what reproduce.sh runs; by default the CLI command equivalent to ``settings``.
    ``progress(what, done, total)`` follows the dataset: "reading images" (per image), then "scoring LABEL" (per
    batch) for each candidate; it is also logged (INFO) at every tenth.
    """
    from enginekit.compare import validate_tolerance_names
    from enginekit.data import prepare_feed
    from enginekit.fileutil import check_writable_folder
    from enginekit.graph.inspect import summarize_model
    from enginekit.graph.io import input_specs, output_specs
    from enginekit.graph.load import check_loaded_model, external_data_files, load_model

    state: dict[str, Any] = {}
    if settings.model is not None:  # a missing or unreadable model is a user error (exit 2): no report folder
        state["proto"] = load_model(settings.model, load_external_data=False, check=False)
    if settings.export is not None:  # a TorchScript/.pt2 source runs code when loaded: refused (exit 2) untrusted
        from enginekit.sources.torch_load import check_source_trust

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
        if "model_path" in state or "proto" not in state:  # exported, prepared or the example: not read yet
            state["proto"] = load_model(path, load_external_data=False, check=False)
        proto = state["proto"]
        state["inputs"], state["outputs"] = input_specs(proto), output_specs(proto)
        validate_tolerance_names(settings.compare, [o.name for o in state["outputs"]])
        result.model, state["dataset_path"] = Path(path), dataset
        step.artifacts.append(str(path))

    def inspect(step: StepResult) -> None:
        assert result.model is not None
        proto = state["proto"]
        check_loaded_model(proto, result.model, has_external=bool(external_data_files(proto)))  # as inspect_model does
        result.model_info = summarize_model(proto, result.model).to_dict()

    def feeds(step: StepResult) -> None:
        dpath = state["dataset_path"]
        if dpath is not None:
            ds = _dataset(Path(dpath), state["inputs"], settings, functools.partial(_tell, progress, "reading images"))
            state["dataset"] = ds
            result.dataset = str(dpath)
            bs = batch_size(state["inputs"], settings.batch_size)
            state["batch_size"] = bs
            result.feed = next(ds.batches(bs))  # compare on the first batch of real data
            if settings.postprocess:  # imported once, called by every candidate
                from enginekit.eval.hooks import load_postprocess

                state["hook"] = load_postprocess(settings.postprocess)
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
                if built.status == Status.STEP_SKIPPED:  # a missing package or GPU, said as such
                    rows[cand] = CandidateResult(BackendRow(cand.backend, cand.precision, Status.SKIPPED,
                                                            built.reason))
                    raise StepSkipped(f"not built: {built.reason}")
                reason = f"its build failed: {built.reason}"
                rows[cand] = CandidateResult(BackendRow(cand.backend, cand.precision, Status.ERROR, reason))
                raise StepFailed(reason)
            model, backend_settings = engines.get(cand, result.model), settings.backend
            if candidate_format(cand) == "torch" and settings.export is not None:  # runs on the source
                model = Path(settings.export.source)
                backend_settings = replace(settings.backend, torch_inputs=settings.export.inputs)
            row, value = use_runner(
                cand, model, backend_settings,
                lambda r: _work(r, result.feed, settings, state.get("dataset"), state.get("hook"),
                                functools.partial(_tell, progress, f"scoring {cand.label}")),
            )
            cres = CandidateResult(row)
            rows[cand] = cres
            if value is not None:
                row.outputs, row.infer_s, cres.timing, scores = value
                if scores is not None:  # judged, with every candidate's, by the task metrics step
                    state.setdefault("scores", {})[cand.label] = scores
            if row.status == Status.SKIPPED:
                raise StepSkipped(row.reason)
            if row.status != Status.OK:
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
        fill_speedups(list(rows.values()), ref_res, ref.label)
        bad = [c.row.label for c in rows.values() if c.row.status not in (Status.OK, Status.SKIPPED)]
        if bad:
            raise StepFailed(f"outputs differ from {ref.label}: {', '.join(bad)}")

    pipe.step("compare", compare)
    result.candidates = [rows[c] for c in cands if c in rows]

    def task_metrics(step: StepResult) -> None:
        from enginekit.eval.gates import parse_gates
        from enginekit.pipeline.task_metrics import judge

        if "scores" not in state:
            raise StepSkipped("no dataset was evaluated")
        from enginekit.pipeline.task_metrics import Task

        ds = state["dataset"]
        task = Task(settings.task, settings.threshold, settings.ctc_blank)
        truth = ds.annotations if settings.task == "detection" else ds.targets
        try:
            failed = judge({c.label: rows[c] for c in ordered if c in rows}, state["scores"], ref.label,
                           truth, parse_gates(list(settings.gates)), task)
        except MissingDependencyError as exc:
            if settings.gates:  # a gate that cannot be judged must not let the run pass
                raise StepFailed(f"the gates {', '.join(settings.gates)} could not be judged: {exc}") from exc
            raise  # no metrics without their library: the step is skipped with the package to install
        state["gate_failed"] = set(failed)
        what = "labels" if truth is not None else f"agreement with {ref.label}'s predictions (no labels)"
        step.reason = (f"{settings.task} on {len(ds)} samples, against {what}; 95 % paired bootstrap intervals of "
                       f"each metric's difference from {ref.label}")
        if settings.gates:
            step.reason += f"; gates {', '.join(settings.gates)}"
        if failed:
            raise StepFailed(f"failed a gate: {', '.join(failed)}")

    if settings.dataset is not None or (settings.model is None and settings.export is None):  # or the example's
        pipe.step("task metrics", task_metrics, required=False, always=True)

    def search(step: StepResult) -> None:
        from enginekit.pipeline.search import search_configurations, timing_of

        assert settings.search is not None and settings.export is not None
        from enginekit.errors import InvalidArgumentError
        from enginekit.pipeline.search import batch_inputs

        backend = replace(settings.backend, torch_inputs=settings.export.inputs)
        if settings.search.auto:  # not asked for: a model without a batch axis is a skip, not a failure
            try:
                batch_inputs(backend.torch_inputs)
            except InvalidArgumentError as exc:
                raise StepSkipped(f"no configuration search: {exc.message}") from None
        feed = result.feed or source_feed(settings.export.inputs, settings.feeds)  # the export may have failed
        found = search_configurations(settings.export.source, feed, settings.search, backend,
                                      settings.compare, timing_of(settings.search, settings.timing))
        result.search = found.to_dict()
        step.reason = "; ".join(
            f"batch {s['batch']}: {s['best_latency']} {s['best_latency_ms']:.3g} ms" if s["best_latency"]
            else f"batch {s['batch']}: no configuration passed" for s in result.search["best"])

    if settings.search is not None:  # runs on the PyTorch source itself: also when the export failed
        pipe.step("search", search, required=False, always=True)

    def debug_precision(step: StepResult) -> None:
        # outputs that differ, not a task gate: the debugger searches for the nodes that make the outputs agree
        failed = [c for c in result.candidates if c.row.status == Status.FAILED
                  and c.row.label not in state.get("gate_failed", ())
                  and c.row.precision in ("fp16", "bf16", "int8")
                  and candidate_format(Candidate(c.row.backend, c.row.precision)) == "onnx"]
        if not failed:
            raise StepSkipped("no low-precision candidate failed verification")
        assert result.model is not None
        fixes = [fix_candidate(c, result.model, result.feed, rows[ref].row, settings, loaded=state["proto"])
                 for c in failed]
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


def _dataset(path: Path, inputs: list[Any], settings: OptimizeSettings,
             progress: Callable[[int, int], None] | None = None) -> Dataset:
    """An .npz dataset, or an image folder read with the --preprocess settings (classification: class folders;
    other tasks: the images in it, labelled by --masks or --annotations, or label-free); at most --limit samples."""
    from enginekit.eval.datasets import load_dataset, take

    limit = settings.limit or None
    if not path.is_dir():  # labels optional: without them the metrics are agreement with the reference
        return take(load_dataset(path, inputs, require_labels=False), limit)
    from enginekit.eval.image_folder import load_image_folder
    from enginekit.eval.preprocess import load_preprocess_yaml, parse_preprocess_options

    base = load_preprocess_yaml(settings.preprocess_file) if settings.preprocess_file is not None else None
    pre = parse_preprocess_options(list(settings.preprocess), base=base)
    if settings.masks is not None:  # images + label maps with the same names (segmentation)
        from enginekit.eval.segmentation import load_mask_folder

        return load_mask_folder(path, settings.masks, inputs, pre, limit, progress=progress)
    if settings.annotations is not None:  # images + a COCO JSON (detection)
        from enginekit.eval.coco_folder import load_coco_folder

        return load_coco_folder(path, settings.annotations, inputs, pre, limit, progress=progress)
    if settings.task != "classification":  # the images themselves, without labels
        from enginekit.eval.image_folder import load_flat_images

        return load_flat_images(path, inputs, pre, limit, progress=progress)
    return load_image_folder(path, inputs, pre, limit, progress=progress)


def _tell(progress: DatasetProgress | None, what: str, done: int, total: int) -> None:
    if done == total or done % max(total // 10, 1) == 0:
        log.info("dataset: %s %d of %d", what, done, total)
    if progress is not None:
        progress(what, done, total)


def source_feed(torch_inputs: Sequence[str], feeds: FeedSettings) -> dict[str, np.ndarray]:
    """The comparison feed built from a PyTorch source's --input (its trace shapes), when no ONNX model gave one:
    seeded random data within --val-range, as `prepare_feed` makes it."""
    from enginekit.backends.torch_inputs import plan_torch_inputs
    from enginekit.data import random_feed

    specs = [p.spec() for p in plan_torch_inputs(torch_inputs)]
    shapes = {p.name: tuple(p.trace_shape) for p in plan_torch_inputs(torch_inputs)}
    return random_feed(specs, shapes, seed=feeds.seed, ranges=feeds.val_ranges)


def fill_speedups(results: Sequence[CandidateResult], ref_res: CandidateResult, ref_label: str) -> None:
    """Speed-ups against the reference's median; a row whose timing is unstable, or any row when the reference's
    is (except rows without a speed-up), is flagged ``unstable`` with the warning."""
    ref_t = ref_res.timing or {}
    ref_ms = ref_t.get("median_ms")
    for c in results:
        t = c.timing or {}
        ms = t.get("median_ms")
        if ref_ms and ms:
            c.speedup = ref_ms / ms
        if t.get("unstable"):
            c.unstable = True
            c.timing_warnings.append(str(t.get("warning") or "unstable run"))
        if ref_t.get("unstable") and c is not ref_res and c.speedup is not None:
            c.unstable = True
            c.timing_warnings.append(f"speed-up against {ref_label}, whose timing is unstable "
                                     f"(coefficient of variation {float(ref_t.get('cv', 0.0)):.1%})")


def _work(
    runner: Runner, feed: dict[str, np.ndarray], settings: OptimizeSettings, ds: Dataset | None,
    hook: Any = None, tick: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, np.ndarray], float, dict[str, Any], Any]:
    """Run the comparison feed, time it, and score the dataset (first output = class scores, or the hook's
    predictions; detection: per-image boxes)."""
    from enginekit.bench.timing import time_callable

    t0 = time.perf_counter()
    outputs = runner.infer(feed)
    infer_s = time.perf_counter() - t0
    timing = time_callable(lambda: runner.infer_unchecked(feed), settings.timing).to_dict()
    scores = None
    if ds is not None:
        bs = batch_size(runner.inputs(), settings.batch_size)
        total = -(-len(ds) // bs) if bs > 0 else 1

        def outputs_of_batches() -> Iterator[dict[str, np.ndarray]]:
            for i, b in enumerate(ds.batches(bs), start=1):
                yield runner.infer(b)
                if tick is not None:
                    tick(i, total)

        if hook is not None:  # the user's function turns each batch's outputs into the task's predictions
            from enginekit.eval.hooks import run_postprocess

            assert settings.postprocess is not None
            predictions = run_postprocess(hook, outputs_of_batches(), settings.postprocess)
            scores = _detections(predictions, ds) if settings.task == "detection" else np.asarray(predictions)
        else:
            first_out = runner.outputs()[0].name
            scores = np.concatenate([out[first_out] for out in outputs_of_batches()], axis=0)
    return outputs, infer_s, timing, scores


def _detections(predictions: Any, ds: Dataset) -> Any:
    """A hook's per-sample boxes in model-input pixels → per-image COCO detections in the images' own pixels."""
    from enginekit.eval.detection import decode_detections

    ids = ds.image_ids if ds.image_ids is not None else tuple(range(len(ds)))
    scales = None
    if ds.original_sizes is not None and ds.input_size is not None:
        in_h, in_w = ds.input_size
        scales = [(w / in_w, h / in_h) for h, w in ds.original_sizes]
    return decode_detections(list(predictions), ids, scales)
