from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fp16_models import (  # type: ignore[import-not-found, unused-ignore]
    Built,
    attention_logits_overflow,
    detection_head_exp,
    dfl_detection_head,
    healthy_mlp,
    large_activation_before_norm,
)

from enginekit.debug import layerwise_diff, plot_error_growth


@pytest.mark.parametrize("build", [large_activation_before_norm, attention_logits_overflow, detection_head_exp,
                                   dfl_detection_head])
def test_first_bad_tensor_is_the_culprit(build: Callable[[], Built], tmp_path: Path) -> None:
    model, feed, culprits = build()
    result = layerwise_diff(model, feed, precision="fp16", chunk_size=8)
    assert result.first_bad is not None and result.first_bad.node in culprits, result.to_dict()["first_bad"]
    assert result.first_bad.inf_candidate > 0
    before = result.rows[: result.rows.index(result.first_bad)]
    assert all(r.passed for r in before) and len(before) >= 3
    assert result.to_dict()["first_bad"]["node"] == result.first_bad.node
    png = plot_error_growth(result, tmp_path / "growth.png")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_healthy_mlp_passes_fp16() -> None:  # bf16: onnxruntime CPU has no bf16 MatMul kernel
    model, feed, _ = healthy_mlp()
    result = layerwise_diff(model, feed, precision="fp16")
    assert result.passed, result.to_dict()["rows"]
    assert len(result.rows) == len(model.graph.node) and not result.skipped
