"""The configuration search of `optimize` on a PyTorch source, on CPU: every configuration at every batch verified
against eager FP32 and timed; only passing rows can be best; the CLI, report and reproduce.sh carry it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from enginekit.compare import CompareSettings  # noqa: E402
from enginekit.errors import InvalidArgumentError  # noqa: E402
from enginekit.multirun import Candidate  # noqa: E402
from enginekit.pipeline.plan import plan_optimize  # noqa: E402
from enginekit.pipeline.search import (  # noqa: E402
    REFERENCE,
    SearchResult,
    SearchRow,
    batch_inputs,
    default_candidates,
    feed_at,
    role_of,
    search_configurations,
)
from enginekit.settings import BackendSettings, SearchSettings, TimingSettings  # noqa: E402

MODELS = Path(__file__).parent / "backends" / "torch_models.py"
CONV = f"{MODELS}:convnet"
QUICK = TimingSettings(warmup_s=0.0, warmup_iterations=1, duration_s=0.02, iterations=3)


def _feed(batch: int = 2) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).uniform(0, 1, (batch, 3, 16, 16)).astype(np.float32)}


def test_search_verifies_and_times_every_configuration_at_every_batch() -> None:
    cands = ("inductor/mode=default/freezing=off/channels_last=off", "inductor/mode=default/freezing=on",
             "torch/channels_last=on")
    backend = BackendSettings(torch_inputs=("x:batch,3,16,16",), torch_device="cpu")
    res = search_configurations(CONV, _feed(), SearchSettings(batches=(1, 3), candidates=cands), backend,
                                CompareSettings(), QUICK)
    assert res.device == "cpu" and res.batches == (1, 3) and res.peak_tflops is None
    assert [r.candidate for r in res.rows] == [REFERENCE.label] * 2 + [Candidate.parse(c).label for c in cands
                                                                       for _ in (1, 3)]
    assert {r.role for r in res.rows} == {"reference", "plain", "flags"}
    for r in res.rows:
        assert r.status == "ok", r.reason
        assert r.timing is not None and r.timing["runs"] >= 3 and r.timing["clock"] == "perf_counter_ns"
        assert r.max_abs_err is not None and r.max_abs_err <= 1e-5
    assert res.flops[1] > 0 and res.flops[3] == pytest.approx(3 * res.flops[1])
    for b in (1, 3):
        plain = next(r for r in res.at(b) if r.role == "plain")
        assert plain.speedup_vs_plain == pytest.approx(1.0)
        best = res.best(b)
        assert best is not None and best.median_ms == min(r.median_ms or 1e9 for r in res.at(b))
        summary = res.summary(b)
        assert summary["best_latency"] == best.candidate and summary["plain_compile"] == plain.candidate
    json.dumps(res.to_dict())


def test_a_failing_configuration_is_reported_and_never_best() -> None:
    """fp16 overflows in this model (activations pass 65504): its rows fail verification, however fast."""
    backend = BackendSettings(torch_inputs=("x:batch,8",), torch_device="cpu")
    feed = {"x": np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)}
    res = search_configurations(f"{MODELS}:overflowing_mlp", feed, SearchSettings(batches=(2,),
                                candidates=("torch:fp16",)), backend, CompareSettings(), QUICK)
    bad = next(r for r in res.rows if r.candidate == "torch:fp16")
    assert bad.status == "failed" and bad.timing is not None  # timed, so the report shows what it would have won
    assert res.best(2) is not None and res.best(2).candidate == REFERENCE.label  # type: ignore[union-attr]
    # the rule itself: the fastest row loses to a slower passing one
    rows = [SearchRow("a", "torch", "fp16", "flags", 1, "failed", timing={"median_ms": 0.1, "items_per_s": 1e4}),
            SearchRow("b", "torch", "fp16", "flags", 1, "ok", timing={"median_ms": 0.5, "items_per_s": 2e3})]
    assert SearchResult("cpu", (1,), ["a", "b"], rows).best(1, "throughput").candidate == "b"  # type: ignore[union-attr]


def test_int8_rows_are_beyond_flags_judged_by_the_8bit_rule_at_every_batch() -> None:
    """A real encoder (self-attention + FFN) with int8 linears, eager and compiled with freezing, at two batches."""
    from enginekit.backends.torch_quant import int8_supported

    if (why := int8_supported("cpu")) is not None:
        pytest.skip(f"int8 matmuls on CPU: {why}")
    cands = ("inductor/mode=default/freezing=off/channels_last=off", "torch/linear=int8",
             "inductor/mode=default/freezing=on/linear=int8")
    backend = BackendSettings(torch_inputs=("x:batch,12,32",), torch_device="cpu")
    feed = {"x": np.random.default_rng(0).standard_normal((2, 12, 32)).astype(np.float32)}
    res = search_configurations(f"{MODELS}:fast_path_encoder", feed, SearchSettings(batches=(1, 3), candidates=cands),
                                backend, CompareSettings(), QUICK)
    rows = [r for r in res.rows if "linear=int8" in r.candidate]
    assert len(rows) == 4 and {r.role for r in rows} == {"beyond"}
    for r in rows:
        assert r.status == "ok", r.reason
        assert r.atol is not None and r.atol > 1e-3  # the 8-bit rule, not FP32's 1e-5
        assert r.max_abs_err is not None and 1e-4 < r.max_abs_err <= r.atol  # quantized, and within the rule
        assert r.details["quantized_linear"]["kind"] == "int8"


def test_default_sets_and_roles() -> None:
    gpu = default_candidates("cuda", ("fp16", "bf16"), conv=True, linear=True)
    labels = [c.label for c in gpu]
    assert "inductor:fp16/mode=default/freezing=off/channels_last=off" in labels  # plain torch.compile
    for want in ("torch:fp16/channels_last=on/cuda_graph=on", "inductor:fp16/mode=reduce-overhead/freezing=on/"
                 "channels_last=off", "inductor:bf16/mode=reduce-overhead/freezing=off",
                 "inductor:fp16/mode=max-autotune/freezing=on", "inductor:fp16/mode=max-autotune-no-cudagraphs/"
                 "freezing=on", "inductor:bf16/mode=reduce-overhead/freezing=on/linear=fp8",
                 "inductor:fp16/mode=reduce-overhead/freezing=on/linear=int8",
                 "inductor:fp16/mode=max-autotune/freezing=on/linear=int8",
                 "inductor:bf16/mode=reduce-overhead/freezing=on/linear=int8"):
        assert want in labels
    assert len(set(labels)) == len(labels)
    assert role_of(Candidate.parse("inductor:bf16/mode=reduce-overhead/freezing=on/linear=fp8")) == "beyond"
    assert role_of(Candidate.parse("inductor:fp16/linear=int8")) == "beyond"
    assert role_of(Candidate.parse("inductor:fp16/linear=off")) == "flags"
    assert not any("linear=" in c.label for c in default_candidates("cuda", ("fp16",), conv=True, linear=False))
    assert not any("fastpath" in c for c in labels)  # no transformer layers: nothing to turn off
    with_layers = [c.label for c in default_candidates("cuda", ("bf16",), conv=False, linear=True, transformer=True)]
    assert "inductor:bf16/mode=reduce-overhead/freezing=on/fastpath=off" in with_layers
    assert role_of(Candidate.parse("inductor:bf16/mode=reduce-overhead/freezing=on/fastpath=off")) == "flags"
    # cuDNN autotuning is a flag, measured in a process of its own (one plan cache per process): not in the set
    assert not any("cudnn_benchmark" in c for c in labels)
    assert role_of(Candidate.parse("torch:fp16/channels_last=on/cuda_graph=on/cudnn_benchmark=on")) == "flags"
    assert role_of(Candidate.parse(labels[0])) == "plain" and role_of(REFERENCE) == "reference"
    cpu = [c.label for c in default_candidates("cpu", ("fp32",), conv=False, linear=True)]
    assert cpu == ["inductor/mode=default/freezing=off/channels_last=off", "inductor/mode=default/freezing=on"]


def test_feeds_follow_the_batch_axis() -> None:
    assert batch_inputs(("x:batch,3,16,16", "scale:1")) == ["x"]
    with pytest.raises(InvalidArgumentError, match="symbolic batch dim"):
        batch_inputs(("x:2x3x16x16",))
    feed = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "k": np.ones(3, np.float32)}
    out = feed_at(feed, ["x"], 5)
    assert out["x"].shape == (5, 3) and np.array_equal(out["x"][2], feed["x"][0]) and out["k"] is feed["k"]


def test_plan_refuses_bad_search_options(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="apply to PyTorch sources"):
        plan_optimize(None, search_batches=[1])
    with pytest.raises(InvalidArgumentError, match="batch sizes must be >= 1"):
        plan_optimize(CONV, inputs=["x:batch,3,16,16"], search_batches=[0], report_dir=tmp_path)
    with pytest.raises(InvalidArgumentError, match="choose one of"):
        plan_optimize(CONV, inputs=["x:batch,3,16,16"], search_candidates=["inductor/mode=fastest"],
                      report_dir=tmp_path)
    assert plan_optimize(CONV, inputs=["x:batch,3,16,16"], report_dir=tmp_path).search is None
    on_gpu = plan_optimize(CONV, inputs=["x:batch,3,16,16"], report_dir=tmp_path,
                           backend=BackendSettings(torch_device="cuda"))
    assert on_gpu.search == SearchSettings(auto=True)  # --torch-device cuda searches by default


def test_an_automatic_search_skips_a_model_without_a_batch_axis(tmp_path: Path) -> None:
    """--torch-device cuda alone must not fail a run whose inputs have a fixed batch: the search step is skipped."""
    from dataclasses import replace

    from enginekit.pipeline import optimize

    settings = plan_optimize(CONV, inputs=["x:2,3,16,16"], backends=["torch"], prepare=False,
                             report_dir=tmp_path / "r", backend=BackendSettings(torch_device="cpu"))
    settings = replace(settings, search=SearchSettings(auto=True))  # as --torch-device cuda plans it
    result = optimize(settings)
    step = next(s for s in result.steps if s.name == "search")
    assert step.status == "SKIPPED" and "symbolic batch dim" in step.reason
    assert result.passed


def test_a_compilation_past_the_limit_is_a_skipped_row_and_the_search_goes_on() -> None:
    """inductor compiles convnet on CPU in seconds; a 20 ms limit interrupts it while it loads, so every batch is
    skipped; the next configuration and a later search still compile and pass."""
    import time

    backend = BackendSettings(torch_inputs=("x:batch,3,16,16",), torch_device="cpu")
    cands = ("inductor/mode=max-autotune-no-cudagraphs", "torch/channels_last=on")
    t0 = time.perf_counter()
    res = search_configurations(CONV, _feed(), SearchSettings(batches=(1, 3), candidates=cands,
                                                              compile_limit_s=0.02), backend, CompareSettings(), QUICK)
    slow = [r for r in res.rows if r.candidate == Candidate.parse(cands[0]).label]
    assert [r.status for r in slow] == ["skipped", "skipped"]
    assert all(r.reason.endswith("ran past the limit of 0.02 s (--search-compile-limit) while loading")
               and r.timing is None for r in slow)
    assert [r.status for r in res.rows if r not in slow] == ["ok"] * 4  # eager rows are not limited
    assert res.best(1) is not None and res.best(1).candidate != slow[0].candidate  # type: ignore[union-attr]
    assert time.perf_counter() - t0 < 60
    again = search_configurations(CONV, _feed(), SearchSettings(batches=(1,), candidates=cands[:1]), backend,
                                  CompareSettings(), QUICK)
    assert [r.status for r in again.rows] == ["ok", "ok"]  # dynamo was reset: it compiles from scratch


def test_the_compile_limit_option(tmp_path: Path) -> None:
    from enginekit.cli.common import parse_duration

    s = plan_optimize(CONV, inputs=["x:batch,3,16,16"], report_dir=tmp_path / "r", search_batches=[1],
                      search_compile_limit=parse_duration("2m", "--search-compile-limit"))
    assert s.search is not None and s.search.compile_limit_s == 120.0
    s = plan_optimize(CONV, inputs=["x:batch,3,16,16"], report_dir=tmp_path / "r", search_batches=[1],
                      search_compile_limit=0.0)
    assert s.search is not None and s.search.compile_limit_s is None
    auto = plan_optimize(CONV, inputs=["x:batch,3,16,16"], report_dir=tmp_path / "r",
                         backend=BackendSettings(torch_device="cuda"), search_compile_limit=30.0)
    assert auto.search is not None and auto.search.auto and auto.search.compile_limit_s == 30.0
    assert plan_optimize(CONV, inputs=["x:batch,3,16,16"], report_dir=tmp_path / "r").search is None
    with pytest.raises(InvalidArgumentError, match="must be >= 0"):
        plan_optimize(CONV, inputs=["x:batch,3,16,16"], report_dir=tmp_path / "r", search_compile_limit=-1.0)
    with pytest.raises(InvalidArgumentError, match="apply to PyTorch sources"):
        plan_optimize(None, report_dir=tmp_path / "r", search_compile_limit=10.0)


def test_the_limit_covers_the_compilation_at_load_and_keeps_batch_order() -> None:
    """The inductor runner compiles while it loads, at the example shape (the feed's batch 2): a search at that batch
    alone must hit the limit too. A timeout at batch 8 does not skip the smaller batch 1 listed after it."""
    backend = BackendSettings(torch_inputs=("x:batch,3,16,16",), torch_device="cpu")
    cand = "inductor/mode=max-autotune-no-cudagraphs"
    res = search_configurations(CONV, _feed(2), SearchSettings(batches=(2,), candidates=(cand,),
                                                               compile_limit_s=0.02), backend, CompareSettings(), QUICK)
    row = next(r for r in res.rows if r.candidate == Candidate.parse(cand).label)
    assert row.status == "skipped" and row.reason.endswith("(--search-compile-limit) while loading")
    from enginekit.pipeline import search as search_mod

    rows = []
    real = search_mod._measure

    def fake(runner, cand, role, batch, *args):  # type: ignore[no-untyped-def]
        if batch == 8:
            r = SearchRow(cand.label, cand.backend, cand.precision, role, batch, "skipped",
                          f"{search_mod._LIMIT_REASON} 1 s (--search-compile-limit)")
        else:
            r = real(runner, cand, role, batch, *args)
        rows.append(batch)
        return r

    search_mod._measure = fake  # type: ignore[assignment]
    try:
        res = search_configurations(CONV, _feed(2), SearchSettings(batches=(8, 1, 16), candidates=("torch",)),
                                    backend, CompareSettings(), QUICK)
    finally:
        search_mod._measure = real  # type: ignore[assignment]
    torch_rows = {r.batch: r for r in res.rows if r.candidate == "torch"}
    assert torch_rows[1].status == "ok" and torch_rows[16].reason.endswith("(at batch 8)")
    assert torch_rows[16].status == "skipped" and 16 not in rows[3:]


def test_the_alarm_restores_an_outer_timer_and_handler() -> None:
    import signal
    import time

    from enginekit.pipeline.search import _CompileTimeout, _time_limit

    fired: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda *a: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with _time_limit(5.0):
            pass
        assert 0 < signal.getitimer(signal.ITIMER_REAL)[0] <= 0.3  # the outer timer runs on
        time.sleep(0.4)
        assert fired == [1]  # and its own handler got it
        with pytest.raises(_CompileTimeout):
            with _time_limit(0.01):
                time.sleep(0.5)
        assert signal.getitimer(signal.ITIMER_REAL)[0] == 0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_first_call_past_the_limit_is_a_skipped_row() -> None:
    """The per-batch limit of _measure: a first call (a recompilation at a new batch size) that runs too long."""
    import time

    from enginekit.pipeline import search as search_mod

    class Slow:
        device = "cpu"

        def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            time.sleep(1.0)
            return {"y": feed["x"]}

    res = SearchResult("cpu", (4,), ["inductor"])
    row = search_mod._measure(Slow(), Candidate("inductor", "fp32"), "plain", 4, _feed(4), {4: {"y": _feed(4)["x"]}},
                              res, CompareSettings(), QUICK, 0.05)  # type: ignore[arg-type]
    assert row.status == "skipped" and row.reason == (f"{search_mod._LIMIT_REASON} 0.05 s (--search-compile-limit)")


def test_an_alarm_lost_in_a_finalizer_comes_again() -> None:
    """Seen in the full suite: the alarm fired while Python ran a weakref finalizer, whose exceptions are printed
    ("Exception ignored in <finalize object>") and dropped, and the compilation then ran unlimited. The timer now
    fires again every 50 ms until the block ends; here the first alarm is swallowed as a finalizer would."""
    import time

    from enginekit.pipeline.search import _CompileTimeout, _time_limit

    swallowed = 0
    t0 = time.perf_counter()
    with pytest.raises(_CompileTimeout):
        with _time_limit(0.02):
            try:
                time.sleep(2)
            except _CompileTimeout:
                swallowed += 1
            time.sleep(2)
    assert swallowed == 1 and time.perf_counter() - t0 < 1.0
