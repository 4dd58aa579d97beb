"""Shared CLI pieces: consoles, verbosity, option types, settings builders, error → exit code."""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

# Wide tables when piped or captured (a terminal keeps its own width). No emoji codes: a path or name holding
# ":x:" is printed as written (markup in user text is escaped where it is printed).
_WIDTH = None if sys.stdout.isatty() else 200
out = Console(highlight=False, width=_WIDTH, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


class State:
    verbose: int = 0
    argv: list[str] = []  # the arguments main() was called with, for reproduce.sh


def command_line() -> list[str]:
    """The command being run, written as ``enginekit ARGS``."""
    return ["enginekit", *State.argv]


def setup_logging(verbose: int) -> None:
    State.verbose = verbose
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    from rich.logging import RichHandler

    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=err, show_path=False)],
                        force=True)


def print_json(data: Any) -> None:
    """Machine-readable output on stdout: strict JSON (no NaN/Infinity)."""
    typer.echo(json.dumps(data, indent=2, allow_nan=False))


def exit_with(code: int) -> None:
    raise typer.Exit(code)


# Option types shared by several subcommands -------------------------------------------------------
InputOpt = Annotated[
    list[str] | None,
    typer.Option("--input", "-i", help="Input shape NAME:DIMS[:DTYPE], e.g. x:1x3x224x224 or ids:1x128:int64. "
                 "Required for inputs with symbolic dims. Repeat per input.", show_default=False),
]
LoadInputsOpt = Annotated[
    Path | None, typer.Option("--load-inputs", help="Feeds from .npz or .json ({name: array}, or "
                                 "`polygraphy run --save-inputs` JSON: its first feed).", show_default=False)
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the random feeds.")]
ValRangeOpt = Annotated[
    list[str] | None,
    typer.Option("--val-range", help="Random value range [NAME:]LOW,HIGH (default 0,1 for floats; 0..100 for "
                 "integer ids, 1 for masks). Repeatable.", show_default=False),
]
AllowNonFiniteOpt = Annotated[
    bool, typer.Option("--allow-nonfinite", help="Accept NaN/Inf in loaded feeds instead of refusing them.")
]
AtolOpt = Annotated[
    list[str] | None,
    typer.Option("--atol", help="Absolute tolerance: VALUE (default 1e-5) or OUTPUT:VALUE. Repeatable.",
                 show_default=False),
]
RtolOpt = Annotated[
    list[str] | None,
    typer.Option("--rtol", help="Relative tolerance: VALUE (default 1e-5) or OUTPUT:VALUE. Repeatable.",
                 show_default=False),
]
StatOpt = Annotated[
    str,
    typer.Option("--check-error-stat", help="elemwise (every element: abs<=atol OR rel<=rtol), or judge the "
                 "max / mean / median error."),
]
ValidateOpt = Annotated[bool, typer.Option("--validate", help="Fail when any output holds NaN or Inf.")]
EqualNanOpt = Annotated[bool, typer.Option("--equal-nan", help="Count NaN on both sides at the same index as equal "
                        "(by default any NaN fails, as in Polygraphy).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON result on stdout.")]
OrtProvidersOpt = Annotated[
    list[str] | None,
    typer.Option("--ort-providers", help="onnxruntime execution providers in priority order (cpu, cuda, trt or "
                 "full names); checked against the installed build.", show_default=False),
]
OvPrecisionOpt = Annotated[
    str, typer.Option("--openvino-precision", help="OpenVINO inference precision: fp32 (exact comparisons) or bf16.")
]


def split_multi(values: list[str] | None) -> tuple[str, ...]:
    """Repeatable options also accept comma-separated lists: --backend ort,openvino."""
    items: list[str] = []
    for v in values or []:
        items += [p.strip() for p in v.split(",") if p.strip()]
    return tuple(items)


def feed_settings(
    inputs: list[str] | None, load_inputs: Path | None, seed: int, val_ranges: list[str] | None, allow_nonfinite: bool
) -> Any:
    from enginekit.data import check_seed, parse_input_shape, parse_value_range
    from enginekit.errors import InvalidArgumentError
    from enginekit.settings import FeedSettings

    if load_inputs is not None and inputs:
        raise InvalidArgumentError("--load-inputs and --input both give the feed shapes; use one of them.")
    check_seed(seed)
    return FeedSettings(
        inputs=tuple(parse_input_shape(t) for t in inputs or []),
        load_inputs=load_inputs,
        seed=seed,
        val_ranges=tuple(parse_value_range(t) for t in val_ranges or []),
        allow_nonfinite=allow_nonfinite,
    )


def compare_settings(
    atol: list[str] | None, rtol: list[str] | None, stat: str, validate: bool, *, default: float = 1e-5,
    equal_nan: bool = False,
) -> Any:
    from enginekit.compare import CompareSettings, parse_tolerances
    from enginekit.errors import InvalidArgumentError

    stats = ("elemwise", "max", "mean", "median")
    if stat not in stats:
        raise InvalidArgumentError(f"--check-error-stat {stat!r}: choose one of {', '.join(stats)}.")
    return CompareSettings(
        atol=parse_tolerances(atol or [], default, "--atol"),
        rtol=parse_tolerances(rtol or [], default, "--rtol"),
        check_error_stat=stat,
        validate=validate,
        equal_nan=equal_nan,
    )


OrtGraphOpt = Annotated[str, typer.Option("--ort-graph-optimization", help="onnxruntime graph optimization "
                        "level: all, extended, basic or disable.")]
OrtThreadsOpt = Annotated[int, typer.Option("--ort-threads", help="onnxruntime intra-op threads (0: its default).")]
OrtSaveOpt = Annotated[Path | None, typer.Option("--ort-save-optimized", help="Write the graph onnxruntime "
                       "optimized to this .onnx file.", show_default=False)]
OrtFp16Opt = Annotated[bool, typer.Option("--ort-fp16", help="onnxruntime TensorRT EP: enable FP16.")]
OrtTrtCacheOpt = Annotated[Path | None, typer.Option("--ort-trt-cache", help="onnxruntime TensorRT EP: engine and "
                           "timing cache folder.", show_default=False)]
OrtTrtProfileOpt = Annotated[list[str] | None, typer.Option("--ort-trt-profile", help="onnxruntime TensorRT EP: "
                             "NAME:MIN:OPT:MAX shape range.", show_default=False)]


TorchDeviceOpt = Annotated[str, typer.Option("--torch-device", help="torch/inductor/aoti: auto (cuda when "
                           "available), cpu or cuda.")]
InductorModeOpt = Annotated[str, typer.Option("--inductor-mode", help="default, reduce-overhead, max-autotune or "
                            "max-autotune-no-cudagraphs.")]
InductorFreezingOpt = Annotated[bool, typer.Option("--inductor-freezing/--no-inductor-freezing", help="inductor/aoti: "
                                "fold weights into the compiled code.")]
ChannelsLastOpt = Annotated[str, typer.Option("--channels-last", help="auto (conv models with 4-D inputs on CUDA), on "
                            "or off.")]
DynamicShapesOpt = Annotated[str, typer.Option("--dynamic-shapes", help="inductor: static (compile per shape), "
                             "dynamic (symbolic --input dims, else the batch) or auto.")]
PrecisionPlanOpt = Annotated[Path | None, typer.Option(
    "--precision-plan", metavar="PLAN.json", help="Precision plan (from `enginekit debug precision`): ONNX nodes kept "
    "in FP32 by the fp16/bf16 backends that apply plans: ort:fp16 and onnx-reference (node block list of the "
    "conversion), TensorRT engines built from the ONNX, torch and inductor (the PyTorch modules holding those "
    "nodes, each kept whole); ignored at fp32.",
    show_default=False)]
PrecisionPlanModelOpt = Annotated[Path | None, typer.Option(
    "--precision-plan-model", metavar="MODEL.onnx", help="torch/inductor with --precision-plan: the ONNX the plan was "
    "made for, as `enginekit export` wrote it (its node metadata names the PyTorch module of each node).",
    show_default=False)]
TrustRemoteCodeOpt = Annotated[bool, typer.Option(
    "--trust-remote-code", help="Load model files that run code they carry when loaded: TorchScript archives "
    "(.pt), torch.export programs (.pt2) and AOTInductor packages (.pt2 with a shared library). Refused without "
    "it (exit 2); give it only for files you made or trust as you would a program. A file.py:factory or "
    "package.module:factory source is Python code: it is always imported and executed.")]


def backend_settings(
    ort_providers: list[str] | None, openvino_precision: str, *, ort_graph_optimization: str = "all",
    ort_threads: int = 0, ort_save_optimized: Path | None = None, ort_fp16: bool = False,
    ort_trt_cache: Path | None = None, ort_trt_profile: list[str] | None = None,
    precision_plan: Path | None = None, precision_plan_model: Path | None = None, trust_remote_code: bool = False,
) -> Any:
    from enginekit.errors import InvalidArgumentError
    from enginekit.settings import BackendSettings

    if openvino_precision not in ("fp32", "bf16"):
        raise InvalidArgumentError(f"--openvino-precision {openvino_precision!r}: choose fp32 or bf16.")
    if ort_threads < 0:
        raise InvalidArgumentError(f"--ort-threads {ort_threads}: must be >= 0.")
    from enginekit.ortsession import GRAPH_LEVELS

    if ort_graph_optimization not in GRAPH_LEVELS:
        raise InvalidArgumentError(f"--ort-graph-optimization {ort_graph_optimization!r}: choose "
                                   f"{', '.join(GRAPH_LEVELS)}.")
    return BackendSettings(
        ort_providers=split_multi(ort_providers), openvino_precision=openvino_precision,
        ort_graph_optimization=ort_graph_optimization, ort_intra_op_threads=ort_threads,
        ort_optimized_model=ort_save_optimized, ort_cuda_fp16=ort_fp16, ort_trt_cache_dir=ort_trt_cache,
        ort_trt_profiles=tuple(ort_trt_profile or []), precision_plan=precision_plan,
        precision_plan_model=precision_plan_model, trust_remote_code=trust_remote_code,
    )


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m)?\s*$")


def parse_duration(text: str, option: str) -> float:
    """``0.5s``, ``500ms``, ``2m`` or a plain number of seconds → seconds."""
    from enginekit.errors import InvalidArgumentError

    m = _DURATION_RE.match(text)
    if not m:
        raise InvalidArgumentError(f"{option} {text!r}: give a duration such as 3s, 500ms or 0.5.")
    value = float(m.group(1)) * {"ms": 1e-3, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
    if not math.isfinite(value):  # 400 nines parse as inf: a benchmark that never ends
        raise InvalidArgumentError(f"{option} {text!r}: too long; give a duration such as 3s, 500ms or 0.5.")
    return value
