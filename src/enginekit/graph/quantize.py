"""INT8 Q/DQ quantization for TensorRT explicit quantization, checked on CPU before any engine is built.

:func:`quantize_qdq` runs ONNX Runtime's static quantizer with the settings TensorRT needs:

* QDQ format, signed INT8 activations and weights, both symmetric (zero point 0): TensorRT only
  supports symmetric INT8 (``ActivationSymmetric``, ``WeightSymmetric``).
* Q/DQ only on the inputs of weighted ops (Conv, ConvTranspose, Gemm, MatMul), not on their outputs
  (``OpTypesToExcludeOutputQuantization``): TensorRT's placement recommendation; it fuses the rest.
* Float biases (``QuantizeBias: False``): TensorRT's DequantizeLinear rejects INT32 inputs
  ("input has type Int32 but must have type FP8, FP4, Int4, Int8, or UInt8"), so an ORT default model fails to parse.
* One Q/DQ pair per consumer (``DedicatedQDQPair``), per-channel weights on the output-channel axis
  (ORT's defaults: Conv 0, ConvTranspose 1, Gemm 0 with transB else 1, MatMul 1); weights are stored as
  INT8 initializers feeding a DequantizeLinear, which TensorRT reads as quantized weights.

:func:`check_quantized_accuracy` runs the FP32 and the Q/DQ model in ONNX Runtime (CPU) on the same
feeds: DequantizeLinear followed by float compute simulates the INT8 arithmetic, so the error measured
here is what the engine will show, give or take TensorRT's own rounding.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from enginekit.compare import CompareResult, CompareSettings, Tolerances, compare_outputs
from enginekit.data import check_feed
from enginekit.deps import require
from enginekit.errors import BackendError, FeedError, InvalidArgumentError, UnknownNameError
from enginekit.tensors import TensorSpec

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("entropy", "minmax", "percentile")
WEIGHTED_OPS: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul")
TENSORRT_EXTRA_OPTIONS: dict[str, Any] = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "QuantizeBias": False,
    "DedicatedQDQPair": True,
    "AddQDQPairToWeight": False,
}


@dataclass(frozen=True)
class QuantizeResult:
    """The Q/DQ model (written to ``model_path``, or held in ``model_bytes``) and what the quantizer did."""

    model_path: Path | None
    model_bytes: bytes | None
    method: str
    per_channel: bool
    quantized_nodes: int  # weighted nodes whose activation and weight inputs come from DequantizeLinear
    quantize_linear: int
    dequantize_linear: int
    calibration_feeds: int
    op_types: tuple[str, ...]
    excluded_nodes: tuple[str, ...] = ()
    preprocess: str = ""  # what quant_pre_process did: "full", "no symbolic shapes", "skipped: why"
    duration_s: float = 0.0
    not_quantized: tuple[str, ...] = field(default_factory=tuple)  # weighted nodes left in float

    @property
    def source(self) -> str | bytes:
        """What onnxruntime.InferenceSession accepts: the path, or the serialized model."""
        return str(self.model_path) if self.model_path is not None else (self.model_bytes or b"")

    def load(self) -> onnx.ModelProto:
        return onnx.load(str(self.model_path)) if self.model_path else onnx.load_from_string(self.model_bytes or b"")

    def to_dict(self) -> dict[str, Any]:
        return {"model_path": str(self.model_path) if self.model_path else None, "method": self.method,
                "per_channel": self.per_channel, "quantized_nodes": self.quantized_nodes,
                "quantize_linear": self.quantize_linear, "dequantize_linear": self.dequantize_linear,
                "calibration_feeds": self.calibration_feeds, "op_types": list(self.op_types),
                "excluded_nodes": list(self.excluded_nodes), "not_quantized": list(self.not_quantized),
                "preprocess": self.preprocess, "duration_s": round(self.duration_s, 3)}


# --- calibration data --------------------------------------------------------------------------


class _Reader:
    """onnxruntime CalibrationDataReader over feeds (a sequence or an iterator), checked as they are read."""

    def __init__(self, feeds: Iterable[Mapping[str, np.ndarray]], specs: Sequence[TensorSpec]) -> None:
        self._it: Iterator[Mapping[str, np.ndarray]] = iter(feeds)
        self._specs = specs
        self.count = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed = next(self._it, None)
        if feed is None:
            return None
        if not isinstance(feed, Mapping):
            raise FeedError(f"Calibration feed {self.count} is a {type(feed).__name__}, expected a dict of arrays.")
        check_feed(self._specs, feed, where=f"calibration feed {self.count}")
        self.count += 1
        return dict(feed)

    def __iter__(self) -> _Reader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        feed = self.get_next()
        if feed is None:
            raise StopIteration
        return feed


# --- quantization ------------------------------------------------------------------------------


def quantize_qdq(model_path: str | Path, calib_feeds: Iterable[Mapping[str, np.ndarray]], *,
                 method: str = "minmax", per_channel: bool = True, exclude_nodes: Sequence[str] = (),
                 op_types: Sequence[str] = WEIGHTED_OPS, output: str | Path | None = None,
                 preprocess: bool = True) -> QuantizeResult:
    """INT8 Q/DQ model of ``model_path`` for TensorRT explicit quantization (see module doc).

    ``calib_feeds``: feeds (a list or an iterator) that look like real inputs; a few hundred samples usually
    suffice. ``exclude_nodes``: ONNX node names left in float. The model is written to ``output``
    (atomically), or returned as bytes when it is None.

    Raises:
        InvalidArgumentError: unknown method. UnknownNameError: an excluded node the model lacks.
        FeedError: calibration feeds that do not fit the model, or none at all.
        BackendError: ONNX Runtime's quantizer failed.
    """
    with Quantizer(model_path, calib_feeds, method=method, per_channel=per_channel, op_types=op_types,
                   preprocess=preprocess) as quantizer:
        return quantizer.quantize(exclude_nodes, output=output)


class Quantizer:
    """Pre-processes and calibrates a model once, then quantizes it with any set of excluded nodes.

    The precision debugger quantizes the same model many times with different exclusions: the calibration
    ranges (an onnxruntime calibration cache in a private temp folder) are computed by the first
    :meth:`quantize` and reused by the others. Use as a context manager (or call :meth:`close`).
    """

    def __init__(self, model: str | Path | onnx.ModelProto, calib_feeds: Iterable[Mapping[str, np.ndarray]], *,
                 method: str = "minmax", per_channel: bool = True, op_types: Sequence[str] = WEIGHTED_OPS,
                 preprocess: bool = True) -> None:
        require("onnxruntime", purpose="INT8 quantization")
        from enginekit.errors import did_you_mean
        from enginekit.graph.io import input_specs
        from enginekit.graph.load import load_model

        if method not in METHODS:
            raise InvalidArgumentError(f"Calibration method {method!r} is not one of {', '.join(METHODS)}"
                                       f"{did_you_mean(method, METHODS)}.")
        self.method, self.per_channel, self.op_types = method, per_channel, tuple(op_types)
        self._tmp = tempfile.TemporaryDirectory(prefix="enginekit-quant-")
        self.work = Path(self._tmp.name)
        if isinstance(model, onnx.ModelProto):
            self.source = self.work / "model.onnx"
            self.source.write_bytes(model.SerializeToString())
            self.model = model
        else:
            self.source = Path(model)
            self.model = load_model(self.source, load_external_data=False)
        self.names = [n.name for n in self.model.graph.node if n.name]
        self.reader = _Reader(calib_feeds, input_specs(self.model))
        self.cache = self.work / "calibration.json"
        upgraded, note = self._per_channel_opset()
        self.preprocessed, self.preprocess = ((upgraded, "skipped: not asked") if not preprocess
                                              else _preprocess(upgraded, self.work / "pre.onnx"))
        self._renaming = self.preprocessed != upgraded  # pre-processing ran and may have fused nodes
        if note:
            self.preprocess = f"{note}; {self.preprocess}"
        self.renamed = self._fused_names()

    def _per_channel_opset(self) -> tuple[Path, str]:
        """Per-channel Q/DQ needs DequantizeLinear's ``axis`` (opset 13; TensorRT wants 13+ too): older models
        are converted to opset 13 first, or quantized per tensor when onnx's converter cannot convert them."""
        from enginekit.graph.passes import default_opset

        opset = default_opset(self.model) or 13
        if not self.per_channel or opset >= 13:
            return self.source, ""
        try:
            converted = onnx.version_converter.convert_version(self.model, 13)
            converted.ir_version = max(converted.ir_version, 7)
            onnx.checker.check_model(converted)
        except Exception as exc:  # noqa: BLE001 - the converter's C++ assertions arrive as RuntimeError
            self.per_channel = False
            log.warning("opset %d cannot be converted to 13 (%s): weights quantized per tensor", opset, exc)
            return self.source, f"opset {opset}: per-tensor weights (conversion to opset 13 failed)"
        path = self.work / "opset13.onnx"
        path.write_bytes(converted.SerializeToString())
        return path, f"opset {opset} -> 13 (per-channel DequantizeLinear needs opset 13)"

    def _fused_names(self) -> dict[str, list[str]]:
        """Original node name -> names in the pre-processed model. Its fusions name the fused node after the
        original (``fc/MatMulAddFusion`` for MatMul ``fc`` + Add), so exclusions must follow them."""
        if not self._renaming:
            return {}
        pre = [n.name for n in onnx.load(str(self.preprocessed), load_external_data=False).graph.node if n.name]
        present = set(pre)
        out: dict[str, list[str]] = {}
        for name in self.names:
            if name not in present:
                out[name] = [p for p in pre if p.startswith(name + "/")]
        return out

    def map_excluded(self, exclude_nodes: Sequence[str]) -> list[str]:
        """Names to give the quantizer for ``exclude_nodes`` (original names; see :meth:`_fused_names`)."""
        mapped: list[str] = []
        for name in exclude_nodes:
            fused = self.renamed.get(name)
            if fused == []:
                log.warning("node %r was removed by quantization pre-processing; it cannot be excluded", name)
            mapped += fused if fused else [name]
        return mapped

    def __enter__(self) -> Quantizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._tmp.cleanup()

    def quantize(self, exclude_nodes: Sequence[str] = (), *, output: str | Path | None = None) -> QuantizeResult:
        """The Q/DQ model with ``exclude_nodes`` (ONNX node names) left in float; see :func:`quantize_qdq`."""
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        from enginekit.errors import did_you_mean

        start = time.perf_counter()
        unknown = [n for n in exclude_nodes if n not in set(self.names)]
        if unknown:
            raise UnknownNameError("Nodes to exclude from quantization are not in the model: "
                                   + "; ".join(f"{n!r}{did_you_mean(n, self.names)}" for n in unknown) + ".")
        calibrate = {"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax,
                     "percentile": CalibrationMethod.Percentile}[self.method]
        extra = {**TENSORRT_EXTRA_OPTIONS, "OpTypesToExcludeOutputQuantization": list(WEIGHTED_OPS)}
        out = self.work / "int8.onnx"
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):  # ORT's calibrators print their settings
                if self.method == "entropy" and not self.cache.is_file():
                    _entropy_cache(self.preprocessed, self.reader, self.op_types, self.work, self.cache)
                cached = self.cache.is_file()
                quantize_static(str(self.preprocessed), str(out), None if cached else self.reader,
                                quant_format=QuantFormat.QDQ, op_types_to_quantize=list(self.op_types),
                                per_channel=self.per_channel, activation_type=QuantType.QInt8,
                                weight_type=QuantType.QInt8, nodes_to_exclude=self.map_excluded(exclude_nodes),
                                calibrate_method=calibrate, extra_options=extra,
                                **({"calibration_cache_path": str(self.cache)} if _takes_cache() else {}))
        except (FeedError, InvalidArgumentError):
            raise
        except Exception as exc:  # noqa: BLE001 - the quantizer raises anything from ValueError to ORT errors
            if self.reader.count == 0 and isinstance(exc, (ValueError, IndexError, KeyError, StopIteration)):
                raise FeedError("No calibration feeds were given (the quantizer needs at least one).") from exc
            raise BackendError(f"ONNX Runtime's quantizer failed on {self.source.name}: {type(exc).__name__}: "
                               f"{exc}") from exc
        finally:
            if printed.getvalue().strip():
                log.debug("quantizer: %s", printed.getvalue().strip())
        if self.reader.count == 0:
            raise FeedError("No calibration feeds were given (the quantizer needs at least one).")
        data = out.read_bytes()
        qmodel = onnx.load_from_string(data)
        quantized, left = _count_quantized(qmodel, self.op_types)
        path: Path | None = None
        if output is not None:
            from enginekit.fileutil import atomic_write_bytes

            path = atomic_write_bytes(output, data)
        result = QuantizeResult(
            model_path=path, model_bytes=None if path else data, method=self.method, per_channel=self.per_channel,
            quantized_nodes=quantized, quantize_linear=_count(qmodel, "QuantizeLinear"),
            dequantize_linear=_count(qmodel, "DequantizeLinear"), calibration_feeds=self.reader.count,
            op_types=self.op_types, excluded_nodes=tuple(exclude_nodes), preprocess=self.preprocess,
            duration_s=time.perf_counter() - start, not_quantized=tuple(left))
        log.info("quantized %s (%s, %d feeds): %d of %d weighted nodes", self.source.name, self.method,
                 self.reader.count, quantized, quantized + len(left))
        return result


@functools.cache
def _takes_cache() -> bool:
    """Whether this onnxruntime's quantize_static reads and writes a calibration cache."""
    import inspect

    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def _entropy_cache(model: Path, reader: _Reader, op_types: Sequence[str], work: Path, cache: Path) -> None:
    """TensorRT-style entropy (KL) ranges written to ``cache`` as ORT's calibration cache (where ORT has one).

    quantize_static builds its entropy calibrator with 128 histogram bins and 128 quantized bins, which
    leaves one candidate window, the full range: its "entropy" is min/max. Here the histogram has 2048 bins
    and windows are quantized to 255 levels (signed symmetric INT8), as TensorRT's entropy calibrator does.
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization import calibrate as ort_calibrate

    save = getattr(ort_calibrate, "save_tensors_data", None)
    if save is None or not _takes_cache():
        log.warning("this onnxruntime cannot take calibration ranges from enginekit: its entropy calibration "
                    "degenerates to min/max ranges")
        return
    calibrator = ort_calibrate.create_calibrator(
        model, list(op_types), augmented_model_path=str(work / "augmented.onnx"),
        calibrate_method=CalibrationMethod.Entropy, extra_options={"num_bins": 2048, "num_quantized_bins": 255})
    calibrator.collect_data(reader)
    if reader.count == 0:
        raise FeedError("No calibration feeds were given (the quantizer needs at least one).")
    histograms = getattr(getattr(calibrator, "collector", None), "histogram_dict", None)
    if isinstance(histograms, dict):  # the KL search is slow Python: skip outputs, which are not quantized
        graph = onnx.load(str(model), load_external_data=False).graph
        inits = {t.name for t in graph.initializer}
        needed = {i for n in graph.node if n.op_type in op_types for i in n.input if i and i not in inits}
        for name in [k for k in histograms if k not in needed]:
            del histograms[name]
    save(calibrator.compute_data(), cache)


def _preprocess(src: Path, dst: Path) -> tuple[Path, str]:
    """onnxruntime's quant_pre_process (shape inference, basic graph optimization); falls back gracefully."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    attempts: list[str] = []
    for how, skip_symbolic in (("full", False), ("no symbolic shapes", True)):
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=skip_symbolic)
            return dst, how
        except Exception as exc:  # noqa: BLE001 - symbolic shape inference asserts on some valid models
            attempts.append(f"{how}: {type(exc).__name__}: {str(exc).strip()[:200]}")
            log.debug("quant_pre_process (%s) failed: %s", how, exc)
    log.warning("quantization pre-processing failed; quantizing the model as it is (%s)", "; ".join(attempts))
    return src, "skipped: " + "; ".join(attempts)


def _count(model: onnx.ModelProto, op_type: str) -> int:
    return sum(1 for n in model.graph.node if n.op_type == op_type)


def _count_quantized(model: onnx.ModelProto, op_types: Sequence[str]) -> tuple[int, list[str]]:
    """(weighted nodes whose first two inputs come from DequantizeLinear, names of the others)."""
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    quantized, left = 0, []
    for node in model.graph.node:
        if node.op_type not in op_types:
            continue
        if all(i in dq_outputs for i in node.input[:2]):
            quantized += 1
        else:
            left.append(node.name or node.op_type)
    return quantized, left


# --- accuracy on CPU ---------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantizedAccuracy:
    """FP32 vs Q/DQ outputs on the same feeds (ONNX Runtime CPU), with the measured error."""

    compare: CompareResult
    feeds: int
    argmax_agreement: dict[str, float]  # per output with a class axis (last axis > 1): share of equal argmax

    @property
    def passed(self) -> bool:
        return self.compare.passed

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "feeds": self.feeds, "argmax_agreement": dict(self.argmax_agreement),
                **self.compare.to_dict()}


def default_int8_settings() -> CompareSettings:
    """Loose tolerances for INT8: the mean error must stay within 0.1 absolute or 10 % relative."""
    return CompareSettings(atol=Tolerances(0.1), rtol=Tolerances(0.1), check_error_stat="mean")


def check_quantized_accuracy(fp32_model: str | Path | bytes, int8_model: str | Path | bytes,
                             feeds: Iterable[Mapping[str, np.ndarray]],
                             settings: CompareSettings | None = None) -> QuantizedAccuracy:
    """Run both models in ONNX Runtime (CPU) on ``feeds`` and compare the outputs (all feeds concatenated)."""
    ref_runs, cand_runs = [], []
    ref_sess, cand_sess = _session(fp32_model), _session(int8_model)
    names = [o.name for o in ref_sess.get_outputs()]
    for feed in feeds:
        ref_runs.append(ref_sess.run(names, dict(feed)))
        cand_runs.append(cand_sess.run(names, dict(feed)))
    if not ref_runs:
        raise FeedError("check_quantized_accuracy needs at least one feed.")
    ref = {n: _join([np.asarray(r[i]) for r in ref_runs]) for i, n in enumerate(names)}
    cand = {n: _join([np.asarray(r[i]) for r in cand_runs]) for i, n in enumerate(names)}
    result = compare_outputs(ref, cand, settings or default_int8_settings())
    agreement = {n: float(np.mean(ref[n].argmax(-1) == cand[n].argmax(-1))) for n in names
                 if ref[n].ndim >= 2 and ref[n].shape[-1] > 1 and ref[n].shape == cand[n].shape
                 and np.issubdtype(ref[n].dtype, np.floating)}
    return QuantizedAccuracy(result, len(ref_runs), agreement)


def _join(arrays: list[np.ndarray]) -> np.ndarray:
    if len(arrays) == 1:
        return arrays[0]
    if all(a.ndim >= 1 for a in arrays) and len({a.shape[1:] for a in arrays}) == 1:
        return np.concatenate(arrays, axis=0)
    return np.concatenate([a.reshape(-1) for a in arrays])


def _session(model: str | Path | bytes) -> Any:
    from enginekit.ortsession import ort_session

    try:
        return ort_session(model, purpose="checking the quantized model on CPU")
    except Exception as exc:  # noqa: BLE001 - ORT's own exception types
        label = "the model bytes" if isinstance(model, bytes) else repr(str(model))
        raise BackendError(f"ONNX Runtime could not load {label}: {exc}") from exc
