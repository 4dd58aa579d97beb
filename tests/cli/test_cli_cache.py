"""`enginekit cache list|clear`."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from enginekit.cache import MANIFEST_FILE, EngineCache, seal_manifest
from enginekit.cli import main as cli_main
from enginekit.cli.cache_cmd import cache_app, parse_duration

MANIFEST = {"model": "/models/[bold]mlp.onnx", "library": "tensorrt_rtx", "library_version": "1.2.0",
            "device": "sm89", "precision": "fp16", "profiles": [{}, {}]}
KEYS = ["1" * 64, "2" * 64, "3" * 64]


@pytest.fixture(autouse=True)
def _cache_command_registered() -> None:
    """Until cli/main.py registers `cache`, add it here (a no-op once it does)."""
    if not any(g.name == "cache" for g in cli_main.app.registered_groups):
        cli_main.app.add_typer(cache_app, name="cache")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EngineCache:
    monkeypatch.setenv("ENGINEKIT_CACHE_DIR", str(tmp_path / "never-used"))  # --cache-dir must win
    return EngineCache(tmp_path / "cache")


@pytest.fixture
def filled(cache: EngineCache) -> EngineCache:
    now = datetime.now(timezone.utc)
    for key, age in zip(KEYS, (timedelta(days=10), timedelta(hours=13), timedelta(0)), strict=True):
        cache.put(key, key.encode() * 100, MANIFEST)
        path = cache.entry_dir(key) / MANIFEST_FILE
        manifest = json.loads(path.read_text())
        manifest["created"] = (now - age).isoformat()
        path.write_bytes(seal_manifest(manifest))  # re-sealed: an edit without a new seal is damage
    return cache


def test_list_empty(cli, cache: EngineCache) -> None:
    res = cli("cache", "list", "--cache-dir", cache.root)
    assert res.code == 0, res.stderr
    assert "No cached engines" in res.stdout
    doc = cli("cache", "list", "--cache-dir", cache.root, "--json").json()
    assert doc == {"root": str(cache.root), "entries": [], "temp_folders": []}


def test_list_table(cli, filled: EngineCache) -> None:
    (filled.entry_dir(KEYS[1]) / "engine.plan").write_bytes(b"short")  # damaged: size differs
    res = cli("cache", "list", "--cache-dir", filled.root)
    assert res.code == 0, res.stderr
    for key in KEYS:
        assert key[:12] in res.stdout and key not in res.stdout
    assert "[bold]mlp.onnx" in res.stdout  # user text is escaped, not taken for markup
    assert "tensorrt_rtx 1.2.0" in res.stdout and "sm89" in res.stdout and "fp16" in res.stdout
    assert "6.2 KiB" in res.stdout
    assert res.stdout.count("ok") >= 2 and "damaged" in res.stdout and "5 bytes" in res.stdout
    assert "3 engine(s)" in res.stdout


def test_list_json(cli, filled: EngineCache) -> None:
    doc = cli("cache", "list", "--cache-dir", filled.root, "--json").json()
    assert doc["root"] == str(filled.root)
    assert [e["key"] for e in doc["entries"]] == KEYS[::-1]  # newest first
    e = doc["entries"][0]
    assert e["size"] == 6400 and e["profiles"] == 2 and e["status"] == "ok" and e["reason"] is None
    assert e["library"] == "tensorrt_rtx" and e["library_version"] == "1.2.0" and e["device"] == "sm89"


def test_list_uses_env_cache_dir(cli, filled: EngineCache, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINEKIT_CACHE_DIR", str(filled.root))
    doc = cli("cache", "list", "--json").json()
    assert len(doc["entries"]) == 3


def test_clear_requires_yes(cli, filled: EngineCache, user_error) -> None:
    res = cli("cache", "clear", "--cache-dir", filled.root)
    user_error(res, "--yes")
    assert len(filled.entries()) == 3


def test_clear_all(cli, filled: EngineCache) -> None:
    res = cli("cache", "clear", "--cache-dir", filled.root, "--yes")
    assert res.code == 0, res.stderr
    assert "Removed 3 cached engine(s)" in res.stdout
    assert filled.entries() == []
    res = cli("cache", "clear", "--cache-dir", filled.root, "-y")
    assert res.code == 0 and "Removed 0" in res.stdout


def test_clear_older_than(cli, filled: EngineCache) -> None:
    res = cli("cache", "clear", "--cache-dir", filled.root, "--older-than", "7d", "--yes")
    assert res.code == 0, res.stderr
    assert "Removed 1 " in res.stdout
    assert {e.key for e in filled.entries()} == set(KEYS[1:])
    res = cli("cache", "clear", "--cache-dir", filled.root, "--older-than", "12h", "--yes")
    assert "Removed 1 " in res.stdout
    assert [e.key for e in filled.entries()] == [KEYS[2]]


def test_clear_by_key_and_prefix(cli, filled: EngineCache, user_error) -> None:
    res = cli("cache", "clear", "--cache-dir", filled.root, "--key", KEYS[0], "--key", KEYS[1][:8], "--yes")
    assert res.code == 0, res.stderr
    assert "Removed 2 " in res.stdout
    assert [e.key for e in filled.entries()] == [KEYS[2]]
    user_error(cli("cache", "clear", "--cache-dir", filled.root, "--key", "ffff", "--yes"), "ffff", "cache list")
    user_error(cli("cache", "clear", "--cache-dir", filled.root, "--key", "../x", "--yes"), "not a cache key")


@pytest.mark.parametrize("bad", ["7", "d", "7x", "-3d", "7 days", ""])
def test_clear_older_than_bad_values(cli, filled: EngineCache, user_error, bad: str) -> None:
    res = cli("cache", "clear", "--cache-dir", filled.root, "--older-than", bad, "--yes")
    user_error(res, "--older-than", "7d")
    assert len(filled.entries()) == 3


def test_parse_duration() -> None:
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("45s") == timedelta(seconds=45)
    assert parse_duration("2W") == timedelta(weeks=2)
    assert parse_duration("1.5h") == timedelta(minutes=90)


def test_cache_help_lists_subcommands(cli) -> None:
    res = cli("cache", "--help")
    assert res.code == 0
    assert "list" in res.stdout and "clear" in res.stdout


@pytest.mark.parametrize("huge", ["9999999999w", "99999999999999999999d", "1" + "0" * 400 + "s"])
def test_clear_older_than_too_long_is_a_user_error(cli, filled: EngineCache, user_error, huge: str) -> None:
    res = cli("cache", "clear", "--cache-dir", filled.root, "--older-than", huge, "--yes")
    user_error(res, "--older-than", "too long")
    assert len(filled.entries()) == 3


def test_clear_older_than_longer_than_any_entry_removes_nothing(cli, filled: EngineCache) -> None:
    res = cli("cache", "clear", "--cache-dir", filled.root, "--older-than", "99999999w", "--yes")
    assert res.code == 0, res.stderr
    assert "Removed 0 " in res.stdout and len(filled.entries()) == 3


def test_cache_dir_that_is_a_file_is_a_user_error(cli, tmp_path: Path, user_error) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    user_error(cli("cache", "list", "--cache-dir", blocker), str(blocker), "not a folder")
