"""enginekit.data: --input / --val-range parsing, shapes, seeded random feeds, validation, load/save."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from enginekit.data import (
    InputShape,
    ValueRange,
    check_feed,
    check_finite,
    load_arrays,
    parse_input_shape,
    parse_value_range,
    random_feed,
    resolve_shapes,
    save_arrays,
)
from enginekit.errors import FeedError, InvalidArgumentError, UserError
from enginekit.tensors import TensorSpec

X = TensorSpec("x", ("batch", 4), "float32")
STATIC = TensorSpec("img", (1, 3, 8, 8), "float32")


# --- parse_input_shape --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x:1x3x224x224", InputShape("x", (1, 3, 224, 224))),
        ("ids:1,128:int64", InputShape("ids", (1, 128), "int64")),
        ("x:7", InputShape("x", (7,))),
        ("input:0:1x3", InputShape("input:0", (1, 3))),
        ("input:0:1x3:float32", InputShape("input:0", (1, 3), "float32")),
        ("a:b:c:2x2:fp16", InputShape("a:b:c", (2, 2), "float16")),
        ("h:2x2:fp16", InputShape("h", (2, 2), "float16")),
        ("h:2x2:float16", InputShape("h", (2, 2), "float16")),
        ("h:2x2:half", InputShape("h", (2, 2), "float16")),
        ("h:2x2:FP32", InputShape("h", (2, 2), "float32")),
        ("h:2x2:i64", InputShape("h", (2, 2), "int64")),
        ("h:2x2:bool", InputShape("h", (2, 2), "bool")),
        ("t::float32", InputShape("t", (), "float32")),
    ],
)
def test_parse_input_shape(text: str, expected: InputShape) -> None:
    assert parse_input_shape(text) == expected


@pytest.mark.parametrize("text", ["x:1x3x224x224", "ids:1x128:int64", "input:0:1x3:float32", "t::float32"])
def test_input_shape_to_arg_roundtrip(text: str) -> None:
    parsed = parse_input_shape(text)
    assert parse_input_shape(parsed.to_arg()) == parsed


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("x", "missing ':'"),
        ("x:1xAx4", "'1xAx4'"),
        ("x:1x4:float99", "unknown dtype 'float99'"),
        ("x:1x4:string", "unknown dtype"),
        (":1x4", "empty input name"),
        ("x:0x4", ">= 1"),
        ("x:1x-4", "positive integers"),
        ("x:1.5x4", "positive integers"),
        ("x:1xx4", "positive integers"),
        ("x:int64", "positive integers"),
    ],
)
def test_parse_input_shape_errors(text: str, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match) as info:
        parse_input_shape(text)
    assert text in str(info.value)  # the message quotes what the user typed
    assert "NAME:DIMS" in str(info.value)  # and shows the expected form
    assert info.value.exit_code == 2


# --- parse_value_range --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x:0,255", ValueRange("x", 0.0, 255.0)),
        ("-1,1", ValueRange(None, -1.0, 1.0)),
        ("0.5,0.5", ValueRange(None, 0.5, 0.5)),
        ("x:-5,-1", ValueRange("x", -5.0, -1.0)),
        ("input:0:0,1e3", ValueRange("input:0", 0.0, 1000.0)),
        (":0,1", ValueRange(None, 0.0, 1.0)),
    ],
)
def test_parse_value_range(text: str, expected: ValueRange) -> None:
    assert parse_value_range(text) == expected


@pytest.mark.parametrize("text", ["x:5,1", "x:1", "x:1,2,3", "x:a,b", "", "x:nan,1", "x:0,inf", "x:-inf,0"])
def test_parse_value_range_errors(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match="--val-range") as info:
        parse_value_range(text)
    assert "LOW,HIGH" in str(info.value)


# --- resolve_shapes -----------------------------------------------------------------------------
def test_resolve_static_shape_from_model() -> None:
    assert resolve_shapes([STATIC], []) == {"img": (1, 3, 8, 8)}


def test_resolve_given_shape() -> None:
    assert resolve_shapes([X, STATIC], [InputShape("x", (5, 4))]) == {"x": (5, 4), "img": (1, 3, 8, 8)}


def test_resolve_given_shape_overrides_static_when_equal() -> None:
    assert resolve_shapes([STATIC], [InputShape("img", (1, 3, 8, 8), "float32")]) == {"img": (1, 3, 8, 8)}


def test_resolve_symbolic_needs_input() -> None:
    with pytest.raises(FeedError) as info:
        resolve_shapes([X], [])
    msg = str(info.value)
    assert "'x'" in msg and "'batch'" in msg and "axis 0" in msg
    assert "--input x:1x4" in msg
    assert "[batch, 4]" in msg


def test_resolve_unnamed_dynamic_dim() -> None:
    spec = TensorSpec("x", ("?", 3, "?", "?"), "float32")
    with pytest.raises(FeedError, match=r"--input x:1x3x1x1"):
        resolve_shapes([spec], [])


@pytest.mark.parametrize("shape", [(2, 5), (2, 4, 1), (4,)])
def test_resolve_shape_that_does_not_fit(shape: tuple[int, ...]) -> None:
    with pytest.raises(FeedError) as info:
        resolve_shapes([X], [InputShape("x", shape)])
    msg = str(info.value)
    assert str(list(shape)) in msg and "[batch, 4]" in msg


def test_resolve_dtype_mismatch() -> None:
    with pytest.raises(FeedError, match="int64.*float32"):
        resolve_shapes([X], [InputShape("x", (2, 4), "int64")])


def test_resolve_unknown_name_suggests() -> None:
    with pytest.raises(FeedError) as info:
        resolve_shapes([TensorSpec("input_ids", ("b", 8), "int64")], [InputShape("input_id", (1, 8))])
    msg = str(info.value)
    assert "'input_id'" in msg and "did you mean 'input_ids'" in msg and "Model inputs: input_ids" in msg


def test_resolve_unknown_rank() -> None:
    spec = TensorSpec("x", None, "float32")
    with pytest.raises(FeedError, match="unknown rank"):
        resolve_shapes([spec], [])
    assert resolve_shapes([spec], [InputShape("x", (2, 3, 4))]) == {"x": (2, 3, 4)}


# --- random_feed --------------------------------------------------------------------------------
SPECS = [
    TensorSpec("x", ("b", 4), "float32"),
    TensorSpec("input_ids", ("b", 16), "int64"),
    TensorSpec("attention_mask", ("b", 16), "int64"),
    TensorSpec("token_type_ids", ("b", 16), "int32"),
    TensorSpec("flags", ("b", 16), "bool"),
    TensorSpec("h", (3,), "float16"),
]
SHAPES = {"x": (8, 4), "input_ids": (8, 16), "attention_mask": (8, 16), "token_type_ids": (8, 16),
          "flags": (8, 16), "h": (3,)}


def test_random_feed_dtypes_and_shapes() -> None:
    feed = random_feed(SPECS, SHAPES)
    assert list(feed) == [s.name for s in SPECS]
    for spec in SPECS:
        assert feed[spec.name].dtype == np.dtype(spec.dtype)
        assert feed[spec.name].shape == SHAPES[spec.name]
    check_feed(SPECS, feed)  # what we generate always fits


def test_random_feed_same_seed_identical() -> None:
    a, b = random_feed(SPECS, SHAPES, seed=11), random_feed(SPECS, SHAPES, seed=11)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_random_feed_different_seed_differs() -> None:
    a, b = random_feed(SPECS, SHAPES, seed=11), random_feed(SPECS, SHAPES, seed=12)
    assert not np.array_equal(a["x"], b["x"])
    assert not np.array_equal(a["input_ids"], b["input_ids"])


def test_random_feed_default_ranges() -> None:
    feed = random_feed(SPECS, SHAPES)
    assert 0.0 <= feed["x"].min() and feed["x"].max() < 1.0
    assert 0 <= feed["input_ids"].min() and feed["input_ids"].max() <= 100
    assert (feed["attention_mask"] == 1).all()
    assert set(np.unique(feed["token_type_ids"])) <= {0, 1}
    assert feed["flags"].dtype == np.bool_


def test_random_feed_int_range_is_inclusive() -> None:
    spec = TensorSpec("ids", (4000,), "int64")
    feed = random_feed([spec], {"ids": (4000,)}, ranges=[ValueRange("ids", 3, 5)])
    assert set(np.unique(feed["ids"]).tolist()) == {3, 4, 5}


def test_random_feed_int_single_value_range() -> None:
    spec = TensorSpec("ids", (10,), "int32")
    feed = random_feed([spec], {"ids": (10,)}, ranges=[ValueRange(None, 7, 7)])
    assert (feed["ids"] == 7).all() and feed["ids"].dtype == np.int32


def test_random_feed_int_range_clipped_to_dtype() -> None:
    spec = TensorSpec("pix", (5000,), "uint8")
    feed = random_feed([spec], {"pix": (5000,)}, ranges=[ValueRange(None, -10, 1000)])
    assert feed["pix"].dtype == np.uint8
    assert feed["pix"].min() == 0 and feed["pix"].max() == 255


def test_random_feed_int_range_without_integer() -> None:
    spec = TensorSpec("ids", (4,), "int64")
    with pytest.raises(InvalidArgumentError, match="'ids'"):
        random_feed([spec], {"ids": (4,)}, ranges=[ValueRange("ids", 0.2, 0.8)])


def test_random_feed_bool_covers_both_values() -> None:
    spec = TensorSpec("flags", (1000,), "bool")
    feed = random_feed([spec], {"flags": (1000,)})
    assert set(np.unique(feed["flags"]).tolist()) == {False, True}


def test_random_feed_named_range_beats_global_range() -> None:
    specs = [TensorSpec("a", (500,), "float32"), TensorSpec("b", (500,), "float32")]
    feed = random_feed(specs, {"a": (500,), "b": (500,)},
                       ranges=[ValueRange("a", 10, 11), ValueRange(None, -2, -1)])
    assert 10 <= feed["a"].min() and feed["a"].max() <= 11
    assert -2 <= feed["b"].min() and feed["b"].max() <= -1


def test_random_feed_range_of_unknown_input() -> None:
    with pytest.raises(FeedError, match="'q'"):
        random_feed([X], {"x": (2, 4)}, ranges=[ValueRange("q", 0, 1)])


# --- check_feed / check_finite ------------------------------------------------------------------
def test_check_feed_ok() -> None:
    check_feed([X], {"x": np.zeros((3, 4), np.float32)})


def test_check_feed_missing_and_extra() -> None:
    with pytest.raises(FeedError) as info:
        check_feed([X], {"y": np.zeros((3, 4), np.float32)}, where="my feed")
    msg = str(info.value)
    assert msg.startswith("my feed")
    assert "missing x" in msg and "unexpected y" in msg and "Model inputs: x" in msg


def test_check_feed_dtype_names_both() -> None:
    with pytest.raises(FeedError) as info:
        check_feed([X], {"x": np.zeros((3, 4), np.float64)})
    msg = str(info.value)
    assert "'x'" in msg and "float64" in msg and "float32" in msg


def test_check_feed_shape_names_both() -> None:
    with pytest.raises(FeedError) as info:
        check_feed([X], {"x": np.zeros((3, 5), np.float32)})
    msg = str(info.value)
    assert "[3, 5]" in msg and "[batch, 4]" in msg


def test_check_feed_not_an_array() -> None:
    with pytest.raises(FeedError, match="list"):
        check_feed([X], {"x": [[0.0] * 4]})  # type: ignore[dict-item]


def test_check_finite() -> None:
    check_finite({"ids": np.array([1, 2]), "x": np.zeros(3, np.float32), "e": np.zeros(0, np.float32)})
    bad = np.array([1.0, np.nan, np.inf, -np.inf], np.float16)
    with pytest.raises(FeedError) as info:
        check_finite({"x": bad}, where="here")
    msg = str(info.value)
    assert msg.startswith("here") and "1 NaN" in msg and "2 Inf" in msg and "--allow-nonfinite" in msg


# --- load_arrays ----------------------------------------------------------------------------------
def test_load_npz_roundtrip(tmp_path: Path) -> None:
    arrays = {"a": np.arange(6, dtype=np.int32).reshape(2, 3), "b": np.ones(2, np.float16), "c": np.array(True)}
    np.savez(tmp_path / "f.npz", **arrays)  # type: ignore[arg-type]
    loaded = load_arrays(tmp_path / "f.npz")
    assert list(loaded) == ["a", "b", "c"]
    for k, v in arrays.items():
        assert loaded[k].dtype == v.dtype
        np.testing.assert_array_equal(loaded[k], v)


def test_load_json_dtypes(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_text(json.dumps({
        "floats": [[0.5, 1.5]],
        "ints": [1, 2, 3],
        "bools": [True, False],
        "half": {"data": [1, 2], "dtype": "fp16"},
        "f64": {"data": [0.1], "dtype": "float64"},
        "ids": {"data": [[7]], "dtype": "int32"},
        "scalar": 3.5,
    }))
    got = load_arrays(path)
    assert got["floats"].dtype == np.float32 and got["floats"].shape == (1, 2)
    assert got["ints"].dtype == np.int64
    assert got["bools"].dtype == np.bool_
    assert got["half"].dtype == np.float16
    assert got["f64"].dtype == np.float64
    assert got["ids"].dtype == np.int32 and got["ids"].shape == (1, 1)
    assert got["scalar"].shape == () and got["scalar"].dtype == np.float32


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"x": {"data": [1], "dtype": "float99"}}', "float99"),
        ('{"x": [[1, 2], [3]]}', "'x'"),
        ('{"x": ["a", "b"]}', "'x'"),
        ('{"x": [{"a": 1}]}', "'x'"),
        ("[1, 2, 3]", "JSON object"),
        ("{not json", "f.json"),
    ],
)
def test_load_json_errors(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "f.json"
    path.write_text(content)
    with pytest.raises(FeedError, match=match):
        load_arrays(path)


def test_load_json_entry_without_data(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_text('{"x": {"dtype": "float32"}}')
    with pytest.raises(FeedError, match="'x'"):
        load_arrays(path)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FeedError, match="nothing.npz"):
        load_arrays(tmp_path / "nothing.npz")


def test_load_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(FeedError, match="dir.npz"):
        load_arrays(tmp_path / "dir.npz")


def test_load_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "f.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(FeedError, match=r"\.npy"):
        load_arrays(path)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04" + b"junk" * 50, b"\x93NUMPY not really"])
def test_load_corrupt_npz(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(FeedError, match="bad.npz"):
        load_arrays(path)


class _Exploit:
    """Unpickling this creates a folder: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


def test_load_npz_never_unpickles(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([_Exploit(marker)], dtype=object))
    with pytest.raises(FeedError) as info:
        load_arrays(path)
    assert isinstance(info.value, UserError)
    assert "evil.npz" in str(info.value)
    assert not marker.exists()


# --- save_arrays ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["out.npy", "out.json", "out", "out.npz.txt"])
def test_save_refuses_other_suffixes(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"\.npz"):
        save_arrays(tmp_path / name, {"y": np.zeros(2)})
    assert list(tmp_path.iterdir()) == []


def test_save_roundtrip_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "dir" / "out.NPZ"
    arrays = {"y": np.arange(4, dtype=np.float32), "ids": np.array([[1, 2]], np.int64)}
    assert save_arrays(target, arrays) == target
    assert [p.name for p in target.parent.iterdir()] == ["out.NPZ"]
    loaded = load_arrays(target)
    for k, v in arrays.items():
        np.testing.assert_array_equal(loaded[k], v)
        assert loaded[k].dtype == v.dtype


def test_save_overwrites_atomically(tmp_path: Path) -> None:
    target = tmp_path / "out.npz"
    save_arrays(target, {"a": np.zeros(3)})
    save_arrays(target, {"b": np.ones(2)})
    assert list(load_arrays(target)) == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]


def test_save_failure_leaves_no_temp_file(tmp_path: Path) -> None:
    from enginekit.fileutil import atomic_write_bytes

    target = tmp_path / "out.npz"
    target.mkdir()  # cannot be replaced by a file
    with pytest.raises(UserError, match="is a folder"):
        save_arrays(target, {"a": np.zeros(3)})
    with pytest.raises(UserError, match="is a folder"):  # refused before any temp file exists
        atomic_write_bytes(target, b"data")
    with pytest.raises(TypeError):  # a failure after the temp file was created: the writer removes it
        atomic_write_bytes(tmp_path / "other.bin", 123)  # type: ignore[arg-type]
    assert [p.name for p in tmp_path.iterdir()] == ["out.npz"]


def test_save_refuses_object_arrays(tmp_path: Path) -> None:
    target = tmp_path / "out.npz"
    with pytest.raises(UserError):
        save_arrays(target, {"a": np.array([{"k": 1}], dtype=object)})
    assert list(tmp_path.iterdir()) == []
