"""TensorRT and TensorRT-RTX: one backend for both libraries, differences decided by capability in lib.py."""
