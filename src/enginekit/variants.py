"""Candidate options: one backend at one precision, configured beyond its precision.

A candidate is written ``NAME[:PRECISION][/KEY=VALUE]...`` (``inductor:fp16/mode=reduce-overhead/freezing=off``).
Each option sets one field of :class:`~enginekit.settings.BackendSettings` for that candidate alone, so that
``optimize``'s configuration search and ``bench`` can hold several configurations of one backend side by side:

====================  ===============================  ==========================  =============================
key                   values                           backends                    BackendSettings field
====================  ===============================  ==========================  =============================
``mode``              default, reduce-overhead,        inductor, aoti              ``inductor_mode``
                      max-autotune,
                      max-autotune-no-cudagraphs
``freezing``          on, off                          inductor, aoti              ``inductor_freezing``
``channels_last``     auto, on, off                    torch, inductor, aoti       ``channels_last``
``cuda_graph``        on, off                          torch, aoti                 ``cuda_graph``
``cudnn_benchmark``   on, off                          torch, inductor, aoti       ``cudnn_benchmark``
``fastpath``          on, off                          torch, inductor, aoti       ``transformer_fastpath``
``linear``            fp8, int8, off                   torch, inductor             ``quantized_linear``
====================  ===============================  ==========================  =============================

Options are kept in the order of the table, whatever order they were written in, so one configuration has one label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from enginekit.errors import InvalidArgumentError, did_you_mean

if TYPE_CHECKING:
    from enginekit.settings import BackendSettings

INDUCTOR_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CHANNELS_LAST = ("auto", "on", "off")
ON_OFF = ("on", "off")
TORCH_BACKENDS = ("torch", "inductor", "aoti")

Options = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class OptionKey:
    key: str
    field: str  # the BackendSettings field it sets
    values: tuple[str, ...]
    backends: tuple[str, ...]
    boolean: bool = False  # on/off stored as True/False

    def value_of(self, text: str) -> str | bool:
        return text == "on" if self.boolean else text


OPTION_KEYS: tuple[OptionKey, ...] = (
    OptionKey("mode", "inductor_mode", INDUCTOR_MODES, ("inductor", "aoti")),
    OptionKey("freezing", "inductor_freezing", ON_OFF, ("inductor", "aoti"), boolean=True),
    OptionKey("channels_last", "channels_last", CHANNELS_LAST, TORCH_BACKENDS),
    OptionKey("cuda_graph", "cuda_graph", ON_OFF, ("torch", "aoti"), boolean=True),
    OptionKey("cudnn_benchmark", "cudnn_benchmark", ON_OFF, TORCH_BACKENDS, boolean=True),
    OptionKey("fastpath", "transformer_fastpath", ON_OFF, TORCH_BACKENDS, boolean=True),
    OptionKey("linear", "quantized_linear", ("fp8", "int8", "off"), ("torch", "inductor")),
)
_BY_KEY = {k.key: k for k in OPTION_KEYS}
_ORDER = {k.key: i for i, k in enumerate(OPTION_KEYS)}


def split_options(text: str) -> tuple[str, str]:
    """``inductor:fp16/mode=x`` -> (``inductor:fp16``, ``mode=x``); the second part is empty without options."""
    head, _, rest = text.partition("/")
    return head, rest


def parse_options(text: str, backend: str) -> Options:
    """``mode=reduce-overhead/freezing=off`` (the part after the first ``/``) for ``backend``; InvalidArgumentError
    for an unknown key, a value out of range, an option the backend does not take, or a key given twice."""
    if not text:
        return ()
    found: dict[str, str] = {}
    for part in text.split("/"):
        key, eq, value = part.partition("=")
        key, value = key.strip().replace("-", "_"), value.strip().lower()
        spec = _BY_KEY.get(key)
        if spec is None or not eq:
            keys = [k.key for k in OPTION_KEYS]
            raise InvalidArgumentError(f"Candidate option {part!r}: write KEY=VALUE with KEY one of "
                                       f"{', '.join(keys)}{did_you_mean(key, keys) or '.'}")
        if value not in spec.values:
            raise InvalidArgumentError(f"Candidate option {key}={value!r}: choose one of {', '.join(spec.values)}"
                                       f"{did_you_mean(value, spec.values) or '.'}")
        if backend not in spec.backends:
            raise InvalidArgumentError(f"Candidate option {key}= applies to {', '.join(spec.backends)}, "
                                       f"not to {backend!r}.")
        if key in found:
            raise InvalidArgumentError(f"Candidate option {key}= is given twice.")
        found[key] = value
    return tuple(sorted(found.items(), key=lambda kv: _ORDER[kv[0]]))


def format_options(options: Options) -> str:
    """``/mode=reduce-overhead/freezing=off`` (empty without options)."""
    return "".join(f"/{k}={v}" for k, v in options)


def apply_options(settings: BackendSettings, options: Sequence[tuple[str, str]]) -> BackendSettings:
    """``settings`` with the candidate's options set."""
    if not options:
        return settings
    changes: dict[str, Any] = {_BY_KEY[k].field: _BY_KEY[k].value_of(v) for k, v in options}
    return replace(settings, **changes)


def quantized_kind(options: Sequence[tuple[str, str]]) -> str | None:
    """``fp8`` / ``int8`` when the options run the linears as 8-bit matmuls (``linear=``), else None."""
    kind = dict(options).get("linear", "off")
    return None if kind == "off" else kind
