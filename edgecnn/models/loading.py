"""The one loader for saved tf_keras models, plain or wrapped by tensorflow-model-optimization.

A pruned model (``PruneLowMagnitude`` wrappers) or a quantization-aware one
(``QuantizeWrapperV2``, quantizers, quantize configs) names classes that plain
``load_model`` does not know; tfmot's ``prune_scope()`` and ``quantize_scope()`` make
them known. Opening every file inside both scopes lets wrapped models pass between
stages and sit in the cache like plain ones.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import zipfile
from pathlib import Path
from typing import Iterator

from edgecnn._tf import keras
from edgecnn.errors import ModelFileError
from edgecnn.fileio import reproducible_zip_info, write_reproducible_npz
from edgecnn.models._common import refuse_keras3_model


@contextlib.contextmanager
def tfmot_scopes() -> Iterator[None]:
    """Make tfmot's pruning and quantization classes loadable while the block runs."""
    keras()  # tfmot must see tf_keras selected before it is imported
    import tensorflow_model_optimization as tfmot

    with tfmot.quantization.keras.quantize_scope(), tfmot.sparsity.keras.prune_scope():
        yield


# A quantization-aware model's weights, in get_weights() order, inside its .keras archive.
QAT_WEIGHTS_ENTRY = "edgecnn_weights.npz"


def _has_quantize_wrappers(model) -> bool:
    return any(type(layer).__name__ in ("QuantizeLayer", "QuantizeWrapper", "QuantizeWrapperV2")
               for layer in model.layers)


def save_keras_model(model, path: str | Path) -> Path:
    """``model.save(path)`` to a ``.keras`` archive that :func:`load_keras_model` reads back, wrapped or not.

    tfmot 0.8's ``QuantizeWrapperV2`` records its variables in a different order when
    saved than when rebuilt from a ``.keras`` archive, so tf_keras cannot restore a
    quantization-aware model's weights from its own ``model.weights.h5``. For such a
    model the archive also carries the weights in ``get_weights()`` order
    (``edgecnn_weights.npz``), which the loader assigns to the model rebuilt from
    ``config.json``. Write to a temporary path and rename for atomicity (the caller's
    job, e.g. :func:`edgecnn.fileio.atomic_path`).
    """
    import numpy as np

    path = Path(path)
    model.save(path)
    if path.suffix == ".keras" and _has_quantize_wrappers(model):
        # An .npz written by hand with fixed dates (np.savez stamps the current time), so
        # the same weights always give the same bytes and the same artifact sha256.
        buffer = io.BytesIO()
        write_reproducible_npz(buffer, {f"arr_{i}": np.asarray(w) for i, w in enumerate(model.get_weights())})
        preserved = _prune_preserved(model)
        with zipfile.ZipFile(path, "a") as zf:
            zf.writestr(reproducible_zip_info(QAT_WEIGHTS_ENTRY), buffer.getvalue())
            if preserved:
                zf.writestr(reproducible_zip_info(PRUNE_PRESERVE_ENTRY),
                            json.dumps(preserved, sort_keys=True).encode())
    return path


# Which weights of a sparsity-preserving QAT model keep their zeros: layer name -> indices
# into its quantized weights. tfmot's quantize configs do not serialize their weight
# quantizer, so without this a reloaded PQAT model would come back as plain QAT.
PRUNE_PRESERVE_ENTRY = "edgecnn_prune_preserve.json"


def _prune_preserve_classes():
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (
        prune_preserve_quantize_registry as registry,
    )

    return registry


def _prune_preserved(model) -> dict[str, list[int]]:
    registry = _prune_preserve_classes()
    found: dict[str, list[int]] = {}
    for layer in model.layers:
        for i, (_, quantizer, _) in enumerate(getattr(layer, "_weight_vars", ())):
            if isinstance(quantizer, registry.PrunePreserveDefaultWeightsQuantizer):
                found.setdefault(layer.name, []).append(i)
    return found


def _restore_prune_preserve(model, preserved: dict) -> int:
    """Put the prune-preserve weight quantizers back into a reloaded PQAT model, their masks
    derived from the saved weights (1 where a weight is non-zero), as tfmot derives them
    from the pruned weights when it builds the layer. Returns how many were restored."""
    from edgecnn._tf import tensorflow

    tf = tensorflow()
    registry = _prune_preserve_classes()
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import default_8bit_quantizers

    restored = 0
    for layer in model.layers:
        for i in preserved.get(layer.name, ()):
            weight, quantizer, variables = layer._weight_vars[i]
            replacement = registry.PrunePreserveDefault8BitConvWeightsQuantizer() \
                if isinstance(quantizer, default_8bit_quantizers.Default8BitConvWeightsQuantizer) \
                else registry.PrunePreserveDefault8BitWeightsQuantizer()
            mask = tf.math.divide_no_nan(tf.identity(weight), tf.identity(weight))
            layer._weight_vars[i] = (weight, replacement, {**variables, "sparsity_mask": mask})
            if getattr(layer.quantize_config, "weight_quantizer", None) is quantizer:
                layer.quantize_config.weight_quantizer = replacement
            restored += 1
    return restored


def _load_with_weight_list(path: Path, safe_mode: bool = True):
    import numpy as np

    K = keras()
    with zipfile.ZipFile(path) as zf:
        config = zf.read("config.json").decode()
        arrays = np.load(io.BytesIO(zf.read(QAT_WEIGHTS_ENTRY)), allow_pickle=False)
        weights = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
    from tf_keras.src.saving.serialization_lib import SafeModeScope  # not exported by tf_keras

    with SafeModeScope(safe_mode):
        model = K.models.model_from_json(config)
    model.set_weights(weights)
    return model


def _archive_entries(path: Path) -> list[str]:
    if not path.is_file() or not zipfile.is_zipfile(path):
        return []
    with zipfile.ZipFile(path) as zf:
        return zf.namelist()


@functools.cache
def _built_once_classes() -> dict:
    """Stand-ins, for loading only, for tfmot classes that build twice when read from a ``.keras`` file.

    tfmot's ``QuantizeLayer.build`` does not mark the layer built, so reading a
    quantization-aware model from a ``.keras`` archive (``build_from_config``, then the
    functional rebuild) creates its range variables twice and the weights no longer fit
    ("expected 5 variables, but received 3"; tensorflow/model-optimization PR #1123).
    The subclass keeps the name and behaviour and builds once. It enters through a
    thread-local custom-object scope inside tfmot's scopes (the innermost wins), so no
    global registry is touched.
    """
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import (
        QuantizeLayer as TfmotQuantizeLayer,
    )

    class QuantizeLayer(TfmotQuantizeLayer):
        def build(self, input_shape):
            if self.built:
                return
            super().build(input_shape)
            self.built = True

    return {"QuantizeLayer": QuantizeLayer}


def load_keras_model(path: str | Path, what: str = "teacher.path", *, trust_code: bool = False,
                     opt_in: str = "teacher.trust_code: true", origin: str | Path | None = None):
    """Load a saved tf_keras model (.keras, .h5 or a SavedModel folder) without compiling it.

    Untrusted by default: the file's architecture is read as JSON first and a model that
    would run Python code when loaded (a ``Lambda`` layer, a class that is not Keras',
    tfmot's or edgecnn's) is refused before anything is deserialized
    (:mod:`edgecnn.models.untrusted`). ``trust_code=True`` is the user's opt-in, Keras'
    ``safe_mode=False``: the check is skipped and Keras deserializes the code.

    Plain models and tfmot-wrapped ones (pruned, quantization-aware) load alike. A model
    written by Keras 3 is refused before loading, with how to re-save it for tf_keras
    (see :func:`edgecnn.models._common.refuse_keras3_model`): tf_keras cannot read
    Keras 3's layer configs, and tensorflow-model-optimization needs tf_keras.

    Args:
        path: the saved model.
        what: the recipe key or artifact the path came from, for error messages.
        trust_code: run the Python code the file carries (the recipe's opt-in).
        opt_in: the recipe setting that trusts the file, named in a refusal.
        origin: for a copy edgecnn wrote from a user's file, that file: errors name it.

    Returns:
        The tf_keras model.

    Raises:
        ModelFileError: the path is missing, holds no Keras model, holds a Keras 3 one, or
            holds code and ``trust_code`` is False.
    """
    from edgecnn.models.untrusted import check_model_file, describe_file

    path = Path(path)
    named = describe_file(path, origin)
    if not path.exists():
        raise ModelFileError(f"{named}: {what} does not exist; give a saved Keras model (.keras, .h5 or SavedModel folder)")
    refuse_keras3_model(path, what)
    if not trust_code:
        check_model_file(path, what, opt_in, origin=origin)
    K = keras()
    try:
        entries = _archive_entries(path)
        with tfmot_scopes(), K.utils.custom_object_scope(_built_once_classes()):
            if QAT_WEIGHTS_ENTRY in entries:
                model = _load_with_weight_list(path, safe_mode=not trust_code)
            elif path.suffix == ".keras":
                model = K.models.load_model(path, compile=False, safe_mode=not trust_code)
            else:
                model = K.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many unrelated types for a bad file
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{named}: not a Keras model ({first}); {what} must be a model saved with model.save()") from None
    if isinstance(model, K.Model) and PRUNE_PRESERVE_ENTRY in entries:
        with zipfile.ZipFile(path) as zf:
            _restore_prune_preserve(model, json.loads(zf.read(PRUNE_PRESERVE_ENTRY)))
    if not isinstance(model, K.Model):
        # tf_keras hands back a bare trackable object for a SavedModel it did not write.
        raise ModelFileError(f"{named}: not a Keras model (a SavedModel without a Keras model in it); "
                             f"{what} must be a tf_keras model saved with model.save()")
    return model
