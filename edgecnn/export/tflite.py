"""Keras -> TFLite conversion: float flavours and full-integer post-training int8."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from edgecnn._tf import keras, native_stderr_silenced, tensorflow
from edgecnn.export.formats import ExportFormat
from edgecnn.fileio import write_bytes_atomic


def inference_model(student):
    """The deployable classifier: ``student`` (logits) followed by a softmax named ``scores``.

    Deployed classifiers expose probabilities (what the TFLite Task Library and MediaPipe
    expect); training works on logits. The softmax adds no weights.
    """
    K = keras()
    scores = K.layers.Softmax(name="scores")(student.output)
    return K.Model(student.input, scores, name=f"{student.name}_classifier")


def _converter(model):
    """A converter for ``model`` traced at batch 1.

    ``from_keras_model`` exports the model's own signature, whose batch is ``None``: the
    converted file then says -1 in the ``shape_signature`` of every activation, and the
    Edge TPU compiler refuses it ("only supports static-sized tensors"). Tracing a
    ``tf.function`` with a batch-1 input signature gives every tensor a static shape in
    all formats. A trackable object keeps the SavedModel route that ``from_keras_model``
    takes, so the file keeps the ``serving_default`` signature with the Keras input and
    output names (``image`` -> ``scores``). That object is a bare ``tf.Module`` holding the
    model's variables (all the function captures), not the Keras model: saving a Keras
    model serializes every layer, re-tracing each layer's call, which took 10 of the 13.5 s
    of an int8 conversion of MobileNetV2-0.35 (the file is byte-identical either way).
    """
    tf = tensorflow()
    # Tracing the Keras model can log (absl) on fd 2, like the conversion itself.
    with native_stderr_silenced():
        function = _batch_one_function(model)
        holder = tf.Module()
        holder.model_variables = list(model.variables)
        # A capture the holder does not track (a resource outside the model's variables) would
        # make the converter drop the SavedModel route silently, and the file its signature:
        # then the Keras model, slow but complete, is the trackable object.
        tracked = {id(v.handle) for v in holder.model_variables}
        if any(t.dtype == tf.resource and id(t) not in tracked for t in function.captured_inputs):
            holder = model
        return tf.lite.TFLiteConverter.from_concrete_functions([function], holder)


def _batch_one_function(model):
    """``model``'s inference call as a concrete function of batch-1 inputs, outputs keyed by Keras name."""
    tf = tensorflow()
    specs = [tf.TensorSpec([1, *tensor.shape[1:]], tensor.dtype, name=name)
             for tensor, name in zip(model.inputs, model.input_names)]

    @tf.function(input_signature=specs)
    def serve(*inputs):
        outputs = model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)
        # A dict names the signature's outputs after the Keras outputs, as from_keras_model does.
        return dict(zip(model.output_names, tf.nest.flatten(outputs)))

    return serve.get_concrete_function()


def converter_for(model, fmt: ExportFormat, representative: np.ndarray | None = None, io_dtype: str = "float32",
                  per_channel: bool = True):
    """A converter of ``model`` set up as row ``fmt`` says (the gate's layer ranking runs the
    same converter as the int8 file it explains).

    Args:
        model: float (or quantization-aware) tf_keras model.
        fmt: a row of :data:`edgecnn.export.formats.FORMATS`.
        representative: float32 model-ready inputs for calibration (rows that need it).
        io_dtype: the input/output type of rows whose ``io`` is ``recipe``.
        per_channel: False = one scale per weight tensor (``quantize.weights: per_tensor``).
    """
    tf = tensorflow()
    converter = _converter(model)
    if fmt.optimize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if fmt.supported_types:
        converter.target_spec.supported_types = [getattr(tf, t) for t in fmt.supported_types]
    if fmt.ops:
        converter.target_spec.supported_ops = [getattr(tf.lite.OpsSet, o) for o in fmt.ops]
    if fmt.needs_calibration:
        if representative is None:
            raise ValueError(f"format {fmt.name} needs calibration images")
        converter.representative_dataset = representative_batches(representative)
    if not per_channel:
        # The converter's only switch for per-tensor weights is this private attribute (there
        # since TF 2.4); tests/test_gate.py reads the scales back from the file, so
        # a TensorFlow that drops it fails a test instead of silently writing per-channel.
        converter._experimental_disable_per_channel = True
    if fmt.io == "recipe" and io_dtype != "float32":
        converter.inference_input_type = getattr(tf, io_dtype)
        converter.inference_output_type = getattr(tf, io_dtype)
    return converter


def representative_batches(images: np.ndarray):
    """A representative-dataset callable: ``images`` one at a time, as the converter wants."""

    def batches():
        for i in range(len(images)):
            yield [images[i : i + 1].astype(np.float32)]

    return batches


def convert(model, fmt: ExportFormat, path: str | Path, representative: np.ndarray | None = None,
            io_dtype: str = "float32", per_channel: bool = True) -> Path:
    """Write ``model`` in the format of row ``fmt`` (the converter settings are the row's) atomically;
    arguments as :func:`converter_for`."""
    return write_bytes_atomic(path, _convert(converter_for(model, fmt, representative, io_dtype, per_channel)))


def convert_float(model, fmt: ExportFormat, path: str | Path) -> Path:
    """Write a format that needs no calibration (float32, float16, dynamic) atomically."""
    return convert(model, fmt, path)


def _convert(converter) -> bytes:
    # The converter prints MLIR pass chatter to fd 2 and warns about input statistics
    # it does not need for full-integer models; neither helps the person reading
    # (--verbose shows the native lines). A ConverterError raised inside carries the
    # converter's own message and reaches the CLI after fd 2 is restored.
    with native_stderr_silenced(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return converter.convert()


def convert_int8(model, representative: np.ndarray, io_dtype: str, path: str | Path, per_channel: bool = True) -> Path:
    """Write a full-integer int8 TFLite file (weights and activations int8) atomically.

    Args:
        model: float tf_keras model.
        representative: float32 model-ready inputs (already normalized) for calibration;
            the converter observes activation ranges on them to choose scales.
        io_dtype: ``int8``, ``uint8`` or ``float32`` input/output tensors.
        path: output file.
        per_channel: one weight scale per output channel (True) or per tensor.

    Raises:
        ValueError: when the model has an op with no int8 kernel (the converter refuses
            rather than silently keeping float ops, since ``TFLITE_BUILTINS_INT8`` only).
    """
    from edgecnn.export.formats import get_format

    return convert(model, get_format("int8"), path, representative, io_dtype, per_channel)
