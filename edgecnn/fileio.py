"""Atomic file writing and hashing: a killed build never leaves a file that looks valid."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Iterator, Mapping

from edgecnn.errors import FilesystemError

# A file edgecnn writes into every directory it creates (run directories, bundles), so
# that it can tell its own folders from a user's: only a folder holding this marker is
# ever reused, replaced or cleaned.
OWNER_MARKER = ".edgecnn-owned"


def _naming(exc: OSError, target: Path, *temporaries: Path) -> OSError:
    """``exc`` with ``target`` as its file name when it names a temporary or nothing.

    A full disk or a read-only folder surfaces while edgecnn writes ``.tmp-*`` names
    (or, for ``write()``, with no name at all); the person needs to read the path they
    asked for. The CLI prints any ``OSError`` as ``PATH: reason (ERRNO); fix``.
    """
    named = exc.filename
    temporary = named is not None and (Path(named) in temporaries or Path(named).name.startswith(".tmp-"))
    if exc.errno is None or (named is not None and not temporary):
        return exc
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(target))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        with contextlib.suppress(OSError):
            path.unlink()


def make_dirs(directory: str | os.PathLike) -> Path:
    """``mkdir -p`` that names the file in the way when a path component is a file.

    ``Path.mkdir(exist_ok=True)`` reports "File exists" for ``a_file/sub``, which reads
    as if the folder were there; the real problem is ENOTDIR.

    Raises:
        OSError: ENOTDIR naming ``directory``, or the OS's own error (read-only, full).
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(directory)) from None
    return directory


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    The temporary name starts with ``.tmp-`` in the same directory, so the final
    ``os.replace`` is atomic on POSIX and a crash leaves only an obviously partial file
    (or directory) that nothing reads. Whatever fails -- the writer, a full disk, a
    read-only folder -- the temporary is removed and ``target`` is untouched.

    Raises:
        OSError: the folder cannot be created or written; named by ``target`` (not the
            temporary), so the one error line names the path the person chose.
    """
    target = Path(target)
    try:
        make_dirs(target.parent)
        # Keep the suffix: some writers (Keras' model.save) pick the format from it.
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{target.stem}.", suffix=target.suffix, dir=target.parent)
    except OSError as exc:
        raise _naming(exc, target, target.parent) from None
    os.close(fd)
    os.unlink(tmp)  # the writer creates it (a file, or a directory for SavedModel)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp_path, target)
    except OSError as exc:
        raise _naming(exc, target, tmp_path) from None
    finally:
        _remove(tmp_path)


@contextlib.contextmanager
def atomic_writer(target: str | Path, mode: str = "w", **open_args) -> Iterator:
    """Open a ``.tmp-`` file next to ``target`` for writing; rename it onto ``target`` on success.

    For writers that stream (the demo's per-frame log): readers never see a half file,
    and on any failure -- a full disk included -- the temporary is removed.

    Args:
        target: the final path.
        mode: ``"w"`` (text, UTF-8 unless ``encoding`` is given) or ``"wb"``.
        **open_args: passed to :func:`open`.
    """
    if "b" not in mode:
        open_args.setdefault("encoding", "utf-8")
    with atomic_path(target) as tmp:
        with open(tmp, mode, **open_args) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def write_bytes_atomic(target: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically and return the path."""
    with atomic_writer(target, "wb") as fh:
        fh.write(data)
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
    from edgecnn._version import __version__

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
    make_dirs(directory)
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
    try:
        make_dirs(target.parent)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}.", dir=target.parent))
    except OSError as exc:
        raise _naming(exc, target, target.parent) from None
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
    except OSError as exc:
        raise _inside(exc, tmp, target) from None
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)


def _inside(exc: OSError, tmp: Path, target: Path) -> OSError:
    """``exc`` naming the file under ``target`` that a failed write under ``tmp`` stood for."""
    if exc.errno is None:
        return exc
    if exc.filename is None:
        return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(target))
    try:
        relative = Path(exc.filename).relative_to(tmp)
    except ValueError:
        return _naming(exc, target)
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(target / relative))


_JSON_TYPE_NAMES = {dict: "object", list: "list", type(None): "null", str: "string", int: "number",
                    float: "number", bool: "boolean"}


def json_type_name(value: object) -> str:
    """What a parsed JSON value is, in JSON's words (for "holds a JSON list, not ..." messages)."""
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


# --------------------------------------------------------------- reproducible zip archives

# The earliest date a zip entry can carry (what reproducible-build tools use). Archive
# members are stamped "now" by default, so the same content would give other bytes and
# another sha256 -- the cache keys of later stages and the manifests.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def reproducible_zip_info(name: str, compress_type: int = zipfile.ZIP_STORED) -> zipfile.ZipInfo:
    """A zip entry header that depends on ``name`` only: the epoch date, Unix, mode 0644."""
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.create_system = 3  # "Unix" on every OS, so Windows builds give the same bytes
    info.external_attr = 0o644 << 16
    info.compress_type = compress_type
    return info


def write_reproducible_npz(target: str | Path | IO[bytes], arrays: Mapping[str, object]) -> None:
    """``numpy.savez`` (uncompressed, no pickles) with reproducible member headers.

    Args:
        target: a path (written in place; wrap it in :func:`atomic_path`) or a binary file.
        arrays: member name (without ``.npy``) -> array, in the order to store them.
    """
    import numpy as np

    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            with zf.open(reproducible_zip_info(f"{name}.npy"), "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)
