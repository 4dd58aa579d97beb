from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from enginekit.errors import ModelLoadError, UserError
from enginekit.graph.load import external_data_files, load_model, model_tensors

SaveModel = Callable[[onnx.ModelProto, str], Path]  # the save_model fixture


def _set_location(model: onnx.ModelProto, tensor_name: str, location: str) -> None:
    for init in model.graph.initializer:
        if init.name == tensor_name:
            for entry in init.external_data:
                if entry.key == "location":
                    entry.value = location
            return
    raise KeyError(tensor_name)


def _external_model_pointing_to(external_mlp_path: Path, location: str) -> Path:
    """Rewrite the external MLP so that initializer W reads from ``location``."""
    model = onnx.load(str(external_mlp_path), load_external_data=False)
    _set_location(model, "W", location)
    onnx.save_model(model, str(external_mlp_path))
    return external_mlp_path


# --- good models -----------------------------------------------------------------------------


def test_loads_inline_model(mlp_path: Path) -> None:
    model = load_model(mlp_path)
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add", "Relu", "Reshape", "Shape", "Add"]
    assert external_data_files(model) == []


def test_loads_external_data_next_to_the_model(external_mlp_path: Path, mlp_model: onnx.ModelProto) -> None:
    assert (external_mlp_path.parent / "weights.bin").is_file()
    model = load_model(external_mlp_path)
    got = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    want = {i.name: numpy_helper.to_array(i) for i in mlp_model.graph.initializer}
    assert got.keys() == want.keys()
    for name, arr in want.items():
        np.testing.assert_array_equal(got[name], arr)
    assert all(i.data_location == TensorProto.DEFAULT for i in model.graph.initializer)
    assert external_data_files(model) == []


def test_loads_external_data_from_another_working_directory(
    external_mlp_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model = load_model(os.path.relpath(external_mlp_path, elsewhere))
    assert numpy_helper.to_array(model.graph.initializer[0]).shape == (4, 3)


def test_external_data_files_without_loading(external_mlp_path: Path) -> None:
    model = load_model(external_mlp_path, load_external_data=False)
    assert external_data_files(model) == ["weights.bin"]
    assert all(i.data_location == TensorProto.EXTERNAL for i in model.graph.initializer)


def test_symlink_inside_the_model_folder_is_allowed(external_mlp_path: Path) -> None:
    folder = external_mlp_path.parent
    (folder / "data").mkdir()
    (folder / "weights.bin").rename(folder / "data" / "real.bin")
    (folder / "weights.bin").symlink_to(folder / "data" / "real.bin")
    model = load_model(external_mlp_path)
    assert numpy_helper.to_array(model.graph.initializer[0]).shape == (4, 3)


def test_model_tensors_finds_subgraph_constants(if_model: onnx.ModelProto) -> None:
    refs = list(model_tensors(if_model))
    assert [(r.name, r.kind) for r in refs] == [("c", "constant")]
    assert "subgraph 'then_branch'" in refs[0].where


# --- unsafe external data --------------------------------------------------------------------


def test_refuses_location_that_climbs_out_of_the_folder(external_mlp_path: Path, tmp_path: Path) -> None:
    # The target exists and holds the right bytes: the refusal is about the path, not the file.
    (tmp_path / "escape.bin").write_bytes((external_mlp_path.parent / "weights.bin").read_bytes())
    path = _external_model_pointing_to(external_mlp_path, "../escape.bin")
    for load_data in (True, False):
        with pytest.raises(ModelLoadError) as info:
            load_model(path, load_external_data=load_data)
        msg = str(info.value)
        assert "Refusing" in msg and "'W'" in msg and "../escape.bin" in msg and "outside" in msg


def test_refuses_absolute_location(external_mlp_path: Path) -> None:
    absolute = str(external_mlp_path.parent / "weights.bin")  # exists, even inside the folder
    path = _external_model_pointing_to(external_mlp_path, absolute)
    with pytest.raises(ModelLoadError, match="absolute path") as info:
        load_model(path)
    assert "'W'" in str(info.value) and absolute in str(info.value)


def test_refuses_symlink_that_points_outside(external_mlp_path: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    (external_mlp_path.parent / "weights.bin").rename(outside)
    (external_mlp_path.parent / "weights.bin").symlink_to(outside)
    with pytest.raises(ModelLoadError, match="outside the model's folder") as info:
        load_model(external_mlp_path)
    assert "weights.bin" in str(info.value)


def test_missing_external_file_is_named(external_mlp_path: Path) -> None:
    (external_mlp_path.parent / "weights.bin").unlink()
    with pytest.raises(ModelLoadError, match="'weights.bin'.*does not exist") as info:
        load_model(external_mlp_path)
    assert info.value.hint is not None and "next to the model" in info.value.hint


def test_truncated_external_file(external_mlp_path: Path) -> None:
    weights = external_mlp_path.parent / "weights.bin"
    weights.write_bytes(weights.read_bytes()[:-5])
    with pytest.raises(ModelLoadError, match="too short"):
        load_model(external_mlp_path)


def test_external_length_that_does_not_match_the_shape(external_mlp_path: Path) -> None:
    model = onnx.load(str(external_mlp_path), load_external_data=False)
    model.graph.initializer[0].dims[:] = [2, 3]  # W really has 4x3 floats in the file
    onnx.save_model(model, str(external_mlp_path))
    with pytest.raises(ModelLoadError, match=r"need 24 bytes"):
        load_model(external_mlp_path, check=False)


# --- files that are not ONNX models ----------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist") as info:
        load_model(tmp_path / "nope.onnx")
    assert isinstance(info.value, UserError) and info.value.exit_code == 2


def test_directory(tmp_path: Path, mlp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"is a folder.*mlp\.onnx"):
        load_model(tmp_path)


def test_unreadable_file(mlp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def deny(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", deny)  # chmod 000 does not stop root
    with pytest.raises(ModelLoadError, match="Could not read model file.*Permission denied"):
        load_model(mlp_path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty"),
        (b"hello world\nthis is not a model\n", "text file"),
        (b'{"ir_version": 8, "graph": {}}', "text file"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "PNG image"),
        (b"PK\x03\x04" + bytes(200), "zip archive"),
        (b"\x80\x02}q\x00.", "pickle"),
        (bytes(range(256)), "ModelProto"),
    ],
    ids=["empty", "text", "json", "png", "zip", "pickle", "binary"],
)
def test_not_an_onnx_file(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=expected) as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_checker_failure_can_be_skipped(save_model: SaveModel) -> None:
    graph = helper.make_graph(
        [helper.make_node("NotAnOnnxOp", ["x"], ["y"])],
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), "bad.onnx")
    with pytest.raises(ModelLoadError, match="failed the ONNX checker.*NotAnOnnxOp") as info:
        load_model(path)
    assert info.value.hint is not None and "check=False" in info.value.hint
    assert load_model(path, check=False).graph.node[0].op_type == "NotAnOnnxOp"


def test_domain_without_opset_import_is_refused_even_unchecked(
    save_model: SaveModel, custom_domain_model: onnx.ModelProto
) -> None:
    del custom_domain_model.opset_import[1]
    path = save_model(custom_domain_model, "custom.onnx")
    with pytest.raises(ModelLoadError, match="'com.example'"):
        load_model(path, check=False)


# --- truncated files -------------------------------------------------------------------------


def _assert_every_cut_fails(path: Path, cuts: list[int], tmp_path: Path) -> None:
    data = path.read_bytes()
    cut_path = tmp_path / "cut" / "model.onnx"
    cut_path.parent.mkdir(exist_ok=True)
    for cut in cuts:
        assert 0 <= cut < len(data)
        cut_path.write_bytes(data[:cut])
        with pytest.raises(ModelLoadError) as info:
            load_model(cut_path)
        msg = str(info.value)
        assert str(cut_path) in msg, (cut, msg)
        assert info.value.hint, (cut, msg)


def test_every_prefix_of_a_small_model_fails(mlp_path: Path, tmp_path: Path) -> None:
    size = mlp_path.stat().st_size
    _assert_every_cut_fails(mlp_path, list(range(size)), tmp_path)


def test_every_prefix_of_a_two_opset_model_fails(
    save_model: SaveModel, custom_domain_model: onnx.ModelProto, tmp_path: Path
) -> None:
    path = save_model(custom_domain_model, "custom.onnx")
    _assert_every_cut_fails(path, list(range(path.stat().st_size)), tmp_path)


def test_every_prefix_of_an_external_data_model_fails(external_mlp_path: Path, tmp_path: Path) -> None:
    # The cut copies live in another folder, so only the .onnx file is cut: copy the weights too.
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "weights.bin").write_bytes((external_mlp_path.parent / "weights.bin").read_bytes())
    _assert_every_cut_fails(external_mlp_path, list(range(external_mlp_path.stat().st_size)), tmp_path)


def test_real_model_cut_at_many_points_fails(rapidocr_cls_path: Path, tmp_path: Path) -> None:
    size = rapidocr_cls_path.stat().st_size
    cuts = [0, 1, 2, size // 10, size // 2, size * 9 // 10, size - 2, size - 1]
    cuts += random.Random(0).sample(range(size), 40)
    _assert_every_cut_fails(rapidocr_cls_path, cuts, tmp_path)


def test_truncated_message_says_what_to_do(mlp_path: Path, tmp_path: Path) -> None:
    data = mlp_path.read_bytes()
    cut = tmp_path / "half.onnx"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError) as info:
        load_model(cut)
    text = str(info.value)
    assert f"{len(data) // 2} bytes" in text and "truncated" in text


def test_cut_that_drops_only_trailing_metadata_is_undetectable(
    save_model: SaveModel, mlp_model: onnx.ModelProto, tmp_path: Path
) -> None:
    """Documents the limit: protobuf has no end marker, and a model without metadata is valid."""
    plain = mlp_model.SerializeToString()
    helper.set_model_props(mlp_model, {"author": "tests"})
    full = mlp_model.SerializeToString()
    assert full.startswith(plain)  # metadata_props (field 14) is written after graph and opsets
    path = tmp_path / "cut.onnx"
    path.write_bytes(full[: len(plain)])
    assert not load_model(path).metadata_props
