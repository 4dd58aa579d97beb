"""INT8 calibrator for weak-typing TensorRT (implicit quantization). Needs a CUDA GPU (torch) to run.

Not exercised here: the full TensorRT builder cannot be installed on these machines, and TensorRT-RTX
is strongly typed (INT8 comes from Q/DQ nodes instead, see graph/quantize.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from enginekit.backends.tensorrt.lib import TrtLibrary
from enginekit.errors import HardwareUnavailableError
from enginekit.settings import BuildSettings


def make_calibrator(lib: TrtLibrary, s: BuildSettings) -> Any:
    """An entropy or min-max calibrator over the feeds in ``s.calib_data``, caching to ``s.calib_cache``."""
    import torch

    from enginekit.graph.calibration import load_calibration_feeds

    if not torch.cuda.is_available():
        raise HardwareUnavailableError("INT8 calibration runs the network on a CUDA GPU, and none is available.")
    trt = lib.module
    base = trt.IInt8EntropyCalibrator2 if s.calib_method == "entropy" else trt.IInt8MinMaxCalibrator
    assert s.calib_data is not None
    feeds = load_calibration_feeds(s.calib_data, None)
    cache_path: Path | None = s.calib_cache

    class Calibrator(base):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.index = 0
            self.device: dict[str, Any] = {}

        def get_batch_size(self) -> int:
            return 1  # explicit-batch networks: the batch is in the feed shapes

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.index >= len(feeds):
                return None
            feed = feeds[self.index]
            self.index += 1
            self.device = {n: torch.from_numpy(feed[n]).cuda() for n in names}
            return [int(self.device[n].data_ptr()) for n in names]

        def read_calibration_cache(self) -> bytes | None:
            return cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            if cache_path is not None:
                from enginekit.fileutil import atomic_write_bytes

                atomic_write_bytes(cache_path, bytes(cache))

    return Calibrator()
