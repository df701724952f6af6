"""Pieces shared by the student and teacher builders."""

from __future__ import annotations

from pathlib import Path

from edgecnn.errors import ModelFileError, RecipeError


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
