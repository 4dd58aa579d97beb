"""Hostile model files run no code: TorchScript and .pt2 files are refused (exit 2) without --trust-remote-code.

Every payload is first shown to be live (loading it the trusting way writes its marker), so each refusal test
can fail; then every command that takes the file (export, run, bench, optimize, the Python API) must refuse it
with a message that names the flag, and the marker must not appear.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import security_payloads as payloads  # noqa: E402 - after the torch skip

from enginekit.cli.main import main  # noqa: E402
from enginekit.errors import ModelLoadError  # noqa: E402
from enginekit.export.api import export_model  # noqa: E402
from enginekit.settings import BackendSettings, ExportSettings  # noqa: E402
from enginekit.sources.detect import detect_source  # noqa: E402
from enginekit.sources.torch_load import load_torch_model  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated in torch 2.13

Cli = Callable[..., tuple[int, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    """``enginekit ARGS`` in-process from ``tmp_path``: (exit code, stdout + stderr)."""
    monkeypatch.chdir(tmp_path)

    def run(*args: str | Path) -> tuple[int, str]:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    return run


def _refused(code: int, text: str, name: str, kind: str) -> None:
    flat = " ".join(text.split())
    assert code == 2, text
    assert "ModelLoadError" in flat and f"'{name}' is " in flat and kind in flat, text
    assert "unless you pass --trust-remote-code" in flat, text


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "MARKER"


def test_pickle_payload_in_a_pt2_program(cli: Cli, tmp_path: Path, marker: Path) -> None:
    evil = payloads.pickle_pt2(tmp_path / "evil.pt2", marker)
    code, text = cli("export", evil, "-o", tmp_path / "out.onnx", "-i", "x:2x4")
    _refused(code, text, str(evil), "torch.export program")
    code, text = cli("run", evil, "-b", "torch", "-i", "x:2x4")
    _refused(code, text, str(evil), "torch.export program")
    code, text = cli("optimize", evil, "-i", "x:2x4", "--report", tmp_path / "report")
    _refused(code, text, str(evil), "torch.export program")
    with pytest.raises(ModelLoadError, match="--trust-remote-code"):  # the Python API requires it too
        export_model(ExportSettings(source=str(evil), output=tmp_path / "api.onnx", inputs=("x:2x4",)))
    with pytest.raises(ModelLoadError, match="--trust-remote-code"):
        load_torch_model(detect_source(str(evil)), None)
    assert not marker.exists() and not (tmp_path / "out.onnx").exists() and not (tmp_path / "api.onnx").exists()
    # the payload is live: trusting the file runs it (what `export evil.pt2` did before the flag existed)
    load_torch_model(detect_source(str(evil)), None, trust_remote_code=True)
    assert marker.read_text() == "pwned"


def test_sympy_payload_in_a_pt2_program_runs_even_with_weights_only_pickles(
        cli: Cli, tmp_path: Path, marker: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Why .pt2 programs need the flag at all: forcing weights-only unpickling does not make them safe."""
    evil = payloads.sympy_pt2(tmp_path / "evil_sym.pt2", marker)
    code, text = cli("run", evil, "-b", "inductor", "-i", "x:batch,4")
    _refused(code, text, str(evil), "torch.export program")
    code, text = cli("export", evil, "-o", tmp_path / "out.onnx", "-i", "x:batch,4")
    _refused(code, text, str(evil), "torch.export program")
    assert not marker.exists()
    monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")  # every torch.load weights-only: still runs
    program = torch.export.load(str(evil))
    assert marker.read_text() == "pwned"
    assert program.module()(torch.randn(3, 4)).shape == (3, 2)  # and the program is otherwise genuine


def test_torchscript_payload(cli: Cli, tmp_path: Path, marker: Path) -> None:
    evil = payloads.torchscript_payload(tmp_path / "evil.pt", marker)
    code, text = cli("export", evil, "-o", tmp_path / "out.onnx", "-i", "x:4")
    _refused(code, text, str(evil), "TorchScript archive")
    for backend in ("torch", "inductor", "aoti"):
        code, text = cli("run", evil, "-b", backend, "-i", "x:4")
        _refused(code, text, str(evil), "TorchScript archive")
    from enginekit.backends.torch_eager import TorchEagerRunner

    with pytest.raises(ModelLoadError, match="--trust-remote-code"):
        TorchEagerRunner(evil, BackendSettings(torch_inputs=("x:4",))).load()
    assert not marker.exists()
    torch.jit.load(str(evil))  # the payload is live
    assert marker.exists()


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="needs a C compiler")
def test_aoti_package_payload(cli: Cli, tmp_path: Path, marker: Path) -> None:
    evil = payloads.aoti_payload(tmp_path / "evil_pkg.pt2", marker)
    code, text = cli("run", evil, "-b", "aoti")
    _refused(code, text, str(evil), "AOTInductor package")
    code, text = cli("bench", evil, "-b", "aoti", "--duration", "0.1s")
    _refused(code, text, str(evil), "AOTInductor package")
    code, text = cli("export", evil, "-o", tmp_path / "out.onnx", "-i", "x:2x4")
    _refused(code, text, str(evil), "AOTInductor package")
    from enginekit.backends.aoti import AotiRunner

    with pytest.raises(ModelLoadError, match="--trust-remote-code"):
        AotiRunner(evil, BackendSettings()).load()
    assert not marker.exists()
    # trusted, the export still refuses a package (it is not a program), without loading its library
    code, text = cli("export", evil, "-o", tmp_path / "out.onnx", "-i", "x:2x4", "--trust-remote-code")
    assert code == 2 and "is an AOTInductor package (compiled code), not a torch.export program" in text, text
    assert not marker.exists()
    code, text = cli("run", evil, "-b", "aoti", "--trust-remote-code")  # what `run` did before the flag existed
    assert marker.read_text() == "pwned"  # the library's constructor ran when it was loaded: the payload is live
    assert code == 1 and "AOTInductor could not load" in text, text  # (a library with no model in it)
