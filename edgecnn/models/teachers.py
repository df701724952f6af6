"""Teacher builders: a registered from-scratch CNN, any keras.applications backbone, or a file."""

from __future__ import annotations

from pathlib import Path

from edgecnn._tf import keras
from edgecnn.models._common import (
    call_keras_application,
    classifier_head,
    resolve_weights,
    set_batchnorm_momentum,
)
from edgecnn.models.registry import TEACHERS


@TEACHERS.register
def vgg_small(input_shape, num_classes, cfg):
    """A VGG-style CNN (3 stages of 2 conv-BN-ReLU, widths 32/64/128) for small images.

    Trains from scratch to ~93-94 % on Fashion-MNIST in a few CPU epochs, where an
    ImageNet-sized backbone would need hours on a laptop and gains nothing at 32x32.
    """
    K = keras()
    L = K.layers
    inputs = K.Input(shape=input_shape, name="image")
    x = inputs
    for stage, width in enumerate((32, 64, 128)):
        for i in range(2):
            x = L.Conv2D(width, 3, padding="same", use_bias=False, name=f"s{stage}_conv{i}")(x)
            x = L.BatchNormalization(momentum=0.9, name=f"s{stage}_bn{i}")(x)
            x = L.ReLU(name=f"s{stage}_relu{i}")(x)
        x = L.MaxPooling2D(name=f"s{stage}_pool")(x)
        x = L.Dropout(0.1 + 0.1 * stage, name=f"s{stage}_drop")(x)
    logits = classifier_head(K, x, num_classes, dropout=0.3)
    return K.Model(inputs, logits, name="vgg_small")


def build_keras_application(name, input_shape, num_classes, cfg):
    """Any keras.applications backbone (``ResNet50``, ``EfficientNetB0``...) with a new head.

    ``cfg.weights`` may be ``"imagenet"`` (downloaded to ~/.keras/models when online,
    reused from there when offline) or a local backbone weights file.
    """
    K = keras()
    inputs = K.Input(shape=input_shape, name="image")
    weights = resolve_weights(cfg.weights, "teacher.weights", input_shape[-1])
    backbone = call_keras_application(
        getattr(K.applications, name), name, "teacher", weights, input_tensor=inputs, include_top=False,
    )
    if weights is None:
        set_batchnorm_momentum(backbone, 0.9)
    logits = classifier_head(K, backbone.output, num_classes, dropout=0.2)
    return K.Model(inputs, logits, name=name.lower())


def load_keras_model(path: str | Path, what: str = "teacher.path", **options):
    """Load a saved tf_keras model; see :func:`edgecnn.models.loading.load_keras_model`.

    Kept here for callers that import it from the teachers module; plain and
    tfmot-wrapped models load alike, Keras 3 files are refused with how to re-save them.

    Raises:
        ModelFileError: the path is missing, holds no Keras model, or holds a Keras 3 one.
    """
    from edgecnn.models.loading import load_keras_model as load

    return load(path, what, **options)
