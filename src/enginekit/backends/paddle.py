"""Paddle Inference runner (CPU), and how a Paddle inference model is found and described.

A Paddle inference model is what ``paddle.jit.save`` (or ``paddle.static.save_inference_model``) writes:
``PREFIX.json`` (PIR, Paddle >= 3) or ``PREFIX.pdmodel`` (legacy ProgramDesc), plus ``PREFIX.pdiparams``
(absent when the model has no parameters). Every place that takes a Paddle model accepts the prefix,
the program file, the params file, or the folder that holds exactly one model.

The IO specs come from the saved program (feed/fetch ops), not from an ONNX file; ``-1`` dims become ``"?"``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from enginekit.backends.base import Runner
from enginekit.deps import require
from enginekit.errors import BackendError, ModelLoadError
from enginekit.sources.paddle_files import (
    PARAMS_SUFFIX,
    PIR,
    PaddleModelFiles,
    resolve_paddle_model,
)
from enginekit.tensors import Dim, TensorSpec

if TYPE_CHECKING:
    from enginekit.settings import BackendSettings

log = logging.getLogger(__name__)


def import_paddle(purpose: str = "the 'paddle' backend") -> ModuleType:
    """``import paddle`` with its import-time chatter (a ccache warning) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return require("paddle", purpose=purpose)


def _dims(shape: Any) -> tuple[Dim, ...]:
    return tuple("?" if int(d) < 0 else int(d) for d in shape)


def _dtype_name(paddle: ModuleType, dtype: Any) -> str:
    name: str = paddle.base.data_feeder.convert_dtype(dtype)
    return name


@dataclass(frozen=True)
class PaddleProgramInfo:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    has_parameters: bool


def _read_pir(paddle: ModuleType, program_file: Path) -> PaddleProgramInfo:
    program = paddle.pir.Program()
    paddle.base.core.deserialize_pir_program(str(program_file), program)
    inputs: list[TensorSpec] = []
    fetches: list[tuple[int, TensorSpec]] = []
    has_parameters = False
    for op in program.global_block().ops:
        kind = op.name()
        if kind in ("pd_op.data", "pd_op.feed"):
            value = op.result(0)
            inputs.append(TensorSpec(str(op.attrs()["name"]), _dims(value.shape), _dtype_name(paddle, value.dtype)))
        elif kind == "pd_op.fetch":
            attrs = op.attrs()
            value = op.operand_source(0)
            spec = TensorSpec(str(attrs["name"]), _dims(value.shape), _dtype_name(paddle, value.dtype))
            fetches.append((int(attrs.get("col", len(fetches))), spec))
        elif kind == "builtin.parameter":
            has_parameters = True
    return PaddleProgramInfo(inputs, [s for _, s in sorted(fetches, key=lambda t: t[0])], has_parameters)


def _read_legacy(paddle: ModuleType, program_file: Path) -> PaddleProgramInfo:
    with paddle.pir_utils.OldIrGuard():
        program = paddle.static.deserialize_program(program_file.read_bytes())
        block = program.global_block()
        feeds: list[tuple[int, TensorSpec]] = []
        fetches: list[tuple[int, TensorSpec]] = []
        for op in block.ops:
            if op.type not in ("feed", "fetch"):
                continue
            name = op.output("Out")[0] if op.type == "feed" else op.input("X")[0]
            var = block.var(name)
            spec = TensorSpec(name, _dims(var.shape), _dtype_name(paddle, var.dtype))
            (feeds if op.type == "feed" else fetches).append((int(op.attr("col")), spec))
        has_parameters = any(v.persistable and v.name not in ("feed", "fetch") for v in block.vars.values())
    return PaddleProgramInfo(
        [s for _, s in sorted(feeds, key=lambda t: t[0])],
        [s for _, s in sorted(fetches, key=lambda t: t[0])],
        has_parameters,
    )


def read_program_info(files: PaddleModelFiles) -> PaddleProgramInfo:
    """Inputs and outputs (in the predictor's order) and whether the program has parameters.

    Reads only the program file (no parameters are loaded). Raises :class:`ModelLoadError` when the
    file is not a Paddle inference program, or when it has parameters but the params file is missing.
    """
    paddle = import_paddle("reading a Paddle model")
    try:
        info = _read_pir(paddle, files.program) if files.format == PIR else _read_legacy(paddle, files.program)
    except Exception as exc:  # noqa: BLE001 - paddle raises ValueError/RuntimeError/its own types
        raise ModelLoadError(
            f"Could not read {str(files.program)!r} as a Paddle {files.format} inference program: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        ) from exc
    if not info.inputs or not info.outputs:
        raise ModelLoadError(
            f"{str(files.program)!r} has {len(info.inputs)} inputs and {len(info.outputs)} outputs: not an "
            "inference model (save it with paddle.jit.save or paddle.static.save_inference_model)."
        )
    if info.has_parameters and files.params is None:
        raise ModelLoadError(
            f"Paddle model {str(files.program)!r} has parameters but its params file "
            f"{str(files.program.with_suffix(PARAMS_SUFFIX))!r} does not exist.",
            hint="Keep the .pdiparams file that paddle.jit.save wrote beside the program.",
        )
    return info


class PaddleRunner(Runner):
    """Paddle Inference on CPU (Paddle's default passes, oneDNN when the build has it)."""

    backend = "paddle"
    _files: PaddleModelFiles | None = None

    @property
    def files(self) -> PaddleModelFiles:
        """The program and params files (resolved on first use, so that creating a runner reads nothing)."""
        if self._files is None:
            self._files = resolve_paddle_model(self.model)
        return self._files

    def __init__(self, model: Path, settings: BackendSettings, precision: str = "fp32") -> None:
        super().__init__(model, settings, precision)
        self._files = None

    def _io_specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        info = read_program_info(self.files)
        return info.inputs, info.outputs

    def _load(self) -> None:
        paddle = import_paddle()
        inputs, outputs = self.inputs(), self.outputs()  # also checks the params file is there
        config = paddle.inference.Config(str(self.files.program), str(self.files.params or ""))
        config.disable_gpu()
        config.disable_glog_info()
        config.set_cpu_math_library_num_threads(os.cpu_count() or 1)
        try:
            self._predictor: Any = paddle.inference.create_predictor(config)
        except Exception as exc:  # noqa: BLE001 - Paddle's own error types
            raise BackendError(f"Paddle Inference could not load {str(self.files.program)!r}: {exc}") from exc
        got_in, got_out = list(self._predictor.get_input_names()), list(self._predictor.get_output_names())
        want_in, want_out = [s.name for s in inputs], [s.name for s in outputs]
        if sorted(got_in) != sorted(want_in) or sorted(got_out) != sorted(want_out):
            raise BackendError(
                f"Paddle Inference sees inputs {got_in} and outputs {got_out}, the program file declares "
                f"inputs {want_in} and outputs {want_out}."
            )
        self._describe = {
            "version": str(paddle.__version__),
            "format": self.files.format,
            "device": "cpu",
            "onednn": bool(config.mkldnn_enabled()),
            "threads": int(config.cpu_math_library_num_threads()),
        }

    def _release(self) -> None:
        del self._predictor

    def _infer(self, feed: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        for name, value in feed.items():
            handle = self._predictor.get_input_handle(name)
            handle.reshape(list(value.shape))
            handle.copy_from_cpu(np.ascontiguousarray(value))
        self._predictor.run()
        return {spec.name: np.asarray(self._predictor.get_output_handle(spec.name).copy_to_cpu())
                for spec in self.outputs()}

    def describe(self) -> dict[str, object]:
        return {**super().describe(), **self._describe}
