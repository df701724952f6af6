"""A folder of images, one sub-folder per class, optionally split into ``train/`` and ``test/``.

::

    root/                      root/
      cat/ a.jpg b.png   or      train/ cat/ ... dog/ ...
      dog/ c.JPEG                test/  cat/ ... dog/ ...

Class names are the sorted sub-folder names (of ``train/`` when split). Hidden entries
(starting with ``.``) and files that are not jpg/jpeg/png are ignored. Listing the files
needs no TensorFlow (the dataset fingerprint uses it); decoding imports it lazily.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from edgecnn.data.raw import RawDataset
from edgecnn.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


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


def list_class_images(folder: Path) -> dict[str, list[Path]]:
    """Class name -> sorted image files, for every non-hidden sub-folder of ``folder``.

    Classes without images are kept (with an empty list) so the caller can name them.
    """
    classes = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        classes[sub.name] = sorted(
            f for f in sub.iterdir()
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES
        )
    return classes


def list_image_files(root: str | Path) -> list[Path]:
    """Every image file the loader would read under ``root``, in a stable order (no decoding)."""
    train_dir, test_dir = split_folders(root)
    files = []
    for folder in (train_dir, test_dir):
        if folder is not None:
            for paths in list_class_images(folder).values():
                files += paths
    return files


def load_image_folder(root: str | Path, image_size: int, channels: int) -> RawDataset:
    """Decode every image under ``root`` and resize it to ``image_size`` x ``image_size``.

    Images are stretched to the square size (aspect ratio is not kept) with bilinear
    interpolation, antialiased when shrinking, and stored as uint8. Grayscale files are
    expanded to RGB when ``channels`` is 3 and RGB(A) files are converted to gray when it
    is 1 (TensorFlow's decoders do both).

    Args:
        root: the folder (see the module docstring for the layout).
        image_size: output height and width in pixels.
        channels: 1 or 3.

    Returns:
        A :class:`RawDataset`; ``x_test`` is None when ``root`` has no ``train/`` + ``test/``.

    Raises:
        DataError: missing folder, fewer than two classes, an empty class folder, a test
            class unknown to train, or an image that cannot be decoded (named).
    """
    if channels not in (1, 3):
        raise DataError(f"data.channels: {channels} is not supported; use 1 or 3")
    train_dir, test_dir = split_folders(root)
    train = list_class_images(train_dir)
    if len(train) < 2:
        found = f"only '{next(iter(train))}'" if train else "none"
        raise DataError(f"{train_dir}: needs at least 2 class sub-folders, found {found}; add one folder of images per class")
    class_names = tuple(train)
    splits = [_check_split(train_dir, train, class_names)]
    if test_dir is not None:
        test = list_class_images(test_dir)
        unknown = sorted(set(test) - set(class_names))
        if unknown:
            raise DataError(f"{test_dir}: class folder(s) {', '.join(unknown)} have no counterpart in {train_dir}; rename or remove them")
        splits.append(_check_split(test_dir, test, class_names))
    decoded = [_decode_split(files, labels, image_size, channels) for files, labels in splits]
    x_train, y_train = decoded[0]
    x_test, y_test = decoded[1] if test_dir is not None else (None, None)
    return RawDataset(x_train, y_train, x_test, y_test, class_names, source=str(Path(root)))


def _check_split(folder: Path, classes: dict[str, list[Path]], class_names: tuple[str, ...]) -> tuple[list[Path], np.ndarray]:
    """Flatten one split into files + labels; a test split may omit classes but not hold empty ones."""
    files: list[Path] = []
    labels: list[int] = []
    for name, paths in classes.items():
        if not paths:
            raise DataError(f"{folder / name}: class folder has no .jpg/.jpeg/.png images; add some or remove the folder")
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
