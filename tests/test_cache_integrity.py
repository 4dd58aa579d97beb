"""Engine cache integrity: sealed manifests, leftover temp folders, file modes of atomic writes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from enginekit.cache import EngineCache, seal_manifest
from enginekit.cache_cleanup import BUILD_PREFIX, TMP_PREFIX, owned_name, pid_alive
from enginekit.cache_entry import unseal_manifest
from enginekit.errors import OutputPathError
from enginekit.fileutil import atomic_write_bytes, atomic_write_pair, check_output_file, same_file

MANIFEST = {"source_model": {"path": "/models/m.onnx", "sha256": "0" * 64}, "library": "tensorrt_rtx",
            "library_version": "1.2.0", "precision": {"precision": "fp16", "path": "strong-typing"},
            "profiles": [{"shapes": [{"name": "x", "min": [1, 4], "opt": [8, 4], "max": [16, 4]}]}],
            "build_time_s": 1.5e-05, "note": "caf\u00e9 \u2713"}  # an exponent and \\u escapes: letters a bit apart
KEY = "ab" + "c" * 62


@pytest.fixture
def cache(tmp_path: Path) -> EngineCache:
    return EngineCache(tmp_path / "cache")


def test_seal_round_trip_and_edit_detected() -> None:
    sealed = seal_manifest({"a": 1, "b": [1.5, "x"]})
    loaded, why = unseal_manifest(sealed)
    assert why is None and loaded == {"a": 1, "b": [1.5, "x"], "manifest_sha256": json.loads(sealed)["manifest_sha256"]}
    edited = sealed.replace(b'"a": 1', b'"a": 2')
    assert unseal_manifest(edited)[0] is None and "manifest_sha256" in str(unseal_manifest(edited)[1])
    unsealed = json.dumps({"a": 1}).encode()
    assert unseal_manifest(unsealed)[0] is None  # written without a seal (an older enginekit): not trusted


def test_every_bit_flip_of_the_manifest_is_caught(cache: EngineCache) -> None:
    """Flip each of the 8 bits of 32 bytes spread over manifest.json (its body, keys, digits, \\u escapes,
    whitespace and the seal itself): no flipped manifest is served, by get() or by a verified listing."""
    plan = bytes(range(256)) * 8
    entry = cache.put(KEY, plan, MANIFEST)
    original = entry.manifest_path.read_bytes()
    positions = sorted({round(i * (len(original) - 1) / 31) for i in range(32)})
    escape_at = original.index(b"\\u00e9") + 4  # the hex digit 'e' and 'E' decode to the same character
    exp_at = original.index(b"e-05")  # '1.5e-05' and '1.5E-05' are the same number
    positions = sorted({*positions, escape_at, exp_at})
    assert len(positions) >= 25
    served = []
    for pos in positions:
        for bit in range(8):
            damaged = bytearray(original)
            damaged[pos] ^= 1 << bit
            if not entry.path.exists():
                cache.put(KEY, plan, MANIFEST)
            entry.manifest_path.write_bytes(bytes(damaged))
            listed = cache.entries(verify=True)
            if [e.ok for e in listed] != [False]:
                served.append((pos, bit, "listed ok"))
            if cache.get(KEY) is not None:
                served.append((pos, bit, "served"))
            assert not entry.path.exists()  # removed, so the next build rebuilds it
    assert served == []
    cache.put(KEY, plan, MANIFEST)
    assert cache.get(KEY) is not None  # the undamaged manifest is served


def test_cache_list_verify_reports_a_flipped_manifest(cache: EngineCache, tmp_path: Path) -> None:
    entry = cache.put(KEY, b"plan bytes", MANIFEST)
    data = bytearray(entry.manifest_path.read_bytes())
    data[data.index(b"fp16") + 2] ^= 0x02  # fp16 -> fp36: still valid JSON, a plausible value
    entry.manifest_path.write_bytes(bytes(data))
    exe = str(Path(sys.executable).with_name("enginekit"))
    res = subprocess.run([exe, "cache", "list", "--verify", "--json", "--cache-dir", str(cache.root)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    (e,) = json.loads(res.stdout)["entries"]
    assert e["status"] == "damaged" and "manifest_sha256" in e["reason"]


# --- temp folders ------------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)
    return proc.pid


def test_leftovers_of_dead_processes_are_listed_then_removed_live_ones_kept(cache: EngineCache) -> None:
    cache.put(KEY, b"plan", MANIFEST)
    dead = _dead_pid()
    host = owned_name("").split("-")[1]
    left = cache.root / f"{BUILD_PREFIX}{dead}-{host}-abc"
    left.mkdir()
    (left / "model.onnx").write_bytes(b"x" * 100)
    half = cache.root / f"{TMP_PREFIX}{dead}-{host}-def"
    half.mkdir()
    live = cache.root / f"{owned_name(BUILD_PREFIX)}ghi"  # this process: a build in progress
    live.mkdir()
    temps = {t.path.name: t for t in cache.temp_folders()}
    assert set(temps) == {left.name, half.name, live.name}
    assert temps[left.name].stale and temps[left.name].kind == "build" and temps[left.name].size == 100
    assert str(dead) in temps[left.name].reason and temps[half.name].stale
    assert not temps[live.name].stale and "running" in temps[live.name].reason
    removed = {t.path.name for t in cache.clean_temp()}
    assert removed == {left.name, half.name}
    assert live.is_dir() and not left.exists() and not half.exists()
    assert cache.get(KEY) is not None
    cache.clear()
    assert live.is_dir()  # `cache clear` never takes a live build's folder either


def test_cli_cache_list_shows_and_removes_leftovers(cache: EngineCache) -> None:
    cache.put(KEY, b"plan", MANIFEST)
    dead = _dead_pid()
    left = cache.root / f"{BUILD_PREFIX}{dead}-{owned_name('').split('-')[1]}-xyz"
    left.mkdir()
    exe = str(Path(sys.executable).with_name("enginekit"))
    res = subprocess.run([exe, "cache", "list", "--cache-dir", str(cache.root)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "COLUMNS": "300"})
    assert res.returncode == 0, res.stderr
    assert left.name in res.stdout and f"process {dead} is gone" in res.stdout and "removed" in res.stdout
    assert not left.exists()


# --- file modes --------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_write_modes_follow_umask_and_keep_a_replaced_files_mode(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        new = atomic_write_bytes(tmp_path / "new.bin", b"1")
        assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~umask
        kept = tmp_path / "kept.bin"
        kept.write_bytes(b"0")
        kept.chmod(0o640)
        atomic_write_bytes(kept, b"2")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and kept.read_bytes() == b"2"
        plan, meta = tmp_path / "p.engine", tmp_path / "p.engine.json"
        atomic_write_pair((plan, b"plan"), (meta, b"{}"))
        assert {stat.S_IMODE(p.stat().st_mode) for p in (plan, meta)} == {0o666 & ~umask}
        entry = EngineCache(tmp_path / "c").put(KEY, b"plan", MANIFEST)
        assert stat.S_IMODE(entry.plan_path.stat().st_mode) == 0o666 & ~umask
        assert stat.S_IMODE(entry.manifest_path.stat().st_mode) == 0o666 & ~umask
        assert stat.S_IMODE(entry.path.stat().st_mode) == 0o777 & ~umask
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "kept.bin", "new.bin", "p.engine", "p.engine.json"]


def test_output_paths_of_the_wrong_kind(tmp_path: Path) -> None:
    with pytest.raises(OutputPathError, match="is a folder"):
        atomic_write_bytes(tmp_path, b"x")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        atomic_write_bytes(blocker / "sub" / "out.bin", b"x")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OutputPathError, match="not a regular file"):
        check_output_file(fifo)
    with pytest.raises(OutputPathError, match=r"/sys"):  # sysfs refuses new files even to root
        check_output_file(Path("/sys/enginekit-test.engine"), probe=True)
    with pytest.raises(OutputPathError, match=r"/sys/enginekit-test"):
        atomic_write_bytes("/sys/enginekit-test.engine", b"x")


def test_same_file_by_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = tmp_path / "a.onnx"
    a.write_bytes(b"m")
    (tmp_path / "link.engine").symlink_to(a)
    os.link(a, tmp_path / "hard.engine")
    monkeypatch.chdir(tmp_path)
    assert same_file(tmp_path / "link.engine", a) and same_file(tmp_path / "hard.engine", a)
    assert same_file(Path("./a.onnx"), a) and not same_file(tmp_path / "other.engine", a)
