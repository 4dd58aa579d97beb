"""A precision plan on the PyTorch-native backends (torch, inductor): ONNX nodes → PyTorch modules kept in FP32.

A plan (``plan.json``) names ONNX nodes. The torch backends run the PyTorch source, so every plan node is mapped
back to the module that produced it, through the node metadata the dynamo exporter (``torch.onnx.export(...,
dynamo=True)``, what ``enginekit export`` uses) writes on every node. torch 2.13 writes
``pkg.torch.onnx.name_scopes`` (the qualified names of the module call stack, then the FX node:
``['', 'inner', 'inner.head', 'linear_2']``), ``pkg.torch.onnx.class_hierarchy`` (their classes, then the aten op)
and ``namespace`` (both in one string, read when the other two are absent). ``enginekit export`` wraps the model
in ``FlatOutputs`` (attribute ``inner``); that level is removed, so names are those of the source model.

Hence the runner needs the ONNX the plan was made for, as exported (``BackendSettings.precision_plan_model``,
``--precision-plan-model``): ``enginekit prepare`` / onnxsim keep node names but drop node metadata, and
TorchScript exports, Paddle models and hand-made graphs have none. A plan node without module metadata, a module
the source lacks or one of another class, and a plan for another precision are user errors; a plan is never
applied in part.

Granularity is the module: each plan node selects the *innermost* module whose call produced it, and that whole
module runs in FP32 (a plan node inside ``head`` keeps all of ``head``, including nodes the plan did not name;
a node of the model's own ``forward`` keeps the whole model). A module inside another kept module is covered by
the outer one. Kept modules hold float32 weights (the source's values, never a round trip through the low type),
floating inputs in the compute dtype are cast to float32 on entry and float32 outputs back to the compute dtype
on exit, by forward pre/post hooks, which torch.compile traces like the rest of the module.
"""

from __future__ import annotations

import ast
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enginekit.errors import InvalidArgumentError
from enginekit.registry import REDUCED_FLOAT_PRECISIONS

if TYPE_CHECKING:
    import onnx

    from enginekit.graph.precision import PrecisionPlan
    from enginekit.settings import BackendSettings

log = logging.getLogger(__name__)

SCOPES_KEY = "pkg.torch.onnx.name_scopes"
CLASSES_KEY = "pkg.torch.onnx.class_hierarchy"
NAMESPACE_KEY = "namespace"
_EXPORT_WRAPPER = ("torch2onnx", "FlatOutputs", "inner")  # enginekit.export.torch2onnx._flat_module's wrapper
_SHOWN = 5


@dataclass(frozen=True)
class KeptModule:
    """One module run in FP32: its qualified name ('' = the whole model), class, and the plan nodes it covers."""

    name: str
    cls: str
    plan_nodes: tuple[str, ...]
    onnx_nodes: int  # ONNX nodes the exporter attributed to this module (all of them now run in FP32)

    @property
    def widened(self) -> bool:
        return self.onnx_nodes > len(self.plan_nodes)

    def to_dict(self) -> dict[str, Any]:
        return {"module": self.name or "(whole model)", "class": self.cls, "plan_nodes": len(self.plan_nodes),
                "onnx_nodes": self.onnx_nodes, "widened": self.widened, "nodes": list(self.plan_nodes[:20])}


@dataclass(frozen=True)
class TorchPlan:
    """The modules a plan keeps in FP32 in one PyTorch source."""

    precision: str
    plan: Path
    plan_model: Path
    modules: tuple[KeptModule, ...]

    def module_names(self) -> list[str]:
        return [m.name for m in self.modules]

    def to_dict(self) -> dict[str, Any]:
        nodes = sum(len(m.plan_nodes) for m in self.modules)
        note = ("each plan node keeps the whole innermost PyTorch module that produced it in FP32"
                + ("; some kept modules hold ONNX nodes the plan did not name (widened)"
                   if any(m.widened for m in self.modules) else ""))
        return {"plan": str(self.plan), "plan_model": str(self.plan_model), "precision": self.precision,
                "plan_nodes": nodes, "fp32_modules": [m.to_dict() for m in self.modules], "note": note}


# --- ONNX node metadata -----------------------------------------------------------------------------------------
def _literal_list(text: str | None) -> list[str] | None:
    if not text:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    return [str(v) for v in value] if isinstance(value, list) else None


def _strip_call_index(name: str) -> str:
    """``blocks.0@1`` -> ``blocks.0`` (a repeated call's suffix, in case an exporter writes one)."""
    head, sep, tail = name.rpartition("@")
    return head if sep and tail.isdigit() else name


def node_modules(node: onnx.NodeProto) -> list[tuple[str, str]] | None:
    """(qualified module name, class) of the module call stack that produced ``node``, outermost first, named as
    in the source model (enginekit's export wrapper removed); None when the node carries no module metadata."""
    props = {p.key: p.value for p in node.metadata_props}
    scopes, classes = _literal_list(props.get(SCOPES_KEY)), _literal_list(props.get(CLASSES_KEY))
    if scopes is None and props.get(NAMESPACE_KEY):
        pairs = [part.split(": ", 1) for part in props[NAMESPACE_KEY].split("/")]
        scopes, classes = [p[0] for p in pairs], [p[1] if len(p) > 1 else "" for p in pairs]
    if scopes is None or len(scopes) < 2:  # the last entry is the FX node itself; fewer: no nn_module_stack
        return None
    classes = classes if classes is not None and len(classes) == len(scopes) else [""] * len(scopes)
    chain = [(_strip_call_index(n), c) for n, c in zip(scopes[:-1], classes[:-1], strict=True)]
    module, cls_name, attr = _EXPORT_WRAPPER
    if len(chain) >= 2 and module in chain[0][1] and chain[0][1].endswith(cls_name) and chain[1][0] == attr:
        chain = [("" if n == attr else n.removeprefix(attr + "."), c) for n, c in chain[1:]]
    return chain


@dataclass(frozen=True)
class _Mapped:
    by_module: dict[str, list[str]]  # innermost module -> plan nodes
    classes: dict[str, str]
    onnx_nodes: dict[str, int]  # module -> ONNX nodes inside it (at any depth)


def map_plan_nodes(plan: PrecisionPlan, model: onnx.ModelProto, where: str) -> _Mapped:
    """Innermost module of every plan node; UnknownNameError / InvalidArgumentError when a node has none."""
    from enginekit.graph.precision import check_plan_nodes

    check_plan_nodes(plan, model)
    wanted = set(plan.node_names())
    by_module: dict[str, list[str]] = {}
    classes: dict[str, str] = {}
    counts: dict[str, int] = {}
    unmapped: list[str] = []
    for node in model.graph.node:
        chain = node_modules(node)
        for name, cls in chain or []:
            counts[name] = counts.get(name, 0) + 1
            classes.setdefault(name, cls)
        if node.name in wanted:
            if chain:
                by_module.setdefault(chain[-1][0], []).append(node.name)
            else:
                unmapped.append(f"{node.name} ({node.op_type})")
    if unmapped:
        more = f" (and {len(unmapped) - _SHOWN} more)" if len(unmapped) > _SHOWN else ""
        raise InvalidArgumentError(
            f"The precision plan does not apply to the PyTorch source: {len(unmapped)} plan node(s) of {where} carry "
            f"no PyTorch module metadata ({SCOPES_KEY} or {NAMESPACE_KEY}), so the module to keep in FP32 is "
            f"unknown: {', '.join(unmapped[:_SHOWN])}{more}.",
            hint="Give --precision-plan-model the ONNX as `enginekit export` (dynamo exporter) wrote it: TorchScript "
            "exports, Paddle models and models rewritten by `enginekit prepare`/onnxsim have no such metadata (a "
            "prepared model keeps the export's node names). Or apply the plan to the ONNX model: --backend ort:fp16 "
            "or onnx-reference:fp16.")
    return _Mapped(by_module, classes, counts)


# --- source modules ---------------------------------------------------------------------------------------------
def _is_inside(name: str, outer: str) -> bool:
    return outer == "" or name.startswith(outer + ".")


def resolve_modules(root: Any, mapped: _Mapped, plan: PrecisionPlan, plan_model: Path) -> tuple[KeptModule, ...]:
    """The outermost of the selected modules, checked against the source (name present, same class)."""
    names = sorted(mapped.by_module, key=lambda n: (n.count(".") + (n != ""), n))
    kept: dict[str, list[str]] = {}
    kept_cls: dict[str, str] = {}
    seen: dict[int, str] = {}
    for name in names:
        outer = next((k for k in kept if _is_inside(name, k)), None)
        try:
            module = root.get_submodule(name)
        except AttributeError as exc:
            raise InvalidArgumentError(
                f"The precision plan's node {mapped.by_module[name][0]!r} was produced by module {name!r} of "
                f"{str(plan_model)!r}, and the PyTorch source has no module of that name.",
                hint="--precision-plan-model must be the ONNX exported from this source.") from exc
        want = mapped.classes.get(name, "").rsplit(".", 1)[-1]
        if want and type(module).__name__ != want:
            raise InvalidArgumentError(
                f"Module {name!r} is a {want} in {str(plan_model)!r} and a {type(module).__name__} in the PyTorch "
                "source.", hint="--precision-plan-model must be the ONNX exported from this source.")
        outer = outer if outer is not None else seen.get(id(module))  # a shared module: one set of hooks
        if outer is not None:
            kept[outer] += mapped.by_module[name]
            continue
        kept[name] = list(mapped.by_module[name])
        kept_cls[name] = type(module).__name__
        seen[id(module)] = name
    if "" in kept:
        log.warning("precision plan: node %r belongs to the model's own forward(); the whole model runs in FP32",
                    kept[""][0])
    order = {n: i for i, n in enumerate(plan.node_names())}
    return tuple(KeptModule(name, kept_cls[name], tuple(sorted(nodes, key=order.__getitem__)),
                            mapped.onnx_nodes.get(name, len(nodes))) for name, nodes in kept.items())


def torch_plan_for(settings: BackendSettings, precision: str, source_kind: str, root: Any) -> TorchPlan | None:
    """The modules ``settings.precision_plan`` keeps in FP32 in ``root`` (None at fp32/tf32 or without a plan)."""
    from enginekit.graph.load import load_model
    from enginekit.graph.precision import load_plan
    from enginekit.sources.detect import FACTORY

    if settings.precision_plan is None or precision not in REDUCED_FLOAT_PRECISIONS:
        return None
    plan = load_plan(settings.precision_plan)
    if plan.precision != precision:
        raise InvalidArgumentError(f"The precision plan is for {plan.precision}, this runner runs {precision}.",
                                   hint=f"Use a plan made for {precision}, or change its 'precision' field if its "
                                   "islands apply to both.")
    if source_kind != FACTORY:
        raise InvalidArgumentError(
            f"The precision plan does not apply to a {source_kind} source: it keeps Python nn.Modules in FP32, and "
            "only a Python model (file.py:factory or package.module:factory) has them.",
            hint="Run the Python model, or apply the plan to its ONNX export (--backend ort:fp16 or "
            "onnx-reference:fp16).")
    if settings.precision_plan_model is None:
        raise InvalidArgumentError(
            "--precision-plan on the torch/inductor backends needs --precision-plan-model: the ONNX the plan was "
            "made for, as exported by `enginekit export` (its node metadata names the PyTorch module of each node).")
    model = load_model(settings.precision_plan_model, load_external_data=False, check=False)
    mapped = map_plan_nodes(plan, model, repr(str(settings.precision_plan_model)))
    modules = resolve_modules(root, mapped, plan, settings.precision_plan_model)
    for m in modules:
        log.info("precision plan: %s (%s) runs in FP32: %d plan node(s) of its %d ONNX nodes", m.name or "(model)",
                 m.cls, len(m.plan_nodes), m.onnx_nodes)
    return TorchPlan(precision, settings.precision_plan, settings.precision_plan_model, modules)


# --- keeping modules in FP32 ------------------------------------------------------------------------------------
def _cast_tree(value: Any, src: Any, dst: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(dst) if value.dtype == src else value
    if isinstance(value, tuple):
        items = [_cast_tree(v, src, dst) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)  # namedtuples keep their type
    if isinstance(value, list):
        return [_cast_tree(v, src, dst) for v in value]
    if isinstance(value, dict):
        return {k: _cast_tree(v, src, dst) for k, v in value.items()}
    return value


def _hooks(dtype: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
    import torch

    def enter(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return _cast_tree(args, dtype, torch.float32), _cast_tree(kwargs, dtype, torch.float32)

    def leave(module: Any, args: Any, kwargs: Any, output: Any) -> Any:
        return _cast_tree(output, torch.float32, dtype)

    return enter, leave


def cast_keeping_fp32(root: Any, dtype: Any, names: Sequence[str]) -> list[Any]:
    """Cast ``root`` to ``dtype`` except the modules ``names`` (float32 weights, cast at their boundary).

    The kept modules' floating parameters and buffers keep their source values exactly: they are copied before
    the cast and written back after. Returns the hook handles.
    """
    import torch

    modules = [root.get_submodule(n) for n in names]
    if "" not in names:
        saved: list[Mapping[str, Any]] = [
            {k: t.detach().clone() for k, t in itertools.chain(m.named_parameters(remove_duplicate=False),
                                                               m.named_buffers(remove_duplicate=False))
             if t.is_floating_point()} for m in modules]
        root.to(dtype)
        with torch.no_grad():
            for m, values in zip(modules, saved, strict=True):
                m.to(torch.float32)
                for k, t in itertools.chain(m.named_parameters(remove_duplicate=False),
                                            m.named_buffers(remove_duplicate=False)):
                    if k in values:
                        t.copy_(values[k])
    enter, leave = _hooks(dtype)
    handles = []
    for m in modules:
        handles.append(m.register_forward_pre_hook(enter, with_kwargs=True))
        handles.append(m.register_forward_hook(leave, with_kwargs=True))
    return handles
