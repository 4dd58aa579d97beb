"""`enginekit package REPORT DIR`: the verified best engines of an optimize report, as a package (docs/PACKAGE.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from enginekit.cli import common
from enginekit.cli.common import JsonOpt


def package(
    report: Annotated[Path, typer.Argument(metavar="REPORT", help="The --report folder of an `enginekit optimize` "
                      "run.")],
    out: Annotated[Path, typer.Argument(metavar="DIR", help="The package folder to write (new or empty).")],
    force: Annotated[bool, typer.Option("--force", help="Replace the contents of a non-empty DIR.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Copy the source ONNX, the best engine per objective (min latency, max throughput) with its manifest, the IO
    samples, the report and a reproduce.sh that checks the outputs into one folder; `enginekit run DIR` runs it."""
    from enginekit.deploy.package import write_package

    res = write_package(report, out, force=force)
    print_package(res.path, res.engines, as_json)


def print_package(path: Path, engines: dict[str, str], as_json: bool) -> None:
    from rich.markup import escape

    if as_json:
        common.print_json({"package": str(path), "engines": engines})
        return
    for objective, label in engines.items():
        common.out.print(f"  {objective}: [bold]{escape(label)}[/]")
    common.out.print(f"Package: {escape(str(path))} (run it: enginekit run {escape(str(path))}; check it: "
                     f"{escape(str(path))}/reproduce.sh)")


def print_package_run(doc: dict[str, object], as_json: bool) -> None:
    from enginekit.cli.render import results_tables, verdict

    if as_json:
        common.print_json(doc)
        return
    result = doc["result"]
    assert isinstance(result, dict)
    common.out.print(f"Package {doc['package']}: {doc['objective']} engine [bold]{doc['candidate']}[/], "
                     "compared with the outputs recorded in the package")
    results_tables([result])
    verdict(bool(doc["passed"]))
