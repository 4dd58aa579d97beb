"""Planning `optimize`: from the options a person gives (CLI or Python) to one :class:`OptimizeSettings`.

An ONNX model runs as it is (prepared when asked); a PyTorch or Paddle source is exported (and verified) first,
then prepared; a TensorRT target adds one engine build per precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from enginekit.errors import InvalidArgumentError

if TYPE_CHECKING:
    from enginekit.settings import (
        BackendSettings,
        BuildSettings,
        CompareSettings,
        ExportSettings,
        FeedSettings,
        OptimizeSettings,
        PrepareSettings,
        SearchSettings,
    )

__all__ = ["plan_optimize", "tensorrt_builds"]


def plan_optimize(
    model: str | Path | None = None,
    *,
    backends: Sequence[str] = (),
    reference: str | None = None,
    inputs: Sequence[str] = (),
    load_inputs: Path | None = None,
    seed: int = 1,
    val_ranges: Sequence[str] = (),
    allow_nonfinite: bool = False,
    dynamic: Sequence[str] = (),
    weights: Path | None = None,
    exporter: str = "auto",
    opset: str = "auto",
    target: str = "ort",
    precisions: Sequence[str] = (),
    profiles: Sequence[str] = (),
    calib_data: Path | None = None,
    compute_capabilities: Sequence[str] = (),
    cache_dir: Path | None = None,
    precision_plan: Path | None = None,
    precision_plan_model: Path | None = None,
    prepare: bool | None = None,
    trust_remote_code: bool = False,
    backend: BackendSettings | None = None,
    compare: CompareSettings | None = None,
    dataset: Path | None = None,
    batch_size: int = 0,
    report_dir: Path = Path("enginekit-report"),
    search_batches: Sequence[int] = (),
    search_candidates: Sequence[str] = (),
    search_precisions: Sequence[str] = (),
    search_duration: float | None = None,
    search_compile_limit: float | None = None,
    preprocess: Sequence[str] = (),
    preprocess_file: Path | None = None,
    limit: int = 0,
    gates: Sequence[str] = (),
    task: str = "classification",
    threshold: float = 0.5,
    ctc_blank: int = 0,
    postprocess: str | None = None,
    masks: Path | None = None,
    annotations: Path | None = None,
) -> OptimizeSettings:
    """The settings of `enginekit optimize` for these options (the same names as the command's, as values).

    ``model``: an ONNX file, or a PyTorch/Paddle source as for `enginekit export` (``inputs`` then take export
    dims such as ``x:batch,3,32,32``); None: the bundled digits example. ``prepare``: None runs `prepare`'s passes
    after an export only. ``backend``: the backend options; its precision plan, plan model and trust switch are
    set from ``precision_plan``, ``precision_plan_model`` (default for a PyTorch source: the ONNX this run
    exports) and ``trust_remote_code``. ``search_*``: the configuration search of a PyTorch source, which also
    runs when ``backend.torch_device`` is ``cuda`` (then skipped with the reason when the inputs have no symbolic
    batch dim). Raises InvalidArgumentError for bad options.
    """
    from enginekit.data import check_seed
    from enginekit.settings import BackendSettings, CompareSettings, OptimizeSettings
    from enginekit.sources.shapes import parse_opset

    if batch_size < 0:
        raise InvalidArgumentError(f"--batch-size {batch_size}: must be >= 0.")
    parse_opset(opset)
    check_seed(seed)
    source = _plan_source(None if model is None else str(model), inputs, load_inputs, seed, val_ranges,
                          allow_nonfinite, dynamic, weights, exporter, opset, target, prepare, report_dir,
                          trust_remote_code)
    builds = tensorrt_builds(target, tuple(precisions), tuple(profiles), calib_data, tuple(compute_capabilities),
                             cache_dir, precision_plan)
    if precision_plan is not None and precision_plan_model is None and source.export is not None:
        precision_plan_model = source.export.output  # written by the export step, read by the runners
    search = plan_search(source.export, backend, search_batches, search_candidates, search_precisions,
                         search_duration, search_compile_limit)
    _check_evaluation(dataset, preprocess, preprocess_file, limit, gates, example=model is None)
    _check_task(task, threshold, ctc_blank)
    if postprocess is not None:
        if dataset is None and model is not None:
            raise InvalidArgumentError("--postprocess applies to --dataset.")
        from enginekit.eval.hooks import load_postprocess

        load_postprocess(postprocess)  # a missing file or function is a user error now
    if masks is not None and (task != "segmentation" or dataset is None or not Path(dataset).is_dir()):
        raise InvalidArgumentError("--masks pairs label maps with an image-folder --dataset of --task segmentation.")
    _check_detection(task, dataset, postprocess, annotations)
    return OptimizeSettings(
        search=search,
        builds=builds,
        model=source.model,
        export=source.export,
        prepare=source.prepare,
        backends=tuple(backends),
        reference=reference,
        feeds=source.feeds,
        backend=replace(backend or BackendSettings(), precision_plan=precision_plan,
                        precision_plan_model=precision_plan_model, trust_remote_code=trust_remote_code),
        compare=compare or CompareSettings(),
        dataset=dataset,
        batch_size=batch_size,
        report_dir=report_dir,
        preprocess=tuple(preprocess),
        preprocess_file=preprocess_file,
        limit=limit,
        gates=tuple(gates),
        task=task,
        threshold=threshold,
        ctc_blank=ctc_blank,
        postprocess=postprocess,
        masks=masks,
        annotations=annotations,
    )


def tensorrt_builds(target: str, precisions: tuple[str, ...], profiles: tuple[str, ...], calib_data: Path | None,
                    ccs: tuple[str, ...], cache_dir: Path | None, plan: Path | None) -> tuple[BuildSettings, ...]:
    """One BuildSettings per precision when the target is TensorRT (those at the plan's precision take the
    --precision-plan); none otherwise."""
    from enginekit.graph.support import parse_target
    from enginekit.settings import BuildSettings

    name, _ = parse_target(target)
    if name not in ("tensorrt", "tensorrt-rtx"):
        if precisions or profiles or calib_data or ccs:
            raise InvalidArgumentError("--precision/--profile/--calib-data/--compute-capability apply to TensorRT "
                                       "targets (--target tensorrt or tensorrt-rtx).")
        return ()
    chosen = precisions or (("fp32", "fp16") + (("int8",) if calib_data else ()))
    plan_precision = None
    if plan is not None:
        from enginekit.graph.precision import load_plan

        plan_precision = load_plan(plan).precision
    return tuple(BuildSettings(backend=name, precision=p, profiles=profiles, calib_data=calib_data,
                               compute_capabilities=ccs, cache_dir=cache_dir,
                               precision_plan=plan if p == plan_precision else None) for p in chosen)


def _check_evaluation(dataset: Path | None, preprocess: Sequence[str], preprocess_file: Path | None, limit: int,
                      gates: Sequence[str], *, example: bool = False) -> None:
    """Dataset options are user errors now (exit 2), not a failed step later (``example``: the bundled digits
    example, which brings its own test split)."""
    from enginekit.eval.gates import parse_gates
    from enginekit.eval.preprocess import load_preprocess_yaml, parse_preprocess_options

    if limit < 0:
        raise InvalidArgumentError(f"--limit {limit}: must be >= 0.")
    if dataset is None and not example and (preprocess or preprocess_file is not None or limit or gates):
        raise InvalidArgumentError("--preprocess/--preprocess-file/--limit/--gate apply to --dataset.")
    if (preprocess or preprocess_file is not None) and (dataset is None or not Path(dataset).is_dir()):
        raise InvalidArgumentError("--preprocess/--preprocess-file apply to an image folder --dataset, not to an .npz "
                                   "(its arrays are the model inputs as they are).")
    base = load_preprocess_yaml(preprocess_file) if preprocess_file is not None else None
    parse_preprocess_options(list(preprocess), base=base)
    parse_gates(list(gates))


def _check_task(task: str, threshold: float, blank: int) -> None:
    from enginekit.errors import did_you_mean
    from enginekit.pipeline.task_metrics import TASKS

    if task not in TASKS:
        raise InvalidArgumentError(f"--task {task!r}: choose one of {', '.join(TASKS)}"
                                   f"{did_you_mean(task, TASKS) or '.'}")
    if not 0.0 < threshold < 1.0:
        raise InvalidArgumentError(f"--threshold {threshold}: a probability strictly between 0 and 1.")
    if blank < 0:
        raise InvalidArgumentError(f"--ctc-blank {blank}: must be >= 0.")


def _check_detection(task: str, dataset: Path | None, postprocess: str | None, annotations: Path | None) -> None:
    if annotations is not None:
        if task != "detection" or dataset is None or not Path(dataset).is_dir():
            raise InvalidArgumentError("--annotations pairs a COCO JSON with an image-folder --dataset of --task "
                                       "detection.")
        if not Path(annotations).is_file():
            raise InvalidArgumentError(f"--annotations {str(annotations)!r} is not a file.")
    if task == "detection" and postprocess is None:
        raise InvalidArgumentError(
            "--task detection needs --postprocess FILE.py:FUNCTION: detectors' raw outputs differ (anchors, NMS or "
            "not, box layouts), so a function of yours turns each batch's outputs into boxes, scores and labels.",
            hint="Per image return {'boxes': [[x1, y1, x2, y2], ...], 'scores': [...], 'labels': [...]} in "
                 "model-input pixels (or an [N, 6] array x1,y1,x2,y2,score,label); see docs/TASKS.md.")


def plan_search(export: ExportSettings | None, backend: BackendSettings | None, batches: Sequence[int],
                candidates: Sequence[str], precisions: Sequence[str], duration: float | None,
                compile_limit: float | None = None) -> SearchSettings | None:
    """The configuration search's settings: for a PyTorch source, when any search option is given or the torch
    device is cuda; search options for other models are refused. ``compile_limit`` (seconds, 0: none; None: the
    default) applies to whichever search runs and does not start one."""
    from enginekit.multirun import Candidate
    from enginekit.registry import TORCH_PRECISIONS
    from enginekit.settings import SearchSettings
    from enginekit.sources.detect import PADDLE, detect_source

    asked = bool(batches or candidates or precisions or duration is not None)
    torch_source = export is not None and detect_source(export.source).kind != PADDLE
    if compile_limit is not None and compile_limit < 0:
        raise InvalidArgumentError(f"--search-compile-limit {compile_limit}: must be >= 0 s (0: no limit).")
    limit = SearchSettings().compile_limit_s if compile_limit is None else (compile_limit or None)
    if not torch_source:
        if asked or compile_limit is not None:
            raise InvalidArgumentError("--search-batch/--search-candidate/--search-precision/--search-duration/"
                                       "--search-compile-limit apply to PyTorch sources (file.py:factory, "
                                       "package.module:factory, .pt2).")
        return None
    if not asked:  # --torch-device cuda alone: search at the feed's batch when the model allows it
        if backend is not None and backend.torch_device == "cuda":
            return SearchSettings(auto=True, compile_limit_s=limit)
        return None
    if any(b < 1 for b in batches):
        raise InvalidArgumentError(f"--search-batch {','.join(map(str, batches))}: batch sizes must be >= 1.")
    for c in candidates:
        if Candidate.parse(c).backend not in ("torch", "inductor", "aoti"):  # a bad label: exit 2 now, not a row later
            raise InvalidArgumentError(f"--search-candidate {c}: the search runs the PyTorch backends (torch, "
                                       "inductor, aoti) on the source.")
    for p in precisions:
        if p not in TORCH_PRECISIONS:
            raise InvalidArgumentError(f"--search-precision {p!r}: choose from {', '.join(TORCH_PRECISIONS)}.")
    if duration is not None and duration <= 0:
        raise InvalidArgumentError(f"--search-duration {duration}: must be > 0 s.")
    base = SearchSettings()
    return SearchSettings(batches=tuple(batches), candidates=tuple(candidates), precisions=tuple(precisions),
                          duration_s=base.duration_s if duration is None else duration, compile_limit_s=limit)


@dataclass(frozen=True)
class _Source:
    model: Path | None  # ONNX model (None with an export, or for the bundled example)
    export: ExportSettings | None
    prepare: PrepareSettings | None
    feeds: FeedSettings  # the comparison feed


def _plan_source(
    model: str | None, inputs: Sequence[str], load_inputs: Path | None, seed: int, val_ranges: Sequence[str],
    allow_nonfinite: bool, dynamic: Sequence[str], weights: Path | None, exporter: str, opset: str, target: str,
    prepare: bool | None, report: Path, trust_remote_code: bool,
) -> _Source:
    """ONNX model path, or export settings (+ the feed shapes the export traces at), prepare settings and feeds."""
    from enginekit.data import InputShape, parse_input_shape, parse_value_range
    from enginekit.settings import ExportSettings, FeedSettings, PrepareSettings
    from enginekit.sources.detect import ONNX, detect_source
    from enginekit.sources.shapes import parse_dynamic, parse_export_input, parse_opset, plan_inputs

    ranges = tuple(parse_value_range(v) for v in val_ranges)
    if model is None or detect_source(model).kind == ONNX:
        shapes = tuple(parse_input_shape(t) for t in inputs)
        prep_feeds = FeedSettings(inputs=shapes, seed=seed, val_ranges=ranges)
        prep = PrepareSettings(output=report / "model.prepared.onnx", feeds=prep_feeds) if prepare else None
        if load_inputs is not None and inputs:
            raise InvalidArgumentError("--load-inputs and --input both give the feed shapes; use one of them.")
        feeds = FeedSettings(inputs=shapes, load_inputs=load_inputs, seed=seed, val_ranges=ranges,
                             allow_nonfinite=allow_nonfinite)
        return _Source(Path(model) if model is not None else None, None, prep, feeds)
    export = ExportSettings(
        source=model, output=report / "model.onnx", inputs=tuple(inputs),
        dynamic=tuple(parse_dynamic(d) for d in dynamic), weights=weights, exporter=exporter,
        opset=parse_opset(opset), target=target, seed=seed, val_ranges=ranges, trust_remote_code=trust_remote_code,
    )
    plans = plan_inputs(tuple(parse_export_input(t) for t in export.inputs), export.dynamic) if export.inputs else []
    feeds = FeedSettings(inputs=tuple(InputShape(p.name, p.trace_shape) for p in plans), seed=seed, val_ranges=ranges)
    prep = None if prepare is False else PrepareSettings(output=report / "model.prepared.onnx", feeds=feeds)
    return _Source(None, export, prep, feeds)
