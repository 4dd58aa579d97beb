"""ONNX graph utilities: loading with safety checks, IO specs, inspection."""
