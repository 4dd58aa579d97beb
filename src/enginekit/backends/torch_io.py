"""Inputs and outputs of a PyTorch source or an AOTInductor package, for `run` and `bench` (above both the
eager runner's helpers and the AOTInductor backend, which each know one kind)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from enginekit.backends.torch_common import discover_outputs, load_source
from enginekit.backends.torch_inputs import plan_torch_inputs
from enginekit.sources.detect import is_aoti_package
from enginekit.tensors import TensorSpec


def torch_source_io(model: str | Path, torch_inputs: Sequence[str], *,
                    trust_remote_code: bool = False) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of a PyTorch source or an AOTInductor package, for `run` and `bench`.

    Source: inputs from ``torch_inputs``, outputs from one eager fp32 CPU run (two with dynamic dims).
    Package: from its manifest (torch is not imported); without one, from ``torch_inputs`` and a first run.
    Files that run code when loaded are refused here, before any backend, unless ``trust_remote_code``.
    """
    from enginekit.sources.torch_load import check_source_trust

    check_source_trust(model, trust_remote_code)
    if is_aoti_package(model):
        from enginekit.backends.aoti import package_io

        return package_io(Path(model), torch_inputs, trust_remote_code=trust_remote_code)
    plans = plan_torch_inputs(torch_inputs)
    module, _ = load_source(model, trust_remote_code=trust_remote_code)
    return [p.spec() for p in plans], discover_outputs(module, plans, "cpu", None, False)
