"""Post-processing hooks (FILE.py:FUNCTION) and label-free .npz datasets."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from enginekit.errors import FeedError, InvalidArgumentError
from enginekit.eval.datasets import Dataset, load_dataset, take
from enginekit.eval.hooks import load_postprocess, run_postprocess
from enginekit.tensors import TensorSpec

HOOK = '''
import numpy as np
from helper import THRESHOLD  # a neighbour of the hook file

def masks(outputs):
    return (outputs["probs"][:, 0] > THRESHOLD).astype(np.int64)

def texts(outputs):
    return ["".join("ab"[i % 2] for i in row) for row in outputs["probs"].argmax(-1)]

def wrong_count(outputs):
    return [1]

def broken(outputs):
    raise KeyError("logits")

NOT_A_FUNCTION = 3
'''


@pytest.fixture
def hook_file(tmp_path: Path) -> Path:
    (tmp_path / "helper.py").write_text("THRESHOLD = 0.3\n")
    path = tmp_path / "post.py"
    path.write_text(HOOK)
    return path


def test_hook_maps_each_batch_and_joins_them(hook_file: Path) -> None:
    fn = load_postprocess(f"{hook_file}:masks")
    assert str(hook_file.parent) not in sys.path  # the file's folder is on sys.path only while importing
    probs = np.random.default_rng(0).random((5, 1, 4, 4)).astype(np.float32)
    batches = [{"probs": probs[i:i + 2]} for i in range(0, 5, 2)]
    masks = run_postprocess(fn, batches, name="post.py:masks")
    assert isinstance(masks, np.ndarray) and np.array_equal(masks, (probs[:, 0] > 0.3).astype(np.int64))
    texts = run_postprocess(load_postprocess(f"{hook_file}:texts"), [{"probs": np.eye(2)[[[0, 1], [1, 1]]]}])
    assert texts == ["ab", "bb"]


def test_hook_errors_name_the_hook(hook_file: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="has no function 'nope'"):
        load_postprocess(f"{hook_file}:nope")
    with pytest.raises(InvalidArgumentError, match="found int"):
        load_postprocess(f"{hook_file}:NOT_A_FUNCTION")
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        load_postprocess(f"{tmp_path / 'missing.py'}:f")
    with pytest.raises(InvalidArgumentError, match="expected FILE.py:FUNCTION"):
        load_postprocess(str(hook_file))
    with pytest.raises(FeedError, match="returned 1 predictions for batch 0 of 2 samples"):
        run_postprocess(load_postprocess(f"{hook_file}:wrong_count"), [{"probs": np.zeros((2, 3))}])
    with pytest.raises(FeedError, match="failed on batch 0: KeyError"):
        run_postprocess(load_postprocess(f"{hook_file}:broken"), [{"probs": np.zeros((2, 3))}])
    exits = tmp_path / "exits.py"
    exits.write_text("import sys\nsys.exit(3)\n")
    with pytest.raises(InvalidArgumentError, match="exited the program"):
        load_postprocess(f"{exits}:f")
    assert load_postprocess("numpy:asarray") is np.asarray  # package.module:FUNCTION


def test_label_free_npz(tmp_path: Path) -> None:
    path = tmp_path / "feeds.npz"
    np.savez(path, x=np.zeros((4, 3), np.float32))
    specs = [TensorSpec("x", (None, 3), "float32")]
    with pytest.raises(FeedError, match="no 'labels' array"):  # unchanged default
        load_dataset(path, specs)
    ds = load_dataset(path, specs, require_labels=False)
    assert ds.targets is None and not ds.has_labels and len(ds) == 4
    with pytest.raises(FeedError, match="has no labels"):
        _ = ds.labels
    assert len(take(ds, 2)) == 2 and take(ds, 2).targets is None
    labelled = tmp_path / "labelled.npz"
    np.savez(labelled, x=np.zeros((4, 3), np.float32), labels=np.arange(4))
    with_labels = load_dataset(labelled, specs, require_labels=False)
    assert with_labels.has_labels and with_labels.labels.tolist() == [0, 1, 2, 3]
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 3), np.float32), y=np.zeros((3, 3), np.float32))
    two = [*specs, TensorSpec("y", (None, 3), "float32")]
    with pytest.raises(FeedError, match="same number of samples"):
        load_dataset(bad, two, require_labels=False)
    assert len(Dataset({"x": np.zeros((2, 1))}, np.arange(2), "mem")) == 2  # positional form unchanged
