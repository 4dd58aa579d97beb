from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from enginekit.report.markdown import render_run, table
from enginekit.report.writer import write_report


def test_report_folder_contents(tmp_path: Path) -> None:
    doc = {"kind": "run", "passed": True, "model": "m.onnx", "reference": "ort",
           "inputs": {"x": {"shape": [1, 2], "dtype": "float32"}},
           "results": [{"backend": "ort", "status": "ok", "reason": "", "reference": True,
                        "outputs": {"y": {"passed": True, "max_abs_err": 0.0, "max_rel_err": 0.0, "cosine": 1.0,
                                          "nan_count": 0, "inf_count": 0}}}]}
    cmd = ["enginekit", "run", "m o.onnx", "--input", "x:1x2"]
    paths = write_report(tmp_path / "rep", doc, render_run(doc), cmd,
                         {"inputs": {"x": np.ones((1, 2), np.float32)}, "outputs.ort": {}}, cwd=tmp_path)
    names = sorted(p.name for p in paths)
    assert names == ["inputs.npz", "report.html", "report.json", "report.md", "reproduce.sh"]
    data = json.loads((tmp_path / "rep/report.json").read_text())
    assert data["command"] == "enginekit run 'm o.onnx' --input x:1x2"
    assert data["environment"]["onnx"] and data["files"] == {"inputs": "inputs.npz"}
    script = (tmp_path / "rep/reproduce.sh").read_text()
    assert "enginekit run 'm o.onnx' --input x:1x2" in script
    # the script is valid bash and quotes the folder
    subprocess.run(["bash", "-n", str(tmp_path / "rep/reproduce.sh")], check=True)
    assert "| ort | ok | yes |" in (tmp_path / "rep/report.md").read_text()
    assert not list((tmp_path / "rep").glob(".*tmp"))  # atomic writes leave no temp files


def test_markdown_escapes_pipes() -> None:
    assert "a\\|b" in table(["h"], [["a|b"]])
