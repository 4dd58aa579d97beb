"""CLI test helpers: run `enginekit` in-process (exit code + captured output) or as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from enginekit.cli.main import main

ENGINEKIT = Path(sys.executable).with_name("enginekit")


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """stdout parsed as strict JSON (NaN/Infinity refused)."""

        def refuse(token: str) -> Any:
            raise ValueError(f"non-strict JSON constant {token}")

        return json.loads(self.stdout, parse_constant=refuse)

    def __iter__(self):  # type: ignore[no-untyped-def]
        # Allows `code, out, err = cli(...)`.
        return iter((self.code, self.stdout, self.stderr))


Cli = Callable[..., CliResult]


def _code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    """Run ``enginekit ARGS...`` in-process from ``tmp_path``; returns CliResult(code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)

    def run(*args: str | Path) -> CliResult:
        capsys.readouterr()  # drop anything printed before
        argv = [str(a) for a in args]
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = _code(exc)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def cli_subprocess(tmp_path: Path) -> Cli:
    """Run the installed ``enginekit`` script in a subprocess from ``tmp_path``."""

    def run(*args: str | Path, timeout: float = 60) -> CliResult:
        proc = subprocess.run(
            [str(ENGINEKIT), *(str(a) for a in args)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=timeout,
            env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "NO_COLOR": "1", "HOME": str(tmp_path)},
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run


def _assert_user_error(res: CliResult, *needles: str) -> None:
    """Exit 2, a one-paragraph message on stderr that contains every needle, never a traceback."""
    assert res.code == 2, (res.code, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    assert "error" in res.stderr
    assert "internal error" not in res.stderr
    for needle in needles:
        assert needle in res.stderr, f"{needle!r} not in stderr:\n{res.stderr}"


@pytest.fixture
def user_error() -> Callable[..., None]:
    """``user_error(result, *needles)``: exit 2, every needle in stderr, no traceback."""
    return _assert_user_error


@pytest.fixture
def npz(tmp_path: Path) -> Callable[..., Path]:
    """``npz("name.npz", x=array, ...)``: write arrays to tmp_path/name.npz and return the path."""

    def write(name: str, **arrays: np.ndarray) -> Path:
        path = tmp_path / name
        np.savez(path, **arrays)  # type: ignore[arg-type]
        return path

    return write
