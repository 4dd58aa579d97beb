"""Real TensorRT-RTX engine builds on CPU (its builder targets GPUs it does not need to see)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from enginekit.errors import BuildError, HardwareUnavailableError, InvalidArgumentError
from enginekit.settings import BuildSettings

trt = pytest.importorskip("tensorrt_rtx")

from enginekit.backends.tensorrt.build import build_engine  # noqa: E402
from enginekit.backends.tensorrt.lib import load_library  # noqa: E402
from enginekit.backends.tensorrt.manifest import check_runnable  # noqa: E402
from enginekit.examples import digits  # noqa: E402

PROFILE = "x:1x1x8x8:8x1x8x8:64x1x8x8"


def _settings(tmp_path: Path, **kw: object) -> BuildSettings:
    base: dict[str, object] = {"backend": "tensorrt-rtx", "cache_dir": tmp_path / "cache",
                               "compute_capabilities": ("8.6",)}
    base.update(kw)
    return BuildSettings(**base)  # type: ignore[arg-type]


def test_static_model_build_and_manifest(tmp_path: Path) -> None:
    from tests_helpers import make_static_mlp  # type: ignore[import-not-found]

    model = make_static_mlp(tmp_path / "mlp.onnx")
    out = tmp_path / "mlp.engine"
    res = build_engine(model, _settings(tmp_path, output=out, compute_capabilities=()))
    assert res.cached is False and out.is_file()
    assert out.read_bytes() == res.plan_path.read_bytes()  # the plan untouched, no header glued on
    m = json.loads(Path(str(out) + ".json").read_text())
    assert m["library"] == "tensorrt_rtx" and m["library_version"] == trt.__version__
    assert m["typing"] == "strong" and m["precision"]["path"] == "strong-typing"
    # no GPU here: built for every compute capability the library targets from Ampere on
    ccs = [cc for cc in load_library("tensorrt-rtx").compute_capabilities() if float(cc) >= 8.0]
    assert m["target"]["compute_capabilities"] == ccs and "8.6" in ccs
    assert m["inputs"] == [{"name": "x", "shape": [2, 4], "dtype": "float32"}]
    assert m["outputs"][0]["name"] == "y"
    import hashlib

    assert m["source_model"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert m["plan_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert isinstance(m["warnings"], list) and m["build_time_s"] >= 0
    assert m["profiles"] == []


def test_dynamic_model_needs_a_profile(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"--profile") as err:
        build_engine(digits.onnx_path(), _settings(tmp_path))
    assert "batch" in err.value.message and "x" in err.value.message
    with pytest.raises(InvalidArgumentError, match=r"dim 0.*MIN <= OPT <= MAX.*MIN 8, OPT 4"):
        build_engine(digits.onnx_path(), _settings(tmp_path, profiles=("x:8x1x8x8:4x1x8x8:16x1x8x8",)))
    with pytest.raises(InvalidArgumentError, match=r"dim 1"):
        build_engine(digits.onnx_path(), _settings(tmp_path, profiles=("x:1x3x8x8:1x3x8x8:1x3x8x8",)))


def test_dynamic_model_several_profiles_and_cache(tmp_path: Path) -> None:
    s = _settings(tmp_path, profiles=(PROFILE, "x:64x1x8x8:128x1x8x8:256x1x8x8"), output=tmp_path / "d.engine")
    first = build_engine(digits.onnx_path(), s)
    assert first.cached is False
    m = first.manifest
    assert len(m["profiles"]) == 2 and m["profiles"][1]["shapes"][0]["max"] == [256, 1, 8, 8]
    assert m["inputs"] == [{"name": "x", "shape": [-1, 1, 8, 8], "dtype": "float32"}]
    assert m["target"]["compute_capabilities"] == ["8.6"]
    second = build_engine(digits.onnx_path(), s)
    assert second.cached is True and second.plan_path == first.plan_path
    # a damaged cache entry is detected and rebuilt, never loaded
    data = bytearray(first.plan_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.plan_path.write_bytes(bytes(data))
    third = build_engine(digits.onnx_path(), s)
    assert third.cached is False
    # a setting that changes the engine changes the key
    other = build_engine(digits.onnx_path(), _settings(tmp_path, profiles=(PROFILE,), compute_capabilities=("8.9",)))
    assert other.cached is False and other.plan_path != third.plan_path


def test_fp16_strongly_typed_with_fp32_islands(tmp_path: Path) -> None:
    from enginekit.graph.precision import PlanEntry, PrecisionPlan, save_plan

    first_conv = next(n.name for n in onnx.load(str(digits.onnx_path())).graph.node if n.op_type == "Conv")
    plan = tmp_path / "plan.json"
    save_plan(PrecisionPlan("fp16", (PlanEntry(first_conv, "test island"),)), plan)
    res = build_engine(digits.onnx_path(), _settings(tmp_path, profiles=(PROFILE,), precision="fp16",
                                                     precision_plan=plan))
    m = res.manifest
    assert m["precision"]["path"] == "strong-typing" and m["precision"]["precision"] == "fp16"
    types = m["layer_output_types"]
    island = [name for name in types if name == first_conv or name.startswith(first_conv)]
    assert island and all(t == ["float32"] for name in island for t in [types[name]])
    convs = [name for name in types if "Conv" in name and name not in island]
    assert convs and all(types[name] == ["float16"] for name in convs)
    assert m["inputs"][0]["dtype"] == "float32" and m["outputs"][0]["dtype"] == "float32"  # IO types kept


def test_int8_qdq_checked_on_cpu(tmp_path: Path) -> None:
    x, _ = digits.load_test_split()
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(0, 64, 16):
        np.savez(calib / f"b{i}.npz", x=x[i : i + 16])
    res = build_engine(digits.onnx_path(), _settings(tmp_path, profiles=(PROFILE,), precision="int8",
                                                     calib_data=calib))
    m = res.manifest
    assert m["precision"]["precision"] == "int8" and "Q/DQ" in m["precision"]["how"]
    assert "cpu_check" in m["precision"]
    with pytest.raises(InvalidArgumentError, match="--calib-data"):
        build_engine(digits.onnx_path(), _settings(tmp_path, profiles=(PROFILE,), precision="int8"))


def test_parser_errors_name_the_node(tmp_path: Path, contrib_model: Path) -> None:
    with pytest.raises(BuildError, match="could not parse") as err:
        build_engine(contrib_model, _settings(tmp_path))
    assert "FusedMatMul" in err.value.message


def test_turing_target_cannot_compile_fp32_gemm(tmp_path: Path) -> None:
    """Why Turing is not a default target: TensorRT-RTX 1.7 refuses FP32 GEMM for SM75 (seen here)."""
    from tests_helpers import make_static_mlp  # type: ignore[import-not-found]

    with pytest.raises(BuildError, match="Turing"):
        build_engine(make_static_mlp(tmp_path / "m.onnx"), _settings(tmp_path, compute_capabilities=("7.5",)))


def test_cannot_target_hopper_and_unknown_options(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="targets 7.5"):
        build_engine(digits.onnx_path(), _settings(tmp_path, profiles=(PROFILE,), compute_capabilities=("9.0",)))
    with pytest.raises(InvalidArgumentError, match="--precision"):
        build_engine(digits.onnx_path(), _settings(tmp_path, profiles=(PROFILE,), precision="fp8"))


def test_runnable_check_explains_why_not() -> None:
    lib = load_library("tensorrt-rtx")
    manifest = {"library": "tensorrt_rtx", "library_version": lib.version,
                "target": {"compute_capabilities": ["8.6"], "version_compatible": False}}
    with pytest.raises(HardwareUnavailableError, match="built for compute capability 8.6; this GPU is 9.0"):
        check_runnable(manifest, lib, "9.0")
    with pytest.raises(HardwareUnavailableError, match="No CUDA GPU"):
        check_runnable(manifest, lib, None)
    old = {**manifest, "library_version": "1.0.0.1"}
    with pytest.raises(HardwareUnavailableError, match="not built version-compatible"):
        check_runnable(old, lib, "8.6")
    check_runnable(manifest, lib, "8.6")  # fine


@pytest.mark.gpu
def test_engine_runs_and_matches_onnxruntime(tmp_path: Path) -> None:
    """Needs an NVIDIA GPU of compute capability 7.5-12.x (not the H100/H200 lent here)."""
    from enginekit.registry import get_backend
    from enginekit.settings import BackendSettings

    avail = get_backend("tensorrt-rtx").available()
    if not avail.ok:
        pytest.skip(avail.reason)
    out = tmp_path / "d.engine"
    build_engine(digits.onnx_path(), _settings(tmp_path, profiles=(PROFILE,), output=out, compute_capabilities=()))
    x, _ = digits.load_test_split()
    with get_backend("tensorrt-rtx").create_runner(out, BackendSettings()) as r:
        got = r.infer({"x": x[:8]})["logits"]
    with get_backend("ort").create_runner(digits.onnx_path(), BackendSettings()) as o:
        want = o.infer({"x": x[:8]})["logits"]
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_paddleocr_classifier_question_mark_dims_are_renamed_and_build(tmp_path: Path, ocr_cls_model: Path) -> None:
    """x [?, 3, ?, ?]: TensorRT-RTX ties H and W (one name '?'), so H 48 / W 192 failed with Error Code 4."""
    profile = ("x:1x3x48x192:4x3x48x192:8x3x48x192",)
    with pytest.raises(InvalidArgumentError, match=r"x dim 2 \(48\) and x dim 3 \(192\) share the dim name '\?'"):
        build_engine(ocr_cls_model, _settings(tmp_path, profiles=profile, unique_dim_names=False))
    res = build_engine(ocr_cls_model, _settings(tmp_path, profiles=profile))
    m = res.manifest
    assert [(r["input"], r["axis"], r["old"], r["new"]) for r in m["renamed_dims"]] == [
        ("x", 2, "?", "x_dim2"), ("x", 3, "?", "x_dim3")]
    assert m["settings"]["renamed_dims"] == m["renamed_dims"]  # part of the cache key
    assert m["inputs"] == [{"name": "x", "shape": [-1, 3, -1, -1], "dtype": "float32"}]
    import hashlib

    assert m["source_model"]["sha256"] == hashlib.sha256(ocr_cls_model.read_bytes()).hexdigest()  # the file given
    assert res.plan_path.stat().st_size > 1_000_000
    again = build_engine(ocr_cls_model, _settings(tmp_path, profiles=profile))
    assert again.cached is True and again.manifest["renamed_dims"] == m["renamed_dims"]


def test_no_cache_manifest_has_the_plan_size(tmp_path: Path) -> None:
    out = tmp_path / "d.engine"
    res = build_engine(digits.onnx_path(), _settings(tmp_path, profiles=(PROFILE,), use_cache=False, output=out))
    assert res.manifest["plan_bytes"] == out.stat().st_size and res.manifest["renamed_dims"] == []
    assert json.loads(Path(str(out) + ".json").read_text())["plan_bytes"] == out.stat().st_size


def test_renamed_model_keeps_its_external_weights(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["?", 3, "?", "?"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["?", 8, "?", "?"])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "ext" / "conv.onnx"
    path.parent.mkdir()
    onnx.save_model(model, str(path), save_as_external_data=True, location="conv.weights", size_threshold=0)
    res = build_engine(path, _settings(tmp_path, profiles=("x:1x3x16x32:2x3x16x32:4x3x16x32",)))
    renamed = [(r["input"], r["axis"], r["new"]) for r in res.manifest["renamed_dims"]]
    assert renamed == [("x", 0, "x_dim0"), ("x", 2, "x_dim2"), ("x", 3, "x_dim3")]
    assert res.manifest["outputs"][0]["shape"] == [-1, 8, -1, -1]
    assert sorted(p.name for p in path.parent.iterdir()) == ["conv.onnx", "conv.weights"]  # the original untouched
