"""ONNX models that break (or survive) FP16, shared by the precision-debugger tests.

Every builder returns ``(model, feed, culprits)``: an opset-17 / IR-8 model with deterministic weights, a
deterministic float32 feed, and the names of the planted culprit nodes (the nodes whose *own* output leaves
the FP16 range). FP32 runs are finite; FP16 runs (``convert_precision(model, "fp16")``) give inf/NaN.
Each culprit is followed by 10+ healthy nodes, so "keep everything after the first bad layer in FP32"
is a much bigger plan than the minimal island (culprit + the norm/softmax right after it). The exception is
``detection_head_exp``, whose decoded boxes themselves leave the FP16 range, so most of its decoding must stay
FP32 too; ``dfl_detection_head`` is the detection head whose overflow stays local (a hand-written softmax).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Built = tuple[onnx.ModelProto, dict[str, np.ndarray], list[str]]


class _G:
    """Tiny graph builder: named nodes, float32 initializers."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def init(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, name: str, shape: tuple[int, ...], scale: float) -> str:
        return self.init(name, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def node(self, op: str, inputs: list[str], name: str, n_out: int = 1, **attrs: Any) -> str:
        outs = [name if n_out == 1 else f"{name}_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs[0]

    def linear(self, x: str, name: str, d_in: int, d_out: int, act: str | None = "Relu") -> str:
        w = self.weight(f"{name}.w", (d_in, d_out), 1.0 / np.sqrt(d_in))
        b = self.weight(f"{name}.b", (d_out,), 0.1)
        h = self.node("Add", [self.node("MatMul", [x, w], f"{name}_matmul"), b], f"{name}_add")
        return self.node(act, [h], f"{name}_{act.lower()}") if act else h

    def model(self, name: str, inputs: list[tuple[str, list[int]]], outputs: list[tuple[str, list[int]]]
              ) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
            initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="enginekit-tests")
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model


def _feed(name: str, shape: tuple[int, ...], seed: int) -> dict[str, np.ndarray]:
    return {name: np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    """The FP32 value of ``model``'s only output on ``feed`` (onnxruntime CPU), to calibrate weights."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, feed)[0])


def _ln(g: _G, x: str, name: str, d: int) -> str:
    scale = g.init(f"{name}.scale", np.ones(d, np.float32))
    bias = g.init(f"{name}.bias", np.zeros(d, np.float32))
    return g.node("LayerNormalization", [x, scale, bias], name, axis=-1, epsilon=1e-5)


def _tail(g: _G, x: str, d: int, d_out: int) -> str:
    """12 healthy nodes: three linear layers (MatMul, Add, act) and a residual + LayerNorm + Softmax."""
    h = g.linear(x, "tail1", d, d)
    h = g.linear(h, "tail2", d, d, act="Tanh")
    h = g.node("Add", [h, x], "tail_residual")
    h = _ln(g, h, "tail_ln", d)
    h = g.linear(h, "tail3", d, d_out, act=None)
    return g.node("Softmax", [h], "y", axis=-1)


def large_activation_before_norm() -> Built:
    """x[2,16,64] -> linear+Relu -> ``big_proj`` MatMul (outputs ~2e5) -> LayerNormalization -> healthy tail.

    The big weights stay below 65504 (no weight overflow); the MatMul's *output* does not. Culprit: big_proj.
    """
    g, d = _G(1), 64
    feed = _feed("x", (2, 16, d), 11)
    h = g.linear("x", "stem", d, d)
    # scale the projection so that its largest |output| on the feed is 2e5 (> 65504)
    w_in = numpy_helper.to_array(g.inits[0]); b_in = numpy_helper.to_array(g.inits[1])  # noqa: E702
    pre = np.maximum(feed["x"] @ w_in + b_in, 0)
    base = g.rng.standard_normal((d, d)).astype(np.float32)
    w = (base * (2e5 / np.abs(pre @ base).max())).astype(np.float32)
    big = g.node("MatMul", [h, g.init("big_proj.w", w)], "big_proj")
    normed = _ln(g, big, "norm", d)
    y = _tail(g, normed, d, 10)
    return g.model("large_activation_before_norm", [("x", [2, 16, d])], [(y, [2, 16, 10])]), feed, ["big_proj"]


def attention_logits_overflow() -> Built:
    """Single-head attention whose Q·Kᵀ logits reach ~2e5 before the 1/sqrt(d) scale -> Softmax.

    FP32: softmax is nearly one-hot but finite. FP16: logits overflow to inf, softmax gives NaN. Culprit: qk_matmul.
    """
    g, d, t = _G(2), 32, 8
    feed = _feed("x", (1, t, d), 12)
    x = _ln(g, "x", "pre_ln", d)
    q = g.node("MatMul", [x, g.weight("wq", (d, d), 1.0)], "q_proj")
    k = g.node("MatMul", [x, g.weight("wk", (d, d), 1.0)], "k_proj")
    v = g.node("MatMul", [x, g.weight("wv", (d, d), 1.0 / np.sqrt(d))], "v_proj")
    # rescale wq/wk so that max |q k^T| on the feed is 2e5 (q, k themselves stay ~1e2)
    xs = feed["x"] - feed["x"].mean(-1, keepdims=True)
    xs = xs / np.sqrt((xs**2).mean(-1, keepdims=True) + 1e-5)
    wq, wk = (numpy_helper.to_array(t_) for t_ in g.inits[2:4])
    s = np.sqrt(2e5 / np.abs((xs @ wq) @ (xs @ wk).transpose(0, 2, 1)).max())
    g.inits[2] = numpy_helper.from_array((wq * s).astype(np.float32), "wq")
    g.inits[3] = numpy_helper.from_array((wk * s).astype(np.float32), "wk")
    kt = g.node("Transpose", [k], "k_transpose", perm=[0, 2, 1])
    logits = g.node("MatMul", [q, kt], "qk_matmul")
    scaled = g.node("Mul", [logits, g.init("inv_sqrt_d", np.array(1.0 / np.sqrt(d), np.float32))], "qk_scale")
    attn = g.node("Softmax", [scaled], "attn_softmax", axis=-1)
    ctx = g.node("MatMul", [attn, v], "attn_context")
    out = g.node("MatMul", [ctx, g.weight("wo", (d, d), 1.0 / np.sqrt(d))], "o_proj")
    h = g.node("Add", [out, "x"], "attn_residual")
    y = _tail(g, h, d, 10)
    return g.model("attention_logits_overflow", [("x", [1, t, d])], [(y, [1, t, 10])]), feed, ["qk_matmul"]


def detection_head_exp() -> Built:
    """Conv backbone -> box head whose (dw, dh) are ~12 -> ``box_exp`` Exp (e^12 = 1.6e5) -> box decoding.

    FP32 boxes are finite; FP16 ``exp(dw)`` is inf, and the decoded boxes inf/NaN. Culprit: box_exp.
    """
    g, c, hw = _G(3), 8, 16
    feed = _feed("image", (1, 3, hw, hw), 13)
    h = g.node("Conv", ["image", g.weight("c1.w", (c, 3, 3, 3), 0.3), g.weight("c1.b", (c,), 0.1)], "conv1",
               pads=[1, 1, 1, 1])
    h = g.node("Relu", [h], "relu1")
    h = g.node("Conv", [h, g.weight("c2.w", (c, c, 3, 3), 0.15), g.weight("c2.b", (c,), 0.1)], "conv2",
               pads=[1, 1, 1, 1])
    feat = g.node("Relu", [h], "relu2")
    box_b = g.init("box.b", np.array([0.1, -0.1, 12.0, 11.5], np.float32))
    box = g.node("Conv", [feat, g.weight("box.w", (4, c, 1, 1), 0.01), box_b], "box_conv")
    cls = g.node("Conv", [feat, g.weight("cls.w", (3, c, 1, 1), 0.3), g.weight("cls.b", (3,), 0.1)], "cls_conv")
    scores = g.node("Sigmoid", [cls], "cls_sigmoid")
    split = g.init("split_sizes", np.array([2, 2], np.int64))
    g.node("Split", [box, split], "box_split", n_out=2, axis=1)
    dxy, dwh = "box_split_0", "box_split_1"
    wh = g.node("Exp", [dwh], "box_exp")
    anchor = g.init("anchor_wh", np.full((1, 2, 1, 1), 0.01, np.float32))
    wh = g.node("Mul", [wh, anchor], "wh_scale")
    cxy = g.node("Mul", [dxy, g.init("stride", np.array(8.0, np.float32))], "xy_scale")
    half = g.node("Mul", [wh, g.init("half", np.array(0.5, np.float32))], "wh_half")
    x1 = g.node("Sub", [cxy, half], "box_x1y1")
    x2 = g.node("Add", [cxy, half], "box_x2y2")
    boxes = g.node("Concat", [x1, x2], "box_concat", axis=1)
    boxes = g.node("Clip", [boxes, g.init("lo", np.array(-1e4, np.float32)), g.init("hi", np.array(1e4, np.float32))],
                   "box_clip")
    boxes = g.node("Transpose", [boxes], "box_transpose", perm=[0, 2, 3, 1])
    boxes = g.node("Reshape", [boxes, g.init("box_shape", np.array([1, -1, 4], np.int64))], "box_reshape")
    area = g.node("ReduceSum", [boxes, g.init("axes", np.array([2], np.int64))], "box_area", keepdims=1)
    boxes = g.node("Div", [boxes, g.node("Add", [g.node("Abs", [area], "area_abs"),
                                                 g.init("one", np.array(1.0, np.float32))], "area_eps")], "boxes")
    s = g.node("Transpose", [scores], "cls_transpose", perm=[0, 2, 3, 1])
    s = g.node("Reshape", [s, g.init("cls_shape", np.array([1, -1, 3], np.int64))], "scores")
    n = hw * hw
    model = g.model("detection_head_exp", [("image", [1, 3, hw, hw])], [(boxes, [1, n, 4]), (s, [1, n, 3])])
    return model, feed, ["box_exp"]


DFL_SOFTMAX_ISLAND = ("dfl_exp", "dfl_sum", "dfl_div")
"""The hand-written softmax of :func:`dfl_detection_head`: what must stay FP32, and nothing else."""


def dfl_detection_head() -> Built:
    """YOLOv8-style anchor-free head whose Distribution Focal Loss (DFL) softmax is written out by hand.

    image[1,3,64,64] in [0, 1] -> backbone (three stride-2 Conv+Relu, one Conv+Relu; 8x8 grid, stride 8) ->
    box branch (Conv+Relu, 1x1 Conv to 4 sides x 16 distance bins) and class branch (Conv+Relu, 1x1 Conv to
    4 classes) -> DFL: Reshape/Transpose to [1,16,4,64], ``dfl_exp`` Exp -> ``dfl_sum`` ReduceSum ->
    ``dfl_div`` Div (softmax without the max subtraction, as older exporters and hand-ported heads write it),
    expectation over the bins (1x1 Conv with weights 0..15) -> dist2bbox with anchor points and stride
    (xywh in pixels) -> boxes[1,64,4]. A GFLv2-style quality branch reads the distribution (top-4 bins
    and mean per side -> 1x1 Conv+Relu -> 1x1 Conv+Sigmoid) and scales the class Sigmoid -> scores[1,64,4].

    The bin logits carry a common offset (softmax is shift-invariant, so training leaves it free) and reach 16:
    e^16 = 8.9e6, so FP16 ``dfl_exp`` and the ReduceSum after it are inf and the Div gives NaN, while the
    distances, boxes (|x| < 200 px) and scores stay well inside FP16. Culprit: dfl_exp. The minimal island is
    :data:`DFL_SOFTMAX_ISLAND` (3 of 42 nodes), against the 26 nodes from the Exp to the end of the graph.
    """
    g, hw, stride, bins, n_cls = _G(5), 64, 8, 16, 4
    feed = {"image": np.random.default_rng(15).uniform(0.0, 1.0, (1, 3, hw, hw)).astype(np.float32)}

    def conv(x: str, name: str, c_in: int, c_out: int, k: int = 3, s: int = 1, act: bool = True) -> str:
        w = g.weight(f"{name}.w", (c_out, c_in, k, k), np.sqrt(2.0 / (c_in * k * k)))
        h = g.node("Conv", [x, w, g.weight(f"{name}.b", (c_out,), 0.05)], name, strides=[s, s],
                   pads=[k // 2] * 4)
        return g.node("Relu", [h], f"{name}_relu") if act else h

    h = conv("image", "stem", 3, 16, s=2)
    h = conv(h, "down1", 16, 32, s=2)
    h = conv(h, "down2", 32, 32, s=2)
    feat = conv(h, "neck", 32, 32)
    box_feat = conv(feat, "box_conv", 32, 32)
    cls_feat = conv(feat, "cls_conv", 32, 32)
    # bin logits, calibrated on the feed: spread (std) 2.5 around a common offset, largest logit exactly 16
    trunk = g.model("trunk", [("image", [1, 3, hw, hw])], [(box_feat, [1, 32, hw // stride, hw // stride])])
    f = _run(trunk, feed)
    w = g.rng.standard_normal((4 * bins, 32)).astype(np.float32)
    w *= 2.5 / np.einsum("oc,bchw->bohw", w, f).std()
    offset = 16.0 - float(np.einsum("oc,bchw->bohw", w, f).max())
    logits = g.node("Conv", [box_feat, g.init("box_pred.w", w[:, :, None, None]),
                             g.init("box_pred.b", np.full(4 * bins, offset, np.float32))], "box_pred")
    cls = g.node("Conv", [cls_feat, g.weight("cls_pred.w", (n_cls, 32, 1, 1), 0.6),
                          g.init("cls_pred.b", np.full(n_cls, -3.0, np.float32))], "cls_pred")
    # DFL (ultralytics: x.view(b, 4, 16, a).transpose(2, 1).softmax(1) -> 1x1 conv with arange(16))
    n = (hw // stride) ** 2
    x = g.node("Reshape", [logits, g.init("dfl_shape", np.array([1, 4, bins, n], np.int64))], "dfl_reshape")
    x = g.node("Transpose", [x], "dfl_transpose", perm=[0, 2, 1, 3])
    e = g.node("Exp", [x], "dfl_exp")
    total = g.node("ReduceSum", [e, g.init("bin_axis", np.array([1], np.int64))], "dfl_sum", keepdims=1)
    prob = g.node("Div", [e, total], "dfl_div")
    bins_w = g.init("dfl_proj.w", np.arange(bins, dtype=np.float32).reshape(1, bins, 1, 1))
    dist = g.node("Conv", [prob, bins_w], "dfl_proj")
    dist = g.node("Reshape", [dist, g.init("dist_shape", np.array([1, 4, n], np.int64))], "dist_reshape")
    # dist2bbox (xywh) with anchor points at cell centres, then the stride
    g.node("Split", [dist, g.init("lt_rb", np.array([2, 2], np.int64))], "dist_split", n_out=2, axis=1)
    ys, xs = np.meshgrid(np.arange(hw // stride), np.arange(hw // stride), indexing="ij")
    anchors = g.init("anchors", (np.stack([xs.ravel(), ys.ravel()])[None] + 0.5).astype(np.float32))
    x1y1 = g.node("Sub", [anchors, "dist_split_0"], "box_x1y1")
    x2y2 = g.node("Add", [anchors, "dist_split_1"], "box_x2y2")
    cxy = g.node("Mul", [g.node("Add", [x1y1, x2y2], "box_xy_sum"), g.init("half", np.array(0.5, np.float32))],
                 "box_cxy")
    wh = g.node("Sub", [x2y2, x1y1], "box_wh")
    box = g.node("Concat", [cxy, wh], "box_xywh", axis=1)
    box = g.node("Mul", [box, g.init("stride", np.array(float(stride), np.float32))], "box_stride")
    boxes = g.node("Transpose", [box], "boxes", perm=[0, 2, 1])
    # GFLv2 distribution-guided quality: top-4 probabilities and their mean per side -> 2 1x1 convs -> sigmoid
    g.node("TopK", [prob, g.init("k", np.array([4], np.int64))], "dgqp_topk", n_out=2, axis=1)
    mean = g.node("ReduceMean", ["dgqp_topk_0"], "dgqp_mean", axes=[1], keepdims=1)
    stat = g.node("Concat", ["dgqp_topk_0", mean], "dgqp_stat", axis=1)
    side = hw // stride
    stat = g.node("Reshape", [stat, g.init("stat_shape", np.array([1, 20, side, side], np.int64))], "dgqp_reshape")
    q = conv(stat, "dgqp_fc1", 20, 32, k=1)
    q = g.node("Conv", [q, g.weight("dgqp_fc2.w", (1, 32, 1, 1), 0.5),
                        g.init("dgqp_fc2.b", np.full(1, 2.0, np.float32))], "dgqp_fc2")
    quality = g.node("Sigmoid", [q], "dgqp_sigmoid")
    s = g.node("Mul", [g.node("Sigmoid", [cls], "cls_sigmoid"), quality], "score_quality")
    s = g.node("Reshape", [s, g.init("score_shape", np.array([1, n_cls, n], np.int64))], "score_reshape")
    scores = g.node("Transpose", [s], "scores", perm=[0, 2, 1])
    model = g.model("dfl_detection_head", [("image", [1, 3, hw, hw])], [(boxes, [1, n, 4]), (scores, [1, n, n_cls])])
    return model, feed, ["dfl_exp"]


def healthy_mlp() -> Built:
    """x[4,64] -> five linear layers (small weights) -> LayerNorm -> Softmax: survives FP16. No culprits."""
    g, d = _G(4), 64
    h = _ln(g, "x", "in_ln", d)
    for i in range(5):
        h = g.linear(h, f"fc{i}", d, d, act="Relu" if i % 2 == 0 else "Tanh")
    y = _tail(g, h, d, 10)
    return g.model("healthy_mlp", [("x", [4, d])], [(y, [4, 10])]), _feed("x", (4, d), 14), []


ALL_BUILDERS = (large_activation_before_norm, attention_logits_overflow, detection_head_exp, dfl_detection_head,
                healthy_mlp)
