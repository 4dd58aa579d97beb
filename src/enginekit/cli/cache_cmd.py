"""`enginekit cache list|clear`: the content-addressed engine cache."""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from enginekit.cli.common import JsonOpt, out, print_json

if TYPE_CHECKING:
    from enginekit.cache import CacheEntry, EngineCache, TempFolder

cache_app = typer.Typer(
    help="List and clear cached engines (by default in the user cache folder; ENGINEKIT_CACHE_DIR or "
    "--cache-dir choose another).",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

CacheDirOpt = Annotated[
    Path | None,
    typer.Option("--cache-dir", metavar="DIR", show_default=False,
                 help="Engine cache folder (default: $ENGINEKIT_CACHE_DIR, else the user cache folder's "
                 "enginekit/engines)."),
]
OlderThanOpt = Annotated[
    str | None,
    typer.Option("--older-than", metavar="AGE", show_default=False,
                 help="Only entries created longer ago than this: 7d, 12h, 30m, 45s, 2w."),
]
KeyOpt = Annotated[
    list[str] | None,
    typer.Option("--key", metavar="KEY", show_default=False,
                 help="Only this entry: its key or a unique prefix as `cache list` shows it. Repeatable."),
]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str, option: str = "--older-than") -> timedelta:
    """``7d``, ``12h``, ``30m``, ``45s``, ``2w`` (one number, one unit) as a timedelta."""
    from enginekit.errors import InvalidArgumentError

    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise InvalidArgumentError(
            f"{option} {text!r}: expected a number and a unit (s, m, h, d or w), e.g. 7d, 12h or 30m."
        )
    try:
        return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    except (OverflowError, ValueError) as exc:  # 9999999999w is beyond timedelta's 999999999 days
        raise InvalidArgumentError(
            f"{option} {text!r} is too long to be an age: the most is {timedelta.max.days // 7}w "
            f"({timedelta.max.days}d).",
            hint="An age of a few days or weeks, e.g. 30d, chooses old entries.",
        ) from exc


def _open(cache_dir: Path | None) -> EngineCache:
    from enginekit.cache import EngineCache

    return EngineCache(cache_dir)


@cache_app.command("list")
def list_entries(
    cache_dir: CacheDirOpt = None,
    verify: Annotated[bool, typer.Option("--verify", help="Also check every plan's sha256 (reads every plan); "
                      "every manifest's own sha256 is always checked.")]
    = False,
    as_json: JsonOpt = False,
) -> None:
    """Cached engines, newest first: key, size, age, model, library, device, precision, status.

    Also shows temp folders (builds and writes in progress, or left by a killed process) and removes the
    leftovers whose process is gone. --verify also checks every plan's sha256 (the manifests are always checked).
    """
    cache = _open(cache_dir)
    entries = cache.entries(verify=verify)
    temps = cache.temp_folders()
    removed = {t.path for t in cache.clean_temp()}
    if as_json:
        print_json({"root": str(cache.root), "entries": [e.summary() for e in entries],
                    "temp_folders": [{**t.summary(), "removed": t.path in removed} for t in temps]})
        return
    _render(cache, entries)
    _render_temps(temps, removed)


def _render_temps(temps: list[TempFolder], removed: set[Path]) -> None:
    from rich.markup import escape

    for t in temps:
        action = "removed" if t.path in removed else "kept"
        out.print(escape(f"Temp folder {t.path} ({t.kind}, {_size(t.size)}): {t.reason}; {action}."))


def _render(cache: EngineCache, entries: list[CacheEntry]) -> None:
    from rich.markup import escape
    from rich.table import Table

    if not entries:
        out.print(f"No cached engines in {escape(str(cache.root))}.")
        return
    table = Table("key", "size", "created", "model", "library", "device", "precision", "status",
                  title=f"Engine cache {escape(str(cache.root))}", title_justify="left")
    for e in entries:
        s = e.summary()
        library = " ".join(x for x in (s["library"], s["library_version"]) if x) or "?"
        created = e.created.astimezone().strftime("%Y-%m-%d %H:%M") if e.created else "?"
        status = "[green]ok[/]" if e.ok else f"[red]damaged[/]: {escape(str(e.damaged))}"
        table.add_row(e.key[:12], _size(e.size), created, escape(_short_model(s["model"])), escape(library),
                      escape(s["device"] or "?"), escape(s["precision"] or "?"), status)
    out.print(table)
    total = sum(e.size for e in entries)
    damaged = sum(not e.ok for e in entries)
    extra = f", {damaged} damaged (removed on their next lookup or by `enginekit cache clear`)" if damaged else ""
    out.print(f"{len(entries)} engine(s), {_size(total)}{extra}.")


def _short_model(model: Any) -> str:
    return "?" if not model else Path(str(model)).name or str(model)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # not reached


@cache_app.command("clear")
def clear(
    cache_dir: CacheDirOpt = None,
    older_than: OlderThanOpt = None,
    keys: KeyOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (needed when not run "
                   "from a terminal).")] = False,
) -> None:
    """Remove cached engines: all of them, or those chosen by --key and/or --older-than."""
    from rich.markup import escape

    from enginekit.errors import InvalidArgumentError

    age = parse_duration(older_than) if older_than is not None else None
    cache = _open(cache_dir)
    full_keys = [cache.resolve(k) for k in keys] if keys else None
    if not yes and not sys.stdin.isatty():
        raise InvalidArgumentError(
            f"Refusing to clear the engine cache '{cache.root}' without confirmation in a non-interactive run.",
            hint="Pass --yes to remove the entries.",
        )
    chosen = cache.select(full_keys, age)
    if not yes:
        if not chosen:
            out.print(f"Nothing to remove in {escape(str(cache.root))}.")
            return
        size = _size(sum(e.size for e in chosen))
        if not typer.confirm(f"Remove {len(chosen)} cached engine(s) ({size}) from {cache.root}?"):
            out.print("Nothing removed.")
            raise typer.Exit(0)
    removed = cache.clear(full_keys, age)
    out.print(f"Removed {removed} cached engine(s) from {escape(str(cache.root))}.")
