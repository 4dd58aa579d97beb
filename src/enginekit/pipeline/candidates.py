"""Which candidates `optimize` runs, which one is the reference, and the TensorRT profiles around the feed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from enginekit.errors import InvalidArgumentError
from enginekit.multirun import Candidate
from enginekit.registry import BACKENDS, get_backend

if TYPE_CHECKING:
    from enginekit.settings import BuildSettings, OptimizeSettings
    from enginekit.tensors import TensorSpec

# PyTorch-native candidates added for PyTorch sources (precisions beyond fp32 are chosen with --backend).
TORCH_DEFAULTS = (Candidate("torch"), Candidate("inductor"), Candidate("aoti"))


def default_candidates(torch_source: bool = False) -> list[Candidate]:
    """Every backend and precision that runs ONNX models (TensorRT ones come from --target builds), and,
    for a PyTorch source, eager PyTorch, torch.compile and AOTInductor on the source itself."""
    onnx = [Candidate(b.name, p) for b in BACKENDS if "onnx" in b.formats and "cuda" not in b.devices
            for p in (b.default_precisions or b.precisions)]
    return onnx + (list(TORCH_DEFAULTS) if torch_source else [])


def is_torch_source(settings: OptimizeSettings) -> bool:
    from enginekit.sources.detect import PADDLE, detect_source

    return settings.export is not None and detect_source(settings.export.source).kind != PADDLE


def candidate_format(c: Candidate) -> str:
    """The model a candidate runs: the ONNX model, or the PyTorch source for torch/inductor/aoti."""
    return "onnx" if "onnx" in get_backend(c.backend).formats else "torch"


def resolve_optimize_candidates(settings: OptimizeSettings) -> tuple[list[Candidate], Candidate]:
    from enginekit.registry import check_format

    torch_source = is_torch_source(settings)
    cands = [Candidate.parse(n) for n in settings.backends] if settings.backends else default_candidates(torch_source)
    for c in cands:
        check_format(get_backend(c.backend), "torch" if torch_source and candidate_format(c) == "torch" else "onnx")
    if len(set(cands)) != len(cands):
        raise InvalidArgumentError("A --backend is listed twice.")
    if settings.reference:
        ref = Candidate.parse(settings.reference)
        if ref not in cands:
            cands.insert(0, ref)
    else:
        usable = [c for c in cands if get_backend(c.backend).available().ok]
        preferred = Candidate("torch") if torch_source and Candidate("torch") in usable else Candidate("ort")
        ref = preferred if preferred in usable else (usable[0] if usable else cands[0])
    return cands, ref


def resolve_build_profiles(b: BuildSettings, inputs: list[TensorSpec], feed: Mapping[str, np.ndarray]) -> BuildSettings:
    """Without --profile, a dynamic model gets one profile around the comparison feed: MIN 1 on every
    dynamic dim, OPT = MAX = the feed's shape (the dataset is evaluated in batches no larger than it)."""
    if b.profiles or b.profile_from is not None or not any(i.is_dynamic for i in inputs):
        return b
    parts = []
    for spec in inputs:
        shape = tuple(feed[spec.name].shape)
        lo = tuple(1 if not isinstance(d, int) else s for d, s in zip(spec.shape or (), shape, strict=False))
        dims = ["x".join(str(v) for v in t) for t in (lo or shape, shape, shape)]
        parts.append(f"{spec.name}:{dims[0]}:{dims[1]}:{dims[2]}")
    return replace(b, profiles=tuple(parts))


def batch_size(specs: list[TensorSpec], requested: int) -> int:
    """The dataset batch size: the model's fixed batch dim (refusing another --batch-size), else ``requested``."""
    fixed = {s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], int)}
    if fixed:
        size = int(fixed.pop())
        if requested and requested != size:
            raise InvalidArgumentError(f"--batch-size {requested}: the model's batch dim is fixed at {size}.")
        return size
    return requested
