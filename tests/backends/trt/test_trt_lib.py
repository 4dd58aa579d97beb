"""What the TensorRT library prints from native code to file descriptor 1 is captured, not leaked to stdout."""

from __future__ import annotations

import ctypes
import os

import pytest

from enginekit.backends.tensorrt.lib import native_stdout_captured


def test_native_prints_to_fd_1_are_captured(capfd: pytest.CaptureFixture[str]) -> None:
    libc = ctypes.CDLL(None)
    print("before", flush=True)
    with native_stdout_captured() as printed:
        libc.printf(b"[W] [TRT] native warning %d\n", 7)  # C stdio, buffered: flushed into the capture
        os.write(1, b"raw line\n")
    print("after", flush=True)
    assert sorted(printed) == ["[W] [TRT] native warning 7", "raw line"]
    out = capfd.readouterr().out
    assert out == "before\nafter\n"
