"""File plumbing shared by every writer: atomic replacement and output-path checks."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from smat_deploy.errors import SmatError


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """Fail early, before any work, when ``path`` cannot be written (missing or non-folder parent)."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise SmatError(f"output folder does not exist: {parent}")
    if path.is_dir():
        raise SmatError(f"output path is a folder, expected a file: {path}")
    if not os.access(parent, os.W_OK):
        raise SmatError(f"output folder is not writable: {parent}")
    return path


def prepare_folder(path: str | os.PathLike[str], what: str = "output") -> Path:
    """Create the folder ``path`` if needed; refuse a file in its place or a folder that cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SmatError(f"{what} folder is a file: {path}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SmatError(f"cannot create {what} folder {path}: {err.strerror}") from None
    if not os.access(path, os.W_OK):
        raise SmatError(f"{what} folder is not writable: {path}")
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    On any error the temporary file is removed and an existing ``path`` is left untouched, so a
    crash never leaves a half-written artifact under the final name.
    """
    path = check_output_path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)  # mkstemp creates 0600; give the final file ordinary permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sha256_of(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
