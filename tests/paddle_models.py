"""Real Paddle architectures saved for the tests (random weights; nothing is downloaded)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest


def save_resnet18(prefix: Path, *, seed: int = 0, legacy: bool = False) -> Path:
    """paddle.vision ResNet-18 (random init, eval mode) saved with a dynamic batch at 64x64.

    ``legacy`` saves the old-IR format (.pdmodel) instead of PIR (.json)."""
    paddle = pytest.importorskip("paddle")
    from paddle.static import InputSpec

    paddle.seed(seed)
    model = paddle.vision.models.resnet18(pretrained=False)
    model.eval()
    spec = [InputSpec([None, 3, 64, 64], "float32", "x")]
    if legacy:
        with paddle.pir_utils.DygraphOldIrGuard(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # old-IR tracing warns about A + B
            paddle.jit.save(model, str(prefix), input_spec=spec)
    else:
        paddle.jit.save(model, str(prefix), input_spec=spec)
    return prefix
