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

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from enginekit.errors import ModelLoadError

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
    from enginekit.backends.torch_common import is_aoti_package
    from enginekit.errors import InvalidArgumentError
    from enginekit.export.source import EXPORTED_PROGRAM, TORCHSCRIPT, detect_source

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
