"""Write a report folder. Everything is rendered from one JSON-ready dict, so JSON and Markdown agree."""

from __future__ import annotations

import datetime as _dt
import json
import platform
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from enginekit.data import save_arrays
from enginekit.fileutil import atomic_write_text


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


def reproduce_script(command: Sequence[str], cwd: str | Path) -> str:
    return (
        "#!/usr/bin/env bash\n"
        "# Reproduces this enginekit run: the exact command, from the folder it ran in.\n"
        "set -euo pipefail\n"
        f"cd {shlex.quote(str(cwd))}\n"
        f"{shlex.join(command)}\n"
    )


def write_report(
    out_dir: str | Path,
    data: Mapping[str, Any],
    markdown: str,
    command: Sequence[str],
    arrays: Mapping[str, Mapping[str, np.ndarray]],
    cwd: str | Path | None = None,
) -> list[Path]:
    """Write report.json, report.md, reproduce.sh and one .npz per entry of ``arrays``; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
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
    script = atomic_write_text(out / "reproduce.sh", reproduce_script(command, cwd or Path.cwd()))
    script.chmod(0o755)
    written.append(script)
    return written
