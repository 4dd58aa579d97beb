"""Framework model → ONNX, verified against the source (PyTorch: torch2onnx, Paddle: paddle)."""
