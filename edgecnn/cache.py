"""The shared stage cache: stage records and their files, addressed by content, for every run directory.

A stage's key (:func:`edgecnn.pipeline._stage_key`) is already a content hash of
everything the stage reads, so a finished stage is worth keeping for any build that
computes the same key, whatever its ``--out``. The cache lives in one folder::

    $EDGECNN_CACHE/stages (default $XDG_CACHE_HOME/edgecnn/stages, else ~/.cache/edgecnn/stages)
      .edgecnn-owned            marker: only a folder holding it is ever written or pruned
      CACHEDIR.TAG              tells backup tools to skip the folder
      objects/ab/abcdef...      one file per distinct content, named by its sha256
      entries/<key>/record.json the stage record, plus each artifact's files -> objects
      work/<key>/               scratch of a stage being built (epoch checkpoints)
      locks/<key>.lock          flock'ed while a build computes or restores <key>
      tmp/                      entries and objects being written (renamed into place)

Objects are stored once per content: two stages (or two builds) that write an identical
file share one object. A run directory gets each file as a hard link to its object
(same file system) or as a copy, so it stays complete when the cache is pruned: a link
keeps the data alive, a copy is independent. Folders (the bundle, a SavedModel) are
stored file by file: the entry lists each file's relative path, sha256 and mode.

Integrity: an entry is used only when its record parses and every object still hashes to
its name; anything else is a corrupt entry, discarded with a one-line warning and rebuilt.
Entries are written to ``tmp/`` and renamed into ``entries/``; objects likewise. A build
holds ``locks/<key>.lock`` while it looks up, builds and publishes ``<key>``, so a second
build of the same stage waits and then restores the first one's result.

This module imports nothing heavy (``edgecnn cache info`` never loads TensorFlow).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from edgecnn.errors import FilesystemError
from edgecnn.fileio import (OWNER_MARKER, atomic_path, claim_output_dir, make_dirs, owned_kind, sha256_file,
                            write_json_atomic)

__all__ = ["CACHE_ENV", "CacheInfo", "PruneResult", "StageCache", "cache_root", "default_cache", "parse_size"]

CACHE_ENV = "EDGECNN_CACHE"
# Values of EDGECNN_CACHE that turn the shared cache off (builds keep their run-dir cache).
_OFF = ("off", "none", "0", "false", "no")
RECORD_FILE = "record.json"
# locks/<this>: the cache-wide lock on objects/ (a name no 64-hex stage key can take).
_OBJECTS_LOCK = "objects.lock"
_CACHEDIR_TAG = ("Signature: 8a477f597d28d172789f06886806bc55\n"
                 "# This file marks the edgecnn stage cache (see https://bford.info/cachedir/).\n")
# Temporaries younger than this may belong to a build that is still writing them.
_TMP_GRACE_S = 3600


def cache_root(environ: dict | None = None) -> Path | None:
    """Where the shared stage cache lives: ``stages/`` in ``$EDGECNN_CACHE``,
    ``$XDG_CACHE_HOME/edgecnn`` or ``~/.cache/edgecnn``; None when ``EDGECNN_CACHE`` is ``off``.

    The stage cache has a folder of its own in edgecnn's cache folder: the developer
    tools keep other things there (``emulated-pi/``, ``x86-tflite-runtime/``), and only a
    folder edgecnn created and marked is ever pruned.
    """
    env = os.environ if environ is None else environ
    value = env.get(CACHE_ENV, "").strip()
    if value.lower() in _OFF:
        return None
    if value:
        return Path(value).expanduser() / "stages"
    xdg = env.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "edgecnn" / "stages"


def default_cache() -> "StageCache | None":
    """The cache :func:`cache_root` names (not yet created), or None when it is turned off."""
    root = cache_root()
    return StageCache(root) if root is not None else None


def parse_size(text: str) -> int:
    """Bytes in ``500M``, ``2G``, ``1.5GB``, ``123`` (powers of 1024).

    Raises:
        ValueError: not a size.
    """
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    s = text.strip().upper().removesuffix("IB").removesuffix("B")
    number, unit = (s[:-1], s[-1]) if s and s[-1] in units else (s, "")
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"'{text}' is not a size; write e.g. 500M, 2G or 1073741824") from None
    if value < 0:
        raise ValueError(f"'{text}' is negative; give a size of 0 or more")
    return int(value * units[unit])


def _object_rel(sha256: str) -> str:
    return f"objects/{sha256[:2]}/{sha256}"


def _is_hex64(text: object) -> bool:
    return isinstance(text, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _tree_files(path: Path) -> list[tuple[str, Path]]:
    """``(relative path, file)`` of an artifact: itself (relative path ``""``) or a folder's files."""
    if path.is_dir():
        return [(p.relative_to(path).as_posix(), p) for p in sorted(path.rglob("*")) if p.is_file()]
    return [("", path)]


@dataclass
class CacheInfo:
    """What ``edgecnn cache info`` prints."""

    root: Path
    exists: bool
    entries: int = 0
    objects: int = 0
    total_bytes: int = 0
    by_stage: dict[str, dict] = field(default_factory=dict)  # stage -> {"entries": n, "bytes": n}
    work_dirs: int = 0


@dataclass
class PruneResult:
    """What ``edgecnn cache prune`` removed (or would remove with ``dry_run``)."""

    entries: list[str] = field(default_factory=list)  # "<stage> <key12>"
    objects: int = 0
    freed_bytes: int = 0
    other: int = 0  # stale work folders and temporaries
    dry_run: bool = False


class StageCache:
    """The shared cache at ``root`` (see the module docstring for its layout).

    Args:
        root: the cache folder; created (and marked as edgecnn's) by :meth:`open`.
        env_named: whether ``EDGECNN_CACHE`` chose the folder (for the error line).
    """

    def __init__(self, root: str | os.PathLike, env_named: bool | None = None):
        self.root = Path(root)
        self.env_named = bool(os.environ.get(CACHE_ENV, "").strip()) if env_named is None else env_named
        self._opened = False

    # -- opening ------------------------------------------------------------------------
    def _unusable(self, exc: OSError | FilesystemError) -> FilesystemError:
        reason = exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
        name = errno.errorcode.get(exc.errno or 0, "") if isinstance(exc, OSError) else ""
        where = (f"stage cache {self.root} ({CACHE_ENV}={os.environ.get(CACHE_ENV, '').strip()})" if self.env_named
                 else f"stage cache {self.root} (the default; {CACHE_ENV} moves it)")
        return FilesystemError(f"{where}: cannot be used: {reason}{f' ({name})' if name else ''}; "
                               f"set {CACHE_ENV} to a writable folder, or {CACHE_ENV}=off to build without "
                               "the shared cache")

    def open(self) -> "StageCache":
        """Create the cache folder (or re-open edgecnn's) and check that it is writable.

        Raises:
            FilesystemError: the folder cannot be created or written, or holds files
                edgecnn did not create (one line naming ``EDGECNN_CACHE`` and the fix).
        """
        if self._opened:
            return self
        try:
            if owned_kind(self.root) != "cache":
                self._create()
            for sub in ("objects", "entries", "work", "locks", "tmp"):
                make_dirs(self.root / sub)
            # Existing folders can still be read-only (a read-only mount): probe a write.
            fd, probe = tempfile.mkstemp(prefix="probe-", dir=self.root / "tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise self._unusable(exc) from None
        except FilesystemError as exc:
            if "did not create" in str(exc) or "not a folder" in str(exc) or "holds an edgecnn" in str(exc):
                raise FilesystemError(f"{exc} (or set {CACHE_ENV}=off)") from None
            raise
        self._opened = True
        return self

    def _create(self) -> None:
        """Make the cache folder whole, then rename it in: two builds starting at once
        never see each other's half-made folder (which would look like a user's)."""
        make_dirs(self.root.parent)
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{self.root.name}.", dir=self.root.parent))
        try:
            claim_output_dir(staging, "cache")
            (staging / "CACHEDIR.TAG").write_text(_CACHEDIR_TAG)
            try:
                os.replace(staging, self.root)  # onto a missing or empty folder only
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if owned_kind(self.root) != "cache":  # lost no race: a user's folder or a file; say so
            claim_output_dir(self.root, "cache", what=f"stage cache ({CACHE_ENV})")

    # -- paths --------------------------------------------------------------------------
    def entry_dir(self, key: str) -> Path:
        """The folder of the finished entry ``key`` (it holds ``record.json``)."""
        return self.root / "entries" / key

    def work_dir(self, key: str) -> Path:
        """A scratch folder for the stage being built under ``key``, created on demand.

        This is where a training stage keeps its epoch checkpoints: it survives a killed
        build (the next build with the same key resumes from it), only the build holding
        the key's lock writes it, and the pipeline removes it once the stage's entry is
        published. Write files in it atomically (:func:`edgecnn.fileio.atomic_path`).
        """
        try:
            return make_dirs(self.root / "work" / key)
        except OSError as exc:
            raise self._unusable(exc) from None

    def has(self, key: str) -> bool:
        """Whether a (not yet verified) entry ``key`` exists."""
        return (self.entry_dir(key) / RECORD_FILE).is_file()

    # -- locking ------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, key: str, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold ``locks/<key>.lock`` exclusively (``flock``; the kernel drops it if the process dies).

        Args:
            key: the stage key.
            on_wait: called with a description of the holder when another process holds
                the lock (then this one waits for it).
        """
        import fcntl

        try:
            fd = os.open(self.root / "locks" / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise self._unusable(exc) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                    on_wait(f"PID {text}" if text.isdigit() else "another process")
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)

    # -- reading ------------------------------------------------------------------------
    def lookup(self, key: str) -> tuple[dict | None, str | None]:
        """The entry ``key``'s record after checking every object's content.

        Returns:
            ``(record, None)`` for a sound entry, ``(None, None)`` when there is none, and
            ``(None, problem)`` for a corrupt one (the caller warns and calls :meth:`discard`).
        """
        path = self.entry_dir(key) / RECORD_FILE
        if not path.exists():
            return None, None
        try:
            record = json.loads(path.read_text())
        except ValueError:
            return None, "its record is not valid JSON"
        except OSError as exc:
            return None, f"its record cannot be read ({exc.strerror or exc})"
        problem = self._entry_problem(record, key)
        if problem is not None:
            return None, problem
        for files in record["files"].values():
            for rel, sha, size, _mode in files:
                obj = self.root / _object_rel(sha)
                try:
                    if obj.stat().st_size != size or sha256_file(obj) != sha:
                        return None, f"object {sha[:12]} ({rel or 'file'}) no longer matches its sha256"
                except OSError:
                    return None, f"object {sha[:12]} is missing"
        with contextlib.suppress(OSError):
            os.utime(path)  # last use, for prune --older-than and --max-size
        return record, None

    @staticmethod
    def _entry_problem(record: object, key: str) -> str | None:
        if not isinstance(record, dict) or record.get("key") != key:
            return "its record is not one for this key"
        artifacts, files = record.get("artifacts"), record.get("files")
        if not isinstance(artifacts, dict) or not isinstance(files, dict) or set(artifacts) != set(files):
            return "its record does not list each artifact's files"
        for name, listing in files.items():
            if not isinstance(listing, list):
                return f"its artifact '{name}' has no file list"
            for row in listing:
                if not (isinstance(row, list) and len(row) == 4 and isinstance(row[0], str) and _is_hex64(row[1])
                        and isinstance(row[2], int) and isinstance(row[3], int)):
                    return f"its artifact '{name}' has a malformed file row"
                if row[0].startswith("/") or ".." in row[0].split("/"):
                    return f"its artifact '{name}' names a file outside the artifact"
        return None

    def discard(self, key: str) -> None:
        """Remove the entry ``key`` and any of its objects that no longer match their name."""
        entry = self.entry_dir(key)
        try:
            record = json.loads((entry / RECORD_FILE).read_text())
        except (OSError, ValueError):
            record = None
        # Shape-safe walk: a record of the wrong shape must still be removed, or it sticks.
        for digest in self._referenced(record if isinstance(record, dict) else None):
            obj = self.root / _object_rel(digest)
            with contextlib.suppress(OSError):
                if obj.is_file() and sha256_file(obj) != digest:
                    obj.unlink()
        shutil.rmtree(entry, ignore_errors=True)

    def restore(self, record: dict, out_dir: Path) -> str:
        """Put the files of the (looked-up) entry ``record`` into ``out_dir``.

        Each file becomes a hard link to its object, or a copy where linking is not
        possible (another file system) or the object's mode differs. Every artifact is
        renamed into place whole, so an interrupted restore leaves no half folder.

        Returns:
            ``"hardlink"``, ``"copy"`` or ``"mixed"``: how the run directory holds them.
        """
        how: set[str] = set()
        # An OSError here is the run directory's (read-only, full): the CLI names the path.
        for name, item in record["artifacts"].items():
            listing = record["files"][name]
            target = out_dir / item["path"]
            with atomic_path(target) as tmp:
                if len(listing) == 1 and listing[0][0] == "":
                    how.add(self._place(listing[0], tmp))
                else:  # a folder, file by file
                    tmp.mkdir()
                    for row in listing:
                        dest = tmp / row[0]
                        make_dirs(dest.parent)
                        how.add(self._place(row, dest))
        return how.pop() if len(how) == 1 else "mixed" if how else "hardlink"

    def _place(self, row: list, dest: Path) -> str:
        _rel, sha, _size, mode = row
        obj = self.root / _object_rel(sha)
        if (obj.stat().st_mode & 0o777) == mode:
            try:
                os.link(obj, dest)
                return "hardlink"
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                    raise
        shutil.copyfile(obj, dest)
        os.chmod(dest, mode)
        return "copy"

    # -- writing ------------------------------------------------------------------------
    def publish(self, key: str, record: dict, out_dir: Path) -> str:
        """Store the stage record ``record`` and its artifact files (in ``out_dir``) as entry ``key``.

        Each file is linked into ``objects/`` (copied across file systems) unless an
        object of that content is already there. Call it holding :meth:`lock` of ``key``.

        Returns:
            how the run directory's files relate to the cache: ``"hardlink"`` (they are
            the objects), ``"copy"`` or ``"mixed"``.

        Raises:
            FilesystemError: the cache cannot be written (one line, naming the fix).
        """
        try:
            with self._objects_lock(exclusive=False):
                return self._publish(key, record, out_dir)
        except OSError as exc:
            raise self._unusable(exc) from None

    def _publish(self, key: str, record: dict, out_dir: Path) -> str:
        # Under the shared objects lock (see publish).
        how: set[str] = set()
        staging = Path(tempfile.mkdtemp(prefix=f"entry-{key[:12]}-", dir=self.root / "tmp"))
        try:
            files: dict[str, list] = {}
            for name, item in record["artifacts"].items():
                path = out_dir / item["path"]
                rows = []
                for rel, f in _tree_files(path):
                    sha = item["sha256"] if rel == "" else sha256_file(f)
                    rows.append([rel, sha, f.stat().st_size, f.stat().st_mode & 0o777])
                    how.add(self._store_object(f, sha))
                files[name] = rows
            write_json_atomic(staging / RECORD_FILE, {**record, "files": files,
                                                      "stored_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            entry = self.entry_dir(key)
            if entry.exists():  # a corrupt one we replace (we hold the key's lock)
                shutil.rmtree(entry)
            os.replace(staging, entry)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return how.pop() if len(how) == 1 else "mixed" if how else "hardlink"

    def _store_object(self, source: Path, sha: str) -> str:
        obj = self.root / _object_rel(sha)
        if obj.exists():
            same = os.path.samestat(obj.stat(), source.stat())
            if same or sha256_file(obj) == sha:
                return "hardlink" if same else "copy"
            obj.unlink()  # corrupt: replaced below
        make_dirs(obj.parent)
        tmp = self.root / "tmp" / f"obj-{sha[:16]}-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        try:
            os.link(source, tmp)
            how = "hardlink"
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                raise
            shutil.copy2(source, tmp)
            how = "copy"
        os.replace(tmp, obj)
        return how

    def finish_work(self, key: str) -> None:
        """Remove the scratch folder of ``key`` (its stage is published)."""
        shutil.rmtree(self.root / "work" / key, ignore_errors=True)

    # -- info and prune -----------------------------------------------------------------
    def _entries(self) -> list[tuple[str, Path, dict | None, float]]:
        """``(key, folder, record or None, last use)`` of every entry."""
        rows = []
        base = self.root / "entries"
        if not base.is_dir():
            return rows
        for entry in sorted(base.iterdir()):
            if entry.is_symlink() or not entry.is_dir():
                continue
            path = entry / RECORD_FILE
            try:
                record = json.loads(path.read_text())
                used = path.stat().st_mtime
            except (OSError, ValueError):
                record, used = None, entry.lstat().st_mtime
            rows.append((entry.name, entry, record if isinstance(record, dict) else None, used))
        return rows

    def _objects(self) -> dict[str, os.stat_result]:
        found = {}
        base = self.root / "objects"
        if base.is_dir():
            for sub in base.iterdir():
                if sub.is_dir() and not sub.is_symlink():
                    for obj in sub.iterdir():
                        with contextlib.suppress(OSError):
                            st = obj.lstat()
                            if obj.is_file() and not obj.is_symlink():
                                found[obj.name] = st
        return found

    @staticmethod
    def _referenced(record: dict | None) -> set[str]:
        refs: set[str] = set()
        if record and isinstance(record.get("files"), dict):
            for listing in record["files"].values():
                for row in listing if isinstance(listing, list) else []:
                    if isinstance(row, list) and len(row) > 1 and _is_hex64(row[1]):
                        refs.add(row[1])
        return refs

    def info(self) -> CacheInfo:
        """Counts and sizes of the cache (nothing is created)."""
        if not (self.root / OWNER_MARKER).is_file():
            return CacheInfo(self.root, exists=False)
        objects = self._objects()
        info = CacheInfo(self.root, exists=True, objects=len(objects),
                         total_bytes=sum(st.st_size for st in objects.values()))
        for _key, _entry, record, _used in self._entries():
            info.entries += 1
            stage = record.get("stage", "?") if record else "(corrupt)"
            row = info.by_stage.setdefault(str(stage), {"entries": 0, "bytes": 0})
            row["entries"] += 1
            row["bytes"] += sum(objects[s].st_size for s in self._referenced(record) if s in objects)
        work = self.root / "work"
        info.work_dirs = sum(1 for p in work.iterdir() if p.is_dir()) if work.is_dir() else 0
        return info

    @contextlib.contextmanager
    def _try_lock(self, key: str) -> Iterator[bool]:
        """Hold ``key``'s lock if no build holds it now; yields whether it was free.

        Held while prune deletes the entry, so a build cannot look it up or restore it
        halfway through (a build does both under the same lock).
        """
        import fcntl

        path = self.root / "locks" / f"{key}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            yield False  # the lock cannot even be created: leave the entry alone
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _objects_lock(self, exclusive: bool) -> Iterator[None]:
        """The cache-wide lock on ``objects/``: shared while a build publishes an entry
        (it stores objects, then renames the entry into place), exclusive while prune
        decides which objects no entry uses and deletes them. Without it, prune could
        delete an object a build has just stored for an entry not yet visible, or one a
        build found already there and is about to reference. Publishing takes seconds,
        so prune waits for it rather than skipping the sweep."""
        import fcntl

        try:
            fd = os.open(self.root / "locks" / _OBJECTS_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise self._unusable(exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def prune(self, older_than_s: float | None = None, max_bytes: int | None = None,
              dry_run: bool = False) -> PruneResult:
        """Remove entries unused for ``older_than_s`` seconds, then least recently used
        ones until the objects take at most ``max_bytes``; then objects no entry uses.

        Only paths under the cache's own sub-folders are removed, never a symlink's
        target, and only in a folder edgecnn marked as its cache. An object still hard
        linked from a run directory can go: the run directory's link keeps the data.
        Entries a running build holds (its lock) are kept.

        Raises:
            FilesystemError: the cache folder is not edgecnn's.
        """
        result = PruneResult(dry_run=dry_run)
        if not (self.root / OWNER_MARKER).is_file():
            if self.root.exists():
                raise FilesystemError(f"stage cache {self.root}: is not an edgecnn stage cache (no "
                                      f"{OWNER_MARKER}); nothing was deleted; check {CACHE_ENV}")
            return result
        now = time.time()
        objects = self._objects()
        entries = sorted(self._entries(), key=lambda row: row[3])  # least recently used first
        keep = []
        doomed = []
        for row in entries:
            key, _entry, record, used = row
            if record is None or (older_than_s is not None and now - used > older_than_s):
                doomed.append(row)
            else:
                keep.append(row)

        def size_of(rows) -> int:
            refs: set[str] = set()
            for r in rows:
                refs |= self._referenced(r[2])
            return sum(objects[s].st_size for s in refs if s in objects)

        if max_bytes is not None:
            while keep and size_of(keep) > max_bytes:
                doomed.append(keep.pop(0))
        removed: set[str] = set()
        for key, entry, record, _used in doomed:
            with self._try_lock(key) as free:
                if not free:
                    continue  # a running build holds it: the entry is in use
                removed.add(key)
                result.entries.append(f"{record.get('stage', '?') if record else '(corrupt)'} {key[:12]}")
                if not dry_run:
                    shutil.rmtree(entry, ignore_errors=True)
        # Which objects no entry uses is decided and acted on with no publish in flight.
        with self._objects_lock(exclusive=True):
            kept_refs: set[str] = set()
            for row in self._entries():
                if row[0] not in removed:
                    kept_refs |= self._referenced(row[2])
            for sha, st in self._objects().items():
                if sha not in kept_refs:
                    result.objects += 1
                    result.freed_bytes += st.st_size if st.st_nlink == 1 else 0
                    if not dry_run:
                        with contextlib.suppress(OSError):
                            (self.root / _object_rel(sha)).unlink()
        # Scratch of stages nobody is building, and temporaries of killed builds.
        for base, min_age in (("work", older_than_s), ("tmp", _TMP_GRACE_S)):
            folder = self.root / base
            if not folder.is_dir() or min_age is None:
                continue
            for p in folder.iterdir():
                with contextlib.suppress(OSError):
                    if now - p.lstat().st_mtime <= min_age:
                        continue
                    # A stage's scratch goes only while nobody builds that stage.
                    with self._try_lock(p.name) if base == "work" else contextlib.nullcontext(True) as free:
                        if free:
                            result.other += 1
                            if not dry_run:
                                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        return result
