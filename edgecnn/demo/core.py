"""Pure parts of the camera demo: preprocessing, scores, top-k, smoothed FPS.

Preprocessing reproduces what the build fed the model: resize to the input size, the
color space of the input (RGB or gray, BT.601 luma), ``x = (pixel - mean) / std``
per channel, then TFLite's affine quantization of the input tensor. Normalization and
quantization map each 0..255 pixel value to one input value per channel, so they are
computed once as a 256-entry lookup table per channel and applied by indexing: exactly
:meth:`NormalizationSpec.apply` followed by :func:`quantize_input`, at a fraction of the
cost per frame. Top-k follows pycoral's ``adapters/classify.py``
(``get_classes_from_scores``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from edgecnn.runtime.interpreter import IoSpec, dequantize_output, quantize_input

__all__ = ["Class", "FpsMeter", "InputTransform", "dequantize", "make_input_lut", "top_k"]

# ITU-R BT.601 luma weights on B, G, R (OpenCV frames are BGR); edgecnn.data uses the
# same weights on R, G, B.
_LUMA_BGR = np.array([0.1140, 0.5870, 0.2989], dtype=np.float32)


class Class(NamedTuple):
    """One prediction: class index, label and score."""

    id: int
    label: str
    score: float


def make_input_lut(mean, std, spec: IoSpec) -> np.ndarray:
    """(C, 256) table: pixel value v of channel c -> what the input tensor holds.

    Same arithmetic as ``NormalizationSpec.apply`` (float32) then ``quantize_input``.
    """
    channels = int(spec.shape[-1])
    mean = np.broadcast_to(np.asarray(mean, np.float32), (channels,))
    std = np.broadcast_to(np.asarray(std, np.float32), (channels,))
    pixels = np.arange(256, dtype=np.float32)[:, None]  # (256, 1)
    real = (pixels - mean[None, :]) / std[None, :]  # (256, C), float32 like apply()
    return np.ascontiguousarray(quantize_input(real, spec).T)


@dataclass(frozen=True)
class InputTransform:
    """Camera frame (BGR uint8, any size) -> model input batch of one."""

    width: int
    height: int
    channels: int
    lut: np.ndarray  # (channels, 256)

    @classmethod
    def for_model(cls, spec: IoSpec, mean, std) -> "InputTransform":
        """From the input tensor spec and the normalization."""
        _, height, width, channels = (int(d) for d in spec.shape)
        return cls(width, height, channels, make_input_lut(mean, std, spec))

    def crop_box(self, frame_height: int, frame_width: int) -> tuple[int, int, int, int]:
        """(x, y, w, h) of the centered region with the model input's aspect ratio.

        The model was trained on undistorted images; squeezing a 4:3 frame into a
        square input would distort every object, so the frame is center-cropped first.
        """
        target = self.width / self.height
        w, h = frame_width, frame_height
        if w / h > target:
            w = max(1, int(round(h * target)))
        else:
            h = max(1, int(round(w / target)))
        return (frame_width - w) // 2, (frame_height - h) // 2, w, h

    def pixels(self, frame_bgr: np.ndarray) -> np.ndarray:
        """Cropped, resized uint8 pixels (H, W, C) in the model's color space (RGB or gray)."""
        import cv2

        if frame_bgr.ndim == 2:
            frame_bgr = frame_bgr[..., None]
        x, y, w, h = self.crop_box(*frame_bgr.shape[:2])
        img = frame_bgr[y:y + h, x:x + w]
        if self.channels == 1 and img.shape[-1] >= 3:
            # To gray before resizing, in the order the build used (gray, then resize).
            gray = img[..., :3].astype(np.float32) @ _LUMA_BGR
            img = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
        elif img.shape[-1] == 4:
            img = img[..., :3]
        # INTER_AREA averages the source pixels under each output pixel, like the
        # antialiased resize of the build; nearest or plain bilinear would alias.
        img = cv2.resize(np.ascontiguousarray(img), (self.width, self.height), interpolation=cv2.INTER_AREA)
        img = img.reshape(self.height, self.width, -1)
        if self.channels == 3:
            # Resizing commutes with reordering channels, so reorder the small image.
            img = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img[..., ::-1]
        return img

    def __call__(self, frame_bgr: np.ndarray) -> np.ndarray:
        """Model input of shape (1, H, W, C) and the input tensor's dtype."""
        img = self.pixels(frame_bgr)
        out = np.empty((1, self.height, self.width, self.channels), dtype=self.lut.dtype)
        for c in range(self.channels):
            out[0, ..., c] = self.lut[c][img[..., c]]
        return out


def dequantize(raw: np.ndarray, spec: IoSpec) -> np.ndarray:
    """Real float32 scores from a raw output tensor (``scale * (q - zero_point)``)."""
    return dequantize_output(raw, spec)


def top_k(scores: np.ndarray, labels, k: int = 3, threshold: float = 0.0) -> list[Class]:
    """The ``k`` best classes with score >= ``threshold``, best first.

    Ties keep the lower class index first (a stable sort), so equal quantized scores
    give the same order on every run.
    """
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    order = np.argsort(-scores, kind="stable")[:max(k, 0)]
    return [Class(int(i), labels[i] if i < len(labels) else str(int(i)), float(scores[i]))
            for i in order if scores[i] >= threshold]


class FpsMeter:
    """Frames per second, smoothed by an exponential moving average of frame times.

    ``fps = 1000 / ema_ms`` with ``ema_ms <- alpha * frame_ms + (1 - alpha) * ema_ms``.
    """

    def __init__(self, alpha: float = 0.1):
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.ema_ms: float | None = None

    def update(self, frame_ms: float) -> float:
        """Add one frame time; return the smoothed FPS."""
        self.ema_ms = frame_ms if self.ema_ms is None else self.alpha * frame_ms + (1 - self.alpha) * self.ema_ms
        return 1000.0 / self.ema_ms if self.ema_ms > 0 else 0.0
