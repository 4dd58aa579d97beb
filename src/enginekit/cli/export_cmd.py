"""`enginekit export SOURCE -o model.onnx`: PyTorch or Paddle model → ONNX, verified against the source."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from enginekit.cli import common
from enginekit.cli.common import JsonOpt, SeedOpt, TrustRemoteCodeOpt

HELP = """Export a PyTorch or Paddle model to ONNX and verify it against the source.

SOURCE is one of:
  path/to/file.py:factory   a callable returning a torch.nn.Module (--weights loads a state dict)
  package.module:factory    the same, imported from an installed package
  model.pt                  a TorchScript archive (torch.jit.save)
  model.pt2                 a torch.export program (torch.export.save)
  model.json | model.pdmodel (+ .pdiparams), or their folder: a paddle.jit.save model

A factory source is Python code: its file (or module) is imported and executed, and the factory called, with
your permissions. TorchScript archives and .pt2 programs run code they carry when loaded (TorchScript
__setstate__, pickles, symbolic shape expressions): they load only with --trust-remote-code (else exit 2).

Dims: --input x:batch,3,224,224 (symbolic names are dynamic axes), --input x:1x3x224x224 (fixed),
--dynamic x:0=batch[1..32] (make axis 0 dynamic, named batch, sizes 1 to 32).

Verification: the ONNX model runs in onnxruntime and the source in its framework on the same feeds, at
the traced shape and at another valid size of every dynamic axis: two seeds of --val-range values
(default 0..1 for floats), the first seed negated, and (traced shape) N(0,1), N(0,1) x100 and
N(0,1) x0.01. A float input with a --val-range stays in it (mirrored, its ends, near its top and
bottom); integer inputs stay in their range. An output element matches when its absolute error is at
most 1e-4 (--atol) or its relative error is at most 1e-4 (--rtol). A mismatch, or a TorchScript
tracer warning that a tensor computed from the inputs became a Python value (if x.sum() > 0, .item(),
float(x)), fails the export: exit 1, the model written only to NAME.failed.onnx. (Paddle models are
compared on one seed at each shape.)
"""

AtolOpt = Annotated[list[str] | None, typer.Option(
    "--atol", help="Absolute tolerance of the verification: VALUE (default 1e-4) or OUTPUT:VALUE. An element "
    "fails only when it exceeds both --atol and --rtol. Repeatable.", show_default=False)]
RtolOpt = Annotated[list[str] | None, typer.Option(
    "--rtol", help="Relative tolerance of the verification (error / |source value|): VALUE (default 1e-4) or "
    "OUTPUT:VALUE. Repeatable.", show_default=False)]
ValRangeOpt = Annotated[list[str] | None, typer.Option(
    "--val-range", help="Value range [NAME:]LOW,HIGH of the verification feeds (default 0,1 for floats; 0..100 "
    "for integer ids, 1 for masks); a float input given a range is never fed values outside it. Repeatable.",
    show_default=False)]


def export(
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="The model to export (see above).",
                                          show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The .onnx file to write.", show_default=False)],
    inputs: Annotated[list[str] | None, typer.Option("--input", "-i", help="NAME:DIMS[:DTYPE] per model input, "
                      "in forward() order; dims are ints or names (x:batch,3,h,w).", show_default=False)] = None,
    dynamic: Annotated[list[str] | None, typer.Option("--dynamic", help="NAME:AXIS=LABEL[MIN..MAX], e.g. "
                       "x:0=batch[1..32].", show_default=False)] = None,
    output_names: Annotated[list[str] | None, typer.Option("--output-names", help="Names of the outputs in "
                            "order (repeat or comma-separate).", show_default=False)] = None,
    weights: Annotated[Path | None, typer.Option("--weights", help="State dict for a factory model, loaded with "
                       "weights_only=True.", show_default=False)] = None,
    exporter: Annotated[str, typer.Option("--exporter", help="dynamo, torchscript, or auto (dynamo, falling back "
                        "to torchscript with the reason).")] = "auto",
    opset: Annotated[str, typer.Option("--opset", help="auto (from --target) or a number.")] = "auto",
    target: Annotated[str, typer.Option("--target", help="tensorrt, tensorrt==8.5|8.6|10|11, tensorrt-rtx, ort, "
                      "openvino: picks the opset (TensorRT 8.5 cannot parse LayerNormalization).")] = "ort",
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Compare ONNX and source outputs.")] = True,
    seed: SeedOpt = 1,
    val_range: ValRangeOpt = None,
    atol: AtolOpt = None,
    rtol: RtolOpt = None,
    trust_remote_code: TrustRemoteCodeOpt = False,
    as_json: JsonOpt = False,
) -> None:
    from enginekit.data import check_seed, parse_value_range
    from enginekit.export.api import export_model
    from enginekit.fileutil import check_output_file
    from enginekit.settings import EXPORT_TOLERANCE, ExportSettings
    from enginekit.sources.shapes import parse_dynamic, parse_opset

    check_output_file(output, "--output")  # before the (long) export: a folder, device or unwritable place
    check_seed(seed)
    settings = ExportSettings(
        source=source,
        output=output,
        inputs=tuple(inputs or []),
        dynamic=tuple(parse_dynamic(d) for d in dynamic or []),
        output_names=common.split_multi(output_names),
        weights=weights,
        exporter=exporter,
        opset=parse_opset(opset),
        target=target,
        verify=verify,
        seed=seed,
        val_ranges=tuple(parse_value_range(v) for v in val_range or []),
        compare=common.compare_settings(atol, rtol, "elemwise", False, default=EXPORT_TOLERANCE),
        trust_remote_code=trust_remote_code,
    )
    with common.err.status("export: exporting and verifying…"):
        result = export_model(settings)
    doc = result.to_dict()
    if as_json:
        common.print_json(doc)
        return
    render(doc)


def render(doc: dict[str, object]) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = common.out
    out.print(escape(f"Wrote {doc['output']} ({doc['framework']} → ONNX with the {doc['exporter']} exporter, opset "
                     f"{doc['opset_produced']}" + (", external data" if doc["external_data"] else "") + ")"))
    for note in doc["notes"]:  # type: ignore[attr-defined]
        out.print(f"  note: {escape(str(note))}")
    io = Table("", "name", "shape", "dtype", title="ONNX inputs and outputs", title_justify="left")
    for kind in ("inputs", "outputs"):
        for t in doc[kind]:  # type: ignore[attr-defined]
            io.add_row(kind[:-1], escape(t["name"]), escape(str(t["shape"])), t["dtype"])
    out.print(io)
    cases = doc["verification"]
    if not cases:
        out.print("[yellow]Not verified[/] (--no-verify).")
        return
    t = Table("case", "inputs (shape, values)", "output", "max abs", "max rel", "passed",
              title="Verification against the source", title_justify="left")
    from enginekit.report.markdown import fmt

    for c in cases:  # type: ignore[attr-defined]
        for name, o in c["outputs"].items():
            t.add_row(escape(c["label"]), escape(_inputs_text(c)), escape(name), fmt(o["max_abs_err"]),
                      fmt(o["max_rel_err"]), "[green]yes[/]" if o["passed"] else "[red]no[/]")
    out.print(t)
    out.print("[bold green]VERIFIED[/]")


def _inputs_text(case: dict[str, object]) -> str:
    """``x 2x8 in -0.98..-0.01`` per input."""
    values: dict[str, list[float]] = case.get("values") or {}  # type: ignore[assignment]
    parts = []
    for name, shape in case["shapes"].items():  # type: ignore[attr-defined]
        text = f"{name} {'x'.join(map(str, shape)) or 'scalar'}"
        if name in values:
            text += f" in {values[name][0]:.3g}..{values[name][1]:.3g}"
        parts.append(text)
    return "; ".join(parts)
