"""`export_model(settings)`: dispatch on the kind of source (PyTorch or Paddle)."""

from __future__ import annotations

from enginekit.errors import InvalidArgumentError
from enginekit.export.verify import ExportResult
from enginekit.settings import ExportSettings
from enginekit.sources.detect import ONNX, PADDLE, detect_source


def export_model(settings: ExportSettings) -> ExportResult:
    """Export SOURCE to ONNX and verify it against the source (raises VerificationError on mismatch)."""
    if settings.output.suffix.lower() != ".onnx":
        raise InvalidArgumentError(f"-o {str(settings.output)!r}: the output must be a .onnx file name.")
    src = detect_source(settings.source)
    if src.kind == ONNX:
        raise InvalidArgumentError(f"{settings.source!r} is already ONNX; use `enginekit prepare` to transform it.")
    if src.kind == PADDLE:
        from enginekit.export.paddle import export_paddle

        return export_paddle(settings)
    from enginekit.export.torch2onnx import export_torch

    return export_torch(settings, src)
