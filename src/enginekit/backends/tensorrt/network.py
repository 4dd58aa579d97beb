"""Parsing ONNX into a TensorRT network, reading it back (IO, layer types), per-layer constraints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from enginekit.backends.tensorrt.lib import TrtLibrary
from enginekit.errors import BuildError


def parse_network(builder: Any, lib: TrtLibrary, model: Path, logger: Any) -> tuple[Any, Any]:
    """Parse with the library's own ONNX parser; errors name the nodes and carry enginekit's lint advice."""
    trt = lib.module
    flags = 0
    if lib.weak_typing and "STRONGLY_TYPED" in trt.NetworkDefinitionCreationFlag.__members__ and _is_lowp_onnx(model):
        # a model converted to fp16/bf16/Q-DQ by enginekit keeps its types on weak-typing TensorRT too
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(model)):
        return network, parser
    issues = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        node = e.node_name() or f"node #{e.node()}"
        issues.append(f"{node} ({e.node_operator()}): {e.desc()}")
    advice = _lint_advice(model, lib)
    raise BuildError(
        f"{lib.name} {lib.version} could not parse {str(model)!r}:\n  " + "\n  ".join(issues or ["(no details)"])
        + (f"\nLint: {advice}" if advice else ""),
        hint="Run `enginekit lint MODEL --target " + lib.backend + "` for every finding, and `enginekit prepare` "
        "for INT64 weights and simplification; for LayerNormalization on old TensorRT, export with a lower opset.",
    )


def _is_lowp_onnx(model: Path) -> bool:
    return any(tag in model.name for tag in (".fp16.", ".bf16.", ".qdq."))


def _lint_advice(model: Path, lib: TrtLibrary) -> str:
    """The error findings of `enginekit lint` for this target, one line each (empty when lint itself fails)."""
    try:
        from enginekit.graph.lint import lint_model
        from enginekit.settings import LintSettings

        result = lint_model(model, LintSettings(target=lib.backend, parse=False))
    except Exception:  # noqa: BLE001 - advice is best effort on top of the parser's own errors
        return ""
    return " | ".join(f"{f.message} → {f.fix}" for f in result.findings if f.severity == "error")[:1500]


def network_info(network: Any) -> dict[str, Any]:
    """Inputs, outputs (names, shapes with -1 for dynamic dims, dtypes) and layer output types."""
    def tensor(t: Any) -> dict[str, Any]:
        return {"name": t.name, "shape": [int(d) for d in t.shape], "dtype": _dtype_name(t.dtype)}

    layers = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        layers[layer.name] = [_dtype_name(layer.get_output(j).dtype) for j in range(layer.num_outputs)]
    return {
        "inputs": [tensor(network.get_input(i)) for i in range(network.num_inputs)],
        "outputs": [tensor(network.get_output(i)) for i in range(network.num_outputs)],
        "num_layers": network.num_layers,
        "layer_output_types": layers,
    }


def _dtype_name(dtype: Any) -> str:
    return {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "INT32": "int32",
            "INT64": "int64", "BOOL": "bool", "UINT8": "uint8", "FP8": "float8"}.get(str(dtype).rsplit(".", 1)[-1],
                                                                                      str(dtype))


def layers_for_node(network: Any, node: str) -> list[Any]:
    """Layers the ONNX parser made from ONNX node ``node`` (by name or the parser's metadata tag)."""
    found = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        meta = getattr(layer, "metadata", "") or ""
        if layer.name == node or layer.name.startswith(node + "_") or f"[ONNX Layer: {node}]" in meta:
            found.append(layer)
    return found


def apply_layer_constraints(network: Any, plan: Any, trt: Any) -> list[str]:
    """Weak typing: pin the plan's nodes to FP32 (layer precision and output types)."""
    pinned = []
    for entry in plan.keep_fp32:
        for layer in layers_for_node(network, entry.node):
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                if layer.get_output_type(j) in (trt.float16, getattr(trt, "bfloat16", trt.float16)):
                    layer.set_output_type(j, trt.float32)
            pinned.append(layer.name)
    return pinned
