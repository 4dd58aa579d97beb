"""INT8 Q/DQ quantization of the digits CNN, checked on CPU and parsed by TensorRT-RTX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

from enginekit.errors import FeedError, InvalidArgumentError, UnknownNameError
from enginekit.examples import digits
from enginekit.graph.calibration import load_calibration_feeds
from enginekit.graph.io import input_specs
from enginekit.graph.quantize import WEIGHTED_OPS, QuantizeResult, check_quantized_accuracy, quantize_qdq
from enginekit.tensors import TensorSpec

SPECS = [TensorSpec("x", ("batch", 1, 8, 8), "float32")]


@pytest.fixture(scope="module")
def split() -> tuple[np.ndarray, np.ndarray]:
    return digits.load_test_split()


@pytest.fixture(scope="module")
def int8(split: tuple[np.ndarray, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> QuantizeResult:
    """MinMax Q/DQ model calibrated on the first 100 test images (10 feeds of 10)."""
    x, _ = split
    out = tmp_path_factory.mktemp("int8") / "digits_int8.onnx"
    return quantize_qdq(digits.onnx_path(), [{"x": x[i:i + 10]} for i in range(0, 100, 10)], method="minmax",
                        output=out)


def accuracy(model: str | bytes, x: np.ndarray, labels: np.ndarray) -> float:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return float((session.run(None, {"x": x})[0].argmax(1) == labels).mean())


def test_int8_accuracy_on_cpu(int8: QuantizeResult, split: tuple[np.ndarray, np.ndarray]) -> None:
    x, labels = split
    fp32 = accuracy(str(digits.onnx_path()), x, labels)
    q = accuracy(int8.source, x, labels)
    assert fp32 == pytest.approx(355 / 360)
    assert q >= 0.975 and fp32 - q <= 2 / 360  # observed 354 / 360 (0.9833)
    check = check_quantized_accuracy(digits.onnx_path(), int8.source, [{"x": x[i:i + 60]} for i in range(0, 360, 60)])
    logits = check.compare["logits"]
    assert check.feeds == 6 and logits.total_elements == 3600
    assert check.passed  # mean abs error within the loose INT8 default (0.1 / 10 %)
    assert logits.max_abs_err < 1.0 and logits.mean_abs_err < 0.15  # observed 0.46 and 0.106 on logits up to ~20
    assert check.argmax_agreement["logits"] >= 0.98  # observed 0.994
    assert check.to_dict()["argmax_agreement"] == check.argmax_agreement


def test_qdq_structure_is_what_tensorrt_wants(int8: QuantizeResult) -> None:
    assert int8.model_path is not None and int8.model_path.is_file() and int8.model_bytes is None
    model = int8.load()
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert int8.quantized_nodes == 4 and not int8.not_quantized  # 3 Conv + Gemm
    assert int8.quantize_linear == ops.count("QuantizeLinear") == 4  # activations, before each weighted op
    assert int8.dequantize_linear == ops.count("DequantizeLinear") == 8  # + the four INT8 weights
    inits = {t.name: t for t in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert zero_points and all(z.data_type == TensorProto.INT8 for z in zero_points)
    assert all(not numpy_helper.to_array(z).any() for z in zero_points)  # symmetric
    produced_by = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if n.op_type in WEIGHTED_OPS:
            assert produced_by[n.input[0]].op_type == "DequantizeLinear"
            weight_dq = produced_by[n.input[1]]
            assert inits[weight_dq.input[0]].data_type == TensorProto.INT8  # quantized weights, per channel
            assert len(inits[weight_dq.input[1]].dims) == 1
            assert inits[n.input[2]].data_type == TensorProto.FLOAT  # float bias: TensorRT rejects INT32 DQ
    quantized_inputs = {produced_by[n.input[0]].op_type for n in model.graph.node if n.op_type == "QuantizeLinear"
                        if n.input[0] in produced_by}
    assert not quantized_inputs & set(WEIGHTED_OPS)  # outputs of weighted ops stay float (TensorRT fuses them)


def test_tensorrt_rtx_parses_the_qdq_model(int8: QuantizeResult) -> None:
    trt = pytest.importorskip("tensorrt_rtx")
    logger = trt.Logger(trt.Logger.ERROR)
    network = trt.Builder(logger).create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert int8.model_path is not None
    ok = parser.parse(int8.model_path.read_bytes())
    assert ok, [parser.get_error(i).desc() for i in range(parser.num_errors)]
    layer_types = [str(network.get_layer(i).type).rsplit(".", 1)[-1] for i in range(network.num_layers)]
    assert layer_types.count("QUANTIZE") == 4 and layer_types.count("DEQUANTIZE") == 8


def test_methods_exclusion_and_bytes_result(split: tuple[np.ndarray, np.ndarray]) -> None:
    x, labels = split
    feeds = iter([{"x": x[i:i + 20]} for i in range(0, 100, 20)])  # an iterator is fine
    result = quantize_qdq(digits.onnx_path(), feeds, method="percentile", per_channel=False,
                          exclude_nodes=["/classifier/Gemm"], preprocess=False)
    assert result.model_path is None and isinstance(result.model_bytes, bytes)
    assert result.calibration_feeds == 5 and result.quantized_nodes == 3
    assert result.not_quantized == ("/classifier/Gemm",) and result.preprocess == "skipped: not asked"
    assert accuracy(result.source, x, labels) >= 0.975  # observed 0.9833
    with pytest.raises(InvalidArgumentError, match="did you mean 'minmax'"):
        quantize_qdq(digits.onnx_path(), [], method="minmx")
    with pytest.raises(UnknownNameError, match="did you mean '/classifier/Gemm'"):
        quantize_qdq(digits.onnx_path(), [], exclude_nodes=["/classifier/Gem"])


def test_entropy_calibration_clips_ranges(split: tuple[np.ndarray, np.ndarray]) -> None:
    """ORT's own entropy calibrator degenerates to min/max (128 bins, 128 levels); enginekit's does not."""
    x, labels = split
    feeds = [{"x": x[i:i + 10]} for i in range(0, 100, 10)]
    entropy = quantize_qdq(digits.onnx_path(), feeds, method="entropy", preprocess=False)
    minmax = quantize_qdq(digits.onnx_path(), feeds, method="minmax", preprocess=False)

    def scales(result: QuantizeResult) -> dict[str, float]:
        return {t.name: float(numpy_helper.to_array(t)) for t in result.load().graph.initializer
                if t.name.endswith("_scale") and not t.dims}

    s_entropy, s_minmax = scales(entropy), scales(minmax)
    assert s_entropy.keys() == s_minmax.keys() and len(s_entropy) == 4
    assert any(s_entropy[k] < 0.95 * s_minmax[k] for k in s_entropy)  # KL picked a clipping threshold
    assert all(s_entropy[k] <= s_minmax[k] * (1 + 1e-6) for k in s_entropy)
    assert accuracy(entropy.source, x, labels) >= 0.975  # observed 0.9806


# --- calibration data ---------------------------------------------------------------------------


def test_load_calibration_npz_and_folder(tmp_path: Path, split: tuple[np.ndarray, np.ndarray]) -> None:
    x, labels = split
    np.savez(tmp_path / "calib.npz", x=x[:100], labels=labels[:100])  # labels are ignored
    feeds = load_calibration_feeds(tmp_path / "calib.npz", SPECS, batch_size=8)
    assert len(feeds) == 12 and feeds[0]["x"].shape == (8, 1, 8, 8)  # 100 // 8; the last 4 rows dropped
    fixed = [TensorSpec("x", (4, 1, 8, 8), "float32")]
    assert len(load_calibration_feeds(tmp_path / "calib.npz", fixed, max_samples=50)) == 12  # fixed batch 4
    np.savez(tmp_path / "stacked.npz", x=x[:30].reshape(10, 3, 1, 8, 8))
    stacked = load_calibration_feeds(tmp_path / "stacked.npz", SPECS)
    assert len(stacked) == 10 and stacked[0]["x"].shape == (3, 1, 8, 8)
    folder = tmp_path / "feeds"
    folder.mkdir()
    for i in range(3):
        np.savez(folder / f"{i}.npz", x=x[i * 5:(i + 1) * 5])
    assert [f["x"].shape[0] for f in load_calibration_feeds(folder, SPECS, max_samples=2)] == [5, 5]
    unchecked = load_calibration_feeds(tmp_path / "calib.npz", None, max_samples=6, batch_size=3)
    assert [sorted(f) for f in unchecked] == [["labels", "x"]] * 2 and unchecked[0]["x"].shape == (3, 1, 8, 8)
    specs = input_specs(onnx.load(str(digits.onnx_path())))
    result = quantize_qdq(digits.onnx_path(), load_calibration_feeds(folder, specs), preprocess=False)
    assert result.quantized_nodes == 4 and result.calibration_feeds == 3


@pytest.mark.parametrize(("arrays", "message"), [
    ({"image": np.zeros((4, 1, 8, 8), np.float32)}, "lacks model input(s) 'x'"),
    ({"x": np.zeros((4, 1, 8, 8), np.float64)}, "has dtype float64, the model expects float32"),
    ({"x": np.zeros((4, 8, 8), np.float32)}, "has shape [4, 8, 8]"),
    ({"x": np.zeros((4, 1, 8, 9), np.float32)}, "expects [batch, 1, 8, 8]"),
    ({"x": np.zeros((0, 1, 8, 8), np.float32)}, "holds no complete sample"),
])
def test_bad_calibration_data_is_a_feed_error(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(FeedError) as info:
        load_calibration_feeds(tmp_path / "bad.npz", SPECS)
    assert message in str(info.value)


def test_unreadable_or_missing_calibration_data(tmp_path: Path) -> None:
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(FeedError, match="Could not read"):
        load_calibration_feeds(tmp_path / "broken.npz", SPECS)
    with pytest.raises(FeedError, match="does not exist"):
        load_calibration_feeds(tmp_path / "missing.npz", SPECS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FeedError, match="holds no .npz files"):
        load_calibration_feeds(tmp_path / "empty", SPECS)
    with pytest.raises(FeedError, match="must be a .npz file"):
        load_calibration_feeds(tmp_path / "calib.txt", SPECS)


def test_bad_feeds_given_to_the_quantizer() -> None:
    with pytest.raises(FeedError, match="No calibration feeds"):
        quantize_qdq(digits.onnx_path(), [], preprocess=False)
    with pytest.raises(FeedError, match="has dtype float64"):
        quantize_qdq(digits.onnx_path(), [{"x": np.zeros((2, 1, 8, 8))}], preprocess=False)
    with pytest.raises(FeedError, match="No calibration feeds"):
        quantize_qdq(digits.onnx_path(), [], method="entropy", preprocess=False)


def test_opset_11_model_gets_valid_per_channel_qdq(ocr_cls_model: Path) -> None:
    """DequantizeLinear has 'axis' from opset 13: an opset-11 model (PaddleOCR's classifier) is converted
    first, else onnxruntime rejects the quantized model ("Unrecognized attribute: axis")."""
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.random((2, 3, 48, 192), dtype=np.float32)} for _ in range(2)]
    q = quantize_qdq(ocr_cls_model, feeds)
    assert q.per_channel and "opset 11 -> 13" in q.preprocess
    model = q.load()
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 13
    ort.InferenceSession(q.source, providers=["CPUExecutionProvider"]).run(None, feeds[0])


def test_exclusions_follow_preprocessing_fusions() -> None:
    """quant_pre_process fuses MatMul + Add into Gemm 'NAME/MatMulAddFusion': excluding the MatMul by its
    original name must leave the fused Gemm unquantized."""
    from onnx import helper

    from enginekit.graph.quantize import Quantizer

    rng = np.random.default_rng(0)
    nodes, inits = [], []
    x = "x"
    for i in range(3):
        inits += [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"], name=f"fc{i}"),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"], name=f"add{i}")]
        x = f"a{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [4, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = [{"x": rng.standard_normal((4, 8)).astype(np.float32)}]
    with Quantizer(model, feeds) as quantizer:
        full = quantizer.quantize()
        partial = quantizer.quantize(["fc1"])
        assert quantizer.map_excluded(["fc1"]) == ["fc1/MatMulAddFusion"]
    assert full.quantized_nodes == 3 and partial.quantized_nodes == 2
    assert partial.not_quantized == ("fc1/MatMulAddFusion",)
    assert partial.calibration_feeds == 1  # calibrated once, for the first model
