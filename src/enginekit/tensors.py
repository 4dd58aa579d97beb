"""Core tensor types shared by every layer: TensorSpec and dtype names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

Dim = int | str  # a fixed size, or a symbolic name ("batch"); "?" when the model names none
Feed = Mapping[str, np.ndarray]

# ONNX TensorProto element type -> numpy dtype name (only types a feed can hold).
ONNX_TO_NUMPY: dict[int, str] = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
}
ONNX_TYPE_NAMES: dict[int, str] = {
    **ONNX_TO_NUMPY,
    8: "string",
    14: "complex64",
    15: "complex128",
    16: "bfloat16",
    17: "float8e4m3fn",
    18: "float8e4m3fnuz",
    19: "float8e5m2",
    20: "float8e5m2fnuz",
    21: "uint4",
    22: "int4",
}
NUMPY_TO_ONNX: dict[str, int] = {name: t for t, name in ONNX_TYPE_NAMES.items()}
# The ONNX float element types (float32, float16, bfloat16, float64) and their numpy dtype names.
ONNX_FLOAT_TYPES: dict[int, str] = {t: ONNX_TYPE_NAMES[t] for t in (1, 10, 16, 11)}
# Float precision names (--precision) -> numpy dtype name of the values they compute in.
PRECISION_DTYPES: dict[str, str] = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "fp64": "float64"}
DTYPE_ALIASES: dict[str, str] = {
    "fp32": "float32",
    "float": "float32",
    "f32": "float32",
    "fp16": "float16",
    "half": "float16",
    "f16": "float16",
    "fp64": "float64",
    "double": "float64",
    "f64": "float64",
    "int": "int64",
    "long": "int64",
    "i64": "int64",
    "i32": "int32",
    "i8": "int8",
    "u8": "uint8",
}


def onnx_type_name(elem_type: int) -> str:
    """numpy-style name of an ONNX element type ("float32", "bfloat16"); for a type the table above lacks, onnx's
    own name in lower case ("float4e2m1"), else "onnx-type-N"."""
    name = ONNX_TYPE_NAMES.get(elem_type)
    if name is not None:
        return name
    if elem_type:
        import onnx

        try:
            return str(onnx.TensorProto.DataType.Name(elem_type)).lower()
        except ValueError:
            pass
    return f"onnx-type-{elem_type}"


def onnx_type_str(elem_type: int) -> str:
    """The type string of ONNX operator schemas for a tensor of ``elem_type`` ("tensor(float)", "tensor(double)")."""
    import onnx

    return f"tensor({onnx.TensorProto.DataType.Name(elem_type).lower()})"


def normalize_dtype(name: str) -> str | None:
    """Canonical numpy dtype name for a user-written dtype, or None when unknown."""
    key = name.strip().lower()
    key = DTYPE_ALIASES.get(key, key)
    return key if key in ONNX_TO_NUMPY.values() else None


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (ints or symbolic names) and numpy dtype name of a model input or output."""

    name: str
    shape: tuple[Dim, ...] | None  # None: rank unknown
    dtype: str

    @property
    def is_dynamic(self) -> bool:
        return self.shape is None or any(not isinstance(d, int) for d in self.shape)

    def symbolic_dims(self) -> list[tuple[int, str]]:
        """(axis, name) for every dim that is not a fixed size."""
        if self.shape is None:
            return []
        return [(i, str(d)) for i, d in enumerate(self.shape) if not isinstance(d, int)]

    def shape_str(self) -> str:
        if self.shape is None:
            return "[unknown rank]"
        return "[" + ", ".join(str(d) for d in self.shape) + "]"

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "shape": None if self.shape is None else list(self.shape), "dtype": self.dtype}


def shape_matches(spec: TensorSpec, shape: tuple[int, ...]) -> bool:
    """True when a concrete ``shape`` is allowed by ``spec`` (same rank, equal fixed dims)."""
    if spec.shape is None:
        return True
    if len(spec.shape) != len(shape):
        return False
    return all(not isinstance(d, int) or d == s for d, s in zip(spec.shape, shape, strict=True))


def describe_array(arr: np.ndarray) -> str:
    return f"shape {tuple(arr.shape)} dtype {arr.dtype}"
