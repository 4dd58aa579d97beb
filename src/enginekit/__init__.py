"""enginekit: export, build, verify and benchmark inference engines, with one honest report.

The Python API mirrors the commands (:mod:`enginekit.api`)::

    enginekit.inspect(model)             enginekit.run(model, feeds, backends=[...])
    enginekit.export(source, output)     enginekit.compare(reference_outputs, candidate_outputs)
    enginekit.bench(model, backends)     enginekit.optimize(model_or_settings, ...)
    enginekit.load(path)                 -> a LoadedModel: model(feeds) -> outputs

They are loaded on first use (``import enginekit`` imports neither numpy nor any runtime). ``export``,
``compare`` and ``bench`` are also subpackages (``enginekit.export.api``, ``enginekit.compare.metrics``, ...):
those three subpackage objects are callable, and calling one calls the API function of that name. So
``enginekit.compare(ref, cand)`` and ``from enginekit.compare import CompareSettings`` both work, and
``enginekit.compare`` is one object whichever is used first.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # for type checkers; at run time module __getattr__ below loads these on first use
    from enginekit.api import LoadedModel as LoadedModel
    from enginekit.api import inspect as inspect
    from enginekit.api import load as load
    from enginekit.api import optimize as optimize
    from enginekit.api import run as run
    from enginekit.settings import (
        BackendSettings as BackendSettings,
    )
    from enginekit.settings import (
        BenchSettings as BenchSettings,
    )
    from enginekit.settings import (
        CompareSettings as CompareSettings,
    )
    from enginekit.settings import (
        ExportSettings as ExportSettings,
    )
    from enginekit.settings import (
        FeedSettings as FeedSettings,
    )
    from enginekit.settings import (
        OptimizeSettings as OptimizeSettings,
    )
    from enginekit.settings import (
        RunSettings as RunSettings,
    )

# Loaded by name, on first use: modules of low layers import this package (for __version__), and a static import
# of enginekit.api here would read to lint-imports as those modules importing the top layer.
_API_MODULE = f"{__name__}.api"
# API functions whose name is also a subpackage: the subpackage module is made callable (see _CallableModule)
_CALLABLE_SUBPACKAGES = frozenset({"export", "compare", "bench"})
_API_NAMES = frozenset({"inspect", "run", "optimize", "load", "LoadedModel"})
_SETTINGS_NAMES = frozenset({"BackendSettings", "BenchSettings", "CompareSettings", "ExportSettings",
                             "FeedSettings", "OptimizeSettings", "RunSettings"})


class _CallableModule(types.ModuleType):
    """A subpackage that is also the API function of its name: ``enginekit.export(...)`` runs
    :func:`enginekit.api.export`, while ``enginekit.export.api`` stays the submodule."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(_API_MODULE), self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(types.ModuleType):
    """The ``enginekit`` module: the import system sets each imported subpackage on it as an attribute, and
    the three whose names are API functions become callable at that moment (same object, same contents)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _CALLABLE_SUBPACKAGES and type(value) is types.ModuleType:
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _CALLABLE_SUBPACKAGES:  # importing it sets it here, callable (_Package.__setattr__)
        return importlib.import_module(f"{__name__}.{name}")
    if name in _API_NAMES:
        value = getattr(importlib.import_module(_API_MODULE), name)
    elif name in _SETTINGS_NAMES:
        value = getattr(importlib.import_module(f"{__name__}.settings"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_CALLABLE_SUBPACKAGES, *_API_NAMES, *_SETTINGS_NAMES})
