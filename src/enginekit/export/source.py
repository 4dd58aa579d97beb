"""Recognize and load a framework source given on the command line.

PyTorch: ``path/to/file.py:factory`` or ``package.module:factory`` (a callable returning an nn.Module),
a TorchScript archive (``.pt``/``.pth``/``.ts``/``.torchscript``) or a ``torch.export`` program (``.pt2``).
Paddle: a ``paddle.jit.save`` model (``.json``/``.pdmodel`` + ``.pdiparams``, their prefix, or a folder).

A factory's module is imported and the factory called: the user's code runs (see
:func:`enginekit.backends.torch_load.user_code`). TorchScript archives and ``.pt2`` programs run code they carry
when loaded, so they load only with ``trust_remote_code`` (:mod:`enginekit.backends.torch_load`).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enginekit.errors import InvalidArgumentError, ModelLoadError

log = logging.getLogger(__name__)

TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".jit")
PADDLE_SUFFIXES = (".pdmodel", ".pdiparams", ".json")

FACTORY, TORCHSCRIPT, EXPORTED_PROGRAM, PADDLE, ONNX = "factory", "torchscript", "exported-program", "paddle", "onnx"


@dataclass(frozen=True)
class Source:
    kind: str
    text: str
    path: Path | None = None  # file for archives, module file for FACTORY when given as a path
    attr: str | None = None  # factory name

    @property
    def framework(self) -> str:
        return {PADDLE: "paddle", ONNX: "onnx"}.get(self.kind, "torch")


def _is_paddle_dir(p: Path) -> bool:
    return p.is_dir() and any(p.glob("*.pdiparams"))


def detect_source(text: str) -> Source:
    """Classify SOURCE without importing any framework."""
    path = Path(text)
    if path.suffix.lower() == ".onnx":
        return Source(ONNX, text, path)
    if path.suffix.lower() == ".pt2":
        return Source(EXPORTED_PROGRAM, text, path)
    if path.suffix.lower() in PADDLE_SUFFIXES or _is_paddle_dir(path) or Path(text + ".pdiparams").is_file():
        return Source(PADDLE, text, path)
    if path.suffix.lower() in TORCHSCRIPT_SUFFIXES:
        return Source(TORCHSCRIPT, text, path)
    module, sep, attr = text.rpartition(":")
    if sep and attr.isidentifier() and module:
        if module.endswith(".py"):
            return Source(FACTORY, text, Path(module), attr)
        if all(part.isidentifier() for part in module.split(".")):
            return Source(FACTORY, text, None, attr)
    raise InvalidArgumentError(
        f"Cannot tell what kind of model {text!r} is.",
        hint="Give path/to/file.py:factory or package.module:factory (a callable returning an nn.Module), "
        "a TorchScript file (.pt), a torch.export program (.pt2), or a Paddle model "
        "(model.json/.pdmodel + .pdiparams, or their folder).",
    )


def _import_factory_module(src: Source) -> Any:
    from enginekit.backends.torch_load import user_code

    if src.path is None:
        module_name = src.text.rpartition(":")[0]
        try:
            with user_code(module_name, "Importing"):
                return importlib.import_module(module_name)
        except ImportError as exc:
            raise ModelLoadError(
                f"Cannot import module {module_name!r} for {src.text!r}: {exc}",
                hint="Check the module path and that its package is installed or on PYTHONPATH.",
            ) from exc
    if not src.path.is_file():
        raise ModelLoadError(f"Python file {str(src.path)!r} does not exist.")
    name = f"enginekit_user_model_{abs(hash(str(src.path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, src.path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"Cannot load {str(src.path)!r} as a Python module.")
    module = importlib.util.module_from_spec(spec)
    folder = str(src.path.resolve().parent)
    sys.path.insert(0, folder)  # let the file import its neighbours
    try:
        sys.modules[name] = module
        with user_code(str(src.path), "Importing"):
            spec.loader.exec_module(module)
    except ModelLoadError:
        sys.modules.pop(name, None)
        raise
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        sys.modules.pop(name, None)
        raise ModelLoadError(f"Importing {str(src.path)!r} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if sys.path and sys.path[0] == folder:
            sys.path.pop(0)
    return module


def load_torch_model(src: Source, weights: Path | None, *, trust_remote_code: bool = False) -> Any:
    """An eval-mode nn.Module / ScriptModule, or a torch.export.ExportedProgram for .pt2.

    TorchScript archives and ``.pt2`` programs run code they carry when loaded: without ``trust_remote_code``
    they are refused (ModelLoadError naming ``--trust-remote-code``) before torch reads them.
    """
    from enginekit.backends.torch_common import is_aoti_package
    from enginekit.backends.torch_load import (
        AOTI_PACKAGE,
        EXPORT_PROGRAM,
        TORCHSCRIPT_ARCHIVE,
        check_trusted,
        user_code,
    )
    from enginekit.deps import require

    torch = require("torch", purpose="exporting PyTorch models")
    if src.kind == EXPORTED_PROGRAM:
        assert src.path is not None
        if not src.path.is_file():
            raise ModelLoadError(f"torch.export program {str(src.path)!r} does not exist.")
        if weights is not None:
            raise InvalidArgumentError("--weights applies to factory models; a .pt2 program carries its weights.")
        if is_aoti_package(src.path):  # torch.export.load would load its shared library, then fail
            check_trusted(src.path, AOTI_PACKAGE, trust_remote_code)
            raise ModelLoadError(f"{str(src.path)!r} is an AOTInductor package (compiled code), not a torch.export "
                                 "program.", hint="Run it with --backend aoti; export the model's source instead.")
        check_trusted(src.path, EXPORT_PROGRAM, trust_remote_code)
        try:
            return torch.export.load(str(src.path))
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"{str(src.path)!r} is not a loadable torch.export program: {exc}") from exc
    if src.kind == TORCHSCRIPT:
        assert src.path is not None
        if not src.path.is_file():
            raise ModelLoadError(f"TorchScript file {str(src.path)!r} does not exist.")
        if weights is not None:
            raise InvalidArgumentError("--weights applies to factory models; a TorchScript archive carries its "
                                       "weights.")
        check_trusted(src.path, TORCHSCRIPT_ARCHIVE, trust_remote_code)
        try:
            model = torch.jit.load(str(src.path), map_location="cpu")
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(
                f"{str(src.path)!r} is not a TorchScript archive ({type(exc).__name__}).",
                hint="A state dict is not a model: give the code that builds it, FILE.py:factory "
                "--weights state_dict.pt.",
            ) from exc
        return model.eval()
    module = _import_factory_module(src)
    factory = getattr(module, src.attr or "", None)
    if factory is None or not callable(factory):
        raise ModelLoadError(f"{src.text!r}: {src.attr!r} is not a callable in that module.")
    try:
        with user_code(src.text, "Calling"):
            model = factory()
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"Calling {src.text!r} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError(f"{src.text!r} returned a {type(model).__name__}, not a torch.nn.Module.")
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def load_weights(model: Any, weights: Path) -> None:
    """Load a state dict with ``weights_only=True`` (no arbitrary code) and strict key matching."""
    import torch

    if not weights.is_file():
        raise ModelLoadError(f"Weights file {str(weights)!r} does not exist.")
    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{str(weights)!r} could not be loaded with weights_only=True: {exc}",
                             hint="Save weights with torch.save(model.state_dict(), path).") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelLoadError(f"{str(weights)!r} holds a {type(state).__name__}, not a state dict.")
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelLoadError(
            f"{str(weights)!r} does not match the model: missing {list(result.missing_keys)[:8]}, "
            f"unexpected {list(result.unexpected_keys)[:8]}.",
            hint="Check that the factory builds the architecture the weights were trained with.",
        )
