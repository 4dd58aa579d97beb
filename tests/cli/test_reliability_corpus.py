"""Reliability corpus: one line per hostile or mistaken command, across every subcommand.

Each case states the exit code (0 ok, 1 check failed, 2 user error, 3 missing package/hardware, 4 a bug in
enginekit) and a needle that the output must contain so that the message names the problem. For every case: the
exit code matches, no traceback is printed, and a snapshot (relative path -> sha256 or link target, and mode) of the
working folder taken before and after shows that nothing changed except the files the case lists in ``writes``:
outputs never clobber inputs, a refused command writes nothing, hostile files run no code.

``argv`` is split like a shell line; ``{name}`` placeholders are files built in the working folder by ``FILES`` (only
those a case uses), given as paths relative to it (commands run from it). ``proc=True`` runs the real script in a
subprocess with a timeout (for what could hang or kill the interpreter); the rest run in-process (fast).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import shlex
import shutil
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper


@dataclass(frozen=True)
class Case:
    id: str
    argv: str  # shell-like; {placeholders} from FILES
    code: int
    needle: str  # must appear in stdout + stderr (after placeholder substitution)
    writes: tuple[str, ...] = ()  # glob patterns of the paths the command may create or change
    proc: bool = False  # run the installed script in a subprocess (with a timeout)


MLP = "-b ort --input x:2x4"
CACHE = "--cache-dir cache"
RTX = "-b tensorrt-rtx --profile x:1x4:2x4:4x4"
PYCACHE = ("__pycache__", "__pycache__/*")

CASES: list[Case] = [
    # --- model files that are missing, the wrong kind, damaged or hostile --------------------------------------
    Case("run-missing-model", f"run nope.onnx {MLP}", 2, "nope.onnx"),
    Case("inspect-missing-model", "inspect nope.onnx", 2, "nope.onnx"),
    Case("lint-missing-model", "lint nope.onnx --target ort", 2, "nope.onnx"),
    Case("bench-missing-model", "bench nope.onnx -b ort --duration 0.1s", 2, "nope.onnx"),
    Case("prepare-missing-model", "prepare nope.onnx -o out.onnx", 2, "nope.onnx"),
    Case("build-missing-model", f"build nope.onnx -o out.engine {RTX} {CACHE}", 2, "nope.onnx"),
    Case("optimize-missing-model-writes-no-report", "optimize nope.onnx", 2, "nope.onnx"),
    Case("inspect-text-file", "inspect {text}", 2, "notes.onnx"),
    Case("inspect-empty-file", "inspect {empty}", 2, "empty.onnx"),
    Case("inspect-truncated", "inspect {truncated}", 2, "truncated"),
    Case("run-corrupt", f"run {{corrupt}} {MLP}", 2, "corrupt.onnx"),
    Case("inspect-zip-as-model", "inspect {npz_model}", 2, "zip"),
    Case("inspect-folder-as-model", "inspect {folder}", 2, "folder"),
    Case("run-folder-as-model", f"run {{folder}} {MLP}", 2, "folder"),
    Case("inspect-fifo-does-not-hang", "inspect {fifo}", 2, "pipe.onnx", proc=True),
    Case("run-fifo-does-not-hang", f"run {{fifo}} {MLP}", 2, "pipe.onnx", proc=True),
    Case("inspect-char-device", "inspect /dev/zero", 2, "/dev/zero", proc=True),
    Case("load-inputs-fifo-does-not-hang", "run {mlp} -b ort --load-inputs {fifo_npz}", 2, "pipe.npz", proc=True),
    Case("lint-non-utf8-op-type", "lint {non_utf8} --target ort", 2, "non_utf8.onnx"),
    Case("inspect-no-check-non-utf8-op-type", "inspect --no-check {non_utf8}", 2, "non_utf8.onnx"),
    Case("run-invalid-graph", f"run {{invalid}} {MLP}", 2, "nowhere"),
    Case("run-string-input", "run {strings} -b ort", 2, "string"),
    Case("run-pt2-needs-trust", "run {pt2} -b torch --input x:1x4", 2, "--trust-remote-code"),
    Case("run-aoti-needs-trust", "run {pt2} -b aoti --input x:1x4", 2, "--trust-remote-code"),
    Case("export-pt2-needs-trust", "export {pt2} -o out.onnx --input x:1x4", 2, "--trust-remote-code"),
    Case("inspect-pt2-is-not-onnx", "inspect {pt2}", 2, "evil.pt2"),
    Case("run-pickle-feed-refused", "run {mlp} -b ort --load-inputs {pickle_npz}", 2, "pickle"),
    # --- user code (file.py:factory) that exits or parses argv on import --------------------------------------
    Case("run-user-code-sys-exit", "run {exits_py}:make -b torch --input x:1x4", 2, "exits.py", writes=PYCACHE),
    Case("run-user-code-argparse", "run {argv_py}:make -b torch --input x:1x4", 2, "argv.py", writes=PYCACHE),
    Case("export-user-code-sys-exit", "export {exits_py}:make -o out.onnx --input x:1x4", 2, "exits.py",
         writes=PYCACHE),
    Case("export-missing-factory", "export {model_py}:nope -o out.onnx --input x:1x4", 2, "nope", writes=PYCACHE),
    # --- messages print user text literally (no Rich markup, no emoji) -----------------------------------------
    Case("markup-in-missing-path", "inspect ':x:[red]nope.onnx'", 2, ":x:[red]nope.onnx"),
    Case("markup-in-model-path", "run {markup_model} -b ort --input x:2x4", 2, "m:x:[b].onnx"),
    Case("markup-in-option-value", "run {mlp} -b ort --input ':x:[bold]:2x4'", 2, ":x:[bold]"),
    # --- option strings ----------------------------------------------------------------------------------------
    Case("run-huge-dim", "run {mlp} -b ort --input x:99999999999999999999999x4", 2, "99999999999999999999999"),
    Case("run-huge-feed", "run {mlp} -b ort --input x:1000000000000x4", 2, "1000000000000"),
    Case("bench-huge-dim", "bench {mlp} -b ort --input x:99999999999999999999999x1 --duration 0.1s", 2,
         "99999999999999999999999"),
    Case("prepare-huge-fix-shape", "prepare {mlp} -o out.onnx --fix-input-shapes x:99999999999999999999999x4", 2,
         "99999999999999999999999"),
    Case("run-bad-input-dims", "run {mlp} -b ort --input x:1xAx4", 2, "1xAx4"),
    Case("run-bad-input-dtype", "run {mlp} -b ort --input x:2x4:float99", 2, "float99"),
    Case("run-unknown-input-name", "run {mlp} -b ort --input y:2x4", 2, "'y'"),
    Case("run-wrong-rank", "run {mlp} -b ort --input x:2x4x1", 2, "x:2x4x1"),
    Case("run-seed-negative", f"run {{mlp}} {MLP} --seed -1", 2, "seed"),
    Case("run-val-range-overflow", f"run {{mlp}} {MLP} --val-range=-1e308,1e308", 2, "--val-range"),
    Case("run-val-range-reversed", f"run {{mlp}} {MLP} --val-range 2,1", 2, "2,1"),
    Case("run-atol-negative", f"run {{mlp}} {MLP} --atol=-1", 2, "--atol"),
    Case("run-rtol-nan", f"run {{mlp}} {MLP} --rtol nan", 2, "NaN"),
    Case("run-unknown-backend", "run {mlp} -b openvnio --input x:2x4", 2, "openvino"),
    Case("run-bad-precision", "run {mlp} -b ort:bf16 --input x:2x4", 2, "bf16"),
    Case("run-ort-graph-optimization-max", f"run {{mlp}} {MLP} --ort-graph-optimization max", 2, "max"),
    Case("run-check-error-stat", f"run {{mlp}} {MLP} --check-error-stat worst", 2, "worst"),
    Case("bench-duration-inf", "bench {mlp} -b ort --input x:2x4 --duration " + "9" * 400, 2, "--duration"),
    Case("bench-duration-text", "bench {mlp} -b ort --input x:2x4 --duration soon", 2, "soon"),
    Case("bench-batch-zero", "bench {mlp} -b ort --batch 0 --duration 0.1s", 2, "--batch"),
    Case("lint-unknown-target", "lint {mlp} --target tensorrtt", 2, "tensorrt"),
    Case("lint-bad-target-version", "lint {mlp} --target tensorrt==eight", 2, "eight"),
    Case("build-workspace-negative", f"build {{mlp}} -o out.engine {RTX} {CACHE} --workspace -5", 2, "workspace"),
    Case("build-bad-profile", f"build {{mlp}} -o out.engine -b tensorrt-rtx --profile x:1x4:0x4 {CACHE}", 2,
         "x:1x4:0x4"),
    Case("build-bad-precision", f"build {{mlp}} -o out.engine {RTX} --precision fp7 {CACHE}", 2, "fp7"),
    Case("export-bad-opset", "export {model_py}:make -o out.onnx --input x:1x4 --opset 99", 2, "99",
         writes=PYCACHE),
    Case("export-opset-text", "export {model_py}:make -o out.onnx --input x:1x4 --opset seventeen", 2, "seventeen"),
    Case("export-input-wrong-shape", "export {model_py}:make -o out.onnx --input x:1x5", 2, "example inputs",
         writes=PYCACHE),
    Case("export-bad-dynamic", "export {model_py}:make -o out.onnx --input x:1x4 --dynamic x:0=batch[9..2]", 2,
         "--dynamic"),
    Case("cache-clear-older-than-overflow", f"cache clear {CACHE} --older-than 9999999999w -y", 2, "9999999999w"),
    Case("cache-clear-older-than-text", f"cache clear {CACHE} --older-than lastweek -y", 2, "lastweek"),
    # --- feeds ---------------------------------------------------------------------------------------------------
    Case("load-inputs-missing", "run {mlp} -b ort --load-inputs absent.npz", 2, "absent.npz"),
    Case("load-inputs-deep-json", "run {mlp} -b ort --load-inputs {deep_json}", 2, "deep.json"),
    Case("load-inputs-wrong-name", "run {mlp} -b ort --load-inputs {feeds_y}", 2, "feeds_y.npz"),
    Case("load-inputs-nan-refused", "run {mlp} -b ort --load-inputs {feeds_nan}", 2, "--allow-nonfinite"),
    Case("load-inputs-text-as-npz", "run {mlp} -b ort --load-inputs {text_npz}", 2, "text.npz"),
    # --- outputs never clobber inputs ---------------------------------------------------------------------------
    Case("build-output-is-model", f"build {{mlp}} -o {{mlp}} {RTX} {CACHE}", 2, "mlp.onnx"),
    Case("prepare-output-is-model", "prepare {mlp} -o {mlp} --input x:2x4", 2, "mlp.onnx"),
    Case("export-output-is-source", "export {model_py}:make -o {model_py} --input x:1x4", 2, "model.py"),
    Case("ort-save-optimized-is-model", f"run {{mlp}} {MLP} --ort-save-optimized {{mlp}}", 2, "mlp.onnx"),
    # a symlink at the target is replaced, never followed: victim.txt keeps its bytes
    Case("ort-save-optimized-symlink", f"run {{mlp}} {MLP} --ort-save-optimized {{victim_link}}", 0, "PASSED",
         writes=("opt.onnx",)),
    Case("save-outputs-is-load-inputs", "run {mlp} -b ort --load-inputs {feeds} --save-outputs {feeds}", 2,
         "feeds.npz"),
    Case("save-outputs-is-save-inputs", f"run {{mlp}} {MLP} --save-inputs io.npz --save-outputs io.npz", 2, "io.npz"),
    Case("save-outputs-is-model", f"run {{mlp}} {MLP} --save-outputs {{mlp}}", 2, "mlp.onnx"),
    Case("timing-cache-is-model", f"build {{mlp}} -o out.engine {RTX} {CACHE} --timing-cache {{mlp}}", 2,
         "mlp.onnx"),
    Case("timing-cache-is-foreign", f"build {{mlp}} -o out.engine {RTX} {CACHE} --timing-cache {{text}}", 2,
         "notes.onnx"),
    Case("report-into-foreign-folder", f"run {{mlp}} {MLP} --report {{foreign}}", 2, "keep"),
    Case("optimize-report-into-foreign-folder", "optimize {mlp} -b ort --input x:2x4 --report {foreign}", 2, "keep"),
    Case("report-is-a-file", f"run {{mlp}} {MLP} --report {{text}}", 2, "notes.onnx"),
    # --- output paths that are folders, the wrong kind, or read-only ----------------------------------------------
    Case("save-outputs-is-folder", f"run {{mlp}} {MLP} --save-outputs {{folder}}", 2, "folder"),
    Case("save-inputs-is-folder", f"run {{mlp}} {MLP} --save-inputs {{folder}}", 2, "folder"),
    Case("ort-save-optimized-is-folder", f"run {{mlp}} {MLP} --ort-save-optimized {{folder}}", 2, "folder"),
    Case("prepare-output-is-folder", "prepare {mlp} -o {folder} --input x:2x4", 2, "folder"),
    Case("build-output-is-folder", f"build {{mlp}} -o {{folder}} {RTX} {CACHE}", 2, "folder"),
    Case("export-output-is-folder", "export {model_py}:make -o {folder} --input x:1x4", 2, "folder"),
    Case("bench-plot-is-folder", "bench {mlp} -b ort --input x:2x4 --duration 0.1s --plot {folder}", 2, "folder"),
    Case("save-outputs-read-only", f"run {{mlp}} {MLP} --save-outputs {{readonly}}/ro-out.npz", 2, "ro-out.npz"),
    Case("save-inputs-read-only", f"run {{mlp}} {MLP} --save-inputs {{readonly}}/ro-in.npz", 2, "ro-in.npz"),
    Case("report-read-only", f"run {{mlp}} {MLP} --report {{readonly}}/ro-report", 2, "ro-report"),
    Case("prepare-output-read-only", "prepare {mlp} -o {readonly}/ro-prep.onnx --input x:2x4", 2, "ro-prep.onnx"),
    Case("build-output-read-only", f"build {{mlp}} -o {{readonly}}/ro.engine {RTX} {CACHE}", 2, "ro.engine"),
    Case("save-outputs-not-npz", f"run {{mlp}} {MLP} --save-outputs out.txt", 2, "out.txt"),
    # --- compare ---------------------------------------------------------------------------------------------------
    Case("compare-missing", "compare nope.npz {feeds}", 2, "nope.npz"),
    Case("compare-disjoint-names", "compare {feeds} {feeds_y}", 1, "missing in candidate"),
    Case("compare-text", "compare {text_npz} {feeds}", 2, "text.npz"),
    # --- what works keeps working, and writes only what it was asked to write ------------------------------------
    Case("inspect-ok", "inspect {mlp}", 0, "MatMul"),
    Case("inspect-real-model", "inspect {ocr_cls}", 0, "Conv"),
    Case("run-ok-saves-outputs", f"run {{mlp}} {MLP} --save-outputs out.npz", 0, "PASSED", writes=("out.npz",)),
    Case("run-real-model", "run {ocr_cls} -b ort --input x:1x3x48x192", 0, "ort"),
    Case("run-ok-report", f"run {{mlp}} {MLP} --report rep", 0, "PASSED", writes=("rep", "rep/*")),
    Case("run-two-input-ok", "run {two} -b ort --input ids:2x3 --input mask:2x3", 0, "out"),
    Case("lint-ok", "lint {mlp} --target ort", 0, "ort"),
    Case("compare-same", "compare {feeds} {feeds}", 0, "x"),
    Case("cache-list-empty", f"cache list {CACHE}", 0, "No cached engines", writes=("cache", "cache/*")),
]


# ------------------------------------------------------------------------------------------------ files


def _write(path: Path, data: bytes | str) -> str:
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path.name


def _model(path: Path, nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
           outputs: list[onnx.ValueInfoProto]) -> str:
    model = helper.make_model(helper.make_graph(nodes, path.stem, inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)  # no checker: some of these are invalid on purpose
    return path.name


Fixture = Callable[[str], Path]  # request.getfixturevalue: the models of tests/conftest.py


def _from_fixture(fixture_name: str) -> Callable[[Path, Fixture], str]:
    def make(w: Path, fixture: Fixture) -> str:
        path = fixture(fixture_name)
        if path.parent != w:  # a session fixture (installed model): work on a copy
            shutil.copyfile(path, w / path.name)
        return path.name

    return make


def _truncated(w: Path, fixture: Fixture) -> str:
    data = fixture("mlp_model").read_bytes()
    return _write(w / "truncated.onnx", data[: len(data) // 2])


def _corrupt(w: Path, fixture: Fixture) -> str:
    data = fixture("mlp_model").read_bytes()
    return _write(w / "corrupt.onnx", b"\xff" * 8 + data[8:])  # wire type 7 does not exist: protobuf refuses it


def _non_utf8(w: Path, fixture: Fixture) -> str:
    data = fixture("mlp_model").read_bytes()
    assert data.count(b"Relu") == 1
    return _write(w / "non_utf8.onnx", data.replace(b"Relu", b"R\xffl\xff"))  # an op_type that is not UTF-8


def _fifo(name: str) -> Callable[[Path, Fixture], str]:
    def make(w: Path, fixture: Fixture) -> str:
        os.mkfifo(w / name)
        return name

    return make


def _readonly(w: Path, fixture: Fixture) -> str:
    if os.geteuid() == 0:  # root writes through permission bits: use a folder the kernel refuses to write in
        return "/sys/kernel"
    path = w / "readonly"
    path.mkdir()
    path.chmod(0o555)
    return path.name


def _pt2(w: Path, fixture: Fixture) -> str:
    class Payload:  # unpickling it would create the folder "pwned": the snapshot would show it
        def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
            return (os.mkdir, (str(w / "pwned"),))

    with zipfile.ZipFile(w / "evil.pt2", "w") as z:
        z.writestr("evil/version", "1\n")
        z.writestr("evil/data.pkl", pickle.dumps(Payload()))
        z.writestr("evil/models/model.json", "{}")
    return "evil.pt2"


def _npz(name: str, **arrays: np.ndarray) -> Callable[[Path, Fixture], str]:
    def make(w: Path, fixture: Fixture) -> str:
        np.savez(w / name, **arrays)  # type: ignore[arg-type]
        return name

    return make


def _pickle_npz(w: Path, fixture: Fixture) -> str:
    np.savez(w / "objects.npz", x=np.array([{"a": 1}, None], dtype=object))
    return "objects.npz"


def _foreign(w: Path, fixture: Fixture) -> str:
    path = w / "keep"
    path.mkdir()
    (path / "thesis.tex").write_text("years of work\n")
    return path.name


def _victim_link(w: Path, fixture: Fixture) -> str:
    (w / "victim.txt").write_text("must survive\n")
    (w / "opt.onnx").symlink_to("victim.txt")
    return "opt.onnx"


def _markup_model(w: Path, fixture: Fixture) -> str:
    return _write(w / "m:x:[b].onnx", "not a model, and its name is Rich markup\n")


MODEL_PY = "import torch\n\n\ndef make():\n    return torch.nn.Linear(4, 3)\n"
EXITS_PY = "import sys\n\nsys.exit(7)\n\n\ndef make():\n    raise AssertionError\n"
ARGV_PY = ("import argparse\nimport sys\n\nparser = argparse.ArgumentParser()\n"
           "parser.add_argument('--lr', type=float)\nparser.add_argument('data')\nargs = parser.parse_args()\n"
           "sys.exit(7)\n\n\ndef make():\n    raise AssertionError\n")
F, I64 = TensorProto.FLOAT, TensorProto.INT64

FILES: dict[str, Callable[[Path, Fixture], str]] = {
    "mlp": _from_fixture("mlp_model"),
    "two": _from_fixture("two_input_model"),
    "ocr_cls": _from_fixture("ocr_cls_model"),
    "text": lambda w, _: _write(w / "notes.onnx", "hello, this is not a model\n"),
    "empty": lambda w, _: _write(w / "empty.onnx", b""),
    "truncated": _truncated,
    "corrupt": _corrupt,
    "non_utf8": _non_utf8,
    "npz_model": _npz("arrays.npz", x=np.zeros(3)),
    "folder": lambda w, _: (w / "folder").mkdir() or "folder",
    "fifo": _fifo("pipe.onnx"),
    "fifo_npz": _fifo("pipe.npz"),
    "invalid": lambda w, _: _model(w / "invalid.onnx", [helper.make_node("Add", ["x", "nowhere"], ["y"])],
                                [helper.make_tensor_value_info("x", F, [2, 4])],
                                [helper.make_tensor_value_info("y", F, [2, 4])]),
    "strings": lambda w, _: _model(w / "strings.onnx", [helper.make_node("Identity", ["s"], ["t"])],
                                [helper.make_tensor_value_info("s", TensorProto.STRING, [2])],
                                [helper.make_tensor_value_info("t", TensorProto.STRING, [2])]),
    "pt2": _pt2,
    "pickle_npz": _pickle_npz,
    "model_py": lambda w, _: _write(w / "model.py", MODEL_PY),
    "exits_py": lambda w, _: _write(w / "exits.py", EXITS_PY),
    "argv_py": lambda w, _: _write(w / "argv.py", ARGV_PY),
    "markup_model": _markup_model,
    "deep_json": lambda w, _: _write(w / "deep.json", '{"x": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    "feeds": _npz("feeds.npz", x=np.ones((2, 4), np.float32)),
    "feeds_y": _npz("feeds_y.npz", y=np.ones((2, 4), np.float32)),
    "feeds_nan": _npz("feeds_nan.npz", x=np.full((2, 4), np.nan, np.float32)),
    "text_npz": lambda w, _: _write(w / "text.npz", "not an archive\n"),
    "foreign": _foreign,
    "victim_link": _victim_link,
    "readonly": _readonly,
}
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


# ------------------------------------------------------------------------------------------------ checks


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Relative path -> (sha256 of a file, link target, or kind; st_mode), without following links or opening FIFOs."""
    state: dict[str, tuple[str, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                what = "link -> " + os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                what = "dir" if stat.S_ISDIR(st.st_mode) else "special"
            state[path.relative_to(root).as_posix()] = (what, st.st_mode)
    return state


def _prepare(case: Case, work: Path, fixture: Fixture) -> list[str]:
    names = set(_PLACEHOLDER.findall(case.argv))
    unknown = names - FILES.keys()
    assert not unknown, f"{case.id}: unknown placeholders {unknown}"
    made = {name: FILES[name](work, fixture) for name in sorted(names)}
    return [_PLACEHOLDER.sub(lambda m: made[m.group(1)], arg) for arg in shlex.split(case.argv)]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINEKIT_CACHE_DIR", str(tmp_path / "default-cache"))
    monkeypatch.setenv("COLUMNS", "300")  # no wrapping inside the needles


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case, cli, cli_subprocess, tmp_path: Path,  # type: ignore[no-untyped-def]
              request: pytest.FixtureRequest) -> None:
    argv = _prepare(case, tmp_path, request.getfixturevalue)
    before = snapshot(tmp_path)
    try:
        res = cli_subprocess(*argv, timeout=60) if case.proc else cli(*argv)
    finally:
        readonly = tmp_path / "readonly"
        if readonly.is_dir():
            readonly.chmod(0o755)  # so that pytest can remove it
    output = res.stdout + res.stderr
    assert res.code == case.code, f"{case.id}: exit {res.code}, expected {case.code}\n{output}"
    assert "Traceback" not in output, output
    if case.code != 4:
        assert "internal error" not in output, output
    assert case.needle in output, f"{case.id}: {case.needle!r} not in the output\n{output}"
    after = snapshot(tmp_path)
    changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    unexpected = [p for p in changed if not any(fnmatch(p, pattern) for pattern in case.writes)]
    assert not unexpected, f"{case.id}: changed {unexpected} (may write only {case.writes or 'nothing'})"


def test_corpus_is_a_corpus() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES), "duplicate case ids"
    commands = {shlex.split(c.argv)[0] for c in CASES}
    assert commands >= {"run", "inspect", "lint", "bench", "prepare", "build", "optimize", "export", "compare",
                        "cache"}
    assert {c.code for c in CASES} >= {0, 2}
