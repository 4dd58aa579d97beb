"""`enginekit triton PACKAGE REPO` through the registered CLI: a package of the bundled example becomes a model
repository whose config Triton's own proto accepts; a non-empty target is refused (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_triton_config import parse  # type: ignore[import-not-found]
from tests.cli.conftest import Cli, _assert_user_error

from enginekit.deploy.package import write_package
from enginekit.pipeline import optimize
from enginekit.settings import OptimizeSettings


def test_triton_from_a_package(cli: Cli, tmp_path: Path) -> None:
    assert optimize(OptimizeSettings(report_dir=tmp_path / "rep", backends=("ort",))).passed
    pkg = write_package(tmp_path / "rep", tmp_path / "pkg").path
    res = cli("triton", pkg, tmp_path / "repo", "--name", "digits", "--max-batch-size", "16")
    assert res.code == 0, res.stdout + res.stderr
    config = parse((tmp_path / "repo" / "digits" / "config.pbtxt").read_text())
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 16
    assert [i.name for i in config.input] == ["x"] and list(config.input[0].dims) == [1, 8, 8]
    assert (tmp_path / "repo" / "digits" / "1" / "model.onnx").is_file()
    _assert_user_error(cli("triton", pkg, tmp_path / "repo", "--name", "digits"), "not empty")


def test_triton_refuses_a_missing_model(cli: Cli, tmp_path: Path) -> None:
    res = cli("triton", tmp_path / "nope.onnx", tmp_path / "repo")
    assert res.code == 2 and "Traceback" not in res.stderr
    pytest.importorskip("tritonclient")
