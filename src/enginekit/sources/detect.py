"""What a model path or SOURCE text is, from names and zip directories only (no framework is imported).

ONNX files, TensorRT engine files, PyTorch sources (``file.py:factory``, ``package.module:factory``, TorchScript
archives, ``torch.export`` programs, AOTInductor packages) and Paddle models (``.json``/``.pdmodel`` +
``.pdiparams``, their prefix, or a folder).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from enginekit.errors import InvalidArgumentError
from enginekit.sources.paddle_files import looks_like_paddle_model

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


def is_aoti_package(path: str | Path) -> bool:
    """True for an AOTInductor package: a zip whose entries include ``<root>/data/aotinductor/...``.

    A ``torch.export.save`` program is also a zip (``<root>/models/``, ``<root>/data/weights/``) but has no
    ``data/aotinductor`` folder. Reads only the zip directory; never imports torch.
    """
    p = Path(path)
    if not p.is_file() or not zipfile.is_zipfile(p):
        return False
    try:
        with zipfile.ZipFile(p) as zf:
            names = zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any(n.startswith("data/aotinductor/") or "/data/aotinductor/" in n for n in names)


def torch_model_format(model: str | Path) -> str | None:
    """``"aoti"`` for an AOTInductor package, ``"torch"`` for a PyTorch source, None for anything else.

    Cheap: file names and, for ``.pt2``, the zip directory; the model is not imported or loaded.
    """
    text = str(model)
    try:
        kind = detect_source(text).kind
    except InvalidArgumentError:
        return None
    if kind == EXPORTED_PROGRAM and is_aoti_package(text):
        return "aoti"
    return "torch" if kind in (FACTORY, TORCHSCRIPT, EXPORTED_PROGRAM) else None


def model_format(path: str | Path) -> str:
    """"onnx", "engine", "torch", "aoti" or "paddle" (from names and zip directories; nothing is imported)."""
    if str(path).lower().endswith(".onnx"):
        return "onnx"
    if str(path).lower().endswith((".engine", ".plan", ".trt")):
        return "engine"
    torch_fmt = torch_model_format(path)
    if torch_fmt is not None:
        return torch_fmt
    return "paddle" if looks_like_paddle_model(path) else "onnx"
