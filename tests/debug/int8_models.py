"""ONNX models that break INT8 Q/DQ quantization the way real ones do, for the precision-debugger tests.

Every builder returns ``(model, feed, culprits)`` like :mod:`fp16_models`: the culprit is the quantizable
node (MatMul) whose input loses its resolution in INT8. Each is followed by several healthy quantizable
layers, so "everything after the first bad layer" is a much bigger plan than the culprit alone.

* ``activation_outlier_channel``: one hidden channel is ~2000x the others (the "outlier features" of large
  transformers, or an un-folded normalization scale); the next MatMul's per-tensor activation scale is set
  by it and every other channel rounds to zero. The FP32 model is fine: that channel's weights are tiny.
* ``weight_outlier_per_channel``: in every output column of one MatMul's weight, one entry is 400x the
  others (and multiplies a nearly silent input feature); per-channel weight scales are set by it and the
  other weights of the column round to zero.
"""

from __future__ import annotations

import numpy as np
import onnx
from fp16_models import _G

Built = tuple[onnx.ModelProto, dict[str, np.ndarray], list[str]]
D = 64


def _feed(seed: int, batch: int = 32) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((batch, 32)).astype(np.float32)}


def _tail(g: _G, h: str, layers: int = 6) -> str:
    for i in range(layers):
        h = g.linear(h, f"tail{i}", D, D)
    return g.linear(h, "head", D, 10, act=None)


def activation_outlier_channel(seed: int = 0) -> Built:
    g = _G(seed)
    h = g.linear("x", "fc1", 32, D)
    h = g.linear(h, "fc2", D, D)
    scale = np.ones(D, np.float32)
    scale[0] = 2000.0
    h = g.node("Mul", [h, g.init("outlier.scale", scale)], "outlier_scale")
    w = (g.rng.standard_normal((D, D)) / np.sqrt(D)).astype(np.float32)
    w[0, :] /= 2000.0  # the outlier channel barely matters in FP32
    mixed = g.node("MatMul", [h, g.init("mix.w", w)], "mix_matmul")
    h = g.node("Relu", [g.node("Add", [mixed, g.weight("mix.b", (D,), 0.1)], "mix_add")], "mix_relu")
    y = _tail(g, h)
    model = g.model("activation_outlier_channel", [("x", ["batch", 32])], [(y, ["batch", 10])])
    return model, _feed(seed + 100), ["mix_matmul"]


def weight_outlier_per_channel(seed: int = 0) -> Built:
    g = _G(seed)
    h = g.linear("x", "fc1", 32, D)
    h = g.linear(h, "fc2", D, D)
    scale = np.ones(D, np.float32)
    scale[5] = 0.005  # a nearly silent feature (e.g. a dead or heavily normalized channel)
    h = g.node("Mul", [h, g.init("quiet.scale", scale)], "quiet_scale")
    w = (g.rng.standard_normal((D, D)) / np.sqrt(D)).astype(np.float32)
    w[5, :] = 400.0 * np.abs(w).mean()  # one huge weight per output column, on the silent feature
    mixed = g.node("MatMul", [h, g.init("mix.w", w)], "mix_matmul")
    h = g.node("Relu", [g.node("Add", [mixed, g.weight("mix.b", (D,), 0.1)], "mix_add")], "mix_relu")
    y = _tail(g, h)
    model = g.model("weight_outlier_per_channel", [("x", ["batch", 32])], [(y, ["batch", 10])])
    return model, _feed(seed + 200), ["mix_matmul"]


def calibration(seed: int = 7, count: int = 4) -> list[dict[str, np.ndarray]]:
    """Calibration feeds from the same distribution as the test feeds, other samples."""
    return [_feed(seed + i) for i in range(count)]
