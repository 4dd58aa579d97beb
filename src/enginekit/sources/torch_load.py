"""Which PyTorch model files may run code when loaded, and the one switch that allows them.

Loading these runs code the file carries, whatever enginekit does around the loader (verified with planted
payloads on torch 2.13, see tests/security):

* a TorchScript archive (``torch.jit.load``): its ``__setstate__`` methods run on load, and TorchScript can
  create and overwrite files (``torch.from_file(path, shared=True)``);
* a ``torch.export`` program (``.pt2``, ``torch.export.load``): its pickled parts fall back to
  ``torch.load(weights_only=False)`` (example inputs, pickled weights and constants, opaque objects), and its
  symbolic shape expressions are parsed with ``sympy.sympify``, which evaluates Python: forcing weights-only
  loading still leaves the second route open;
* an AOTInductor package (``.pt2`` with ``data/aotinductor/``): a shared library, loaded by design.

enginekit loads them only with ``--trust-remote-code`` (``trust_remote_code=True`` in ``ExportSettings`` and
``BackendSettings``), named like Hugging Face's switch for model code from outside the user's control.
Python sources (``file.py:factory``, ``package.module:factory``) are imported and called: that is the user's
own code, named on the command line, so it needs no switch; :func:`user_code` turns a ``sys.exit`` (or an
argparse error) during that import or call into a user error that names the file.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from enginekit.errors import InvalidArgumentError, ModelLoadError
from enginekit.sources.detect import EXPORTED_PROGRAM, TORCHSCRIPT, Source, detect_source, is_aoti_package

TRUST_FLAG = "--trust-remote-code"

TORCHSCRIPT_ARCHIVE, EXPORT_PROGRAM, AOTI_PACKAGE = "TorchScript archive", "torch.export program", "AOTInductor package"

_WHY = {
    TORCHSCRIPT_ARCHIVE: "torch.jit.load runs the TorchScript code inside it (its __setstate__ methods, which can "
    "create and overwrite files)",
    EXPORT_PROGRAM: "torch.export.load unpickles parts of it with weights_only=False and evaluates the symbolic "
    "shape expressions written in it as Python (sympy.sympify), so a crafted file runs any code",
    AOTI_PACKAGE: "running it loads the shared library inside it (native code, by design)",
}


def check_trusted(path: str | Path, what: str, trusted: bool) -> None:
    """ModelLoadError (exit 2) naming :data:`TRUST_FLAG` unless ``trusted``: ``what`` is one of the kinds above."""
    if trusted:
        return
    raise ModelLoadError(
        f"{str(path)!r} is {'an' if what[0] in 'AEIOU' else 'a'} {what}: {_WHY[what]}. enginekit does not load "
        f"such a file unless you pass {TRUST_FLAG}.",
        hint=f"Pass {TRUST_FLAG} (Python API: trust_remote_code=True) only for a file you made or trust as you "
        "would a program; or give the model's Python code as file.py:factory (--weights loads a state dict with "
        "weights_only=True).",
    )


def torch_file_kind(path: str | Path) -> str | None:
    """The kind of :data:`_WHY` a PyTorch model file is (from its name and zip directory), or None (Python code,
    ONNX, Paddle, ...). Nothing is loaded."""
    try:
        kind = detect_source(str(path)).kind
    except InvalidArgumentError:
        return None
    if kind == EXPORTED_PROGRAM:
        return AOTI_PACKAGE if is_aoti_package(path) else EXPORT_PROGRAM
    return TORCHSCRIPT_ARCHIVE if kind == TORCHSCRIPT else None


def check_source_trust(source: str | Path, trusted: bool) -> None:
    """Refuse (exit 2) a PyTorch model file that runs code when loaded, unless ``trusted``; before any work."""
    what = torch_file_kind(source)
    if what is not None:
        check_trusted(source, what, trusted)


@contextmanager
def user_code(path: str, action: str) -> Iterator[None]:
    """Run the user's Python code (importing ``path``, calling its factory) as a library call.

    ``sys.argv`` is ``[path]`` meanwhile, so code that parses the command line on import sees none of
    enginekit's options; a ``SystemExit`` (``sys.exit()``, ``exit()``, an argparse error) becomes a
    ModelLoadError naming the file instead of ending enginekit with that code. KeyboardInterrupt passes.
    """
    saved = sys.argv
    sys.argv = [path]
    try:
        yield
    except SystemExit as exc:
        code = exc.code if exc.code is not None else 0
        raise ModelLoadError(
            f"{action} {path!r} exited the program (SystemExit with code {code!r}): the code calls sys.exit() or "
            "parses the command line (argparse) when it is imported or called, so it cannot be loaded as a model.",
            hint='Move that code under `if __name__ == "__main__":`, so that importing the file only defines the '
            "model and calling the factory only builds it.",
        ) from None
    finally:
        sys.argv = saved


def _import_factory_module(src: Source) -> Any:
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
    return import_python_file(src.path)


def import_python_file(path: Path, prefix: str = "enginekit_user_model") -> Any:
    """Import the user's ``file.py`` (its folder first on ``sys.path`` meanwhile, so it can import its neighbours;
    under :func:`user_code`). ModelLoadError for a missing file, a SystemExit or an exception while importing."""
    if not path.is_file():
        raise ModelLoadError(f"Python file {str(path)!r} does not exist.")
    name = f"{prefix}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"Cannot load {str(path)!r} as a Python module.")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # let the file import its neighbours
    try:
        sys.modules[name] = module
        with user_code(str(path), "Importing"):
            spec.loader.exec_module(module)
    except ModelLoadError:
        sys.modules.pop(name, None)
        raise
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        sys.modules.pop(name, None)
        raise ModelLoadError(f"Importing {str(path)!r} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if sys.path and sys.path[0] == folder:
            sys.path.pop(0)
    return module


def load_torch_model(src: Source, weights: Path | None, *, trust_remote_code: bool = False) -> Any:
    """An eval-mode nn.Module / ScriptModule, or a torch.export.ExportedProgram for .pt2.

    TorchScript archives and ``.pt2`` programs run code they carry when loaded: without ``trust_remote_code``
    they are refused (ModelLoadError naming ``--trust-remote-code``) before torch reads them.
    """
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


def flatten_outputs(obj: Any) -> list[Any]:
    """Tensors of a (nested) tuple/list/dict output, in order; dict values in insertion order."""
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in flatten_outputs(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in flatten_outputs(item)]
    if obj is None:
        return []
    raise InvalidArgumentError(f"The model returned a {type(obj).__name__}; only tensors (in tuples, lists or "
                               "dicts) can be exported.")
