"""`--plot FILE.png`: median latency and throughput against batch size, one line per candidate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from enginekit.bench.result import BenchResult
from enginekit.errors import InvalidArgumentError, MissingDependencyError
from enginekit.status import Status

PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def check_plot_target(path: Path) -> None:
    """Refuse a bad --plot target, or a missing matplotlib, before any benchmark runs."""
    from enginekit.deps import is_installed

    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise InvalidArgumentError(f"--plot {str(path)!r}: give a {', '.join(PLOT_SUFFIXES)} file name.")
    if path.is_dir():
        raise InvalidArgumentError(f"--plot {str(path)!r} is a folder; give a file name such as bench.png.")
    if not is_installed("matplotlib"):
        raise MissingDependencyError("matplotlib", extra="plot", purpose="--plot")


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingDependencyError("matplotlib", extra="plot", purpose="--plot") from exc
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_result(result: BenchResult, path: Path) -> Path:
    """Two panels (median latency ms, items/s) over batch size; points that did not run are left out.

    When several points share a batch size (a --shapes sweep), the x axis lists the points instead.
    """
    check_plot_target(path)
    plt = _pyplot()
    points = list(dict.fromkeys(r.point for r in result.rows))
    batch_of = {r.point: r.batch for r in result.rows if r.batch is not None}
    by_batch = len(batch_of) == len(points) and len(set(batch_of.values())) == len(points)
    xs = {p: float(batch_of[p]) if by_batch else float(i) for i, p in enumerate(points)}
    fig, (ax_lat, ax_tput) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for label in dict.fromkeys(r.label for r in result.rows):
        rows = [r for r in result.rows if r.label == label and r.status == Status.OK and r.timing is not None]
        if not rows:
            continue
        x = [xs[r.point] for r in rows]
        ax_lat.plot(x, [r.median_ms for r in rows], marker="o", label=label)
        ax_tput.plot(x, [r.items_per_s for r in rows], marker="o", label=label)
    for ax, title in ((ax_lat, "median latency (ms)"), (ax_tput, "throughput (items/s)")):
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        if by_batch:
            ax.set_xlabel("batch size")
            if len(points) > 1 and min(xs.values()) > 0:
                ax.set_xscale("log", base=2)
            ax.set_xticks(sorted(xs.values()), [str(int(v)) for v in sorted(xs.values())])
        else:
            ax.set_xticks(list(xs.values()), points, rotation=20, ha="right", fontsize=7)
    ax_lat.legend()
    fig.suptitle(f"enginekit bench: {Path(result.model).name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
