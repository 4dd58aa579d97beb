"""A report never overwrites files enginekit did not write: such a folder is refused (exit 2)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from enginekit.errors import OutputPathError
from enginekit.report.writer import MARKER, prepare_report_dir, write_report

DOC = {"kind": "run", "passed": True}


def _write(folder: Path) -> list[Path]:
    return write_report(folder, DOC, "# report\n", ["enginekit", "run", "m.onnx"],
                        {"inputs": {"x": np.ones(2, np.float32)}}, cwd=folder.parent)


def test_new_empty_and_own_folders_are_written_again(tmp_path: Path) -> None:
    _write(tmp_path / "new")
    assert (tmp_path / "new" / MARKER).is_file()
    _write(tmp_path / "new")  # a second run into its own report folder
    (tmp_path / "empty").mkdir()
    _write(tmp_path / "empty")
    earlier = tmp_path / "earlier"  # written by an enginekit from before the marker
    _write(earlier)
    (earlier / MARKER).unlink()
    _write(earlier)


def test_folder_with_unrelated_files_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "inputs.npz").write_bytes(b"user data")
    (data / "report.md").write_text("my own notes")
    with pytest.raises(OutputPathError, match=r"files enginekit did not write \(inputs.npz, report.md\)"):
        _write(data)
    assert (data / "inputs.npz").read_bytes() == b"user data" and (data / "report.md").read_text() == "my own notes"
    assert sorted(p.name for p in data.iterdir()) == ["inputs.npz", "report.md"]


def test_report_path_of_the_wrong_kind(tmp_path: Path) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(OutputPathError, match="is a file"):
        prepare_report_dir(f)
    with pytest.raises(OutputPathError, match="afile"):
        prepare_report_dir(f / "sub")
    with pytest.raises(OutputPathError, match="/sys/enginekit-report"):  # not writable, even for root
        prepare_report_dir(Path("/sys/enginekit-report"))


def test_reproduce_script_mode_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        _write(tmp_path / "r")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r" / "reproduce.sh").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "r" / "report.json").stat().st_mode) == 0o600


def test_cli_run_report_into_a_folder_of_other_files_exits_2(tmp_path: Path, mlp_model: Path) -> None:
    exe = str(Path(sys.executable).with_name("enginekit"))
    (tmp_path / "keep.txt").write_text("mine")
    res = subprocess.run([exe, "run", str(mlp_model), "--input", "x:2x4", "-b", "ort", "--report", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    assert "files enginekit did not write" in res.stderr and "Traceback" not in res.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine" and not (tmp_path / "report.json").exists()
