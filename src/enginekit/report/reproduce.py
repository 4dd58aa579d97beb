"""The CLI command equivalent to a settings object, for reproduce.sh when the Python API ran the job."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from enginekit.compare import CompareSettings, Tolerances
from enginekit.data import InputShape
from enginekit.settings import (
    BackendSettings,
    BenchSettings,
    BuildSettings,
    DebugSettings,
    ExportSettings,
    FeedSettings,
    OptimizeSettings,
    PrepareSettings,
    RunSettings,
    SearchSettings,
)


def _tolerance_args(flag: str, tol: Tolerances) -> list[str]:
    """The tolerance options; a default the user did not give is left out (below FP32 it is scale-aware, and
    writing it out would make the rerun keep it as given)."""
    args = [flag, repr(tol.default)] if tol.default_given else []
    for name, value in tol.per_output:
        args += [flag, f"{name}:{value!r}"]
    return args


def _feed_args(f: FeedSettings) -> list[str]:
    args = ["--seed", str(f.seed)]
    for shape in f.inputs:
        args += ["--input", shape.to_arg()]
    if f.load_inputs is not None:
        args += ["--load-inputs", str(f.load_inputs)]
    for r in f.val_ranges:
        args += ["--val-range", (f"{r.name}:" if r.name else "") + f"{r.low!r},{r.high!r}"]
    if f.allow_nonfinite:
        args.append("--allow-nonfinite")
    return args


def _compare_args(c: CompareSettings) -> list[str]:
    args = _tolerance_args("--atol", c.atol) + _tolerance_args("--rtol", c.rtol)
    args += ["--check-error-stat", c.check_error_stat]
    return args + (["--validate"] if c.validate else [])


def _backend_args(b: BackendSettings) -> list[str]:
    return [a for p in b.ort_providers for a in ("--ort-providers", p)]


def _export_args(e: ExportSettings) -> list[str]:
    args = [a for t in e.inputs for a in ("--input", t)]
    for d in e.dynamic:
        rng = f"[{d.min or ''}..{d.max or ''}]" if d.min or d.max else ""
        args += ["--dynamic", f"{d.input}:{d.axis}={d.label}{rng}"]
    if e.weights is not None:
        args += ["--weights", str(e.weights)]
    args += ["--exporter", e.exporter, "--opset", str(e.opset or "auto"), "--target", e.target]
    for r in e.val_ranges:
        args += ["--val-range", (f"{r.name}:" if r.name else "") + f"{r.low!r},{r.high!r}"]
    return args


def _search_args(search: SearchSettings | None) -> list[str]:
    if search is None:
        return []
    from enginekit.settings import SearchSettings

    args = []
    if search.compile_limit_s != SearchSettings().compile_limit_s:
        args += ["--search-compile-limit", f"{search.compile_limit_s or 0.0!r}s"]
    if search.auto:  # an automatic search comes back from --torch-device cuda itself
        return args
    args += ["--search-batch", ",".join(map(str, search.batches))] if search.batches else []
    args += [a for c in search.candidates for a in ("--search-candidate", c)]
    args += [a for p in search.precisions for a in ("--search-precision", p)]
    return args + ["--search-duration", f"{search.duration_s!r}s"]


def optimize_command(s: OptimizeSettings) -> list[str]:
    """The `enginekit optimize` argv that builds ``s`` again (every option optimize takes; the round trip
    settings -> argv -> settings is tested in tests/report/test_reproduce_roundtrip.py)."""
    if s.export is not None:
        cmd = ["enginekit", "optimize", s.export.source, *_export_args(s.export), "--seed", str(s.export.seed)]
        cmd += [] if s.prepare is not None else ["--no-prepare"]
    else:
        cmd = ["enginekit", "optimize"] + ([str(s.model)] if s.model is not None else [])
        cmd += ["--prepare"] if s.prepare is not None else []
    for name in s.backends:
        cmd += ["--backend", name]
    if s.reference:
        cmd += ["--reference", s.reference]
    if s.dataset is not None:
        cmd += ["--dataset", str(s.dataset)]
    if s.batch_size:
        cmd += ["--batch-size", str(s.batch_size)]
    cmd += [a for p in s.preprocess for a in ("--preprocess", p)]
    cmd += ["--preprocess-file", str(s.preprocess_file)] if s.preprocess_file is not None else []
    cmd += ["--limit", str(s.limit)] if s.limit else []
    cmd += [a for g in s.gates for a in ("--gate", g)]
    cmd += ["--task", s.task] if s.task != "classification" else []
    cmd += ["--threshold", repr(s.threshold)] if s.threshold != 0.5 else []
    cmd += ["--ctc-blank", str(s.ctc_blank)] if s.ctc_blank else []
    cmd += ["--postprocess", s.postprocess] if s.postprocess else []
    cmd += ["--masks", str(s.masks)] if s.masks is not None else []
    cmd += ["--annotations", str(s.annotations)] if s.annotations is not None else []
    if s.export is None:
        cmd += _feed_args(s.feeds) + (["--target", s.builds[0].backend] if s.builds else [])
    cmd += _build_args(s)
    b = s.backend
    if b.torch_device != "auto":
        cmd += ["--torch-device", b.torch_device]
    if b.precision_plan_model is not None and not (s.export is not None and b.precision_plan_model == s.export.output):
        cmd += ["--precision-plan-model", str(b.precision_plan_model)]
    if b.trust_remote_code:
        cmd.append("--trust-remote-code")
    cmd += _search_args(s.search)
    return cmd + _compare_args(s.compare) + _backend_args(b) + ["--report", str(s.report_dir)]


def _build_args(s: OptimizeSettings) -> list[str]:
    """--precision per build (when not the defaults), and the options every build shares."""
    if not s.builds:
        return ["--precision-plan", str(s.backend.precision_plan)] if s.backend.precision_plan else []
    first = s.builds[0]
    args = [a for b in s.builds for a in ("--precision", b.precision)]
    args += [a for p in first.profiles for a in ("--profile", p)]
    if first.calib_data is not None:
        args += ["--calib-data", str(first.calib_data)]
    args += [a for cc in first.compute_capabilities for a in ("--compute-capability", cc)]
    if first.cache_dir is not None:
        args += ["--cache-dir", str(first.cache_dir)]
    plan = s.backend.precision_plan or next((b.precision_plan for b in s.builds if b.precision_plan), None)
    return args + (["--precision-plan", str(plan)] if plan is not None else [])


def run_command(s: RunSettings) -> list[str]:
    """The `enginekit run` argv that builds ``s`` again (round trip tested like optimize's)."""
    b, d = s.backend, BackendSettings()
    cmd = ["enginekit", "run", str(s.model)]
    for name in s.backends:
        cmd += ["--backend", name]
    if s.reference:
        cmd += ["--reference", s.reference]
    cmd += _feed_args(s.feeds) + _compare_args(s.compare)
    if s.compare.equal_nan:
        cmd.append("--equal-nan")
    for flag, path in (("--save-inputs", s.save_inputs), ("--save-outputs", s.save_outputs),
                       ("--report", s.report_dir)):
        cmd += [flag, str(path)] if path is not None else []
    cmd += [] if s.check_model else ["--no-check"]
    cmd += _backend_args(b)
    options: list[tuple[str, object, object]] = [
        ("--openvino-precision", b.openvino_precision, d.openvino_precision),
        ("--ort-graph-optimization", b.ort_graph_optimization, d.ort_graph_optimization),
        ("--ort-threads", b.ort_intra_op_threads, d.ort_intra_op_threads),
        ("--ort-save-optimized", b.ort_optimized_model, d.ort_optimized_model),
        ("--ort-trt-cache", b.ort_trt_cache_dir, d.ort_trt_cache_dir),
        ("--torch-device", b.torch_device, d.torch_device),
        ("--inductor-mode", b.inductor_mode, d.inductor_mode),
        ("--channels-last", b.channels_last, d.channels_last),
        ("--dynamic-shapes", b.dynamic_shapes, d.dynamic_shapes),
        ("--precision-plan", b.precision_plan, d.precision_plan),
        ("--precision-plan-model", b.precision_plan_model, d.precision_plan_model),
    ]
    for flag, value, default in options:
        if value != default:
            cmd += [flag, str(value)]
    cmd += [a for p in b.ort_trt_profiles for a in ("--ort-trt-profile", p)]
    cmd += ["--ort-fp16"] if b.ort_cuda_fp16 else []
    cmd += [] if b.inductor_freezing else ["--no-inductor-freezing"]
    cmd += ["--trust-remote-code"] if b.trust_remote_code else []
    return cmd


def export_command(s: ExportSettings) -> list[str]:
    """The `enginekit export` argv that builds ``s`` again (the size threshold for external data has no option)."""
    cmd = ["enginekit", "export", s.source, "--output", str(s.output), *_export_args(s), "--seed", str(s.seed)]
    cmd += [a for n in s.output_names for a in ("--output-names", n)]
    cmd += [] if s.verify else ["--no-verify"]
    cmd += _tolerance_args("--atol", s.compare.atol) + _tolerance_args("--rtol", s.compare.rtol)
    return cmd + (["--trust-remote-code"] if s.trust_remote_code else [])


def build_command(model: str | Path, s: BuildSettings) -> list[str]:
    """The `enginekit build` argv that builds ``s`` again."""
    d = BuildSettings()
    cmd = ["enginekit", "build", str(model), "--backend", s.backend, "--precision", s.precision]
    cmd += [a for p in s.profiles for a in ("--profile", p)]
    cmd += [a for cc in s.compute_capabilities for a in ("--compute-capability", cc)]
    options: list[tuple[str, object, object]] = [
        ("--output", s.output, d.output), ("--profile-from", s.profile_from, d.profile_from),
        ("--precision-plan", s.precision_plan, d.precision_plan), ("--calib-data", s.calib_data, d.calib_data),
        ("--calib-method", s.calib_method, d.calib_method), ("--calib-cache", s.calib_cache, d.calib_cache),
        ("--workspace", s.workspace_mib, d.workspace_mib), ("--opt-level", s.optimization_level, d.optimization_level),
        ("--timing-cache", s.timing_cache, d.timing_cache),
        ("--hardware-compatibility", s.hardware_compatibility, d.hardware_compatibility),
        ("--cache-dir", s.cache_dir, d.cache_dir),
    ]
    for flag, value, default in options:
        if value != default:
            cmd += [flag, str(value)]
    cmd += ["--version-compatible"] if s.version_compatible else []
    cmd += [] if s.use_cache else ["--no-cache"]
    return cmd + ([] if s.unique_dim_names else ["--keep-dim-names"])


def prepare_command(model: str | Path, s: PrepareSettings) -> list[str]:
    """The `enginekit prepare` argv that builds ``s`` again."""
    cmd = ["enginekit", "prepare", str(model), "--output", str(s.output)]
    if s.passes != PrepareSettings.passes:
        cmd += [a for p in s.passes for a in ("--pass", p)] if s.passes else ["--pass", "none"]
    cmd += ["--opset", str(s.target_opset)] if s.target_opset is not None else []
    cmd += [a for shape in s.fix_input_shapes for a in ("--fix-input-shapes", shape.to_arg())]
    cmd += [] if s.verify else ["--no-verify"]
    return cmd + _feed_args(s.feeds) + _compare_args(s.compare)


def debug_command(model: str | Path, s: DebugSettings, feeds: FeedSettings | None = None) -> list[str]:
    """The `enginekit debug precision` argv that builds ``s`` (and the feed settings) again."""
    d = DebugSettings()
    cmd = ["enginekit", "debug", "precision", str(model), "--precision", s.precision, "--reference", s.reference]
    options: list[tuple[str, object, object]] = [
        ("--backend", s.backend, d.backend), ("--calibration", s.calibration, d.calibration),
        ("--calib-method", s.calib_method, d.calib_method), ("--check", s.check, d.check),
        ("--max-evaluations", s.max_evaluations, d.max_evaluations),
    ]
    for flag, value, default in options:
        if value != default:
            cmd += [flag, str(value)]
    cmd += [] if s.range_analysis else ["--no-range-analysis"]
    cmd += ["--allow-weak-reference"] if s.allow_weak_reference else []
    cmd += _tolerance_args("--atol", s.compare.atol) + _tolerance_args("--rtol", s.compare.rtol)
    cmd += ["--check-error-stat", s.compare.check_error_stat]
    return cmd + _feed_args(feeds or FeedSettings())


def bench_command(model: str | Path, candidates: Sequence[str], s: BenchSettings, b: BackendSettings,
                  inputs: Sequence[InputShape] = ()) -> list[str]:
    """The `enginekit bench` argv that builds these settings again (``max_iterations``/``max_time_s`` have no
    option: the CLI always uses BenchSettings' own)."""
    bd = BackendSettings()
    cmd = ["enginekit", "bench", str(model)]
    cmd += [a for c in candidates for a in ("--backend", c)]
    cmd += ["--baseline", s.baseline] if s.baseline else []
    cmd += ["--warmup", f"{s.warmup_s!r}s", "--warmup-iterations", str(s.warmup_iterations),
            "--duration", f"{s.duration_s!r}s", "--iterations", str(s.iterations), "--seed", str(s.seed),
            "--streams", str(s.streams), "--unstable-cv", repr(s.unstable_cv)]
    cmd += ["--batch", ",".join(map(str, s.batches))] if s.batches else []
    cmd += [a for shapes in s.shapes for a in ("--shapes", ",".join(x.to_arg() for x in shapes))]
    cmd += [a for x in inputs for a in ("--input", x.to_arg())]
    cmd += ["--with-transfers"] if s.with_transfers else []
    cmd += ["--cuda-graph"] if s.cuda_graph else []
    cmd += _backend_args(b)
    options: list[tuple[str, object, object]] = [
        ("--ort-intra-op-threads", b.ort_intra_op_threads, bd.ort_intra_op_threads),
        ("--openvino-precision", b.openvino_precision, bd.openvino_precision),
        ("--torch-device", b.torch_device, bd.torch_device), ("--inductor-mode", b.inductor_mode, bd.inductor_mode),
        ("--channels-last", b.channels_last, bd.channels_last),
        ("--dynamic-shapes", b.dynamic_shapes, bd.dynamic_shapes),
    ]
    for flag, value, default in options:
        if value != default:
            cmd += [flag, str(value)]
    cmd += [] if b.inductor_freezing else ["--no-inductor-freezing"]
    return cmd + (["--trust-remote-code"] if b.trust_remote_code else [])
