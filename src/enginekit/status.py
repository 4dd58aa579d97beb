"""The status words of enginekit's results, each declared once.

* pipeline steps (`optimize`): ``OK`` / ``FAIL`` / ``SKIPPED`` (upper case, as the steps table prints them);
* backend and benchmark rows (`run`, `optimize`, `bench`): ``ok`` / ``failed`` / ``error`` / ``skipped``;
* graph passes (`prepare`): ``applied`` / ``rejected`` / ``skipped`` / ``failed``;
* verdicts (`debug precision`): ``passed`` / ``failed`` / ``inconclusive``.

A :class:`Status` is a ``str``: it compares equal to its word, and JSON, f-strings and ``str()`` show the word.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["PASS_STATUSES", "ROW_STATUSES", "STEP_STATUSES", "Status"]


class Status(str, Enum):
    """Every status word of enginekit's results (module doc)."""

    # pipeline steps
    STEP_OK = "OK"
    STEP_FAIL = "FAIL"
    STEP_SKIPPED = "SKIPPED"
    # backend and benchmark rows (skipped and failed also for graph passes, failed also for verdicts)
    OK = "ok"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"
    # graph passes
    APPLIED = "applied"
    REJECTED = "rejected"
    # verdicts
    PASSED = "passed"
    INCONCLUSIVE = "inconclusive"

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


STEP_STATUSES = (Status.STEP_OK, Status.STEP_FAIL, Status.STEP_SKIPPED)
ROW_STATUSES = (Status.OK, Status.FAILED, Status.ERROR, Status.SKIPPED)
PASS_STATUSES = (Status.APPLIED, Status.REJECTED, Status.SKIPPED, Status.FAILED)
