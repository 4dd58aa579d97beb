"""The content-addressed engine cache: keys, checked lookups, atomic and concurrent writes, listing, clearing."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from enginekit.cache import (
    ENV_CACHE_DIR,
    MANIFEST_FILE,
    PLAN_FILE,
    STALE_TEMP_AGE,
    CacheEntryDamagedError,
    EngineCache,
    default_cache_dir,
    make_key,
    model_digest,
    seal_manifest,
)
from enginekit.errors import InvalidArgumentError, ModelLoadError, UnknownNameError

SETTINGS = {"precision": "fp16", "profiles": ["x:1x4:8x4:16x4"], "workspace_mib": 1024}
MANIFEST = {"model": "/models/mlp.onnx", "library": "tensorrt_rtx", "library_version": "1.2.0",
            "device": "sm89", "precision": "fp16", "profiles": [{"x": [[1, 4], [8, 4], [16, 4]]}]}
KEY_A = "a" * 64
KEY_B = "ab" + "c" * 62


def _model(folder: Path, seed: int = 0, *, external: bool = False, name: str = "m.onnx") -> Path:
    """x[2,4] -> MatMul(w) + b -> y; with ``external``, w and b live in two data files (w.bin, b.bin)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])], "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / name
    if not external:
        onnx.save_model(model, str(path))
        return path
    for tensor, location in ((model.graph.initializer[0], "w.bin"), (model.graph.initializer[1], "b.bin")):
        onnx.external_data_helper.set_external_data(tensor, location)
    onnx.save_model(model, str(path))  # raw_data goes to the locations set above
    assert (folder / "w.bin").stat().st_size == 48 and (folder / "b.bin").stat().st_size == 12
    return path


def _key(model: Path, **over: Any) -> str:
    args: dict[str, Any] = {"settings": SETTINGS, "library": "tensorrt_rtx", "library_version": "1.2.0",
                            "device": "sm89", "content_files": ()}
    args.update(over)
    return make_key(model, **args)


def _flip_byte(path: Path, at: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def cache(tmp_path: Path) -> EngineCache:
    return EngineCache(tmp_path / "cache")


# --- keys --------------------------------------------------------------------------------------


def test_key_is_stable_and_ignores_settings_order_and_model_location(tmp_path: Path) -> None:
    model = _model(tmp_path / "a")
    key = _key(model)
    assert len(key) == 64 and int(key, 16) >= 0
    assert _key(model) == key
    assert _key(model, settings=dict(reversed(list(SETTINGS.items())))) == key
    moved = tmp_path / "b" / "renamed.onnx"
    moved.parent.mkdir()
    shutil.copy(model, moved)
    assert _key(moved) == key  # content, not path


def test_key_changes_with_each_input(tmp_path: Path) -> None:
    model = _model(tmp_path)
    plan = tmp_path / "plan.json"
    plan.write_text('{"fp32": ["fc1"]}')
    base = _key(model, content_files=[plan])
    other_model = _model(tmp_path, seed=1, name="other.onnx")
    variants = {
        "model bytes": _key(other_model, content_files=[plan]),
        "setting value": _key(model, settings={**SETTINGS, "precision": "fp32"}, content_files=[plan]),
        "extra setting": _key(model, settings={**SETTINGS, "optimization_level": 3}, content_files=[plan]),
        "no content file": _key(model),
        "library": _key(model, library="tensorrt", content_files=[plan]),
        "library version": _key(model, library_version="1.2.1", content_files=[plan]),
        "device": _key(model, device="sm86", content_files=[plan]),
    }
    for what, key in variants.items():
        assert key != base, what
    assert len(set(variants.values())) == len(variants)
    plan.write_text('{"fp32": ["fc2"]}')
    assert _key(model, content_files=[plan]) != base, "content file bytes"
    plan.write_text('{"fp32": ["fc1"]}')
    renamed = tmp_path / "elsewhere.json"
    shutil.copy(plan, renamed)
    assert _key(model, content_files=[renamed]) == base, "content files are keyed by bytes, not path"


def test_key_hashes_external_data_files(tmp_path: Path) -> None:
    model = _model(tmp_path / "m", external=True)
    key, digest = _key(model), model_digest(model)
    _flip_byte(tmp_path / "m" / "b.bin", at=0)
    assert _key(model) != key and model_digest(model) != digest
    _flip_byte(tmp_path / "m" / "b.bin", at=0)
    assert _key(model) == key
    _flip_byte(tmp_path / "m" / "w.bin", at=5)
    assert _key(model) != key
    (tmp_path / "m" / "w.bin").unlink()
    with pytest.raises(ModelLoadError, match=r"w\.bin"):
        _key(model)


def test_model_digest_without_external_data_is_the_file_sha256(tmp_path: Path) -> None:
    model = _model(tmp_path)
    assert model_digest(model) == hashlib.sha256(model.read_bytes()).hexdigest()


def test_key_content_folder_and_order(tmp_path: Path) -> None:
    model = _model(tmp_path)
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "a.npz").write_bytes(b"one")
    (calib / "b.npz").write_bytes(b"two")
    plan = tmp_path / "plan.json"
    plan.write_text("{}")
    key = _key(model, content_files=[plan, calib])
    assert _key(model, content_files=[calib, plan]) != key  # roles differ: order is kept
    (calib / "b.npz").write_bytes(b"TWO")
    assert _key(model, content_files=[plan, calib]) != key
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        _key(model, content_files=[tmp_path / "missing.json"])


@pytest.mark.parametrize("bad", [{"plan": Path("p.json")}, {"x": float("nan")}, {"x": {1: 2}}, {"x": object()}])
def test_key_refuses_settings_without_canonical_json(tmp_path: Path, bad: dict[str, Any]) -> None:
    model = _model(tmp_path)
    with pytest.raises(InvalidArgumentError):
        _key(model, settings=bad)


def test_key_refuses_empty_device(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="device"):
        _key(_model(tmp_path), device=" ")


# --- root --------------------------------------------------------------------------------------


def test_default_root_env_and_platformdirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import platformdirs

    monkeypatch.delenv(ENV_CACHE_DIR, raising=False)
    assert default_cache_dir() == Path(platformdirs.user_cache_dir("enginekit")) / "engines"
    monkeypatch.setenv(ENV_CACHE_DIR, str(tmp_path / "env"))
    assert EngineCache().root == tmp_path / "env"
    assert EngineCache(tmp_path / "explicit").root == tmp_path / "explicit"


# --- put / get ---------------------------------------------------------------------------------


def test_put_get_round_trip(cache: EngineCache) -> None:
    plan = os.urandom(5000)
    put = cache.put(KEY_A, plan, {**MANIFEST, "cache_key": "stale", "plan_bytes": -1})
    assert put.path == cache.root / "aa" / KEY_A
    got = cache.get(KEY_A)
    assert got is not None and got.ok
    assert got.plan_path.read_bytes() == plan and got.read_plan() == plan
    m = json.loads(got.manifest_path.read_text())
    assert m["cache_key"] == KEY_A and m["plan_bytes"] == 5000  # the cache's fields win over the caller's
    assert m["plan_sha256"] == hashlib.sha256(plan).hexdigest()
    assert m["library"] == "tensorrt_rtx" and m["profiles"] == MANIFEST["profiles"]
    assert got.created is not None and abs(datetime.now(timezone.utc) - got.created) < timedelta(minutes=1)
    assert sorted(p.name for p in got.path.iterdir()) == [PLAN_FILE, MANIFEST_FILE]
    assert [p.name for p in cache.root.iterdir()] == ["aa"]  # no temp folder left


def test_get_missing_and_bad_key(cache: EngineCache) -> None:
    assert cache.get(KEY_A) is None
    with pytest.raises(InvalidArgumentError, match="not a cache key"):
        cache.get("../../etc")


def test_put_refuses_non_json_manifest(cache: EngineCache) -> None:
    with pytest.raises(InvalidArgumentError, match="strict JSON"):
        cache.put(KEY_A, b"x", {"v": float("inf")})
    assert cache.get(KEY_A) is None


@pytest.mark.parametrize("damage", ["flip", "truncate", "grow", "delete_plan", "delete_manifest", "bad_json",
                                    "manifest_list", "no_sha"])
def test_damaged_entry_is_rejected_and_removed(cache: EngineCache, damage: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    entry = cache.put(KEY_A, os.urandom(4096), MANIFEST)
    plan, manifest = entry.plan_path, entry.manifest_path
    if damage == "flip":
        _flip_byte(plan, at=2000)
    elif damage == "truncate":
        plan.write_bytes(plan.read_bytes()[:100])
    elif damage == "grow":
        plan.write_bytes(plan.read_bytes() + b"\0")
    elif damage == "delete_plan":
        plan.unlink()
    elif damage == "delete_manifest":
        manifest.unlink()
    elif damage == "bad_json":
        manifest.write_text(manifest.read_text()[:-10])
    elif damage == "manifest_list":
        manifest.write_text("[]")
    else:
        m = json.loads(manifest.read_text())
        del m["plan_sha256"]
        manifest.write_text(json.dumps(m))
    assert [e.ok for e in cache.entries(verify=True)] == [False]
    with caplog.at_level(logging.WARNING, logger="enginekit.cache"):
        assert cache.get(KEY_A) is None
    assert "damaged" in caplog.text
    assert not entry.path.exists()
    assert cache.entries() == []
    assert [p for p in cache.root.iterdir() if p.name.startswith(".")] == []  # nothing left aside
    assert cache.put(KEY_A, b"rebuilt", MANIFEST).read_plan() == b"rebuilt"  # the caller rebuilds


def test_foreign_entry_is_rejected(cache: EngineCache) -> None:
    entry = cache.put(KEY_A, b"plan of A", MANIFEST)
    foreign = cache.entry_dir(KEY_B)
    foreign.parent.mkdir(parents=True)
    shutil.copytree(entry.path, foreign)
    listed = {e.key: e for e in cache.entries(verify=True)}
    assert listed[KEY_B].damaged is not None and "foreign" in listed[KEY_B].damaged
    assert cache.get(KEY_B) is None
    assert not foreign.exists()
    assert cache.get(KEY_A) is not None  # the original is untouched


def test_a_file_in_place_of_an_entry_is_removed(cache: EngineCache) -> None:
    target = cache.entry_dir(KEY_A)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"junk")
    assert cache.get(KEY_A) is None and not target.exists()
    assert cache.put(KEY_A, b"p", MANIFEST).ok


def test_put_replaces_a_damaged_entry(cache: EngineCache) -> None:
    entry = cache.put(KEY_A, b"old plan bytes", MANIFEST)
    _flip_byte(entry.plan_path, at=0)
    new = cache.put(KEY_A, b"new plan", MANIFEST)
    assert new.read_plan() == b"new plan"
    got = cache.get(KEY_A)
    assert got is not None and got.read_plan() == b"new plan"


def test_put_keeps_the_existing_valid_entry(cache: EngineCache) -> None:
    first = cache.put(KEY_A, b"first", MANIFEST)
    second = cache.put(KEY_A, b"second", MANIFEST)
    assert second.read_plan() == b"first" and second.path == first.path


def test_read_plan_notices_late_damage(cache: EngineCache) -> None:
    entry = cache.get(cache.put(KEY_A, b"0123456789", MANIFEST).key)
    assert entry is not None
    _flip_byte(entry.plan_path, at=3)
    with pytest.raises(CacheEntryDamagedError):
        entry.read_plan()


# --- atomicity ---------------------------------------------------------------------------------


def test_crash_before_rename_leaves_no_entry(cache: EngineCache, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*args: Any) -> None:
        raise KeyboardInterrupt  # the process dies between writing and publishing

    monkeypatch.setattr("enginekit.cache.os.rename", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.put(KEY_A, b"plan", MANIFEST)
    monkeypatch.undo()
    assert cache.get(KEY_A) is None
    assert [p.name for p in cache.root.iterdir() if p.name.startswith(".")] == []  # temp folder cleaned up


def test_leftover_temp_dir_is_ignored_then_cleared(cache: EngineCache) -> None:
    cache.put(KEY_A, b"plan", MANIFEST)
    # What a writer killed mid-put leaves: a temp folder with a whole plan but no manifest, and one complete.
    # A crash while removing an entry leaves a .trash- folder.
    for name, files in ((".tmp-crashed1", {PLAN_FILE: b"plan"}), (".tmp-crashed2", {PLAN_FILE: b"x"}),
                        (".trash-crashed", {PLAN_FILE: b"old"})):
        d = cache.root / name
        d.mkdir()
        for fname, data in files.items():
            (d / fname).write_bytes(data)
    shutil.copy(cache.entry_dir(KEY_A) / MANIFEST_FILE, cache.root / ".tmp-crashed2" / MANIFEST_FILE)
    assert [e.key for e in cache.entries()] == [KEY_A]
    assert cache.get(KEY_A) is not None
    assert cache.clear(keys=[]) == 0  # no entry chosen; the temp folders are fresh, a writer may own them
    assert len([p for p in cache.root.iterdir() if p.name.startswith(".")]) == 3
    later = datetime.now(timezone.utc) + STALE_TEMP_AGE + timedelta(minutes=1)
    assert cache.clear(keys=[], now=later) == 0  # now they are stale: a crashed writer's
    assert [p.name for p in cache.root.iterdir()] == ["aa"]
    assert cache.get(KEY_A) is not None


_WRITER = """
import sys
from pathlib import Path
from enginekit.cache import CacheEntryDamagedError, EngineCache
cache = EngineCache(Path(sys.argv[1]))
key, me = sys.argv[2], sys.argv[3]
valid = {(w * 4000).encode() for w in "ABCD"}

def check(entry):
    try:
        assert entry.read_plan() in valid
    except CacheEntryDamagedError:
        pass  # cleared (and maybe rewritten) by another writer before the read: read_plan noticed

for i in range(40):
    check(cache.put(key, (me * 4000).encode(), {"writer": me}))
    got = cache.get(key)  # None only when another writer just cleared the cache
    if got is not None:
        check(got)
    if i % 8 == 7 and me in "AB":
        cache.clear()
print("ok")
"""


def test_concurrent_processes_put_the_same_key(cache: EngineCache) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(cache.root), KEY_A, w], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for w in "ABCD"]
    results = [p.communicate(timeout=120) for p in procs]
    for p, (stdout, stderr) in zip(procs, results, strict=True):
        assert p.returncode == 0, stderr
        assert stdout.strip() == "ok"
        assert "damaged" not in stderr  # concurrent writers and clears never look like damage
    cache.put(KEY_A, b"A" * 4000, {"writer": "A"})
    got = cache.get(KEY_A)
    assert got is not None and got.read_plan() in {(w * 4000).encode() for w in "ABCD"}
    assert [p.name for p in cache.root.iterdir()] == ["aa"]


def test_concurrent_threads_put_the_same_key(cache: EngineCache) -> None:
    barrier = threading.Barrier(8)
    results: list[bytes] = []
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            barrier.wait()
            results.append(cache.put(KEY_A, bytes([i]) * 100_000, {"writer": i}).read_plan())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    got = cache.get(KEY_A)
    assert got is not None
    assert set(results) == {got.read_plan()}  # every writer got the one entry that was kept
    assert [p.name for p in cache.root.iterdir()] == ["aa"] and len(list((cache.root / "aa").iterdir())) == 1


# --- listing, clearing, export -----------------------------------------------------------------


def _set_created(cache: EngineCache, key: str, when: datetime) -> None:
    path = cache.entry_dir(key) / MANIFEST_FILE
    m = json.loads(path.read_text())
    m["created"] = when.isoformat()
    path.write_bytes(seal_manifest(m))  # re-sealed: an edit without a new seal is damage


def test_entries_summary(cache: EngineCache) -> None:
    assert cache.entries() == []
    cache.put(KEY_A, b"a" * 10, MANIFEST)
    cache.put(KEY_B, b"b" * 20, {"source_model": {"path": "m.onnx", "sha256": "0" * 64}, "precision":
                                 {"precision": "int8", "path": "weak-typing"}, "target": {"compute_capabilities":
                                 ["8.6", "12.0"]}})  # the TensorRT builder's manifest shape
    _set_created(cache, KEY_B, datetime.now(timezone.utc) - timedelta(days=1))
    (cache.root / "aa" / "not-a-key").mkdir()  # stray folders are not entries
    entries = cache.entries()
    assert [e.key for e in entries] == [KEY_A, KEY_B]  # newest first
    a, b = (e.summary() for e in entries)
    assert a == {**a, "key": KEY_A, "size": 10, "model": "/models/mlp.onnx", "library": "tensorrt_rtx",
                 "library_version": "1.2.0", "device": "sm89", "precision": "fp16", "profiles": 1, "status": "ok",
                 "reason": None}
    assert b["model"] == "m.onnx" and b["precision"] == "int8" and b["device"] == "cc 8.6, cc 12.0"
    assert b["profiles"] is None and b["library"] is None and b["size"] == 20


def test_clear_by_key_age_and_all(cache: EngineCache) -> None:
    keys = [c * 64 for c in "123"]
    for k in keys:
        cache.put(k, k.encode(), MANIFEST)
    now = datetime.now(timezone.utc)
    _set_created(cache, keys[0], now - timedelta(days=10))
    _set_created(cache, keys[1], now - timedelta(hours=2))
    assert cache.clear(older_than=timedelta(days=7)) == 1
    assert {e.key for e in cache.entries()} == set(keys[1:])
    assert cache.clear(older_than=timedelta(days=7)) == 0
    assert cache.clear(keys=[keys[2]]) == 1
    assert [e.key for e in cache.entries()] == [keys[1]]
    assert cache.clear(keys=[keys[0]]) == 0  # already gone
    cache.put(keys[0], b"again", MANIFEST)
    assert cache.clear() == 2
    assert cache.entries() == [] and list(cache.root.iterdir()) == []  # empty shard folders go too
    with pytest.raises(InvalidArgumentError):
        cache.clear(keys=["nope"])


def test_clear_removes_damaged_entries(cache: EngineCache) -> None:
    entry = cache.put(KEY_A, b"plan", MANIFEST)
    entry.manifest_path.unlink()
    assert cache.clear() == 1 and not entry.path.exists()


def test_resolve_prefix(cache: EngineCache) -> None:
    cache.put(KEY_A, b"a", MANIFEST)
    cache.put("a" * 10 + "b" * 54, b"b", MANIFEST)
    assert cache.resolve("aaaaaaaaaaa") == KEY_A
    with pytest.raises(InvalidArgumentError, match="matches 2"):
        cache.resolve("aaaa")
    with pytest.raises(UnknownNameError):
        cache.resolve("ff")
    with pytest.raises(InvalidArgumentError):
        cache.resolve("zz")


def test_export(cache: EngineCache, tmp_path: Path) -> None:
    plan = os.urandom(3000)
    cache.put(KEY_A, plan, MANIFEST)
    dest = tmp_path / "out" / "mlp.plan"
    got_plan, got_manifest = cache.export(KEY_A, dest)
    assert got_plan == dest and dest.read_bytes() == plan
    assert got_manifest == tmp_path / "out" / "mlp.plan.json"
    m = json.loads(got_manifest.read_text())
    assert m["cache_key"] == KEY_A and m["plan_sha256"] == hashlib.sha256(plan).hexdigest()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["mlp.plan", "mlp.plan.json"]  # no temp files
    with pytest.raises(UnknownNameError):
        cache.export(KEY_B, tmp_path / "b.plan")
    with pytest.raises(InvalidArgumentError, match="folder"):
        cache.export(KEY_A, tmp_path)
    _flip_byte(cache.entry_dir(KEY_A) / PLAN_FILE)
    with pytest.raises(UnknownNameError):
        cache.export(KEY_A, tmp_path / "c.plan")
    assert not (tmp_path / "c.plan").exists()
