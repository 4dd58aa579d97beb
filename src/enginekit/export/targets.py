"""Export targets and the opset each one reads.

TensorRT's ONNX parser before 8.6 cannot import LayerNormalization (an opset-17 op), so the automatic
opset for ``tensorrt==8.5`` is 16; the exporter then decomposes LayerNorm into primitive ops.
"""

from __future__ import annotations

from dataclasses import dataclass

from enginekit.errors import InvalidArgumentError
from enginekit.registry import suggest


@dataclass(frozen=True)
class Target:
    name: str  # tensorrt, tensorrt-rtx, ort, openvino
    version: str | None  # "8.5", "10", ... for tensorrt
    opset: int  # the opset `--opset auto` picks
    max_opset: int  # the highest opset its importer reads

    @property
    def label(self) -> str:
        return self.name if self.version is None else f"{self.name}=={self.version}"


# name or name==version -> (auto opset, max opset read). The dynamo exporter writes opset 18 natively
# and converts down with onnx's version converter, which has gaps; 18 is read by every target but
# TensorRT 8.x, whose parsers stop at 17 (and 8.5 cannot import LayerNormalization, an opset-17 op).
TARGETS: dict[str, tuple[int, int]] = {
    "tensorrt==8.5": (16, 17),
    "tensorrt==8.6": (17, 17),
    "tensorrt==10": (18, 20),
    "tensorrt==11": (18, 20),
    "tensorrt": (18, 20),
    "tensorrt-rtx": (18, 20),
    "ort": (18, 21),
    "openvino": (18, 21),
}


def parse_target(text: str) -> Target:
    key = text.strip().lower().replace("_", "-")
    if key.startswith("tensorrt==") and key.count(".") > 1:  # tensorrt==10.3.0 -> tensorrt==10 family
        major = key.split("==")[1].split(".")[0]
        key = f"tensorrt=={major}" if major != "8" else "tensorrt==" + ".".join(key.split("==")[1].split(".")[:2])
    if key not in TARGETS:
        raise InvalidArgumentError(
            f"Unknown target {text!r}{suggest(key, list(TARGETS))} Targets: {', '.join(TARGETS)}."
        )
    name, _, version = key.partition("==")
    opset, max_opset = TARGETS[key]
    return Target(name, version or None, opset, max_opset)
