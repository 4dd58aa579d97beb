"""Reading Polygraphy's JSON (`polygraphy run --save-inputs/--save-outputs`) with `load_arrays`, never unpickling.

Files are written with the real Polygraphy package (a test dependency); enginekit reads them without it.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from enginekit.data import load_arrays
from enginekit.errors import FeedError, UserError

pytest.importorskip("polygraphy")


def _run_results(path: Path, runners: dict[str, list[dict[str, np.ndarray]]]) -> Path:
    from polygraphy.comparator import IterationResult, RunResults

    RunResults([(name, [IterationResult(outputs=dict(o), runner_name=name) for o in iterations])
                for name, iterations in runners.items()]).save(str(path))
    return path


def _feeds(path: Path, feeds: list[dict[str, np.ndarray]]) -> Path:
    from polygraphy.json import save_json

    save_json(feeds, str(path))
    return path


def test_feeds_saved_by_polygraphy(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    ids = np.arange(6, dtype=np.int64).reshape(1, 6)
    loaded = load_arrays(_feeds(tmp_path / "in.json", [{"x": x, "ids": ids}]))
    assert list(loaded) == ["x", "ids"]
    np.testing.assert_array_equal(loaded["x"], x)
    assert loaded["x"].dtype == np.float32 and loaded["ids"].dtype == np.int64
    np.testing.assert_array_equal(loaded["ids"], ids)


def test_several_feeds_take_the_first_and_say_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    feeds = [{"x": np.full((2,), i, np.float32)} for i in range(3)]
    path = _feeds(tmp_path / "in.json", feeds)
    with caplog.at_level(logging.WARNING, logger="enginekit.polygraphy_json"):
        first = load_arrays(path)
    np.testing.assert_array_equal(first["x"], feeds[0]["x"])
    assert "3 Polygraphy feeds" in caplog.text and "iteration 0" in caplog.text
    np.testing.assert_array_equal(load_arrays(path, iteration=2)["x"], feeds[2]["x"])
    with pytest.raises(FeedError, match="iteration 3 does not exist; it holds 3 feeds"):
        load_arrays(path, iteration=3)


def test_outputs_of_one_runner(tmp_path: Path) -> None:
    y = np.linspace(0, 1, 8, dtype=np.float32).reshape(2, 4)
    path = _run_results(tmp_path / "out.json", {"onnxrt-runner-N0-01/01/26-10:00:00": [{"out/0:1": y}]})
    loaded = load_arrays(path)
    assert list(loaded) == ["out/0:1"]
    np.testing.assert_array_equal(loaded["out/0:1"], y)


def test_outputs_of_several_runners_need_a_choice(tmp_path: Path) -> None:
    a, b = np.zeros(3, np.float32), np.ones(3, np.float32)
    path = _run_results(tmp_path / "out.json", {
        "onnxrt-runner-N0": [{"y": a}], "trt-runner-N0": [{"y": b}], "trt-runner-N1": [{"y": b + 1}]})
    with pytest.raises(FeedError, match="results of 3 Polygraphy runners: 'onnxrt-runner-N0', 'trt-runner-N0', "
                       "'trt-runner-N1'; choose one with --candidate-runner") as info:
        load_arrays(path, runner_flag="--candidate-runner")
    assert isinstance(info.value, UserError)
    np.testing.assert_array_equal(load_arrays(path, runner="onnxrt")["y"], a)  # a unique part of the name
    np.testing.assert_array_equal(load_arrays(path, runner="trt-runner-N1")["y"], b + 1)  # the exact name
    with pytest.raises(FeedError, match="'trt' matches several"):
        load_arrays(path, runner="trt")
    with pytest.raises(FeedError, match="'tf' matches none"):
        load_arrays(path, runner="tf")


def test_outputs_iterations(tmp_path: Path) -> None:
    path = _run_results(tmp_path / "out.json", {"r": [{"y": np.full(2, i, np.float32)} for i in range(2)]})
    assert load_arrays(path)["y"][0] == 0
    assert load_arrays(path, iteration=1)["y"][0] == 1
    with pytest.raises(FeedError, match="iteration 5 does not exist; it holds 2 iterations"):
        load_arrays(path, iteration=5)


def test_a_dict_of_polygraphy_arrays_and_enginekit_json_still_work(tmp_path: Path) -> None:
    from polygraphy.json import save_json

    x = np.arange(4, dtype=np.float16)
    save_json({"x": x}, str(tmp_path / "one.json"))
    loaded = load_arrays(tmp_path / "one.json")
    assert loaded["x"].dtype == np.float16
    np.testing.assert_array_equal(loaded["x"], x)
    (tmp_path / "plain.json").write_text(json.dumps({"x": [[1, 2]], "y": {"data": [1], "dtype": "int64"}}))
    plain = load_arrays(tmp_path / "plain.json")
    assert plain["x"].dtype == np.int64 and plain["y"].dtype == np.int64


def _encoded(raw: bytes) -> dict[str, str]:
    return {"array": base64.b64encode(raw).decode(), "polygraphy_class": "ndarray"}


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


def test_pickled_object_arrays_are_refused_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    np.save(buf, np.array([_Exploit(marker)], dtype=object), allow_pickle=True)
    for name, doc in (
        ("feeds.json", [{"x": _encoded(buf.getvalue())}]),
        ("outputs.json", {"lst": [["r", [{"outputs": {"y": {"values": _encoded(buf.getvalue()),
                                                            "polygraphy_class": "LazyArray"}},
                                         "runtime": 0.1, "runner_name": "r", "polygraphy_class": "IterationResult"}]]],
                          "polygraphy_class": "RunResults"}),
    ):
        (tmp_path / name).write_text(json.dumps(doc))
        with pytest.raises(FeedError, match="never unpickles") as info:
            load_arrays(tmp_path / name)
        assert isinstance(info.value, UserError) and name in str(info.value)
    assert not marker.exists()


def test_legacy_encodings(tmp_path: Path) -> None:
    """Older Polygraphy: the legacy type marker, an .npz archive inside, latin-1 text instead of base64."""
    y = np.arange(3, dtype=np.float32)
    npz = io.BytesIO()
    np.savez(npz, y)
    npy = io.BytesIO()
    np.save(npy, y, allow_pickle=False)
    legacy = {"__polygraphy_encoded_ndarray": "polygraphy_serialized_json_type"}
    feeds = [{"a": {"array": base64.b64encode(npz.getvalue()).decode(), **legacy},
              "b": {"array": npy.getvalue().decode("latin-1"), **legacy}}]
    (tmp_path / "old.json").write_text(json.dumps(feeds))
    loaded = load_arrays(tmp_path / "old.json")
    np.testing.assert_array_equal(loaded["a"], y)
    np.testing.assert_array_equal(loaded["b"], y)


@pytest.mark.parametrize(("doc", "match"), [
    ({"x": {"tensor": "AAAA", "polygraphy_class": "Tensor"}}, "torch.Tensor saved by Polygraphy"),
    ({"lst": [], "polygraphy_class": "AccuracyResults"}, "is a Polygraphy AccuracyResults, not inputs or outputs"),
    ({"lst": [], "polygraphy_class": "RunResults"}, "hold no runner"),
    ({"lst": [["r", []]], "polygraphy_class": "RunResults"}, "runner 'r'.*holds no iterations"),
    ({"x": {"polygraphy_class": "ndarray"}}, "without its 'array' text"),
])
def test_unusable_polygraphy_files_are_user_errors(tmp_path: Path, doc: object, match: str) -> None:
    (tmp_path / "f.json").write_text(json.dumps(doc))
    with pytest.raises(FeedError, match=match) as info:
        load_arrays(tmp_path / "f.json")
    assert isinstance(info.value, UserError)
