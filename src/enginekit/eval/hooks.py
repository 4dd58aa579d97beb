"""User post-processing hooks: ``file.py:function`` or ``package.module:function``, mapping one batch's raw model
outputs to the task's predictions.

The function is called once per batch with the outputs by name (``dict[str, np.ndarray]``, axis 0 = the batch's
samples) and returns that batch's predictions: an array whose axis 0 is the samples (scores, label maps), or a
list with one entry per sample (decoded texts, a detector's boxes per image). :func:`run_postprocess` checks the
count and joins the batches (arrays along axis 0 when their other dims agree; otherwise, and lists, end to end).

The file is the user's own code, named on the command line: it is imported like a ``file.py:factory`` model
source (its folder first on ``sys.path`` meanwhile, so it can import its neighbours; ``sys.argv`` is ``[file]``),
and a ``SystemExit`` or an exception while importing or calling it becomes a user error naming the hook.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from enginekit.errors import FeedError, InvalidArgumentError

PostProcess = Callable[[dict[str, np.ndarray]], Any]
_HINT = "Give the hook as FILE.py:FUNCTION or package.module:FUNCTION, the function taking the outputs dict."


@contextmanager
def _user_code(text: str, action: str) -> Iterator[None]:
    saved = sys.argv
    sys.argv = [text]
    try:
        yield
    except SystemExit as exc:
        raise InvalidArgumentError(f"{action} post-processing hook {text!r} exited the program (SystemExit with code "
                                   f"{exc.code!r}).", hint='Move that code under `if __name__ == "__main__":`.') \
            from None
    finally:
        sys.argv = saved


def _import_file(path: Path, text: str) -> Any:
    """The hook's file, imported as a ``file.py:factory`` model source is (sources.torch_load); its failures are
    this hook's user errors."""
    from enginekit.errors import ModelLoadError
    from enginekit.sources.torch_load import import_python_file

    try:
        return import_python_file(path, "enginekit_user_hook")
    except ModelLoadError as exc:
        raise InvalidArgumentError(f"Post-processing hook {text!r}: {exc.message}", hint=_HINT) from None


def load_postprocess(text: str) -> PostProcess:
    """The function named by ``FILE.py:FUNCTION`` or ``package.module:FUNCTION`` (imported, not called)."""
    where, sep, attr = text.rpartition(":")
    if not sep or not where or not attr.isidentifier():
        raise InvalidArgumentError(f"Invalid post-processing hook {text!r}: expected FILE.py:FUNCTION.", hint=_HINT)
    if where.endswith(".py") or "/" in where or "\\" in where:
        module = _import_file(Path(where), text)
    else:
        try:
            with _user_code(text, "Importing"):
                module = importlib.import_module(where)
        except ImportError as exc:
            raise InvalidArgumentError(f"Cannot import module {where!r} for post-processing hook {text!r}: {exc}",
                                       hint=_HINT) from exc
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        found = "nothing" if fn is None else type(fn).__name__
        raise InvalidArgumentError(f"Post-processing hook {text!r}: {where!r} has no function {attr!r} "
                                   f"(found {found}).", hint=_HINT)
    return fn  # type: ignore[no-any-return]


def _batch_size(outputs: Mapping[str, np.ndarray]) -> int | None:
    sizes = {int(a.shape[0]) for a in outputs.values() if np.ndim(a) > 0}
    return sizes.pop() if len(sizes) == 1 else None


def run_postprocess(fn: PostProcess, batches: Iterable[dict[str, np.ndarray]], name: str = "hook") -> Any:
    """Predictions of all batches: ``fn`` applied to each batch's outputs, joined (module doc).

    Raises FeedError when the function fails, returns something else than an array or a list, or a number of
    predictions other than the batch's sample count (when the outputs agree on one)."""
    parts: list[Any] = []
    for i, outputs in enumerate(batches):
        try:
            with _user_code(name, "Calling"):
                pred = fn(dict(outputs))
        except InvalidArgumentError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's function failed
            raise FeedError(f"Post-processing hook {name!r} failed on batch {i}: {type(exc).__name__}: {exc}") \
                from exc
        if isinstance(pred, tuple):
            pred = list(pred)
        if not isinstance(pred, (np.ndarray, list)) or (isinstance(pred, np.ndarray) and pred.ndim == 0):
            raise FeedError(f"Post-processing hook {name!r} returned {type(pred).__name__} for batch {i}; it must "
                            "return an array (axis 0 = samples) or a list with one prediction per sample.")
        expected = _batch_size(outputs)
        if expected is not None and len(pred) != expected:
            raise FeedError(f"Post-processing hook {name!r} returned {len(pred)} predictions for batch {i} of "
                            f"{expected} samples.")
        parts.append(pred)
    if not parts:
        raise FeedError(f"Post-processing hook {name!r}: no batches to process.")
    if all(isinstance(p, np.ndarray) for p in parts) and len({p.shape[1:] for p in parts}) == 1:
        return np.concatenate(parts, axis=0)  # (batches of differently padded arrays are joined as lists below)
    out: list[Any] = []
    for p in parts:
        out.extend(list(p))
    return out
