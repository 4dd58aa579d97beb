"""A file.py:factory source that exits or parses sys.argv when imported: a clear user error naming the file.

Before, `enginekit export model.py:make` ended silently with the code the file passed to sys.exit (0 looked like
success), or with argparse's exit 2 about enginekit's own options.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from enginekit.cli.main import main  # noqa: E402
from enginekit.errors import ModelLoadError  # noqa: E402
from enginekit.sources.detect import detect_source
from enginekit.sources.torch_load import load_torch_model

MODEL = "import torch\n\n\ndef make():\n    return torch.nn.Linear(4, 2)\n"
EXITS_ON_IMPORT = "import sys\n" + MODEL + "\nsys.exit(0)\n"
ARGPARSE_REQUIRED = ("import argparse\n" + MODEL + "\nparser = argparse.ArgumentParser()\n"
                     "parser.add_argument('--data', required=True)\nARGS = parser.parse_args()\n")
ARGPARSE_DEFAULTS = ("import argparse, sys\n" + MODEL + "\nparser = argparse.ArgumentParser()\n"
                     "parser.add_argument('--epochs', type=int, default=3)\nARGS = parser.parse_args()\n"
                     "if sys.argv[1:]:\n    raise RuntimeError(f'saw enginekit options: {sys.argv}')\n")
EXITS_IN_FACTORY = "import sys\n\n\ndef make():\n    sys.exit(3)\n"


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """(exit code, stdout, stdout + stderr with whitespace collapsed)."""
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, " ".join((captured.out + captured.err).split())


@pytest.mark.parametrize("name,text,code", [("exits.py", EXITS_ON_IMPORT, 0), ("argv.py", ARGPARSE_REQUIRED, 2)])
def test_exit_on_import_is_a_user_error_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        name: str, text: str, code: int) -> None:
    path = _write(tmp_path, name, text)
    expected = (f"Importing '{path}' exited the program (SystemExit with code {code}): the code calls sys.exit() or "
                "parses the command line (argparse)")
    for args in (("export", f"{path}:make", "-o", tmp_path / "o.onnx", "-i", "x:2x4"),
                 ("run", f"{path}:make", "-b", "torch", "-i", "x:2x4")):
        exit_code, _, out = _cli(capsys, *args)
        assert exit_code == 2 and expected in out, out
        assert 'if __name__ == "__main__":' in out
    assert not (tmp_path / "o.onnx").exists()
    # optimize: its export step fails with that reason (exit code: the pipeline's for a failed required step)
    exit_code, stdout, out = _cli(capsys, "optimize", f"{path}:make", "-i", "x:2x4", "--report", tmp_path / "r",
                                  "--json")
    export_step = next(st for st in json.loads(stdout)["steps"] if st["name"] == "export")
    assert exit_code != 0 and export_step["status"] == "FAIL" and expected in export_step["reason"], out
    with pytest.raises(ModelLoadError, match="exited the program"):
        load_torch_model(detect_source(f"{path}:make"), None)


def test_exit_in_the_factory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "factory_exits.py", EXITS_IN_FACTORY)
    code, _, out = _cli(capsys, "run", f"{path}:make", "-b", "torch", "-i", "x:2x4")
    assert code == 2 and f"Calling '{path}:make' exited the program (SystemExit with code 3)" in out, out


def test_argparse_on_import_sees_no_enginekit_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    path = _write(tmp_path, "defaults.py", ARGPARSE_DEFAULTS)
    argv = list(sys.argv)
    code, _, out = _cli(capsys, "run", f"{path}:make", "-b", "torch", "-i", "x:2x4")
    assert code == 0 and "PASSED" in out, out
    assert sys.argv == argv  # restored
