"""Quantization-aware training works on every registered student, not only MobileNetV2.

tfmot's default registry has no quantize config for ``Multiply``, ``Rescaling`` or
hard-swish; the students are built so they need none (MobileNetV3-Small in its
minimalistic form, without preprocessing layers). A new student that brings such a layer
fails here, naming it, instead of in a user's build after training.
"""

from __future__ import annotations

import numpy as np
import pytest

import edgecnn.models.students  # noqa: F401  (registers the builders; imports no TensorFlow yet)
from edgecnn.models.registry import STUDENTS


@pytest.mark.parametrize("architecture", sorted(STUDENTS.names()))
def test_every_student_becomes_quantization_aware(architecture):
    from edgecnn.compress.qat import quantize_aware
    from edgecnn.recipe import StudentConfig

    model = STUDENTS.get(architecture)((32, 32, 3), 10, StudentConfig(architecture=architecture, alpha=0.35))
    qat = quantize_aware(model)
    wrapped = [layer for layer in qat.layers if type(layer).__name__ == "QuantizeWrapperV2"]
    assert len(wrapped) >= sum(type(layer).__name__ in ("Conv2D", "DepthwiseConv2D", "Dense") for layer in model.layers)
    x = np.random.RandomState(0).rand(2, 32, 32, 3).astype(np.float32)
    assert qat(x, training=False).shape == (2, 10)
