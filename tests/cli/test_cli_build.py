"""`enginekit build` from the command line (TensorRT-RTX builds on CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from enginekit.examples import digits

pytest.importorskip("tensorrt_rtx")
EXE = str(Path(sys.executable).with_name("enginekit"))


def _run(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, "build", str(digits.onnx_path()), "--backend", "tensorrt-rtx", "--cache-dir",
                           str(cache), *args], capture_output=True, text=True, timeout=300)


def test_build_json_then_cache_hit(tmp_path: Path) -> None:
    out = tmp_path / "d.engine"
    args = ("--profile", "x:1x1x8x8:8x1x8x8:64x1x8x8", "--compute-capability", "8.6", "-o", str(out), "--json")
    first = _run(*args, cache=tmp_path / "c")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["cached"] is False and doc["manifest"]["profiles"][0]["shapes"][0]["opt"] == [8, 1, 8, 8]
    assert out.is_file() and Path(str(out) + ".json").is_file()
    second = _run(*args, cache=tmp_path / "c")
    assert second.returncode == 0 and json.loads(second.stdout)["cached"] is True
    listing = subprocess.run([EXE, "cache", "list", "--cache-dir", str(tmp_path / "c"), "--json"],
                             capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0 and len(json.loads(listing.stdout)["entries"]) == 1


def test_build_user_errors_exit_2(tmp_path: Path) -> None:
    no_profile = _run(cache=tmp_path / "c")
    assert no_profile.returncode == 2 and "--profile" in no_profile.stderr and "Traceback" not in no_profile.stderr
    bad = _run("--profile", "x:8x1x8x8:4x1x8x8:16x1x8x8", cache=tmp_path / "c")
    assert bad.returncode == 2 and "dim 0" in bad.stderr
    int8 = _run("--profile", "x:1x1x8x8:8x1x8x8:64x1x8x8", "--precision", "int8", cache=tmp_path / "c")
    assert int8.returncode == 2 and "--calib-data" in int8.stderr
    hopper = _run("--profile", "x:1x1x8x8:8x1x8x8:64x1x8x8", "--compute-capability", "9.0", cache=tmp_path / "c")
    assert hopper.returncode == 2 and "targets" in hopper.stderr


def test_parser_failure_exits_1_with_node_name(tmp_path: Path, contrib_model: Path) -> None:
    res = subprocess.run([EXE, "build", str(contrib_model), "--backend", "tensorrt-rtx", "--cache-dir",
                          str(tmp_path / "c")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "FusedMatMul" in res.stderr and "Traceback" not in res.stderr


def test_paddleocr_classifier_builds_with_question_mark_dims(tmp_path: Path, ocr_cls_model: Path) -> None:
    """The issue's command: x [?, 3, ?, ?] with H 48 and W 192 failed with TensorRT-RTX's raw Error Code 4."""
    cmd = [EXE, "build", str(ocr_cls_model), "--backend", "tensorrt-rtx", "--profile",
           "x:1x3x48x192:4x3x48x192:8x3x48x192", "--cache-dir", str(tmp_path / "c")]
    res = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)  # stdout is the JSON document only
    assert [r["new"] for r in doc["manifest"]["renamed_dims"]] == ["x_dim2", "x_dim3"]
    assert isinstance(doc["manifest"]["warnings"], list)
    text = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert text.returncode == 0, text.stderr
    assert "renamed input dims TensorRT would force equal: x dim 2 '?' -> 'x_dim2', x dim 3 '?' -> 'x_dim3'" \
        in text.stdout
    kept = subprocess.run([*cmd, "--keep-dim-names"], capture_output=True, text=True, timeout=300)
    assert kept.returncode == 2 and "share the dim name '?'" in kept.stderr and "Traceback" not in kept.stderr


def test_no_cache_prints_the_plan_size(tmp_path: Path) -> None:
    out = tmp_path / "d.engine"
    res = _run("--profile", "x:1x1x8x8:8x1x8x8:64x1x8x8", "--compute-capability", "8.6", "--no-cache", "-o", str(out),
               cache=tmp_path / "c")
    assert res.returncode == 0, res.stderr
    assert f"plan {out.stat().st_size} bytes" in res.stdout


def test_outputs_never_clobber_inputs_exit_2(tmp_path: Path, cli, user_error) -> None:  # type: ignore[no-untyped-def]
    model = tmp_path / "digits.onnx"
    model.write_bytes(digits.onnx_path().read_bytes())
    (tmp_path / "model.engine").symlink_to(model)
    base = ("build", model, "--backend", "tensorrt-rtx", "--cache-dir", tmp_path / "c", "--profile",
            "x:1x1x8x8:8x1x8x8:64x1x8x8", "--compute-capability", "8.6")
    user_error(cli(*base, "-o", tmp_path / "model.engine"), "same file as the model", str(model))
    notes = tmp_path / "notes.txt"
    notes.write_text("not a timing cache")
    user_error(cli(*base, "--timing-cache", notes), "not a TensorRT timing cache", str(notes))
    user_error(cli(*base, "--workspace", "-5"), "--workspace -5")
    user_error(cli(*base, "-o", tmp_path), "is a folder", str(tmp_path))
    user_error(cli(*base, "-o", "/sys/enginekit-test.engine"), "/sys/enginekit-test.engine")
    assert model.read_bytes() == digits.onnx_path().read_bytes() and notes.read_text() == "not a timing cache"
