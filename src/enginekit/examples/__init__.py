"""Bundled example models with their trained artifacts, used by docs, tests and demos.

Each example is a subpackage that ships small files (ONNX model, state dict, test split,
metadata) next to its code; importing a subpackage never imports torch.
"""
