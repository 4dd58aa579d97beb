"""PaddleRunner (Paddle Inference on CPU) on a real vision architecture, and Paddle model file resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from enginekit.backends.paddle import PaddleRunner
from enginekit.compare import CompareSettings, Tolerances, compare_outputs
from enginekit.errors import FeedError, ModelLoadError
from enginekit.settings import BackendSettings
from enginekit.sources.paddle_files import looks_like_paddle_model, resolve_paddle_model
from enginekit.tensors import TensorSpec
from paddle_models import save_resnet18  # type: ignore[import-not-found]  # tests/paddle_models.py

# Paddle Inference (oneDNN) vs ONNX Runtime on a random-init ResNet-18: max abs error ~4e-5 at logits ~30.
TOL = CompareSettings(atol=Tolerances(1e-4), rtol=Tolerances(1e-4))


@pytest.fixture(scope="session")
def resnet_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_resnet18(tmp_path_factory.mktemp("paddle_resnet") / "model")


@pytest.fixture(scope="session")
def legacy_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_resnet18(tmp_path_factory.mktemp("paddle_resnet_legacy") / "model", legacy=True)


def _touch(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# file resolution (no paddle needed) ----------------------------------------------------------------------

PIR_HEAD = '{"base_code":{"magic":"pir","trainable":true,"version":4},"program":{}}'


def test_resolve_accepts_prefix_files_and_folder(tmp_path: Path) -> None:
    program = _touch(tmp_path / "m" / "inference.json", PIR_HEAD)
    params = _touch(tmp_path / "m" / "inference.pdiparams")
    _touch(tmp_path / "m" / "config.json", '{"a": 1}')  # not a program: ignored in a folder
    for source in (program, params, tmp_path / "m" / "inference", tmp_path / "m"):
        files = resolve_paddle_model(source)
        assert (files.program, files.params, files.format) == (program, params, "pir")
    assert looks_like_paddle_model(tmp_path / "m")


def test_resolve_legacy_and_missing_params(tmp_path: Path) -> None:
    program = _touch(tmp_path / "model.pdmodel")
    files = resolve_paddle_model(tmp_path / "model")
    assert (files.program, files.params, files.format) == (program, None, "legacy")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "nothing", "not found"),
        (lambda d: _touch(d / "w.pdiparams"), "no program beside it"),
        (lambda d: _touch(d / "model.onnx"), "not a Paddle inference model"),
        (lambda d: _touch(d / "empty" / "readme.txt").parent, "holds no Paddle inference model"),
        (lambda d: (_touch(d / "two" / "a.pdmodel"), _touch(d / "two" / "b.pdmodel"))[0].parent, "several"),
    ],
)
def test_resolve_errors_are_user_errors(tmp_path: Path, make: object, message: str) -> None:
    source = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(ModelLoadError, match=message) as info:
        resolve_paddle_model(source)
    assert info.value.exit_code == 2
    assert not looks_like_paddle_model(source)


# the runner ------------------------------------------------------------------------------------------------

def test_io_specs_come_from_the_program(resnet_prefix: Path) -> None:
    runner = PaddleRunner(resnet_prefix, BackendSettings())
    assert runner.inputs() == [TensorSpec("x", ("?", 3, 64, 64), "float32")]
    assert runner.outputs() == [TensorSpec("fetch_name_0", ("?", 1000), "float32")]


def test_runner_matches_paddle_eager_and_onnxruntime(resnet_prefix: Path, tmp_path: Path) -> None:
    paddle = pytest.importorskip("paddle")
    pytest.importorskip("paddle2onnx")
    from enginekit.backends.ort import OrtRunner
    from enginekit.export.paddle import export_paddle
    from enginekit.settings import ExportSettings

    onnx_path = tmp_path / "resnet.onnx"
    export_paddle(ExportSettings(source=str(resnet_prefix), output=onnx_path, verify=False), isolate=False)
    x = np.random.default_rng(0).uniform(0, 1, (2, 3, 64, 64)).astype(np.float32)
    with PaddleRunner(resnet_prefix.with_suffix(".json"), BackendSettings()) as runner:
        got = runner.infer({"x": x})
        details = runner.describe()
    with OrtRunner(onnx_path, BackendSettings()) as ort_runner:
        want = ort_runner.infer({"x": x})
    assert list(got) == ["fetch_name_0"] and got["fetch_name_0"].shape == (2, 1000)
    assert float(np.abs(got["fetch_name_0"]).max()) > 1.0  # real activations, not a vanishing random net
    assert compare_outputs(got, want, TOL).passed
    eager = paddle.jit.load(str(resnet_prefix))
    eager.eval()
    assert np.allclose(eager(paddle.to_tensor(x)).numpy(), got["fetch_name_0"], atol=1e-4, rtol=1e-4)
    assert details["backend"] == "paddle" and details["format"] == "pir" and details["device"] == "cpu"


def test_runner_legacy_format(legacy_prefix: Path, resnet_prefix: Path) -> None:
    x = np.random.default_rng(1).uniform(0, 1, (1, 3, 64, 64)).astype(np.float32)
    with PaddleRunner(legacy_prefix.parent, BackendSettings()) as legacy:
        assert legacy.inputs() == [TensorSpec("x", ("?", 3, 64, 64), "float32")]
        (name,) = [o.name for o in legacy.outputs()]  # legacy programs fetch the last op's variable
        out = legacy.infer({"x": x})[name]
        assert legacy.describe()["format"] == "legacy"
    with PaddleRunner(resnet_prefix, BackendSettings()) as pir:
        same_weights = pir.infer({"x": x})["fetch_name_0"]
    np.testing.assert_allclose(out, same_weights, atol=1e-4, rtol=1e-4)  # both saved from seed 0


def test_runner_checks_the_feed(resnet_prefix: Path) -> None:
    with PaddleRunner(resnet_prefix, BackendSettings()) as runner:
        with pytest.raises(FeedError, match=r"shape \[1, 3, 32, 32\].*\[\?, 3, 64, 64\]"):
            runner.infer({"x": np.zeros((1, 3, 32, 32), np.float32)})
        with pytest.raises(FeedError, match="dtype float64"):
            runner.infer({"x": np.zeros((1, 3, 64, 64), np.float64)})


def test_missing_params_is_a_user_error(resnet_prefix: Path, tmp_path: Path) -> None:
    lone = tmp_path / "model.json"
    lone.write_bytes(resnet_prefix.with_suffix(".json").read_bytes())
    with pytest.raises(ModelLoadError, match=r"has parameters but its params file .*model.pdiparams"):
        PaddleRunner(lone, BackendSettings()).inputs()


def test_corrupt_program_is_a_user_error(tmp_path: Path) -> None:
    pytest.importorskip("paddle")
    bad = _touch(tmp_path / "model.json", PIR_HEAD)
    _touch(tmp_path / "model.pdiparams")
    with pytest.raises(ModelLoadError, match="Could not read .* as a Paddle pir inference program"):
        PaddleRunner(bad, BackendSettings()).inputs()


def test_registered_backend_creates_the_runner(resnet_prefix: Path) -> None:
    pytest.importorskip("paddle")
    from enginekit.registry import get_backend

    info = get_backend("paddle")
    assert info.available().ok
    runner = info.create_runner(resnet_prefix, BackendSettings())
    assert isinstance(runner, PaddleRunner)
