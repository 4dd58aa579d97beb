"""report.html (`report/html.py`): rendered from real report docs (the bundled example through `optimize`, a failed
fp16 candidate fixed by the precision debugger, `debug precision --report`), self-contained, escaped, and readable
in a real browser (headless Chromium, when installed)."""

from __future__ import annotations

import copy
import json
import re
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from enginekit.pipeline import optimize
from enginekit.pipeline.search import SearchResult, SearchRow
from enginekit.report.html import MAX_PLOT_POINTS, TOP_TENSORS, error_growth_svg, render_html
from enginekit.report.tables import fmt
from enginekit.settings import FeedSettings, OptimizeSettings, TimingSettings

sys.path.insert(0, str(Path(__file__).parents[1] / "debug"))
import fp16_models  # type: ignore[import-not-found]  # noqa: E402

FAST = TimingSettings(warmup_s=0.0, warmup_iterations=1, iterations=3, duration_s=0.0)
NASTY = "<script>alert(\"x\")</script> & 'q' <b>"
Doc = dict[str, Any]


# --- real docs ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_doc(tmp_path_factory: pytest.TempPathFactory) -> Doc:
    """The bundled digits example through optimize; report.json is result.to_dict() plus what the writer adds."""
    out = tmp_path_factory.mktemp("demo") / "r"
    result = optimize(OptimizeSettings(backends=("ort", "openvino", "openvino:bf16"), timing=FAST, report_dir=out))
    doc: Doc = json.loads((out / "report.json").read_text())
    assert doc["results"] == json.loads(json.dumps(result.to_dict()["results"]))
    assert {"created", "command", "environment", "files"} <= set(doc)
    return doc


@pytest.fixture(scope="module")
def fp16_doc(tmp_path_factory: pytest.TempPathFactory) -> Doc:
    """A fp16 candidate that overflows, debugged and fixed by optimize (the fp16+plan row)."""
    tmp = tmp_path_factory.mktemp("fp16")
    model, feed, _ = fp16_models.attention_logits_overflow()
    onnx.save(model, str(tmp / "attn.onnx"))
    np.savez(tmp / "in.npz", **feed)
    optimize(OptimizeSettings(model=tmp / "attn.onnx", backends=("ort", "onnx-reference:fp16"), timing=FAST,
                              feeds=FeedSettings(load_inputs=tmp / "in.npz"), report_dir=tmp / "r"))
    doc: Doc = json.loads((tmp / "r" / "report.json").read_text())
    return doc


@pytest.fixture(scope="module")
def debug_doc(tmp_path_factory: pytest.TempPathFactory) -> Doc:
    """`enginekit debug precision --report`: the doc with the layerwise diff (per-tensor errors)."""
    from enginekit.cli.debug_cmd import write_debug_report
    from enginekit.debug.workflow import debug_precision
    from enginekit.settings import DebugSettings

    tmp = tmp_path_factory.mktemp("debug")
    model, feed, _ = fp16_models.attention_logits_overflow()
    result = debug_precision(model, [feed], DebugSettings(precision="fp16"))
    doc = result.to_dict(model=str(tmp / "attn.onnx"))
    write_debug_report(tmp / "r", doc, result.fix, model, feed, "fp16", result.reference)
    written: Doc = json.loads((tmp / "r" / "report.json").read_text())
    assert written["kind"] == "debug-precision" and written["layerwise"]["rows"]
    return written


# --- a tiny table reader ------------------------------------------------------------------------


class _Page(HTMLParser):
    """Tags seen, and every table as rows of (cell text, cell class, cell title)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[dict[str, str | None]] = []
        self.tables: list[list[list[tuple[str, str, str]]]] = []
        self._cell: list[str] | None = None
        self._cell_attrs: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.append(dict(attrs))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell, self._cell_attrs = [], dict(attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.tables and self.tables[-1]:
            self.tables[-1][-1].append(("".join(self._cell).strip(), self._cell_attrs.get("class") or "",
                                        self._cell_attrs.get("title") or ""))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def table_with(self, header: str) -> list[dict[str, tuple[str, str, str]]]:
        """The first table whose header row has ``header``, as one {header: cell} per row."""
        for t in self.tables:
            heads = [c[0] for c in t[0]]
            if header in heads:
                return [dict(zip(heads, row, strict=True)) for row in t[1:]]
        raise AssertionError(f"no table with a {header!r} column")


def _parse(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    p.close()
    return p


def _assert_self_contained(page: str) -> None:
    lowered = page.lower()
    for needle in ("http://", "https://", "<script", "<link", "src=", "@import", "url(", "<iframe", "<img",
                   "<object", "<embed"):
        assert needle not in lowered, needle
    assert lowered.startswith("<!doctype html>") and "content-security-policy" in lowered
    assert "default-src 'none'" in page


# --- unit tests on real docs ----------------------------------------------------------------------


def test_every_candidate_row_with_errors_latency_and_metrics(demo_doc: Doc) -> None:
    page = render_html(demo_doc)
    _assert_self_contained(page)
    parsed = _parse(page)
    rows = parsed.table_with("median ms")
    assert [r["candidate"][0].replace("reference", "").strip() for r in rows] == [
        r["backend"] for r in demo_doc["results"]]
    for r, cells in zip(demo_doc["results"], rows, strict=True):
        assert cells["status"][0] == r["status"]
        timing = r.get("timing") or {}
        assert cells["median ms"][0] == fmt(timing.get("median_ms"))
        assert cells["p90 ms"][0] == fmt(timing.get("p90_ms"))
        if timing.get("cv") is not None:
            assert cells["CV"][0].startswith(f"{100 * timing['cv']:.1f} %")
        if r["status"] == "ok":
            (out,) = r["outputs"].values()
            assert cells["max abs err"][0] == fmt(out["max_abs_err"]) and cells["atol"][0] == fmt(out["atol"])
            assert cells["max rel err"][0] == fmt(out["max_rel_err"]) and cells["rtol"][0] == fmt(out["rtol"])
            for header, name in (("accuracy", "accuracy"), ("macro P", "macro_precision"),
                                 ("macro R", "macro_recall")):
                text = cells[header][0]
                assert text.split(" ")[0] == fmt(r["metrics"][name])  # the value, then its difference if any
                iv = (r["metrics"].get("intervals") or {}).get(name)
                if iv is None:
                    assert text == fmt(r["metrics"][name])
                elif iv["difference"] == iv["low"] == iv["high"] == 0:  # no difference on any resample
                    assert text.endswith("(Δ 0)")
                else:
                    assert text.endswith(f"(Δ {iv['difference']:+.4g} [{iv['low']:+.4g}, {iv['high']:+.4g}])")
        else:
            assert cells["reason"][0] == r["reason"]
    assert '<span class="verdict good">PASSED</span>' in page
    steps = parsed.table_with("step")
    assert [(s["step"][0], s["status"][0]) for s in steps] == [(s["name"], s["status"]) for s in demo_doc["steps"]]
    env = {r["package / fact"][0]: r["version"][0] for r in parsed.table_with("package / fact")}
    assert env["enginekit"] == demo_doc["environment"]["enginekit"] and env["numpy"] == demo_doc["environment"]["numpy"]
    assert demo_doc["created"] in page and demo_doc["command"] in page


def test_fastest_passing_candidate_and_unstable_speedup_warning(demo_doc: Doc) -> None:
    doc = copy.deepcopy(demo_doc)
    timed = [r for r in doc["results"] if r["status"] == "ok" and r.get("timing")]
    assert len(timed) >= 2
    for i, r in enumerate(timed):  # deterministic: the last passing row is the fastest, and only it is unstable
        r["timing"].update(median_ms=10.0 - i, p90_ms=12.0 - i, cv=0.01, unstable=False)
        r["unstable"], r["timing_warnings"], r["speedup"] = False, [], 10.0 / (10.0 - i)
    fastest = timed[-1]
    fastest["timing"].update(cv=0.5, unstable=True)
    fastest["unstable"], fastest["timing_warnings"] = True, ["unstable run: coefficient of variation 50%"]
    page = render_html(doc)
    rows = {r["candidate"][0].replace("reference", "").strip(): r for r in _parse(page).table_with("speed-up")}
    cell = rows[fastest["backend"]]["speed-up"]
    assert "unstable" in cell[0] and "CV 50 %" in cell[0] and "warn" in cell[1]
    assert "coefficient of variation 50%" in cell[2]  # the warning as the cell's hover title
    for r in timed[:-1]:
        assert "unstable" not in rows[r["backend"]]["speed-up"][0]
    best = page[page.index('id="best"'):page.index("</section>", page.index('id="best"'))]
    assert "fastest passing candidate" in best and fastest["backend"] in best and "unstable timing" in best
    failed = copy.deepcopy(doc)  # a failing row is never "best", however fast
    failed["results"][doc["results"].index(fastest)]["status"] = "failed"
    best = render_html(failed).split('id="best"')[1].split("</section>")[0]
    assert f'<div class="big mono">{fastest["backend"]}</div>' not in best


def test_every_text_is_escaped(demo_doc: Doc) -> None:
    doc = copy.deepcopy(demo_doc)
    doc["model"] = f"/models/{NASTY}.onnx"
    doc["results"][0]["backend"] = f"ort{NASTY}"
    doc["results"][-1]["reason"] = NASTY
    doc["steps"][0]["reason"] = NASTY
    doc["environment"]["platform"] = NASTY
    doc["command"] = f"enginekit optimize '{NASTY}'"
    doc["skipped"] = [NASTY]
    page = render_html(doc)
    assert NASTY not in page and "<script>" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;q&#x27; &lt;b&gt;" in page
    parsed = _parse(page)
    assert "script" not in parsed.tags and "b" not in parsed.tags
    texts = [c[0] for t in parsed.tables for row in t for c in row]
    assert f"ort{NASTY}" in [t.replace("reference", "").strip() for t in texts]  # the parser reads it back intact
    assert NASTY in texts
    _assert_self_contained(page)


def test_fp16_failure_and_its_fixed_plan_row(fp16_doc: Doc) -> None:
    page = render_html(fp16_doc)
    _assert_self_contained(page)
    assert '<span class="verdict bad">FAILED</span>' in page
    rows = {r["candidate"][0]: r for r in _parse(page).table_with("max abs err")}
    failed = next(v for k, v in rows.items() if k.startswith("onnx-reference:fp16") and "+plan" not in k)
    assert failed["status"] == ("failed", "bad", "")
    assert failed["NaN/Inf"][0] != "0" and "bad" in failed["NaN/Inf"][1]
    fixed = next(v for k, v in rows.items() if "fp16+plan" in k)
    assert fixed["status"][0] == "ok" and "fixes onnx-reference:fp16" in fixed["candidate"][0]
    plan_row = next(r for r in fp16_doc["results"] if r["backend"].endswith("+plan"))
    debugger = page.split('id="debugger"')[1].split("</section>")[0]
    for node in plan_row["details"]["nodes"]:
        assert node in debugger
    assert f"{plan_row['details']['fp32_nodes']} of {plan_row['details']['total_nodes']} nodes kept" in debugger
    # optimize now records the per-tensor errors of the all-fp16 model: the error-growth plot is drawn
    assert plan_row["details"]["layerwise"]["rows"] and "<svg" in debugger
    assert "details.layerwise" not in debugger


def test_debug_report_plots_error_growth_per_tensor(debug_doc: Doc) -> None:
    page = render_html(debug_doc)
    _assert_self_contained(page)
    lw = debug_doc["layerwise"]
    svg = page[page.index('aria-label="fp16 error growth'):]
    svg = svg[:svg.index("</svg>")]
    titles = re.findall(r"<title>(.*?)</title>", svg, re.S)
    assert len(titles) == len(lw["rows"])  # one hover title per tensor
    assert f"first bad: {lw['first_bad']['node']}" in svg
    worst = _parse(page).table_with("op")
    assert len(worst) == min(TOP_TENSORS, len(lw["rows"]))
    assert worst[0]["passed"][0] == "failed"
    kept = [e["node"] for e in debug_doc["plan"]["keep_fp32"]]
    assert kept and all(n in page for n in kept)
    assert '<span class="verdict good">PASSED</span>' in page


def _synthetic_rows(n: int) -> list[dict[str, Any]]:
    """A layerwise diff of ``n`` tensors: error growing along the graph, failing from 60 % on, NaN near the end."""
    rows = []
    for i in range(n):
        err = 1e-5 * 10 ** (4 * i / n)
        bad = i >= int(0.6 * n)
        nan = 5 if i >= n - 3 else 0
        rows.append({"tensor": f"t{i}<&>", "node": f"blk.{i}/conv<\"{i}\">", "op_type": "Conv", "passed": not bad,
                     "max_abs_err": "nan" if nan else (err * 50 if bad else err), "max_rel_err": err * 3,
                     "cosine": 0.999, "nan_candidate": nan, "inf_candidate": 0, "atol": 1e-3, "rtol": 1e-3,
                     "reason": "x" if bad else ""})
    return rows


def test_error_growth_plot_of_300_plus_tensors_is_bounded_and_labelled() -> None:
    rows = _synthetic_rows(320)
    first = rows[int(0.6 * 320)]
    svg = error_growth_svg(rows, first, "fp16")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert 'viewBox="0 0 1200 380"' in svg  # fixed size whatever the graph's length
    assert len(svg) < 200_000
    titles = re.findall(r"<title>(.*?)</title>", svg, re.S)
    assert len(titles) == 320 and "#0 blk.0/conv&lt;&quot;0&quot;&gt;" in titles[0]
    assert "<&>" not in svg and 'conv<"' not in svg
    for label in ("max abs err", "max rel err", "atol", "outside tolerance", "NaN/Inf in candidate",
                  "error (log scale)", "tensor index in topological order (320 tensors)",
                  f"first bad: {first['node']}".replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")):
        assert label in svg, label
    ticks = re.findall(r'text-anchor="middle">(\d+)</text>', svg)
    assert ticks[0] == "0" and ticks[-1] == "319" and 5 <= len(ticks) <= 11
    decades = re.findall(r'text-anchor="end">1e(-?\d+)</text>', svg)
    assert "-5" in decades and "-3" in decades
    assert len(re.findall(r'<path d="[^"]*" fill="#cf222e"><title>', svg)) == 3  # NaN tensors, on the top edge
    assert svg.count("<circle cx=") - 1 == 317  # every other tensor a point (the legend has one more)
    red = len(re.findall(r'<circle [^>]*fill="#cf222e"><title>#\d+', svg))
    assert red == 320 - int(0.6 * 320) - 3  # every other failing tensor drawn red


def test_a_huge_graph_is_bucketed_to_its_worst_tensors() -> None:
    rows = _synthetic_rows(5000)
    svg = error_growth_svg(rows, None, "bf16")
    titles = re.findall(r"<title>(.*?)</title>", svg, re.S)
    assert MAX_PLOT_POINTS // 2 <= len(titles) <= MAX_PLOT_POINTS
    assert len(svg) < 400_000
    assert "each point the worst of 9" in svg and "worst of tensors #" in titles[0]
    assert sum("FAILS" in t for t in titles) >= 0.39 * len(titles)  # buckets keep their failing tensors
    assert sum("#4999 " in t or "#4997 " in t for t in titles) == 1  # the NaN tail survives


def test_debug_doc_with_300_tensors_renders_plot_and_top_table(debug_doc: Doc) -> None:
    doc = copy.deepcopy(debug_doc)
    rows = _synthetic_rows(330)
    doc["layerwise"] = {"precision": "fp16", "passed": False, "first_bad": rows[198], "rows": rows, "skipped": []}
    page = render_html(doc)
    _assert_self_contained(page)
    worst = _parse(page).table_with("op")
    assert len(worst) == TOP_TENSORS
    assert [w["#"][0] for w in worst[:3]] == ["327", "328", "329"]  # NaN first, where it starts first
    assert all(w["passed"][0] == "failed" for w in worst)
    assert "330 tensors compared with the FP32 reference, 132 outside tolerance" in page


def test_the_configuration_search_best_per_batch(demo_doc: Doc) -> None:
    timing = {"median_ms": 2.0, "p99_ms": 2.5, "items_per_s": 500.0, "cv": 0.02, "mean_ms": 2.0, "runs": 5}
    rows = [SearchRow("torch/channels_last=off", "torch", "fp32", "reference", 1, timing=dict(timing)),
            SearchRow("inductor/mode=default", "inductor", "fp32", "plain", 1, timing={**timing, "median_ms": 1.0}),
            SearchRow(f"inductor/{NASTY}", "inductor", "fp16", "flags", 1, "failed", reason=NASTY,
                      timing={**timing, "median_ms": 0.1}),
            SearchRow("inductor/mode=max-autotune", "inductor", "fp32", "flags", 1, unstable="unstable run: CV 40%",
                      timing={**timing, "median_ms": 0.5, "cv": 0.4})]
    doc = copy.deepcopy(demo_doc)
    doc["search"] = SearchResult("cpu", (1,), [r.candidate for r in rows], rows).to_dict()
    page = render_html(doc)
    _assert_self_contained(page)
    assert NASTY not in page
    best = _parse(page).table_with("best (latency)")
    assert len(best) == 1 and best[0]["best (latency)"][0] == "inductor/mode=max-autotune"  # not the failed one
    assert best[0]["enginekit best ms"][0] == fmt(0.5)
    every = _parse(page).table_with("configuration")
    assert [r["configuration"][0] for r in every] == [r.candidate for r in rows]
    assert "failed" in [r["status"][0] for r in every]


def test_run_report_renders_without_timing_columns(demo_doc: Doc) -> None:
    doc = {k: demo_doc[k] for k in ("passed", "model", "reference", "inputs", "weak_reference", "created",
                                    "command", "environment", "files")}
    doc["kind"] = "run"
    doc["results"] = [{k: v for k, v in r.items() if k not in ("timing", "metrics", "speedup", "unstable",
                                                                 "timing_warnings")} for r in demo_doc["results"]]
    page = render_html(doc)
    _assert_self_contained(page)
    heads = [h for t in _parse(page).tables for h in (c[0] for c in t[0])]
    assert "median ms" not in heads and "accuracy" not in heads and "Best engines" not in page
    assert all(r["backend"] in page for r in doc["results"])


# --- the page in a real browser -------------------------------------------------------------------


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _pixels(png: Path) -> tuple[int, int, Callable[[int, int], tuple[int, ...]]]:
    """(width, height, pixel(x, y)) of a PNG: Pillow when installed, else a small 8-bit RGB(A) decoder."""
    try:
        from PIL import Image

        img = Image.open(png).convert("RGB")
        return img.width, img.height, lambda x, y: tuple(img.getpixel((x, y)))  # type: ignore[arg-type]
    except ImportError:
        pass
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, meta = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        meta, idat = (body, idat) if kind == b"IHDR" else (meta, idat + body if kind == b"IDAT" else idat)
        pos += 12 + length
    w, h, depth, colour = struct.unpack(">IIBB", meta[:10])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), w * bpp
    out, prev = bytearray(), bytearray(stride)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a, b, c = (line[i - bpp] if i >= bpp else 0), prev[i], (prev[i - bpp] if i >= bpp else 0)
            pred = [0, a, b, (a + b) // 2][f] if f < 4 else (
                a if abs(b - c) <= abs(a - c) and abs(b - c) <= abs(a + b - 2 * c)
                else b if abs(a - c) <= abs(a + b - 2 * c) else c)
            line[i] = (line[i] + pred) & 0xFF
        out += line
        prev = line
    return w, h, lambda x, y: tuple(out[(y * w + x) * bpp:(y * w + x) * bpp + 3])


def _chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-extensions", "--disable-background-networking", "--hide-scrollbars",
                           f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180, check=False)


def test_page_renders_in_headless_chromium(demo_doc: Doc, debug_doc: Doc, tmp_path: Path) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium here (chromium, chromium-browser, google-chrome not on PATH): "
                    "apt-get install -y chromium to run this test")
    page = tmp_path / "report.html"
    page.write_text(render_html(demo_doc), encoding="utf-8")
    shot = tmp_path / "shot.png"
    res = _chromium(browser, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,2000",
                    page.as_uri())
    assert shot.is_file(), res.stderr[-2000:]
    w, h, pixel = _pixels(shot)
    assert (w, h) == (1400, 2000)
    sample = [pixel(x, y) for y in range(0, 1200, 6) for x in range(0, 1400, 6)]
    inked = sum(1 for p in sample if min(p) < 200)
    assert inked > 0.01 * len(sample), "the page rendered blank"
    assert len(set(sample)) > 20
    green = sum(1 for r, g, b in sample if abs(r - 0x1A) < 30 and abs(g - 0x7F) < 30 and abs(b - 0x37) < 30)
    assert green > 10, "the PASSED badge (inline CSS) is not drawn"
    dom = _chromium(browser, tmp_path / "profile", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = re.sub(r"<[^>]+>", " ", dom.stdout)
    assert "PASSED" in text and "Best engines" in text and "Candidates" in text
    for r in demo_doc["results"]:
        assert r["backend"] in text
        if r.get("timing"):
            assert fmt(r["timing"]["median_ms"]) in text
    # the error-growth plot: an SVG the browser lays out, hover titles in the DOM
    plot = tmp_path / "debug.html"
    plot.write_text(render_html(debug_doc), encoding="utf-8")
    dom = _chromium(browser, tmp_path / "profile", "--dump-dom", plot.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<svg" in dom.stdout and f"first bad: {debug_doc['layerwise']['first_bad']['node']}" in dom.stdout
    assert dom.stdout.count("<title>") >= len(debug_doc["layerwise"]["rows"])
