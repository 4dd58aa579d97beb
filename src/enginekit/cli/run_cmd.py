"""`enginekit run MODEL --backend A --backend B`: same feeds on every backend, compared with the reference."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from enginekit.cli import common
from enginekit.cli.common import (
    AllowNonFiniteOpt,
    AtolOpt,
    InputOpt,
    JsonOpt,
    LoadInputsOpt,
    OrtProvidersOpt,
    OvPrecisionOpt,
    RtolOpt,
    SeedOpt,
    StatOpt,
    ValidateOpt,
    ValRangeOpt,
)


def run(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="ONNX model, Paddle model, TensorRT engine, or a "
                     "PyTorch source (file.py:factory, TorchScript, .pt2) for the torch/inductor/aoti backends. A "
                     "file.py:factory is imported and executed; TorchScript and .pt2 files (programs, AOTInductor "
                     "packages) run code they carry, so they load only with --trust-remote-code.")],
    backend: Annotated[list[str] | None, typer.Option("--backend", "-b", help="Backend[:PRECISION] to run (ort, "
                       "ort:fp16, openvino, onnx-reference:fp16, torch:fp16, ...); repeat or comma-separate. The "
                       "first is the reference. The same backend twice is a determinism check (the second is "
                       "labelled ort#2).",
                       show_default=False)] = None,
    reference: Annotated[str | None, typer.Option("--reference", help="Which listed backend is the reference.",
                         show_default=False)] = None,
    inputs: InputOpt = None,
    load_inputs: LoadInputsOpt = None,
    seed: SeedOpt = 1,
    val_range: ValRangeOpt = None,
    allow_nonfinite: AllowNonFiniteOpt = False,
    save_inputs: Annotated[Path | None, typer.Option("--save-inputs", help="Write the feed to this .npz.",
                           show_default=False)] = None,
    save_outputs: Annotated[Path | None, typer.Option("--save-outputs", help="Write outputs to .npz: with one "
                            "backend to this file, with several to STEM.BACKEND.npz beside it.",
                            show_default=False)] = None,
    ort_providers: OrtProvidersOpt = None,
    ort_graph_optimization: common.OrtGraphOpt = "all",
    ort_threads: common.OrtThreadsOpt = 0,
    ort_save_optimized: common.OrtSaveOpt = None,
    ort_fp16: common.OrtFp16Opt = False,
    ort_trt_cache: common.OrtTrtCacheOpt = None,
    ort_trt_profile: common.OrtTrtProfileOpt = None,
    openvino_precision: OvPrecisionOpt = "fp32",
    torch_device: common.TorchDeviceOpt = "auto",
    inductor_mode: common.InductorModeOpt = "default",
    inductor_freezing: common.InductorFreezingOpt = True,
    channels_last: common.ChannelsLastOpt = "auto",
    dynamic_shapes: common.DynamicShapesOpt = "static",
    precision_plan: common.PrecisionPlanOpt = None,
    precision_plan_model: common.PrecisionPlanModelOpt = None,
    trust_remote_code: common.TrustRemoteCodeOpt = False,
    atol: AtolOpt = None,
    rtol: RtolOpt = None,
    check_error_stat: StatOpt = "elemwise",
    validate: ValidateOpt = False,
    equal_nan: common.EqualNanOpt = False,
    report: Annotated[Path | None, typer.Option("--report", help="Write report.json, report.md, reproduce.sh "
                      "and the .npz feeds/outputs into this folder.", show_default=False)] = None,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Run the ONNX checker on an ONNX model first "
                     "(an invalid graph is a user error, exit 2); --no-check leaves the judgement to the "
                     "backends.")] = True,
    objective: Annotated[str, typer.Option("--objective", help="MODEL is a package (enginekit package / optimize "
                         "--package): the engine to run, min_latency or max_throughput.")] = "min_latency",
    as_json: JsonOpt = False,
) -> None:
    """Run one model (ONNX, Paddle, TensorRT engine or PyTorch source) on several backends with the same feeds
    and compare every output with the reference. MODEL may be a package folder: its engine runs the saved inputs
    and is compared with the outputs recorded in it."""
    from dataclasses import replace

    from enginekit.deploy.package import is_package

    if is_package(model):
        from enginekit.cli.package_cmd import print_package_run
        from enginekit.deploy.package_run import run_package

        done = run_package(model, objective, trust_remote_code=trust_remote_code)
        print_package_run(done.to_dict(), as_json)
        common.exit_with(done.exit_code)

    from enginekit.multirun import run_backends
    from enginekit.settings import RunSettings
    from enginekit.sources.detect import model_format

    fmt = model_format(model)
    torch_inputs: tuple[str, ...] = ()
    if fmt == "torch" and inputs:
        from enginekit.backends.torch_inputs import feed_shapes

        torch_inputs, inputs = tuple(inputs), feed_shapes(inputs)  # export-style spec; concrete feed shapes
    elif fmt == "torch" and load_inputs is not None:
        from enginekit.data import load_arrays  # npz key order = forward() argument order

        arrays = load_arrays(load_inputs)
        torch_inputs = tuple(f"{k}:{'x'.join(map(str, v.shape))}:{v.dtype}" for k, v in arrays.items())
    settings = RunSettings(
        model=model,
        backends=common.split_multi(backend) or ("ort",),
        reference=reference,
        feeds=common.feed_settings(inputs, load_inputs, seed, val_range, allow_nonfinite),
        backend=common.backend_settings(
            ort_providers, openvino_precision, ort_graph_optimization=ort_graph_optimization, ort_threads=ort_threads,
            ort_save_optimized=ort_save_optimized, ort_fp16=ort_fp16, ort_trt_cache=ort_trt_cache,
            ort_trt_profile=ort_trt_profile, precision_plan=precision_plan,
            precision_plan_model=precision_plan_model, trust_remote_code=trust_remote_code),
        compare=common.compare_settings(atol, rtol, check_error_stat, validate, equal_nan=equal_nan),
        save_inputs=save_inputs,
        save_outputs=save_outputs,
        report_dir=report,
        check_model=check,
    )
    from enginekit.report.run_files import check_output_paths, save_run_files

    check_output_paths(model, load_inputs, save_inputs, save_outputs, ort_save_optimized, report)
    settings = replace(settings, backend=replace(
        settings.backend, torch_inputs=torch_inputs, torch_device=torch_device, inductor_mode=inductor_mode,
        inductor_freezing=inductor_freezing, channels_last=channels_last, dynamic_shapes=dynamic_shapes))
    result = run_backends(settings)
    doc = result.to_dict()
    save_run_files(settings, result, common.command_line())
    if as_json:
        common.print_json(doc)
    else:
        from enginekit.cli.render import results_tables, verdict

        results_tables(doc["results"])
        verdict(result.passed, weak=result.weak_reference)
    common.exit_with(result.exit_code)
