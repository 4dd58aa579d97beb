"""`enginekit build MODEL.onnx --backend tensorrt|tensorrt-rtx -o model.engine`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from enginekit.cli import common
from enginekit.cli.common import JsonOpt

HELP = """Build a TensorRT or TensorRT-RTX engine from an ONNX model, through the engine cache.

Writes the plan file untouched (-o model.engine) and its manifest beside it (model.engine.json):
library and version, target compute capabilities, precision path, profiles, IO, source sha256,
settings, build time and the build log's warnings.

Profiles: --profile x:1x3x32x32:1x3x192x192:1x3x1472x1224 (NAME:MIN:OPT:MAX) for every dynamic input;
repeating an input name starts the next profile. --profile-from feeds.npz|DIR derives one from real data.
TensorRT forces input dims with one name to be equal: dims sharing a '?' name (PaddleOCR's x [?,3,?,?]), or a
name the profile gives different sizes, are renamed <input>_dim<axis> first (said, and kept in the manifest's
renamed_dims; --keep-dim-names turns it off). Warnings the library prints to stdout go to the manifest.
Precision: TensorRT 10 uses builder flags (weak typing); TensorRT 11 and TensorRT-RTX are strongly typed,
so enginekit converts the ONNX first (FP16/BF16 keeping IO types and the --precision-plan's FP32 nodes,
or INT8 Q/DQ from --calib-data without an INT8 plan's nodes, checked on CPU against FP32).
FP16/BF16: nodes reading a constant beyond the type's range (fp16: 65504) stay FP32 instead of seeing it clipped;
they are printed, and listed in the manifest's precision details and warnings.
"""


def _default_backend() -> str:
    from enginekit.deps import is_installed

    return "tensorrt" if is_installed("tensorrt") else "tensorrt-rtx"


def build(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="ONNX model file.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Plan file to write (and <output>.json, as a "
                      "pair). Never one of the inputs.", show_default=False)] = None,
    backend: Annotated[str | None, typer.Option("--backend", "-b", help="tensorrt or tensorrt-rtx (default: "
                       "tensorrt when installed).", show_default=False)] = None,
    profile: Annotated[list[str] | None, typer.Option("--profile", help="NAME:MIN:OPT:MAX per dynamic input.",
                       show_default=False)] = None,
    profile_from: Annotated[Path | None, typer.Option("--profile-from", help="Derive a profile from feeds "
                            "(.npz or a folder of .npz).", show_default=False)] = None,
    precision: Annotated[str, typer.Option("--precision", help="fp32, fp16, bf16, int8 or best.")] = "fp32",
    precision_plan: Annotated[Path | None, typer.Option("--precision-plan", help="plan.json from `enginekit "
                              "debug precision`: ONNX nodes kept in FP32 (fp16/bf16), or left out of INT8 "
                              "quantization (int8).", show_default=False)] = None,
    calib_data: Annotated[Path | None, typer.Option("--calib-data", help="INT8 calibration feeds (.npz or "
                          "folder).", show_default=False)] = None,
    calib_method: Annotated[str, typer.Option("--calib-method", help="minmax or entropy.")] = "minmax",
    calib_cache: Annotated[Path | None, typer.Option("--calib-cache", help="Weak-typing INT8 calibration cache "
                           "file (read and written).", show_default=False)] = None,
    workspace: Annotated[int | None, typer.Option("--workspace", help="Workspace memory pool limit in MiB (1 or more).",
                         show_default=False)] = None,
    opt_level: Annotated[int | None, typer.Option("--opt-level", help="Builder optimization level 0-5.",
                         show_default=False)] = None,
    timing_cache: Annotated[Path | None, typer.Option("--timing-cache", help="Timing cache: loaded if present, "
                            "saved after the build. An existing file that is not a timing cache is refused, never "
                            "overwritten.", show_default=False)] = None,
    version_compatible: Annotated[bool, typer.Option("--version-compatible", help="Engine loadable by later "
                                  "library versions (where supported).")] = False,
    hardware_compatibility: Annotated[str | None, typer.Option("--hardware-compatibility", help="ampere-plus or "
                                      "same-compute-capability (where supported).", show_default=False)] = None,
    compute_capability: Annotated[list[str] | None, typer.Option("--compute-capability", help="Target GPUs, e.g. "
                                  "8.6,12.0 (TensorRT-RTX; default: the GPU here, or every supported one "
                                  "when there is none).", show_default=False)] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Engine cache folder (default: the user "
                         "cache dir, or $ENGINEKIT_CACHE_DIR).", show_default=False)] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Always build; don't read or write the cache.")]
    = False,
    keep_dim_names: Annotated[bool, typer.Option("--keep-dim-names", help="Keep the model's input dim names as "
                              "they are (by default, dims sharing a '?' name, or a name the profile gives "
                              "different sizes, become <input>_dim<axis>: TensorRT forces dims with one name "
                              "equal).")] = False,
    as_json: JsonOpt = False,
) -> None:
    from enginekit.errors import InvalidArgumentError
    from enginekit.registry import get_backend
    from enginekit.settings import BuildSettings

    name = get_backend(backend).name if backend else _default_backend()
    if name not in ("tensorrt", "tensorrt-rtx"):
        raise InvalidArgumentError(f"--backend {backend!r}: `build` makes TensorRT engines: tensorrt or tensorrt-rtx.")
    if output is not None and output.suffix.lower() == ".onnx":
        raise InvalidArgumentError(f"-o {str(output)!r}: that is the name of an ONNX file; use model.engine.")
    settings = BuildSettings(
        backend=name, output=output, profiles=tuple(profile or []), profile_from=profile_from,
        precision=precision, precision_plan=precision_plan, calib_data=calib_data, calib_method=calib_method,
        calib_cache=calib_cache, workspace_mib=workspace, optimization_level=opt_level, timing_cache=timing_cache,
        version_compatible=version_compatible, hardware_compatibility=hardware_compatibility,
        compute_capabilities=common.split_multi(compute_capability), cache_dir=cache_dir, use_cache=not no_cache,
        unique_dim_names=not keep_dim_names,
    )
    result = _build_with_progress(model, settings, quiet=as_json)
    if as_json:
        common.print_json(result.to_dict())
        return
    render(result.to_dict())


def _build_with_progress(model: Path, settings: Any, quiet: bool) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from enginekit.backends.tensorrt.build import build_engine

    if quiet:
        return build_engine(model, settings)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=common.err, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(phase: str, step: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=max(total, 1))
            bar.update(tasks[phase], completed=step, total=max(total, 1))

        return build_engine(model, settings, progress)


def render(doc: dict[str, Any]) -> None:
    from rich.markup import escape

    m = doc["manifest"]
    out = common.out
    where = doc["output"] or doc["plan"]
    how = "from the engine cache" if doc["cached"] else f"in {m['build_time_s']} s"
    out.print(escape(f"Engine {where} ({m['library']} {m['library_version']}, {how})"))
    out.print(escape(f"  precision: {m['precision']['precision']} via the {m['precision']['path']} path: "
                     f"{m['precision']['how']}"))
    for k in m["precision"].get("range_kept_fp32", []):  # kept FP32 so that no weight is clipped
        out.print(escape(f"  kept in FP32: {k['node']}: {k['reason']}"))
    if m.get("renamed_dims"):
        renamed = ", ".join(f"{r['input']} dim {r['axis']} {r['old']!r} -> {r['new']!r}" for r in m["renamed_dims"])
        out.print(escape(f"  renamed input dims TensorRT would force equal: {renamed} (--keep-dim-names keeps them)"))
    out.print(escape(f"  targets: compute capability {', '.join(m['target']['compute_capabilities'])}"))
    for i, p in enumerate(m["profiles"]):
        out.print(escape(f"  profile {i}: " + "; ".join(f"{s['name']} {s['min']}..{s['opt']}..{s['max']}"
                                                       for s in p["shapes"])))
    for t in m["inputs"] + m["outputs"]:
        out.print(escape(f"  {t['name']}: {t['shape']} {t['dtype']}"))
    out.print(f"  {len(m['warnings'])} build warning(s) in the manifest; plan {m.get('plan_bytes', '?')} bytes")
