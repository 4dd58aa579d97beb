"""Candidate options (NAME:PRECISION/KEY=VALUE...): parsing, labels, the settings they set, and refusals."""

from __future__ import annotations

import pytest

from enginekit.errors import InvalidArgumentError
from enginekit.multirun import BackendRow, Candidate, resolve_candidates
from enginekit.settings import BackendSettings
from enginekit.variants import OPTION_KEYS, apply_options, parse_options


def test_options_parse_into_one_canonical_label() -> None:
    a = Candidate.parse("inductor:fp16/freezing=off/mode=reduce-overhead")
    b = Candidate.parse("inductor:fp16/mode=reduce-overhead/freezing=off")
    assert a == b and a.label == "inductor:fp16/mode=reduce-overhead/freezing=off"
    assert Candidate.parse(a.label) == a
    assert Candidate.parse("torch").label == "torch" and Candidate.parse("torch").options == ()


def test_options_set_the_backend_settings_of_that_candidate_only() -> None:
    base = BackendSettings(torch_inputs=("x:batch,3",))
    c = Candidate.parse("inductor:bf16/mode=max-autotune/freezing=off/channels_last=on/linear=fp8")
    s = c.settings(base)
    assert (s.inductor_mode, s.inductor_freezing, s.channels_last, s.quantized_linear) == ("max-autotune", False, "on",
                                                                                          "fp8")
    assert s.torch_inputs == base.torch_inputs and base.inductor_mode == "default" and base.quantized_linear == "off"
    assert Candidate.parse("torch/linear=int8").settings(base).quantized_linear == "int8"
    assert Candidate.parse("torch:fp16/cuda_graph=on").settings(base).cuda_graph is True
    both = Candidate.parse("torch:fp16/cudnn_benchmark=on/cuda_graph=on")
    assert both.label == "torch:fp16/cuda_graph=on/cudnn_benchmark=on" and both.settings(base).cudnn_benchmark is True
    assert base.cudnn_benchmark is False
    off = Candidate.parse("inductor:bf16/linear=int8/fastpath=off/freezing=on")
    assert off.label == "inductor:bf16/freezing=on/fastpath=off/linear=int8"
    assert off.settings(base).transformer_fastpath is False and base.transformer_fastpath is True
    assert apply_options(base, ()) is base


@pytest.mark.parametrize("text, words", [
    ("inductor/mode=fast", "choose one of default"),
    ("inductor/mode", "KEY=VALUE"),
    ("inductor/speed=max", "KEY one of mode"),
    ("torch/mode=default", "applies to inductor, aoti"),
    ("ort/linear=fp8", "applies to torch, inductor"),
    ("torch/linear=int4", "choose one of fp8, int8, off"),
    ("inductor/mode=default/mode=max-autotune", "given twice"),
    ("inductor/cuda_graph=on", "applies to torch, aoti"),
])
def test_bad_options_are_user_errors(text: str, words: str) -> None:
    with pytest.raises(InvalidArgumentError, match=words):
        Candidate.parse(text)


def test_every_key_names_a_backend_settings_field() -> None:
    fields = set(BackendSettings.__dataclass_fields__)
    assert all(k.field in fields for k in OPTION_KEYS)
    assert parse_options("channels-last=OFF", "torch") == (("channels_last", "off"),)


def test_configurations_of_one_backend_are_distinct_candidates() -> None:
    cands, ref = resolve_candidates(["inductor:fp16/mode=default", "inductor:fp16/mode=reduce-overhead"], None, {})
    assert [c.label for c in cands] == ["inductor:fp16/mode=default", "inductor:fp16/mode=reduce-overhead"]
    with pytest.raises(InvalidArgumentError, match="listed twice"):
        resolve_candidates(["inductor/mode=default", "inductor/mode=default"], None, {})


def test_8bit_rows_are_judged_by_the_8bit_rule() -> None:
    row = BackendRow("inductor", "bf16", "ok", options=(("linear", "fp8"),))
    assert row.judged_as == "fp8" and row.label == "inductor:bf16/linear=fp8"
    assert BackendRow("inductor", "fp16", "ok", options=(("linear", "int8"),)).judged_as == "int8"
    assert BackendRow("inductor", "fp16", "ok", options=(("linear", "off"),)).judged_as == "fp16"
    assert BackendRow("inductor", "bf16", "ok").judged_as == "bf16"
