"""Facts about this machine's accelerators, in one place: GPUs as nvidia-smi sees them (no CUDA library is loaded),
and whether the CPU computes bf16.

Used by the registry (can a TensorRT backend run here?), the TensorRT builder (which compute capability to target,
what the manifest records) and `enginekit doctor`.
"""

from __future__ import annotations

import shutil
import subprocess


def nvidia_smi_gpus() -> list[dict[str, str]]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        text = subprocess.run([exe, "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            gpus.append({"name": parts[0], "compute_capability": parts[1], "driver": parts[2]})
    return gpus


def local_gpu() -> dict[str, str] | None:
    """Name, compute capability and driver of GPU 0, or None (nvidia-smi; no CUDA library is loaded)."""
    gpus = nvidia_smi_gpus()
    return gpus[0] if gpus else None


def gpu_unavailable_reason(capabilities: tuple[str, ...] | None) -> str | None:
    """Why engines cannot run here (no NVIDIA GPU, or one whose compute capability is not in ``capabilities``),
    or None when they can."""
    gpus = nvidia_smi_gpus()
    if not gpus:
        return "no NVIDIA GPU here: engines can be built (enginekit build) but not run"
    cc = gpus[0]["compute_capability"]
    if capabilities is not None and cc not in capabilities:
        return (f"{gpus[0]['name']} (compute capability {cc}) cannot run these engines; they "
                f"run on {', '.join(capabilities)}")
    return None


def cpu_supports_bf16() -> bool:
    """Whether OpenVINO's CPU plugin offers bf16 here (AVX-512 BF16 / AMX); CPUs without it run f32."""
    from enginekit.deps import require

    ov = require("openvino", purpose="the 'openvino' backend")
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "BF16" in [str(c).upper() for c in caps]
