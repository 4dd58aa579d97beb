"""Load an AOTInductor package in a child process first, where a crash cannot take enginekit down.

On some builds ``torch._inductor.aoti_load_package`` does not raise but kills the process: on the lent H200 image
(torch 2.11.0+cu130) loading any CUDA package, even of a 3-layer model, ends in SIGSEGV (docs/PERFORMANCE.md,
"AOTInductor on torch 2.11+cu130"). So before the runner loads a package in-process on a device listed in
:data:`PROBE_DEVICES`, a child Python loads it; a child killed by a signal makes the candidate SKIPPED with that
reason (HardwareUnavailableError: it cannot run on this machine) instead of a crash of the whole run. A child
that fails with an ordinary error says nothing: the in-process load reports that error itself. Results are kept
per package file (path, size, mtime) for the life of the process.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from enginekit.errors import HardwareUnavailableError

PROBE_DEVICES: tuple[str, ...] = ("cuda",)
PROBE_TIMEOUT_S = 600.0
PROBE_SCRIPT = (
    "import sys, torch\n"
    "m = torch._inductor.aoti_load_package(sys.argv[1])\n"
    "print('loaded', type(m).__name__)\n"
)
_seen: dict[tuple[str, int, int], str | None] = {}


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def probe_load(package: Path, device: str) -> None:
    """HardwareUnavailableError when loading ``package`` kills a child process on this machine."""
    if device not in PROBE_DEVICES:
        return
    st = package.stat()
    key = (str(package.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _seen:
        _seen[key] = _probe(package)
    reason = _seen[key]
    if reason is not None:
        raise HardwareUnavailableError(reason)


def _probe(package: Path) -> str | None:
    import torch

    try:
        proc = subprocess.run([sys.executable, "-c", PROBE_SCRIPT, str(package)], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return (f"AOTInductor did not load {package.name} within {PROBE_TIMEOUT_S:.0f} s in a probe process "
                "(it hung); not loaded in-process")
    if proc.returncode >= 0:
        return None
    return (f"AOTInductor crashed ({_signal_name(proc.returncode)}) loading {package.name} in a probe process on this "
            f"machine (torch {torch.__version__}); it was not loaded in-process. A known defect of some torch builds: "
            "see docs/PERFORMANCE.md, 'AOTInductor on torch 2.11+cu130'")
