"""A folder of images, one sub-folder per class, optionally split into ``train/`` and ``test/``.

::

    root/                      root/
      cat/ a.jpg b.png   or      train/ cat/ ... dog/ ...
      dog/ c.JPEG                test/  cat/ ... dog/ ...

Class names are the sorted sub-folder names (of ``train/`` when split). Files that are not
jpg/jpeg/png are not read, and neither are hidden and system entries: names starting
with ``.`` (``.DS_Store``, macOS ``._x.jpg`` resource forks, ``.git``) and the folders and
files that archivers, file managers and NAS boxes leave behind (:data:`SYSTEM_NAMES`, e.g.
``__MACOSX/`` in a zip made on a Mac, ``Thumbs.db``). What was skipped is reported as a
note (:func:`read_image_folder`), never silently taken as a class. Listing the files
needs no TensorFlow (the dataset fingerprint uses it); decoding imports it lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from edgecnn.data.raw import RawDataset
from edgecnn.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

SYSTEM_NAMES = frozenset(name.casefold() for name in (
    "__MACOSX",                   # resource forks in zips made by macOS Finder
    "Thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini",   # Windows Explorer
    "$RECYCLE.BIN", "System Volume Information",                       # Windows drives
    "@eaDir", "#recycle",         # Synology NAS thumbnails and recycle bin
    "lost+found",                 # ext* file system root
    "Icon\r",                    # macOS custom folder icon
))
"""Entry names (compared case-insensitively) that are never a class or an image."""

MIN_IMAGES_PER_CLASS = 10
"""Fewest images a training class may have: below 10, the 20 % test and 10 % validation
holdouts leave it one or two test images (its accuracy is a coin toss) and a handful to
learn from."""

_EXAMPLES = 3  # skipped entries named in a note; the rest are counted


def is_system_entry(name: str) -> bool:
    """True for hidden (``.name``) and system (:data:`SYSTEM_NAMES`) entries, which are never read."""
    return name.startswith(".") or name.casefold() in SYSTEM_NAMES


@dataclass(frozen=True)
class FolderListing:
    """What one class-folder root holds, before anything is decoded.

    Attributes:
        classes: class name -> sorted image files (empty list for a class without images).
        skipped_system: hidden/system entries that were not read (folders and files).
        skipped_other: other entries of class folders that were not read: files that
            are not jpg/jpeg/png and folders nested inside a class folder.
    """

    classes: dict[str, list[Path]]
    skipped_system: tuple[Path, ...] = ()
    skipped_other: tuple[Path, ...] = ()


def split_folders(root: str | Path) -> tuple[Path, Optional[Path]]:
    """The (train, test) class-folder roots: ``root/train`` + ``root/test`` if both exist, else (root, None).

    Raises:
        DataError: ``root`` does not exist or is not a folder.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"{root}: image folder {what}; set data.path to a folder with one sub-folder per class")
    if (root / "train").is_dir() and (root / "test").is_dir():
        return root / "train", root / "test"
    return root, None


def scan_class_folders(folder: Path) -> FolderListing:
    """List the class sub-folders of ``folder`` and their images, and what was skipped.

    Files directly in ``folder`` are not images of any class: system ones count as
    skipped system entries, others are ignored without a note (a README next to the
    class folders is normal).
    """
    classes: dict[str, list[Path]] = {}
    system: list[Path] = []
    other: list[Path] = []
    for sub in sorted(folder.iterdir()):
        if is_system_entry(sub.name):
            system.append(sub)
            continue
        if not sub.is_dir():
            continue
        images = []
        for entry in sorted(sub.iterdir()):
            if is_system_entry(entry.name):
                system.append(entry)
            elif entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
                images.append(entry)
            else:
                other.append(entry)
        classes[sub.name] = images
    return FolderListing(classes, tuple(system), tuple(other))


def list_class_images(folder: Path) -> dict[str, list[Path]]:
    """Class name -> sorted image files, for every class sub-folder of ``folder``.

    Classes without images are kept (with an empty list) so the caller can name them.
    """
    return scan_class_folders(folder).classes


def list_image_files(root: str | Path) -> list[Path]:
    """Every image file the loader would read under ``root``, in a stable order (no decoding)."""
    train_dir, test_dir = split_folders(root)
    files = []
    for folder in (train_dir, test_dir):
        if folder is not None:
            for paths in list_class_images(folder).values():
                files += paths
    return files


def skipped_note(root: Path, listings: list[FolderListing], extra: tuple[Path, ...] = ()) -> Optional[str]:
    """One line saying which entries under ``root`` were not read, or None when none were.

    Args:
        root: the image folder (paths in the note are relative to it).
        listings: the scanned class-folder roots.
        extra: further entries not read (root entries beside ``train/`` and ``test/``).
    """
    def named(paths: list[Path]) -> str:
        shown = [p.relative_to(root).as_posix() + ("/" if p.is_dir() else "") for p in paths[:_EXAMPLES]]
        more = f" and {len(paths) - _EXAMPLES} more" if len(paths) > _EXAMPLES else ""
        return ", ".join(repr(s) if any(c in s for c in "\r\n,") else s for s in shown) + more

    system = [p for listing in listings for p in listing.skipped_system]
    other = [p for listing in listings for p in listing.skipped_other]
    parts = []
    if system:
        parts.append(f"{len(system)} hidden/system entr{'y' if len(system) == 1 else 'ies'} ({named(system)})")
    if other:
        parts.append(f"{len(other)} entr{'y' if len(other) == 1 else 'ies'} in class folders that "
                     f"{'is' if len(other) == 1 else 'are'} not a .jpg/.jpeg/.png image ({named(other)})")
    if extra:
        parts.append(f"{len(extra)} folder{'' if len(extra) == 1 else 's'} beside train/ and test/ ({named(list(extra))})")
    if not parts:
        return None
    return f"{root}: skipped {', '.join(parts)}"


def load_image_folder(root: str | Path, image_size: int, channels: int) -> RawDataset:
    """Decode every image under ``root`` and resize it to ``image_size`` x ``image_size``.

    Same as :func:`read_image_folder` without the notes.
    """
    return read_image_folder(root, image_size, channels)[0]


def read_image_folder(root: str | Path, image_size: int, channels: int) -> tuple[RawDataset, tuple[str, ...]]:
    """Decode every image under ``root`` and resize it to ``image_size`` x ``image_size``.

    Images are stretched to the square size (aspect ratio is not kept) with bilinear
    interpolation, antialiased when shrinking, and stored as uint8. Grayscale files are
    expanded to RGB when ``channels`` is 3 and RGB(A) files are converted to gray when it
    is 1 (TensorFlow's decoders do both). Every check on the listing runs before the
    first image is decoded.

    Args:
        root: the folder (see the module docstring for the layout).
        image_size: output height and width in pixels.
        channels: 1 or 3.

    Returns:
        A :class:`RawDataset` (``x_test`` is None when ``root`` has no ``train/`` +
        ``test/``) and notes for the build log: one line naming the hidden/system and
        other entries that were skipped, or no notes.

    Raises:
        DataError: missing folder, fewer than two classes, an empty class folder, a
            training class with fewer than :data:`MIN_IMAGES_PER_CLASS` images, a test
            class unknown to train, or an image that cannot be decoded (named).
    """
    if channels not in (1, 3):
        raise DataError(f"data.channels: {channels} is not supported; use 1 or 3")
    root = Path(root).expanduser()
    train_dir, test_dir = split_folders(root)
    listings = [scan_class_folders(train_dir)]
    train = listings[0].classes
    if len(train) < 2:
        found = f"only '{next(iter(train))}'" if train else "none"
        raise DataError(f"{train_dir}: needs at least 2 class sub-folders, found {found}; add one folder of images per class")
    class_names = tuple(train)
    splits = [_check_split(train_dir, train, class_names, MIN_IMAGES_PER_CLASS)]
    extra: tuple[Path, ...] = ()
    if test_dir is not None:
        listings.append(scan_class_folders(test_dir))
        test = listings[1].classes
        unknown = sorted(set(test) - set(class_names))
        if unknown:
            raise DataError(f"{test_dir}: class folder(s) {', '.join(unknown)} have no counterpart in {train_dir}; rename or remove them")
        splits.append(_check_split(test_dir, test, class_names, 1))
        root_system = tuple(p for p in sorted(root.iterdir()) if is_system_entry(p.name))
        listings.append(FolderListing({}, root_system))
        extra = tuple(p for p in sorted(root.iterdir())
                      if p.is_dir() and p.name not in ("train", "test") and not is_system_entry(p.name))
    note = skipped_note(root, listings, extra)
    decoded = [_decode_split(files, labels, image_size, channels) for files, labels in splits]
    x_train, y_train = decoded[0]
    x_test, y_test = decoded[1] if test_dir is not None else (None, None)
    raw = RawDataset(x_train, y_train, x_test, y_test, class_names, source=str(root))
    return raw, (note,) if note else ()


def _check_split(folder: Path, classes: dict[str, list[Path]], class_names: tuple[str, ...],
                 min_per_class: int) -> tuple[list[Path], np.ndarray]:
    """Flatten one split into files + labels; a test split may omit classes but not hold empty ones."""
    files: list[Path] = []
    labels: list[int] = []
    for name, paths in classes.items():
        if not paths:
            raise DataError(f"{folder / name}: class folder has no .jpg/.jpeg/.png images; add some or remove the folder")
        if len(paths) < min_per_class:
            raise DataError(f"{folder / name}: class has {len(paths)} image{'s' if len(paths) != 1 else ''}, fewer than the "
                            f"minimum of {min_per_class} per class (too few to learn it or to measure its accuracy); "
                            "add images or remove the folder")
        files += paths
        labels += [class_names.index(name)] * len(paths)
    if not files:
        raise DataError(f"{folder}: no images found; add .jpg/.jpeg/.png files under its class folders")
    return files, np.asarray(labels, dtype=np.int64)


def _decode_split(files: list[Path], labels: np.ndarray, image_size: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    from edgecnn._tf import tensorflow

    tf = tensorflow()
    out = np.empty((len(files), image_size, image_size, channels), dtype=np.uint8)
    for i, path in enumerate(files):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"{path}: cannot read ({exc.strerror or exc}); check permissions") from None
        try:
            # expand_animations=False turns an animated file into its first frame, so
            # every image decodes to rank 3.
            image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError, ValueError):
            raise DataError(f"{path}: cannot decode as an image (corrupt or not really jpg/png); fix or remove the file") from None
        out[i] = _resize_uint8(tf, image, image_size)
    return out, labels


def _resize_uint8(tf, image, size: int) -> np.ndarray:
    if image.shape[0] == size and image.shape[1] == size:
        return image.numpy()
    resized = tf.image.resize(image, (size, size), method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8).numpy()
