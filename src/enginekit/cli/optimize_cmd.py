"""`enginekit optimize [MODEL]` and `enginekit demo` (optimize on the bundled example)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from enginekit.cli import common
from enginekit.cli.common import (
    AllowNonFiniteOpt,
    AtolOpt,
    InputOpt,
    JsonOpt,
    LoadInputsOpt,
    OrtProvidersOpt,
    RtolOpt,
    SeedOpt,
    StatOpt,
    ValidateOpt,
    ValRangeOpt,
)

ReportOpt = Annotated[Path, typer.Option("--report", help="Report folder (report.json, report.md, reproduce.sh, "
                      ".npz feeds and outputs).")]


def optimize(
    model: Annotated[str | None, typer.Argument(metavar="MODEL", help="ONNX model, or a PyTorch/Paddle source "
                     "as for `enginekit export` (exported, verified and prepared first); omitted: the bundled "
                     "digits example. A file.py:factory is imported and executed; TorchScript and .pt2 files run "
                     "code they carry, so they load only with --trust-remote-code.", show_default=False)] = None,
    backend: Annotated[list[str] | None, typer.Option("--backend", "-b", help="Candidates NAME[:PRECISION] "
                       "(ort, ort:fp16, openvino, openvino:bf16, onnx-reference:fp16, ...); default: every backend at "
                       "its default precisions.",
                       show_default=False)] = None,
    reference: Annotated[str | None, typer.Option("--reference", help="Reference candidate (default ort).",
                         show_default=False)] = None,
    dataset: Annotated[Path | None, typer.Option("--dataset", help="Data for task metrics: an .npz with one array "
                       "per model input (and integer 'labels'), an ImageFolder (FOLDER/CLASS/*.png) for "
                       "classification, or a folder of images for the other tasks (with --masks or --annotations "
                       "as labels); without labels, agreement with the reference.", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Dataset batch size (0: all at once when the "
                          "batch dim is dynamic).")] = 0,
    inputs: InputOpt = None,
    load_inputs: LoadInputsOpt = None,
    seed: SeedOpt = 1,
    val_range: ValRangeOpt = None,
    allow_nonfinite: AllowNonFiniteOpt = False,
    ort_providers: OrtProvidersOpt = None,
    atol: AtolOpt = None,
    rtol: RtolOpt = None,
    check_error_stat: StatOpt = "elemwise",
    validate: ValidateOpt = False,
    report: ReportOpt = Path("enginekit-report"),
    dynamic: Annotated[list[str] | None, typer.Option("--dynamic", help="Export: NAME:AXIS=LABEL[MIN..MAX].",
                       show_default=False)] = None,
    weights: Annotated[Path | None, typer.Option("--weights", help="Export: state dict for a factory model.",
                       show_default=False)] = None,
    exporter: Annotated[str, typer.Option("--exporter", help="Export: dynamo, torchscript or auto.")] = "auto",
    opset: Annotated[str, typer.Option("--opset", help="Export: auto (from --target) or a number.")] = "auto",
    target: Annotated[str, typer.Option("--target", help="tensorrt[==8.5|8.6|10|11], tensorrt-rtx, ort or "
                      "openvino: picks the export opset; a TensorRT target also adds engine builds.")] = "ort",
    precision: Annotated[list[str] | None, typer.Option("--precision", help="TensorRT targets: precisions to "
                         "build (default fp32,fp16; int8 too with --calib-data).", show_default=False)] = None,
    profile: Annotated[list[str] | None, typer.Option("--profile", help="TensorRT targets: NAME:MIN:OPT:MAX "
                       "(default: MIN 1, OPT=MAX the comparison feed).", show_default=False)] = None,
    calib_data: Annotated[Path | None, typer.Option("--calib-data", help="TensorRT targets: INT8 calibration "
                          "feeds.", show_default=False)] = None,
    compute_capability: Annotated[list[str] | None, typer.Option("--compute-capability", help="TensorRT-RTX "
                                  "targets, e.g. 8.6.", show_default=False)] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Engine cache folder.",
                         show_default=False)] = None,
    precision_plan: Annotated[Path | None, typer.Option(
        "--precision-plan", metavar="PLAN.json", help="Precision plan (from `enginekit debug precision`): ONNX nodes "
        "kept in FP32 by the fp16/bf16 candidates that apply plans (ort:fp16, onnx-reference, torch, inductor; "
        "chosen with --backend) and by TensorRT builds at the plan's precision; others run without it.",
        show_default=False)] = None,
    precision_plan_model: Annotated[Path | None, typer.Option(
        "--precision-plan-model", metavar="MODEL.onnx", help="torch/inductor with --precision-plan: the ONNX the "
        "plan was made for, as exported (its node metadata names the PyTorch modules); default for a PyTorch "
        "source: the ONNX this run exports (REPORT/model.onnx).", show_default=False)] = None,
    prepare: Annotated[bool | None, typer.Option("--prepare/--no-prepare", help="Run `prepare`'s default passes "
                       "(verified) before the backends; default: after an export only.", show_default=False)] = None,
    trust_remote_code: common.TrustRemoteCodeOpt = False,
    torch_device: common.TorchDeviceOpt = "auto",
    search_batch: Annotated[list[str] | None, typer.Option(
        "--search-batch", help="PyTorch sources: batch sizes of the configuration search, e.g. 1,32,256 (the "
        "search runs by default with --torch-device cuda, at the feed's batch).", show_default=False)] = None,
    search_candidate: Annotated[list[str] | None, typer.Option(
        "--search-candidate", help="PyTorch sources: the search's configurations NAME:PRECISION[/KEY=VALUE...], "
        "e.g. inductor:fp16/mode=reduce-overhead/freezing=on (keys: mode, freezing, channels_last, cuda_graph, "
        "cudnn_benchmark, fastpath, linear=int8|fp8|off); default: the set for the device.",
        show_default=False)] = None,
    search_precision: Annotated[list[str] | None, typer.Option(
        "--search-precision", help="PyTorch sources: precisions of the default search set (default fp16,bf16 on "
        "CUDA; fp32, and bf16 where the CPU has it, on CPU).", show_default=False)] = None,
    search_duration: Annotated[str | None, typer.Option(
        "--search-duration", help="PyTorch sources: how long each configuration is timed at each batch (default "
        "1s, after a 0.5s warm-up).", show_default=False)] = None,
    search_compile_limit: Annotated[str | None, typer.Option(
        "--search-compile-limit", help="PyTorch sources: an inductor configuration whose compilation (while it "
        "loads, or on its first call at a batch size) takes longer is skipped, with the reason (default 300s; 0: no "
        "limit).",
        show_default=False)] = None,
    preprocess: Annotated[list[str] | None, typer.Option(
        "--preprocess", help="Image-folder --dataset: KEY=VALUE preprocessing (size=224,224, "
        "scale=0.00392156862745098, mean=0.485,0.456,0.406, std=0.229,0.224,0.225, layout=NCHW|NHWC, "
        "color=rgb|gray, dtype=float32, interpolation=bilinear); repeatable.", show_default=False)] = None,
    preprocess_file: Annotated[Path | None, typer.Option(
        "--preprocess-file", help="The same keys in a YAML file (--preprocess options override it).",
        show_default=False)] = None,
    limit: Annotated[int, typer.Option("--limit", help="Evaluate at most N dataset samples (0: all; image folders "
                                       "take them round-robin over the classes).")] = 0,
    gate: Annotated[list[str] | None, typer.Option(
        "--gate", help="A task-metric threshold against the reference, e.g. accuracy>=-0.5pp (points), "
        "accuracy>=-1%% (relative), top5_accuracy>=abs:0.9; a candidate that fails it fails (exit 1). Repeatable.",
        show_default=False)] = None,
    task: Annotated[str, typer.Option("--task", help="What the first output is, for --dataset metrics: "
                    "classification (accuracy, macro P/R, top-5), segmentation (mIoU, pixel accuracy), ctc "
                    "(sequence accuracy, edit distance, CER of greedily decoded text) or detection (COCO mAP@[.5:.95] "
                    "and mAP@.5 by pycocotools; needs --postprocess); without labels in the dataset, agreement with "
                    "the reference's predictions.")] = "classification",
    threshold: Annotated[float, typer.Option("--threshold", help="Segmentation: foreground above this probability "
                         "(one-channel outputs). Detection without labels: the reference's detections scoring at "
                         "least this are the ground truth.")] = 0.5,
    ctc_blank: Annotated[int, typer.Option("--ctc-blank", help="CTC: the blank class index.")] = 0,
    masks: Annotated[Path | None, typer.Option(
        "--masks", help="--task segmentation with an image-folder --dataset: a folder of label-map PNGs named like "
        "the images (resized nearest-neighbour to the model's size).", show_default=False)] = None,
    annotations: Annotated[Path | None, typer.Option(
        "--annotations", help="--task detection with an image-folder --dataset: a COCO JSON (images with file_name "
        "relative to the folder, annotations with bbox x,y,w,h in original pixels, categories).",
        show_default=False)] = None,
    postprocess: Annotated[str | None, typer.Option(
        "--postprocess", metavar="FILE.py:FUNCTION", help="--dataset: a function mapping one batch's outputs "
        "{name: array} to the task's predictions (samples on axis 0; detection: per image a dict of boxes "
        "x1,y1,x2,y2 in model-input pixels, scores and labels, or an [N, 6] array x1,y1,x2,y2,score,label); it is "
        "imported and run. Default: the first output as it is.", show_default=False)] = None,
    package: Annotated[Path | None, typer.Option(
        "--package", help="Also write a package folder (new or empty): the source ONNX, the verified best engine "
        "per objective with its manifest, IO samples, the tables and a reproduce.sh that checks the outputs "
        "(docs/PACKAGE.md).", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run every available backend and precision, compare with the reference, time, evaluate, report.

    With a PyTorch or Paddle source, the model is first exported and verified (see `enginekit export`;
    --input takes export dims such as x:batch,3,32,32) and prepared (see `enginekit prepare`). With a PyTorch
    source and --torch-device cuda (or any --search-* option), a configuration search tries torch.compile modes,
    freezing, CUDA graphs, channels-last, fp16/bf16 and int8/FP8 linears at each batch size,
    verifies each against eager FP32 and names the fastest passing one per batch.
    """
    from dataclasses import replace

    from enginekit.pipeline.plan import plan_optimize

    settings = plan_optimize(
        model, backends=common.split_multi(backend), reference=reference, inputs=inputs or [],
        load_inputs=load_inputs, seed=seed, val_ranges=val_range or [], allow_nonfinite=allow_nonfinite,
        dynamic=dynamic or [], weights=weights, exporter=exporter, opset=opset, target=target,
        precisions=common.split_multi(precision), profiles=profile or [], calib_data=calib_data,
        compute_capabilities=common.split_multi(compute_capability), cache_dir=cache_dir,
        precision_plan=precision_plan, precision_plan_model=precision_plan_model, prepare=prepare,
        trust_remote_code=trust_remote_code,
        backend=replace(common.backend_settings(ort_providers, "fp32"), torch_device=torch_device),
        dataset=dataset, batch_size=batch_size, report_dir=report,
        search_batches=_search_batches(search_batch),
        search_candidates=common.split_multi(search_candidate),
        search_precisions=common.split_multi(search_precision),
        search_duration=None if search_duration is None else common.parse_duration(search_duration,
                                                                                    "--search-duration"),
        search_compile_limit=None if search_compile_limit is None else common.parse_duration(
            search_compile_limit, "--search-compile-limit"),
        preprocess=preprocess or [], preprocess_file=preprocess_file, limit=limit, gates=gate or [], task=task,
        threshold=threshold, ctc_blank=ctc_blank, postprocess=postprocess, masks=masks,
        annotations=annotations,
    )
    # the tolerances are parsed after the model and build options, as always
    _run(replace(settings, compare=common.compare_settings(atol, rtol, check_error_stat, validate)), as_json, package)


def demo(report: ReportOpt = Path("enginekit-report"), as_json: JsonOpt = False) -> None:
    """`optimize` on the bundled example: a CNN trained on scikit-learn's digits, with its test split."""
    from enginekit.settings import OptimizeSettings

    _run(OptimizeSettings(report_dir=report), as_json)


def _run(settings: object, as_json: bool, package: Path | None = None) -> None:
    from rich.markup import escape
    from rich.table import Table

    from enginekit.cli.render import status, tolerance_text, verdict
    from enginekit.report.markdown import fmt, speedup_cell, timing_warnings
    from enginekit.settings import OptimizeSettings
    from enginekit.status import Status

    assert isinstance(settings, OptimizeSettings)
    if package is not None:
        check_package_target(package, settings.report_dir)
    result = _optimize_with_progress(settings)
    doc = result.to_dict()
    packaged = None
    if package is not None and result.passed:
        from enginekit.deploy.package import write_package

        packaged = write_package(settings.report_dir, package)
        doc["package"] = {"path": str(packaged.path), "engines": packaged.engines}
    if as_json:
        common.print_json(doc)
        common.exit_with(result.exit_code)
    out = common.out
    steps = Table("step", "status", "s", "reason", title="Steps", title_justify="left")
    for s in doc["steps"]:
        style = {Status.STEP_OK: "green", Status.STEP_FAIL: "red", Status.STEP_SKIPPED: "yellow"}[s["status"]]
        steps.add_row(escape(s["name"]), f"[{style}]{s['status']}[/]", f"{s['duration_s']:.2f}", escape(s["reason"]))
    out.print(steps)
    from enginekit.report.metric_columns import interval_note, metric_cell, metric_columns
    metrics = metric_columns(doc["results"])
    t = Table("backend", "precision", "status", "median ms", "p90 ms", "speed-up", *(c.header for c in metrics),
              "max abs err", "atol/rtol", title=f"Backends (reference {doc['reference']})", title_justify="left",
              caption=escape(interval_note(metrics)) or None, caption_justify="left")
    for r in doc["results"]:
        tm = r.get("timing") or {}
        errs = [o["max_abs_err"] for o in r["outputs"].values() if isinstance(o.get("max_abs_err"), float)]
        t.add_row(r["backend"], r["precision"], status(r["status"]), fmt(tm.get("median_ms")), fmt(tm.get("p90_ms")),
                  _speedup(speedup_cell(r, doc["results"], 3), r), *(escape(metric_cell(r, c.name)) for c in metrics),
                  fmt(max(errs) if errs else None), tolerance_text(r["outputs"]))
    out.print(t)
    for w in timing_warnings(doc["results"]):
        out.print(f"  [yellow]warning[/] {escape(w)}")
    if doc.get("search"):
        _print_search(doc["search"])
    for r in doc["results"]:
        if r["reason"]:
            out.print(f"  {status(r['status'])} [bold]{escape(r['backend'])}[/]: {escape(r['reason'])}")
    out.print(f"Report: {escape(str(settings.report_dir))}/report.md")
    if packaged is not None:
        from enginekit.cli.package_cmd import print_package

        print_package(packaged.path, packaged.engines, False)
    elif package is not None:
        out.print("[yellow]No package written[/]: the run did not pass, so there is no verified engine to ship.")
    verdict(result.passed, weak=result.weak_reference, skipped=result.skipped)
    common.exit_with(result.exit_code)


def _optimize_with_progress(settings: Any) -> Any:
    """optimize() under a spinner on stderr, with a bar per dataset phase (reading images, scoring each candidate)
    when there is a dataset."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from enginekit.pipeline import optimize

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=common.err, transient=True) as bar:
        bar.add_task("optimize: running backends…", total=None)
        tasks: dict[str, Any] = {}

        def progress(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(f"dataset: {what}", total=max(total, 1))
            bar.update(tasks[what], completed=done, total=max(total, 1))

        return optimize(settings, common.command_line(), progress)


def _speedup(text: str, row: dict[str, object]) -> str:
    """The speed-up cell, in yellow when it is unstable."""
    return f"[yellow]{text}[/]" if row.get("unstable") else text


def _search_batches(texts: list[str] | None) -> list[int]:
    from enginekit.bench.points import parse_batches
    from enginekit.errors import InvalidArgumentError

    try:
        return [b for text in texts or [] for b in parse_batches(text)]
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(exc.message.replace("--batch", "--search-batch", 1)) from None


def _print_search(search: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from enginekit.cli.render import status
    from enginekit.report.markdown import fmt
    from enginekit.report.search_md import ROW_HEADERS, SUMMARY_HEADERS, row_cells, summary_cells, unstable_notes

    where = search["device"] + (f", {search['gpu']}" if search.get("gpu") else "")
    rows = Table(*ROW_HEADERS, title=f"Configuration search ({where}; verified against eager fp32)",
                 title_justify="left")
    for r in search["rows"]:
        cells = [escape(fmt(c)) for c in row_cells(r)]
        cells[3] = status(r["status"])
        rows.add_row(*cells)
    common.out.print(rows)
    best = Table(*SUMMARY_HEADERS, title="Best per batch (passing rows only)", title_justify="left")
    for s in search["best"]:
        best.add_row(*[escape(fmt(c)) for c in summary_cells(s)])
    common.out.print(best)
    for note in unstable_notes(search["rows"]):
        common.out.print(f"  [yellow]warning[/] {escape(note)}")
    for r in search["rows"]:
        if r.get("reason"):
            common.out.print(f"  {status(r['status'])} [bold]{escape(r['candidate'])}[/] at batch {r['batch']}: "
                             f"{escape(r['reason'])}")


def check_package_target(package: Path, report: Path) -> None:
    """Refuse an unusable --package folder before anything runs (exit 2)."""
    from enginekit.errors import OutputPathError

    if package.resolve() == report.resolve():
        raise OutputPathError("--package must not be the --report folder.", hint="Give --package a new folder.")
    if package.exists() and (not package.is_dir() or any(package.iterdir())):
        raise OutputPathError(f"--package '{package}' exists and is not empty.", hint="Give a new folder.")
