"""Pieces shared by the student and teacher builders."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Optional

from edgecnn.errors import ModelFileError, RecipeError

# A .keras zip's metadata.json is about 70 bytes; anything far larger is not one.
_MAX_METADATA_BYTES = 64 * 1024


def resolve_weights(weights: str | None, key: str, channels: int) -> str | None:
    """Turn a recipe ``weights`` value into what keras.applications accepts.

    Args:
        weights: None, ``"imagenet"`` or a path to a local weights file.
        key: recipe key path, for messages (``student.weights``).
        channels: model input channels; ImageNet weights need 3.

    Returns:
        None, ``"imagenet"`` or an absolute path string.

    Raises:
        RecipeError: the file does not exist or the input is not RGB.
    """
    if weights is None:
        return None
    if channels != 3:
        raise RecipeError(f"{key}: pretrained weights need 3 input channels; set data.channels: 3")
    if weights == "imagenet":
        return weights
    path = Path(weights).expanduser()
    if not path.is_file():
        raise RecipeError(f"{key}: weights file '{weights}' not found; give None, 'imagenet' or an existing .h5 weights file")
    return str(path.resolve())


def call_keras_application(factory, name: str, key: str, weights: str | None, **kwargs):
    """Call a keras.applications constructor, turning its failures into one clear line."""
    try:
        return factory(weights=weights, **kwargs)
    except ValueError as exc:
        text = str(exc).splitlines()[0]
        if "input" in text.lower() and ("shape" in text.lower() or "size" in text.lower()):
            raise RecipeError(f"{key}: {name} cannot take this input ({text}); change data.image_size") from None
        if weights not in (None, "imagenet"):
            raise ModelFileError(f"{weights}: not weights for {name} ({text}); use a file saved from the same architecture") from None
        raise RecipeError(f"{key}: {name}: {text}") from None
    except OSError as exc:
        raise ModelFileError(f"{weights}: cannot read weights ({exc}); use an .h5 weights file saved by Keras") from None
    except Exception as exc:  # keras wraps download failures in a bare Exception
        if weights == "imagenet" and "URL fetch failure" in str(exc):
            raise ModelFileError(
                f"{key}.weights: could not download the ImageNet weights of {name} (offline?); download them where you are online "
                "and set the weights key to the local .h5 file, or copy it into ~/.keras/models/"
            ) from None
        raise


def set_batchnorm_momentum(model, momentum: float) -> None:
    """Lower BatchNormalization momentum in place.

    keras.applications use 0.999, tuned for ImageNet-length runs; in a few short epochs
    the moving statistics never converge and the model scores at chance in inference
    mode (seen here: 10 % after one Fashion-MNIST epoch). 0.9 converges in ~50 steps.
    """
    for layer in model.layers:
        if layer.__class__.__name__ == "BatchNormalization":
            layer.momentum = momentum


def classifier_head(keras, features, num_classes: int, dropout: float, name: str = "logits"):
    """Global pooling, dropout and a dense layer producing logits (no softmax)."""
    x = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    return keras.layers.Dense(num_classes, name=name)(x)


def reduce_output_stride(keras, backbone, output_stride: int):
    """Rebuild a keras.applications backbone without its last downsamplings.

    An ImageNet backbone halves the feature map five times (output stride 32), so a
    32x32 input leaves a 1x1 map: the last blocks' 3x3 depthwise kernels then see one
    pixel and padding. Output stride 16 (8) turns the last one (two) stride-2 depthwise
    convolutions into stride 1, with their explicit ZeroPadding2D widened to "same".
    Kernel shapes do not change, so pretrained weights carry over; without dilation the
    receptive field is smaller than the one they were trained with, which fine-tuning
    absorbs (DeepLab uses dilation instead; Edge TPUs run plain convolutions best).

    Returns ``backbone`` itself for 32, else a new flat functional model built on a new
    Input with the same layer names and weights.
    """
    steps = {32: 0, 16: 1, 8: 2}[output_stride]
    if steps == 0:
        return backbone
    config = backbone.get_config()
    layers = {layer["config"]["name"]: layer for layer in config["layers"]}
    strided = [
        layer for layer in config["layers"]
        if layer["class_name"] == "DepthwiseConv2D" and tuple(layer["config"]["strides"]) == (2, 2)
    ]
    if len(strided) < steps:
        raise ValueError(f"{backbone.name} has {len(strided)} strided depthwise convolutions, cannot reach output stride {output_stride}")
    for depthwise in strided[-steps:]:
        depthwise["config"]["strides"] = (1, 1)
        # inbound_nodes: [[[layer_name, node_index, tensor_index, kwargs]]]
        source = layers[depthwise["inbound_nodes"][0][0][0]]
        if source["class_name"] == "ZeroPadding2D" and depthwise["config"]["padding"] == "valid":
            k = depthwise["config"]["kernel_size"][0]
            source["config"]["padding"] = ((k // 2, k // 2), (k // 2, k // 2))
        else:
            depthwise["config"]["padding"] = "same"
    rebuilt = keras.Model.from_config(config)
    rebuilt.set_weights(backbone.get_weights())
    return rebuilt


# --------------------------------------------------------------------------- Keras 3 files


def _major(version: object) -> Optional[int]:
    if isinstance(version, bytes):
        version = version.decode("ascii", "replace")
    head = str(version).strip().split(".")[0]
    return int(head) if head.isdigit() else None


def keras3_origin(path: Path) -> Optional[str]:
    """Say how ``path`` was written when it is a Keras 3 model that tf_keras cannot load; else None.

    Reads only the file's own labels, without TensorFlow: the ``keras_version`` in a
    ``.keras`` zip's ``metadata.json`` (Keras 3 writes ``"3.x"``, tf_keras ``"2.x"``),
    the ``keras_version`` attribute of an ``.h5`` file's root group, and, for a folder,
    a ``saved_model.pb`` without the ``keras_metadata.pb`` that tf_keras writes next to
    it (Keras 3's ``model.export()`` and ``tf.saved_model.save`` leave no Keras model in
    it). Anything unreadable returns None, so the loader reports it in its own words.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file() and not (path / "keras_metadata.pb").is_file():
            return "a SavedModel without Keras metadata (what Keras 3's model.export() and tf.saved_model.save() write)"
        return None
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                info = archive.getinfo("metadata.json")
                if info.file_size > _MAX_METADATA_BYTES:
                    return None
                version = json.loads(archive.read(info)).get("keras_version")
        elif path.suffix.lower() in (".h5", ".hdf5"):
            try:
                import h5py  # installed with tf_keras; optional here
            except ImportError:
                return None
            with h5py.File(path, "r") as handle:
                version = handle.attrs.get("keras_version")
        else:
            return None
    except (OSError, KeyError, ValueError, AttributeError, zipfile.BadZipFile):
        return None
    major = _major(version) if version is not None else None
    if major is None or major < 3:
        return None
    shown = version.decode("ascii", "replace") if isinstance(version, bytes) else str(version)
    return f"saved by Keras {shown} (Keras 3)"


def refuse_keras3_model(path: Path, what: str) -> None:
    """Raise one line saying why a Keras 3 model cannot be used and how to re-save it for tf_keras.

    The advice is what the tests check works: tf_keras's ``load_weights`` reads the
    weights file Keras 3's ``save_weights`` writes (and the ``model.weights.h5`` inside a
    Keras 3 ``.keras`` zip) into the same architecture rebuilt with tf_keras.

    Raises:
        ModelFileError: when ``path`` is a Keras 3 model (see :func:`keras3_origin`).
    """
    origin = keras3_origin(path)
    if origin is None:
        return
    inside = " (or the model.weights.h5 inside the .keras zip)" if zipfile.is_zipfile(path) else ""
    raise ModelFileError(
        f"{path}: {what} is {origin}; edgecnn needs a tf_keras (Keras 2) model, the Keras that TensorFlow Model "
        f"Optimization works with: in Keras 3 run model.save_weights('teacher.weights.h5'){inside}, rebuild the same "
        "architecture with `import tf_keras as keras`, then model.load_weights('teacher.weights.h5') and "
        "model.save('teacher.keras') (README: 'A teacher saved by Keras 3')")
