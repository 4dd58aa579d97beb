"""The ``torch`` (eager) backend and what the PyTorch-native backends share: sources, IO, precision, hooks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from enginekit.compare import CompareSettings, Tolerances, compare_outputs  # noqa: E402
from enginekit.errors import FeedError, HardwareUnavailableError, InvalidArgumentError  # noqa: E402
from enginekit.settings import BackendSettings  # noqa: E402

torch = pytest.importorskip("torch")

from enginekit.backends.torch_common import Tf32Scope, claim_cudnn_mode  # noqa: E402
from enginekit.backends.torch_eager import TorchEagerRunner  # noqa: E402
from enginekit.backends.torch_inputs import feed_shapes, plan_torch_inputs  # noqa: E402
from enginekit.backends.torch_io import torch_source_io  # noqa: E402
from enginekit.sources.detect import is_aoti_package, torch_model_format  # noqa: E402

MODELS = str(Path(__file__).with_name("torch_models.py"))
CONV = Path(f"{MODELS}:convnet")
ENC = Path(f"{MODELS}:encoder")
CONV_IN = BackendSettings(torch_inputs=("x:batch,3,16,16",), torch_device="cpu")
ENC_IN = BackendSettings(torch_inputs=("x:batch,seq,24",), torch_device="cpu")
CONV_CUDA = BackendSettings(torch_inputs=("x:batch,3,16,16",), torch_device="cuda")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _x(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


def _direct(factory: str, x: np.ndarray) -> dict[str, np.ndarray]:
    """The factory's model called by hand (no enginekit code), outputs named like the exporter names them."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("direct_torch_models", MODELS)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with torch.inference_mode():
        out = getattr(mod, factory)()(torch.from_numpy(x))
    flat = list(out.values()) if isinstance(out, dict) else [out]
    names = ["output"] if len(flat) == 1 else [f"output_{i}" for i in range(len(flat))]
    return {n: t.numpy() for n, t in zip(names, flat, strict=True)}


def _close(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], tol: float) -> None:
    result = compare_outputs(ref, got, CompareSettings(atol=Tolerances(tol), rtol=Tolerances(tol)))
    assert result.passed, result.to_dict()


@pytest.fixture(scope="module")
def eager_conv() -> Iterator[TorchEagerRunner]:
    runner = TorchEagerRunner(CONV, CONV_IN)
    with runner:
        yield runner


def test_eager_convnet_io_and_outputs(eager_conv: TorchEagerRunner) -> None:
    assert [(s.name, s.shape, s.dtype) for s in eager_conv.inputs()] == [("x", ("batch", 3, 16, 16), "float32")]
    # the output's batch dim is found by running two batch sizes
    assert [(s.name, s.shape, s.dtype) for s in eager_conv.outputs()] == [("output", ("batch", 10), "float32")]
    x = _x(3, 3, 16, 16)
    out = eager_conv.infer({"x": x})
    np.testing.assert_array_equal(out["output"], _direct("convnet", x)["output"])
    details = eager_conv.describe()
    assert details["device"] == "cpu" and details["source_kind"] == "factory" and details["channels_last"] is False


def test_outputs_before_load_and_nested_outputs() -> None:
    runner = TorchEagerRunner(ENC, ENC_IN)
    # before load: one eager fp32 CPU probe names the (dict-valued) outputs like the exporter does
    assert [(s.name, s.shape) for s in runner.outputs()] == [("output_0", ("batch", "seq", 24)),
                                                             ("output_1", ("batch", 24))]
    x = _x(2, 5, 24)
    with runner:
        out = runner.infer({"x": x})
    _close(_direct("encoder", x), out, 1e-6)


def test_feed_is_checked(eager_conv: TorchEagerRunner) -> None:
    with pytest.raises(FeedError, match=r"shape \[2, 3, 8, 8\].*\[batch, 3, 16, 16\]"):
        eager_conv.infer({"x": _x(2, 3, 8, 8)})
    with pytest.raises(FeedError, match="dtype float64"):
        eager_conv.infer({"x": _x(2, 3, 16, 16).astype(np.float64)})


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated in torch 2.13
def test_torchscript_and_exported_program_sources(tmp_path: Path) -> None:
    x = _x(2, 3, 16, 16)
    expected = _direct("convnet", x)
    module = TorchEagerRunner(CONV, CONV_IN)
    with module:
        model = module._call
        ts, ep = tmp_path / "conv.pt", tmp_path / "conv_program.pt2"
        torch.jit.save(torch.jit.trace(model, torch.from_numpy(x)), str(ts))
        batch = torch.export.Dim("batch")
        torch.export.save(torch.export.export(model, (torch.from_numpy(x),), dynamic_shapes=({0: batch},)), str(ep))
    assert torch_model_format(ts) == "torch" and torch_model_format(ep) == "torch"
    assert not is_aoti_package(ep)  # a torch.export program is a zip too, but not an AOTInductor package
    for path in (ts, ep):  # files this test wrote: trusted (tests/security checks the refusal of untrusted ones)
        with TorchEagerRunner(path, replace(CONV_IN, trust_remote_code=True)) as runner:
            _close(expected, runner.infer({"x": x}), 1e-6)
            assert runner.describe()["source_kind"] in ("torchscript", "exported-program")


def test_formats_of_other_models(tmp_path: Path) -> None:
    assert torch_model_format(f"{MODELS}:convnet") == "torch"
    assert torch_model_format("some.package.module:factory") == "torch"
    assert torch_model_format(tmp_path / "model.onnx") is None
    assert torch_model_format(tmp_path / "model") is None
    not_zip = tmp_path / "x.pt2"
    not_zip.write_bytes(b"not a zip")
    assert not is_aoti_package(not_zip)


@pytest.mark.parametrize("precision,tol", [("bf16", 5e-2), ("fp16", 5e-3)])
def test_eager_reduced_precision_on_cpu(precision: str, tol: float) -> None:
    x = _x(2, 3, 16, 16)
    with TorchEagerRunner(CONV, CONV_IN, precision) as runner:
        out = runner.infer({"x": x})
        assert runner.label == f"torch:{precision}"
        assert runner.outputs()[0].dtype == "float32"
    assert out["output"].dtype == np.float32  # cast back at the boundary
    expected = _direct("convnet", x)
    _close(expected, out, tol)
    assert not np.array_equal(out["output"], expected["output"])  # it really ran in reduced precision


def test_tf32_needs_cuda() -> None:
    with pytest.raises(HardwareUnavailableError, match="tf32 is a CUDA math mode"):
        TorchEagerRunner(CONV, CONV_IN, "tf32").load()
    if torch.cuda.is_available():
        return
    with pytest.raises(HardwareUnavailableError, match="no CUDA GPU"):
        TorchEagerRunner(CONV, BackendSettings(torch_inputs=("x:1x3x16x16",), torch_device="cuda")).load()


def test_channels_last_on_cpu_when_asked() -> None:
    x = _x(2, 3, 16, 16)
    on = BackendSettings(torch_inputs=("x:2x3x16x16",), channels_last="on", torch_device="cpu")
    with TorchEagerRunner(CONV, on) as runner:
        staged = runner.stage({"x": x})
        assert staged["x"].is_contiguous(memory_format=torch.channels_last)
        assert runner.describe()["channels_last"] is True
        _close(_direct("convnet", x), runner.infer({"x": x}), 1e-5)
    with TorchEagerRunner(CONV, BackendSettings(torch_inputs=("x:2x3x16x16",), torch_device="cpu")) as runner:
        assert runner.describe()["channels_last"] is False


@pytest.mark.parametrize("field,value,flag", [
    ("channels_last", "yes", "--channels-last"),
    ("dynamic_shapes", "symbolic", "--dynamic-shapes"),
    ("torch_device", "gpu", "--torch-device"),
])
def test_invalid_settings_name_the_choices(field: str, value: str, flag: str) -> None:
    settings = BackendSettings(torch_inputs=("x:1x3x16x16",), **{field: value})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=f"{flag} '{value}': choose one of"):
        TorchEagerRunner(CONV, settings)


def test_invalid_precision_and_missing_inputs() -> None:
    with pytest.raises(InvalidArgumentError, match="fp32, tf32, fp16, bf16"):
        TorchEagerRunner(CONV, CONV_IN, "int8")
    with pytest.raises(InvalidArgumentError, match="give --input NAME:DIMS"):
        TorchEagerRunner(CONV, BackendSettings()).inputs()
    with pytest.raises(InvalidArgumentError, match="bad dim"):
        plan_torch_inputs(["x:2x-3"])


def test_feed_shapes_for_run() -> None:
    assert feed_shapes(["x:batch,3,32,32", "ids:1x7:int64"]) == ["x:2x3x32x32:float32", "ids:1x7:int64"]


def test_dynamic_policy_makes_the_batch_symbolic() -> None:
    (plan,) = plan_torch_inputs(["x:4x8"], "dynamic")
    assert plan.spec().shape == ("batch", 8) and plan.trace_shape == (4, 8)
    (plan,) = plan_torch_inputs(["x:4x8"], "static")
    assert plan.spec().shape == (4, 8)


def test_benchmark_hooks_on_cpu(eager_conv: TorchEagerRunner) -> None:
    x = _x(2, 3, 16, 16)
    staged = eager_conv.stage({"x": x})
    assert isinstance(staged["x"], torch.Tensor) and staged["x"].device.type == "cpu"
    raw = eager_conv.run_staged(staged)
    assert isinstance(raw["output"], torch.Tensor)
    eager_conv.synchronize()
    out = eager_conv.fetch(raw)
    np.testing.assert_array_equal(out["output"], eager_conv.infer({"x": x})["output"])
    assert eager_conv.device == "cpu" and eager_conv.supports_cuda_graph is False
    with pytest.raises(NotImplementedError):
        eager_conv.capture_cuda_graph(staged)


def test_tf32_scope_restores_the_flags() -> None:
    mm, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (mm.allow_tf32, cudnn.allow_tf32)
    with Tf32Scope(True):
        assert mm.allow_tf32 and cudnn.allow_tf32
    with Tf32Scope(False):
        assert not mm.allow_tf32 and not cudnn.allow_tf32
        with Tf32Scope(False):  # nested (or another thread of the same runner)
            pass
        assert not cudnn.allow_tf32  # the inner exit does not restore yet
    assert (mm.allow_tf32, cudnn.allow_tf32) == before


def test_cudnn_benchmark_is_set_inside_the_scope_only() -> None:
    cudnn = torch.backends.cudnn
    before = cudnn.benchmark
    cudnn.benchmark = False
    try:
        with Tf32Scope(False):
            assert cudnn.benchmark is False  # off: the process's setting is left alone
        with Tf32Scope(False, cudnn_benchmark=True):
            assert cudnn.benchmark is True and not cudnn.allow_tf32
        assert cudnn.benchmark is False
        with Tf32Scope(False):  # an outer scope without it, an inner one (another runner's thread) with it
            with Tf32Scope(True, cudnn_benchmark=True):
                assert cudnn.benchmark is True
        assert cudnn.benchmark is False  # the last exit restores what the first entry found
    finally:
        cudnn.benchmark = before


def test_one_process_measures_one_cudnn_setting_per_precision_and_layout() -> None:
    modes: dict[tuple[str, bool], bool] = {}
    assert claim_cudnn_mode("fp32", False, False, modes) is None  # the FP32 reference
    assert claim_cudnn_mode("fp16", True, True, modes) is None  # autotuned fp16 channels-last rows first: fine
    assert claim_cudnn_mode("fp16", True, True, modes) is None
    later = claim_cudnn_mode("fp16", True, False, modes)  # a plain row would reuse the autotuned plans
    assert later is not None and "already ran in this process with cudnn_benchmark=on" in later
    assert claim_cudnn_mode("fp16", False, False, modes) is None  # another layout: other cache keys
    refused = claim_cudnn_mode("fp16", False, True, modes)
    assert refused is not None and "fp16 NCHW convolutions already ran in this process without it" in refused
    assert "process of its own" in refused


def test_source_io_for_run() -> None:
    inputs, outputs = torch_source_io(f"{MODELS}:encoder", ["x:batch,6,24"])
    assert [s.shape for s in inputs] == [("batch", 6, 24)]
    assert [(s.name, s.shape) for s in outputs] == [("output_0", ("batch", 6, 24)), ("output_1", ("batch", 24))]


@cuda
@pytest.mark.gpu
def test_eager_on_cuda_hooks_and_cuda_graph() -> None:
    x = _x(4, 3, 16, 16)
    expected = _direct("convnet", x)
    with TorchEagerRunner(CONV, CONV_CUDA) as runner:
        assert runner.device == "cuda" and runner.supports_cuda_graph
        assert runner.describe()["channels_last"] is True  # auto: conv model, 4-D image input, CUDA
        staged = runner.stage({"x": x})
        assert staged["x"].is_cuda
        _close(expected, runner.fetch(runner.run_staged(staged)), 1e-4)  # fp32 means IEEE fp32 (TF32 off)
        replay = runner.capture_cuda_graph(staged)
        staged["x"].copy_(torch.from_numpy(_x(4, 3, 16, 16, seed=5)))
        out = runner.fetch(replay())
        runner.synchronize()
    _close(_direct("convnet", _x(4, 3, 16, 16, seed=5)), out, 1e-4)


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("precision,tol", [("tf32", 1e-2), ("fp16", 1e-2), ("bf16", 5e-2)])
def test_eager_cuda_precisions(precision: str, tol: float) -> None:
    x = _x(4, 3, 16, 16)
    with TorchEagerRunner(CONV, CONV_CUDA, precision) as runner:
        out = runner.infer({"x": x})
    assert out["output"].dtype == np.float32
    _close(_direct("convnet", x), out, tol)
