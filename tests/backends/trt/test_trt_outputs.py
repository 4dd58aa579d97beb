"""Build outputs never clobber inputs; -o plan and manifest as a pair; cache clear and kill -9 during builds.

Real TensorRT-RTX builds on CPU (tmp cache folders).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from enginekit.errors import InvalidArgumentError, ModelLoadError, OutputPathError
from enginekit.settings import BuildSettings

trt = pytest.importorskip("tensorrt_rtx")

from enginekit.backends.tensorrt.build import build_engine  # noqa: E402
from enginekit.backends.tensorrt.manifest import check_plan_digest  # noqa: E402
from enginekit.cache import BUILD_PREFIX, EngineCache  # noqa: E402
from enginekit.examples import digits  # noqa: E402

PROFILE = "x:1x1x8x8:8x1x8x8:64x1x8x8"
EXE = str(Path(sys.executable).with_name("enginekit"))


def _settings(tmp_path: Path, **kw: object) -> BuildSettings:
    base: dict[str, object] = {"backend": "tensorrt-rtx", "cache_dir": tmp_path / "cache",
                               "compute_capabilities": ("8.6",), "profiles": (PROFILE,)}
    base.update(kw)
    return BuildSettings(**base)  # type: ignore[arg-type]


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "digits.onnx"
    path.write_bytes(digits.onnx_path().read_bytes())
    return path


def _pair_ok(out: Path) -> dict[str, object]:
    data = out.read_bytes()
    meta: dict[str, object] = json.loads(Path(f"{out}.json").read_text())
    assert meta["plan_sha256"] == hashlib.sha256(data).hexdigest() and meta["plan_bytes"] == len(data)
    return meta


def test_output_that_is_the_model_is_refused(tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = model.read_bytes()
    (tmp_path / "link.engine").symlink_to(model)
    os.link(model, tmp_path / "hard.engine")
    monkeypatch.chdir(tmp_path)
    for out in (tmp_path / "link.engine", tmp_path / "hard.engine", Path("digits.onnx"),
                Path("sub") / ".." / "digits.onnx"):
        with pytest.raises(OutputPathError, match="same file as the model"):
            build_engine(model, _settings(tmp_path, output=out))
    plan = tmp_path / "plan.json"
    plan.write_text("{}")
    with pytest.raises(OutputPathError, match="--precision-plan"):  # -o's manifest would replace an input
        build_engine(model, _settings(tmp_path, output=tmp_path / "plan", precision_plan=plan))
    assert model.read_bytes() == original and plan.read_text() == "{}"
    assert not (tmp_path / "cache").exists()  # refused before any work


def test_timing_cache_that_is_not_one_is_refused(tmp_path: Path, model: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not a timing cache\n")
    with pytest.raises(OutputPathError, match="not a TensorRT timing cache"):
        build_engine(model, _settings(tmp_path, timing_cache=notes))
    assert notes.read_text() == "my notes, not a timing cache\n"
    with pytest.raises(OutputPathError, match="same file as the model"):
        build_engine(model, _settings(tmp_path, timing_cache=model))
    out = tmp_path / "d.engine"
    with pytest.raises(OutputPathError, match="same file as --timing-cache"):
        build_engine(model, _settings(tmp_path, output=out, timing_cache=out))
    with pytest.raises(OutputPathError, match="is a folder"):
        build_engine(model, _settings(tmp_path, timing_cache=tmp_path))
    tc = tmp_path / "t.cache"
    build_engine(model, _settings(tmp_path, timing_cache=tc))
    assert tc.read_bytes().startswith(b"ptrt")
    build_engine(model, _settings(tmp_path, timing_cache=tc, use_cache=False, output=tmp_path / "again.engine"))


def test_bad_workspace_and_output_locations_are_user_errors(tmp_path: Path, model: Path) -> None:
    for bad in (-5, 0, 1 << 50):
        with pytest.raises(InvalidArgumentError, match="--workspace"):
            build_engine(model, _settings(tmp_path, workspace_mib=bad))
    with pytest.raises(OutputPathError, match="is a folder"):
        build_engine(model, _settings(tmp_path, output=tmp_path))
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(OutputPathError, match="afile"):
        build_engine(model, _settings(tmp_path, output=blocker / "d.engine"))
    with pytest.raises(OutputPathError, match="/sys"):  # read-only even for root
        build_engine(model, _settings(tmp_path, output=Path("/sys/enginekit-test.engine")))
    with pytest.raises(OutputPathError, match="Engine cache folder"):
        build_engine(model, _settings(tmp_path, cache_dir=blocker))
    with pytest.raises(OutputPathError, match="/sys/enginekit-cache"):
        build_engine(model, _settings(tmp_path, cache_dir=Path("/sys/enginekit-cache")))


def test_output_pair_and_runner_digest_check(tmp_path: Path, model: Path) -> None:
    out = tmp_path / "d.engine"
    first = build_engine(model, _settings(tmp_path, output=out))
    meta = _pair_ok(out)
    assert "manifest_sha256" not in meta  # the cache's seal stays in the cache
    hit = build_engine(model, _settings(tmp_path, output=tmp_path / "hit.engine"))
    assert hit.cached and _pair_ok(tmp_path / "hit.engine")["plan_sha256"] == meta["plan_sha256"]
    data = out.read_bytes()
    check_plan_digest(out, data, meta)  # the runner's check before deserializing: passes
    check_plan_digest(out, data, None)  # a plan built by another tool: nothing to check
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    with pytest.raises(ModelLoadError, match="sha256"):
        check_plan_digest(out, bytes(flipped), meta)
    with pytest.raises(ModelLoadError, match="bytes"):
        check_plan_digest(out, data[:-1], meta)
    assert first.output == out


def test_cache_clear_racing_builds_never_loses_the_plan(tmp_path: Path, model: Path) -> None:
    """One thread clears the cache in a loop while builds (hits and misses) write -o: every -o pair is whole."""
    cache = EngineCache(tmp_path / "cache")
    stop = threading.Event()
    clears = [0]
    errors: list[BaseException] = []

    def clearer() -> None:
        try:
            while not stop.is_set():
                cache.clear()
                clears[0] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    build_engine(model, _settings(tmp_path))  # a first entry, so that hits race too
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: the race windows are short
    thread = threading.Thread(target=clearer)
    thread.start()
    outcomes = []
    try:
        for i in range(12):
            out = tmp_path / f"e{i}.engine"
            outcomes.append(build_engine(model, _settings(tmp_path, output=out)).cached)
            _pair_ok(out)
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    assert not errors and clears[0] > 10
    assert not any(p.name.startswith(BUILD_PREFIX) for p in cache.root.iterdir())


def test_kill_9_during_a_build_leaves_a_folder_the_next_build_removes(tmp_path: Path, model: Path) -> None:
    cache = EngineCache(tmp_path / "cache")
    cmd = [EXE, "build", str(model), "--backend", "tensorrt-rtx", "--cache-dir", str(cache.root), "--profile",
           PROFILE, "--precision", "fp16", "--json"]  # fp16: a conversion before the build, a wider window
    leftover = None
    for _ in range(3):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            found = [p for p in cache.root.glob(f"{BUILD_PREFIX}*")] if cache.root.is_dir() else []
            if found:
                os.kill(proc.pid, signal.SIGKILL)
                leftover = found[0]
                break
            time.sleep(0.002)
        proc.wait()
        if leftover is not None and leftover.exists():
            break
        leftover = None  # the build finished before the kill landed: try again
    assert leftover is not None, "never caught the build with its temp folder"
    temps = {t.path: t for t in cache.temp_folders()}
    assert temps[leftover].stale and f"process {proc.pid} is gone" in temps[leftover].reason
    res = build_engine(model, _settings(tmp_path, precision="fp16", compute_capabilities=()))
    assert res.plan_path.is_file()
    assert not leftover.exists() and cache.temp_folders() == []
