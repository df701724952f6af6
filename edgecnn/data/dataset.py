"""The data stage's entry points: load and split a dataset, fingerprint it, feed it to TensorFlow.

Split order (each step seeded by the recipe seed, stratified by class, deterministic):

1. load the source (Fashion-MNIST files or an image folder);
2. image folder without ``test/``: hold out ``test_fraction`` of the images as test;
3. ``train_limit`` / ``test_limit``: keep a class-stratified subset of train / test
   (``train_limit`` counts images *before* validation is held out);
4. hold out ``validation_fraction`` of the (limited) training images as validation;
5. resize and convert channels of the kept images only.

A test split smaller than :data:`MIN_TEST_IMAGES` is refused: its accuracy would be noise.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgecnn.data import fashion_mnist, image_folder
from edgecnn.data.preprocess import NormalizationSpec, make_augmenter, to_model_input
from edgecnn.data.raw import RawDataset
from edgecnn.errors import DataError

# Bump when the split/resize logic changes, so caches keyed by the fingerprint go stale.
FINGERPRINT_VERSION = 1

MIN_TEST_IMAGES = 20
"""Fewest test images a build accepts: with 20, one image is 5 points of accuracy; with
fewer, one lucky or unlucky image moves the reported accuracy by more than that."""

# Stream tags keep the seeded random choices independent of each other: changing
# train_limit must not reshuffle which images end up in test.
_TAG_TEST_SPLIT, _TAG_TRAIN_LIMIT, _TAG_TEST_LIMIT, _TAG_VALIDATION, _TAG_REPRESENTATIVE = 1, 2, 3, 4, 5


@dataclass
class Dataset:
    """Model-ready splits: uint8 images of the model input size, int64 labels.

    Attributes:
        x_train, y_train: training images (N, S, S, C) and labels (N,).
        x_val, y_val: validation split held out of train (may be empty).
        x_test, y_test: test split.
        class_names: one name per label value.
        normalization: how uint8 pixels become model inputs (stored with every model).
        fingerprint: :func:`dataset_fingerprint` of the config and seed that built it.
        notes: one-line remarks for the build log (e.g. which hidden/system entries of an
            image folder were skipped); empty when there is nothing to say.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    normalization: NormalizationSpec
    fingerprint: str
    notes: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of one model input."""
        return tuple(self.x_train.shape[1:])

    def summary(self) -> dict:
        """Split sizes and shapes as JSON-able data, for manifests and reports."""
        return {
            "train": len(self.y_train), "validation": len(self.y_val), "test": len(self.y_test),
            "input_shape": list(self.input_shape), "class_names": list(self.class_names),
            "normalization": self.normalization.to_dict(), "fingerprint": self.fingerprint,
            "notes": list(self.notes),
        }


def load_dataset(cfg: Any, seed: int) -> Dataset:
    """Load the recipe's dataset and split it (see the module docstring for the order).

    Args:
        cfg: the recipe's ``data`` section (:class:`edgecnn.recipe.DataConfig`).
        seed: the recipe seed; the same config and seed give the same splits.

    Returns:
        The :class:`Dataset`.

    Raises:
        DataError: the source cannot be found or read, a split comes out empty, or the
            test split has fewer than :data:`MIN_TEST_IMAGES` images.
    """
    raw, notes = _load_source(cfg)
    x_train, y_train = raw.x_train, raw.y_train
    if raw.x_test is None:
        keep, held = stratified_split(y_train, cfg.test_fraction, _rng(seed, _TAG_TEST_SPLIT))
        if len(held) == 0 or len(keep) == 0:
            raise DataError(f"{raw.source}: {len(y_train)} images are too few to hold out data.test_fraction={cfg.test_fraction} as a test split; add images or a test/ folder")
        x_test, y_test = x_train[held], y_train[held]
        x_train, y_train = x_train[keep], y_train[keep]
    else:
        x_test, y_test = raw.x_test, raw.y_test
    if cfg.train_limit is not None and cfg.train_limit < len(y_train):
        idx = stratified_subset(y_train, cfg.train_limit, _rng(seed, _TAG_TRAIN_LIMIT))
        x_train, y_train = x_train[idx], y_train[idx]
    if cfg.test_limit is not None and cfg.test_limit < len(y_test):
        idx = stratified_subset(y_test, cfg.test_limit, _rng(seed, _TAG_TEST_LIMIT))
        x_test, y_test = x_test[idx], y_test[idx]
    if len(y_test) < MIN_TEST_IMAGES:
        raise DataError(_small_test_split(raw.source, len(y_test), cfg, carved=raw.x_test is None))
    keep, held = stratified_split(y_train, cfg.validation_fraction, _rng(seed, _TAG_VALIDATION))
    if len(keep) == 0:
        raise DataError(f"{raw.source}: no training images left after holding out data.validation_fraction={cfg.validation_fraction}; lower it or raise data.train_limit")
    x_val, y_val = x_train[held], y_train[held]
    x_train, y_train = x_train[keep], y_train[keep]
    size, channels = cfg.image_size, cfg.channels
    return Dataset(
        x_train=to_model_input(x_train, size, channels), y_train=y_train.astype(np.int64),
        x_val=to_model_input(x_val, size, channels), y_val=y_val.astype(np.int64),
        x_test=to_model_input(x_test, size, channels), y_test=y_test.astype(np.int64),
        class_names=tuple(raw.class_names),
        normalization=NormalizationSpec.from_config(cfg.normalization, channels),
        fingerprint=dataset_fingerprint(cfg, seed),
        notes=notes,
    )


def _small_test_split(source: str, n: int, cfg: Any, carved: bool) -> str:
    points = f"one image would be {100 / n:.0f} points of accuracy" if n else "no accuracy can be measured"
    if carved:
        fix = "add images, raise data.test_fraction or add a test/ folder with more images"
    elif cfg.test_limit is not None and cfg.test_limit < MIN_TEST_IMAGES:
        fix = f"raise data.test_limit to at least {MIN_TEST_IMAGES}"
    else:
        fix = "add images to the test split"
    return (f"{source}: the test split has {n} image{'s' if n != 1 else ''}, fewer than the minimum of {MIN_TEST_IMAGES} "
            f"({points}); {fix}")


def _load_source(cfg: Any) -> tuple[RawDataset, tuple[str, ...]]:
    if cfg.source == "fashion_mnist":
        return fashion_mnist.load_fashion_mnist(cfg.path), ()
    if cfg.source == "image_folder":
        if cfg.path is None:
            raise DataError("data.path: image_folder needs the folder with one sub-folder per class; set data.path")
        return image_folder.read_image_folder(cfg.path, cfg.image_size, cfg.channels)
    raise DataError(f"data.source: unknown source {cfg.source!r}; use fashion_mnist or image_folder")


# --------------------------------------------------------------------------- stratified sampling


def _rng(seed: int, tag: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), tag])


def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over classes proportionally to ``counts`` (largest remainder), capped by counts."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(min(total, counts.sum()))
    if total <= 0:
        return np.zeros_like(counts)
    exact = counts * total / counts.sum()
    take = np.floor(exact).astype(np.int64)
    # Remainders go to the largest fractional parts; ties by class index, for determinism.
    order = np.lexsort((np.arange(len(counts)), -(exact - take)))
    for k in order[: total - take.sum()]:
        take[k] += 1
    return np.minimum(take, counts)


def stratified_subset(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` items drawn per class in proportion to the class sizes.

    Args:
        labels: int labels (N,).
        n: subset size (all items when >= N).
        rng: seeded generator; the same state gives the same subset.

    Returns:
        Sorted int64 indices into ``labels``.
    """
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    take = _allocate(counts, n)
    chosen = [rng.choice(np.flatnonzero(inverse == k), size=t, replace=False) for k, t in enumerate(take) if t]
    return np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros(0, dtype=np.int64)


def stratified_split(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, held-out) with ``fraction`` of every class held out.

    At least one item is held out when ``fraction`` > 0 and there are two or more items,
    and every class keeps at least one item where it has two or more.

    Returns:
        Two sorted int64 index arrays that together cover ``range(len(labels))``.
    """
    n = len(labels)
    if fraction <= 0 or n < 2:
        return np.arange(n, dtype=np.int64), np.zeros(0, dtype=np.int64)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    total = max(1, int(round(n * fraction)))
    take = np.minimum(_allocate(counts, total), np.maximum(counts - 1, 0))
    if take.sum() == 0:  # every class is a singleton: holding one out beats an empty split
        take[0] = 1
    held = [rng.choice(np.flatnonzero(inverse == k), size=t, replace=False) for k, t in enumerate(take) if t]
    held_idx = np.sort(np.concatenate(held)).astype(np.int64) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    mask[held_idx] = False
    return np.flatnonzero(mask).astype(np.int64), held_idx


def representative_images(ds: Dataset, n: int, seed: int) -> np.ndarray:
    """``n`` un-augmented training images, stratified by class, for int8 calibration.

    Args:
        ds: the dataset.
        n: how many (all training images when ``n`` >= their number).
        seed: recipe seed.

    Returns:
        uint8 array (min(n, N), S, S, C) in training-set order.
    """
    if n <= 0:
        raise DataError(f"representative samples: {n} requested; data.representative_samples must be >= 1")
    idx = stratified_subset(ds.y_train, n, _rng(seed, _TAG_REPRESENTATIVE))
    return ds.x_train[idx]


# --------------------------------------------------------------------------- fingerprint


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def dataset_fingerprint(cfg: Any, seed: int) -> str:
    """sha256 identifying the dataset a config and seed produce, without decoding any image.

    Covers the ``data`` config (as JSON), the seed, :data:`FINGERPRINT_VERSION` and the
    source files: for Fashion-MNIST the sha256 of the four files (memoized per process
    by path, size and mtime); for an image folder the sorted relative paths, sizes and
    modification times. Does not import TensorFlow.

    Args:
        cfg: the recipe's ``data`` section.
        seed: the recipe seed.

    Returns:
        A 64-character hex digest.

    Raises:
        DataError: the source cannot be found (Fashion-MNIST may be downloaded first).
    """
    config = json.loads(cfg.model_dump_json()) if hasattr(cfg, "model_dump_json") else dict(cfg)
    payload = {"version": FINGERPRINT_VERSION, "seed": int(seed), "data": config, "files": _source_files(cfg)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _source_files(cfg: Any) -> list:
    if cfg.source == "fashion_mnist":
        folder = fashion_mnist.locate_fashion_mnist(cfg.path)
        files = fashion_mnist.find_files(folder) or {}
        return [[name, _sha256_memo(files[name])] for name in sorted(files)]
    root = Path(cfg.path).expanduser()
    rows = []
    for f in image_folder.list_image_files(root):
        st = f.stat()
        rows.append([f.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns])
    return rows


def _sha256_memo(path: Path) -> str:
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _SHA_MEMO[key] = digest.hexdigest()
    return _SHA_MEMO[key]


# --------------------------------------------------------------------------- tf.data


def make_tf_dataset(
    x_uint8: np.ndarray,
    y: np.ndarray,
    normalization: NormalizationSpec,
    batch_size: int,
    augment: Optional[Any] = None,
    shuffle: bool = False,
    seed: int = 0,
    extra: Optional[np.ndarray] = None,
):
    """A batched ``tf.data`` pipeline: gather uint8 -> normalize (float32) -> augment -> prefetch.

    Images stay uint8 in memory and are normalized per batch on the fly. Elements are
    ``(x, y)``, or ``(x, {"label": y, "soft": extra})`` when ``extra`` is given (a dict,
    so a custom ``train_step`` reads targets by name, not by position).

    Determinism: shuffling (``Dataset.shuffle`` with ``seed``) and augmentation keys
    (``Dataset.random`` with ``seed``) are both re-drawn every epoch but from the seed,
    so two pipelines built with the same arguments yield identical batches, epoch by epoch.

    Args:
        x_uint8: uint8 images (N, S, S, C).
        y: int labels (N,).
        normalization: applied to every batch.
        batch_size: images per batch (the last batch may be smaller).
        augment: the recipe's ``data.augment`` for training, None for evaluation.
        shuffle: reshuffle all items every epoch.
        seed: recipe seed for shuffle and augmentation.
        extra: optional float array aligned with ``y`` (N, ...), e.g. teacher soft targets.

    Returns:
        A ``tf.data.Dataset``.

    Raises:
        DataError: arrays of mismatched length, or a non-positive batch size.
    """
    from edgecnn._tf import tensorflow

    tf = tensorflow()
    n = len(x_uint8)
    if len(y) != n or (extra is not None and len(extra) != n):
        raise DataError(f"tf dataset: {n} images, {len(y)} labels, {len(extra) if extra is not None else '-'} extra rows; they must align")
    if batch_size < 1:
        raise DataError(f"batch_size: {batch_size}; must be >= 1")
    if x_uint8.dtype != np.uint8:
        raise DataError(f"tf dataset: images must be uint8, got {x_uint8.dtype}; normalization is applied inside the pipeline")
    images = tf.constant(x_uint8)
    labels = tf.constant(np.asarray(y, dtype=np.int64))
    soft = tf.constant(np.asarray(extra, dtype=np.float32)) if extra is not None else None

    # Batching indices and gathering per batch is much cheaper than slicing and
    # re-batching N single images, and keeps one copy of the images in memory.
    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(max(n, 1), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    use_augment = augment is not None and (augment.horizontal_flip or augment.translate > 0)
    if use_augment:
        augmenter = make_augmenter(augment, seed)
        keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, keys))
    else:
        ds = ds.map(lambda idx: (idx, tf.constant(0, tf.int64)))

    def to_element(idx, key):
        x = normalization.apply_tf(tf.gather(images, idx))
        if use_augment:
            x = augmenter(x, key)
        label = tf.gather(labels, idx)
        if soft is None:
            return x, label
        return x, {"label": label, "soft": tf.gather(soft, idx)}

    ds = ds.map(to_element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
