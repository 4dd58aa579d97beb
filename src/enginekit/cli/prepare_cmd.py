"""`enginekit prepare MODEL -o out.onnx`: ONNX graph passes for TensorRT, each verified with onnxruntime."""

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
    RtolOpt,
    SeedOpt,
    StatOpt,
    ValidateOpt,
    ValRangeOpt,
)
from enginekit.status import Status

_PASS_HELP = ("Pass to run, in order: unique-dim-names, shape-inference, simplify, int64-to-int32 (default: these "
              "four), or 'none'. Repeat or comma-separate. fix-input-shapes and opset run first when their options "
              "are given. unique-dim-names renames input dims TensorRT would force equal: dims sharing a '?' name, "
              "or a name the verification feed gives different sizes, become <input>_dim<axis>.")


def prepare(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="ONNX model file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the prepared .onnx model.",
                                         show_default=False)],
    passes: Annotated[list[str] | None, typer.Option("--pass", "-p", help=_PASS_HELP, show_default=False)] = None,
    opset: Annotated[int | None, typer.Option("--opset", help="Convert to this ai.onnx opset "
                     "(onnx.version_converter).", show_default=False)] = None,
    fix_input_shapes: Annotated[list[str] | None, typer.Option("--fix-input-shapes", help="Freeze an input's "
                                "symbolic dims: NAME:DIMS, e.g. x:1x3x640x640. Repeat per input.",
                                show_default=False)] = None,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Do not check each pass against the original "
                         "model's outputs with onnxruntime.")] = False,
    inputs: InputOpt = None,
    load_inputs: LoadInputsOpt = None,
    seed: SeedOpt = 1,
    val_range: ValRangeOpt = None,
    allow_nonfinite: AllowNonFiniteOpt = False,
    atol: AtolOpt = None,
    rtol: RtolOpt = None,
    check_error_stat: StatOpt = "elemwise",
    validate: ValidateOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Prepare an ONNX graph for TensorRT: every pass is verified against the original, or rejected."""
    from enginekit.data import parse_input_shape
    from enginekit.graph.prepare import prepare_model
    from enginekit.settings import PrepareSettings

    names = common.split_multi(passes)
    if names == ("none",):
        names = ()
    settings = PrepareSettings(
        output=output,
        passes=names if passes is not None else PrepareSettings.passes,
        target_opset=opset,
        fix_input_shapes=tuple(parse_input_shape(t) for t in fix_input_shapes or []),
        verify=not no_verify,
        feeds=common.feed_settings(inputs, load_inputs, seed, val_range, allow_nonfinite),
        compare=common.compare_settings(atol, rtol, check_error_stat, validate),
    )
    result = prepare_model(model, settings)
    doc = result.to_dict()
    if as_json:
        common.print_json(doc)
    else:
        render(doc)
    common.exit_with(result.exit_code)


_STYLE: dict[str, str] = {Status.APPLIED: "green", Status.SKIPPED: "dim", Status.REJECTED: "red", Status.FAILED: "red"}


def render(doc: dict[str, Any]) -> None:
    """A table of passes, the evidence of every rejected or failed pass, and the verdict."""
    from rich.markup import escape
    from rich.table import Table

    from enginekit.cli.common import out

    t = Table("pass", "status", "nodes", "time", "what changed", title=f"Passes on {escape(doc['model'])}",
              title_justify="left")
    for p in doc["passes"]:
        style = _STYLE.get(p["status"], "white")
        nodes = f"{p['nodes_before']} -> {p['nodes_after']}"
        secs = f"{p['duration_s'] + p['verify_s']:.2f}s"
        t.add_row(escape(p["name"]), f"[{style}]{p['status']}[/]", nodes, secs, escape(p["summary"]))
    out.print(t)
    for p in doc["passes"]:
        if p["status"] in (Status.REJECTED, Status.FAILED):
            out.print(f"  [red]{p['status']}[/] [bold]{escape(p['name'])}[/]: {escape(p['reason'])}")
    if doc["verified"]:
        feed = ", ".join(f"{escape(k)}{v['shape']}" for k, v in doc["inputs"].items())
        tol = doc["tolerances"]
        out.print(f"Verified with onnxruntime CPU on {feed or 'no inputs'} "
                  f"(atol {tol['atol']:g}, rtol {tol['rtol']:g}).")
    style = "green" if doc["passed"] else "red"
    out.print(f"[bold {style}]{'PASSED' if doc['passed'] else 'FAILED'}[/]: {escape(doc['message'])}")
