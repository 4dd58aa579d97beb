"""The Runner lifecycle shared by every backend.

A runner is a context manager: heavy state (sessions, compiled models) is created on enter and
released on exit. ``infer`` checks the feed against ``inputs()`` and returns outputs in model order.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from enginekit.data import check_feed
from enginekit.errors import InvalidArgumentError
from enginekit.registry import declared_precisions
from enginekit.tensors import TensorSpec

if TYPE_CHECKING:
    from enginekit.settings import BackendSettings

log = logging.getLogger(__name__)


class Runner(abc.ABC):
    """Runs one model on one backend at one precision."""

    backend: str = "?"

    @property
    def supported_precisions(self) -> tuple[str, ...]:
        """The precisions the registry declares for this backend (enginekit.registry is their one source)."""
        return declared_precisions(self.backend)

    def __init__(self, model: Path, settings: BackendSettings, precision: str = "fp32") -> None:
        if precision not in self.supported_precisions:
            raise InvalidArgumentError(
                f"Backend {self.backend!r} does not offer precision {precision!r}; "
                f"it offers {', '.join(self.supported_precisions)}."
            )
        self.model = Path(model)
        self.settings = settings
        self.precision = precision
        self._inputs: list[TensorSpec] | None = None
        self._outputs: list[TensorSpec] | None = None
        self._loaded = False

    @property
    def label(self) -> str:
        return self.backend if self.precision == "fp32" else f"{self.backend}:{self.precision}"

    # lifecycle -------------------------------------------------------------
    def __enter__(self) -> Runner:
        self.load()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def load(self) -> None:
        if not self._loaded:
            self._load()
            self._loaded = True

    def release(self) -> None:
        if self._loaded:
            self._release()
            self._loaded = False

    # io ---------------------------------------------------------------------
    def inputs(self) -> list[TensorSpec]:
        if self._inputs is None:
            self._inputs, self._outputs = self._io_specs()
        return self._inputs

    def outputs(self) -> list[TensorSpec]:
        if self._outputs is None:
            self._inputs, self._outputs = self._io_specs()
        return self._outputs

    def _io_specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """IO specs from the ONNX graph (without loading weights); runners of other formats override."""
        import onnx

        from enginekit.graph.io import input_specs, output_specs

        proto = onnx.load(str(self.model), load_external_data=False)
        return input_specs(proto), output_specs(proto)

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate ``feed``, run, and return every output by name in model order."""
        if not self._loaded:
            raise InvalidArgumentError(f"Runner {self.label!r} is not loaded; use it as a context manager.")
        check_feed(self.inputs(), feed, where=f"{self.label} feed")
        return self.infer_unchecked(feed)

    def infer_unchecked(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run without validating the feed (for timing loops after one checked call)."""
        raw = self._infer(feed)
        return {spec.name: raw[spec.name] for spec in self.outputs()}

    def describe(self) -> dict[str, object]:
        """Facts about the loaded runner for the report (version, device, actual precision)."""
        return {"backend": self.backend, "precision": self.precision}

    # benchmarking hooks (enginekit.bench): one protocol for every backend -------------------
    # A CPU backend keeps the defaults. A GPU backend sets ``device = "cuda"`` and overrides stage/
    # run_staged/fetch so that the protocol can time compute alone on device-resident data (CUDA events)
    # or the whole round trip (--with-transfers), and split it into H2D / compute / D2H.
    device: str = "cpu"
    supports_cuda_graph: bool = False

    def stage(self, feed: Mapping[str, np.ndarray]) -> Any:
        """Copy validated inputs to where the backend computes (identity on CPU)."""
        return feed

    def run_staged(self, staged: Any) -> Any:
        """Compute only, on staged inputs; outputs may stay on the device."""
        return self._infer(staged)

    def fetch(self, outputs: Any) -> dict[str, np.ndarray]:
        """Bring outputs back to host numpy arrays, in model order."""
        return {spec.name: np.asarray(outputs[spec.name]) for spec in self.outputs()}

    def synchronize(self) -> None:  # noqa: B027 - a hook with a CPU default, not an abstract method
        """Wait for queued device work (no-op on CPU)."""

    def capture_cuda_graph(self, staged: Any) -> Any:
        """Return a callable replaying ``run_staged(staged)`` as a CUDA graph (backends that support it)."""
        raise NotImplementedError(f"{self.label} cannot capture CUDA graphs")

    # backend hooks ----------------------------------------------------------
    @abc.abstractmethod
    def _load(self) -> None: ...

    @abc.abstractmethod
    def _release(self) -> None: ...

    @abc.abstractmethod
    def _infer(self, feed: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]: ...
