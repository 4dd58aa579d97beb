"""enginekit.backends.tensorrt.profiles: --profile parsing, grouping, validation, --profile-from, trtexec, JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from enginekit.backends.tensorrt.profiles import (
    Profile,
    ShapeRange,
    example_profile_arg,
    missing_profiles_error,
    parse_profiles,
    parse_shape_range,
    profiles_from_feeds,
    profiles_to_args,
    select_profile,
    trtexec_args,
    validate_profiles,
)
from enginekit.errors import EXIT_USER_ERROR, FeedError, InvalidArgumentError, UnknownNameError
from enginekit.graph.io import input_specs
from enginekit.tensors import TensorSpec

IMG = TensorSpec("x", ("batch", 3, "h", "w"), "float32")
IDS = TensorSpec("ids", ("batch", "seq"), "int64")
MASK = TensorSpec("mask", ("batch", "seq"), "int64")
SCALE = TensorSpec("scale", (1, 2), "float32")


def rng(name: str, mn: tuple[int, ...], opt: tuple[int, ...], mx: tuple[int, ...]) -> ShapeRange:
    return ShapeRange(name, mn, opt, mx)


# ---------------------------------------------------------------------------------------------- parsing


def test_parse_basic_and_separators() -> None:
    r = parse_shape_range("x:1x3x32x32:1x3x192x192:1x3x1472x1224")
    assert r == ShapeRange("x", (1, 3, 32, 32), (1, 3, 192, 192), (1, 3, 1472, 1224))
    assert r.rank == 4
    assert parse_shape_range("ids:1,16:4,128:8,512") == ShapeRange("ids", (1, 16), (4, 128), (8, 512))
    assert parse_shape_range(" x : 2X3 : 2x3 : 2x3 ").opt == (2, 3)


def test_parse_name_with_colons() -> None:
    r = parse_shape_range("input:0:1x3:2x3:4x3")
    assert r.name == "input:0" and r.min == (1, 3) and r.opt == (2, 3) and r.max == (4, 3)
    assert parse_shape_range("a:b:c:1:2:3").name == "a:b:c"
    assert parse_shape_range(r.to_arg()) == r


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("x:1x3:1x3", ["got 3", "need 4"]),
        ("x", ["got 1"]),
        (":1x3:1x3:1x3", ["empty input name"]),
        ("x:1x0:1x3:1x3", ["MIN dim 1 is 0", "between 1 and"]),
        ("x:1x3:1x3:0x3", ["MAX dim 0 is 0"]),
        ("x:-1x3:1x3:1x3", ["-1 is not allowed"]),
        ("x:1x3:1xax3:1x3", ["OPT '1xax3'"]),
        ("x:1x3:1x3x1:1x3", ["same rank", "2, 3 and 2"]),
        ("x:1x3:1x3:1x99999999999", ["MAX dim 1 is 99999999999"]),
    ],
)
def test_parse_errors(text: str, words: list[str]) -> None:
    with pytest.raises(InvalidArgumentError) as exc:
        parse_shape_range(text)
    assert exc.value.exit_code == EXIT_USER_ERROR
    for w in words:
        assert w in str(exc.value)


def test_parse_scalar() -> None:
    assert parse_shape_range("t:::") == ShapeRange("t", (), (), ())


# --------------------------------------------------------------------------------------------- grouping


def test_grouping_repeated_name_starts_new_profile() -> None:
    vals = ["x:1x4:2x4:4x4", "y:1:1:2", "x:5x4:6x4:8x4", "y:3:3:3"]
    profiles = parse_profiles(vals)
    assert len(profiles) == 2
    assert profiles[0].names() == ("x", "y") and profiles[1].names() == ("x", "y")
    assert profiles[1].get("x") == ShapeRange("x", (5, 4), (6, 4), (8, 4))
    assert profiles[0].get("nope") is None


def test_grouping_single_input_and_empty() -> None:
    assert [p.names() for p in parse_profiles(["x:1:1:1", "x:2:2:2", "x:3:3:3"])] == [("x",), ("x",), ("x",)]
    assert parse_profiles([]) == ()
    # reordered names in the second profile: the repeat of 'y' starts it
    ps = parse_profiles(["x:1:1:1", "y:1:1:1", "y:2:2:2", "x:2:2:2"])
    assert [p.names() for p in ps] == [("x", "y"), ("y", "x")]


def test_profiles_to_args_round_trip() -> None:
    ps = validate_profiles(parse_profiles(["ids:1x8:1x64:4x128", "mask:1x8:1x64:4x128",
                                           "ids:8x8:8x64:8x128", "mask:8x8:8x64:8x128"]), [IDS, MASK])
    args = profiles_to_args(ps)
    assert args[:2] == ["--profile", "ids:1x8:1x64:4x128"]
    assert parse_profiles(args[1::2]) == ps


# ------------------------------------------------------------------------------------------- validation


def _err(profiles: tuple[Profile, ...], specs: list[TensorSpec]) -> str:
    with pytest.raises(InvalidArgumentError) as exc:
        validate_profiles(profiles, specs)
    assert exc.value.exit_code == EXIT_USER_ERROR
    return str(exc.value)


def test_validate_ok_and_completes_static_inputs() -> None:
    ps = parse_profiles(["x:1x3x32x32:1x3x192x192:4x3x1472x1224"])
    out = validate_profiles(ps, [IMG, SCALE])
    assert len(out) == 1
    assert out[0].names() == ("x", "scale")  # model order, static input added
    assert out[0].get("scale") == ShapeRange("scale", (1, 2), (1, 2), (1, 2))
    assert out[0].get("x") == ps[0].get("x")


def test_validate_min_opt_max_order() -> None:
    ps = parse_profiles(["x:1x3x32x32:1x3x192x192:1x3x1472x1224", "x:1x3x64x64:1x3x32x64:1x3x128x128"])
    msg = _err(ps, [IMG])
    assert "Profile 1" in msg and "'x'" in msg and "dim 2" in msg
    assert "MIN 64, OPT 32, MAX 128" in msg


def test_validate_rank() -> None:
    msg = _err(parse_profiles(["x:1x3x32:1x3x32:1x3x32"]), [IMG])
    assert "Profile 0" in msg and "'x'" in msg and "rank 4" in msg and "rank 3" in msg
    assert "[batch, 3, h, w]" in msg


def test_validate_fixed_dim() -> None:
    msg = _err(parse_profiles(["x:1x3x32x32:1x3x64x64:1x4x128x128"]), [IMG])
    assert "Profile 0" in msg and "'x'" in msg and "dim 1" in msg
    assert "fixes this dim to 3" in msg and "the profile has MAX 4 (" in msg


def test_validate_static_input_profile() -> None:
    ok = validate_profiles(parse_profiles(["x:1x3x8x8:1x3x8x8:1x3x8x8", "scale:1x2:1x2:1x2"]), [IMG, SCALE])
    assert ok[0].get("scale") == ShapeRange("scale", (1, 2), (1, 2), (1, 2))
    msg = _err(parse_profiles(["x:1x3x8x8:1x3x8x8:1x3x8x8", "scale:1x2:1x2:2x2"]), [IMG, SCALE])
    assert "Profile 0" in msg and "'scale'" in msg and "dim 0" in msg and "MAX 2" in msg
    assert "is static" in msg and "1x2 as MIN, OPT and MAX" in msg
    # a fully static model may have profiles, and needs none
    assert validate_profiles((), [SCALE]) == ()
    assert validate_profiles(parse_profiles(["scale:1x2:1x2:1x2"]), [SCALE])[0].names() == ("scale",)


def test_validate_missing_dynamic_input() -> None:
    with pytest.raises(InvalidArgumentError) as exc:
        validate_profiles(parse_profiles(["ids:1x8:1x64:4x128", "mask:1x8:1x64:4x128", "ids:8x8:8x8:8x8"]),
                          [IDS, MASK])
    msg = str(exc.value)
    assert "Profile 1 of 2" in msg and "'mask'" in msg and "[batch, seq]" in msg
    assert "dim 0 'batch'" in msg and "dim 1 'seq'" in msg
    assert "--profile mask:1x1:1x256:8x1024" in msg  # example from the model shape


def test_validate_unknown_name_suggests() -> None:
    with pytest.raises(UnknownNameError) as exc:
        validate_profiles(parse_profiles(["image:1x3x8x8:1x3x8x8:1x3x8x8"]),
                          [TensorSpec("images", IMG.shape, "float32")])
    msg = str(exc.value)
    assert exc.value.exit_code == EXIT_USER_ERROR
    assert "Profile 0" in msg and "'image'" in msg and "did you mean 'images'" in msg


def test_validate_duplicate_name_in_profile() -> None:
    r = rng("x", (1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8))
    assert "twice" in _err((Profile((r, r)),), [IMG])


def test_validate_nonpositive_and_ragged_direct_construction() -> None:
    msg = _err((Profile((rng("x", (0, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8)),)),), [IMG])
    assert "dim 0" in msg and "MIN 0" in msg
    msg = _err((Profile((rng("x", (1, 3, 8), (1, 3, 8, 8), (1, 3, 8, 8)),)),), [IMG])
    assert "ranks 3, 4 and 4" in msg


def test_validate_shared_dim_names_must_overlap() -> None:
    msg = _err(parse_profiles(["ids:1x8:1x16:1x32", "mask:1x64:1x64:1x128"]), [IDS, MASK])
    assert "Profile 0" in msg and "'seq'" in msg and "[8, 32]" in msg and "[64, 128]" in msg
    ok = validate_profiles(parse_profiles(["ids:1x8:1x16:1x32", "mask:1x16:1x16:1x64"]), [IDS, MASK])
    assert len(ok) == 1


def test_unknown_rank_input_accepts_any_rank() -> None:
    spec = TensorSpec("t", None, "float32")
    assert validate_profiles(parse_profiles(["t:1:2:3"]), [spec])[0].get("t") == ShapeRange("t", (1,), (2,), (3,))
    assert "unknown rank" in _err((), [spec])


def test_missing_profiles_error_lists_every_dynamic_input() -> None:
    err = missing_profiles_error([IMG, SCALE, IDS])
    text = str(err)
    assert isinstance(err, InvalidArgumentError) and err.exit_code == EXIT_USER_ERROR
    assert "'x' [batch, 3, h, w]" in text and "dim 2 'h'" in text and "dim 3 'w'" in text
    assert "'ids' [batch, seq]" in text and "'scale'" not in text
    assert "--profile x:1x3x1x1:1x3x256x256:8x3x1024x1024" in text
    assert "--profile ids:1x1:1x256:8x1024" in text
    assert "--profile-from" in text
    # validate_profiles raises it when nothing was given
    with pytest.raises(InvalidArgumentError, match="no optimization profile"):
        validate_profiles((), [IMG])


def test_real_model_ocr_det(ocr_det_model: Path) -> None:
    specs = input_specs(onnx.load(str(ocr_det_model)))
    assert [s.name for s in specs] == ["x"] and specs[0].shape is not None and specs[0].shape[1] == 3
    out = validate_profiles(parse_profiles(["x:1x3x32x32:1x3x192x192:1x3x1472x1224"]), specs)
    assert trtexec_args(out[0])[2] == "--maxShapes=x:1x3x1472x1224"
    msg = str(missing_profiles_error(specs))
    assert "'x'" in msg and "dim 0" in msg and "dim 2" in msg and "dim 3" in msg
    assert f"--profile {example_profile_arg(specs[0])}" in msg
    msg = _err(parse_profiles(["x:1x1x32x32:1x1x32x32:1x1x32x32"]), specs)
    assert "dim 1" in msg and "fixes this dim to 3" in msg


# -------------------------------------------------------------------------------------------- selection


def test_select_profile() -> None:
    ps = parse_profiles(["x:1x3x8x8:1x3x16x16:1x3x32x32", "x:1x3x33x33:1x3x64x64:1x3x128x128"])
    assert select_profile(ps, {"x": (1, 3, 20, 20)}) == 0
    assert select_profile(ps, {"x": (1, 3, 100, 40)}) == 1
    assert select_profile(ps, {"x": (1, 3, 200, 40)}) is None
    assert select_profile(ps, {"x": (1, 3, 20)}) is None


# ------------------------------------------------------------------------------------------- from feeds


def test_profiles_from_one_npz(tmp_path: Path) -> None:
    f = tmp_path / "feed.npz"
    np.savez(f, ids=np.zeros((2, 7), np.int64), mask=np.ones((2, 7), np.int64))
    p = profiles_from_feeds(f)
    assert p.get("ids") == ShapeRange("ids", (2, 7), (2, 7), (2, 7))
    assert p.names() == ("ids", "mask")


def test_profiles_from_folder(tmp_path: Path) -> None:
    shapes = [(1, 3, 32, 48), (1, 3, 64, 64), (2, 3, 64, 64), (1, 3, 64, 64), (1, 3, 128, 96), (1, 3, 128, 96)]
    for k, s in enumerate(shapes):
        np.savez(tmp_path / f"f{k:02d}.npz", x=np.zeros(s, np.float32))
    (tmp_path / "notes.txt").write_text("ignored")
    p = profiles_from_feeds(tmp_path)
    r = p.get("x")
    assert r is not None
    assert r.min == (1, 3, 32, 48) and r.max == (2, 3, 128, 96)
    assert r.opt == (1, 3, 128, 96)  # tie between 64x64 and 128x96 (2 each): the larger wins
    assert validate_profiles((p,), [IMG])[0].get("x") == r


def test_profiles_from_folder_most_common_wins(tmp_path: Path) -> None:
    for k, s in enumerate([(1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 16, 16)]):
        np.savez(tmp_path / f"{k}.npz", x=np.zeros(s, np.float32))
    r = profiles_from_feeds(tmp_path).get("x")
    assert r is not None and r.opt == (1, 3, 8, 8) and r.max == (1, 3, 16, 16)


def test_profiles_from_feeds_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    with pytest.raises(InvalidArgumentError, match="no .npz files"):
        profiles_from_feeds(empty)
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        profiles_from_feeds(tmp_path / "nope.npz")

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    np.savez(mixed / "a.npz", ids=np.zeros((1, 4), np.int64), mask=np.zeros((1, 4), np.int64))
    np.savez(mixed / "b.npz", ids=np.zeros((1, 5), np.int64))
    with pytest.raises(FeedError) as exc:
        profiles_from_feeds(mixed)
    assert "b.npz" in str(exc.value) and "'mask'" in str(exc.value)

    ragged = tmp_path / "ragged"
    ragged.mkdir()
    np.savez(ragged / "a.npz", x=np.zeros((1, 4), np.float32))
    np.savez(ragged / "b.npz", x=np.zeros((1, 4, 1), np.float32))
    with pytest.raises(FeedError, match=r"rank 3 in .*b\.npz"):
        profiles_from_feeds(ragged)

    zero = tmp_path / "zero.npz"
    np.savez(zero, x=np.zeros((0, 4), np.float32))
    with pytest.raises(FeedError, match="empty dim"):
        profiles_from_feeds(zero)


def test_profiles_from_feeds_refuses_pickle(tmp_path: Path) -> None:
    f = tmp_path / "obj.npz"
    np.savez(f, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(FeedError):
        profiles_from_feeds(f)


# ------------------------------------------------------------------------------------ trtexec and JSON


def test_trtexec_args() -> None:
    p = parse_profiles(["x:1x3x32x32:1x3x192x192:1x3x1472x1224", "input:0:1,8:2,8:4,8"])[0]
    assert trtexec_args(p) == [
        "--minShapes=x:1x3x32x32,'input:0':1x8",
        "--optShapes=x:1x3x192x192,'input:0':2x8",
        "--maxShapes=x:1x3x1472x1224,'input:0':4x8",
    ]


def test_to_dict_from_dict_round_trip() -> None:
    ps = validate_profiles(parse_profiles(["x:1x3x32x32:1x3x64x64:2x3x128x128", "x:4x3x8x8:4x3x8x8:4x3x8x8"]),
                           [IMG, SCALE])
    data = json.loads(json.dumps([p.to_dict() for p in ps]))
    assert data[0]["shapes"][0] == {"name": "x", "min": [1, 3, 32, 32], "opt": [1, 3, 64, 64], "max": [2, 3, 128, 128]}
    back = tuple(Profile.from_dict(d) for d in data)
    assert back == ps
    assert all(isinstance(d, int) for d in back[0].shapes[0].min)


@pytest.mark.parametrize(
    "bad",
    [
        {"shapes": [{"name": "x", "min": [1], "opt": [1]}]},
        {"shapes": [{"name": "x", "min": [0], "opt": [1], "max": [1]}]},
        {"shapes": [{"name": "x", "min": [True], "opt": [1], "max": [1]}]},
        {"shapes": [{"min": [1], "opt": [1], "max": [1]}]},
        {"shapes": "x"},
        {},
    ],
)
def test_from_dict_refuses_malformed(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError):
        Profile.from_dict(bad)


def test_module_imports_no_tensorrt() -> None:
    code = ("import sys, enginekit.backends.tensorrt.profiles as m; "
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('tensorrt', 'tensorrt_rtx', 'onnx')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
