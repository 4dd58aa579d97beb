"""The task-metric columns of the `optimize` tables (report.md, report.html, the CLI): one per metric the results
carry, whatever the --task, each cell the value with the difference from the reference and its interval."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

import enginekit.pipeline
from enginekit.cli.main import main
from enginekit.examples import digits
from enginekit.multirun import BackendRow
from enginekit.pipeline.steps import CandidateResult, OptimizeResult
from enginekit.report.html import render_html
from enginekit.report.markdown import render_optimize
from enginekit.report.metric_columns import (
    best_row,
    interval_text,
    metric_cell,
    metric_columns,
    metric_header,
    metric_number,
)

Doc = dict[str, Any]
FIXED = ["backend", "precision", "status", "median ms", "p90 ms", "speed-up"]


def _iv(difference: float, low: float, high: float) -> dict[str, float]:
    return {"difference": difference, "low": low, "high": high, "level": 0.95}


def _row(backend: str, metrics: dict[str, Any] | None, *, reference: bool = False, status: str = "ok",
         median: float = 2.0) -> Doc:
    return {"backend": backend, "precision": backend.partition(":")[2] or "fp32", "status": status,
            "reason": "" if status == "ok" else "gate accuracy>=-1% failed", "reference": reference, "details": {},
            "outputs": {"y": {"passed": status == "ok", "max_abs_err": 1e-3, "max_rel_err": 1e-3, "atol": 1e-2,
                              "rtol": 1e-2, "cosine": 1.0, "nan_count": 0, "inf_count": 0}},
            "timing": {"median_ms": median, "p90_ms": median * 1.1, "cv": 0.01, "unstable": False},
            "metrics": metrics, "speedup": 2.0 / median, "unstable": False, "timing_warnings": []}


def _doc(results: list[Doc], dataset: str | None = "data") -> Doc:
    return {"kind": "optimize", "passed": True, "model": "m.onnx", "reference": "ort", "dataset": dataset,
            "inputs": {}, "weak_reference": [], "steps": [{"name": "load", "status": "OK", "duration_s": 0.1,
                                                            "reason": "", "required": True}],
            "results": results}


def classification_doc() -> Doc:
    """As task_metrics.judge writes it: classification_metrics' keys first, then the per-sample ones (top-5)."""
    ref = {"samples": 360, "accuracy": 0.9861111, "macro_precision": 0.9866, "macro_recall": 0.9860,
           "top5_accuracy": 1.0, "labels": True, "intervals": {}}
    fp16 = {"samples": 360, "accuracy": 0.9833333, "macro_precision": 0.9840, "macro_recall": 0.9831,
            "top5_accuracy": 1.0, "labels": True,
            "intervals": {"accuracy": _iv(-0.0027778, -0.0083333, 0.0), "macro_precision": _iv(-0.0026, -0.008, 0.0),
                          "macro_recall": _iv(-0.0029, -0.0085, 0.0), "top5_accuracy": _iv(0.0, 0.0, 0.0)},
            "gates": [{"gate": "accuracy>=-1%", "metric": "accuracy", "passed": True, "estimate": -0.0027778,
                       "ci_low": -0.0083333, "ci_high": 0.0, "threshold": -0.0098611, "confidence": "passed"}]}
    return _doc([_row("ort", ref, reference=True), _row("openvino:fp16", fp16, median=1.0)])


def segmentation_doc() -> Doc:
    ref = {"miou": 0.81, "pixel_accuracy": 0.95, "foreground_iou": 0.7, "samples": 8, "labels": True,
           "intervals": {}}
    bad = {"miou": 0.62, "pixel_accuracy": 0.9, "foreground_iou": 0.41, "samples": 8, "labels": True,
           "intervals": {"miou": _iv(-0.19, -0.25, -0.12), "pixel_accuracy": _iv(-0.05, -0.07, -0.03),
                         "foreground_iou": _iv(-0.29, -0.35, -0.2)}}
    good = {"miou": 0.805, "pixel_accuracy": 0.949, "foreground_iou": 0.69, "samples": 8, "labels": True,
            "intervals": {"miou": _iv(-0.005, -0.01, 0.0), "pixel_accuracy": _iv(-0.001, -0.002, 0.0),
                          "foreground_iou": _iv(-0.01, -0.02, 0.0)}}
    return _doc([_row("ort", ref, reference=True), _row("trt:int8", bad, status="failed", median=0.5),
                 _row("trt:fp16", good, median=1.0)])


def detection_doc() -> Doc:
    ref = {"map": 0.412, "map50": 0.61, "samples": 5, "labels": True, "intervals": {}}
    fp16 = {"map": 0.4101, "map50": 0.6102, "samples": 5, "labels": True,
            "intervals": {"map": _iv(-0.0019, -0.004, 0.0003), "map50": _iv(0.0002, -0.001, 0.0015)}}
    return _doc([_row("ort", ref, reference=True), _row("trt:fp16", fp16, median=1.0)])


def ctc_doc() -> Doc:
    ref = {"sequence_accuracy": 0.9, "normalized_edit_distance": 0.03, "char_error_rate": 0.02, "samples": 10,
           "labels": False, "intervals": {}}
    worse = {"sequence_accuracy": 0.8, "normalized_edit_distance": 0.05, "char_error_rate": 0.04, "samples": 10,
             "labels": False, "intervals": {"char_error_rate": _iv(0.02, 0.0, 0.05)}}
    better = {"sequence_accuracy": 0.85, "normalized_edit_distance": 0.01, "char_error_rate": 0.01, "samples": 10,
              "labels": False, "intervals": {}}
    return _doc([_row("ort", ref, reference=True), _row("openvino", worse), _row("openvino:fp16", better)])


# --- readers ------------------------------------------------------------------------------------


def _md_table(md: str) -> list[dict[str, str]]:
    """The "## Backends" table of report.md as one {header: cell} per row."""
    lines = md.split("## Backends\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    heads = _md_headers(md)
    return [dict(zip(heads, (c.strip() for c in ln.strip()[2:-2].split(" | ")), strict=True)) for ln in lines[2:]]


def _md_headers(md: str) -> list[str]:
    line = md.split("## Backends\n\n", 1)[1].splitlines()[0]
    return [h.strip() for h in line.strip().strip("|").split(" | ")]


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[tuple[str, str]]]] = []
        self._cell: list[str] | None = None
        self._title = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell, self._title = [], dict(attrs).get("title") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(("".join(self._cell).strip(), self._title))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _html_candidates(page: str) -> tuple[list[str], list[dict[str, tuple[str, str]]]]:
    parser = _Tables()
    parser.feed(page[page.index('id="candidates"'):page.index("</section>", page.index('id="candidates"'))])
    table = parser.tables[0]
    heads = [c[0] for c in table[0]]
    return heads, [dict(zip(heads, row, strict=True)) for row in table[1:]]


def _best_card(page: str) -> str:
    best = page[page.index('id="best"'):page.index("</section>", page.index('id="best"'))]
    cards = re.findall(r'<div class="card">(.*?)</div></div>', best + "</div>")
    found = [c for c in cards if "(passing)" in c]
    assert len(found) <= 1
    return found[0] if found else ""


# --- the shared module ----------------------------------------------------------------------------


def test_headers_of_every_task_and_unknown_names() -> None:
    expected = {"accuracy": "accuracy", "macro_precision": "macro P", "macro_recall": "macro R",
                "top5_accuracy": "top-5", "top3_accuracy": "top-3", "top1_agreement": "top-1 agreement",
                "top5_agreement": "top-5 agreement", "miou": "mIoU", "pixel_accuracy": "pixel acc.",
                "foreground_iou": "fg IoU", "sequence_accuracy": "seq. acc.",
                "normalized_edit_distance": "norm. edit dist.", "char_error_rate": "CER", "map": "mAP",
                "map50": "mAP@.5", "my_metric": "my_metric"}
    assert {name: metric_header(name) for name in expected} == expected


def test_columns_in_first_seen_order_without_bookkeeping_or_non_numbers() -> None:
    results: list[dict[str, Any]] = [
        {"metrics": None},
        {"metrics": {"samples": 10, "accuracy": 0.5, "labels": True, "disagreements": 3, "note": "text",
                     "intervals": {"accuracy": _iv(0, 0, 0)}, "gates": [], "flag": False}},
        {"metrics": {"top1_agreement": 1.0, "accuracy": "nan", "map": 1}},
    ]
    cols = metric_columns(results)
    assert [c.name for c in cols] == ["accuracy", "top1_agreement", "map"]
    assert [c.header for c in cols] == ["accuracy", "top-1 agreement", "mAP"]
    assert all(c.higher_is_better for c in cols)
    lower = metric_columns(ctc_doc()["results"])
    assert [(c.name, c.higher_is_better) for c in lower] == [
        ("sequence_accuracy", True), ("normalized_edit_distance", False), ("char_error_rate", False)]
    assert metric_columns([{"metrics": {}}, {"metrics": None}, {}]) == []
    assert metric_number(True) is None and metric_number("inf") == float("inf") and metric_number("0.5") is None


def test_cell_is_value_then_difference_and_interval() -> None:
    ref, fp16 = classification_doc()["results"]
    assert metric_cell(ref, "accuracy") == "0.9861"  # the reference: no difference
    assert metric_cell(fp16, "accuracy") == "0.9833 (Δ -0.002778 [-0.008333, +0])"
    assert interval_text(fp16, "top5_accuracy") == "(Δ 0)"  # zero on every resample: said once
    assert metric_cell(fp16, "miou") == "–" and interval_text(ref, "accuracy") == ""
    nan = {"metrics": {"miou": "nan", "intervals": {"miou": {"difference": "nan", "low": "nan", "high": "nan"}}}}
    assert metric_cell(nan, "miou") == "nan (Δ nan [nan, nan])"
    half = {"metrics": {"miou": 0.5, "intervals": {"miou": {"difference": 0.1}}}}  # no bounds: no interval text
    assert metric_cell(half, "miou") == "0.5"


def test_best_row_is_lowest_where_lower_is_better() -> None:
    results = ctc_doc()["results"]
    seq, ned, cer = metric_columns(results)
    assert best_row(results, seq) is results[0]  # highest sequence accuracy: the reference
    assert best_row(results, ned) is results[2] and best_row(results, cer) is results[2]
    assert best_row([{"metrics": {"char_error_rate": "nan"}}], cer) is None


# --- report.md ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "headers"), [
    (classification_doc, ["accuracy", "macro P", "macro R", "top-5"]),
    (segmentation_doc, ["mIoU", "pixel acc.", "fg IoU"]),
    (detection_doc, ["mAP", "mAP@.5"]),
    (ctc_doc, ["seq. acc.", "norm. edit dist.", "CER"]),
])
def test_markdown_backends_table_has_the_task_metrics(make: Any, headers: list[str]) -> None:
    doc = make()
    md = render_optimize(doc)
    assert _md_headers(md) == [*FIXED, *headers, "max abs err"]
    rows = _md_table(md)
    assert [r["backend"] for r in rows] == [r["backend"] for r in doc["results"]]
    names = [c.name for c in metric_columns(doc["results"])]
    for r, cells in zip(doc["results"], rows, strict=True):
        for name, header in zip(names, headers, strict=True):
            assert cells[header] == metric_cell(r, name)
    assert "Task metrics: value (Δ difference from the reference" in md
    assert "## Task metrics against the reference" in md  # the detailed section is still there


def test_markdown_cells_spell_out_the_interval() -> None:
    md = render_optimize(classification_doc())
    assert "| ort | fp32 | ok | 2 | 2.2 | 1 | 0.9861 | 0.9866 | 0.986 | 1 | 0.001 |" in md
    assert "| 0.9833 (Δ -0.002778 [-0.008333, +0]) | 0.984 (Δ -0.0026 [-0.008, +0]) |" in md
    seg = render_optimize(segmentation_doc())
    assert "| trt:int8 | int8 | failed | 0.5 | 0.55 | 4 | 0.62 (Δ -0.19 [-0.25, -0.12]) |" in seg
    det = render_optimize(detection_doc())
    assert "0.4101 (Δ -0.0019 [-0.004, +0.0003]) | 0.6102 (Δ +0.0002 [-0.001, +0.0015])" in det
    assert "lower is better for norm. edit dist. and CER" in render_optimize(ctc_doc())


def test_markdown_without_metrics_has_no_metric_columns() -> None:
    doc = classification_doc()
    for r in doc["results"]:
        r["metrics"] = None
    md = render_optimize(doc)
    assert _md_headers(md) == [*FIXED, "max abs err"]
    assert "accuracy" not in md and "macro" not in md and "Task metrics" not in md
    assert "| ort | fp32 | ok | 2 | 2.2 | 1 | 0.001 |" in md


# --- report.html ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "headers"), [
    (classification_doc, ["accuracy", "macro P", "macro R", "top-5"]),
    (segmentation_doc, ["mIoU", "pixel acc.", "fg IoU"]),
    (detection_doc, ["mAP", "mAP@.5"]),
])
def test_html_candidates_table_has_the_task_metrics(make: Any, headers: list[str]) -> None:
    doc = make()
    heads, rows = _html_candidates(render_html(doc))
    at = heads.index("speed-up")
    assert heads[at + 1:at + 1 + len(headers)] == headers
    names = [c.name for c in metric_columns(doc["results"])]
    for r, cells in zip(doc["results"], rows, strict=True):
        for name, header in zip(names, headers, strict=True):
            text, title = cells[header]
            assert text == metric_cell(r, name)  # the same text as report.md's cell
            assert ("95 % paired bootstrap interval" in title) == bool(interval_text(r, name))


def test_html_best_metric_card() -> None:
    card = _best_card(render_html(classification_doc()))
    assert "best accuracy (passing)" in card and '<div class="big mono">ort</div>' in card
    assert "accuracy 0.9861, macro P 0.9866, macro R 0.986, top-5 1" in card
    # segmentation: the failed int8 row is never best, whatever its numbers
    doc = segmentation_doc()
    doc["results"][1]["metrics"]["miou"] = 0.99
    card = _best_card(render_html(doc))
    assert "best mIoU (passing)" in card and '<div class="big mono">ort</div>' in card
    doc["results"][2]["metrics"]["miou"] = 0.9
    assert '<div class="big mono">trt:fp16</div>' in _best_card(render_html(doc))
    card = _best_card(render_html(detection_doc()))
    assert "best mAP (passing)" in card and "mAP 0.412, mAP@.5 0.61" in card


def test_html_best_card_takes_the_lowest_where_lower_is_better() -> None:
    doc = ctc_doc()
    doc["results"] = [copy.deepcopy(r) for r in doc["results"]]
    for r in doc["results"]:  # the first column lower-is-better: the edit distance
        r["metrics"] = {"normalized_edit_distance": r["metrics"]["normalized_edit_distance"],
                        "sequence_accuracy": r["metrics"]["sequence_accuracy"]}
    card = _best_card(render_html(doc))
    assert "best norm. edit dist. (passing)" in card and '<div class="big mono">openvino:fp16</div>' in card
    assert "lower norm. edit dist. is better" in card


def test_html_without_metrics_has_no_metric_columns_nor_card() -> None:
    doc = detection_doc()
    for r in doc["results"]:
        r["metrics"] = None
    page = render_html(doc)
    heads, _ = _html_candidates(page)
    assert heads[heads.index("speed-up") + 1:] == []
    assert "(passing)" not in page and "Task metrics" not in page


def test_html_escapes_unknown_metric_names() -> None:
    doc = _doc([_row("ort", {"<b>x</b>": 0.5, "intervals": {}}, reference=True)])
    page = render_html(doc)
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


# --- the CLI table --------------------------------------------------------------------------------


def _fake_optimize(settings: Any, command: Any = None, progress: Any = None) -> OptimizeResult:
    doc = detection_doc()
    cands = []
    for r in doc["results"]:
        row = BackendRow(r["backend"].partition(":")[0], r["precision"], "ok")  # the label adds ":fp16"
        row.is_reference = r["reference"]
        cands.append(CandidateResult(row, timing=r["timing"], metrics=r["metrics"], speedup=r["speedup"]))
    return OptimizeResult(settings, model=Path("m.onnx"), candidates=cands, reference="ort")


def test_cli_table_has_the_task_metric_columns(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(enginekit.pipeline, "optimize", _fake_optimize)
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["optimize", str(digits.onnx_path()), "-b", "ort,trt:fp16", "--report", "rep"])
    out = capsys.readouterr().out
    assert exc.value.code in (0, None), out
    header = next(line for line in out.splitlines() if "speed-up" in line)
    assert re.search(r"speed-up\s*┃\s*mAP\s*┃\s*mAP@\.5\s*┃\s*max abs err", header), header
    assert "accuracy" not in out and "macro" not in out
    assert "│ trt:fp16 " in out and "0.4101 (Δ -0.0019 [-0.004, +0.0003])" in out
    assert "0.6102 (Δ +0.0002 [-0.001, +0.0015])" in out
    assert "Task metrics: value (Δ difference from the reference" in " ".join(out.split())
