"""ONNX-mutation fuzzer: mutated model files must give exit 0/1/2/3, never 4, a traceback, a crash or a hang.

Not a pytest module (its name does not start with ``test_``) and not part of ``make test``: it is time-boxed and
run by hand, e.g. ``nice -n 10 .venv/bin/python tests/fuzz/mutate_onnx.py --minutes 10 --out fuzz-out``.

Seeds: the bundled digits CNN, PaddleOCR's text-direction classifier (from the rapidocr-onnxruntime wheel, when
installed) and small models built here. Each iteration takes a seed, applies one to three mutations, either
byte-level (bit flips, byte overwrites, truncation, splices from another seed, zeroed or duplicated ranges) or
structure-level on the ONNX proto (drop or rewire a node input, delete a node, change an attribute, a dtype, a dim,
the opset or IR version, duplicate names, make a cycle, point external data outside the folder, cut raw data),
writes the file and runs ``enginekit inspect``, ``enginekit run -b ort`` and ``enginekit lint`` on it.

Each command runs in a child process with a timeout. By default the child is forked from a parent that has already
imported enginekit, onnx and onnxruntime (fast: no interpreter start-up per command; do not edit the source during
such a run, or children mix the parent's old modules with new ones); ``--exec`` runs the installed ``enginekit``
script instead. Counts by command and exit code are printed at the end (``--json`` for JSON); every
input that exits 4, prints a traceback, dies on a signal or times out is saved with its command and output under
``--out`` for reproduction.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
ENGINEKIT = Path(sys.executable).with_name("enginekit")


@dataclass(frozen=True)
class Seed:
    name: str
    data: bytes
    inputs: tuple[str, ...]  # --input values that make `run` runnable on the unmutated seed


# ------------------------------------------------------------------------------------------------ seeds


def _small_models() -> list[tuple[str, onnx.ModelProto, tuple[str, ...]]]:
    rng = np.random.default_rng(0)
    mlp = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
                helper.make_node("Add", ["h0", "b1"], ["h1"], name="bias1"),
                helper.make_node("Relu", ["h1"], ["h2"], name="relu1"),
                helper.make_node("MatMul", ["h2", "w2"], ["y"], name="fc2"),
            ],
            "mlp",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
            initializer=[
                numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "w1"),
                numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1"),
                numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32), "w2"),
            ],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    two = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("Mul", ["ids", "mask"], ["m"]),
                helper.make_node("Cast", ["m"], ["f"], to=TensorProto.FLOAT),
                helper.make_node("Reshape", ["f", "shape"], ["r"]),
                helper.make_node("Softmax", ["r"], ["out"], axis=-1),
            ],
            "two_input",
            [
                helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
                helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "seq"]),
            ],
            [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n"])],
            initializer=[numpy_helper.from_array(np.array([-1], np.int64), "shape")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    # A subgraph (If) and a Constant node, so that mutations reach nested graphs and attribute tensors.
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones(3, np.float32)))],
        "then", [], [helper.make_tensor_value_info("c", TensorProto.FLOAT, [3])],
    )
    other = helper.make_graph(
        [helper.make_node("Neg", ["v"], ["n"])], "else", [], [helper.make_tensor_value_info("n", TensorProto.FLOAT,
                                                                                             [3])],
    )
    cond = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("Identity", ["x"], ["v"]),
                helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
                helper.make_node("Greater", ["s", "zero"], ["p"]),
                helper.make_node("If", ["p"], ["y"], then_branch=branch, else_branch=other),
            ],
            "cond",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
            initializer=[numpy_helper.from_array(np.array(0, np.float32), "zero")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    out = []
    for name, model, inputs in (("mlp", mlp, ("x:2x4",)), ("two_input", two, ("ids:2x3", "mask:2x3")),
                                ("cond", cond, ())):
        model.ir_version = 8
        onnx.checker.check_model(model)
        out.append((name, model, inputs))
    return out


def load_seeds() -> list[Seed]:
    seeds = [Seed(n, m.SerializeToString(), i) for n, m, i in _small_models()]
    digits = ROOT / "src/enginekit/examples/digits/digits_cnn.onnx"
    seeds.append(Seed("digits_cnn", digits.read_bytes(), ("x:2x1x8x8",)))
    spec = importlib.util.find_spec("rapidocr_onnxruntime")  # its runtime dependencies are not installed
    if spec is not None and spec.submodule_search_locations:
        cls = Path(next(iter(spec.submodule_search_locations))) / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
        if cls.is_file():
            seeds.append(Seed("ocr_cls", cls.read_bytes(), ("x:1x3x48x192",)))
    return seeds


# ------------------------------------------------------------------------------------------------ mutations


def bit_flips(rng: random.Random, data: bytes, seeds: list[Seed]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 4, 16))):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def byte_overwrite(rng: random.Random, data: bytes, seeds: list[Seed]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        b[rng.randrange(len(b))] = rng.choice((0x00, 0xFF, 0x7F, 0x80, 0x08, 0x0A, 0x12, rng.randrange(256)))
    return bytes(b)


def truncate(rng: random.Random, data: bytes, seeds: list[Seed]) -> bytes:
    return data[: rng.choice((rng.randrange(len(data)), rng.randrange(64), len(data) - rng.randint(1, 64)))]


def splice(rng: random.Random, data: bytes, seeds: list[Seed]) -> bytes:
    other = rng.choice(seeds).data
    i, j = rng.randrange(len(data)), rng.randrange(len(other))
    n = rng.randint(1, 4096)
    return data[:i] + other[j : j + n] + data[i + (n if rng.random() < 0.5 else 0) :]


def zero_range(rng: random.Random, data: bytes, seeds: list[Seed]) -> bytes:
    i = rng.randrange(len(data))
    n = rng.randint(1, 256)
    return data[:i] + bytes(min(n, len(data) - i)) + data[i + n :]


def duplicate_range(rng: random.Random, data: bytes, seeds: list[Seed]) -> bytes:
    i = rng.randrange(len(data))
    n = rng.randint(1, 512)
    return data[: i + n] + data[i : i + n] + data[i + n :]


BYTE_MUTATIONS: list[Callable[[random.Random, bytes, list[Seed]], bytes]] = [
    bit_flips, byte_overwrite, truncate, splice, zero_range, duplicate_range,
]

_DTYPES = [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 16, 17, 21, 23, 40, -3]
_INTS = [0, 1, -1, 2, 3, -7, 255, 2**31, -(2**31) - 1, 2**62, 10**9]


def _graphs(g: onnx.GraphProto) -> list[onnx.GraphProto]:
    out = [g]
    for node in g.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                out.extend(_graphs(attr.g))
            for sub in attr.graphs:
                out.extend(_graphs(sub))
    return out


def _value_infos(m: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    g = m.graph
    return [*g.input, *g.output, *g.value_info]


def _names(g: onnx.GraphProto) -> list[str]:
    return [*(i.name for i in g.input), *(t.name for t in g.initializer), *(o for n in g.node for o in n.output)]


def s_drop_node_input(rng: random.Random, m: onnx.ModelProto) -> None:
    nodes = [n for g in _graphs(m.graph) for n in g.node if n.input]
    if nodes:
        n = rng.choice(nodes)
        del n.input[rng.randrange(len(n.input))]


def s_rewire_input(rng: random.Random, m: onnx.ModelProto) -> None:
    g = rng.choice(_graphs(m.graph))
    nodes = [n for n in g.node if n.input]
    if nodes:
        n = rng.choice(nodes)
        n.input[rng.randrange(len(n.input))] = rng.choice([*_names(g), "", "nope", "y"])


def s_delete_node(rng: random.Random, m: onnx.ModelProto) -> None:
    g = rng.choice(_graphs(m.graph))
    if g.node:
        del g.node[rng.randrange(len(g.node))]


def s_cycle(rng: random.Random, m: onnx.ModelProto) -> None:
    g = m.graph
    if len(g.node) >= 2:
        i = rng.randrange(len(g.node) - 1)
        j = rng.randrange(i + 1, len(g.node))
        if g.node[i].input and g.node[j].output:
            g.node[i].input[0] = g.node[j].output[0]  # an earlier node consumes a later one: a cycle
    elif g.node and g.node[0].input and g.node[0].output:
        g.node[0].input[0] = g.node[0].output[0]  # a self-loop


def s_shuffle_nodes(rng: random.Random, m: onnx.ModelProto) -> None:
    nodes = list(m.graph.node)
    rng.shuffle(nodes)
    del m.graph.node[:]
    m.graph.node.extend(nodes)


def s_duplicate_name(rng: random.Random, m: onnx.ModelProto) -> None:
    g = m.graph
    names = _names(g)
    outs = [n for n in g.node if n.output]
    if outs and names:
        n = rng.choice(outs)
        n.output[0] = rng.choice(names)
    if rng.random() < 0.3 and g.initializer:  # an initializer named like an input, or two of the same name
        t = rng.choice(g.initializer)
        t.name = rng.choice([*(i.name for i in g.input), *(i.name for i in g.initializer)])


def s_attribute(rng: random.Random, m: onnx.ModelProto) -> None:
    nodes = [n for g in _graphs(m.graph) for n in g.node if n.attribute]
    if not nodes:
        return
    a = rng.choice(rng.choice(nodes).attribute)
    choice = rng.randrange(7)
    if choice == 0 and a.type == onnx.AttributeProto.INT:
        a.i = rng.choice(_INTS)
    elif choice == 1 and a.type == onnx.AttributeProto.INTS and a.ints:
        a.ints[rng.randrange(len(a.ints))] = rng.choice(_INTS)
    elif choice == 2 and a.type == onnx.AttributeProto.FLOAT:
        a.f = rng.choice([float("nan"), float("inf"), -1.0, 0.0, 1e38])
    elif choice == 3:
        a.name = rng.choice(["", "nope", "axis", "to", a.name + "_"])
    elif choice == 4:
        a.type = rng.choice(list(onnx.AttributeProto.AttributeType.values()))
    elif choice == 5 and a.type == onnx.AttributeProto.INTS:
        del a.ints[:]
    else:
        a.ints.extend([rng.choice(_INTS)] * rng.randint(1, 3))


def s_dtype(rng: random.Random, m: onnx.ModelProto) -> None:
    which = rng.randrange(3)
    if which == 0 and m.graph.initializer:
        t = rng.choice(m.graph.initializer)
        t.data_type = rng.choice(_DTYPES)
    else:
        vis = _value_infos(m)
        if vis:
            rng.choice(vis).type.tensor_type.elem_type = rng.choice(_DTYPES)


def s_dim(rng: random.Random, m: onnx.ModelProto) -> None:
    vis = [v for v in _value_infos(m) if v.type.tensor_type.HasField("shape")]
    if rng.random() < 0.3 and m.graph.initializer:
        t = rng.choice(m.graph.initializer)
        if t.dims:
            t.dims[rng.randrange(len(t.dims))] = rng.choice(_INTS)
        else:
            t.dims.append(rng.choice(_INTS))
        return
    if not vis:
        return
    shape = rng.choice(vis).type.tensor_type.shape
    if not shape.dim or rng.random() < 0.2:
        shape.dim.add().dim_value = rng.choice(_INTS)
        return
    d = shape.dim[rng.randrange(len(shape.dim))]
    if rng.random() < 0.6:
        d.dim_value = rng.choice(_INTS)
    else:
        d.dim_param = rng.choice(["", "batch", "a:b", "[red]x[/]", "é", "x" * 300])


def s_opset(rng: random.Random, m: onnx.ModelProto) -> None:
    if rng.random() < 0.5 and m.opset_import:
        m.opset_import[0].version = rng.choice([0, 1, 6, 10, 13, 21, 22, 99, -1, 2**40])
    elif rng.random() < 0.5:
        m.ir_version = rng.choice([0, 1, 3, 4, 7, 10, 11, 99, -1])
    else:
        m.opset_import.add(domain=rng.choice(["com.microsoft", "ai.onnx.ml", "custom", ""]), version=1)


def s_op_type(rng: random.Random, m: onnx.ModelProto) -> None:
    nodes = [n for g in _graphs(m.graph) for n in g.node]
    if nodes:
        n = rng.choice(nodes)
        if rng.random() < 0.7:
            n.op_type = rng.choice(["Relu", "Add", "Conv", "Reshape", "Loop", "Nope", "", "If", "Gather"])
        else:
            n.domain = rng.choice(["com.microsoft", "custom", "ai.onnx.ml", "ai.onnx"])


def s_external_data(rng: random.Random, m: onnx.ModelProto) -> None:
    if not m.graph.initializer:
        return
    t = rng.choice(m.graph.initializer)
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    location = rng.choice(["../../etc/passwd", "/etc/passwd", "missing.bin", "weights.bin", "", "/dev/zero",
                           "..", "."])
    t.external_data.add(key="location", value=location)
    if rng.random() < 0.5:
        t.external_data.add(key="length", value=str(rng.choice([0, 4, 2**40, -1])))
    if rng.random() < 0.3:
        t.external_data.add(key="offset", value=str(rng.choice([0, 1, -1, 2**40, "x"])))


def s_raw_data(rng: random.Random, m: onnx.ModelProto) -> None:
    ts = [t for t in m.graph.initializer if t.raw_data]
    if ts:
        t = rng.choice(ts)
        cut = rng.randrange(len(t.raw_data) + 1)
        t.raw_data = t.raw_data[:cut] if rng.random() < 0.7 else t.raw_data + t.raw_data[:cut]


def s_graph_io(rng: random.Random, m: onnx.ModelProto) -> None:
    g = m.graph
    choice = rng.randrange(4)
    if choice == 0 and g.output:
        del g.output[rng.randrange(len(g.output))]
    elif choice == 1 and g.input:
        del g.input[rng.randrange(len(g.input))]
    elif choice == 2:
        g.input.append(helper.make_tensor_value_info(rng.choice(["s", "x"]), rng.choice(_DTYPES[1:-1]),
                                                     rng.choice([None, [], [2], ["n", 3]])))
    elif g.input:
        g.input[rng.randrange(len(g.input))].name = rng.choice(["", "x", "a:b", "[bold]x[/]", ":x:", "\u0000"])


STRUCT_MUTATIONS: list[Callable[[random.Random, onnx.ModelProto], None]] = [
    s_drop_node_input, s_rewire_input, s_delete_node, s_cycle, s_shuffle_nodes, s_duplicate_name, s_attribute,
    s_dtype, s_dim, s_opset, s_op_type, s_external_data, s_raw_data, s_graph_io,
]


def mutate(rng: random.Random, seed: Seed, seeds: list[Seed]) -> tuple[bytes, list[str]]:
    """One to three mutations of ``seed``; returns the bytes and the names of the mutations applied."""
    applied: list[str] = []
    data = seed.data
    if rng.random() < 0.5:
        model = onnx.ModelProto()
        model.ParseFromString(data)
        for _ in range(rng.choice((1, 1, 2, 3))):
            fn = rng.choice(STRUCT_MUTATIONS)
            fn(rng, model)
            applied.append(fn.__name__)
        data = model.SerializeToString()
    if not applied or rng.random() < 0.2:
        for _ in range(rng.choice((1, 1, 2))):
            fb = rng.choice(BYTE_MUTATIONS)
            data = fb(rng, data, seeds) if data else data
            applied.append(fb.__name__)
    return data, applied


# ------------------------------------------------------------------------------------------------ running


@dataclass(frozen=True)
class Outcome:
    code: int | None  # None: timed out
    signal: int | None  # the signal that killed the child
    output: str


MEMORY_LIMIT = 8 << 30  # address space of a child: a mutant that asks for terabytes fails fast instead of swapping


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _run_forked(argv: list[str], cwd: Path, timeout: float) -> Outcome:
    """Run ``enginekit ARGV`` in a forked child (enginekit already imported here) with a timeout."""
    log = cwd / "output.txt"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child
        code = 4
        try:
            os.chdir(cwd)
            _limit_memory()
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            from enginekit.cli import common
            from enginekit.cli.main import main

            common.State.verbose = 0
            try:
                main(argv)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return Outcome(None, None, log.read_text(errors="replace") if log.exists() else "")
        time.sleep(0.01)
    text = log.read_text(errors="replace") if log.exists() else ""
    if os.WIFSIGNALED(status):
        return Outcome(None, os.WTERMSIG(status), text)
    return Outcome(os.WEXITSTATUS(status), None, text)


def _run_exec(argv: list[str], cwd: Path, timeout: float) -> Outcome:
    env = {"PATH": "/usr/bin:/bin", "COLUMNS": "120", "NO_COLOR": "1", "HOME": str(cwd)}
    try:
        proc = subprocess.run([str(ENGINEKIT), *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              env=env, errors="replace", preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or b""
        return Outcome(None, None, out.decode(errors="replace") if isinstance(out, bytes) else out)
    if proc.returncode < 0:
        return Outcome(None, -proc.returncode, proc.stdout + proc.stderr)
    return Outcome(proc.returncode, None, proc.stdout + proc.stderr)


def commands(seed: Seed) -> dict[str, list[str]]:
    run = ["run", "model.onnx", "-b", "ort"]
    for spec in seed.inputs:
        run += ["--input", spec]
    return {"inspect": ["inspect", "model.onnx"], "run": run, "lint": ["lint", "model.onnx", "--target", "ort"]}


def classify(o: Outcome) -> str:
    if o.signal is not None:
        return f"signal {o.signal}"
    if o.code is None:
        return "timeout"
    return f"exit {o.code}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=1.0, help="time box (default 1)")
    p.add_argument("--max-cases", type=int, default=0, help="stop after this many mutants (0: only the time box)")
    p.add_argument("--seed", type=int, default=0, help="random seed (the run is reproducible for a given count)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per command (default 30)")
    p.add_argument("--out", type=Path, default=Path("fuzz-out"), help="where failing inputs are saved")
    p.add_argument("--exec", action="store_true", help="run the installed script per command instead of forking")
    p.add_argument("--commands", default="inspect,run,lint", help="comma-separated subset of inspect,run,lint")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = p.parse_args(argv)

    seeds = load_seeds()
    rng = random.Random(args.seed)
    wanted = [c.strip() for c in args.commands.split(",") if c.strip()]
    runner = _run_exec if args.exec else _run_forked
    if not args.exec:  # import the heavy modules once, before forking
        import onnxruntime  # noqa: F401

        import enginekit.cli.main  # noqa: F401
        import enginekit.graph.inspect  # noqa: F401
        import enginekit.graph.lint  # noqa: F401
        import enginekit.multirun  # noqa: F401
    args.out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, collections.Counter[str]] = {c: collections.Counter() for c in wanted}
    by_mutation: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    tracebacks = 0
    saved: list[dict[str, object]] = []
    start = time.monotonic()
    cases = 0
    with tempfile.TemporaryDirectory(prefix="enginekit-fuzz-") as tmp:
        work = Path(tmp)
        while time.monotonic() - start < args.minutes * 60 and (not args.max_cases or cases < args.max_cases):
            seed = rng.choice(seeds)
            data, applied = mutate(rng, seed, seeds)
            cases += 1
            for entry in work.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            (work / "model.onnx").write_bytes(data)
            for name, cmd in commands(seed).items():
                if name not in wanted:
                    continue
                o = runner(cmd, work, args.timeout)
                kind = classify(o)
                counts[name][kind] += 1
                has_tb = "Traceback (most recent call last)" in o.output
                tracebacks += has_tb
                for m in applied:
                    by_mutation[m][kind] += 1
                if kind in ("exit 0", "exit 1", "exit 2", "exit 3") and not has_tb:
                    continue
                case_dir = args.out / f"case{cases:05d}-{name}"
                case_dir.mkdir(parents=True, exist_ok=True)
                (case_dir / "model.onnx").write_bytes(data)
                (case_dir / "output.txt").write_text(o.output)
                record = {"case": cases, "seed": seed.name, "mutations": applied, "command": ["enginekit", *cmd],
                          "result": kind, "traceback": has_tb, "last_line": (o.output.strip().splitlines() or [""])[-1]}
                (case_dir / "case.json").write_text(json.dumps(record, indent=2))
                saved.append(record)
    summary = {
        "cases": cases, "seconds": round(time.monotonic() - start, 1), "seed": args.seed,
        "seeds": [s.name for s in seeds], "counts": {c: dict(sorted(v.items())) for c, v in counts.items()},
        "tracebacks": tracebacks, "saved": len(saved), "by_mutation": {m: dict(sorted(v.items()))
                                                                       for m, v in sorted(by_mutation.items())},
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{cases} mutants in {summary['seconds']} s from seeds {', '.join(summary['seeds'])} (seed {args.seed})")
        for c, v in counts.items():
            print(f"  {c:8s} " + ", ".join(f"{k}: {n}" for k, n in sorted(v.items())))
        print(f"  tracebacks: {tracebacks}; saved for repro: {len(saved)} under {args.out}")
        for r in saved[:50]:
            print(f"    case {r['case']} {r['command'][1]} {r['result']} {r['mutations']}: {r['last_line']}")
    bad = sum(v[k] for v in counts.values() for k in v if k not in ("exit 0", "exit 1", "exit 2", "exit 3"))
    return 1 if bad or tracebacks else 0


if __name__ == "__main__":
    sys.exit(main())
