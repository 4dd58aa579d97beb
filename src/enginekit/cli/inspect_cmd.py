"""`enginekit inspect MODEL.onnx`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from enginekit.cli.common import JsonOpt, out, print_json


def inspect(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="ONNX model file (external data beside it is "
                                          "read too).")],
    check: Annotated[bool, typer.Option("--check/--no-check", help="Run the ONNX checker first (stricter than "
                     "ONNX Runtime).")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Inputs/outputs with symbolic dims, opsets, ops, parameters, INT64 initializers, external data."""
    from enginekit.graph.inspect import inspect_model

    info = inspect_model(model, check=check).to_dict()
    if as_json:
        print_json(info)
        return
    render(info)


def render(info: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    out.print(f"[bold]{escape(info['path'])}[/]  ({info['file_size_bytes']:,} bytes)")
    opsets = ", ".join(f"{d} {v}" for d, v in info["opset_imports"].items())
    producer = f"{info['producer_name'] or '?'} {info['producer_version'] or ''}".rstrip()
    out.print(escape(f"IR version {info['ir_version']}, opsets: {opsets}; producer: {producer}"))
    io = Table("", "name", "shape", "dtype", title="Inputs and outputs", title_justify="left")
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            shape = "?" if t["shape"] is None else "[" + ", ".join(str(d) for d in t["shape"]) + "]"
            io.add_row(kind[:-1], escape(t["name"]), escape(shape), t["dtype"])
    out.print(io)
    out.print(f"Nodes: {info['node_count']} (in subgraphs: {info['subgraph_node_count']}); parameters: "
              f"{info['parameter_count']:,} ({info['parameter_bytes']:,} bytes)")
    ops = ", ".join(f"{op} {n}" for op, n in info["op_counts"].items())
    out.print(escape(f"Ops: {ops}"))
    n64, bad = info["int64_initializers"], info["int64_out_of_int32"]
    line = f"INT64 initializers: {n64}, outside int32: {bad}"
    if bad:
        line += " (" + ", ".join(info.get("int64_out_of_int32_names", [])) + ")"
    out.print(escape(line))
    if info["custom_domains"]:
        out.print(escape(f"Custom domains: {', '.join(info['custom_domains'])}"))
    if info["external_data_files"]:
        out.print(escape(f"External data: {', '.join(info['external_data_files'])}"))
