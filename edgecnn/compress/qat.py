"""Quantization-aware training with tensorflow-model-optimization: annotate, apply, fine-tune.

tfmot inserts fake-quantization (8-bit, per-channel weights, per-tensor activations, the
scheme TFLite's int8 kernels use) around every layer it knows, folds BatchNorm into the
preceding convolution, and trains through the rounding with straight-through gradients
(Jacob et al., 2018, arXiv:1712.05877). The converter then takes the learned ranges.

After pruning, ``preserve_sparsity`` uses tfmot's prune-preserve scheme
(``Default8BitPrunePreserveQuantizeScheme``): the weight quantizers of Conv2D and Dense
multiply by a mask of the zeros found at the start, so fine-tuning cannot revive them.
It masks only Conv2D and Dense (tfmot's registry); the stage reads the zeros back from
the final file rather than trusting that (tensorflow/model-optimization PR #720, which
would fix drift elsewhere, was closed unmerged).

Layers tfmot's registry does not know are refused up front with one line naming the
layer and ``qat.keep_float``, which leaves them float (not annotated) in the QAT model.
"""

from __future__ import annotations

import re

from edgecnn._tf import keras
from edgecnn.errors import RecipeError


def check_keep_float(model, keep_float) -> None:
    """Every ``qat.keep_float`` name is a layer of ``model`` (one line with the close names otherwise)."""
    import difflib

    names = [layer.name for layer in model.layers]
    for name in keep_float:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
            raise RecipeError(f"qat.keep_float: '{name}' is not a layer of the student"
                              + (f"; close layer names: {', '.join(close)}" if close else ""))


def quantize_aware(model, keep_float=(), preserve_sparsity: bool = False):
    """A quantization-aware copy of ``model`` (weights copied; the caller's model is unchanged).

    Args:
        model: a plain functional tf_keras model (pruning wrappers stripped).
        keep_float: names of layers left float (not annotated).
        preserve_sparsity: use the prune-preserve scheme (zeros stay zero).

    Raises:
        RecipeError: a layer tfmot cannot quantize (naming it and ``qat.keep_float``), or a
            ``keep_float`` name that is not a layer.
    """
    import tensorflow_model_optimization as tfmot

    K = keras()
    check_keep_float(model, keep_float)
    def annotate(layer):
        fresh = layer.__class__.from_config(layer.get_config())
        if layer.name in keep_float:
            return fresh
        return tfmot.quantization.keras.quantize_annotate_layer(fresh)

    annotated = K.models.clone_model(model, clone_function=annotate)
    source = {layer.name: layer for layer in model.layers}
    for layer in annotated.layers:
        target = getattr(layer, "layer", layer)
        if target.name in source and source[target.name].weights:
            target.set_weights(source[target.name].get_weights())
    if preserve_sparsity:
        from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (
            default_8bit_prune_preserve_quantize_scheme as pqat,
        )

        scheme = pqat.Default8BitPrunePreserveQuantizeScheme()
    else:
        scheme = tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme()
    try:
        with tfmot.quantization.keras.quantize_scope():
            return tfmot.quantization.keras.quantize_apply(annotated, scheme)
    except (RuntimeError, ValueError) as exc:
        # tfmot: "Layer NAME:<class '...CLASS'> is not supported. You can quantize ..."
        found = re.search(r"Layer (\S+?):<class '[\w.]*?(\w+)'> is not supported", str(exc))
        if not found:
            raise
        name, cls = found.groups()
        raise RecipeError(f"qat: layer '{name}' ({cls}) cannot be quantized by tensorflow-model-optimization; "
                          f"keep it float with qat.keep_float: [{name}]") from None
