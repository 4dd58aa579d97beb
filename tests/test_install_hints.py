"""Install hints name extras that exist: every `pip install 'enginekit[EXTRA]'` enginekit can print."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from enginekit.deps import KNOWN
from enginekit.errors import MissingDependencyError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).parents[1]
EXTRAS = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])


@pytest.mark.parametrize("module", sorted(KNOWN))
def test_every_known_extra_exists(module: str) -> None:
    dist, extra = KNOWN[module]
    hint = MissingDependencyError(dist, extra=extra).hint or ""
    named = re.findall(r"enginekit\[([^\]]+)\]", hint)
    assert all(n in EXTRAS for n in named), (module, hint, EXTRAS)


def test_no_source_file_names_a_missing_extra() -> None:
    for path in (ROOT / "src" / "enginekit").rglob("*.py"):
        for extra in re.findall(r"enginekit\[([a-z0-9_,-]+)\]", path.read_text()):
            assert set(extra.split(",")) <= EXTRAS, (path, extra)
    readme = (ROOT / "README.md").read_text()
    for extra in re.findall(r"enginekit\[([a-z0-9_,-]+)\]", readme):
        assert set(extra.split(",")) <= EXTRAS, ("README.md", extra)
