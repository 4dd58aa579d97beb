"""Load an ONNX model file with clear errors for missing, corrupt, truncated or unsafe files.

Protobuf has no end marker, so a file cut at a top-level field boundary still parses. Every
field before ``graph`` is tiny and a cut inside a length-delimited field (the graph is one)
fails to parse, so a truncated model either fails to parse or lacks its graph or its opset
imports; :func:`load_model` checks for both and then runs the ONNX checker. A cut that only
drops trailing optional fields (``metadata_props``, local functions that no node uses) leaves
a valid model and cannot be told apart from one saved that way.

External data locations are checked before anything is read: a location must be a relative
path that stays inside the model's folder once symlinks are resolved.
"""

from __future__ import annotations

import logging
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING, Literal

from enginekit.errors import ModelLoadError

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)

TensorKind = Literal["initializer", "constant", "attribute", "sparse_indices"]

_EXTERNAL = 1  # onnx.TensorProto.EXTERNAL, kept here so this module imports without onnx
_DEFAULT_DOMAINS = frozenset({"", "ai.onnx"})

# Bits per element of each fixed-width ONNX element type (STRING and unknown types are absent).
_ELEMENT_BITS: dict[int, int] = {
    1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64,
    14: 64, 15: 128, 16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4, 24: 8, 25: 2, 26: 2,
}  # fmt: skip

# First bytes of files people mistake for ONNX models.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a zip archive (a PyTorch .pt/.pth checkpoint or an .npz file?)"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89HDF", "an HDF5 file (a Keras model?)"),
    *((b"\x80" + bytes([v]), "a Python pickle (a PyTorch checkpoint?)") for v in (2, 3, 4, 5)),
)


@dataclass(frozen=True)
class TensorRef:
    """A tensor stored in a model: an initializer, a Constant node value or another attribute.

    ``where`` says where it lives, for messages; ``name`` is the tensor's name, or the producing
    node's output name for a Constant whose value tensor is unnamed.
    """

    name: str
    where: str
    kind: TensorKind
    tensor: onnx.TensorProto


def load_model(
    path: str | Path, *, load_external_data: bool = True, check: bool = True
) -> onnx.ModelProto:
    """Read, validate and return the ONNX model at ``path``.

    External data files are located relative to the model's folder; their locations are checked
    for escapes, existence and size even when ``load_external_data`` is False (the tensors then
    keep their external references: see :func:`external_data_files`). ``check`` runs
    ``onnx.checker.check_model``; turn it off only for a model that is known to be intact but
    that the checker rejects (it is stricter than ONNX Runtime in places).

    Raises:
        ModelLoadError: the file is missing, unreadable, not an ONNX model, truncated, fails the
            checker, or references external data that is unsafe, missing or too short.
    """
    import onnx

    model_path = Path(path)
    data = _read_model_bytes(model_path)
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:
        raise ModelLoadError(  # the parser's text is left out: it may quote the file's bytes
            f"Could not parse '{model_path}' as an ONNX model ({len(data)} bytes): "
            f"{type(exc).__name__}. {_what_it_looks_like(data)}",
            hint="Check that the file is a complete .onnx file (re-export or re-download it; "
            "a failed copy or an interrupted export leaves a truncated file).",
        ) from exc
    _check_structure(model, model_path, data)
    del data
    refs = [r for r in model_tensors(model) if _is_external(r.tensor)]
    base_dir = model_path.parent
    for ref in refs:  # every location is checked before any external file is opened
        _resolve_location(ref, base_dir, model_path)
    for ref in refs:
        _external_span(ref, base_dir, model_path)
    if check:
        check_loaded_model(model, model_path, has_external=bool(refs))
    if load_external_data:
        for ref in refs:
            ref.tensor.raw_data = read_external_data(ref, model_path)
            del ref.tensor.external_data[:]
            ref.tensor.data_location = onnx.TensorProto.DEFAULT
        if refs:
            logger.debug("loaded external data of %d tensors for %s", len(refs), model_path)
    return model


def external_data_files(model: onnx.ModelProto) -> list[str]:
    """Unique external data locations the model still references, in order of first use.

    Empty after ``load_model(..., load_external_data=True)``, which inlines the data.
    """
    seen: dict[str, None] = {}
    for ref in model_tensors(model):
        if _is_external(ref.tensor):
            seen.setdefault(_external_info(ref.tensor).get("location", ""), None)
    return list(seen)


def model_tensors(model: onnx.ModelProto) -> Iterator[TensorRef]:
    """Every tensor in the model: graph and subgraph initializers, node attributes, functions."""
    yield from _graph_tensors(model.graph, "")
    for func in model.functions:
        scope = f"function '{func.domain}:{func.name}'"
        for node in func.node:
            yield from _node_tensors(node, scope)


def tensor_element_count(tensor: onnx.TensorProto) -> int:
    return math.prod(int(d) for d in tensor.dims)


def tensor_nbytes(tensor: onnx.TensorProto) -> int | None:
    """Bytes the tensor's values take in raw form (sub-byte types packed); None for strings."""
    if tensor.data_type == 8:  # STRING
        return sum(len(s) for s in tensor.string_data)
    bits = _ELEMENT_BITS.get(tensor.data_type)
    if bits is None:
        return None
    return (tensor_element_count(tensor) * bits + 7) // 8


def read_external_data(ref: TensorRef, model_path: str | Path) -> bytes:
    """The raw bytes of an external tensor of the model at ``model_path``, checked for safety and size."""
    file, offset, length = _external_span(ref, Path(model_path).parent, Path(model_path))
    try:
        with open(file, "rb") as fh:
            fh.seek(offset)
            blob = fh.read(length)
    except OSError as exc:
        raise ModelLoadError(
            f"Could not read external data of {ref.where} from '{file}': {exc}.",
            hint="Check the file's permissions and that it is not being written.",
        ) from exc
    if len(blob) != length:
        raise ModelLoadError(
            f"External data file '{file}' of {ref.where} ended early: read {len(blob)} bytes "
            f"at offset {offset}, expected {length}.",
            hint="The file changed while reading or is truncated; copy it again.",
        )
    return blob


# --- reading and structure -------------------------------------------------------------------


def _read_model_bytes(model_path: Path) -> bytes:
    if not model_path.exists():
        parent = model_path.parent
        extra = "" if parent.is_dir() else f" Its folder '{parent}' does not exist either."
        raise ModelLoadError(
            f"Model file '{model_path}' does not exist.{extra}",
            hint="Check the path; relative paths are taken from the current directory "
            f"'{Path.cwd()}'.",
        )
    if model_path.is_dir():
        onnx_files = sorted(p.name for p in model_path.glob("*.onnx"))[:5]
        found = f"it holds {', '.join(onnx_files)}" if onnx_files else "it holds no .onnx file"
        raise ModelLoadError(
            f"Model path '{model_path}' is a folder, expected an .onnx file ({found}).",
            hint="Pass the path of the .onnx file itself.",
        )
    try:
        mode = model_path.stat().st_mode
        if not stat.S_ISREG(mode):  # a FIFO or a device would block or never end
            raise ModelLoadError(
                f"Model path '{model_path}' is not a regular file (a pipe, device or socket); enginekit reads "
                "models from regular files only.",
                hint="Copy the model into a regular file first.",
            )
        return model_path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(
            f"Could not read model file '{model_path}': {exc.strerror or exc}.",
            hint="Check that the file is readable by this user and is a regular file.",
        ) from exc


def _what_it_looks_like(data: bytes) -> str:
    if not data:
        return "The file is empty."
    for magic, what in _SIGNATURES:
        if data.startswith(magic):
            return f"It looks like {what}, not ONNX."
    text = data[:256].decode("utf-8", errors="replace").rstrip("\ufffd")  # a cut last character
    if text.strip() and all(c.isprintable() or c in "\r\n\t" for c in text):
        kind = " (JSON?)" if text.lstrip().startswith(("{", "[")) else ""  # never quote the file's content
        return f"It looks like a text file{kind}, not a binary ONNX model."
    return "Its bytes are not a complete protobuf ModelProto: the file is truncated or corrupt."


def _check_structure(model: onnx.ModelProto, model_path: Path, data: bytes) -> None:
    """Catch what protobuf lets through: empty files, other formats, truncated models."""
    size = len(data)
    if size == 0:
        raise ModelLoadError(
            f"Model file '{model_path}' is empty (0 bytes), expected a serialized ONNX ModelProto.",
            hint="The export or copy that produced it failed; export the model again.",
        )
    if not model.HasField("graph") or model.ir_version <= 0:
        missing = "graph" if not model.HasField("graph") else "ir_version"
        raise ModelLoadError(
            f"'{model_path}' ({size} bytes) is not a valid ONNX model: it parsed but has no "
            f"{missing}. {_what_it_looks_like(data)}",
            hint="If this is a copy of a real model, it is probably truncated or corrupt: copy "
            "or export it again.",
        )
    if not model.opset_import:
        raise ModelLoadError(
            f"'{model_path}' ({size} bytes) has a graph but no opset_import: the file is "
            "truncated right after the graph, or was written by a broken exporter.",
            hint="Copy or export the model again; opset imports come right after the graph.",
        )
    _check_text(model, model_path)
    imported = {op.domain for op in model.opset_import}
    if imported & _DEFAULT_DOMAINS:
        imported |= _DEFAULT_DOMAINS
    missing_domains = sorted({n.domain for n in model.graph.node} - imported)
    if missing_domains:
        shown = ", ".join(repr(d or "ai.onnx") for d in missing_domains)
        raise ModelLoadError(
            f"'{model_path}' ({size} bytes) uses operator domains {shown} but imports only "
            f"{sorted(d or 'ai.onnx' for d in imported)}: the file is truncated or was saved "
            "without all its opset imports.",
            hint="Copy or export the model again.",
        )


def _graph_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graph_nodes(attr.g)
            for sub in attr.graphs:
                yield from _graph_nodes(sub)


def _check_text(model: onnx.ModelProto, model_path: Path) -> None:
    """Protobuf hands a string field that is not valid UTF-8 back as ``bytes``: refuse such a model here, or code
    that skips the checker (lint, inspect --no-check) fails on it later (sorting bytes with str)."""
    nodes = [*_graph_nodes(model.graph), *(n for f in model.functions for n in f.node)]
    texts = [model.domain, *(op.domain for op in model.opset_import),
             *(t for n in nodes for t in (n.op_type, n.domain, n.name, *n.input, *n.output))]
    if not all(isinstance(t, str) for t in texts):
        raise ModelLoadError(  # the name itself is left out: it is the file's damaged bytes
            f"'{model_path}' is damaged: it holds a node or domain name that is not valid UTF-8.",
            hint="Copy or export the model again.",
        )


def check_loaded_model(model: onnx.ModelProto, model_path: Path, *, has_external: bool) -> None:
    import onnx

    checked = model
    if has_external:
        # The in-memory checker would look for external files relative to the current directory
        # (and refuses every symlink), and checking by path reads the file again. The external
        # tensors were already checked here, so hand the checker a copy with them emptied.
        checked = onnx.ModelProto()
        checked.CopyFrom(model)
        for ref in model_tensors(checked):
            if _is_external(ref.tensor):
                del ref.tensor.external_data[:]
                ref.tensor.data_location = onnx.TensorProto.DEFAULT
                ref.tensor.dims[:] = [0]
    try:
        onnx.checker.check_model(checked)
    except Exception as exc:
        text = " ".join(str(exc).split())
        text = text if len(text) <= 500 else text[:500] + "…"
        raise ModelLoadError(
            f"'{model_path}' failed the ONNX checker: {text}",
            hint="Fix the exporter or the model. If the file is intact and other tools run it, "
            "use --no-check (`enginekit inspect`, `enginekit run`) or load_model(check=False) (the checker is "
            "stricter than ONNX Runtime, e.g. it requires shapes on graph inputs and outputs). "
            f"onnx version: {onnx.__version__}.",
        ) from exc


# --- tensors and external data ---------------------------------------------------------------


def _graph_tensors(graph: onnx.GraphProto, scope: str) -> Iterator[TensorRef]:
    suffix = f" in {scope}" if scope else ""
    for init in graph.initializer:
        yield TensorRef(init.name, f"initializer '{init.name}'{suffix}", "initializer", init)
    for sparse in graph.sparse_initializer:
        name = sparse.values.name
        yield TensorRef(name, f"sparse initializer '{name}'{suffix}", "initializer", sparse.values)
        yield TensorRef(name, f"indices of sparse initializer '{name}'{suffix}", "sparse_indices", sparse.indices)
    for node in graph.node:
        yield from _node_tensors(node, scope)


def _node_tensors(node: onnx.NodeProto, scope: str) -> Iterator[TensorRef]:
    node_name = node.name or (node.output[0] if node.output else node.op_type)
    where = f"{node.op_type} node '{node_name}'" + (f" in {scope}" if scope else "")
    is_constant = node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS
    for attr in node.attribute:
        kind: TensorKind = "constant" if is_constant else "attribute"
        label = f"attribute '{attr.name}' of {where}"
        tensors = ([attr.t] if attr.HasField("t") else []) + list(attr.tensors)
        for t in tensors:
            name = t.name or (node.output[0] if is_constant and node.output else node_name)
            yield TensorRef(name, f"tensor '{name}' ({label})", kind, t)
        sparse = ([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []) + list(attr.sparse_tensors)
        for st in sparse:
            name = st.values.name or (node.output[0] if is_constant and node.output else node_name)
            yield TensorRef(name, f"sparse tensor '{name}' ({label})", kind, st.values)
            yield TensorRef(name, f"indices of sparse tensor '{name}' ({label})", "sparse_indices", st.indices)
        graphs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
        for sub in graphs:
            yield from _graph_tensors(sub, f"subgraph '{attr.name}' of {where}")


def _is_external(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location == _EXTERNAL


def _external_info(tensor: onnx.TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def _resolve_location(ref: TensorRef, base_dir: Path, model_path: Path) -> Path:
    """The real path of an external data file, refusing locations outside the model's folder."""
    location = _external_info(ref.tensor).get("location", "")
    if not location or "\x00" in location:
        raise ModelLoadError(
            f"{ref.where[:1].upper()}{ref.where[1:]} in '{model_path}' is marked as external data "
            f"but has no usable location (got {location!r}).",
            hint="Re-save the model with onnx.save_model(..., save_as_external_data=True).",
        )
    if Path(location).is_absolute() or PureWindowsPath(location).is_absolute() or PureWindowsPath(location).drive:
        raise ModelLoadError(
            f"Refusing external data of {ref.where} in '{model_path}': location '{location}' is an "
            "absolute path, expected a path relative to the model's folder.",
            hint="Move the data file next to the model and re-save the model with a relative "
            "location; never load models from untrusted sources that point outside their folder.",
        )
    root = Path(os.path.realpath(base_dir))
    target = Path(os.path.realpath(root / location))
    if not target.is_relative_to(root):
        raise ModelLoadError(
            f"Refusing external data of {ref.where} in '{model_path}': location '{location}' "
            f"resolves to '{target}', outside the model's folder '{root}'.",
            hint="External data must stay inside the model's folder (no '..', no symlinks out of "
            "it): move the data file next to the model and re-save it. For a download cache that "
            "links to blobs elsewhere (Hugging Face hub), copy the folder with links resolved "
            "(cp -rL) and load the copy.",
        )
    return target


def _external_span(ref: TensorRef, base_dir: Path, model_path: Path) -> tuple[Path, int, int]:
    """(file, offset, length) of an external tensor, checked against the file and tensor sizes."""
    file = _resolve_location(ref, base_dir, model_path)
    info = _external_info(ref.tensor)
    location = info["location"]
    if not file.is_file():
        state = "is not a regular file" if file.exists() else "does not exist"
        raise ModelLoadError(
            f"External data file '{location}' of {ref.where} {state} (looked in '{file.parent}' "
            f"for model '{model_path}').",
            hint=f"Copy '{location}' next to the model: ONNX external data travels with the .onnx file.",
        )
    try:
        offset = int(info.get("offset", "0"))
        length_text = info.get("length")
        size = file.stat().st_size
        length = size - offset if length_text is None else int(length_text)
    except ValueError as exc:
        raise ModelLoadError(
            f"External data of {ref.where} has a non-integer offset or length ({info}).",
            hint="Re-save the model with onnx.save_model(..., save_as_external_data=True).",
        ) from exc
    if offset < 0 or length < 0 or offset + length > size:
        raise ModelLoadError(
            f"External data file '{location}' of {ref.where} is too short: the tensor needs bytes "
            f"{offset}..{offset + length}, the file has {size} bytes.",
            hint=f"'{location}' is truncated or belongs to another model; copy it again.",
        )
    expected = tensor_nbytes(ref.tensor)
    if expected is not None and ref.tensor.data_type != 8 and expected != length:
        raise ModelLoadError(
            f"External data of {ref.where} has {length} bytes in '{location}', but its shape "
            f"{list(ref.tensor.dims)} and type need {expected} bytes.",
            hint="The model and its data file do not match; save them again together.",
        )
    return file, offset, length
