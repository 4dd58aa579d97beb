"""Train the bundled digits CNN and write its artifacts (state dict, ONNX, test split, metadata).

Usage:  python examples/digits/train.py [--out-dir DIR] [--epochs N] [--seed S]

Deterministic on CPU: fixed seeds, deterministic algorithms, one thread. Running it twice with
the same arguments writes byte-identical files. The test split is fixed (random_state=0);
--seed only changes weight initialisation and minibatch order.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import platform
import random
import shlex
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import sklearn
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from enginekit.examples import digits

BATCH_SIZE = 64
LEARNING_RATE = 3e-3
SPLIT = {"test_size": 0.2, "random_state": 0, "stratify": True}
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed timestamp so the .npz bytes are reproducible


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=digits.package_dir(), help="where to write the artifacts")
    parser.add_argument("--epochs", type=int, default=100, help="training epochs (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed for init and minibatch order (default 0)")
    return parser.parse_args(argv)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


Images = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]


def load_split() -> tuple[Images, Images, Labels, Labels]:
    data = load_digits()
    x = (data.images.astype(np.float32) / np.float32(16.0))[:, None, :, :]
    y = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=SPLIT["test_size"], random_state=SPLIT["random_state"], stratify=y
    )
    return (
        np.ascontiguousarray(x_train, dtype=np.float32),
        np.ascontiguousarray(x_test, dtype=np.float32),
        np.ascontiguousarray(y_train, dtype=np.int64),
        np.ascontiguousarray(y_test, dtype=np.int64),
    )


def random_shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to one pixel in each direction (zero fill): cheap augmentation."""
    size = x.shape[-1]
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    offsets = torch.randint(0, 3, (x.shape[0], 2), generator=generator)
    out = torch.empty_like(x)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy : dy + size, dx : dx + size]
    return out


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    steps_per_epoch = -(-x.shape[0] // BATCH_SIZE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    loss_fn = torch.nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(x.shape[0], generator=order)
        total = 0.0
        for start in range(0, x.shape[0], BATCH_SIZE):
            idx = perm[start : start + BATCH_SIZE]
            optimizer.zero_grad()
            loss = loss_fn(model(random_shift(x[idx], order)), y[idx])
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * idx.numel()
        if epoch == 0 or (epoch + 1) % 20 == 0 or epoch + 1 == epochs:
            print(f"epoch {epoch + 1:3d}/{epochs}  train loss {total / x.shape[0]:.4f}")
    model.eval()


@torch.no_grad()
def predict(model: torch.nn.Module, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.asarray(model(torch.from_numpy(x)).numpy(), dtype=np.float32)


def export_onnx(model: torch.nn.Module, path: Path) -> str:
    """Export with the TorchScript exporter (the dynamo exporter needs onnxscript); return its name."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # legacy exporter: deprecated, still works
        torch.onnx.export(
            model,
            (torch.zeros(2, 1, digits.IMAGE_SIZE, digits.IMAGE_SIZE),),
            str(path),
            dynamo=False,
            opset_version=digits.OPSET,
            input_names=[digits.INPUT_NAME],
            output_names=[digits.OUTPUT_NAME],
            dynamic_axes={digits.INPUT_NAME: {0: digits.BATCH_DIM}, digits.OUTPUT_NAME: {0: digits.BATCH_DIM}},
            do_constant_folding=True,
        )
    return "torchscript (torch.onnx.export dynamo=False)"


def dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in value_info.type.tensor_type.shape.dim]


def verify_onnx(model: torch.nn.Module, path: Path, x_test: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Check the exported file and compare onnxruntime with torch; return ORT logits on x_test."""
    proto = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(proto, full_check=True)
    external = [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise SystemExit(f"ONNX file has external data: {external}")
    opsets = {o.domain: o.version for o in proto.opset_import}
    if opsets.get("", opsets.get("ai.onnx")) != digits.OPSET:
        raise SystemExit(f"unexpected opset {opsets}")
    io_dims = {v.name: dims(v) for v in [*proto.graph.input, *proto.graph.output]}
    expected = {
        digits.INPUT_NAME: [digits.BATCH_DIM, 1, digits.IMAGE_SIZE, digits.IMAGE_SIZE],
        digits.OUTPUT_NAME: [digits.BATCH_DIM, digits.NUM_CLASSES],
    }
    if io_dims != expected:
        raise SystemExit(f"unexpected ONNX inputs/outputs {io_dims}, expected {expected}")

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for batch in (1, 37):
        feed = x_test[:batch]
        got = session.run([digits.OUTPUT_NAME], {digits.INPUT_NAME: feed})[0]
        want = predict(model, feed)
        if got.shape != (batch, digits.NUM_CLASSES) or not np.allclose(got, want, atol=1e-5, rtol=0):
            err = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("nan")
            raise SystemExit(f"onnxruntime differs from torch at batch {batch}: shape {got.shape}, max abs err {err}")
    return np.asarray(session.run([digits.OUTPUT_NAME], {digits.INPUT_NAME: x_test})[0], dtype=np.float32)


def save_npz(path: Path, arrays: dict[str, npt.NDArray[Any]]) -> None:
    """Like np.savez_compressed, but with fixed zip timestamps so the bytes are reproducible."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reproduce_command(args: argparse.Namespace) -> str:
    parts = ["python", "examples/digits/train.py"]
    if args.out_dir.resolve() != digits.package_dir():
        parts += ["--out-dir", str(args.out_dir)]
    parts += ["--epochs", str(args.epochs), "--seed", str(args.seed)]
    return shlex.join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed_everything(args.seed)
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    x_train, x_test, y_train, y_test = load_split()
    print(f"train {len(y_train)} / test {len(y_test)} samples, {args.epochs} epochs, seed {args.seed}")

    model = digits.build_model()
    train(model, torch.from_numpy(x_train), torch.from_numpy(y_train), args.epochs, args.seed)
    test_correct = int((predict(model, x_test).argmax(axis=1) == y_test).sum())
    test_accuracy = test_correct / len(y_test)
    print(f"test accuracy (torch): {test_accuracy:.4f} ({test_correct}/{len(y_test)})")

    pt_path = out_dir / digits.STATE_DICT_FILE
    onnx_file = out_dir / digits.ONNX_FILE
    npz_path = out_dir / digits.TEST_DATA_FILE
    torch.save(model.state_dict(), pt_path)
    exporter = export_onnx(model, onnx_file)
    ort_logits = verify_onnx(model, onnx_file, x_test)
    ort_correct = int((ort_logits.argmax(axis=1) == y_test).sum())
    print(f"test accuracy (onnxruntime): {ort_correct / len(y_test):.4f} ({ort_correct}/{len(y_test)})")
    save_npz(npz_path, {"x": x_test, "labels": y_test})

    proto = onnx.load(str(onnx_file), load_external_data=False)
    metadata: dict[str, Any] = {
        "model": "digits_cnn",
        "architecture": "enginekit.examples.digits.build_model",
        "dataset": {"source": "sklearn.datasets.load_digits", "scaling": "pixels / 16 -> [0, 1]", "split": SPLIT},
        "train_size": len(y_train),
        "test_size": len(y_test),
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": BATCH_SIZE,
        "optimizer": {"name": "Adam", "lr": LEARNING_RATE, "schedule": "cosine annealing per step to 0"},
        "augmentation": "random shift by up to 1 pixel in x and y (zero fill)",
        "loss": "CrossEntropyLoss",
        "deterministic": {"use_deterministic_algorithms": True, "num_threads": 1, "device": "cpu"},
        "test_accuracy": test_accuracy,
        "test_correct": test_correct,
        "onnxruntime_test_accuracy": ort_correct / len(y_test),
        "onnx": {
            "opset": digits.OPSET,
            "ir_version": proto.ir_version,
            "exporter": exporter,
            "input": {"name": digits.INPUT_NAME, "shape": [digits.BATCH_DIM, 1, 8, 8], "dtype": "float32"},
            "output": {"name": digits.OUTPUT_NAME, "shape": [digits.BATCH_DIM, digits.NUM_CLASSES], "dtype": "float32"},
        },
        "class_names": list(digits.CLASS_NAMES),
        "sha256": {p.name: sha256(p) for p in (pt_path, onnx_file, npz_path)},
        "versions": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
            "scikit-learn": sklearn.__version__,
            "python": platform.python_version(),
        },
        "command": reproduce_command(args),
    }
    meta_path = out_dir / digits.METADATA_FILE
    meta_path.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    for path in (pt_path, onnx_file, npz_path, meta_path):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
