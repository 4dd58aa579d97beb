"""The precision debugger on a real trained model from PyPI that survives FP16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from enginekit.compare import CompareSettings, Tolerances
from enginekit.debug.fix import find_fp32_islands, range_analysis_initial
from enginekit.debug.ranges import analyze_ranges


def test_paddleocr_classifier_survives_fp16_with_an_empty_plan(ocr_cls_model: Path) -> None:
    model = onnx.load(str(ocr_cls_model))
    feed = {"x": np.random.default_rng(0).uniform(0, 1, (1, 3, 48, 192)).astype(np.float32)}
    assert analyze_ranges(model, feed, precision="fp16").risky == []
    assert range_analysis_initial(model, [feed], "fp16") == []
    # Softmax probabilities after ~50 fp16 layers differ by ~5e-3: fine at the usual 1e-2 fp16 tolerance,
    # though beyond enginekit's stricter default of 4 epsilons (which then keeps one Conv in FP32).
    loose = CompareSettings(atol=Tolerances(1e-2), rtol=Tolerances(1e-2))
    result = find_fp32_islands(model, [feed], "fp16", compare=loose)
    assert result.passed and result.kept == 0 and result.evaluations == 1
    assert result.before.nonfinite == 0 and result.before.max_abs_err < 1e-2


def test_observed_pass_stays_under_a_memory_budget() -> None:
    """40 intermediate tensors of 1 MiB each (40 MiB in all) observed within an 8 MiB budget."""
    from onnx import TensorProto, helper

    from enginekit.debug.observe import observe

    n, size = 40, 1 << 18  # float32 elements per tensor: 1 MiB
    nodes, prev = [], "x"
    for i in range(n):
        nodes.append(helper.make_node("Relu" if i % 2 else "Neg", [prev], [f"t{i}"], name=f"n{i}"))
        prev = f"t{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, size])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, size])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feed = {"x": np.random.default_rng(0).standard_normal((1, size)).astype(np.float32)}
    budget = 8 << 20
    total = n * size * 4
    assert total > budget
    chunk = budget // (size * 4)  # tensors that fit in the budget at once
    obs = observe(model, feed, chunk_size=chunk)
    assert len(obs) >= n - 1 and obs.chunks >= 5 and 0 < obs.peak_arrays * size * 4 <= budget
    assert obs["t0"].max_abs == float(np.abs(feed["x"]).max())
