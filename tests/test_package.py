"""Packages (docs/PACKAGE.md): written from a real optimize report, run back with `enginekit run PACKAGE`, checked by
their reproduce.sh through the same interpreter (no venv on PATH), and refused when they cannot be made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from enginekit.deploy.package import is_package, pick_engines, read_package, write_package
from enginekit.deploy.package_run import run_package
from enginekit.errors import EnginekitError, InvalidArgumentError, OutputPathError
from enginekit.pipeline import optimize
from enginekit.settings import OptimizeSettings

CLEAN_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}  # no venv: reproduce.sh must find Python itself


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`enginekit demo`'s run (the bundled digits CNN and its test split) with its report folder."""
    out = tmp_path_factory.mktemp("opt") / "rep"
    result = optimize(OptimizeSettings(report_dir=out, backends=("ort", "openvino")))
    assert result.passed
    return out


def test_package_holds_the_verified_best_engines(report: Path, tmp_path: Path) -> None:
    res = write_package(report, tmp_path / "pkg")
    spec = read_package(res.path)
    doc = json.loads((report / "report.json").read_text())
    rows = {r["backend"]: r for r in doc["results"]}
    fastest = min((r for r in rows.values() if r["status"] == "ok"), key=lambda r: r["timing"]["median_ms"])
    assert spec["engines"]["min_latency"]["candidate"] == fastest["backend"] == res.engines["min_latency"]
    assert set(spec["engines"]) == {"min_latency", "max_throughput"} and is_package(res.path)
    for name in ("model.onnx", "package.json", "report.json", "report.md", "reproduce.sh", "samples/inputs.npz",
                 "samples/outputs.npz", "samples/outputs.min_latency.npz"):
        assert (res.path / name).is_file(), name
    recorded = np.load(res.path / "samples/outputs.min_latency.npz")
    saved = np.load(report / doc["files"][f"outputs.{fastest['backend']}"])
    np.testing.assert_array_equal(recorded["logits"], saved["logits"])
    assert spec["engines"]["min_latency"]["tolerance"]["logits"]["atol"] == pytest.approx(1e-5)
    assert spec["versions"]["onnxruntime"] and spec["inputs"][0]["name"] == "x"
    assert not list(tmp_path.glob(".*partial"))  # written into a staging folder, then renamed


def test_packaged_engine_reruns_and_reproduce_sh_checks_it(report: Path, tmp_path: Path) -> None:
    pkg = write_package(report, tmp_path / "pkg").path
    done = run_package(pkg)
    assert done.exit_code == 0 and done.row.status == "ok", done.row.reason
    proc = subprocess.run(["bash", str(pkg / "reproduce.sh")], capture_output=True, text=True, env=CLEAN_ENV,
                          cwd="/", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{sys.executable}" in (pkg / "reproduce.sh").read_text()
    # outputs that differ from the recorded ones fail both
    path = pkg / "samples" / "outputs.min_latency.npz"
    arrays = dict(np.load(path))
    np.savez(path, **{k: v * 1.5 + 1 for k, v in arrays.items()})
    assert run_package(pkg).row.status == "failed"
    proc = subprocess.run(["bash", str(pkg / "reproduce.sh")], capture_output=True, text=True, env=CLEAN_ENV,
                          cwd="/", timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "differ from the recorded ones" in proc.stdout.replace("\n", " ")


def test_a_package_whose_engine_cannot_run_here_says_why(tmp_path: Path) -> None:
    """A real TensorRT-RTX engine of the digits model: it builds here, and needs an NVIDIA GPU to run."""
    pytest.importorskip("tensorrt_rtx")
    from enginekit.backends.tensorrt.build import build_engine
    from enginekit.data import save_arrays
    from enginekit.examples import digits
    from enginekit.settings import BuildSettings

    pkg = tmp_path / "pkg"
    (pkg / "engines" / "min_latency").mkdir(parents=True)
    (pkg / "samples").mkdir()
    engine = pkg / "engines" / "min_latency" / "model.engine"
    build_engine(digits.onnx_path(), BuildSettings(backend="tensorrt-rtx", cache_dir=tmp_path / "cache", output=engine,
                                                   profiles=("x:1x1x8x8:4x1x8x8:8x1x8x8",)))
    x = np.zeros((4, 1, 8, 8), np.float32)
    save_arrays(pkg / "samples" / "inputs.npz", {"x": x})
    save_arrays(pkg / "samples" / "outputs.min_latency.npz", {"logits": np.zeros((4, 10), np.float32)})
    spec = {"format": "enginekit-package", "version": 1, "name": "digits", "model": "engines/min_latency/model.engine",
            "engines": {"min_latency": {"candidate": "tensorrt-rtx", "file": "engines/min_latency/model.engine",
                                        "outputs": "samples/outputs.min_latency.npz", "tolerance": {}}},
            "samples": {"inputs": "samples/inputs.npz"}}
    (pkg / "package.json").write_text(json.dumps(spec))
    done = run_package(pkg)
    assert done.row.status == "skipped" and done.exit_code == 3
    assert "GPU" in done.row.reason or "CUDA" in done.row.reason


def test_bad_packages_and_targets_are_refused(report: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="no report.json"):
        write_package(tmp_path, tmp_path / "pkg")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(OutputPathError, match="not empty"):
        write_package(report, busy)
    assert (busy / "keep.txt").read_text() == "mine"
    with pytest.raises(OutputPathError, match="must not be the report folder"):
        write_package(report, report)
    with pytest.raises(InvalidArgumentError, match="not an enginekit package"):
        read_package(tmp_path)
    with pytest.raises(InvalidArgumentError, match="no passing, timed candidate"):
        pick_engines({"results": [{"backend": "ort", "status": "failed", "timing": {"median_ms": 1.0}}]})
    pkg = write_package(report, tmp_path / "pkg").path
    with pytest.raises(InvalidArgumentError, match="--objective"):
        run_package(pkg, "fastest")


def test_optimize_package_on_the_command_line(tmp_path: Path) -> None:
    exe = [sys.executable, "-m", "enginekit"]
    env = {**CLEAN_ENV, "COLUMNS": "200"}
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("")
    proc = subprocess.run([*exe, "optimize", "-b", "ort", "--report", str(tmp_path / "r0"), "--package", str(busy)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "not empty" in proc.stderr and not (tmp_path / "r0").exists()
    proc = subprocess.run([*exe, "optimize", "-b", "ort", "--report", str(tmp_path / "r"), "--package",
                           str(tmp_path / "pkg")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "min_latency: ort" in proc.stdout
    proc = subprocess.run([*exe, "run", str(tmp_path / "pkg"), "--json"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0 and json.loads(proc.stdout)["passed"] is True
    # the report's reproduce.sh reruns through this interpreter and checks the recorded outputs
    script = (tmp_path / "r" / "reproduce.sh").read_text()
    assert "-m enginekit optimize" in script and "-m enginekit compare" in script
    proc = subprocess.run(["bash", str(tmp_path / "r" / "reproduce.sh")], capture_output=True, text=True,
                          env=env, cwd="/", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    path = tmp_path / "r" / "outputs.ort.npz"
    np.savez(path, **{k: v + 1.0 for k, v in np.load(path).items()})
    proc = subprocess.run(["bash", str(tmp_path / "r" / "reproduce.sh")], capture_output=True, text=True,
                          env=env, cwd="/", timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # compare's verdict, not a crash
    assert "FAILED" in proc.stdout + proc.stderr
    assert os.access(tmp_path / "pkg" / "reproduce.sh", os.X_OK)


def test_package_paths_stay_inside_the_package(report: Path, tmp_path: Path) -> None:
    from enginekit.errors import ModelLoadError

    pkg = write_package(report, tmp_path / "pkg").path
    spec = json.loads((pkg / "package.json").read_text())
    outside = tmp_path / "outside.onnx"
    outside.write_bytes((pkg / "model.onnx").read_bytes())
    for key, value in (("model", str(outside)), ("model", "../outside.onnx")):
        (pkg / "package.json").write_text(json.dumps({**spec, key: value}))
        with pytest.raises(ModelLoadError, match="absolute path|outside the package"):
            run_package(pkg)
    (pkg / "package.json").write_text(json.dumps({k: v for k, v in spec.items() if k != "samples"}))
    with pytest.raises(ModelLoadError, match="samples.inputs"):
        run_package(pkg)


def test_failed_runs_and_half_written_packages(report: Path, tmp_path: Path) -> None:
    import shutil

    failed = tmp_path / "failed"
    shutil.copytree(report, failed)
    doc = json.loads((failed / "report.json").read_text())
    (failed / "report.json").write_text(json.dumps({**doc, "passed": False}))
    with pytest.raises(InvalidArgumentError, match="did not pass"):
        write_package(failed, tmp_path / "pkg1")
    broken = tmp_path / "broken"
    shutil.copytree(report, broken)
    for f in broken.glob("outputs.*.npz"):
        f.unlink()
    with pytest.raises(EnginekitError, match="outputs"):  # the recorded outputs are gone: a typed error
        write_package(broken, tmp_path / "pkg2")
    assert not (tmp_path / "pkg2").exists() and not list(tmp_path.glob(".*partial"))  # nothing half-written left


def test_reproduce_scripts_survive_a_python_path_with_spaces(report: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The interpreter path is quoted for the shell: a venv under 'my envs/' still reruns."""
    spaced = tmp_path / "my envs $x"
    spaced.mkdir()
    wrapper = spaced / "python"  # a wrapper (a symlink would lose the venv), at a path the shell must quote
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(spaced / "python"))
    pkg = write_package(report, tmp_path / "pkg").path
    proc = subprocess.run(["bash", str(pkg / "reproduce.sh")], capture_output=True, text=True, env=CLEAN_ENV,
                          cwd="/", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
