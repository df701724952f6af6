"""Atomic file writing and hashing: a killed build never leaves a file that looks valid."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from edgecnn.errors import FilesystemError

# A file edgecnn writes into every directory it creates (run directories, bundles), so
# that it can tell its own folders from a user's: only a folder holding this marker is
# ever reused, replaced or cleaned.
OWNER_MARKER = ".edgecnn-owned"


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    The temporary name starts with ``.tmp-`` in the same directory, so the final
    ``os.replace`` is atomic on POSIX and a crash leaves only an obviously partial file
    (or directory) that nothing reads.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Keep the suffix: some writers (Keras' model.save) pick the format from it.
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{target.stem}.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    os.unlink(tmp)  # the writer creates it (a file, or a directory for SavedModel)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        elif tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(target: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically and return the path."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(target)


def write_text_atomic(target: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``target`` atomically."""
    return write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target: str | Path, data: object) -> Path:
    """Write ``data`` as indented JSON atomically."""
    return write_text_atomic(target, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file, or of a directory's files in sorted path order."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            digest.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(chunk), b""):
                digest.update(block)
    return digest.hexdigest()


def path_size(path: str | Path) -> int:
    """Bytes in a file, or in all files under a directory (SavedModel folders)."""
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def clean_stale_temporaries(directory: str | Path) -> None:
    """Remove ``.tmp-*`` leftovers of a killed earlier run."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for p in directory.rglob(".tmp-*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _marker_kind(directory: Path) -> str | None:
    try:
        data = json.loads((directory / OWNER_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data.get("kind") if isinstance(data, dict) and data.get("created_by") == "edgecnn" else None


def owned_kind(directory: str | os.PathLike) -> str | None:
    """The kind (``run``, ``bundle`` ...) edgecnn recorded when it created ``directory``, else None."""
    return _marker_kind(Path(directory))


def _write_marker(directory: Path, kind: str) -> None:
    from edgecnn import __version__

    write_json_atomic(directory / OWNER_MARKER, {"created_by": "edgecnn", "kind": kind, "edgecnn": __version__})


def claim_output_dir(path: str | os.PathLike, kind: str, *, what: str = "--out",
                     legacy: tuple[str, ...] = ()) -> Path:
    """Create (or re-open) a directory edgecnn owns, for work that is added to in place.

    A missing or empty directory is created and marked; one with edgecnn's marker of the
    same ``kind`` is re-used. Anything else -- a file, a folder of the user's files, a
    directory of another kind -- is refused, so nothing edgecnn did not create is ever
    cleaned or overwritten.

    Args:
        path: the directory.
        kind: what it holds (``run``, ``bundle`` ...), recorded in the marker.
        what: the option or key that named it, for the error message.
        legacy: names whose joint presence marks a directory an older edgecnn created
            without a marker (e.g. ``("stages", "manifest.json")``); it is adopted.

    Raises:
        FilesystemError: the path is not edgecnn's, or cannot be created.
    """
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise FilesystemError(f"{what} {directory}: exists and is not a folder; choose a folder path")
    if directory.is_dir():
        found = _marker_kind(directory)
        if found == kind:
            return directory
        if found is not None:
            raise FilesystemError(f"{what} {directory}: holds an edgecnn {found}, not a {kind}; choose another folder")
        if any(directory.iterdir()) and not (legacy and all((directory / name).exists() for name in legacy)):
            raise FilesystemError(f"{what} {directory}: exists and holds files edgecnn did not create; "
                                  "choose a new or empty folder (edgecnn never overwrites what it did not write)")
    directory.mkdir(parents=True, exist_ok=True)
    _write_marker(directory, kind)
    return directory


@contextlib.contextmanager
def replace_output_dir(path: str | os.PathLike, kind: str, *, force: bool = False,
                       what: str = "--out") -> Iterator[Path]:
    """Write a whole directory new, then rename it into place (a bundle, say).

    Yields an empty temporary directory next to ``path``. On success it gets edgecnn's
    marker and replaces ``path``: a missing or empty ``path`` always; an existing one
    only with ``force`` and only if edgecnn created it (its marker, same ``kind``). The
    old directory is renamed aside before the new one is renamed in, and removed last,
    so a crash leaves either the old or the new folder, never a mix.

    Raises:
        FilesystemError: ``path`` holds something edgecnn did not create, or exists and
            ``force`` is not set.
    """
    target = Path(path)
    if target.exists() or target.is_symlink():
        if not target.is_dir() or target.is_symlink():
            raise FilesystemError(f"{what} {target}: exists and is not a folder edgecnn made; choose another path")
        found = _marker_kind(target)
        if found is None and any(target.iterdir()):
            raise FilesystemError(f"{what} {target}: exists and holds files edgecnn did not create; choose a new "
                                  "or empty folder (--force replaces only a folder edgecnn made)")
        if found is not None and found != kind:
            raise FilesystemError(f"{what} {target}: holds an edgecnn {found}, not a {kind}; choose another folder")
        if found is not None and not force:
            raise FilesystemError(f"{what} {target}: an edgecnn {kind} is already there; pass --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}.", dir=target.parent))
    try:
        yield tmp
        _write_marker(tmp, kind)
        old = None
        if target.is_dir():
            old = Path(tempfile.mkdtemp(prefix=f".tmp-old-{target.name}.", dir=target.parent))
            os.replace(target, old / "dir")
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
