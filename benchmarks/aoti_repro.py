"""Minimal AOTInductor round trip in plain PyTorch (no enginekit): export, compile and package a 3-layer model,
then load the package and run it once. On the lent H200 image (torch 2.11.0+cu130) the load dies with SIGSEGV
(docs/PERFORMANCE.md, "AOTInductor on torch 2.11+cu130"); elsewhere it prints "ok" and the largest difference.

    python benchmarks/aoti_repro.py [cuda|cpu]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch


def main(device: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).to(device).eval()
    x = torch.randn(2, 16, device=device)
    program = torch.export.export(model, (x,))
    with tempfile.TemporaryDirectory() as tmp:
        path = torch._inductor.aoti_compile_and_package(program, package_path=str(Path(tmp) / "m.pt2"))
        print(f"torch {torch.__version__}, packaged {path}", flush=True)
        runner = torch._inductor.aoti_load_package(path)  # the SIGSEGV happens here on the lent image
        print("loaded", flush=True)
        with torch.inference_mode():
            diff = (runner(x) - model(x)).abs().max().item()
    print(f"ok, max abs diff {diff:.3g}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ("cuda" if torch.cuda.is_available() else "cpu"))
