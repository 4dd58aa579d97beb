"""The ``torch`` backend: the PyTorch source itself, eager, in eval mode under ``torch.inference_mode()``.

It is the natural reference for the other PyTorch-native backends (inductor, aoti) and for ONNX exports
of the same source. Device and precision follow the candidate (see :mod:`enginekit.backends.torch_common`).
On CUDA its calls can be captured in a CUDA graph (``capture_cuda_graph``).
"""

from __future__ import annotations

from enginekit.backends.torch_common import TorchRunner
from enginekit.deps import require


class TorchEagerRunner(TorchRunner):
    backend = "torch"
    cuda_graph_capable = True

    def _load(self) -> None:
        require("torch", purpose="the 'torch' backend")
        self._setup()
        module, _ = self._prepared_source()
        self._discover(module)
        self._call = module
