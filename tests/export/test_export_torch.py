"""PyTorch export: real architectures, both exporters, automatic verification that catches tracing bugs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from enginekit.data import ValueRange
from enginekit.errors import InvalidArgumentError, ModelLoadError, UnknownNameError, VerificationError
from enginekit.export.api import export_model
from enginekit.export.shapes import parse_dynamic
from enginekit.settings import ExportSettings

torch = pytest.importorskip("torch")
MODELS = str(Path(__file__).with_name("models_for_export.py"))


def _dims(model: onnx.ModelProto, which: str = "input") -> dict[str, list[object]]:
    values = model.graph.input if which == "input" else model.graph.output
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def test_convnet_dynamic_batch_dynamo(tmp_path: Path) -> None:
    out = tmp_path / "conv.onnx"
    result = export_model(ExportSettings(source=f"{MODELS}:convnet", output=out, inputs=("x:batch,3,16,16",)))
    assert result.exporter == "dynamo" and result.verified is True
    assert result.opset_produced == 18  # auto opset for onnxruntime
    assert [c.shapes["x"][0] for c in result.cases] == [2, 2, 4, 4]  # traced and another batch, two seeds each
    model = onnx.load(str(out))
    assert _dims(model) == {"x": ["batch", 3, 16, 16]}
    assert _dims(model, "output")["output"][0] == "batch"


def test_transformer_encoder_with_dynamic_sequence(tmp_path: Path) -> None:
    out = tmp_path / "enc.onnx"
    result = export_model(ExportSettings(
        source=f"{MODELS}:encoder", output=out, inputs=("ids:batch,seq:int64", "mask:batch,seq:int64"),
        dynamic=(parse_dynamic("ids:1=seq[2..64]"),), output_names=("scores",),
        val_ranges=(ValueRange("ids", 0, 49), ValueRange("mask", 1, 1)),
    ))
    assert result.verified is True
    model = onnx.load(str(out))
    assert _dims(model) == {"ids": ["batch", "seq"], "mask": ["batch", "seq"]}
    assert [o.name for o in model.graph.output] == ["scores"]
    ops = {n.op_type for n in model.graph.node}
    assert "LayerNormalization" in ops  # opset 18: native LayerNorm
    # the other shape really changed the sequence length
    assert {tuple(c.shapes["ids"]) for c in result.cases} == {(2, 2), (4, 4)}


def test_tensorrt_85_target_avoids_layernormalization(tmp_path: Path) -> None:
    """TensorRT 8.5 cannot parse LayerNormalization (opset 17): auto opset 16, LayerNorm decomposed."""
    out = tmp_path / "enc85.onnx"
    result = export_model(ExportSettings(
        source=f"{MODELS}:encoder", output=out, inputs=("ids:2x6:int64", "mask:2x6:int64"),
        target="tensorrt==8.5", val_ranges=(ValueRange("ids", 0, 49), ValueRange("mask", 1, 1)),
    ))
    assert result.opset_produced == 16 and result.exporter == "torchscript"
    assert any("falling back" in n for n in result.notes)
    assert "LayerNormalization" not in {n.op_type for n in onnx.load(str(out)).graph.node}
    assert result.verified is True


def test_data_dependent_branch_is_caught_by_verification(tmp_path: Path) -> None:
    out = tmp_path / "branchy.onnx"
    with pytest.raises(VerificationError, match="does not match") as err:
        export_model(ExportSettings(source=f"{MODELS}:branchy", output=out, inputs=("x:2x4",),
                                    dynamic=(parse_dynamic("x:0=batch[1..8]"),)))
    assert "seed 2" in err.value.message  # the second feed took the other branch
    assert not out.exists() and (tmp_path / "branchy.failed.onnx").is_file()
    # --no-verify writes it (and says nothing about correctness)
    result = export_model(ExportSettings(source=f"{MODELS}:branchy", output=out, inputs=("x:2x4",), verify=False))
    assert result.verified is None and out.is_file()


def test_torchscript_baked_reshape_is_caught(tmp_path: Path) -> None:
    """The TorchScript exporter bakes the traced batch into nn.MultiheadAttention's reshape; onnxruntime then
    fails at another batch size, and verification reports it instead of shipping the model."""
    with pytest.raises(VerificationError, match="fails in onnxruntime at other shape"):
        export_model(ExportSettings(
            source=f"{MODELS}:encoder", output=tmp_path / "e.onnx", inputs=("ids:batch,seq:int64",
                                                                              "mask:batch,seq:int64"),
            exporter="torchscript", val_ranges=(ValueRange("ids", 0, 49), ValueRange("mask", 1, 1)),
        ))


def test_dict_outputs_and_weights_and_torchscript_and_pt2_sources(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("mfe", MODELS)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    trained = mod.two_heads()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)  # different from the factory's initial weights
    weights = tmp_path / "w.pt"
    torch.save(trained.state_dict(), weights)
    x = torch.rand(3, 4)
    expected = trained(x)

    r = export_model(ExportSettings(source=f"{MODELS}:two_heads", output=tmp_path / "a.onnx",
                                    inputs=("x:batch,4",), weights=weights, output_names=("logits", "boxes")))
    assert r.verified and [o.name for o in r.outputs] == ["logits", "boxes"]
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "a.onnx"))
    got = sess.run(None, {"x": x.numpy()})
    np.testing.assert_allclose(got[0], expected["logits"].detach().numpy(), atol=1e-5)

    scripted = tmp_path / "m.pt"
    torch.jit.save(torch.jit.trace(mod.convnet().eval(), torch.rand(1, 3, 8, 8)), scripted)
    r2 = export_model(ExportSettings(source=str(scripted), output=tmp_path / "ts.onnx", inputs=("x:1x3x8x8",)))
    assert r2.exporter == "torchscript" and r2.verified

    program = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(mod.convnet().eval(), (torch.rand(2, 3, 8, 8),)), program)
    r3 = export_model(ExportSettings(source=str(program), output=tmp_path / "ep.onnx", inputs=("x:2x3x8x8",)))
    assert r3.verified


def test_bad_sources_and_arguments(tmp_path: Path) -> None:
    out = tmp_path / "o.onnx"
    with pytest.raises(ModelLoadError, match="not a torch.nn.Module"):
        export_model(ExportSettings(source=f"{MODELS}:not_a_module", output=out, inputs=("x:1x4",)))
    with pytest.raises(ModelLoadError, match="not a callable"):
        export_model(ExportSettings(source=f"{MODELS}:missing", output=out, inputs=("x:1x4",)))
    with pytest.raises(ModelLoadError, match="does not exist"):
        export_model(ExportSettings(source="nowhere.py:f", output=out, inputs=("x:1x4",)))
    with pytest.raises(ModelLoadError, match="failed on example inputs"):
        export_model(ExportSettings(source=f"{MODELS}:convnet", output=out, inputs=("x:1x4",)))
    with pytest.raises(InvalidArgumentError, match="--input"):
        export_model(ExportSettings(source=f"{MODELS}:convnet", output=out))
    with pytest.raises(InvalidArgumentError, match="output-names gives 1"):
        export_model(ExportSettings(source=f"{MODELS}:two_heads", output=out, inputs=("x:1x4",),
                                    output_names=("a",)))
    bad_weights = tmp_path / "bad.pt"
    torch.save({"nope": torch.zeros(1)}, bad_weights)
    with pytest.raises(ModelLoadError, match="does not match the model"):
        export_model(ExportSettings(source=f"{MODELS}:two_heads", output=out, inputs=("x:1x4",),
                                    weights=bad_weights))
    with pytest.raises(UnknownNameError, match="not in the support table"):
        export_model(ExportSettings(source=f"{MODELS}:convnet", output=out, inputs=("x:1x3x8x8",),
                                    target="tensorrt==7"))
    assert not out.exists()


def test_cli_export_json(tmp_path: Path) -> None:
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("enginekit")
    out = tmp_path / "c.onnx"
    res = subprocess.run([str(exe), "export", f"{MODELS}:convnet", "-o", str(out), "--input", "x:batch,3,8,8",
                          "--json"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["verified"] is True and doc["inputs"][0]["shape"] == ["batch", 3, 8, 8]
    bad = subprocess.run([str(exe), "export", f"{MODELS}:branchy", "-o", str(tmp_path / "b.onnx"), "--input",
                          "x:2x4", "--dynamic", "x:0=batch[1..8]"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "does not match" in bad.stderr and "Traceback" not in bad.stderr


def test_large_models_are_written_with_external_data(tmp_path: Path) -> None:
    """Above the size limit (2 GB; lowered here) the weights go to NAME.onnx.data beside the model."""
    out = tmp_path / "big.onnx"
    result = export_model(ExportSettings(source=f"{MODELS}:convnet", output=out, inputs=("x:1x3x8x8",),
                                         external_data_threshold=1000))
    assert result.external_data is True and (tmp_path / "big.onnx.data").is_file()
    assert out.stat().st_size < 20_000  # the graph only
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out))
    assert sess.run(None, {"x": np.zeros((1, 3, 8, 8), np.float32)})[0].shape == (1, 5)
