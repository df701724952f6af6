"""Turning stored uint8 images into model inputs: resize, channels, normalization, augmentation.

Images stay uint8 until the last moment (4x less memory than float32); normalization is
applied on the fly in the input pipeline and recorded with every model as a
:class:`NormalizationSpec` so the runtime side reproduces it exactly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edgecnn.errors import DataError

# ITU-R BT.601 luma weights, the ones tf.image.rgb_to_grayscale uses.
_LUMA = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)
# Bound on the float32 working set of one resize chunk.
_RESIZE_CHUNK_BYTES = 64 << 20


def to_model_input(images: np.ndarray, image_size: int, channels: int) -> np.ndarray:
    """Resize and convert channels so images match the model input.

    Args:
        images: uint8, shape (N, H, W) or (N, H, W, C) with C in {1, 3, 4} (alpha dropped).
        image_size: output height and width.
        channels: 1 (RGB -> gray with BT.601 weights) or 3 (gray repeated).

    Returns:
        uint8 array (N, image_size, image_size, channels). The input is returned
        unchanged (not copied) when it already has that shape.

    Raises:
        DataError: images that are not uint8 (N, H, W[, C]) or unsupported channels.
    """
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise DataError(f"images: expected uint8 (N, H, W[, C]), got {images.dtype} {images.shape}; convert the source to 8-bit images")
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if channels not in (1, 3) or images.shape[-1] not in (1, 3, 4):
        raise DataError(f"data.channels: cannot turn {images.shape[-1]}-channel images into {channels}-channel inputs; use channels 1 or 3")
    if images.shape[-1] == 4:
        images = images[..., :3]
    # Drop to gray before resizing (3x less work); repeat gray to RGB after it.
    if channels == 1 and images.shape[-1] == 3:
        images = _rgb_to_gray(images)
    if images.shape[1:3] != (image_size, image_size):
        images = _resize(images, image_size)
    if channels == 3 and images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return images


def _rgb_to_gray(images: np.ndarray) -> np.ndarray:
    out = np.empty(images.shape[:-1] + (1,), dtype=np.uint8)
    step = max(1, _RESIZE_CHUNK_BYTES // (math.prod(images.shape[1:]) * 4))
    for start in range(0, len(images), step):
        gray = images[start:start + step].astype(np.float32) @ _LUMA
        out[start:start + step, ..., 0] = np.clip(np.rint(gray), 0, 255)
    return out


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    from edgecnn._tf import tensorflow

    tf = tensorflow()
    n, _, _, c = images.shape
    out = np.empty((n, size, size, c), dtype=np.uint8)
    # Chunking bounds memory: TF resizes in float32, 4 bytes per output value.
    step = max(1, _RESIZE_CHUNK_BYTES // (size * size * c * 4))
    for start in range(0, n, step):
        chunk = tf.image.resize(images[start:start + step], (size, size), method="bilinear", antialias=True)
        out[start:start + step] = tf.cast(tf.clip_by_value(tf.round(chunk), 0.0, 255.0), tf.uint8).numpy()
    return out


@dataclass(frozen=True)
class NormalizationSpec:
    """Per-channel ``x = (pixel - mean) / std`` on 0..255 pixels, stored with every model.

    Attributes:
        mean: one value per channel.
        std: one value per channel, all > 0.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        mean = tuple(float(v) for v in self.mean)
        std = tuple(float(v) for v in self.std)
        if not mean or len(mean) != len(std):
            raise DataError(f"normalization: mean has {len(mean)} values and std {len(std)}; give one per channel")
        if not all(math.isfinite(v) for v in mean + std) or any(s <= 0 for s in std):
            raise DataError(f"normalization: mean {list(mean)} / std {list(std)} must be finite with std > 0; fix data.normalization")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @classmethod
    def from_config(cls, normalization: Any, channels: int) -> "NormalizationSpec":
        """Build from the recipe's ``data.normalization``, expanding one value to all channels."""
        def expand(name: str) -> tuple[float, ...]:
            values = list(getattr(normalization, name))
            if len(values) == 1:
                values *= channels
            if len(values) != channels:
                raise DataError(f"data.normalization.{name}: {len(values)} values for {channels} channels; give 1 or {channels}")
            return tuple(values)

        return cls(expand("mean"), expand("std"))

    @property
    def channels(self) -> int:
        """Number of channels the spec applies to."""
        return len(self.mean)

    def apply(self, images: np.ndarray) -> np.ndarray:
        """Normalize uint8 images (..., C) to float32 model inputs."""
        self._check_channels(images)
        return (images.astype(np.float32) - np.float32(self.mean)) / np.float32(self.std)

    def invert(self, x: np.ndarray) -> np.ndarray:
        """Map normalized float inputs back to uint8 pixels (rounded, clipped)."""
        self._check_channels(x)
        pixels = np.asarray(x, dtype=np.float32) * np.float32(self.std) + np.float32(self.mean)
        return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)

    def apply_tf(self, images):
        """TensorFlow version of :meth:`apply` for input pipelines (any leading shape)."""
        from edgecnn._tf import tensorflow

        tf = tensorflow()
        mean = tf.constant(self.mean, dtype=tf.float32)
        std = tf.constant(self.std, dtype=tf.float32)
        return (tf.cast(images, tf.float32) - mean) / std

    def to_dict(self) -> dict:
        """Plain JSON data; :meth:`from_dict` restores an equal spec."""
        return {"formula": "(pixel - mean) / std", "pixel_range": [0, 255], "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict) -> "NormalizationSpec":
        """Inverse of :meth:`to_dict` (extra keys such as ``formula`` are informative only)."""
        try:
            return cls(tuple(data["mean"]), tuple(data["std"]))
        except (KeyError, TypeError) as exc:
            raise DataError(f"normalization record {json.dumps(data, default=str)[:80]}: missing or malformed {exc}; expected {{'mean': [...], 'std': [...]}}") from None

    def _check_channels(self, images: np.ndarray) -> None:
        if np.ndim(images) == 0 or np.shape(images)[-1] != self.channels:
            raise DataError(f"normalization: spec has {self.channels} channels but images have shape {np.shape(images)}; convert with to_model_input first")


def make_augmenter(augment_cfg: Any, seed: int, fill: str = "edge") -> Callable:
    """Build a deterministic augmentation function for a ``tf.data`` pipeline.

    The returned ``augment(images, key)`` takes float images, (B, H, W, C) or
    (H, W, C), and an int64 ``key`` tensor (e.g. from ``tf.data.Dataset.random``) and
    applies, independently per image:

    * a left-right flip with probability 1/2 (``augment_cfg.horizontal_flip``);
    * a shift by a whole number of pixels, uniform in ``[-t, t]`` per axis with
      ``t = round(augment_cfg.translate * side)``.

    It uses only stateless random ops seeded by ``(seed, key)``, so the same seed and
    keys give the same images on every run, on any number of threads.

    Args:
        augment_cfg: the recipe's ``data.augment`` (``horizontal_flip``, ``translate``).
        seed: recipe seed.
        fill: how shifted-in pixels are filled: ``"edge"`` repeats the border row/column
            (the default: on Fashion-MNIST that is the black background), ``"zero"``
            writes 0 in *normalized* units, i.e. the mean pixel value.

    Returns:
        The function; it returns its input unchanged when both augmentations are off.

    Raises:
        DataError: an unknown ``fill``.
    """
    if fill not in ("edge", "zero"):
        raise DataError(f"augment fill {fill!r}: use 'edge' or 'zero'")
    flip = bool(augment_cfg.horizontal_flip)
    translate = float(augment_cfg.translate)

    def augment(images, key):
        from edgecnn._tf import tensorflow

        tf = tensorflow()
        single = images.shape.rank == 3
        x = images[tf.newaxis] if single else images
        batch = tf.shape(x)[0]
        height, width = x.shape[1], x.shape[2]
        base = tf.stack([tf.constant(seed, tf.int64), tf.cast(key, tf.int64)])
        if flip:
            coin = tf.random.stateless_uniform([batch], seed=base + [0, 1]) < 0.5
            x = tf.where(coin[:, tf.newaxis, tf.newaxis, tf.newaxis], tf.reverse(x, axis=[2]), x)
        if translate > 0:
            x = _shift(tf, x, 1, height, translate, base + [0, 2], fill)
            x = _shift(tf, x, 2, width, translate, base + [0, 3], fill)
        return x[0] if single else x

    return augment


def _shift(tf, x, axis: int, side: int, translate: float, seed, fill: str):
    """Shift each image of ``x`` along ``axis`` by its own random pixel offset."""
    limit = int(round(translate * side))
    if limit == 0:
        return x
    batch = tf.shape(x)[0]
    offset = tf.random.stateless_uniform([batch, 1], seed=seed, minval=-limit, maxval=limit + 1, dtype=tf.int32)
    source = tf.range(side)[tf.newaxis, :] - offset  # (B, side): output i reads input i - offset
    clipped = tf.clip_by_value(source, 0, side - 1)  # clipping = repeating the edge
    shifted = tf.gather(x, clipped, axis=axis, batch_dims=1)
    if fill == "zero":
        inside = tf.cast((source >= 0) & (source < side), x.dtype)
        shape = [batch, 1, 1, 1]
        shape[axis] = side
        shifted = shifted * tf.reshape(inside, shape)
    return shifted
