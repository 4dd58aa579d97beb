"""The engine manifest (`model.engine.json`): everything needed to know where a plan can run."""

from __future__ import annotations

import datetime as _dt
import json
import platform
from pathlib import Path
from typing import Any

from enginekit.backends.tensorrt.lib import TrtLibrary
from enginekit.errors import HardwareUnavailableError, ModelLoadError
from enginekit.settings import BuildSettings

FORMAT = "enginekit-engine"


def cache_settings(s: BuildSettings, profiles: list[Any], targets: list[str]) -> dict[str, Any]:
    """The settings that change the engine, resolved (profiles from feeds included), for the cache key."""
    out = {name: getattr(s, name) for name in BuildSettings.ARTIFACT_FIELDS}
    out["profiles"] = [p.to_dict() for p in profiles]
    out["compute_capabilities"] = targets
    out["precision_plan"] = s.precision_plan is not None  # its content is hashed separately
    out["calib_data"] = s.calib_data is not None
    if s.precision in ("fp16", "bf16", "best"):
        out["out_of_range_constants"] = "fp32"  # their readers stay FP32 (engines cached before clipped them)
    resolved: dict[str, Any] = json.loads(json.dumps(out, default=str))
    return resolved


def make_manifest(lib: TrtLibrary, s: BuildSettings, model: Path, profiles: list[Any], targets: list[str],
                  network: dict[str, Any], precision: dict[str, Any], build_s: float, warnings: list[str],
                  key_settings: dict[str, Any]) -> dict[str, Any]:
    from enginekit import __version__
    from enginekit.cache import model_digest
    from enginekit.hardware import local_gpu

    return {
        "format": FORMAT,
        "format_version": 1,
        "enginekit": __version__,
        "backend": lib.backend,
        "library": lib.name,
        "library_version": lib.version,
        "typing": "weak" if lib.weak_typing else "strong",
        "target": {
            "compute_capabilities": targets,
            "version_compatible": s.version_compatible,
            "hardware_compatibility": s.hardware_compatibility,
        },
        "built_on": {"host": platform.node(), "gpu": local_gpu()},
        "precision": precision,
        "profiles": [p.to_dict() for p in profiles],
        "inputs": network["inputs"],
        "outputs": network["outputs"],
        "num_layers": network["num_layers"],
        "layer_output_types": network["layer_output_types"],
        "source_model": {"path": str(model), "sha256": model_digest(model)},
        "settings": key_settings,
        "build_time_s": round(build_s, 3),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "warnings": [*precision.get("warnings", []), *warnings][:200],  # the conversion's own, then the log's
    }


def read_manifest(plan: Path) -> dict[str, Any] | None:
    """``<plan>.json`` beside the plan, or None when there is none (a plan built by another tool)."""
    path = Path(str(plan) + ".json")
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Engine manifest {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelLoadError(f"{str(path)!r} is not an enginekit engine manifest.")
    return data


def check_plan_digest(plan: Path, data: bytes, manifest: dict[str, Any] | None) -> None:
    """Refuse a plan whose bytes differ from what its manifest recorded (``plan_bytes``, ``plan_sha256``).

    Runs before deserializing, so a damaged, truncated or swapped plan file is never handed to the library.
    A manifest without these fields (written by an older enginekit) is not checked.

    Raises:
        ModelLoadError: the size or sha256 differs.
    """
    import hashlib

    if manifest is None:
        return
    want_size, want_sha = manifest.get("plan_bytes"), manifest.get("plan_sha256")
    if isinstance(want_size, int) and not isinstance(want_size, bool) and want_size != len(data):
        raise ModelLoadError(f"Engine {str(plan)!r} has {len(data)} bytes, its manifest {plan.name}.json says "
                             f"{want_size}: the plan is truncated, damaged or not the one the manifest describes.",
                             hint="Build it again with `enginekit build -o`, which writes the plan and its manifest "
                             "as a pair.")
    if isinstance(want_sha, str):
        got = hashlib.sha256(data).hexdigest()
        if got != want_sha:
            raise ModelLoadError(f"Engine {str(plan)!r} has sha256 {got[:16]}…, its manifest {plan.name}.json says "
                                 f"{want_sha[:16]}…: the plan is damaged or not the one the manifest describes.",
                                 hint="Build it again with `enginekit build -o`, which writes the plan and its "
                                 "manifest as a pair.")


def check_runnable(manifest: dict[str, Any], lib: TrtLibrary, gpu_cc: str | None) -> None:
    """Say clearly, before deserializing, when this plan cannot run here (library version, GPU)."""
    if manifest.get("library") != lib.name:
        raise HardwareUnavailableError(
            f"The engine was built with {manifest.get('library')} {manifest.get('library_version')}, "
            f"and this is {lib.name}: plans are not interchangeable between libraries.")
    same = str(manifest.get("library_version")) == lib.version
    if not same and not manifest.get("target", {}).get("version_compatible"):
        raise HardwareUnavailableError(
            f"The engine was built with {lib.name} {manifest.get('library_version')} and this is {lib.version}; "
            "it was not built version-compatible.",
            hint="Rebuild here (enginekit build), or build with --version-compatible.")
    targets = manifest.get("target", {}).get("compute_capabilities") or []
    compat = manifest.get("target", {}).get("hardware_compatibility")
    if gpu_cc is None:
        raise HardwareUnavailableError("No CUDA GPU here: TensorRT engines run only on NVIDIA GPUs.")
    if targets and gpu_cc not in targets and not (compat == "ampere-plus" and float(gpu_cc) >= 8.0):
        raise HardwareUnavailableError(
            f"The engine was built for compute capability {', '.join(targets)}; this GPU is {gpu_cc}.",
            hint="Rebuild for this GPU (enginekit build --compute-capability " + gpu_cc + ") or with "
            "--hardware-compatibility ampere-plus where the library offers it.")
