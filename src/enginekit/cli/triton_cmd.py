"""`enginekit triton PACKAGE_OR_MODEL REPO_DIR`: a Triton Inference Server model repository for an engine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from enginekit.cli import common
from enginekit.cli.common import JsonOpt

HELP = ("Write a Triton Inference Server model repository: REPO_DIR/NAME/config.pbtxt and REPO_DIR/NAME/1/model.*. "
        "ONNX → onnxruntime_onnx (or --backend openvino / python), a TensorRT plan built by enginekit → "
        "tensorrt_plan with its optimization profiles, TorchScript (with --io-model) → pytorch_libtorch, a package → "
        "the engine of --objective; engines Triton has no backend for are served by its python backend running "
        "the ONNX model with onnxruntime (CPU).")


def triton(
    model: Annotated[Path, typer.Argument(metavar="PACKAGE_OR_MODEL", help="A package folder (enginekit package / "
                     "optimize --package), an ONNX model, a TensorRT plan with its .json manifest, or TorchScript.")],
    repo_dir: Annotated[Path, typer.Argument(metavar="REPO_DIR", help="The model repository folder (made when "
                        "missing); the model goes into REPO_DIR/NAME.")],
    name: Annotated[str | None, typer.Option("--name", help="Model name and folder (default: the package's name or "
                    "the file's stem).", show_default=False)] = None,
    max_batch_size: Annotated[int | None, typer.Option("--max-batch-size", help="Triton's max_batch_size (default 8 "
                              "when dim 0 of every input and output is symbolic, kept within a plan's profiles; "
                              "else 0). 0: no batching, dims are the full shapes.", show_default=False)] = None,
    dynamic_batching: Annotated[bool | None, typer.Option("--dynamic-batching/--no-dynamic-batching",
                                help="Triton's dynamic batcher (default: on when max_batch_size > 0).",
                                show_default=False)] = None,
    preferred_batch_size: Annotated[list[int] | None, typer.Option("--preferred-batch-size", help="Dynamic "
                                    "batching: a preferred batch size. Repeatable.", show_default=False)] = None,
    max_queue_delay_us: Annotated[int | None, typer.Option("--max-queue-delay-us", help="Dynamic batching: how long "
                                  "a request may wait for others, in microseconds.", show_default=False)] = None,
    instances: Annotated[int, typer.Option("--instances", help="Model instances (instance_group count).")] = 1,
    kind: Annotated[str | None, typer.Option("--kind", help="cpu or gpu (instance_group kind; default: gpu for "
                    "TensorRT plans, else cpu).", show_default=False)] = None,
    objective: Annotated[str | None, typer.Option("--objective", help="A package's engine: min_latency (default) "
                         "or max_throughput.", show_default=False)] = None,
    backend: Annotated[str, typer.Option("--backend", help="auto, onnxruntime, openvino, or python (Triton's python "
                       "backend running the ONNX model with onnxruntime on the CPU).")] = "auto",
    io_model: Annotated[Path | None, typer.Option("--io-model", help="TorchScript: the ONNX export of the same model, "
                        "for the input/output names, dtypes and shapes TorchScript does not record.",
                        show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace REPO_DIR/NAME when it exists and is not "
                     "empty.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a Triton Inference Server model repository for a model, an engine or a package."""
    from rich.markup import escape

    from enginekit.deploy.triton import TritonSettings, write_triton_repository

    settings = TritonSettings(
        name=name, max_batch_size=max_batch_size, dynamic_batching=dynamic_batching,
        preferred_batch_sizes=tuple(preferred_batch_size or ()), max_queue_delay_us=max_queue_delay_us,
        instances=instances, kind=kind, objective=objective, backend=backend, io_model=io_model, force=force,
    )
    result = write_triton_repository(model, repo_dir, settings)
    if as_json:
        common.print_json(result.to_dict())
        return
    common.out.print(f"Triton model [bold]{escape(result.name)}[/] ({escape(result.serving)}, max_batch_size "
                     f"{result.max_batch_size}) written to {escape(str(result.model_dir))}")
    for path in result.files:
        common.out.print(f"  {escape(str(path.relative_to(result.model_dir)))}")
    for note in result.notes:
        common.out.print(f"[yellow]note[/]: {escape(note)}")
    common.out.print(f"Serve: tritonserver --model-repository {escape(str(Path(repo_dir).resolve()))}")
