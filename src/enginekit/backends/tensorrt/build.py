"""ONNX → TensorRT / TensorRT-RTX engine: parse, profiles, precision path, build, manifest, cache.

Precision paths (say which one was taken, in the manifest):
- weak typing (TensorRT 10): builder flags (FP16/BF16/INT8) plus per-layer FP32 constraints for the
  precision plan's nodes (OBEY_PRECISION_CONSTRAINTS); INT8 through a calibrator with a cache file;
- strong typing (TensorRT 11, TensorRT-RTX): the low-precision ONNX is produced first (FP16/BF16 with
  the plan's FP32 islands, or INT8 Q/DQ from onnxruntime's static quantization, checked on CPU against
  FP32) and that model is built.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enginekit.backends.tensorrt.dims import unique_dim_names, write_renamed
from enginekit.backends.tensorrt.lib import CollectingLogger, TrtLibrary, load_library, native_stdout_captured
from enginekit.errors import BuildError, InvalidArgumentError
from enginekit.registry import REDUCED_FLOAT_PRECISIONS, TENSORRT_PRECISIONS
from enginekit.settings import BuildSettings
from enginekit.tensors import TensorSpec

log = logging.getLogger(__name__)

HW_COMPAT = {"ampere-plus": "AMPERE_PLUS", "same-compute-capability": "SAME_COMPUTE_CAPABILITY"}
Progress = Callable[[str, int, int], None]  # (phase, step, total)
_MAX_WORKSPACE_MIB = (1 << 43) - 1  # the limit is bytes in an int64
TIMING_CACHE_MAGIC = b"ptrt"  # TensorRT's serialized timing caches start with it (TensorRT-RTX: b"ptrtd")


@dataclass
class BuildResult:
    plan_path: Path  # the plan (in the cache, or the output file)
    manifest: dict[str, Any]
    cached: bool = False
    output: Path | None = None
    precision_detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"plan": str(self.plan_path), "output": str(self.output) if self.output else None,
                "cached": self.cached, "manifest": self.manifest}


def _check_settings(s: BuildSettings, lib: TrtLibrary) -> None:
    if s.precision not in TENSORRT_PRECISIONS:
        raise InvalidArgumentError(f"--precision {s.precision!r}: choose one of {', '.join(TENSORRT_PRECISIONS)}.")
    if s.calib_method not in ("entropy", "minmax"):
        raise InvalidArgumentError(f"--calib-method {s.calib_method!r}: choose entropy or minmax.")
    if s.precision == "int8" and s.calib_data is None:
        raise InvalidArgumentError("--precision int8 needs --calib-data FEEDS.npz|DIR (real inputs to calibrate on).")
    if s.workspace_mib is not None and not 1 <= s.workspace_mib <= _MAX_WORKSPACE_MIB:
        raise InvalidArgumentError(f"--workspace {s.workspace_mib}: give the workspace memory pool limit in MiB, "
                                   f"from 1 to {_MAX_WORKSPACE_MIB}.", hint="Leave it out for the library's default.")
    if s.optimization_level is not None and not 0 <= s.optimization_level <= 5:
        raise InvalidArgumentError(f"--opt-level {s.optimization_level}: choose 0 to 5.")
    if s.hardware_compatibility and s.hardware_compatibility not in HW_COMPAT:
        raise InvalidArgumentError(f"--hardware-compatibility {s.hardware_compatibility!r}: choose "
                                   f"{' or '.join(HW_COMPAT)}.")
    if s.hardware_compatibility and not lib.hardware_compatibility:
        raise InvalidArgumentError(f"{lib.name} {lib.version} has no hardware-compatibility option.")
    if s.version_compatible and not lib.version_compatible:
        raise InvalidArgumentError(f"{lib.name} {lib.version} has no version-compatible engines.")
    if s.compute_capabilities and not lib.targets_compute_capability:
        raise InvalidArgumentError(f"{lib.name} {lib.version} builds for the GPU it runs on; it cannot target "
                                   "--compute-capability.")
    for cc in s.compute_capabilities:
        lib.compute_capability_enum(cc)


def target_capabilities(s: BuildSettings, lib: TrtLibrary) -> list[str]:
    """What the engine is built for: the requested compute capabilities; else the local GPU's; without a
    GPU (and a library that can target GPUs it does not see), every supported one from Ampere (8.0) on:
    TensorRT-RTX 1.7 cannot compile FP32 GEMMs for Turing (7.5), so Turing is only built when asked for."""
    if s.compute_capabilities:
        return list(s.compute_capabilities)
    from enginekit.hardware import local_gpu

    gpu = local_gpu()
    if gpu is not None:
        return [gpu["compute_capability"]]
    if lib.targets_compute_capability:
        return [cc for cc in lib.compute_capabilities() if float(cc) >= 8.0]
    raise BuildError(f"{lib.name} builds for the GPU it runs on, and no NVIDIA GPU was found here.",
                     hint="Build on the target machine, or use tensorrt-rtx with --compute-capability.")


def build_engine(model: Path, s: BuildSettings, progress: Progress | None = None) -> BuildResult:
    """Build (or fetch from the cache) an engine for ``model`` with settings ``s``."""
    from enginekit.backends.tensorrt.manifest import cache_settings, make_manifest
    from enginekit.cache import CacheEntryDamagedError, EngineCache, make_key
    from enginekit.graph.io import input_specs
    from enginekit.graph.load import load_model

    lib = load_library(s.backend)
    _check_settings(s, lib)
    check_outputs(model, s)
    proto = load_model(model, load_external_data=False, check=False)
    raw_profiles = given_profiles(s)
    renames = unique_dim_names(proto, s, raw_profiles)  # renamed in proto, written to the build's temp folder
    inputs = input_specs(proto)
    profiles = resolve_profiles(s, inputs, raw_profiles)
    targets = target_capabilities(s, lib)
    content = [p for p in (s.precision_plan, s.calib_data) if p is not None]
    key_settings = cache_settings(s, profiles, targets)
    if renames:
        key_settings["renamed_dims"] = [r.to_dict() for r in renames]
    cache = EngineCache(s.cache_dir) if s.use_cache else None
    key = make_key(model, key_settings, lib.name, lib.version, ",".join(targets), content_files=content)
    if cache is None and s.output is None:
        raise InvalidArgumentError("Give -o/--output when the cache is off (--no-cache).")
    if cache is not None:
        cache.ensure_writable()  # a file or a read-only folder: said now (exit 2), not after the build
        cache.clean_temp()  # folders of builds killed earlier (their process is gone)
        entry = cache.get(key)
        if entry is not None:
            try:
                hit = entry.read_plan() if s.output is not None else None  # re-checked against its sha256
            except CacheEntryDamagedError as exc:  # cleared or replaced since the lookup: build it again
                log.warning("engine cache entry %s went away while it was read (%s); building again",
                            key[:12], exc.message)
            else:
                log.info("engine cache hit %s", key[:12])
                result = BuildResult(entry.plan_path, entry.manifest, cached=True)
                _write_output(result, s, hit)
                return result

    t0 = time.perf_counter()
    work = cache.build_dir() if cache is not None else _system_build_dir()
    try:
        source = write_renamed(proto, model, work) if renames else model
        build_model, detail = precision_model(source, s, lib, work)
        with native_stdout_captured() as printed:  # the library prints some warnings to fd 1
            plan, network_info, logger = _build(build_model, s, lib, profiles, targets, detail, progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    manifest = make_manifest(lib, s, model, profiles, targets, network_info, detail,
                             time.perf_counter() - t0, logger.warnings() + printed, key_settings)
    manifest["renamed_dims"] = [r.to_dict() for r in renames]
    if cache is not None:
        entry = cache.put(key, plan, manifest)
        result = BuildResult(entry.plan_path, entry.manifest, precision_detail=detail)
    else:
        assert s.output is not None
        manifest.update(plan_bytes=len(plan), plan_sha256=hashlib.sha256(plan).hexdigest())
        result = BuildResult(s.output, manifest, precision_detail=detail)
    _write_output(result, s, plan)  # from the bytes in hand: a `cache clear` meanwhile cannot lose them
    return result


def _system_build_dir() -> Path:
    """A build folder in the system temp folder (--no-cache), named after this process; leftovers of killed
    builds there are removed first."""
    from enginekit.cache_cleanup import BUILD_PREFIX, clean_temp, make_temp_dir

    root = Path(tempfile.gettempdir())
    clean_temp(root, prefixes=(BUILD_PREFIX,))
    return make_temp_dir(root, BUILD_PREFIX)


def _write_output(result: BuildResult, s: BuildSettings, plan: bytes | None) -> None:
    """Write the plan (untouched) to ``s.output`` and the manifest to ``<output>.json``, as a pair."""
    from enginekit.cache import write_plan_pair

    if s.output is None or plan is None:
        return
    write_plan_pair(s.output, plan, result.manifest)
    result.output = s.output


def check_outputs(model: Path, s: BuildSettings) -> None:
    """Refuse outputs that would overwrite an input or an unrelated file (exit 2), before any work is done.

    ``-o`` and ``<-o>.json`` must be files that can be written and none of the inputs (the model, the
    precision plan, calibration data, profile feeds, the timing cache), compared by resolved identity (a
    symlink, a hardlink or another spelling of the same path too). ``--timing-cache`` must not be an input or
    ``-o``, and when it exists and is not empty it must be a TensorRT timing cache.
    """
    from enginekit.errors import OutputPathError
    from enginekit.fileutil import check_output_file, refuse_overwriting_inputs

    inputs: list[tuple[str, Path | None]] = [("the model", model), ("--precision-plan", s.precision_plan),
                                             ("--calib-data", s.calib_data), ("--profile-from", s.profile_from)]
    if s.output is not None:
        sidecar = Path(str(s.output) + ".json")
        for path, option in ((s.output, "-o/--output"), (sidecar, "The manifest of -o")):
            check_output_file(path, option, probe=True)
            refuse_overwriting_inputs(path, [*inputs, ("--timing-cache", s.timing_cache),
                                             ("--calib-cache", s.calib_cache)], option)
    if s.timing_cache is not None:
        outputs = [] if s.output is None else [("-o/--output", s.output), ("its manifest", Path(f"{s.output}.json"))]
        check_output_file(s.timing_cache, "--timing-cache", probe=True)
        refuse_overwriting_inputs(s.timing_cache, [*inputs, *outputs], "--timing-cache")
        try:
            with open(s.timing_cache, "rb") as fh:
                head = fh.read(len(TIMING_CACHE_MAGIC))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise OutputPathError(f"Could not read --timing-cache '{s.timing_cache}': {exc.strerror or exc}.",
                                  hint="Check its permissions, or give another path.") from exc
        if head and head != TIMING_CACHE_MAGIC:
            raise OutputPathError(
                f"--timing-cache '{s.timing_cache}' is not a TensorRT timing cache (it starts with {head!r}, a "
                f"timing cache with {TIMING_CACHE_MAGIC!r}); the build would overwrite it.",
                hint="Give a new path or an existing timing cache file.")


def given_profiles(s: BuildSettings) -> list[Any]:
    """The profiles of ``--profile`` and ``--profile-from``, parsed, not yet checked against the model."""
    from enginekit.backends.tensorrt.profiles import parse_profiles, profiles_from_feeds

    profiles = list(parse_profiles(s.profiles))
    if s.profile_from is not None:
        profiles.append(profiles_from_feeds(s.profile_from))
    return profiles


def resolve_profiles(s: BuildSettings, inputs: list[TensorSpec], given: list[Any] | None = None) -> list[Any]:
    """Validated optimization profiles; a dynamic input without one is an error (never a silent 1)."""
    from enginekit.backends.tensorrt.profiles import missing_profiles_error, validate_profiles

    profiles = given_profiles(s) if given is None else given
    if not profiles:
        if any(i.is_dynamic for i in inputs):
            raise missing_profiles_error(inputs)
        return []
    return list(validate_profiles(profiles, inputs))


def precision_model(model: Path, s: BuildSettings, lib: TrtLibrary, tmp: Path) -> tuple[Path, dict[str, Any]]:
    """The ONNX file to parse and what was done for the requested precision."""
    precision = s.precision
    if lib.weak_typing:
        detail: dict[str, Any] = {"path": "weak-typing", "precision": precision,
                                  "how": "builder flags" + (" + FP32 layer constraints from the plan"
                                                            if s.precision_plan else "")}
        if precision in ("int8", "best") and s.calib_data is not None:
            detail["how"] += f"; INT8 calibrator ({s.calib_method})"
        _weak_range_keeps(model, precision, detail)
        return model, detail
    if precision == "best":
        precision = "int8" if s.calib_data is not None else "fp16"
    if precision == "fp32":
        return model, {"path": "strong-typing", "precision": "fp32", "how": "ONNX types as given"}
    if precision in REDUCED_FLOAT_PRECISIONS:
        import onnx

        from enginekit.graph.load import load_model
        from enginekit.graph.precision import check_plan_nodes, convert_precision, load_plan

        proto = load_model(model)
        plan = load_plan(s.precision_plan) if s.precision_plan else None
        if plan is not None:
            check_plan_nodes(plan, proto)
        conv = convert_precision(proto, precision, plan)
        out = tmp / f"model.{precision}.onnx"
        onnx.save_model(conv.model, str(out))
        return out, {"path": "strong-typing", "precision": precision,
                     "how": f"converted the ONNX to {precision} keeping IO types, {len(conv.kept_fp32)} plan "
                            f"node(s) and {len(conv.range_kept)} node(s) reading out-of-range constants in FP32",
                     "conversion": conv.to_dict(), "range_kept_fp32": [k.to_dict() for k in conv.range_kept],
                     "warnings": conv.warnings()}
    from enginekit.graph.calibration import load_calibration_feeds
    from enginekit.graph.io import input_specs
    from enginekit.graph.load import load_model
    from enginekit.graph.quantize import check_quantized_accuracy, quantize_qdq

    assert s.calib_data is not None
    specs = input_specs(load_model(model, load_external_data=False, check=False))
    feeds = load_calibration_feeds(s.calib_data, specs)
    qdq = tmp / "model.int8.qdq.onnx"
    exclude = int8_plan_nodes(s.precision_plan)
    q = quantize_qdq(model, feeds, method=s.calib_method, output=qdq, exclude_nodes=exclude)
    check = check_quantized_accuracy(model, qdq, feeds[: min(len(feeds), 64)])
    return qdq, {"path": "strong-typing", "precision": "int8",
                 "how": f"INT8 Q/DQ by onnxruntime static quantization ({s.calib_method}), "
                        f"{len(exclude)} plan node(s) left in float, checked on CPU against FP32",
                 "quantization": q.to_dict(), "cpu_check": check.to_dict()}


def _weak_range_keeps(model: Path, precision: str, detail: dict[str, Any]) -> None:
    """Weak typing, FP16/BF16 flag: the nodes reading constants beyond the type's range, to pin to FP32 layers
    (the builder would clip their weights), recorded in ``detail`` (range_kept_fp32, warnings)."""
    low = {"fp16": "fp16", "best": "fp16", "bf16": "bf16"}.get(precision)
    if low is None:
        return
    from enginekit.graph.fp16_range import summary_lines
    from enginekit.graph.load import load_model
    from enginekit.graph.precision import out_of_range_nodes

    keeps = out_of_range_nodes(load_model(model), low)
    if keeps:
        detail["how"] += f" + FP32 layer constraints for {len(keeps)} node(s) reading out-of-range constants"
        detail["range_kept_fp32"] = [k.to_dict() for k in keeps]
        detail["warnings"] = summary_lines(keeps)


def int8_plan_nodes(path: Path | None) -> list[str]:
    """Nodes an INT8 precision plan leaves out of quantization ([] without a plan)."""
    if path is None:
        return []
    from enginekit.graph.precision import load_plan

    plan = load_plan(path)
    if plan.precision != "int8":
        raise InvalidArgumentError(f"The precision plan {str(path)!r} is for {plan.precision}, the build is INT8.",
                                   hint="Make the plan with `enginekit debug precision --precision int8`.")
    return plan.node_names()


def _build(model: Path, s: BuildSettings, lib: TrtLibrary, profiles: list[Any], targets: list[str],
           detail: dict[str, Any], progress: Progress | None) -> tuple[bytes, dict[str, Any], Any]:
    from enginekit.backends.tensorrt.network import apply_layer_constraints, network_info, parse_network

    trt = lib.module
    logger = CollectingLogger(trt)
    builder = trt.Builder(logger)
    network, parser = parse_network(builder, lib, model, logger)
    config = builder.create_builder_config()
    for profile in profiles:
        p = builder.create_optimization_profile()
        for r in profile.shapes:
            p.set_shape(r.name, r.min, r.opt, r.max)
        config.add_optimization_profile(p)
    if s.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, s.workspace_mib << 20)
    if s.optimization_level is not None:
        config.builder_optimization_level = s.optimization_level
    if s.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if s.hardware_compatibility:
        level = HW_COMPAT[s.hardware_compatibility]
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, level)
    if lib.targets_compute_capability:
        config.num_compute_capabilities = len(targets)
        for i, cc in enumerate(targets):
            config.set_compute_capability(lib.compute_capability_enum(cc), i)
    if lib.weak_typing:
        _weak_typing_flags(config, network, s, lib, detail, apply_layer_constraints)
    timing = _load_timing_cache(config, s.timing_cache)
    if progress is not None:
        config.progress_monitor = _progress_monitor(trt, progress)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        errors = "; ".join(logger.errors()[-5:]) or "no message"
        raise BuildError(f"{lib.name} {lib.version} could not build the engine: {errors}")
    if s.timing_cache is not None and timing is not None:
        from enginekit.fileutil import atomic_write_bytes

        atomic_write_bytes(s.timing_cache, bytes(config.get_timing_cache().serialize()))
    info = network_info(network)
    del parser
    return bytes(plan), info, logger


def _weak_typing_flags(config: Any, network: Any, s: BuildSettings, lib: TrtLibrary, detail: dict[str, Any],
                       apply_layer_constraints: Any) -> None:
    """TensorRT 10: precision from builder flags, plan nodes pinned to FP32 (not testable without TensorRT)."""
    trt = lib.module
    wanted = {"fp16": ["FP16"], "bf16": ["BF16"], "int8": ["INT8"], "best": ["FP16", "INT8"]}.get(s.precision, [])
    for flag in wanted:
        if flag == "INT8" and s.calib_data is None:
            continue
        config.set_flag(getattr(trt.BuilderFlag, flag))
    range_kept = detail.get("range_kept_fp32", [])
    if s.precision_plan is not None or range_kept:
        from enginekit.graph.precision import PlanEntry, PrecisionPlan, load_plan

        plan = load_plan(s.precision_plan) if s.precision_plan is not None else PrecisionPlan("fp16")
        entries = (*plan.keep_fp32, *(PlanEntry(k["node"], k["reason"]) for k in range_kept))
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        detail["constrained_layers"] = apply_layer_constraints(network, PrecisionPlan(plan.precision, entries), trt)
    if "INT8" in wanted and s.calib_data is not None:
        from enginekit.backends.tensorrt.calibrator import make_calibrator

        config.int8_calibrator = make_calibrator(lib, s)


def _load_timing_cache(config: Any, path: Path | None) -> Any:
    if path is None:
        return None
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def _progress_monitor(trt: Any, progress: Progress) -> Any:
    class Monitor(trt.IProgressMonitor):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.totals: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.totals[phase_name] = num_steps
            progress(phase_name, 0, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            progress(phase_name, step + 1, self.totals.get(phase_name, 0))
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            total = self.totals.get(phase_name, 0)
            progress(phase_name, total, total)

    return Monitor()
