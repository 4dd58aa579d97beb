"""`enginekit sweep --ray-address`: a local Ray cluster on 127.0.0.1 (a head without CPUs and 2 worker nodes of one
CPU each) runs a small sweep over real models (digits, PaddleOCR cls/det) on ort/openvino; a worker killed mid-job
is retried and the sweep completes with exactly one result per job."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from enginekit.examples import digits
from enginekit.sweep import load_sweep, run_sweep

# everything on 127.0.0.1: without this, Ray resolves 127.0.0.1 to the host's routable IP (set before importing ray)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'enginekit[ray]')")
cluster_utils = pytest.importorskip("ray.cluster_utils", reason="this ray has no ray.cluster_utils")

FAST = {"warmup_s": 0, "warmup_iterations": 1, "duration_s": 0.01, "iterations": 3}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    c = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1",
                                                                    "include_dashboard": False})
    try:
        for _ in range(2):
            c.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        c.wait_for_nodes()
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()


def write_sweep(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")  # JSON is YAML
    return path


def results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


def test_a_sweep_runs_on_two_ray_workers_without_sharing_a_node(
        cluster: Any, tmp_path: Path, ocr_cls_model: Path, ocr_det_model: Path) -> None:
    spec = load_sweep(write_sweep(tmp_path / "s.yaml", {"timing": FAST, "atol": 0.05, "rtol": 0.05, "models": [
        {"name": "digits", "model": str(digits.onnx_path()), "dataset": str(digits.test_data_path()),
         "backends": ["ort", "ort:fp16", "openvino"]},
        {"name": "ocr-cls", "model": str(ocr_cls_model), "inputs": ["x:1x3x48x192"], "backends": ["ort", "openvino"]},
        {"name": "ocr-det", "model": str(ocr_det_model), "inputs": ["x:1x3x64x64"], "backends": ["openvino"]},
        {"name": "needs-gpu", "model": str(digits.onnx_path()), "inputs": ["x:1x1x8x8"],
         "resources": {"gpus": 1}},
    ]}))
    out = tmp_path / "out"
    result = run_sweep(spec, out, ray_address=cluster.address)
    assert result.mode == "ray" and len(result.results) == len(spec.jobs) == 6
    rows = {r["id"]: r for r in results(out)}
    assert sorted(rows) == sorted(j.id for j in spec.jobs)
    gpu = next(r for r in result.results if r["model"] == "needs-gpu")
    assert gpu["status"] == "error" and "no node of the Ray cluster" in gpu["reason"] and "GPU=1" in gpu["reason"]
    ran = [r for r in result.results if r["model"] != "needs-gpu"]
    assert all(r["status"] == "passed" for r in ran), [(r["id"], r["reason"]) for r in ran]
    nodes = {r["node_id"] for r in ran}
    assert len(nodes) == 2 and cluster.head_node.unique_id not in nodes  # both workers, never the CPU-less head
    for node in nodes:  # one CPU per node, one CPU per job: jobs on a node never overlap in time
        spans = sorted((r["started"], r["finished"]) for r in ran if r["node_id"] == node)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), spans
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["mode"] == "ray" and doc["counts"] == {"passed": 5, "failed": 0, "error": 1, "pending": 0}


def test_a_worker_killed_mid_job_is_retried_and_nothing_is_lost(cluster: Any, tmp_path: Path) -> None:
    slow = dict(FAST, duration_s=2.0)
    spec = load_sweep(write_sweep(tmp_path / "s.yaml", {"timing": FAST, "retries": 2, "models": [
        {"name": "slow", "model": str(digits.onnx_path()), "inputs": ["x:4x1x8x8"], "timing": slow},
        {"name": "digits", "model": str(digits.onnx_path()), "dataset": str(digits.test_data_path()),
         "backends": ["ort", "openvino"], "batch_sizes": [8, 64]},
    ]}))
    out = tmp_path / "out"
    victim = spec.jobs[0]
    attempts = out / "jobs" / victim.id / "attempts.jsonl"
    killed: list[int] = []

    def kill_first_attempt() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not attempts.is_file():
            time.sleep(0.05)
        if attempts.is_file():
            time.sleep(0.3)  # inside optimize's 2 s timing loop
            pid = json.loads(attempts.read_text().splitlines()[0])["pid"]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    killer = threading.Thread(target=kill_first_attempt)
    killer.start()
    try:
        result = run_sweep(spec, out, ray_address=cluster.address)
    finally:
        killer.join()
    assert killed, "the slow job never started"
    lines = results(out)
    assert sorted(r["id"] for r in lines) == sorted(j.id for j in spec.jobs)  # exactly one result per job
    assert all(r["status"] == "passed" for r in result.results), [(r["id"], r["reason"]) for r in result.results]
    tries = [json.loads(x) for x in attempts.read_text().splitlines()]
    assert len(tries) == 2 and tries[0]["pid"] == killed[0] != tries[1]["pid"]
    row = next(r for r in lines if r["id"] == victim.id)
    assert row["pid"] == tries[1]["pid"] and (Path(row["report_dir"]) / "report.json").is_file()


def test_ray_without_retries_makes_the_lost_job_an_error_row(cluster: Any, tmp_path: Path) -> None:
    spec = load_sweep(write_sweep(tmp_path / "s.yaml", {"models": [
        {"name": "slow", "model": str(digits.onnx_path()), "inputs": ["x:4x1x8x8"],
         "timing": dict(FAST, duration_s=2.0)}]}))
    out = tmp_path / "out"
    attempts = out / "jobs" / spec.jobs[0].id / "attempts.jsonl"

    def kill() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not attempts.is_file():
            time.sleep(0.05)
        time.sleep(0.3)
        os.kill(json.loads(attempts.read_text().splitlines()[0])["pid"], signal.SIGKILL)

    killer = threading.Thread(target=kill)
    killer.start()
    try:
        result = run_sweep(spec, out, ray_address=cluster.address, retries=0)
    finally:
        killer.join()
    (row,) = results(out)
    assert row["status"] == "error" and "after 0 retries" in row["reason"] and result.exit_code == 1
