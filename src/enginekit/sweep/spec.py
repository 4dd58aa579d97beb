"""What a sweep file (SWEEP.yaml) says, checked, and the jobs it expands to.

A job is one model x one configuration: the candidates of one backend (its precisions together, compared with the
reference) at one batch size. Its id is a stable hash of everything that decides its result, so an unchanged job
keeps its id from run to run (resume) and a changed one gets a new id.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from enginekit.errors import InvalidArgumentError, did_you_mean

__all__ = ["TIMING_KEYS", "Job", "Resources", "SweepSpec", "load_sweep", "parse_sweep"]

TIMING_KEYS = ("warmup_s", "warmup_iterations", "duration_s", "iterations", "max_time_s")
# keys a model entry may override from the sweep's top level
_SHARED_KEYS = ("backends", "precisions", "batch_sizes", "reference", "gates", "resources", "timing", "atol", "rtol",
                "seed")
_TOP_KEYS = ("models", "out", "retries", "cache_dir", *_SHARED_KEYS)
_MODEL_KEYS = ("name", "model", "inputs", "dataset", "task", "threshold", "ctc_blank", "limit", "preprocess",
               "postprocess", "masks", "annotations", *_SHARED_KEYS)
_RESOURCE_KEYS = ("cpus", "gpus", "custom")
_GPU_BACKENDS = ("tensorrt", "tensorrt-rtx")
_BATCH = "{batch}"


@dataclass(frozen=True)
class Resources:
    """What one job asks the scheduler for: CPU threads (also onnxruntime's intra-op threads), GPUs, and custom
    Ray resources (e.g. ``{"timing_slot": 1}`` for one timing job per node)."""

    cpus: int = 1
    gpus: float = 0.0
    custom: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Job:
    """One model x one configuration (module doc)."""

    id: str
    model_name: str
    model: str
    backend: str  # the group: candidates share this backend name
    candidates: tuple[str, ...]
    batch: int | None
    config: str  # the summary matrix column: backend (+ batch)
    inputs: tuple[str, ...] = ()
    dataset: str | None = None
    task: str = "classification"
    threshold: float = 0.5
    ctc_blank: int = 0
    limit: int = 0
    preprocess: tuple[str, ...] = ()
    postprocess: str | None = None
    masks: str | None = None  # segmentation: label maps named like the images of an image-folder dataset
    annotations: str | None = None  # detection: a COCO JSON naming the images of an image-folder dataset
    reference: str = "ort"  # every configuration is compared with it (run in each job)
    gates: tuple[str, ...] = ()
    seed: int = 1
    atol: float | None = None
    rtol: float | None = None
    timing: tuple[tuple[str, float], ...] = ()
    resources: Resources = field(default_factory=Resources)
    cache_dir: str | None = None  # node-local engine cache root (None: the system temp folder on each node)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SweepSpec:
    """A checked sweep file: its jobs in file order."""

    path: Path
    jobs: tuple[Job, ...]
    out: Path | None = None
    retries: int = 2

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(j.model_name for j in self.jobs))

    @property
    def configs(self) -> list[str]:
        return list(dict.fromkeys(j.config for j in self.jobs))


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep file (InvalidArgumentError, exit 2, for anything wrong in it)."""
    from enginekit.deps import require

    path = Path(path)
    if not path.is_file():
        raise InvalidArgumentError(f"{path}: no such sweep file.")
    yaml = require("yaml", purpose="reading sweep files")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"{path}: not valid YAML: {exc}") from None
    return parse_sweep(data, path)


def parse_sweep(data: Any, path: Path) -> SweepSpec:
    """The checked spec of a parsed sweep file; relative paths are relative to the file's folder."""
    where = str(path)
    top = _mapping(data, where, _TOP_KEYS)
    models = top.get("models")
    if not isinstance(models, list) or not models:
        raise InvalidArgumentError(f"{where}: 'models' must be a non-empty list of model entries.")
    base = path.parent
    retries = _int(top.get("retries", 2), f"{where}: retries", low=0)
    out = top.get("out")
    cache_dir = top.get("cache_dir")
    jobs: list[Job] = []
    names: set[str] = set()
    for i, entry in enumerate(models):
        jobs += _model_jobs(entry, top, base, f"{where}: models[{i}]", names,
                            None if cache_dir is None else str(_path(cache_dir, base, f"{where}: cache_dir")))
    ids = [j.id for j in jobs]
    dup = next((x for x in ids if ids.count(x) > 1), None)
    if dup is not None:
        raise InvalidArgumentError(f"{where}: two jobs are the same ({dup}): remove the repeated backend or batch.")
    return SweepSpec(path=path, jobs=tuple(jobs), retries=retries,
                     out=None if out is None else _path(out, base, f"{where}: out"))


def _model_jobs(entry: Any, top: Mapping[str, Any], base: Path, where: str, names: set[str],
                cache_dir: str | None) -> list[Job]:
    m = _mapping(entry, where, _MODEL_KEYS)
    if "model" not in m:
        raise InvalidArgumentError(f"{where}: 'model' is missing (an ONNX file, relative to the sweep file).")
    model = _path(m["model"], base, f"{where}.model")
    if not model.exists():
        raise InvalidArgumentError(f"{where}.model: {model}: no such file.")
    name = _str(m.get("name", model.stem), f"{where}.name")
    if name in names:
        raise InvalidArgumentError(f"{where}.name: {name!r} is used by another model; give each model its own name.")
    names.add(name)

    def get(key: str, default: Any = None) -> Any:
        return m.get(key, top.get(key, default))

    dataset = m.get("dataset")
    dataset_path = None if dataset is None else _path(dataset, base, f"{where}.dataset")
    if dataset_path is not None and not dataset_path.exists():
        raise InvalidArgumentError(f"{where}.dataset: {dataset_path}: no such file or folder.")
    inputs = _strs(m.get("inputs", []), f"{where}.inputs")
    candidates = _candidates(get("backends"), get("precisions"), where)
    batches: list[int | None] = list(_ints(get("batch_sizes", []), f"{where}.batch_sizes", low=1)) or [None]
    if batches != [None] and dataset_path is None and not any(_BATCH in s for s in inputs):
        raise InvalidArgumentError(f"{where}: batch_sizes need a dataset (its batch size) or inputs with {_BATCH} "
                                   "(e.g. x:{batch}x3x224x224).")
    gates = _strs(get("gates", []), f"{where}.gates") if dataset_path is not None else ()
    if "gates" in m and dataset_path is None:
        raise InvalidArgumentError(f"{where}.gates: gates apply to a model with a dataset.")
    resources_given = "resources" in m or "resources" in top
    shared: dict[str, Any] = {
        "model_name": name, "model": str(model), "dataset": None if dataset_path is None else str(dataset_path),
        "task": _str(m.get("task", "classification"), f"{where}.task"),
        "threshold": _float(m.get("threshold", 0.5), f"{where}.threshold"),
        "ctc_blank": _int(m.get("ctc_blank", 0), f"{where}.ctc_blank", low=0),
        "limit": _int(m.get("limit", 0), f"{where}.limit", low=0),
        "preprocess": _strs(m.get("preprocess", []), f"{where}.preprocess"),
        "postprocess": None if m.get("postprocess") is None else _str(m["postprocess"], f"{where}.postprocess"),
        **{key: str(_existing(m[key], base, f"{where}.{key}")) for key in ("masks", "annotations") if m.get(key)},
        "reference": _str(get("reference", "ort"), f"{where}.reference"),
        "gates": gates, "seed": _int(get("seed", 1), f"{where}.seed", low=0),
        "atol": None if get("atol") is None else _float(get("atol"), f"{where}.atol"),
        "rtol": None if get("rtol") is None else _float(get("rtol"), f"{where}.rtol"),
        "timing": _timing(get("timing", {}), f"{where}.timing"), "cache_dir": cache_dir,
    }
    jobs = []
    for backend, cands in candidates.items():
        resources = _resources(get("resources", {}), f"{where}.resources", gpu=backend in _GPU_BACKENDS,
                               given=resources_given)
        for batch in batches:
            config = backend if batch is None else f"{backend} b{batch}"
            job_inputs = tuple(s.replace(_BATCH, str(batch if batch is not None else 1)) for s in inputs)
            fields = dict(shared, backend=backend, candidates=cands, batch=batch, config=config, inputs=job_inputs,
                          resources=resources)
            jobs.append(Job(id=_job_id(fields), **fields))
    return jobs


def _job_id(fields: Mapping[str, Any]) -> str:
    """``NAME-CONFIG-HASH``: readable, and stable for the same settings."""
    optional = ("masks", "annotations")  # left out when unset: the ids of sweeps without them stay as they were
    canon = json.dumps({k: (asdict(v) if isinstance(v, Resources) else v) for k, v in sorted(fields.items())
                        if not (k in optional and v is None)}, sort_keys=True, default=str)
    digest = hashlib.sha256(canon.encode()).hexdigest()[:10]
    slug = re.sub(r"[^A-Za-z0-9_.]+", "-", f"{fields['model_name']}-{fields['config']}").strip("-")[:60]
    return f"{slug}-{digest}"


def _candidates(backends: Any, precisions: Any, where: str) -> dict[str, tuple[str, ...]]:
    """Candidates grouped by backend name, in file order (bare names take each of ``precisions`` when given)."""
    from enginekit.registry import backend_names

    known = backend_names()
    names = _strs(backends if backends is not None else ["ort"], f"{where}.backends")
    precs = _strs(precisions, f"{where}.precisions") if precisions is not None else ()
    if not names:
        raise InvalidArgumentError(f"{where}.backends: name at least one backend (e.g. [ort, ort:fp16, openvino]).")
    groups: dict[str, list[str]] = {}
    for text in names:
        backend = text.split(":", 1)[0].split("/", 1)[0]
        if backend not in known:
            raise InvalidArgumentError(f"{where}.backends: unknown backend {backend!r}"
                                       f"{did_you_mean(backend, known) or '.'}")
        expanded = [f"{text}:{p}" for p in precs] if precs and ":" not in text else [text]
        group = groups.setdefault(backend, [])
        group += [c for c in expanded if c not in group]
    return {k: tuple(v) for k, v in groups.items()}


def _resources(value: Any, where: str, *, gpu: bool, given: bool) -> Resources:
    r = _mapping(value, where, _RESOURCE_KEYS)
    custom = _mapping(r.get("custom", {}), f"{where}.custom", None)
    pairs = tuple(sorted((str(k), _float(v, f"{where}.custom.{k}")) for k, v in custom.items()))
    gpus = _float(r.get("gpus", 1.0 if gpu and not given else 0.0), f"{where}.gpus")
    if gpus < 0:
        raise InvalidArgumentError(f"{where}.gpus: must be >= 0.")
    return Resources(cpus=_int(r.get("cpus", 1), f"{where}.cpus", low=1), gpus=gpus, custom=pairs)


def _timing(value: Any, where: str) -> tuple[tuple[str, float], ...]:
    t = _mapping(value, where, TIMING_KEYS)
    return tuple(sorted((k, _float(v, f"{where}.{k}")) for k, v in t.items()))


# --- small typed readers: every message names the key and what it should be ---------------------------------------

def _mapping(value: Any, where: str, keys: Sequence[str] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"{where}: expected a mapping (KEY: VALUE), got {type(value).__name__}.")
    if keys is not None:
        for k in value:
            if k not in keys:
                raise InvalidArgumentError(f"{where}: unknown key {k!r}{did_you_mean(str(k), keys) or '.'} "
                                           f"Keys: {', '.join(keys)}.")
    return {str(k): v for k, v in value.items()}


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool) or str(value) == "":
        raise InvalidArgumentError(f"{where}: expected a non-empty string, got {value!r}.")
    return str(value)


def _strs(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise InvalidArgumentError(f"{where}: expected a list of strings, got {value!r}.")
    return tuple(_str(v, f"{where}[{i}]") for i, v in enumerate(value))


def _int(value: Any, where: str, *, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{where}: expected an integer, got {value!r}.")
    if low is not None and value < low:
        raise InvalidArgumentError(f"{where}: {value} must be >= {low}.")
    return value


def _ints(value: Any, where: str, *, low: int) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list):
        raise InvalidArgumentError(f"{where}: expected a list of integers, got {value!r}.")
    return tuple(_int(v, f"{where}[{i}]", low=low) for i, v in enumerate(value))


def _float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentError(f"{where}: expected a number, got {value!r}.")
    return float(value)


def _path(value: Any, base: Path, where: str) -> Path:
    p = Path(_str(value, where)).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _existing(value: Any, base: Path, where: str) -> Path:
    path = _path(value, base, where)
    if not path.exists():
        raise InvalidArgumentError(f"{where}: {path}: no such file or folder.")
    return path
