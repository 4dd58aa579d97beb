"""Write a report folder. Everything is rendered from one JSON-ready dict, so JSON and Markdown agree."""

from __future__ import annotations

import datetime as _dt
import json
import platform
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from enginekit.data import save_arrays
from enginekit.fileutil import atomic_write_text, current_umask


def environment() -> dict[str, Any]:
    """Versions that decide results, without importing heavy optional packages."""
    from enginekit import __version__
    from enginekit.deps import dist_version

    return {
        "enginekit": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "numpy": np.__version__,
        "onnx": dist_version("onnx"),
        "onnxruntime": dist_version("onnxruntime"),
        "openvino": dist_version("openvino"),
        "torch": dist_version("torch"),
    }


def safe_name(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)


def reproduce_script(command: Sequence[str], cwd: str | Path,
                     checks: Sequence[tuple[str, Mapping[str, tuple[float, float]]]] = ()) -> str:
    """reproduce.sh: the command again, through the Python interpreter that ran it (``python -m enginekit``, so it
    works without the virtual environment on PATH; ``PYTHON=...`` overrides it), from the folder it ran in.

    With ``checks`` (the saved outputs ``outputs.LABEL.npz`` and their per-output (atol, rtol)), the rerun writes
    its report into a new temporary folder, and each recorded outputs file is compared with the rerun's by
    `enginekit compare` with those tolerances: the script exits non-zero when the run fails or an output differs.
    """
    args = list(command[1:] if command and command[0] == "enginekit" else command)
    lines = [
        "#!/usr/bin/env bash",
        "# Reproduces this enginekit run: the exact command, from the folder it ran in, through the same Python.",
        "set -euo pipefail",
        'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
        f"PY={shlex.quote(sys.executable)}",
        'PY="${PYTHON:-$PY}"',
        f"cd {shlex.quote(str(cwd))}",
    ]
    if not checks:
        return "\n".join(lines + [f'"$PY" -m enginekit {shlex.join(args)}']) + "\n"
    for flag in ("--report", "--package"):  # the rerun writes its report elsewhere, and no package
        while flag in args:
            i = args.index(flag)
            args = args[:i] + args[i + 2:]
        args = [a for a in args if not a.startswith(flag + "=")]
    lines += ['NEW="$(mktemp -d)/report"', f'"$PY" -m enginekit {shlex.join(args)} --report "$NEW"',
              "# the rerun's outputs against the recorded ones, with the tolerance each output was judged by"]
    for name, tolerances in checks:
        tol = [a for out, (atol, rtol) in tolerances.items()
               for a in ("--atol", f"{out}:{atol!r}", "--rtol", f"{out}:{rtol!r}")]
        lines.append(f'"$PY" -m enginekit compare "$HERE"/{shlex.quote(name)} "$NEW"/{shlex.quote(name)} '
                     f"{shlex.join(tol)}".rstrip())
    lines.append('echo "reproduced: outputs match the recorded ones ($NEW)"')
    return "\n".join(lines) + "\n"


def output_checks(data: Mapping[str, Any],
                  files: Mapping[str, str]) -> list[tuple[str, dict[str, tuple[float, float]]]]:
    """(saved outputs file, {output: (atol, rtol)}) for every result row whose outputs were saved and compared."""
    checks = []
    for row in data.get("results") or []:
        name = files.get(f"outputs.{row.get('backend')}")
        tols = {o: (float(c["atol"]), float(c["rtol"])) for o, c in (row.get("outputs") or {}).items()
                if isinstance(c, dict) and c.get("atol") is not None and c.get("rtol") is not None}
        if name and tols and row.get("status") == "ok":
            checks.append((name, tols))
    return checks


MARKER = ".enginekit-report"  # written into every report folder: later runs may write there again


def prepare_report_dir(out_dir: str | Path) -> Path:
    """Create or reuse a report folder; refuse one that holds files enginekit did not write (exit 2).

    A folder may be written when it does not exist yet, is empty, or holds a report enginekit wrote (the
    ``.enginekit-report`` marker, or the ``report.json`` of an earlier version). Anything else, e.g. ``--report .``
    in a source folder or ``--report data/``, is refused rather than having files overwritten; choose a new
    folder. The marker is written on first use, so calling this again in the same run is fine.

    Raises:
        OutputPathError: the path is a file, cannot be created or written, or holds unrelated files.
    """
    from enginekit.errors import OutputPathError
    from enginekit.fileutil import check_writable_folder

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"Report folder '{out}' is a file, not a folder.",
                              hint="Give --report a new folder name.")
    check_writable_folder(out, "Report folder", probe=True)
    if out.is_dir() and not (out / MARKER).is_file() and not _earlier_report(out):
        try:
            names = sorted(p.name for p in out.iterdir())
        except OSError as exc:
            raise OutputPathError(f"Could not read report folder '{out}': {exc.strerror or exc}.") from exc
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            raise OutputPathError(
                f"Report folder '{out}' already holds files enginekit did not write ({shown}); refusing to write "
                "the report there, which could overwrite them.",
                hint="Give --report a new or empty folder (or one an earlier enginekit report was written to).")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"Could not create report folder '{out}': {exc.strerror or exc}.",
                              hint="Choose a writable location.") from exc
    if not (out / MARKER).is_file():
        atomic_write_text(out / MARKER, "This folder holds an enginekit report; enginekit may write here again.\n")
    return out


def _earlier_report(folder: Path) -> bool:
    """Whether ``folder`` holds a report.json written by an enginekit from before the marker."""
    try:
        doc = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and isinstance(doc.get("environment"), dict) and "enginekit" in doc["environment"]


def write_report(
    out_dir: str | Path,
    data: Mapping[str, Any],
    markdown: str,
    command: Sequence[str],
    arrays: Mapping[str, Mapping[str, np.ndarray]],
    cwd: str | Path | None = None,
) -> list[Path]:
    """Write report.json, report.md, reproduce.sh and one .npz per entry of ``arrays``; return the paths.

    The folder is checked first (:func:`prepare_report_dir`): one holding files enginekit did not write is refused.
    """
    out = prepare_report_dir(out_dir)
    written: list[Path] = []
    files = {}
    for stem, named in arrays.items():
        if named:
            files[stem] = str(save_arrays(out / f"{safe_name(stem)}.npz", named).name)
            written.append(out / files[stem])
    doc = {
        **data,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(command),
        "environment": environment(),
        "files": files,
    }
    written.append(atomic_write_text(out / "report.json", json.dumps(doc, indent=2, allow_nan=False) + "\n"))
    written.append(atomic_write_text(out / "report.md", markdown))
    from enginekit.report.html import render_html

    written.append(atomic_write_text(out / "report.html", render_html(doc)))  # one self-contained file
    checks = output_checks(data, files) if data.get("kind") == "optimize" else []
    script = atomic_write_text(out / "reproduce.sh", reproduce_script(command, cwd or Path.cwd(), checks))
    script.chmod(0o777 & ~current_umask())  # executable, as the umask allows
    written.append(script)
    return written
