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
from enginekit.settings import ExportSettings
from enginekit.sources.shapes import parse_dynamic

torch = pytest.importorskip("torch")
MODELS = str(Path(__file__).with_name("models_for_export.py"))


def _line(code: str) -> str:
    """``models_for_export.py:N `code``` for the line of the test models that holds ``code``."""
    lines = Path(MODELS).read_text().splitlines()
    n = next(i for i, ln in enumerate(lines, 1) if ln.strip() == code)
    return f"models_for_export.py:{n} `{code}`"


def _dims(model: onnx.ModelProto, which: str = "input") -> dict[str, list[object]]:
    values = model.graph.input if which == "input" else model.graph.output
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def test_convnet_dynamic_batch_dynamo(tmp_path: Path) -> None:
    out = tmp_path / "conv.onnx"
    result = export_model(ExportSettings(source=f"{MODELS}:convnet", output=out, inputs=("x:batch,3,16,16",)))
    assert result.exporter == "dynamo" and result.verified is True
    assert result.opset_produced == 18  # auto opset for onnxruntime
    # traced and another batch: two seeds each, the first negated; the traced batch also N(0,1) at three scales
    assert [(c.label, c.shapes["x"][0]) for c in result.cases] == [
        ("trace shape, seed 1", 2), ("trace shape, seed 2", 2), ("trace shape, seed 1 negated", 2),
        ("trace shape, N(0,1)", 2), ("trace shape, N(0,1) x100", 2), ("trace shape, N(0,1) x0.01", 2),
        ("other shape, seed 1", 4), ("other shape, seed 2", 4), ("other shape, seed 1 negated", 4)]
    assert result.cases[2].values["x"][1] <= 0 < result.cases[0].values["x"][0]  # negated: all <= 0
    assert result.cases[4].values["x"][1] > 50 and result.cases[5].values["x"][1] < 0.1  # x100, x0.01
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
    assert _line("if x.mean() > 0.5:") in err.value.message  # and the tracer said where
    assert not out.exists() and (tmp_path / "branchy.failed.onnx").is_file()
    # --no-verify writes it (and says nothing about correctness, except what the tracer said)
    result = export_model(ExportSettings(source=f"{MODELS}:branchy", output=out, inputs=("x:2x4",), verify=False))
    assert result.verified is None and out.is_file()
    assert any(n.startswith("NOT VERIFIED") and _line("if x.mean() > 0.5:") in n for n in result.notes)


def test_sign_branch_fails_on_negated_feed_and_tracer_warning(tmp_path: Path) -> None:
    """`if x.sum() > 0:` with --input x:batch,8: dynamo refuses the data-dependent branch, auto falls back to
    TorchScript, which bakes in the positive branch. Seeded [0, 1) feeds all take it; the negated feed does not,
    and the tracer's warning names the line."""
    out = tmp_path / "sign.onnx"
    with pytest.raises(VerificationError, match="does not match") as err:
        export_model(ExportSettings(source=f"{MODELS}:sign_branch", output=out, inputs=("x:batch,8",)))
    msg = err.value.message
    assert "trace shape, seed 1 negated" in msg and "other shape, seed 1 negated" in msg
    assert _line("if x.sum() > 0:") + ": Converting a tensor to a Python boolean" in msg
    assert "dynamo failed (data-dependent control flow at" in msg  # why auto used TorchScript
    assert not out.exists() and (tmp_path / "sign.failed.onnx").is_file()
    with pytest.raises(ModelLoadError, match="data-dependent control flow at .*models_for_export.py") as dyn:
        export_model(ExportSettings(source=f"{MODELS}:sign_branch", output=out, inputs=("x:batch,8",),
                                    exporter="dynamo"))
    assert "torch.where" in (dyn.value.hint or "") and not out.exists()


def test_tracer_warning_alone_fails_the_export(tmp_path: Path) -> None:
    """A branch no feed reaches (|x| > 1e6): every case matches, the tracer's warning still fails the export."""
    out = tmp_path / "rare.onnx"
    with pytest.raises(VerificationError, match="cannot be trusted on other inputs") as err:
        export_model(ExportSettings(source=f"{MODELS}:rare_branch", output=out, inputs=("x:batch,8",)))
    assert "9 of 9 verification cases match" in err.value.message
    assert _line("if x.abs().max() > 1e6:") in err.value.message
    assert not out.exists() and (tmp_path / "rare.failed.onnx").is_file()


def test_python_number_from_a_tensor(tmp_path: Path) -> None:
    """float(x.abs().max()): dynamo keeps it in the graph (verified); TorchScript bakes the traced value in."""
    result = export_model(ExportSettings(source=f"{MODELS}:python_number", output=tmp_path / "d.onnx",
                                         inputs=("x:batch,8",)))
    assert result.exporter == "dynamo" and result.verified and not result.trace_warnings
    with pytest.raises(VerificationError) as err:
        export_model(ExportSettings(source=f"{MODELS}:python_number", output=tmp_path / "t.onnx",
                                    inputs=("x:batch,8",), exporter="torchscript"))
    assert "Converting a tensor to a Python float" in err.value.message
    assert "`scale = float(x.abs().max())`" in err.value.message
    assert not (tmp_path / "t.onnx").exists() and (tmp_path / "t.failed.onnx").is_file()


def test_shape_only_python_values_are_notes_not_failures(tmp_path: Path) -> None:
    """`assert x.shape[1] == 8` and torch's own shape checks in multi-head attention make the tracer warn; they
    depend on shapes only, so the export verifies and the result notes them."""
    result = export_model(ExportSettings(source=f"{MODELS}:shape_checks", output=tmp_path / "s.onnx",
                                         inputs=("x:batch,8",), exporter="torchscript"))
    assert result.verified is True
    assert [w.kind for w in result.trace_warnings] == ["shape"]
    assert any(_line('assert x.shape[1] == 8, "expects 8 features"') in n for n in result.notes)


def test_varied_feeds_stay_in_declared_ranges(tmp_path: Path) -> None:
    """A float input given --val-range is never fed values outside it; integer inputs stay in theirs."""
    result = export_model(ExportSettings(
        source=f"{MODELS}:convnet", output=tmp_path / "c.onnx", inputs=("x:1x3x8x8",),
        val_ranges=(ValueRange("x", -2.0, 3.0),)))
    assert result.verified
    assert all(-2.0 <= c.values["x"][0] and c.values["x"][1] <= 3.0 for c in result.cases)
    labels = [c.label for c in result.cases]
    assert "trace shape, seed 1 x mirrored in its range" in labels and "trace shape, x the ends of its range" in labels
    ends = next(c for c in result.cases if c.label.endswith("the ends of its range"))
    assert ends.values["x"] == [-2.0, 3.0]


def test_nan_from_the_source_on_negated_feeds_is_not_a_mismatch(tmp_path: Path) -> None:
    """log(x) on negated feeds is NaN in the source and in onnxruntime alike: the export is still faithful."""
    result = export_model(ExportSettings(source=f"{MODELS}:log_of_input", output=tmp_path / "l.onnx",
                                         inputs=("x:batch,8",)))
    assert result.verified is True


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_output_names_that_collide_with_internal_tensors(tmp_path: Path, exporter: str) -> None:
    """dynamo names internal tensors 'relu', 'view', ...; TorchScript '/inner/inner.2/Relu_output_0': an output
    given such a name gets it, and the internal tensor is renamed (dynamo alone wrote a duplicate definition)."""
    for name in ("relu", "view", "inner.0.weight", "/inner/inner.2/Relu_output_0"):
        out = tmp_path / "n.onnx"
        result = export_model(ExportSettings(source=f"{MODELS}:convnet", output=out, inputs=("x:2x3x8x8",),
                                             exporter=exporter, output_names=(name,)))
        assert result.verified and result.exporter == exporter
        model = onnx.load(str(out))
        onnx.checker.check_model(model, full_check=True)
        assert [o.name for o in model.graph.output] == [name] and [i.name for i in model.graph.input] == ["x"]
        defined = [o for n in model.graph.node for o in n.output] + [t.name for t in model.graph.initializer]
        assert len(defined) == len(set(defined)) and defined.count(name) == 1


def test_outputs_that_are_inputs_or_repeated(tmp_path: Path) -> None:
    out = tmp_path / "p.onnx"
    result = export_model(ExportSettings(source=f"{MODELS}:passthrough", output=out, inputs=("x:batch,4",),
                                         output_names=("same", "a", "b")))
    assert result.verified
    model = onnx.load(str(out))
    assert [o.name for o in model.graph.output] == ["same", "a", "b"] and [i.name for i in model.graph.input] == ["x"]
    with pytest.raises(InvalidArgumentError, match="also the name of an input"):
        export_model(ExportSettings(source=f"{MODELS}:passthrough", output=out, inputs=("x:batch,4",),
                                    output_names=("x", "a", "b")))
    with pytest.raises(InvalidArgumentError, match="more than once"):
        export_model(ExportSettings(source=f"{MODELS}:passthrough", output=out, inputs=("x:batch,4",),
                                    output_names=("a", "a", "b")))


def test_help_states_the_tolerance_verification_uses(capsys: pytest.CaptureFixture[str]) -> None:
    from enginekit.cli.main import main
    from enginekit.settings import EXPORT_TOLERANCE, ExportSettings

    settings = ExportSettings(source="m.py:f", output=Path("m.onnx"))
    assert settings.compare.atol.default == settings.compare.rtol.default == EXPORT_TOLERANCE
    assert settings.compare.check_error_stat == "elemwise"
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    tol = f"{EXPORT_TOLERANCE:.0e}".replace("e-0", "e-")  # 1e-4, as the help writes it
    assert f"absolute error is at most {tol} (--atol) or its relative error is at most {tol} (--rtol)" in text
    assert f"VALUE (default {tol})" in text and "1e-5" not in text


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
    r2 = export_model(ExportSettings(source=str(scripted), output=tmp_path / "ts.onnx", inputs=("x:1x3x8x8",),
                                     trust_remote_code=True))  # files this test wrote
    assert r2.exporter == "torchscript" and r2.verified

    program = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(mod.convnet().eval(), (torch.rand(2, 3, 8, 8),)), program)
    r3 = export_model(ExportSettings(source=str(program), output=tmp_path / "ep.onnx", inputs=("x:2x3x8x8",),
                                     trust_remote_code=True))
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
    # the case: `if x.sum() > 0:` exported with --input x:batch,8 is refused, with the line named
    sign = subprocess.run([str(exe), "export", f"{MODELS}:sign_branch", "-o", str(tmp_path / "s.onnx"), "--input",
                           "x:batch,8"], capture_output=True, text=True, timeout=300)
    assert sign.returncode == 1 and "Traceback" not in sign.stderr, sign.stderr
    assert "trace shape, seed 1 negated" in sign.stderr and "`if x.sum() > 0:`" in sign.stderr
    assert not (tmp_path / "s.onnx").exists() and (tmp_path / "s.failed.onnx").is_file()
    ok = subprocess.run([str(exe), "export", f"{MODELS}:convnet", "-o", str(out), "--input", "x:batch,3,8,8"],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and "trace shape, N(0,1) x100" in ok.stdout and "x 2x3x8x8 in -" in ok.stdout


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
