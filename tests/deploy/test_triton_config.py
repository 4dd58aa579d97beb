"""`enginekit triton`: every config.pbtxt is parsed with Triton's own ModelConfig message (model_config.proto, as
shipped in the tritonclient wheel) and its fields checked against the model it was written for."""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from enginekit.deploy.triton import TritonSettings, python_model_source, write_triton_repository
from enginekit.errors import InvalidArgumentError, ModelLoadError, OutputPathError
from enginekit.examples import digits

pytest.importorskip("tritonclient", reason="tritonclient (test dependency) ships Triton's model_config.proto")


@functools.cache
def model_config_pb2() -> ModuleType:
    """tritonclient's generated model_config_pb2, loaded from its file (importing tritonclient.grpc needs grpcio)."""
    spec = importlib.util.find_spec("tritonclient")
    assert spec is not None and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    mod_spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    assert mod_spec is not None and mod_spec.loader is not None
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


def parse(text: str) -> Any:
    from google.protobuf import text_format

    return text_format.Parse(text, model_config_pb2().ModelConfig())


def written(repo: Path, name: str) -> Any:
    config = parse((repo / name / "config.pbtxt").read_text())
    assert config.name == name
    return config


def dtype(value: int) -> str:
    return str(model_config_pb2().DataType.Name(value))


def kind(value: int) -> str:
    return str(model_config_pb2().ModelInstanceGroup.Kind.Name(value))


def io(config: Any, key: str) -> dict[str, tuple[str, list[int]]]:
    return {t.name: (dtype(t.data_type), list(t.dims)) for t in getattr(config, key)}


# ------------------------------------------------------------------------------------------------ ONNX models


def test_real_model_batched_by_default(ocr_cls_model: Path, tmp_path: Path) -> None:
    result = write_triton_repository(ocr_cls_model, tmp_path / "repo")
    name = "ch_ppocr_mobile_v2.0_cls_infer"
    assert result.name == name and result.model_dir == tmp_path / "repo" / name
    config = written(tmp_path / "repo", name)
    assert config.platform == "onnxruntime_onnx" and config.backend == ""
    assert config.max_batch_size == 8
    assert io(config, "input") == {"x": ("TYPE_FP32", [3, -1, -1])}
    assert io(config, "output") == {"save_infer_model/scale_0.tmp_1": ("TYPE_FP32", [2])}
    assert config.HasField("dynamic_batching") and list(config.dynamic_batching.preferred_batch_size) == []
    assert [(g.count, kind(g.kind), list(g.profile)) for g in config.instance_group] == [(1, "KIND_CPU", [])]
    assert (result.model_dir / "1" / "model.onnx").read_bytes() == ocr_cls_model.read_bytes()
    assert sorted(p.relative_to(result.model_dir).as_posix() for p in result.files) == ["1/model.onnx",
                                                                                         "config.pbtxt"]
    assert result.config_text == (result.model_dir / "config.pbtxt").read_text()


def test_no_batching_keeps_full_dims(ocr_det_model: Path, tmp_path: Path) -> None:
    write_triton_repository(ocr_det_model, tmp_path, TritonSettings(name="det", max_batch_size=0))
    config = written(tmp_path, "det")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert io(config, "input") == {"x": ("TYPE_FP32", [-1, 3, -1, -1])}
    assert io(config, "output") == {"sigmoid_0.tmp_0": ("TYPE_FP32", [-1, 1, -1, -1])}


def test_batching_options(tmp_path: Path) -> None:
    s = TritonSettings(name="digits", max_batch_size=16, preferred_batch_sizes=(4, 16), max_queue_delay_us=250,
                       instances=3, kind="gpu")
    write_triton_repository(digits.onnx_path(), tmp_path, s)
    config = written(tmp_path, "digits")
    assert config.max_batch_size == 16
    assert io(config, "input") == {"x": ("TYPE_FP32", [1, 8, 8])}
    assert io(config, "output") == {"logits": ("TYPE_FP32", [10])}
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert [(g.count, kind(g.kind)) for g in config.instance_group] == [(3, "KIND_GPU")]
    write_triton_repository(digits.onnx_path(), tmp_path, TritonSettings(name="nodb", dynamic_batching=False))
    nodb = written(tmp_path, "nodb")
    assert nodb.max_batch_size == 8 and not nodb.HasField("dynamic_batching")


def _static_int_model(path: Path) -> Path:
    """ids[2,3] int64 -> y = float(ids) [2,3], total = sum(y) (a scalar)."""
    nodes = [helper.make_node("Cast", ["ids"], ["y"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["y"], ["total"], keepdims=0)]
    graph = helper.make_graph(nodes, "static_int", [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
                               helper.make_tensor_value_info("total", TensorProto.FLOAT, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_static_model_has_no_batch_axis(tmp_path: Path) -> None:
    model = _static_int_model(tmp_path / "static.onnx")
    write_triton_repository(model, tmp_path / "repo")
    config = written(tmp_path / "repo", "static")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert io(config, "input") == {"ids": ("TYPE_INT64", [2, 3])}
    assert io(config, "output") == {"y": ("TYPE_FP32", [2, 3]), "total": ("TYPE_FP32", [1])}
    total = config.output[1]
    assert total.HasField("reshape") and list(total.reshape.shape) == []  # the scalar: dims [1] reshaped to []
    with pytest.raises(InvalidArgumentError, match=r"no batch axis.*'ids'") as err:
        write_triton_repository(model, tmp_path / "repo2", TritonSettings(max_batch_size=4))
    assert err.value.exit_code == 2
    with pytest.raises(InvalidArgumentError, match=r"--dynamic-batching needs a batch axis"):
        write_triton_repository(model, tmp_path / "repo2", TritonSettings(dynamic_batching=True))
    assert not (tmp_path / "repo2" / "static").exists()


def test_int64_inputs_with_symbolic_inner_dims(two_input_model: Path, tmp_path: Path) -> None:
    write_triton_repository(two_input_model, tmp_path)
    config = written(tmp_path, "two_input")
    assert config.max_batch_size == 8
    assert io(config, "input") == {"ids": ("TYPE_INT64", [-1]), "mask": ("TYPE_INT64", [-1])}
    assert io(config, "output") == {"out": ("TYPE_FP32", [-1])}


def test_openvino_and_python_backends(tmp_path: Path) -> None:
    write_triton_repository(digits.onnx_path(), tmp_path, TritonSettings(name="ov", backend="openvino"))
    ov = written(tmp_path, "ov")
    assert ov.backend == "openvino" and ov.platform == "" and ov.default_model_filename == "model.onnx"
    assert kind(ov.instance_group[0].kind) == "KIND_CPU"
    res = write_triton_repository(digits.onnx_path(), tmp_path, TritonSettings(name="py", backend="python"))
    py = written(tmp_path, "py")
    assert py.backend == "python" and py.max_batch_size == 8
    files = sorted(p.relative_to(res.model_dir).as_posix() for p in res.files)
    assert files == ["1/model.onnx", "1/model.py", "config.pbtxt"]
    source = (res.model_dir / "1" / "model.py").read_text()
    assert source == python_model_source("model.onnx")
    compile(source, "model.py", "exec")  # valid Python (it runs inside Triton's stub: tests/deploy/test_triton_server)
    with pytest.raises(InvalidArgumentError, match=r"OpenVINO backend runs on the CPU only"):
        write_triton_repository(digits.onnx_path(), tmp_path, TritonSettings(name="ov2", backend="openvino",
                                                                             kind="gpu"))


def test_external_data_travels_with_the_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "ext",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    src = tmp_path / "src"
    src.mkdir()
    onnx.save(model, src / "ext.onnx", save_as_external_data=True, location="ext.weights", size_threshold=0)
    res = write_triton_repository(src / "ext.onnx", tmp_path / "repo")
    assert (res.model_dir / "1" / "ext.weights").read_bytes() == (src / "ext.weights").read_bytes()
    onnx.load(str(res.model_dir / "1" / "model.onnx"))  # loads its weights from beside it


# ------------------------------------------------------------------------------------------------ TensorRT plans


def _plan_with_manifest(path: Path, profiles: list[list[int]], library: str = "tensorrt") -> Path:
    """A plan file and the enginekit manifest beside it (the fields `enginekit build` writes that Triton needs)."""
    path.write_bytes(b"plan bytes: Triton's TensorRT backend deserializes them, the config writer never does")
    manifest = {
        "format": "enginekit-engine", "format_version": 1, "backend": library.replace("_", "-"), "library": library,
        "inputs": [{"name": "x", "shape": [-1, 1, 8, 8], "dtype": "float32"}],
        "outputs": [{"name": "logits", "shape": [-1, 10], "dtype": "float32"}],
        "profiles": [{"shapes": [{"name": "x", "min": [lo, 1, 8, 8], "opt": [lo, 1, 8, 8], "max": [hi, 1, 8, 8]}]}
                     for lo, hi in profiles],
    }
    Path(str(path) + ".json").write_text(json.dumps(manifest))
    return path


def test_tensorrt_plan_profiles(tmp_path: Path) -> None:
    plan = _plan_with_manifest(tmp_path / "digits.engine", [[1, 4], [4, 6]])
    res = write_triton_repository(plan, tmp_path / "repo")
    config = written(tmp_path / "repo", "digits")
    assert config.platform == "tensorrt_plan"
    assert config.max_batch_size == 6  # the profiles allow batches up to 6 (< the default 8)
    assert io(config, "input") == {"x": ("TYPE_FP32", [1, 8, 8])}
    assert io(config, "output") == {"logits": ("TYPE_FP32", [10])}
    assert [(g.count, kind(g.kind), list(g.profile)) for g in config.instance_group] == [(1, "KIND_GPU", ["0", "1"])]
    assert (res.model_dir / "1" / "model.plan").read_bytes() == plan.read_bytes()
    assert "# profile 1: x min [4, 1, 8, 8] opt [4, 1, 8, 8] max [6, 1, 8, 8]" in res.config_text
    with pytest.raises(InvalidArgumentError, match=r"profiles allow batches up to 6"):
        write_triton_repository(plan, tmp_path / "repo", TritonSettings(name="big", max_batch_size=7))
    with pytest.raises(InvalidArgumentError, match=r"TensorRT plans run only on GPUs"):
        write_triton_repository(plan, tmp_path / "repo", TritonSettings(name="cpu", kind="cpu"))
    with pytest.raises(InvalidArgumentError, match=r"a TensorRT plan is served by tensorrt_plan"):
        write_triton_repository(plan, tmp_path / "repo", TritonSettings(name="py", backend="python"))
    big = _plan_with_manifest(tmp_path / "big.plan", [[1, 64], [64, 256]])
    write_triton_repository(big, tmp_path / "repo", TritonSettings(max_batch_size=256))
    assert written(tmp_path / "repo", "big").max_batch_size == 256


def test_plan_without_manifest_or_of_tensorrt_rtx(tmp_path: Path) -> None:
    bare = tmp_path / "bare.engine"
    bare.write_bytes(b"\0" * 16)
    with pytest.raises(ModelLoadError, match=r"no enginekit manifest"):
        write_triton_repository(bare, tmp_path / "repo")
    rtx = _plan_with_manifest(tmp_path / "rtx.engine", [[1, 8]], library="tensorrt_rtx")
    with pytest.raises(InvalidArgumentError, match=r"tensorrt_rtx plan.*only plans of TensorRT itself"):
        write_triton_repository(rtx, tmp_path / "repo")


def test_real_tensorrt_rtx_build_is_refused(tmp_path: Path) -> None:
    """A plan built here by TensorRT-RTX: Triton's TensorRT backend cannot run it, and says so before writing."""
    pytest.importorskip("tensorrt_rtx", reason="tensorrt_rtx is not installed: no real plan can be built here")
    from enginekit.backends.tensorrt.build import build_engine
    from enginekit.settings import BuildSettings

    out = tmp_path / "digits.engine"
    build_engine(digits.onnx_path(), BuildSettings(backend="tensorrt-rtx", cache_dir=tmp_path / "cache",
                                                   compute_capabilities=("8.6",), output=out,
                                                   profiles=("x:1x1x8x8:4x1x8x8:16x1x8x8",)))
    with pytest.raises(InvalidArgumentError, match=r"tensorrt_rtx plan") as err:
        write_triton_repository(out, tmp_path / "repo")
    assert "enginekit build --backend tensorrt" in (err.value.hint or "")
    assert not (tmp_path / "repo").exists()


# ------------------------------------------------------------------------------------------------ packages, TorchScript


def _package(path: Path) -> Path:
    """A package folder as docs/PACKAGE.md describes it: min_latency on onnxruntime, max_throughput on torch."""
    path.mkdir()
    shutil.copy2(digits.onnx_path(), path / "model.onnx")
    entry = {"file": None, "manifest": None, "options": []}
    spec = {"format": "enginekit-package", "version": 1, "name": "digits", "model": "model.onnx",
            "samples": {"inputs": "samples/inputs.npz"},
            "engines": {"min_latency": {**entry, "candidate": "ort", "backend": "ort", "precision": "fp32",
                                        "outputs": "samples/outputs.min_latency.npz"},
                        "max_throughput": {**entry, "candidate": "torch:fp16", "backend": "torch",
                                           "precision": "fp16", "outputs": "samples/outputs.max_throughput.npz"}}}
    (path / "package.json").write_text(json.dumps(spec))
    return path


def test_package_objectives(tmp_path: Path) -> None:
    package = _package(tmp_path / "pkg")
    res = write_triton_repository(package, tmp_path / "repo")
    assert res.name == "digits" and res.notes == []
    assert written(tmp_path / "repo", "digits").platform == "onnxruntime_onnx"
    tp = write_triton_repository(package, tmp_path / "repo", TritonSettings(name="tp", objective="max_throughput"))
    config = written(tmp_path / "repo", "tp")
    assert config.backend == "python" and (tp.model_dir / "1" / "model.py").is_file()
    assert "no backend for the packaged max_throughput engine (torch:fp16)" in tp.notes[0]
    with pytest.raises(InvalidArgumentError, match=r"--objective 'fastest'"):
        write_triton_repository(package, tmp_path / "repo", TritonSettings(name="x", objective="fastest"))
    with pytest.raises(InvalidArgumentError, match=r"not a package folder"):
        write_triton_repository(digits.onnx_path(), tmp_path / "repo", TritonSettings(objective="min_latency"))


def test_torchscript_needs_an_io_model(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    with warnings.catch_warnings():  # torch.jit is deprecated; Triton's pytorch_libtorch still loads TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(64, 10)))
    pt = tmp_path / "digits.pt"
    module.save(str(pt))
    with pytest.raises(InvalidArgumentError, match=r"TorchScript") as err:
        write_triton_repository(pt, tmp_path / "repo")
    assert "--io-model" in (err.value.hint or "")
    res = write_triton_repository(pt, tmp_path / "repo", TritonSettings(io_model=digits.onnx_path()))
    config = written(tmp_path / "repo", "digits")
    assert config.platform == "pytorch_libtorch" and config.max_batch_size == 8
    assert io(config, "input") == {"x__0": ("TYPE_FP32", [1, 8, 8])}
    assert io(config, "output") == {"logits__0": ("TYPE_FP32", [10])}
    assert (res.model_dir / "1" / "model.pt").read_bytes() == pt.read_bytes()


# ------------------------------------------------------------------------------------------------ refusals, writing


@pytest.mark.parametrize(("settings", "message"), [
    (TritonSettings(preferred_batch_sizes=(16,)), r"--preferred-batch-size 16: must be between 1 and"),
    (TritonSettings(dynamic_batching=False, max_queue_delay_us=5), r"configure dynamic batching, which is off"),
    (TritonSettings(max_queue_delay_us=-1), r"--max-queue-delay-us -1"),
    (TritonSettings(max_batch_size=-2), r"--max-batch-size -2"),
    (TritonSettings(instances=0), r"--instances 0"),
    (TritonSettings(kind="tpu"), r"--kind 'tpu'"),
    (TritonSettings(backend="tensorflow"), r"--backend 'tensorflow'"),
    (TritonSettings(name="../escape"), r"--name '../escape'"),
    (TritonSettings(name=""), r"--name ''"),
])
def test_bad_options_are_user_errors(tmp_path: Path, settings: TritonSettings, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message) as err:
        write_triton_repository(digits.onnx_path(), tmp_path / "repo", settings)
    assert err.value.exit_code == 2
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"does not exist"):
        write_triton_repository(tmp_path / "missing.onnx", tmp_path / "repo")
    other = tmp_path / "weights.bin"
    other.write_bytes(b"\0")
    with pytest.raises(InvalidArgumentError, match=r"Cannot serve"):
        write_triton_repository(other, tmp_path / "repo")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError):
        write_triton_repository(broken, tmp_path / "repo")


def test_never_clobbers_without_force(tmp_path: Path, mlp_model: Path) -> None:
    repo = tmp_path / "repo"
    write_triton_repository(digits.onnx_path(), repo, TritonSettings(name="m"))
    (repo / "m" / "keep.txt").write_text("mine")
    with pytest.raises(OutputPathError, match=r"exists and is not empty") as err:
        write_triton_repository(mlp_model, repo, TritonSettings(name="m"))
    assert "--force" in (err.value.hint or "")
    assert (repo / "m" / "keep.txt").read_text() == "mine"
    assert written(repo, "m").input[0].name == "x" and list(written(repo, "m").input[0].dims) == [1, 8, 8]
    write_triton_repository(mlp_model, repo, TritonSettings(name="m", force=True))
    assert not (repo / "m" / "keep.txt").exists() and list(written(repo, "m").input[0].dims) == [4]
    assert sorted(p.name for p in repo.iterdir()) == ["m"]  # no staging or old folder left behind
    (repo / "empty").mkdir()
    write_triton_repository(mlp_model, repo, TritonSettings(name="empty"))  # an empty folder is filled
    assert written(repo, "empty").max_batch_size == 8
    inside = repo / "m" / "1" / "model.onnx"
    with pytest.raises(OutputPathError, match=r"lies inside the model folder"):
        write_triton_repository(inside, repo, TritonSettings(name="m", force=True))
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputPathError):
        write_triton_repository(mlp_model, tmp_path / "file", TritonSettings(name="m"))


def test_cli_command(tmp_path: Path) -> None:
    """The Typer command as cli/main.py registers it: --json output, and typed errors (exit 2 in main())."""
    import typer
    from typer.testing import CliRunner

    from enginekit.cli.triton_cmd import HELP, triton

    app = typer.Typer()
    app.command("triton", help=HELP)(triton)
    app.command("noop")(lambda: None)  # two commands: `triton` is a subcommand, as in enginekit
    runner = CliRunner()
    ok = runner.invoke(app, ["triton", str(digits.onnx_path()), str(tmp_path / "repo"), "--name", "d",
                             "--max-batch-size", "4", "--preferred-batch-size", "2", "--preferred-batch-size", "4",
                             "--max-queue-delay-us", "10", "--instances", "2", "--json"])
    assert ok.exit_code == 0, ok.output
    doc = json.loads(ok.stdout)
    assert doc["name"] == "d" and doc["max_batch_size"] == 4 and doc["serving"] == "onnxruntime_onnx"
    config = written(tmp_path / "repo", "d")
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4] and config.instance_group[0].count == 2
    text = runner.invoke(app, ["triton", str(digits.onnx_path()), str(tmp_path / "repo"), "--name", "p",
                               "--backend", "python", "--no-dynamic-batching"])
    assert text.exit_code == 0 and "python" in text.stdout and "1/model.py" in text.stdout
    assert not written(tmp_path / "repo", "p").HasField("dynamic_batching")
    bad = runner.invoke(app, ["triton", str(digits.onnx_path()), str(tmp_path / "repo"), "--name", "d"])
    assert isinstance(bad.exception, OutputPathError) and bad.exception.exit_code == 2
