"""Each runner on real models: the same outputs, feed validation, lifecycle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from enginekit.errors import FeedError, InvalidArgumentError
from enginekit.registry import get_backend
from enginekit.settings import BackendSettings

BACKENDS = ["ort", "openvino", "onnx-reference"]


def _numpy_mlp(path: Path, x: np.ndarray) -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    w = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    return np.maximum(x @ w["w1"] + w["b1"], 0) @ w["w2"]


@pytest.mark.parametrize("name", BACKENDS)
def test_runner_matches_numpy(name: str, mlp_model: Path) -> None:
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    with get_backend(name).create_runner(mlp_model, BackendSettings()) as runner:
        assert [s.name for s in runner.inputs()] == ["x"]
        assert runner.inputs()[0].shape == ("batch", 4)
        out = runner.infer({"x": x})
    assert list(out) == ["y"]
    assert out["y"].dtype == np.float32 and out["y"].shape == (5, 3)
    np.testing.assert_allclose(out["y"], _numpy_mlp(mlp_model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", BACKENDS)
def test_runner_rejects_bad_feeds(name: str, mlp_model: Path) -> None:
    with get_backend(name).create_runner(mlp_model, BackendSettings()) as runner:
        with pytest.raises(FeedError, match=r"shape \[5, 5\].*\[batch, 4\]"):
            runner.infer({"x": np.zeros((5, 5), np.float32)})
        with pytest.raises(FeedError, match="dtype float64.*float32"):
            runner.infer({"x": np.zeros((5, 4), np.float64)})
        with pytest.raises(FeedError, match="missing x"):
            runner.infer({"z": np.zeros((5, 4), np.float32)})


def test_runner_must_be_loaded(mlp_model: Path) -> None:
    runner = get_backend("ort").create_runner(mlp_model, BackendSettings())
    with pytest.raises(InvalidArgumentError, match="context manager"):
        runner.infer({"x": np.zeros((1, 4), np.float32)})


def test_openvino_reports_f32_precision_hint(mlp_model: Path) -> None:
    with get_backend("openvino").create_runner(mlp_model, BackendSettings()) as runner:
        details = runner.describe()
    assert details["inference_precision"] == "f32"


def test_openvino_bf16_on_real_model_is_close_but_not_exact(ocr_cls_model: Path) -> None:
    from enginekit.hardware import cpu_supports_bf16

    if not cpu_supports_bf16():
        pytest.skip("this CPU has no bf16")
    x = np.random.default_rng(0).uniform(0, 1, (2, 3, 48, 192)).astype(np.float32)
    with get_backend("ort").create_runner(ocr_cls_model, BackendSettings()) as ref:
        expected = ref.infer({"x": x})
    with get_backend("openvino").create_runner(ocr_cls_model, BackendSettings(), "bf16") as ov:
        assert ov.describe()["inference_precision"] == "bf16"
        got = ov.infer({"x": x})
    (name,) = expected
    np.testing.assert_allclose(got[name], expected[name], atol=0.05)


def test_ort_providers_are_validated(mlp_model: Path) -> None:
    runner = get_backend("ort").create_runner(mlp_model, BackendSettings(ort_providers=("cuda",)))
    with pytest.raises(InvalidArgumentError, match="CUDAExecutionProvider.*not available"):
        runner.load()
    with get_backend("ort").create_runner(mlp_model, BackendSettings(ort_providers=("cpu",))) as r:
        assert r.describe()["providers"] == ["CPUExecutionProvider"]


def test_unsupported_precision_is_refused(mlp_model: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="does not offer precision 'bf16'"):
        get_backend("ort").create_runner(mlp_model, BackendSettings(), "bf16")


def test_reference_batchnorm_momentum_workaround(ocr_cls_model: Path) -> None:
    """onnx.reference's BatchNormalization_9 normalizes with batch statistics; the runner replaces it."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    from enginekit.backends.onnx_reference import inference_batchnorm_ops

    x = np.random.default_rng(3).uniform(0, 1, (2, 3, 48, 192)).astype(np.float32)
    with get_backend("ort").create_runner(ocr_cls_model, BackendSettings()) as ort_runner:
        expected = next(iter(ort_runner.infer({"x": x}).values()))
    raw = ReferenceEvaluator(onnx.load(str(ocr_cls_model))).run(None, {"x": x})[0]
    assert np.abs(raw - expected).max() > 0.05  # the upstream behaviour this works around
    assert len(inference_batchnorm_ops(onnx.load(str(ocr_cls_model)))) == 1
    with get_backend("onnx-reference").create_runner(ocr_cls_model, BackendSettings()) as ref:
        got = next(iter(ref.infer({"x": x}).values()))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_ort_cpu_tuning_and_saved_optimized_model(tmp_path: Path, ocr_cls_model: Path) -> None:
    import onnx as _onnx

    saved = tmp_path / "opt" / "cls.ort.onnx"
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, 48, 192)).astype(np.float32)
    outs = {}
    for level in ("disable", "all"):
        s = BackendSettings(ort_graph_optimization=level, ort_intra_op_threads=1,
                            ort_optimized_model=saved if level == "all" else None)
        with get_backend("ort").create_runner(ocr_cls_model, s) as r:
            outs[level] = next(iter(r.infer({"x": x}).values()))
            assert r.describe()["graph_optimization"] == level
    np.testing.assert_allclose(outs["all"], outs["disable"], atol=1e-5)
    optimized = _onnx.load(str(saved))  # onnxruntime wrote its fused graph
    assert len(optimized.graph.node) < len(_onnx.load(str(ocr_cls_model)).graph.node)
    with pytest.raises(InvalidArgumentError, match="choose"):
        get_backend("ort").create_runner(ocr_cls_model, BackendSettings(ort_graph_optimization="max")).load()


def test_ort_gpu_provider_options_are_built_from_settings() -> None:
    from enginekit.backends.ort import provider_options

    s = BackendSettings(ort_cuda_fp16=True, ort_trt_cache_dir=Path("/tmp/trtc"),
                        ort_trt_profiles=("x:1x3x32x32:4x3x64x64:8x3x128x128",))
    (trt_name, trt), (cuda_name, cuda) = provider_options(["TensorrtExecutionProvider", "CUDAExecutionProvider"], s)
    assert trt_name == "TensorrtExecutionProvider" and trt["trt_fp16_enable"] is True
    assert trt["trt_engine_cache_enable"] is True and trt["trt_engine_cache_path"] == "/tmp/trtc"
    assert (trt["trt_profile_min_shapes"], trt["trt_profile_opt_shapes"], trt["trt_profile_max_shapes"]) == (
        "x:1x3x32x32", "x:4x3x64x64", "x:8x3x128x128")
    assert cuda_name == "CUDAExecutionProvider" and cuda == {"cudnn_conv_algo_search": "EXHAUSTIVE"}
