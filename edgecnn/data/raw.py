"""What a dataset source hands over before splitting and resizing: uint8 images and labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from edgecnn.errors import DataError


@dataclass(frozen=True)
class RawDataset:
    """Images as stored by the source, labels as class indices into ``class_names``.

    Attributes:
        x_train: uint8 images, shape (N, H, W, C).
        y_train: int64 labels, shape (N,).
        x_test: uint8 test images, or None when the source has no test split (an image
            folder without ``test/``); the test split is then carved out of train.
        y_test: int64 test labels, or None with ``x_test``.
        class_names: one name per class index.
        source: where the images came from (a folder), for messages.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: Optional[np.ndarray]
    y_test: Optional[np.ndarray]
    class_names: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        pairs = [("train", self.x_train, self.y_train)]
        if (self.x_test is None) != (self.y_test is None):
            raise DataError(f"{self.source}: test images and labels must both be given or both be None; this is a bug in the dataset source")
        if self.x_test is not None:
            pairs.append(("test", self.x_test, self.y_test))
        for split, x, y in pairs:
            if x.dtype != np.uint8 or x.ndim != 4:
                raise DataError(f"{self.source}: {split} images must be uint8 (N, H, W, C), got {x.dtype} {x.shape}; this is a bug in the dataset source")
            if y.shape != (len(x),):
                raise DataError(f"{self.source}: {split} has {len(x)} images but labels of shape {y.shape}; the files do not belong together")
            if len(y) and (y.min() < 0 or y.max() >= len(self.class_names)):
                raise DataError(f"{self.source}: {split} labels span {y.min()}..{y.max()} but there are {len(self.class_names)} classes; the label file does not match this dataset")
