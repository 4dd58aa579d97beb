"""`enginekit triton`: a Triton Inference Server model repository for a model, an engine or a package.

:func:`write_triton_repository` writes ``REPO/NAME/config.pbtxt`` and ``REPO/NAME/1/model.*``:

- ONNX → ``platform: "onnxruntime_onnx"`` (``model.onnx``; ``--backend openvino`` → ``backend: "openvino"``);
- a TensorRT plan with enginekit's manifest beside it → ``platform: "tensorrt_plan"`` (``model.plan``), its
  optimization profiles listed in the instance group (``profile: ["0", ...]``, as model_config.proto defines it)
  and ``max_batch_size`` kept within the profiles' batch range;
- TorchScript (with ``io_model``, the ONNX export giving names, dtypes and shapes) → ``pytorch_libtorch``;
- a package: the engine of the chosen objective; engines Triton has no backend for (PyTorch, AOTInductor,
  TensorRT-RTX, the ONNX reference) and ``backend="python"`` → Triton's python backend running the ONNX model
  with onnxruntime on the CPU (a generated ``model.py``).

The config is text format of Triton's ``inference.ModelConfig``. The folder is staged beside its final place and
renamed into it, so a reader sees the old model folder or the new one, never half of one.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enginekit.errors import InvalidArgumentError, ModelLoadError, OutputPathError
from enginekit.tensors import TensorSpec

DEFAULT_MAX_BATCH_SIZE = 8
BACKENDS = ("auto", "onnxruntime", "openvino", "python")
KINDS = ("cpu", "gpu")
_PLAN_SUFFIXES = (".engine", ".plan", ".trt")
_TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".jit")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
TRITON_DTYPES: dict[str, str] = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
    "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64", "bfloat16": "TYPE_BF16",
    "string": "TYPE_STRING",
}


@dataclass(frozen=True)
class TritonSettings:
    """What `enginekit triton` writes. ``None`` means: decided from the model (see each field)."""

    name: str | None = None  # model name and folder (default: the package's name or the file's stem)
    max_batch_size: int | None = None  # None: DEFAULT_MAX_BATCH_SIZE (within a plan's profiles) with a batch axis
    dynamic_batching: bool | None = None  # None: on when max_batch_size > 0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int | None = None
    instances: int = 1
    kind: str | None = None  # cpu | gpu; None: gpu for TensorRT plans, else cpu
    objective: str | None = None  # a package's engine: min_latency (default) or max_throughput
    backend: str = "auto"  # auto | onnxruntime | openvino | python
    io_model: Path | None = None  # TorchScript: the ONNX export of the same model (its IO names, dtypes, shapes)
    force: bool = False  # replace an existing non-empty REPO/NAME


@dataclass(frozen=True)
class _Engine:
    """What is served: the config's platform or backend, the files of version 1 and the IO."""

    platform: str | None
    backend: str | None
    files: tuple[tuple[Path, str], ...]  # (source file, name inside 1/)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    name: str
    profiles: tuple[dict[str, Any], ...] = ()
    default_model_filename: str | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class TritonRepository:
    """A written model folder: ``model_dir`` = REPO/NAME, the files in it and the config text."""

    model_dir: Path
    name: str
    serving: str  # the platform or backend of the config
    max_batch_size: int
    config_text: str
    files: list[Path]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"model_dir": str(self.model_dir), "name": self.name, "serving": self.serving,
                "max_batch_size": self.max_batch_size, "files": [str(p) for p in self.files], "notes": self.notes,
                "config": self.config_text}


# ------------------------------------------------------------------------------------------------ what is served


def _onnx_parts(model: Path) -> tuple[tuple[tuple[Path, str], ...], list[TensorSpec], list[TensorSpec]]:
    """The files of an ONNX model (with its external data) as the repository names them, and its inputs and
    outputs; the model is read once."""
    from enginekit.graph.io import input_specs, output_specs
    from enginekit.graph.load import external_data_files, load_model

    proto = load_model(model, load_external_data=False, check=False)
    files = ((model, "model.onnx"), *((model.parent / n, n) for n in external_data_files(proto)))
    return files, input_specs(proto), output_specs(proto)


def _onnx_engine(model: Path, backend: str, name: str, notes: tuple[str, ...] = ()) -> _Engine:
    files, inputs, outputs = _onnx_parts(model)
    if backend == "python":
        return _Engine(None, "python", files, inputs, outputs, name, notes=notes)
    if backend == "openvino":
        return _Engine(None, "openvino", files, inputs, outputs, name, default_model_filename="model.onnx",
                       notes=notes)
    return _Engine("onnxruntime_onnx", None, files, inputs, outputs, name, notes=notes)


def _plan_spec(t: dict[str, Any]) -> TensorSpec:
    return TensorSpec(str(t["name"]), tuple(int(d) if int(d) >= 0 else "?" for d in t["shape"]), str(t["dtype"]))


def _plan_engine(plan: Path, name: str) -> _Engine:
    from enginekit.backends.tensorrt.manifest import read_manifest

    manifest = read_manifest(plan)
    if manifest is None:
        raise ModelLoadError(f"Engine {str(plan)!r} has no enginekit manifest beside it ({plan.name}.json): its "
                             "inputs, outputs and profiles are unknown.",
                             hint="Build it with `enginekit build -o`, which writes the plan and its manifest.")
    if manifest.get("library") != "tensorrt":
        raise InvalidArgumentError(
            f"Engine {str(plan)!r} is a {manifest.get('library')} plan: Triton's TensorRT backend runs only plans "
            "of TensorRT itself.",
            hint="Serve the ONNX model it was built from (onnxruntime, openvino or --backend python), or build the "
            "plan with `enginekit build --backend tensorrt`.")
    try:
        inputs = [_plan_spec(t) for t in manifest["inputs"]]
        outputs = [_plan_spec(t) for t in manifest["outputs"]]
        profiles = tuple(dict(p) for p in manifest.get("profiles") or [])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"Engine manifest {plan.name}.json lacks its inputs, outputs or profiles: "
                             f"{exc!r}.") from exc
    return _Engine("tensorrt_plan", None, ((plan, "model.plan"),), inputs, outputs, name, profiles=profiles)


def _package_engine(package: Path, s: TritonSettings) -> _Engine:
    from enginekit.deploy.package import OBJECTIVES, package_member, read_package

    spec = read_package(package)
    objective = s.objective or "min_latency"
    if objective not in OBJECTIVES:
        raise InvalidArgumentError(f"--objective {objective!r}: choose {' or '.join(OBJECTIVES)}.")
    entry = (spec.get("engines") or {}).get(objective)
    if not isinstance(entry, dict):
        raise InvalidArgumentError(f"Package '{package}' has no {objective} engine.")
    model = package_member(package, spec.get("model"), "model")
    name = _safe_name(str(spec.get("name") or model.stem))
    engine_file = package_member(package, entry["file"], f"engines.{objective}.file") if entry.get("file") else None
    backend, precision = str(entry.get("backend")), str(entry.get("precision") or "fp32")
    what = f"the packaged {objective} engine ({entry.get('candidate')})"
    if s.backend != "auto":
        return _onnx_engine(model, s.backend, name, (f"{what} is replaced by model.onnx on {s.backend}.",))
    if engine_file is not None and engine_file.suffix.lower() in _PLAN_SUFFIXES and backend == "tensorrt":
        return _plan_engine(engine_file, name)
    notes: tuple[str, ...] = ()
    if precision not in ("fp32", "") and backend in ("ort", "openvino"):
        notes = (f"{what} ran at {precision}; Triton's {backend} backend runs model.onnx as written (fp32).",)
    if backend == "ort":
        return _onnx_engine(model, "onnxruntime", name, notes)
    if backend == "openvino":
        return _onnx_engine(model, "openvino", name, notes)
    return _onnx_engine(model, "python", name, (f"Triton has no backend for {what}: model.onnx is served by the "
                                                 "python backend with onnxruntime (CPU).",))


def _torchscript_engine(model: Path, s: TritonSettings) -> _Engine:
    if s.io_model is None or s.io_model.suffix.lower() != ".onnx":
        raise InvalidArgumentError(f"{str(model)!r} is TorchScript, which records no input/output shapes or dtypes.",
                                   hint="Give --io-model, the ONNX export of the same model (enginekit export).")
    if s.backend != "auto":
        raise InvalidArgumentError(f"--backend {s.backend} runs ONNX models; a TorchScript file is served by "
                                   "pytorch_libtorch (leave --backend auto).")
    _, inputs, outputs = _onnx_parts(s.io_model)
    # libtorch binds tensors by position: names follow its <name>__<index> convention
    ins = [TensorSpec(f"{t.name}__{i}", t.shape, t.dtype) for i, t in enumerate(inputs)]
    outs = [TensorSpec(f"{t.name}__{i}", t.shape, t.dtype) for i, t in enumerate(outputs)]
    return _Engine("pytorch_libtorch", None, ((model, "model.pt"),), ins, outs, _safe_name(model.stem))


def _resolve(source: Path, s: TritonSettings) -> _Engine:
    from enginekit.deploy.package import is_package

    if s.backend not in BACKENDS:
        raise InvalidArgumentError(f"--backend {s.backend!r}: choose one of {', '.join(BACKENDS)}.")
    if is_package(source):
        return _package_engine(source, s)
    if s.objective is not None:
        raise InvalidArgumentError(f"--objective picks an engine of a package; {str(source)!r} is not a package "
                                   "folder (no package.json).")
    if not source.exists():
        raise ModelLoadError(f"{str(source)!r} does not exist.")
    suffix = source.suffix.lower()
    if suffix == ".onnx":
        return _onnx_engine(source, "onnxruntime" if s.backend == "auto" else s.backend, _safe_name(source.stem))
    if suffix in _PLAN_SUFFIXES:
        if s.backend != "auto":
            raise InvalidArgumentError(f"--backend {s.backend} runs ONNX models; a TensorRT plan is served by "
                                       "tensorrt_plan (leave --backend auto).")
        return _plan_engine(source, _safe_name(source.stem))
    if suffix in _TORCHSCRIPT_SUFFIXES:
        return _torchscript_engine(source, s)
    raise InvalidArgumentError(f"Cannot serve {str(source)!r} with Triton: give an ONNX model, a TensorRT plan built "
                               "by enginekit (.engine/.plan with its .json manifest), a TorchScript file (.pt) or a "
                               "package folder.")


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", text).lstrip(".-")[:128] or "model"


# ------------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class _Batching:
    max_batch_size: int
    dynamic: bool


def _has_batch_axis(specs: list[TensorSpec]) -> bool:
    return all(t.shape is not None and len(t.shape) >= 1 and not isinstance(t.shape[0], int) for t in specs)


def _plan_max_batch(engine: _Engine) -> int | None:
    """The largest batch every input's profiles allow (axis 0), or None without profiles."""
    if not engine.profiles:
        return None
    most: dict[str, int] = {}
    for profile in engine.profiles:
        for shape in profile.get("shapes") or []:
            most[shape["name"]] = max(most.get(shape["name"], 0), int(shape["max"][0]))
    return min(most.values()) if most else None


def _batching(engine: _Engine, s: TritonSettings) -> _Batching:
    for t in (*engine.inputs, *engine.outputs):
        if t.shape is None:
            raise InvalidArgumentError(f"{t.name!r} has no known rank, and Triton needs the dims of every input and "
                                       "output.", hint="Give the model static ranks (enginekit prepare, shape "
                                       "inference) and try again.")
        if t.dtype not in TRITON_DTYPES:
            raise InvalidArgumentError(f"{t.name!r} has dtype {t.dtype}, which Triton has no type for.")
    batchable = _has_batch_axis([*engine.inputs, *engine.outputs])
    limit = _plan_max_batch(engine) if batchable else None
    mbs = s.max_batch_size
    if mbs is None:
        mbs = min(DEFAULT_MAX_BATCH_SIZE, limit or DEFAULT_MAX_BATCH_SIZE) if batchable else 0
    elif mbs < 0:
        raise InvalidArgumentError(f"--max-batch-size {mbs}: must be >= 0 (0: no batching).")
    elif mbs > 0 and not batchable:
        fixed = [t.name for t in (*engine.inputs, *engine.outputs) if not t.shape or isinstance(t.shape[0], int)]
        raise InvalidArgumentError(f"--max-batch-size {mbs}: the model has no batch axis (dim 0 of "
                                   f"{', '.join(map(repr, fixed))} is fixed or absent).",
                                   hint="Give --max-batch-size 0 (requests carry the full shape).")
    elif limit is not None and mbs > limit:
        raise InvalidArgumentError(f"--max-batch-size {mbs}: the engine's optimization profiles allow batches up to "
                                   f"{limit}.", hint=f"Give --max-batch-size {limit} or less, or rebuild the plan with "
                                   "a larger --profile.")
    dynamic = mbs > 0 if s.dynamic_batching is None else s.dynamic_batching
    if dynamic and mbs == 0:
        raise InvalidArgumentError("--dynamic-batching needs a batch axis and --max-batch-size > 0.")
    if not dynamic and (s.preferred_batch_sizes or s.max_queue_delay_us is not None):
        raise InvalidArgumentError("--preferred-batch-size and --max-queue-delay-us configure dynamic batching, "
                                   "which is off.")
    for size in s.preferred_batch_sizes:
        if not 1 <= size <= mbs:
            raise InvalidArgumentError(f"--preferred-batch-size {size}: must be between 1 and --max-batch-size {mbs}.")
    if s.max_queue_delay_us is not None and s.max_queue_delay_us < 0:
        raise InvalidArgumentError(f"--max-queue-delay-us {s.max_queue_delay_us}: must be >= 0.")
    return _Batching(mbs, dynamic)


def _kind(engine: _Engine, s: TritonSettings) -> str:
    kind = s.kind or ("gpu" if engine.platform == "tensorrt_plan" else "cpu")
    if kind not in KINDS:
        raise InvalidArgumentError(f"--kind {kind!r}: choose cpu or gpu.")
    if kind == "cpu" and engine.platform == "tensorrt_plan":
        raise InvalidArgumentError("--kind cpu: TensorRT plans run only on GPUs (KIND_GPU).")
    if kind == "gpu" and engine.backend == "openvino":
        raise InvalidArgumentError("--kind gpu: Triton's OpenVINO backend runs on the CPU only (KIND_CPU).")
    if s.instances < 1:
        raise InvalidArgumentError(f"--instances {s.instances}: must be >= 1.")
    return kind


def _quote(text: str) -> str:
    """A protobuf text-format string literal."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _tensor_block(t: TensorSpec, batched: bool) -> list[str]:
    assert t.shape is not None
    dims = [d if isinstance(d, int) else -1 for d in (t.shape[1:] if batched else t.shape)]
    lines = ["  {", f"    name: {_quote(t.name)}", f"    data_type: {TRITON_DTYPES[t.dtype]}"]
    if dims:
        lines.append(f"    dims: [ {', '.join(map(str, dims))} ]")
    else:  # a scalar (per batch item): Triton wants one dim, reshaped away
        lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
    return [*lines, "  }"]


def _profile_comments(engine: _Engine) -> list[str]:
    lines = []
    for i, profile in enumerate(engine.profiles):
        for shape in profile.get("shapes") or []:
            lines.append(f"# profile {i}: {shape['name']} min {shape['min']} opt {shape['opt']} max {shape['max']}")
    return lines


def _render_config(engine: _Engine, name: str, batching: _Batching, kind: str, s: TritonSettings,
                  source: Path) -> str:
    """config.pbtxt: text format of Triton's ``inference.ModelConfig``."""
    from enginekit import __version__

    lines = [f"# Written by enginekit {__version__} from {source.name}", *_profile_comments(engine),
             f"name: {_quote(name)}"]
    serving = f"platform: {_quote(engine.platform)}" if engine.platform else f"backend: {_quote(engine.backend or '')}"
    lines.append(serving)
    lines.append(f"max_batch_size: {batching.max_batch_size}")
    if engine.default_model_filename:
        lines.append(f"default_model_filename: {_quote(engine.default_model_filename)}")
    batched = batching.max_batch_size > 0
    for key, specs in (("input", engine.inputs), ("output", engine.outputs)):
        blocks = [_tensor_block(t, batched) for t in specs]
        body = [line for i, b in enumerate(blocks) for line in (b if i == len(blocks) - 1 else [*b[:-1], "  },"])]
        lines += [f"{key} [", *body, "]"]
    group = [f"    count: {s.instances}", f"    kind: KIND_{kind.upper()}"]
    if engine.profiles:
        group.append(f"    profile: [ {', '.join(_quote(str(i)) for i in range(len(engine.profiles)))} ]")
    lines += ["instance_group [", "  {", *group, "  }", "]"]
    if batching.dynamic:
        lines.append("dynamic_batching {")
        if s.preferred_batch_sizes:
            lines.append(f"  preferred_batch_size: [ {', '.join(map(str, s.preferred_batch_sizes))} ]")
        if s.max_queue_delay_us is not None:
            lines.append(f"  max_queue_delay_microseconds: {s.max_queue_delay_us}")
        lines.append("}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ python backend

_MODEL_PY = '''"""Triton python backend model written by enginekit: runs MODEL_FILE with onnxruntime on the CPU.

Tensors cross the backend through DLPack: ``Tensor.as_numpy()`` and ``Tensor(name, array)`` read numpy's array
structs directly and are wrong under numpy 2 in stubs built for numpy 1; DLPack works with both.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

MODEL_FILE = __MODEL_FILE__


class _Capsule:
    def __init__(self, capsule):
        self._capsule = capsule

    def __dlpack__(self, *args, **kwargs):
        return self._capsule

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU


def _to_numpy(tensor, dtype):
    if dtype == np.object_:
        return tensor.as_numpy()
    return np.from_dlpack(_Capsule(tensor.to_dlpack()))


def _to_tensor(name, array, dtype):
    array = np.ascontiguousarray(array, dtype=dtype)
    if dtype == np.object_:
        return pb_utils.Tensor(name, array)
    return pb_utils.Tensor.from_dlpack(name, array.__dlpack__())


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], MODEL_FILE)
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.inputs = [(t["name"], pb_utils.triton_string_to_numpy(t["data_type"])) for t in config["input"]]
        self.outputs = [(t["name"], pb_utils.triton_string_to_numpy(t["data_type"])) for t in config["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                feed = {name: _to_numpy(pb_utils.get_input_tensor_by_name(request, name), dtype)
                        for name, dtype in self.inputs}
                values = self.session.run([name for name, _ in self.outputs], feed)
                tensors = [_to_tensor(name, value, dtype) for (name, dtype), value in zip(self.outputs, values)]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as exc:  # one failing request never takes the others down
                error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses
'''


def python_model_source(model_file: str = "model.onnx") -> str:
    """The model.py of the python backend for ``model_file`` (in the version folder)."""
    return _MODEL_PY.replace("__MODEL_FILE__", repr(model_file))


# ------------------------------------------------------------------------------------------------ writing


def _check_target(source: Path, target: Path, force: bool) -> None:
    from enginekit.fileutil import check_writable_folder

    check_writable_folder(target.parent, "Model repository")
    if target.exists() and not target.is_dir():
        raise OutputPathError(f"'{target}' exists and is not a folder.", hint="Give another --name or REPO_DIR.")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise OutputPathError(f"Model folder '{target}' exists and is not empty.",
                              hint="Give another --name, or --force to replace it.")
    if source.resolve().is_relative_to(target.resolve()):
        raise OutputPathError(f"The model '{source}' lies inside the model folder '{target}' that would replace it.",
                              hint="Give another --name or REPO_DIR.")


def _stage(engine: _Engine, staging: Path, config: str) -> None:
    from enginekit.fileutil import atomic_write_text

    version = staging / "1"
    version.mkdir()
    for src, name in engine.files:
        if not src.is_file():
            raise ModelLoadError(f"{str(src)!r} is missing: it is part of the model.")
        dst = version / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    if engine.backend == "python":
        atomic_write_text(version / "model.py", python_model_source(engine.files[0][1]))
    atomic_write_text(staging / "config.pbtxt", config)


def write_triton_repository(source: str | Path, repo_dir: str | Path,
                            settings: TritonSettings | None = None) -> TritonRepository:
    """Write ``REPO_DIR/NAME/config.pbtxt`` and ``REPO_DIR/NAME/1/`` for ``source`` (ONNX, plan, TorchScript or
    package folder).

    Raises:
        InvalidArgumentError: options that contradict each other or the model (batching without a batch axis,
            a batch beyond a plan's profiles, a TensorRT plan on KIND_CPU, an unknown backend, ...).
        ModelLoadError: a missing or unreadable model, or a plan without its manifest.
        OutputPathError: REPO_DIR/NAME exists and is not empty (without ``force``), or cannot be written.
    """
    from enginekit.fileutil import current_umask, replace_folder

    s = settings or TritonSettings()
    src = Path(source)
    engine = _resolve(src, s)
    name = s.name if s.name is not None else engine.name
    if not _NAME_RE.match(name):
        raise InvalidArgumentError(f"--name {name!r}: use letters, digits, '_', '.' and '-' (at most 128, not "
                                   "starting with '.' or '-').")
    batching = _batching(engine, s)
    kind = _kind(engine, s)
    config = _render_config(engine, name, batching, kind, s, src)
    repo = Path(repo_dir)
    target = repo / name
    _check_target(src, target, s.force)
    repo.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=repo, prefix=f".{name}.partial-"))
    try:
        staging.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700; the model folder gets a folder's usual mode
        _stage(engine, staging, config)
        replace_folder(staging, target)
    except OSError as exc:
        raise OutputPathError(f"Could not write the model folder '{target}': {exc.strerror or exc}.") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    files = sorted(p for p in target.rglob("*") if p.is_file())
    return TritonRepository(target, name, engine.platform or engine.backend or "", batching.max_batch_size, config,
                            files, list(engine.notes))
