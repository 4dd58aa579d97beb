"""A real Triton Inference Server serves the repositories `enginekit triton` writes.

The server is the ``tritonserver`` binary of the nvidia-pytriton wheel (a test dependency), started the way
pytriton starts it: its bundled libraries on LD_LIBRARY_PATH, the python backend stub built for this Python
minor version copied beside the backend library, and this interpreter's bin folder first on PATH, so the stub's
embedded Python finds this virtual environment (numpy, onnxruntime). Nothing is downloaded. The answers over HTTP
(tritonclient) are compared with onnxruntime run directly on the same feed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from enginekit.compare import CompareSettings, Tolerances, compare_outputs
from enginekit.deploy.triton import TritonSettings, write_triton_repository

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] (test dependency) is not installed")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class TritonDist:
    server: Path
    libs: Path
    python_backend: Path
    stub: Path


def _dist() -> TritonDist:
    spec = importlib.util.find_spec("pytriton")  # found, not imported: pytriton itself wants numpy < 2
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("nvidia-pytriton (test dependency, ships the tritonserver binary) is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    dist = TritonDist(root / "tritonserver" / "bin" / "tritonserver", root.parent / "nvidia_pytriton.libs",
                      root / "tritonserver" / "backends" / "python",
                      root / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub")
    for path in (dist.server, dist.libs, dist.python_backend, dist.stub):
        if not path.exists():
            pytest.skip(f"nvidia-pytriton has no {path} (no tritonserver or python backend stub for Python {version})")
    return dist


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_tail(self, lines: int = 25) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _start(dist: TritonDist, repo: Path, work: Path) -> Server:
    backends = work / "backends" / "python"
    backends.mkdir(parents=True)
    for item in dist.python_backend.iterdir():
        if item.is_file():
            shutil.copy2(item, backends / item.name)
    shutil.copy2(dist.stub, backends / "triton_python_backend_stub")
    http, grpc, metrics = _free_ports(3)
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(p for p in (env.get("LD_LIBRARY_PATH"), str(dist.libs)) if p)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    args = [str(dist.server), f"--model-repository={repo}", f"--backend-directory={work / 'backends'}",
            "--http-address=127.0.0.1", f"--http-port={http}", "--grpc-address=127.0.0.1", f"--grpc-port={grpc}",
            f"--metrics-port={metrics}", "--allow-metrics=false", "--exit-on-error=false", "--exit-timeout-secs=5",
            f"--backend-config=python,shm-region-prefix-name=enginekit{os.getpid()}x{http}"]
    log = work / "tritonserver.log"
    with log.open("wb") as fh:
        process = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=work)
    return Server(process, f"127.0.0.1:{http}", log)


@pytest.fixture
def triton_server(tmp_path: Path, ocr_cls_model: Path, ocr_det_model: Path) -> Iterator[tuple[Server, Path]]:
    """Two python-backend models of real PaddleOCR networks: the classifier batched, the detector unbatched."""
    dist = _dist()
    repo = tmp_path / "repo"
    write_triton_repository(ocr_cls_model, repo, TritonSettings(name="cls", backend="python", max_batch_size=4))
    write_triton_repository(ocr_det_model, repo, TritonSettings(name="det", backend="python", max_batch_size=0))
    server = _start(dist, repo, tmp_path)
    try:
        client = httpclient.InferenceServerClient(server.url)
        deadline = time.monotonic() + 120
        while True:
            if server.process.poll() is not None:
                pytest.skip(f"tritonserver exited ({server.process.returncode}) before serving: {server.log_tail()}")
            try:
                if client.is_server_live():
                    break
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            if time.monotonic() > deadline:
                pytest.skip(f"tritonserver did not start within 120 s: {server.log_tail()}")
            time.sleep(0.5)
        while not (client.is_model_ready("cls") and client.is_model_ready("det")):
            assert server.process.poll() is None, server.log_tail()
            loading = any(m.get("state") in (None, "", "LOADING") for m in client.get_model_repository_index())
            assert loading and time.monotonic() < deadline, f"a model failed to load:\n{server.log_tail(60)}"
            time.sleep(0.5)
        yield server, repo
    finally:
        server.process.terminate()
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def _infer(server: Server, model: str, feed: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
    client = httpclient.InferenceServerClient(server.url)
    inputs = []
    for name, array in feed.items():
        item = httpclient.InferInput(name, list(array.shape), "FP32")
        item.set_data_from_numpy(array, binary_data=True)
        inputs.append(item)
    result = client.infer(model, inputs, outputs=[httpclient.InferRequestedOutput(n, binary_data=True)
                                                  for n in outputs])
    return {n: result.as_numpy(n) for n in outputs}


def _reference(model: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed), strict=True))


def test_python_backend_serves_real_models(triton_server: tuple[Server, Path], ocr_cls_model: Path,
                                           ocr_det_model: Path, text_image) -> None:  # type: ignore[no-untyped-def]
    server, repo = triton_server
    settings = CompareSettings(atol=Tolerances(1e-5), rtol=Tolerances(1e-5))
    # the classifier: a batch of 3 crops of a real page of text, the batch axis through Triton's batcher
    crops = [text_image(48, 192)["x"], text_image(48, 192)["x"][..., ::-1].copy(), text_image(48, 192)["x"] * 0.5]
    cls_feed = {"x": np.concatenate(crops).astype(np.float32)}
    want = _reference(ocr_cls_model, cls_feed)
    got = _infer(server, "cls", cls_feed, list(want))
    result = compare_outputs(want, got, settings)
    assert result.passed, result
    assert got["save_infer_model/scale_0.tmp_1"].shape == (3, 2)
    assert not np.allclose(got["save_infer_model/scale_0.tmp_1"][0], got["save_infer_model/scale_0.tmp_1"][1])
    # the detector: the full page, unbatched (max_batch_size 0: the request carries the whole shape)
    det_feed = text_image(160, 384)
    want = _reference(ocr_det_model, det_feed)
    got = _infer(server, "det", det_feed, list(want))
    result = compare_outputs(want, got, settings)
    assert result.passed, result
    assert float((got["sigmoid_0.tmp_0"] > 0.3).mean()) > 0.05  # text found: a real answer, not zeros
    # a request of the wrong rank is an error answer (Triton checks it against the config), and serving goes on
    with pytest.raises(InferenceServerException, match=r"(?i)shape|dims"):
        _infer(server, "cls", {"x": np.zeros((1, 3, 48), np.float32)}, ["save_infer_model/scale_0.tmp_1"])
    want = _reference(ocr_cls_model, cls_feed)
    assert compare_outputs(want, _infer(server, "cls", cls_feed, list(want)), settings).passed
    assert (repo / "cls" / "1" / "model.py").is_file()
