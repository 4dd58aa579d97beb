"""The README's "Python API" examples run as written (each in a fresh interpreter, in an empty folder)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_api_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Python API\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end != -1 else len(text)]
    return re.findall(r"^```python\n(.*?)^```$", section, flags=re.S | re.M)


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = cwd / "example.py"
    script.write_text(code, encoding="utf-8")
    return subprocess.run([sys.executable, str(script)], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_section_has_the_examples() -> None:
    blocks = python_api_blocks()
    assert len(blocks) == 2
    for name in ("inspect", "run", "compare", "load", "bench", "optimize"):
        assert f"enginekit.{name}(" in blocks[0], name
    assert "enginekit.export(" in blocks[1]


def test_readme_python_api_example_runs(tmp_path: Path) -> None:
    proc = _run(python_api_blocks()[0], tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1] == "True [('ort', 'ok'), ('onnx-reference', 'ok')]"
    assert lines[-2] == "True [('ort', 'ok')]" and lines[-1] == "True"
    assert (tmp_path / "enginekit-report" / "report.json").is_file()


def test_readme_export_example_runs(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    proc = _run(python_api_blocks()[1], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("True ")
    assert (tmp_path / "digits.onnx").is_file()
