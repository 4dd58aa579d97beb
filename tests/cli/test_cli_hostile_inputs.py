"""Issue 11: hostile or absurd inputs are user errors (exit 2) with a clear message, outputs never clobber inputs,
no symlink is followed when writing, messages print user text as written and never echo file contents."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper


def _string_input_model(path: Path) -> Path:
    graph = helper.make_graph([helper.make_node("Identity", ["s"], ["o"])], "strings",
                              [helper.make_tensor_value_info("s", TensorProto.STRING, [2])],
                              [helper.make_tensor_value_info("o", TensorProto.STRING, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _invalid_graph(path: Path) -> Path:
    """Parses, but a node reads a tensor nothing produces: the checker and onnxruntime both refuse it."""
    graph = helper.make_graph([helper.make_node("Relu", ["nope"], ["y"])], "bad",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


# --- exit 2, not 4 ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("--input", "x:99999999999x4"), ("16 GiB", "'x'", "99999999999x4")),
        (("--input", "x:99999999999999999999999x4"), ("19 digits",)),
        (("--input", "x:2x4", "--seed", "-1"), ("--seed -1", ">= 0")),
        (("--input", "x:2x4", "--val-range", "-1e308,1e308"), ("--val-range", "float32")),
        (("--input", "x:2x4", "--ort-graph-optimization", "max"), ("'max'", "extended")),
    ],
)
def test_absurd_options_are_user_errors(cli, user_error, mlp_model: Path, args: tuple[str, ...],
                                        needles: tuple[str, ...]) -> None:
    user_error(cli("run", mlp_model, *args), *needles)


def test_deeply_nested_json_feed(cli, user_error, mlp_model: Path, tmp_path: Path) -> None:
    feed = tmp_path / "deep.json"
    feed.write_text('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    user_error(cli("run", mlp_model, "--load-inputs", feed), "deep.json", "nested too deeply")


def test_npz_declaring_a_huge_array_is_refused_before_reading(cli, user_error, mlp_model: Path,
                                                               tmp_path: Path) -> None:
    import zipfile

    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 4), np.float32))
    header["shape"] = (10**12, 4)
    member = zipfile.ZipInfo("x.npy")
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as zf, zf.open(member, "w") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(b"\0" * 64)
    user_error(cli("run", mlp_model, "--load-inputs", tmp_path / "huge.npz"), "huge.npz", "16 GiB")


def test_string_input_model_is_refused_clearly(cli, user_error, tmp_path: Path) -> None:
    model = _string_input_model(tmp_path / "strings.onnx")
    user_error(cli("run", model), "'s'", "string", "--load-inputs")


def test_run_on_an_invalid_graph_says_so(cli, user_error, tmp_path: Path) -> None:
    model = _invalid_graph(tmp_path / "invalid.onnx")
    user_error(cli("run", model), "invalid.onnx", "ONNX checker", "'nope'", "--no-check")
    res = cli("run", model, "--no-check")  # left to the backends: a failed row
    assert res.code == 1, res.stderr


def test_optimize_missing_model_writes_no_report(cli, user_error, tmp_path: Path) -> None:
    user_error(cli("optimize", "nope.onnx", "--report", tmp_path / "rep"), "nope.onnx", "does not exist")
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("opset", ["²", "99999999999999999999999", "3"])
def test_export_bad_opset(cli, user_error, tmp_path: Path, opset: str) -> None:
    user_error(cli("export", "nothing.py:f", "-o", tmp_path / "o.onnx", "--opset", opset), "--opset", "'auto'")


# --- outputs never clobber inputs, never follow links ---------------------------------------------
def test_ort_save_optimized_onto_the_model_is_refused(cli, user_error, mlp_model: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(mlp_model.read_bytes())
    before = model.read_bytes()
    user_error(cli("run", model, "--input", "x:2x4", "--ort-save-optimized", model), "--ort-save-optimized",
               "same file", "m.onnx")
    link = tmp_path / "alias.onnx"
    link.symlink_to(model)  # another name of the same file
    user_error(cli("run", model, "--input", "x:2x4", "--ort-save-optimized", link), "same file")
    assert model.read_bytes() == before


def test_ort_save_optimized_does_not_follow_a_symlink(cli, mlp_model: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "opt.onnx"
    link.symlink_to(victim)
    res = cli("run", mlp_model, "--input", "x:2x4", "--ort-save-optimized", link)
    assert res.code == 0, res.stderr
    assert victim.read_text() == "keep me"
    assert not link.is_symlink()
    assert onnx.load(str(link)).graph.node  # onnxruntime's optimized graph, where the link was
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".opt.onnx")] == []  # no staging left


def test_save_outputs_never_overwrites_an_input(cli, user_error, mlp_model: Path, npz, tmp_path: Path) -> None:
    feed = npz("feed.npz", x=np.ones((2, 4), np.float32))
    user_error(cli("run", mlp_model, "--load-inputs", feed, "--save-outputs", feed), "--save-outputs",
               "--load-inputs", "feed.npz")
    same = tmp_path / "same.npz"
    user_error(cli("run", mlp_model, "--input", "x:2x4", "--save-inputs", same, "--save-outputs", same),
               "--save-inputs")
    # with two backends outputs go to STEM.BACKEND.npz: here out.ort.npz is the feed itself
    per_backend = npz("out.ort.npz", x=np.ones((2, 4), np.float32))
    user_error(cli("run", mlp_model, "--load-inputs", per_backend, "-b", "ort,ort", "--save-outputs",
                   tmp_path / "out.npz"), "out.ort.npz", "--load-inputs")
    np.testing.assert_array_equal(np.load(per_backend)["x"], np.ones((2, 4), np.float32))
    np.testing.assert_array_equal(np.load(feed)["x"], np.ones((2, 4), np.float32))


@pytest.mark.parametrize("option", ["--report", "--save-outputs", "--ort-save-optimized"])
def test_output_path_of_the_wrong_kind(cli, user_error, mlp_model: Path, tmp_path: Path, option: str) -> None:
    if option == "--report":
        target = tmp_path / "a-file"
        target.write_text("x")
    else:
        target = tmp_path / ("dir.npz" if option == "--save-outputs" else "dir.onnx")
        target.mkdir()
    user_error(cli("run", mlp_model, "--input", "x:2x4", option, target), str(target.name))


def test_export_output_onto_a_device_is_refused(cli, user_error) -> None:
    user_error(cli("export", "nothing.py:f", "-o", "/dev/null"), "/dev/null", "not a regular file")


# --- reading: only regular files ----------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_model_and_feed_do_not_hang(cli_subprocess, user_error, mlp_model: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    user_error(cli_subprocess("inspect", fifo, timeout=60), "pipe.onnx", "not a regular file")
    user_error(cli_subprocess("inspect", "/dev/zero", timeout=60), "/dev/zero", "not a regular file")
    feed = tmp_path / "pipe.npz"
    os.mkfifo(feed)
    user_error(cli_subprocess("run", mlp_model, "--load-inputs", feed, timeout=60), "pipe.npz", "not a regular file")


# --- messages -----------------------------------------------------------------------------------
def test_markup_and_emoji_codes_in_paths_are_printed_as_written(cli, user_error, tmp_path: Path) -> None:
    folder = tmp_path / ":x:[red]"
    folder.mkdir()
    res = cli("inspect", folder / "m:thumbs_up:.onnx")
    user_error(res, ":x:[red]/m:thumbs_up:.onnx")
    assert "❌" not in res.stderr and "👍" not in res.stderr


def test_messages_do_not_echo_file_contents(cli, user_error, mlp_model: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.onnx"
    text.write_text("SECRET-TOKEN-1234 is not a model\n")
    res = cli("inspect", text)
    user_error(res, "notes.onnx", "text file")
    assert "SECRET" not in res.stderr
    bad_json = tmp_path / "feed.json"
    bad_json.write_text('{"x": SECRET-TOKEN-5678}')
    res = cli("run", mlp_model, "--load-inputs", bad_json)
    user_error(res, "feed.json", "line 1")
    assert "SECRET" not in res.stderr
    import zipfile

    with zipfile.ZipFile(tmp_path / "bad.npz", "w") as zf:  # a .npy header numpy quotes in its error
        zf.writestr("x.npy", b"\x93NUMPY\x01\x00\x20\x00{'SECRET-TOKEN-9': 1}          \n")
    res = cli("run", mlp_model, "--load-inputs", tmp_path / "bad.npz")
    user_error(res, "bad.npz")
    assert "SECRET" not in res.stderr
    json.dumps(res.stderr)  # plain text
