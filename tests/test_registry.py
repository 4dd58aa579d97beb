"""enginekit.registry (backends as data) and Candidate parsing (NAME[:PRECISION])."""

from __future__ import annotations

import pytest

from enginekit.errors import InvalidArgumentError, UnknownNameError
from enginekit.errors import did_you_mean as suggest
from enginekit.multirun import Candidate, resolve_candidates
from enginekit.registry import BACKENDS, Availability, BackendInfo, backend_names, get_backend
from enginekit.settings import BackendSettings

REAL = ("ort", "openvino", "paddle", "onnx-reference")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ort", "ort"),
        ("onnxruntime", "ort"),
        ("onnxrt", "ort"),
        ("ORT", "ort"),
        ("  onnxruntime ", "ort"),
        ("openvino", "openvino"),
        ("ov", "openvino"),
        ("OV", "openvino"),
        ("onnx-reference", "onnx-reference"),
        ("reference", "onnx-reference"),
        ("ref", "onnx-reference"),
        ("onnx_reference", "onnx-reference"),
    ],
)
def test_aliases(name: str, expected: str) -> None:
    assert get_backend(name).name == expected


def test_backend_names() -> None:
    assert backend_names() == ["ort", "openvino", "tensorrt", "tensorrt-rtx", "torch", "inductor", "aoti", "paddle",
                               "onnx-reference"]
    names = [b.name for b in BACKENDS] + [a for b in BACKENDS for a in b.aliases]
    assert len(names) == len(set(names)), "a name or alias is used twice"


@pytest.mark.parametrize(("typo", "suggestion"), [("openvnio", "openvino"), ("onnxruntim", "onnxruntime"),
                                                   ("orrt", "ort"), ("onnx-refrence", "onnx-reference")])
def test_unknown_name_suggests(typo: str, suggestion: str) -> None:
    with pytest.raises(UnknownNameError) as info:
        get_backend(typo)
    msg = str(info.value)
    assert repr(typo) in msg
    assert f"did you mean {suggestion!r}" in msg
    assert f"Known backends: {', '.join(backend_names())}" in msg
    assert info.value.exit_code == 2


def test_unknown_name_without_close_match() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_backend("zzzzzz")
    assert "did you mean" not in str(info.value)
    assert "Known backends" in str(info.value)


def test_suggest() -> None:
    assert suggest("openvnio", ["ort", "openvino"]) == "; did you mean 'openvino'?"
    assert suggest("qqq", ["ort", "openvino"]) == ""
    assert suggest("x", []) == ""


@pytest.mark.parametrize("name", REAL)
def test_available_here(name: str) -> None:
    avail = get_backend(name).available()
    assert avail == Availability(True, "")
    info = get_backend(name).to_dict()
    assert info["available"] is True and info["name"] == name
    assert set(info) >= {"name", "description", "devices", "precisions", "dynamic_shapes", "available", "reason"}


def test_unavailable_backend_says_how_to_install() -> None:
    fake = BackendInfo(name="fake", description="", runner="nowhere:Nothing", requires=("openvino",
                       "enginekit_no_such_module_xyz"))
    avail = fake.available()
    assert avail.ok is False
    assert "enginekit_no_such_module_xyz" in avail.reason and "pip install" in avail.reason
    assert fake.to_dict()["available"] is False


def test_extra_check_decides_availability() -> None:
    fake = BackendInfo(name="fake", description="", runner="x:Y", requires=("onnx",),
                       extra_check=lambda: Availability(False, "needs a GPU"))
    assert fake.available() == Availability(False, "needs a GPU")


@pytest.mark.parametrize("name", REAL)
def test_create_runner_is_lazy(name: str, tmp_path) -> None:
    """Creating a runner does not load the model: the file need not exist until the runner is entered."""
    runner = get_backend(name).create_runner(tmp_path / "later.onnx", BackendSettings())
    assert runner.backend == name
    assert runner.precision == "fp32"


# --- Candidate ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "backend", "precision", "label"),
    [
        ("openvino:bf16", "openvino", "bf16", "openvino:bf16"),
        ("ov:BF16", "openvino", "bf16", "openvino:bf16"),
        ("openvino", "openvino", "fp32", "openvino"),
        ("openvino:fp32", "openvino", "fp32", "openvino"),
        ("onnxruntime", "ort", "fp32", "ort"),
        ("ref", "onnx-reference", "fp32", "onnx-reference"),
    ],
)
def test_candidate_parse(text: str, backend: str, precision: str, label: str) -> None:
    c = Candidate.parse(text)
    assert (c.backend, c.precision, c.label) == (backend, precision, label)


def test_candidate_default_precision() -> None:
    assert Candidate.parse("openvino", "bf16") == Candidate("openvino", "bf16")
    assert Candidate.parse("openvino:fp32", "bf16") == Candidate("openvino", "fp32")


@pytest.mark.parametrize(("text", "offered"), [("ort:bf16", "fp32, fp16"), ("openvino:int8", "fp32, bf16"),
                                               ("onnx-reference:int8", "fp32, fp16, bf16")])
def test_candidate_unsupported_precision(text: str, offered: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        Candidate.parse(text)
    msg = str(info.value)
    assert text.split(":")[1] in msg and f"offers precisions {offered}" in msg


def test_candidate_unknown_backend() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'openvino'"):
        Candidate.parse("openvnio:bf16")


def test_resolve_candidates_refuses_alias_duplicates() -> None:
    with pytest.raises(InvalidArgumentError, match="twice"):
        resolve_candidates(["ort", "onnxruntime"], None, {})


def test_resolve_candidates_same_backend_two_precisions() -> None:
    cands, ref = resolve_candidates(["openvino", "openvino:bf16"], None, {})
    assert cands == [Candidate("openvino", "fp32"), Candidate("openvino", "bf16")]
    assert ref == Candidate("openvino", "fp32")


def test_resolve_candidates_reference_by_alias() -> None:
    cands, ref = resolve_candidates(["ort", "openvino"], "ov", {})
    assert ref == Candidate("openvino")
    with pytest.raises(InvalidArgumentError, match="--reference"):
        resolve_candidates(["ort"], "openvino", {})
    with pytest.raises(InvalidArgumentError, match="at least one"):
        resolve_candidates([], None, {})


def test_model_formats(tmp_path, mlp_model) -> None:  # type: ignore[no-untyped-def]
    from enginekit.errors import InvalidArgumentError
    from enginekit.registry import check_format
    from enginekit.sources.detect import model_format

    assert model_format(mlp_model) == "onnx"
    (tmp_path / "m.json").write_text('{"magic":"pir"}')
    (tmp_path / "m.pdiparams").write_bytes(b"")
    assert model_format(tmp_path / "m") == "paddle"
    check_format(get_backend("paddle"), "paddle")
    with pytest.raises(InvalidArgumentError, match="runs onnx models"):
        check_format(get_backend("ort"), "paddle")
    with pytest.raises(InvalidArgumentError, match="runs paddle models"):
        check_format(get_backend("paddle"), "onnx")


def test_tensorrt_backends_say_why_they_cannot_run_here() -> None:
    from enginekit.hardware import nvidia_smi_gpus

    if nvidia_smi_gpus():
        pytest.skip("this machine has an NVIDIA GPU")
    rtx = get_backend("tensorrt-rtx").available()
    assert rtx.ok is False and "no NVIDIA GPU" in rtx.reason and "built" in rtx.reason
    assert get_backend("trt").name == "tensorrt" and get_backend("rtx").name == "tensorrt-rtx"
