"""Input dim names before a build: TensorRT forces dims with one name to be equal (see graph/dim_names.py).

``enginekit build`` renames shared ``?``/empty names, and shared names that the profiles give different
sizes, to ``<input>_dim<axis>`` (``--keep-dim-names`` turns this off); the renames are logged, kept in the
manifest (``renamed_dims``) and in the cache key.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enginekit.errors import InvalidArgumentError
from enginekit.graph.dim_names import DimRename, apply_renames, plan_renames, rename_summary, shared_dim_names
from enginekit.settings import BuildSettings

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)


def profile_shapes(profiles: Sequence[Any]) -> dict[str, list[tuple[int, ...]]]:
    """Input name -> every MIN/OPT/MAX shape of the profiles, in profile order (aligned across inputs)."""
    out: dict[str, list[tuple[int, ...]]] = {}
    for p in profiles:
        for r in p.shapes:
            out.setdefault(r.name, []).extend(r.shapes())
    return out


def unique_dim_names(proto: onnx.ModelProto, s: BuildSettings, profiles: Sequence[Any]) -> list[DimRename]:
    """Rename, in ``proto``, the input dims TensorRT would wrongly tie; return what was renamed.

    With ``s.unique_dim_names`` off, a shared placeholder whose dims the profiles make differ is a user
    error here instead of TensorRT's "Input dimensions with this name have different constant values".
    """
    shapes = profile_shapes(profiles)
    if not s.unique_dim_names:
        for shared in shared_dim_names(proto, shapes):
            if shared.placeholder and shared.differ:
                raise InvalidArgumentError(
                    f"{shared.describe()}, and the profile gives them different sizes: TensorRT forces input dims "
                    "with one name to be equal, so this cannot build with --keep-dim-names.",
                    hint="Leave out --keep-dim-names (enginekit then names them <input>_dim<axis>), or give these "
                    "dims equal sizes in the profile.")
        return []
    renames = plan_renames(proto, shapes)
    apply_renames(proto, renames)
    if renames:
        log.info("renamed input dims that TensorRT would force equal: %s", rename_summary(renames))
    return renames


def write_renamed(proto: onnx.ModelProto, model: Path, folder: Path) -> Path:
    """Save the renamed model in ``folder`` under the original file name; external weights are copied along."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    out = folder / "renamed-dims" / model.name
    out.parent.mkdir(parents=True, exist_ok=True)
    external = any(uses_external_data(t) for t in proto.graph.initializer)
    if external:
        load_external_data_for_model(proto, str(model.parent))
    onnx.save_model(proto, str(out), save_as_external_data=external, all_tensors_to_one_file=True,
                    location=f"{model.name}.data")
    return out
