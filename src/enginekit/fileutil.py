"""Atomic file writes and output-path checks.

An atomic write goes to a temp file in the same folder, is synced, then renamed over the target, so a
reader sees the old file or the new one, never half of one. A new file gets the mode ``0o666 & ~umask``
(what ``open(path, "w")`` gives); a replaced file keeps its mode. An output path that is a folder, not a
regular file, or in a folder that cannot be written raises :class:`OutputPathError` (exit 2) naming it.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from enginekit.errors import OutputPathError


def current_umask() -> int:
    """The process umask (reading it means setting it; it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode a new file gets: ``0o666`` less the umask."""
    return 0o666 & ~current_umask()


def _stage(path: Path, data: bytes) -> Path:
    """``data`` in a synced temp file beside ``path`` with the mode ``path`` will have (a new file: 0o666 & ~umask;
    a replaced one: its mode); the temp file is removed when anything fails."""
    check_output_file(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            mode = new_file_mode()
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(tmp_name)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)  # mkstemp makes 0600
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return tmp
    except BaseException as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from exc
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; a new file gets 0o666 & ~umask, a replaced one keeps its mode."""
    p = Path(path)
    tmp = _stage(p, data)
    try:
        os.replace(tmp, p)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _write_error(p, exc) from exc
    return p


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_pair(first: tuple[Path, bytes], second: tuple[Path, bytes]) -> None:
    """Write two files as a pair: both temp files are written and synced before either is renamed into place.

    Used for an engine plan and its ``.json`` manifest: a crash can leave at worst a new plan beside the old
    manifest for the instant between the two renames, which the manifest's plan_sha256 reveals.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in (first, second):
            staged.append((_stage(path, data), path))
        for staged_tmp, path in staged:
            try:
                os.replace(staged_tmp, path)
            except OSError as exc:
                raise _write_error(path, exc) from exc
    finally:
        for staged_tmp, _ in staged:
            staged_tmp.unlink(missing_ok=True)


def check_output_file(path: str | Path, what: str = "Output file", *, probe: bool = False) -> Path:
    """``path`` if a file can be written there: not a folder or other non-file, in a writable folder.

    Raises:
        OutputPathError: it is a folder or a special file, its parent is a file, or the folder is read-only.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        st = None
    except NotADirectoryError as exc:
        raise _write_error(p, exc, what) from exc
    except OSError as exc:
        raise _write_error(p, exc, what) from exc
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise OutputPathError(f"{what} '{p}' is a folder, expected a file path.",
                              hint=f"Name a file inside it, e.g. '{p / 'out'}{p.suffix}'.")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OutputPathError(f"{what} '{p}' exists and is not a regular file (a device, pipe or socket).",
                              hint="Choose a path that is a regular file or does not exist yet.")
    check_writable_folder(p.parent, what=f"The folder of {what.lower()} '{p}'", probe=probe)
    return p


def check_writable_folder(folder: str | Path, what: str = "Output folder", *, probe: bool = False) -> Path:
    """``folder`` if files can be created in it (or in the nearest existing folder above it).

    With ``probe``, a temp file is created and removed there (permission bits do not stop root; a read-only
    mount or a pseudo file system does)."""
    f = Path(folder)
    at = f
    while not at.exists():
        if at.parent == at:
            break
        at = at.parent
    if at.exists() and not at.is_dir():
        raise OutputPathError(f"{what} '{f}' cannot be made: '{at}' is a file, not a folder.",
                              hint="Choose another output path.")
    if at.exists() and not os.access(at, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} '{f}' is not writable ('{at}' is read-only for this user).",
                              hint="Choose a writable location or fix the folder's permissions.")
    if probe and at.is_dir():
        try:
            fd, name = tempfile.mkstemp(dir=at, prefix=".enginekit-probe-")
        except OSError as exc:
            raise OutputPathError(f"{what} '{f}' is not writable: creating a file in '{at}' failed: "
                                  f"{exc.strerror or exc}.",
                                  hint="Choose a writable location or fix the folder's permissions.") from exc
        os.close(fd)
        os.unlink(name)
    return f


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when ``a`` and ``b`` are one file: same path once resolved, or (both existing) same inode."""
    pa, pb = Path(a), Path(b)
    try:
        if os.path.samefile(pa, pb):
            return True
    except OSError:
        pass
    try:
        return pa.resolve() == pb.resolve()
    except (OSError, RuntimeError):
        return os.path.abspath(pa) == os.path.abspath(pb)


def refuse_overwriting_inputs(output: Path, inputs: Iterable[tuple[str, Path | None]], option: str) -> None:
    """Raise OutputPathError when ``output`` is one of ``inputs`` (``(name, path)``), by resolved identity."""
    for name, path in inputs:
        if path is not None and same_file(output, path):
            raise OutputPathError(f"{option} '{output}' is the same file as {name} '{path}': writing it would "
                                  "destroy an input.", hint=f"Give {option} another path.")


def _write_error(path: Path, exc: OSError, what: str = "Output file") -> OutputPathError:
    reason = exc.strerror or str(exc)
    hint = {errno.EACCES: "Choose a writable location or fix the permissions.",
            errno.EPERM: "Choose a writable location or fix the permissions.",
            errno.EROFS: "That file system is read-only: choose another location.",
            errno.ENOSPC: "Free some disk space or choose another location.",
            errno.ENOTDIR: "A part of the path is a file, not a folder: choose another path.",
            errno.EISDIR: "That path is a folder: name a file."}.get(exc.errno or 0, "Choose another output path.")
    return OutputPathError(f"Could not write {what.lower()} '{path}': {reason}.", hint=hint)


def replace_folder(staging: Path, target: Path) -> None:
    """Rename a fully written ``staging`` folder to ``target``. A folder already there is moved aside first and
    removed after, so at every moment ``target`` is either the old folder or the new one."""
    old: Path | None = None
    if target.is_dir() and any(target.iterdir()):
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.replace(target, old / target.name)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
