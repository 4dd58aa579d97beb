"""OUT/results.jsonl: one line per finished job, appended as each finishes (one write of a whole line on an O_APPEND
file, then fsync), so a killed sweep loses at most the jobs that were running; a torn last line is ignored."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["RESULTS", "append_result", "read_results"]

RESULTS = "results.jsonl"


def append_result(out: Path, summary: dict[str, Any]) -> None:
    """Append one job's summary to OUT/results.jsonl, durably."""
    append_jsonl(out / RESULTS, summary)


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line to ``path``, durably (fsynced; a torn last line is ended first)."""
    line = json.dumps(record, default=str, allow_nan=True) + "\n"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = "\n" + line  # end a torn last line (a sweep killed mid-write) so this one stays whole
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_results(out: Path) -> dict[str, dict[str, Any]]:
    """Finished jobs by id (the last line of an id wins; unreadable lines, e.g. a torn last line, are skipped)."""
    path = out / RESULTS
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            done[record["id"]] = record
    return done
