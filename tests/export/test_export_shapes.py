from __future__ import annotations

import pytest

from enginekit.errors import InvalidArgumentError, UnknownNameError
from enginekit.export.targets import parse_target
from enginekit.sources.shapes import parse_dynamic, parse_export_input, plan_inputs


def test_parse_export_input() -> None:
    assert parse_export_input("x:batch,3,h,w").dims == ("batch", 3, "h", "w")
    assert parse_export_input("x:1x3x224x224").dims == (1, 3, 224, 224)
    i = parse_export_input("input:0:batch,128:int64")
    assert (i.name, i.dims, i.dtype) == ("input:0", ("batch", 128), "int64")
    for bad in ("x", "x:1x-3", "x:3,4-5", ":1x2"):
        with pytest.raises(InvalidArgumentError):
            parse_export_input(bad)


def test_parse_dynamic() -> None:
    d = parse_dynamic("x:0=batch[1..32]")
    assert (d.input, d.axis, d.label, d.min, d.max) == ("x", 0, "batch", 1, 32)
    assert parse_dynamic("ids:1=seq").min is None
    assert parse_dynamic("ids:1=seq[..64]").max == 64
    for bad in ("x:0=batch[5..2]", "x=batch", "x:0=1bad", "x:0=b[0..4]"):
        with pytest.raises(InvalidArgumentError):
            parse_dynamic(bad)


def test_plan_trace_and_other_sizes() -> None:
    (p,) = plan_inputs((parse_export_input("x:1x3x8x8"),), (parse_dynamic("x:0=batch[1..32]"),))
    assert p.trace_shape == (2, 3, 8, 8)  # size 1 is specialized by torch.export: trace at 2
    assert p.shape_with("other") == (4, 3, 8, 8)
    assert p.spec().shape == ("batch", 3, 8, 8)
    (q,) = plan_inputs((parse_export_input("x:b,4"),), (parse_dynamic("x:0=b[3..3]"),))
    assert q.trace_shape == (3, 4) and q.dynamic[0].other is None
    (r,) = plan_inputs((parse_export_input("x:b,4"),), (parse_dynamic("x:0=b[5..6]"),))
    assert r.trace_shape == (5, 4) and r.shape_with("other") == (6, 4)
    with pytest.raises(InvalidArgumentError, match="no --input named"):
        plan_inputs((parse_export_input("x:b,4"),), (parse_dynamic("y:0=b"),))
    with pytest.raises(InvalidArgumentError, match="rank"):
        plan_inputs((parse_export_input("x:b,4"),), (parse_dynamic("x:5=b"),))


def test_targets() -> None:
    assert parse_target("tensorrt==8.5").opset == 16  # no LayerNormalization in the 8.5 parser
    assert parse_target("tensorrt==8.6").opset == 17  # the 8.6 parser reads opset 17 at most
    assert parse_target("tensorrt==10.3.0").label == "tensorrt==10"
    assert parse_target("ort").opset == 18 and parse_target("tensorrt-rtx").opset == 18
    with pytest.raises(UnknownNameError, match="did you mean"):
        parse_target("tensorrtt")
