"""`enginekit` entry point. Subcommands live in their own modules; heavy packages load only when used."""

from __future__ import annotations

import sys
import traceback
from typing import Annotated

import typer
from rich.markup import escape

from enginekit.cli import common
from enginekit.cli.common import err

app = typer.Typer(
    name="enginekit",
    help="Export, build, verify and benchmark inference engines from trained models, with one honest report.\n\n"
    "Exit codes: 0 passed, 1 a check failed, 2 user error, 3 missing dependency or hardware, 4 internal error.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from enginekit import __version__

        typer.echo(f"enginekit {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logging (-vv: debug and "
                                         "tracebacks).")] = 0,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    common.setup_logging(verbose)


def _register() -> None:
    from enginekit.cli import (
        bench_cmd,
        build_cmd,
        cache_cmd,
        compare_cmd,
        debug_cmd,
        doctor_cmd,
        export_cmd,
        inspect_cmd,
        lint_cmd,
        optimize_cmd,
        package_cmd,
        prepare_cmd,
        run_cmd,
        sweep_cmd,
        triton_cmd,
    )

    app.command("inspect")(inspect_cmd.inspect)
    app.command("export", help=export_cmd.HELP)(export_cmd.export)
    app.command("prepare")(prepare_cmd.prepare)
    app.command("lint")(lint_cmd.lint)
    app.command("build", help=build_cmd.HELP)(build_cmd.build)
    app.add_typer(cache_cmd.cache_app, name="cache")
    app.command("bench", help=bench_cmd.HELP)(bench_cmd.bench)
    app.add_typer(debug_cmd.debug_app, name="debug")
    app.command("run")(run_cmd.run)
    app.command("triton", help=triton_cmd.HELP)(triton_cmd.triton)
    app.command("compare")(compare_cmd.compare)
    app.command("optimize")(optimize_cmd.optimize)
    app.command("demo")(optimize_cmd.demo)
    app.command("package")(package_cmd.package)
    app.command("sweep", help=sweep_cmd.HELP)(sweep_cmd.sweep)
    app.command("doctor")(doctor_cmd.doctor)


_register()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; typed errors become a one-paragraph message and their exit code."""
    from enginekit.errors import EXIT_INTERNAL_ERROR, EnginekitError

    common.State.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=argv, prog_name="enginekit")
    except EnginekitError as exc:
        if common.State.verbose >= 2:
            err.print(traceback.format_exc(), markup=False)
        kind = type(exc).__name__
        err.print(f"[bold red]error[/] ({kind}): {escape(exc.message)}")
        if exc.hint:
            err.print(f"[yellow]hint[/]: {escape(exc.hint)}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - last line of defence: an internal error, never a bare traceback
        if common.State.verbose >= 1:
            err.print(traceback.format_exc(), markup=False)
        err.print(f"[bold red]internal error[/]: {type(exc).__name__}: {escape(str(exc))}\n"
                  "This is a bug in enginekit; rerun with -v for the traceback and report it.")
        sys.exit(EXIT_INTERNAL_ERROR)


if __name__ == "__main__":
    main()
