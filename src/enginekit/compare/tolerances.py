"""Tolerances and comparison settings, and the parsing of ``--atol`` / ``--rtol`` values.

A tolerance flag takes values of the form ``FLOAT`` (the default for every output) or
``NAME:FLOAT`` (one output). Output names may themselves contain ``:``, so a value is split
on its *last* colon, as Polygraphy does.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from enginekit.errors import InvalidArgumentError, UnknownNameError

#: Polygraphy's defaults.
DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-5

#: Accepted values of ``CompareSettings.check_error_stat``.
ERROR_STATS: tuple[str, ...] = ("elemwise", "max", "mean", "median")

_EXPECTED_FORM = "expected FLOAT (default for all outputs) or NAME:FLOAT (one output), e.g. 1e-4 or logits:1e-3"


def _check_tolerance(value: float, what: str) -> None:
    if math.isnan(value) or value < 0:
        raise InvalidArgumentError(
            f"{what} must be a non-negative number, got {value!r}.",
            hint="Use 0 to require exact equality or inf to disable this check.",
        )


@dataclass(frozen=True)
class Tolerances:
    """One tolerance kind (absolute or relative): a default plus per-output overrides.

    ``per_output`` is a tuple of ``(name, value)`` pairs so the object stays hashable;
    a name appears at most once (the constructor keeps the last value given for a name).
    """

    default: float
    per_output: tuple[tuple[str, float], ...] = ()
    #: True when the user gave the default (``--atol 1e-5``), even if it equals Polygraphy's default: such a
    #: value is kept for every precision instead of becoming scale-aware below FP32 (see ``per_precision``).
    default_given: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        _check_tolerance(self.default, "default tolerance")
        merged: dict[str, float] = {}
        for name, value in self.per_output:
            if not name:
                raise InvalidArgumentError(
                    "per-output tolerance has an empty output name."
                )
            _check_tolerance(value, f"tolerance for output '{name}'")
            merged[name] = float(value)
        object.__setattr__(self, "default", float(self.default))
        object.__setattr__(self, "per_output", tuple(merged.items()))

    def for_output(self, name: str) -> float:
        """The tolerance that applies to output ``name``."""
        for out_name, value in self.per_output:
            if out_name == name:
                return value
        return self.default

    @property
    def names(self) -> tuple[str, ...]:
        """Output names that have their own tolerance."""
        return tuple(name for name, _ in self.per_output)


def _flag_name(kind: str) -> str:
    return kind if kind.startswith("-") else f"--{kind}"


def _parse_float(text: str, flag: str, raw: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise InvalidArgumentError(
            f"{flag} value {raw!r}: {text.strip()!r} is not a number; {_EXPECTED_FORM}."
        ) from None
    if math.isnan(value):
        raise InvalidArgumentError(
            f"{flag} value {raw!r}: NaN is not a tolerance; {_EXPECTED_FORM}."
        )
    if value < 0:
        raise InvalidArgumentError(
            f"{flag} value {raw!r}: a tolerance must be >= 0, got {value:g}; {_EXPECTED_FORM}."
        )
    return value


def parse_tolerances(values: Sequence[str], default: float, kind: str) -> Tolerances:
    """Parse tolerance flag values such as ``["1e-4", "logits:1e-3"]``.

    ``default`` applies when no bare ``FLOAT`` is given; ``kind`` names the flag in error
    messages (``"atol"`` or ``"--atol"``). When a default or an output is given several
    times, the last value wins. Raises :class:`InvalidArgumentError` on a malformed value.
    """
    flag = _flag_name(kind)
    if isinstance(values, str):
        values = [values]
    current_default = float(default)
    default_given = False
    per_output: dict[str, float] = {}
    for raw in values:
        text = raw.strip()
        if not text:
            raise InvalidArgumentError(
                f"{flag} value {raw!r} is empty; {_EXPECTED_FORM}."
            )
        if ":" not in text:
            current_default = _parse_float(text, flag, raw)
            default_given = True
            continue
        name, _, number = text.rpartition(":")
        name = name.strip()
        if not name:
            raise InvalidArgumentError(
                f"{flag} value {raw!r} has an empty output name; {_EXPECTED_FORM}."
            )
        per_output[name] = _parse_float(number, flag, raw)
    return Tolerances(default=current_default, per_output=tuple(per_output.items()), default_given=default_given)


@dataclass(frozen=True)
class CompareSettings:
    """How outputs are compared (Polygraphy-compatible semantics).

    ``check_error_stat``: ``elemwise`` fails an output when any element has
    ``abs_err > atol and rel_err > rtol``; ``max``/``mean``/``median`` fail it when
    ``stat(abs_err) > atol and stat(rel_err) > rtol``. ``validate`` additionally fails
    an output that has any NaN or Inf on either side. A NaN fails the output even when the
    other side has a NaN at the same index, as in Polygraphy, unless ``equal_nan`` is set.
    """

    atol: Tolerances = field(default_factory=lambda: Tolerances(DEFAULT_ATOL))
    rtol: Tolerances = field(default_factory=lambda: Tolerances(DEFAULT_RTOL))
    check_error_stat: str = "elemwise"
    validate: bool = False
    equal_nan: bool = False

    def __post_init__(self) -> None:
        if self.check_error_stat not in ERROR_STATS:
            close = difflib.get_close_matches(
                str(self.check_error_stat), ERROR_STATS, n=1
            )
            hint = f"Did you mean '{close[0]}'?" if close else None
            raise InvalidArgumentError(
                f"--check-error-stat {self.check_error_stat!r} is not one of {', '.join(ERROR_STATS)}.",
                hint=hint,
            )

    def check_names(self, output_names: Iterable[str]) -> None:
        """Raise :class:`UnknownNameError` if a per-output tolerance names an unknown output."""
        validate_tolerance_names(self, output_names)


def validate_tolerance_names(
    settings: CompareSettings, output_names: Iterable[str]
) -> None:
    """Raise :class:`UnknownNameError` if a per-output tolerance names an output not in ``output_names``.

    The message suggests the closest existing name and lists the outputs.
    """
    known = list(dict.fromkeys(output_names))
    known_set = set(known)
    for flag, tolerances in (("--atol", settings.atol), ("--rtol", settings.rtol)):
        for name in tolerances.names:
            if name in known_set:
                continue
            close = difflib.get_close_matches(name, known, n=1)
            suggestion = f" Did you mean '{close[0]}'?" if close else ""
            listing = ", ".join(repr(n) for n in known) if known else "(none)"
            raise UnknownNameError(
                f"{flag} names output {name!r}, which is not an output of the model.{suggestion}",
                hint=f"Outputs are: {listing}.",
            )
