"""Student builders: small, quantization-friendly CNNs as plain functional tf_keras models.

Each builder returns logits (no softmax): training losses work on logits and the export
stage appends the softmax that deployed classifiers expose. Backbones are built on the
model's own ``Input`` (``input_tensor``) so the result is one flat functional graph, which
tfmot's pruning and quantization wrappers require (they reject nested models).
"""

from __future__ import annotations

from edgecnn._tf import keras
from edgecnn.models._common import (
    call_keras_application, classifier_head, reduce_output_stride, resolve_weights, set_batchnorm_momentum,
)
from edgecnn.models.registry import STUDENTS


@STUDENTS.register
def mobilenet_v2(input_shape, num_classes, cfg):
    """MobileNetV2 (Sandler et al., 2018, arXiv:1801.04381) with width multiplier ``cfg.alpha``."""
    K = keras()
    inputs = K.Input(shape=input_shape, name="image")
    weights = resolve_weights(cfg.weights, "student.weights", input_shape[-1])
    backbone = call_keras_application(
        K.applications.MobileNetV2, "MobileNetV2", "student", weights,
        input_tensor=inputs, alpha=cfg.alpha, include_top=False,
    )
    return _with_head(K, backbone, num_classes, cfg, f"mobilenet_v2_{cfg.alpha:g}")


@STUDENTS.register
def mobilenet_v3_small(input_shape, num_classes, cfg):
    """MobileNetV3-Small (Howard et al., 2019, arXiv:1905.02244), minimalistic variant.

    The minimalistic variant drops hard-swish and squeeze-excite, which quantize poorly
    to int8 and are not supported on every accelerator (e.g. older Edge TPU compilers).
    """
    K = keras()
    inputs = K.Input(shape=input_shape, name="image")
    weights = resolve_weights(cfg.weights, "student.weights", input_shape[-1])
    backbone = call_keras_application(
        K.applications.MobileNetV3Small, "MobileNetV3Small", "student", weights,
        input_tensor=inputs, alpha=cfg.alpha, include_top=False, minimalistic=True,
        include_preprocessing=False,
    )
    return _with_head(K, backbone, num_classes, cfg, f"mobilenet_v3_small_{cfg.alpha:g}")


def _with_head(K, backbone, num_classes, cfg, name):
    """Apply ``cfg.output_stride``, short-run BatchNorm momentum and the classifier head."""
    backbone = reduce_output_stride(K, backbone, cfg.output_stride)
    set_batchnorm_momentum(backbone, 0.9)
    logits = classifier_head(K, backbone.output, num_classes, cfg.dropout)
    suffix = f"_os{cfg.output_stride}" if cfg.output_stride != 32 else ""
    return K.Model(backbone.input, logits, name=name + suffix)
