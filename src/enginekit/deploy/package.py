"""The enginekit package: what `optimize` proved, carried out of the report folder and the engine cache.

Layout and `package.json`: docs/PACKAGE.md. :func:`write_package` makes one from an `optimize` report folder
(`optimize --package DIR`, `enginekit package REPORT DIR`); :func:`read_package` reads one back.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enginekit.errors import InvalidArgumentError, ModelLoadError, OutputPathError
from enginekit.fileutil import replace_folder
from enginekit.multirun import Candidate
from enginekit.settings import BackendSettings
from enginekit.status import Status

FORMAT = "enginekit-package"
VERSION = 1
OBJECTIVES = ("min_latency", "max_throughput")


@dataclass(frozen=True)
class PackageResult:
    path: Path
    engines: dict[str, str]  # objective -> candidate label
    files: list[Path]


def _load_report(report_dir: Path) -> dict[str, Any]:
    path = report_dir / "report.json"
    if not path.is_file():
        raise InvalidArgumentError(f"{str(report_dir)!r} holds no report.json: give the --report folder of an "
                                   "`enginekit optimize` run.")
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{str(path)!r} is not a readable report: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("kind") != "optimize":
        raise InvalidArgumentError(f"{str(path)!r} is not the report of `enginekit optimize`; a package is made "
                                   "from an optimize report.")
    if not doc.get("passed"):
        raise InvalidArgumentError(f"The run of {str(path)!r} did not pass: a package carries only what a passing "
                                   "run proved.", hint="Fix the failures (report.md says which) and rerun optimize.")
    return doc


def _packable(row: dict[str, Any]) -> bool:
    """Candidates whose engine a package can carry: runtimes over the ONNX model and built engines. PyTorch-native
    candidates (torch, inductor, aoti) run the Python source, which a package does not hold."""
    from enginekit.registry import get_backend

    name = Candidate.parse(str(row["backend"]).partition("#")[0]).backend
    return bool({"onnx", "engine"} & set(get_backend(name).formats))


def pick_engines(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The passing, timed candidate rows for each objective: lowest median latency, most items per second."""
    rows = [r for r in doc.get("results", []) if r.get("status") == Status.OK
            and (r.get("timing") or {}).get("median_ms") and "+" not in str(r.get("precision")) and _packable(r)]
    if not rows:
        raise InvalidArgumentError("The report has no passing, timed candidate to package (every candidate failed "
                                   "verification, errored, was skipped, or runs the PyTorch source, which a "
                                   "package does not carry).")
    return {"min_latency": min(rows, key=lambda r: float(r["timing"]["median_ms"])),
            "max_throughput": max(rows, key=lambda r: items_per_s(doc, r))}


def items_per_s(doc: dict[str, Any], row: dict[str, Any]) -> float:
    """Throughput of a row: its batch over its mean latency (as trtexec counts it; the median when no mean)."""
    timing = row.get("timing") or {}
    ms = float(timing.get("mean_ms") or timing["median_ms"])
    return _batch(doc) / (ms / 1e3)


def _batch(doc: dict[str, Any]) -> int:
    shapes = [v.get("shape") or [] for v in (doc.get("inputs") or {}).values()]
    return int(shapes[0][0]) if shapes and shapes[0] and isinstance(shapes[0][0], int) else 1


def _copy_model(model: Path, out: Path) -> list[Path]:
    """model.onnx and its external-data files (the names the model refers to)."""
    from enginekit.graph.load import external_data_files, load_model

    proto = load_model(model, load_external_data=False, check=False)
    written = [out / "model.onnx"]
    shutil.copy2(model, written[0])
    for name in external_data_files(proto):
        src = model.parent / name
        if src.is_file():
            dst = out / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            written.append(dst)
    return written


def _engine_file(doc: dict[str, Any], label: str) -> Path | None:
    """The built engine of a TensorRT candidate (the artifact of its build step); None for runtimes over the ONNX."""
    for step in doc.get("steps", []):
        if step.get("name") == f"build {label}" and step.get("artifacts"):
            return Path(step["artifacts"][0])
    return None


def write_package(report_dir: str | Path, out_dir: str | Path, *, force: bool = False) -> PackageResult:
    """Copy the verified best engines of an optimize report into a package folder (docs/PACKAGE.md).

    Raises InvalidArgumentError for a report without a passing candidate, OutputPathError for an output folder
    that exists and is not empty (unless ``force``) or is the report folder itself."""
    report = Path(report_dir).resolve()
    out = Path(out_dir).resolve()
    doc = _load_report(report)
    if out == report or report.is_relative_to(out):
        raise OutputPathError("The package folder must not be the report folder or hold it.",
                              hint="Give --package a new folder.")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not force)):
        raise OutputPathError(f"Package folder '{out}' exists and is not empty.",
                              hint="Give a new folder, or --force to replace its contents.")
    model = Path(doc["model"]).resolve() if doc.get("model") else None
    if model is None or not model.is_file():
        raise InvalidArgumentError(f"The report's model {doc.get('model')!r} is gone; rerun optimize.")
    if model.is_relative_to(out) and force:
        raise OutputPathError(f"--force would delete the model {str(model)!r}, which lies in '{out}'.")
    files = doc.get("files") or {}
    if "inputs" not in files:
        raise InvalidArgumentError("The report has no saved inputs (inputs.npz); rerun optimize.")
    chosen = pick_engines(doc)
    staging = out.with_name(f".{out.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)
    try:
        _fill(staging, report, doc, model, files, chosen)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # nothing half-written is left behind
        raise
    replace_folder(staging, out)
    spec = read_package(out)
    return PackageResult(out, {k: v["candidate"] for k, v in spec["engines"].items()},
                         sorted(p for p in out.rglob("*") if p.is_file()))


def _fill(staging: Path, report: Path, doc: dict[str, Any], model: Path, files: dict[str, str],
          chosen: dict[str, dict[str, Any]]) -> None:
    from enginekit.data import load_arrays, save_arrays
    from enginekit.fileutil import atomic_write_text
    from enginekit.report.writer import environment, safe_name

    (staging / "samples").mkdir(parents=True)
    _copy_model(model, staging)
    save_arrays(staging / "samples" / "inputs.npz", load_arrays(report / files["inputs"]))
    ref = doc.get("reference") or ""
    ref_file = files.get(f"outputs.{ref}")
    if ref_file:
        save_arrays(staging / "samples" / "outputs.npz", load_arrays(report / ref_file))
    engines: dict[str, Any] = {}
    for objective, row in chosen.items():
        label = row["backend"]
        out_file = files.get(f"outputs.{label}")
        if out_file is None:
            raise InvalidArgumentError(f"The report saved no outputs of {label}; rerun optimize.")
        save_arrays(staging / "samples" / f"outputs.{objective}.npz", load_arrays(report / out_file))
        cand = Candidate.parse(label.partition("#")[0])
        entry: dict[str, Any] = {
            "candidate": cand.label, "backend": cand.backend, "precision": cand.precision,
            "options": [list(o) for o in cand.options], "file": None, "manifest": None,
            "timing": {k: (row.get("timing") or {}).get(k) for k in ("median_ms", "p90_ms", "mean_ms", "cv", "runs")},
            "outputs": f"samples/outputs.{objective}.npz",
            "tolerance": {name: {"atol": o.get("atol"), "rtol": o.get("rtol")}
                          for name, o in (row.get("outputs") or {}).items()},
        }
        entry["timing"]["batch"] = _batch(doc)
        entry["timing"]["items_per_s"] = items_per_s(doc, row)
        plan = _engine_file(doc, label)
        if plan is not None and plan.is_file():
            dst = staging / "engines" / objective
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy2(plan, dst / plan.name)
            entry["file"] = f"engines/{objective}/{plan.name}"
            manifest = plan.with_name(plan.name + ".json")
            if manifest.is_file():
                shutil.copy2(manifest, dst / manifest.name)
                entry["manifest"] = f"engines/{objective}/{manifest.name}"
        engines[objective] = entry
    for name in ("report.json", "report.md"):
        if (report / name).is_file():
            shutil.copy2(report / name, staging / name)
    spec = {
        "format": FORMAT, "version": VERSION, "name": safe_name(model.stem) or "model", "model": "model.onnx",
        "inputs": (doc.get("model_info") or {}).get("inputs") or _io(doc, "inputs"),
        "outputs": (doc.get("model_info") or {}).get("outputs") or [],
        "engines": engines, "reference": ref,
        "samples": {"inputs": "samples/inputs.npz", "reference_outputs": "samples/outputs.npz" if ref_file else None},
        "command": doc.get("command"),  # the optimize command that proved these engines
        "versions": environment(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(staging / "package.json", json.dumps(spec, indent=2, allow_nan=False) + "\n")
    script = atomic_write_text(staging / "reproduce.sh", package_script(engines))
    script.chmod(0o755)


def _io(doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [{"name": n, "dtype": v.get("dtype"), "shape": v.get("shape")} for n, v in (doc.get(key) or {}).items()]


def package_script(engines: dict[str, Any]) -> str:
    """reproduce.sh of a package: each packaged engine reruns the saved inputs through this interpreter
    (``python -m enginekit run PACKAGE --objective ...``), which exits 1 when its outputs differ from the recorded
    ones beyond the engine's tolerance."""
    lines = [
        "#!/usr/bin/env bash",
        "# Reruns each packaged engine on samples/inputs.npz and checks its outputs against the recorded ones.",
        "# Exit 0: every engine reproduced; 1: outputs differ; 3: an engine cannot run on this machine.",
        "set -uo pipefail",
        'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
        f"PY={shlex.quote(sys.executable)}",
        'PY="${PYTHON:-$PY}"',
        "status=0",
        "# the most telling code wins: 1 (outputs differ) over 3 (cannot run here) over 0",
        'keep() { if [ "$1" -eq 1 ] || [ "$status" -eq 0 ]; then [ "$status" -eq 1 ] || status=$1; fi; }',
    ]
    seen: set[str] = set()
    for objective, entry in engines.items():
        if entry["candidate"] in seen:
            continue
        seen.add(entry["candidate"])
        lines.append(f'"$PY" -m enginekit run "$HERE" --objective {objective} || keep $?')
    lines.append("exit $status")
    return "\n".join(lines) + "\n"


def read_package(path: str | Path) -> dict[str, Any]:
    """package.json of a package folder, checked for what every reader needs: its format, a version this enginekit
    reads, and engines. InvalidArgumentError when the folder holds no package.json, ModelLoadError when it is not a
    readable package description. Readers check the further fields they use (:func:`require`)."""
    spec_path = Path(path) / "package.json"
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidArgumentError(f"{str(path)!r} is not an enginekit package (no package.json).") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{str(spec_path)!r} is not a readable package description: {exc}") from exc
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise ModelLoadError(f"{str(spec_path)!r} is not an enginekit package (format {FORMAT!r}).")
    version = spec.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1 or version > VERSION:
        raise ModelLoadError(f"{str(spec_path)!r} is package version {version!r}; this enginekit reads version "
                             f"{VERSION}.", hint="Upgrade enginekit to read newer packages.")
    if not isinstance(spec.get("engines"), dict) or not spec["engines"]:
        raise ModelLoadError(f"{str(spec_path)!r} lists no engines.")
    return spec


def require(path: str | Path, spec: dict[str, Any], fields: list[str]) -> None:
    """ModelLoadError naming every field (dotted, ``engines.NAME.KEY``) that is missing or not a string."""
    def value(dotted: str) -> Any:
        node: Any = spec
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    bad = [f for f in fields if not isinstance(value(f), str)]
    if bad:
        raise ModelLoadError(f"{str(Path(path) / 'package.json')!r} is missing or has malformed fields: "
                             f"{', '.join(bad)}.")


def package_member(folder: str | Path, rel: object, key: str) -> Path:
    """A file named by package.json: a relative path inside the package, which exists (ModelLoadError otherwise:
    a package never makes enginekit read or load a file outside its folder)."""
    where = f"{str(Path(folder) / 'package.json')!r}: {key}"
    if not isinstance(rel, str) or not rel:
        raise ModelLoadError(f"{where} is not a file name ({rel!r}).")
    if Path(rel).is_absolute():
        raise ModelLoadError(f"{where} is an absolute path ({rel!r}); package files are relative to the package.")
    root = Path(folder).resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise ModelLoadError(f"{where} ({rel!r}) points outside the package.")
    if not path.exists():
        raise ModelLoadError(f"{where}: {rel!r} is missing from the package.")
    return path


def is_package(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "package.json").is_file()


def backend_settings_from_json(data: object, folder: Path) -> BackendSettings:
    """BackendSettings from package.json's ``backend_settings`` (lists → tuples, relative paths → in the package).

    Fields this enginekit does not know are ignored (a newer writer); ``trust_remote_code`` is never taken from
    the file, and neither is ``ort_optimized_model`` (a cache file of the machine that made the package).
    """
    if data is None:
        return BackendSettings()
    if not isinstance(data, dict):
        raise ModelLoadError(f"{str(folder / 'package.json')!r}: backend_settings is not an object.")
    defaults = BackendSettings()
    values: dict[str, Any] = {}
    for f in dataclasses.fields(BackendSettings):
        if f.name not in data or f.name in ("trust_remote_code", "ort_optimized_model"):
            continue
        value, default = data[f.name], getattr(defaults, f.name)
        if isinstance(default, tuple):
            ok = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
            value = tuple(value) if ok else value
        elif "Path" in str(f.type):
            ok = value is None or isinstance(value, str)
            value = None if value is None or not ok else package_member(folder, value, f"backend_settings.{f.name}")
        else:
            ok = type(value) is type(default) or (isinstance(default, float) and isinstance(value, int))
        if not ok:
            raise ModelLoadError(f"{str(folder / 'package.json')!r}: backend_settings.{f.name} is {value!r}, "
                                 f"not a {type(default).__name__ if default is not None else 'path'}.")
        values[f.name] = value
    return BackendSettings(**values)
