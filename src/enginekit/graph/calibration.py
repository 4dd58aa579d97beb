"""INT8 calibration feeds: one ``.npz`` (or a folder of them) with one array per model input, split into samples."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from enginekit.data import check_feed, load_arrays
from enginekit.errors import FeedError, InvalidArgumentError
from enginekit.tensors import TensorSpec

log = logging.getLogger(__name__)

Feed = dict[str, np.ndarray]


def load_calibration_feeds(path: str | Path, input_specs: Sequence[TensorSpec] | None,
                           max_samples: int | None = None, *, batch_size: int | None = None) -> list[Feed]:
    """Calibration feeds from a ``.npz`` file or a folder of ``.npz`` feed files, checked against the inputs.

    ``.npz`` file: one array per input with a leading sample axis. An array of the input's rank is split
    along axis 0 into batches of the model's fixed batch size (``batch_size``, default 1, when the batch
    dim is dynamic; a remainder that fills no batch is dropped); an array of rank + 1 holds one feed per
    entry. Folder: every ``*.npz`` in it (sorted by name) is one feed. Arrays that name no input (labels)
    are ignored. ``max_samples`` caps the rows taken from a file, or the files taken from a folder.
    ``input_specs`` None (no model to check against): every array is an input, nothing is checked, and
    a file's arrays are split along axis 0 into batches of ``batch_size`` (default 1).

    Raises:
        FeedError: missing or unreadable data, missing inputs, wrong dtype or shape, no samples.
    """
    p = Path(path)
    if max_samples is not None and max_samples < 1:
        raise InvalidArgumentError(f"max_samples must be >= 1, got {max_samples}.")
    if p.is_dir():
        files = sorted(p.glob("*.npz"))[:max_samples]
        if not files:
            raise FeedError(f"Calibration folder {str(p)!r} holds no .npz files (one feed per file).")
        feeds = [_select_inputs(load_arrays(f), input_specs, str(f)) for f in files]
        for f, feed in zip(files, feeds, strict=True):
            if input_specs is not None:
                check_feed(input_specs, feed, where=f"calibration file {str(f)!r}")
        return feeds
    if p.suffix.lower() != ".npz":
        raise FeedError(f"Calibration data {str(p)!r} must be a .npz file or a folder of .npz files.")
    arrays = _select_inputs(load_arrays(p), input_specs, str(p))
    specs = input_specs if input_specs is not None else [
        TensorSpec(name, ("batch", *arr.shape[1:]) if arr.ndim else None, str(arr.dtype))
        for name, arr in arrays.items()]
    feeds = _split_samples(arrays, specs, str(p), max_samples, batch_size)
    for i, feed in enumerate(feeds):
        check_feed(specs, feed, where=f"calibration data {str(p)!r} batch {i}")
    log.info("calibration: %d feeds from %s", len(feeds), p)
    return feeds


def _select_inputs(arrays: Mapping[str, np.ndarray], specs: Sequence[TensorSpec] | None, where: str) -> Feed:
    from enginekit.errors import did_you_mean

    if specs is None:
        return dict(arrays)

    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        hints = "; ".join(f"{m!r}{did_you_mean(m, list(arrays))}" for m in missing)
        raise FeedError(f"Calibration data {where} lacks model input(s) {hints}. It holds: "
                        f"{', '.join(arrays) or '(nothing)'}; model inputs: {', '.join(s.name for s in specs)}.")
    extra = [k for k in arrays if k not in {s.name for s in specs}]
    if extra:
        log.info("calibration data %s: ignoring arrays that name no input: %s", where, ", ".join(extra))
    return {s.name: arrays[s.name] for s in specs}


def _split_samples(arrays: Feed, specs: Sequence[TensorSpec], where: str, max_samples: int | None,
                   batch_size: int | None) -> list[Feed]:
    per_input: dict[str, list[np.ndarray]] = {}
    for spec in specs:
        arr = arrays[spec.name]
        rank = len(spec.shape) if spec.shape is not None else arr.ndim
        if arr.ndim == rank + 1:  # [samples, *input shape]
            chunks = list(arr[:max_samples])
        elif arr.ndim == rank and rank >= 1:  # samples along the batch axis
            fixed = spec.shape[0] if spec.shape is not None and isinstance(spec.shape[0], int) else None
            batch = fixed or batch_size or 1
            rows = arr[:max_samples]
            usable = (len(rows) // batch) * batch
            if usable < len(rows):
                log.warning("calibration data %s: input %r has %d samples, not a multiple of batch %d; "
                            "dropping %d", where, spec.name, len(rows), batch, len(rows) - usable)
            chunks = [rows[i:i + batch] for i in range(0, usable, batch)]
        else:
            raise FeedError(f"Calibration data {where}: array {spec.name!r} has shape {list(arr.shape)}; expected "
                            f"the input's shape {spec.shape_str()} with a leading sample axis (rank {rank + 1}), "
                            f"or samples along the batch axis (rank {rank}).")
        per_input[spec.name] = chunks
    counts = {n: len(c) for n, c in per_input.items()}
    if len(set(counts.values())) > 1:
        raise FeedError(f"Calibration data {where}: inputs hold different numbers of feeds: {counts}.")
    n = next(iter(counts.values()), 0)
    if n == 0:
        raise FeedError(f"Calibration data {where} holds no complete sample (batch) for the model's inputs.")
    return [{name: np.ascontiguousarray(chunks[i]) for name, chunks in per_input.items()} for i in range(n)]
