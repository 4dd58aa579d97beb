"""`enginekit lint MODEL.onnx --target tensorrt[==VERSION]`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from enginekit.cli.common import JsonOpt, exit_with, out, print_json

if TYPE_CHECKING:
    from enginekit.graph.lint import LintResult

_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def lint(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="ONNX model file (external data beside it is "
                                          "checked too).")],
    target: Annotated[str, typer.Option("--target", "-t", help="tensorrt, tensorrt==8.5|8.6|10|11, tensorrt-rtx, "
                      "ort or openvino (the last two get the generic checks only).")] = "tensorrt",
    parse: Annotated[bool, typer.Option("--parse/--no-parse", help="Also run the real ONNX parser when tensorrt or "
                     "tensorrt_rtx is installed.")] = True,
    profile: Annotated[list[str] | None, typer.Option("--profile", help="NAME:MIN:OPT:MAX, as for `enginekit build`: "
                       "dims that share a name (e.g. '?') but differ in it are errors.", show_default=False)] = None,
    profile_from: Annotated[Path | None, typer.Option("--profile-from", help="Take the shapes from feeds (.npz or a "
                            "folder of .npz), as for `enginekit build`.", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """What will break or degrade when this model meets the target, each finding with a fix.

    Exit code 0 when there is no error finding, 1 when there is one, 2 for a bad file or an unknown target.
    """
    from enginekit.errors import EXIT_CHECK_FAILED
    from enginekit.graph.lint import lint_model
    from enginekit.graph.support import parse_target
    from enginekit.settings import LintSettings

    name, version = parse_target(target)
    shapes = _profile_shapes(profile or [], profile_from)
    result = lint_model(model, LintSettings(target=name, target_version=version, parse=parse, profile_shapes=shapes))
    if as_json:
        print_json(result.to_dict())
    else:
        render(result)
    if not result.ok:
        exit_with(EXIT_CHECK_FAILED)


def _profile_shapes(values: list[str], feeds: Path | None) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Every MIN/OPT/MAX shape of the profiles, in profile order, as (input, shape) pairs."""
    if not values and feeds is None:
        return ()
    from enginekit.backends.tensorrt.profiles import parse_profiles, profiles_from_feeds

    profiles = list(parse_profiles(values)) + ([profiles_from_feeds(feeds)] if feeds is not None else [])
    return tuple((r.name, shape) for p in profiles for r in p.shapes for shape in r.shapes())


def render(result: LintResult) -> None:
    from rich.markup import escape
    from rich.table import Table

    version = f"=={result.target_version}" if result.target_version else ""
    table_note = f" (support table: {result.table_version})" if result.table_version else ""
    out.print(f"[bold]{escape(result.path)}[/] -> {escape(result.target + version)}{escape(table_note)}")
    if result.parse is not None:
        style = "green" if result.parse.ok else "red"
        out.print(f"Real parser: [{style}]{escape(result.parse.summary())}[/]")
    if result.parse_note:
        out.print(escape(result.parse_note))
    if not result.findings:
        out.print("[green]No findings.[/]")
        return
    table = Table("severity", "code", "finding", "fix", show_lines=True)
    for f in result.findings:
        text = escape(f.message)
        if f.nodes:
            text += "\n[dim]nodes: " + escape(", ".join(f.nodes)) + "[/]"
        if f.tensors:
            text += "\n[dim]tensors: " + escape(", ".join(f.tensors)) + "[/]"
        table.add_row(f"[{_STYLE[f.severity]}]{f.severity}[/]", escape(f.code), text, escape(f.fix))
    out.print(table)
    counts = ", ".join(f"{result.count(s)} {s}{'s' if result.count(s) != 1 else ''}"
                       for s in ("error", "warning", "info"))
    out.print(f"{counts}.")
