"""What `optimize --dataset` spends on task metrics per candidate: the metrics (library values and per-sample rows)
and the paired bootstrap of every metric against the reference (1000 resamples, as optimize runs it), on
synthetic data of realistic sizes. Prints a table; no model runs.

    python benchmarks/task_metrics_cost.py [--resamples 1000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from enginekit.eval.bootstrap import SampleMetric, paired_bootstrap_ci

Metrics = dict[str, SampleMetric]
Built = Callable[[], tuple[Metrics, Metrics]]  # the data is made; calling it computes both sides' metrics


def _classification(rng: np.random.Generator) -> Built:
    from enginekit.eval.classification import classification_sample_metrics

    labels = rng.integers(0, 1000, 50_000)
    ref = rng.normal(size=(50_000, 1000)).astype(np.float32)
    ref[np.arange(50_000), labels] += 3.0
    cand = ref + rng.normal(0, 0.05, ref.shape).astype(np.float32)
    return lambda: (classification_sample_metrics(cand, labels), classification_sample_metrics(ref, labels))


def _segmentation(rng: np.random.Generator) -> Built:
    from enginekit.eval.segmentation import segmentation_sample_metrics

    target = rng.integers(0, 19, (100, 256, 256))
    ref = np.where(rng.uniform(size=target.shape) < 0.9, target, rng.integers(0, 19, target.shape))
    cand = np.where(rng.uniform(size=target.shape) < 0.995, ref, rng.integers(0, 19, target.shape))
    return lambda: (segmentation_sample_metrics(cand, target, num_classes=19),
                    segmentation_sample_metrics(ref, target, num_classes=19))


def _detection(rng: np.random.Generator) -> Built:
    from enginekit.eval.detection import detection_sample_metrics

    gt: dict[str, Any] = {"images": [{"id": i} for i in range(1000)], "categories": [{"id": c} for c in range(80)],
                          "annotations": []}
    ref, cand = [], []
    for i in range(1000):
        for _ in range(int(rng.integers(1, 8))):
            c, (x, y), (w, h) = int(rng.integers(0, 80)), rng.uniform(0, 500, 2), rng.uniform(10, 100, 2)
            gt["annotations"].append({"image_id": i, "category_id": c, "bbox": [x, y, w, h]})
            score = float(rng.uniform())
            ref.append((i, [x + rng.normal(0, 3), y + rng.normal(0, 3), w, h], score, c))
            cand.append((i, [x + rng.normal(0, 3.5), y + rng.normal(0, 3.5), w, h], score, c))
    return lambda: (detection_sample_metrics(cand, gt), detection_sample_metrics(ref, gt))


def _ctc(rng: np.random.Generator) -> Built:
    from enginekit.eval.ctc import ctc_sample_metrics

    ref = rng.normal(size=(2000, 40, 97)).astype(np.float32)
    cand = ref + rng.normal(0, 0.3, ref.shape).astype(np.float32)
    return lambda: (ctc_sample_metrics(cand, ref), ctc_sample_metrics(ref, ref))


CASES: dict[str, tuple[str, Callable[[np.random.Generator], Built]]] = {
    "classification": ("50,000 samples, 1000 classes", _classification),
    "segmentation": ("100 label maps 256x256, 19 classes", _segmentation),
    "detection": ("1000 images, 80 categories, ~4000 boxes", _detection),
    "ctc": ("2000 sequences of 40 frames, 97 classes", _ctc),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    print(f"| task | data | metrics, both sides s | bootstrap of all metrics ({args.resamples} resamples) s |")
    print("|---|---|---|---|")
    for task, (data, build) in CASES.items():
        compute = build(np.random.default_rng(0))
        t0 = time.perf_counter()
        cand, ref = compute()
        t1 = time.perf_counter()
        for name, m in cand.items():
            paired_bootstrap_ci(m.per_sample, ref[name].per_sample, m.fn, n=args.resamples, seed=0)
        t2 = time.perf_counter()
        print(f"| {task} ({', '.join(cand)}) | {data} | {t1 - t0:.2f} | {t2 - t1:.2f} |", flush=True)


if __name__ == "__main__":
    main()
