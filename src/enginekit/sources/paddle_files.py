"""The files of a Paddle inference model: ``PREFIX.json`` (PIR) or ``PREFIX.pdmodel`` (legacy) + ``PREFIX.pdiparams``,
given as either file, their prefix, or a folder. File names only: paddle is never imported."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from enginekit.errors import ModelLoadError

PIR, LEGACY = "pir", "legacy"
_PROGRAM_SUFFIXES = {".json": PIR, ".pdmodel": LEGACY}
PARAMS_SUFFIX = ".pdiparams"


@dataclass(frozen=True)
class PaddleModelFiles:
    """The files of one Paddle inference model."""

    program: Path  # PREFIX.json (PIR) or PREFIX.pdmodel (legacy)
    params: Path | None  # PREFIX.pdiparams; None when the model was saved without one
    format: str  # "pir" | "legacy"

    @property
    def prefix(self) -> Path:
        return self.program.with_suffix("")

    def to_dict(self) -> dict[str, object]:
        return {
            "program": str(self.program),
            "params": None if self.params is None else str(self.params),
            "format": self.format,
        }


def _with_params(program: Path) -> PaddleModelFiles:
    params = program.with_suffix(PARAMS_SUFFIX)
    return PaddleModelFiles(program, params if params.is_file() else None, _PROGRAM_SUFFIXES[program.suffix])


def _from_prefix(prefix: Path) -> PaddleModelFiles | None:
    """PREFIX.json before PREFIX.pdmodel (Paddle 3 writes both for some exported models)."""
    for suffix in _PROGRAM_SUFFIXES:
        program = Path(f"{prefix}{suffix}")
        if program.is_file():
            return _with_params(program)
    return None


def _is_pir_program(path: Path) -> bool:
    """A PIR program file starts with {"base_code":{"magic":"pir",...}; a config.json beside it does not."""
    try:
        with path.open("rb") as fh:
            head = fh.read(256)
    except OSError:
        return False
    return b'"magic":"pir"' in head.replace(b" ", b"")


def _from_folder(folder: Path) -> PaddleModelFiles:
    prefixes = sorted({p.with_suffix("") for p in folder.glob("*.pdmodel")}
                      | {p.with_suffix("") for p in folder.glob("*.json") if _is_pir_program(p)})
    found = _from_prefix(prefixes[0]) if len(prefixes) == 1 else None
    if found is not None:
        return found
    if len(prefixes) > 1:
        names = ", ".join(p.name for p in prefixes)
        raise ModelLoadError(
            f"Folder {str(folder)!r} holds several Paddle models ({names}); give the one to use as "
            f"{str(folder / prefixes[0].name)!r} or its .json/.pdmodel file."
        )
    raise ModelLoadError(
        f"Folder {str(folder)!r} holds no Paddle inference model (no NAME.pdmodel, and no NAME.json "
        "beside a NAME.pdiparams).",
        hint="Save the model with paddle.jit.save(layer, 'folder/model', input_spec=[...]).",
    )


def resolve_paddle_model(source: str | Path) -> PaddleModelFiles:
    """Find the program and params files of a Paddle model given as prefix, either file, or folder.

    Imports nothing heavy; raises :class:`ModelLoadError` naming what was looked for.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return _from_folder(path)
    if path.is_file():
        if path.suffix in _PROGRAM_SUFFIXES:
            return _with_params(path)
        if path.suffix == PARAMS_SUFFIX:
            found = _from_prefix(path.with_suffix(""))
            if found is None:
                raise ModelLoadError(
                    f"Params file {str(path)!r} has no program beside it: expected "
                    f"{str(path.with_suffix('.json'))!r} (PIR) or {str(path.with_suffix('.pdmodel'))!r} (legacy)."
                )
            return found
        raise ModelLoadError(
            f"{str(path)!r} is not a Paddle inference model: expected a .json (PIR) or .pdmodel program, "
            "its .pdiparams, their common prefix, or the folder that holds them."
        )
    found = _from_prefix(path)
    if found is not None:
        return found
    raise ModelLoadError(
        f"Paddle model {str(path)!r} not found: neither it nor {str(path)}.json / {str(path)}.pdmodel exists.",
        hint="Give the prefix passed to paddle.jit.save, its .json/.pdmodel/.pdiparams file, or its folder.",
    )


def looks_like_paddle_model(source: str | Path) -> bool:
    """True when ``source`` names a Paddle model (cheap: file names only, never imports paddle)."""
    try:
        resolve_paddle_model(source)
    except ModelLoadError:
        return False
    return True
