"""Saving exported models (atomically; external data above the protobuf limit) and running them in ORT."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from enginekit.fileutil import atomic_write_bytes


def opset_of(proto: Any) -> int:
    return int(next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0))


def model_bytes(proto: Any) -> int:
    from enginekit.graph.load import model_tensors, tensor_nbytes

    return sum(tensor_nbytes(ref.tensor) or 0 for ref in model_tensors(proto))


def save_onnx(proto: Any, path: Path, threshold: int) -> bool:
    """Write ``proto`` to ``path``; above ``threshold`` bytes of weights, as external data beside it.

    Returns True when external data was written (``NAME.onnx.data`` next to the model).
    """
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    if model_bytes(proto) <= threshold:
        atomic_write_bytes(path, proto.SerializeToString())
        return False
    location = path.name + ".data"
    (path.parent / location).unlink(missing_ok=True)
    onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=1024)
    return True


def run_onnx_factory(proto: Any) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """An onnxruntime CPU session over ``proto``; outputs by name."""
    from enginekit.errors import VerificationError
    from enginekit.ortsession import ort_session

    try:  # failures come back as exceptions; onnxruntime does not also print them
        session = ort_session(proto.SerializeToString(), purpose="verifying exported models", log_severity=4,
                              default_logger_severity=4)
    except Exception as exc:  # noqa: BLE001 - an exported model ORT cannot load failed verification
        text = " ".join(str(exc).split())
        raise VerificationError(f"The exported ONNX does not load in onnxruntime: {text}") from exc
    names = [o.name for o in session.get_outputs()]

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, feed), strict=True))

    return run
