"""Converted models have a static batch of 1 in every tensor's shape signature.

The Edge TPU compiler refuses a model with any -1 in a ``shape_signature`` ("only
supports static-sized tensors"), so every format edgecnn writes is traced at batch 1.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="reads the converted files with the LiteRT interpreter")

SHAPE = (16, 16, 3)
NUM_CLASSES = 5


@pytest.fixture(scope="module")
def classifier():
    """A tiny classifier (conv, batch norm, pooling, dense, the export softmax) and inputs for it."""
    from edgecnn._tf import keras
    from edgecnn.export.tflite import inference_model

    k = keras()
    k.utils.set_random_seed(3)
    inputs = k.Input(SHAPE, name="image")
    x = k.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
    x = k.layers.BatchNormalization()(x)
    x = k.layers.ReLU(6.0)(x)
    x = k.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = k.layers.GlobalAveragePooling2D()(x)
    # Large head weights spread the untrained scores over [0, 1], so matching them tests the graph.
    logits = k.layers.Dense(NUM_CLASSES, kernel_initializer=k.initializers.RandomNormal(stddev=4.0))(x)
    model = inference_model(k.Model(inputs, logits, name="tiny"))
    rng = np.random.default_rng(0)
    # A colour per sample plus noise: pooled features (and so the scores) differ between samples.
    samples = np.clip(rng.uniform(-1, 1, (24, 1, 1, 3)) + rng.normal(0, 0.2, (24, *SHAPE)), -1, 1)
    return model, samples.astype(np.float32)


FORMATS = ["float32", "float16", "int8"]


@pytest.fixture(scope="module", params=FORMATS)
def converted(request, classifier, tmp_path_factory):
    """``(format name, path)``: ``classifier`` converted by edgecnn's exporter, once per format."""
    from edgecnn.export.formats import get_format
    from edgecnn.export.tflite import convert_float, convert_int8

    model, samples = classifier
    path = tmp_path_factory.mktemp("static_batch") / f"tiny_{request.param}.tflite"
    if request.param == "int8":
        return request.param, convert_int8(model, samples, "int8", path)
    return request.param, convert_float(model, get_format(request.param), path)


def test_every_tensor_has_a_static_batch_one_shape(converted):
    from ai_edge_litert.interpreter import Interpreter

    _, path = converted
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    tensors = interpreter.get_tensor_details()
    dynamic = [(t["name"], t["shape_signature"].tolist()) for t in tensors if -1 in t["shape_signature"]]
    assert tensors and not dynamic, dynamic
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert inp["shape_signature"].tolist() == [1, *SHAPE]
    assert out["shape_signature"].tolist() == [1, NUM_CLASSES]
    # The Keras names survive in the signature, as with from_keras_model.
    assert interpreter.get_signature_list() == {"serving_default": {"inputs": ["image"], "outputs": ["scores"]}}


# Tolerances on the softmax scores, in [0, 1]. float32: only the order of float operations
# differs (measured ~1e-7). float16 stores weights rounded to half precision (relative
# error up to 2**-11, ~5e-4) and computes in float32 (measured ~1e-4). int8: the output
# step is 1/256 and each quantized layer adds up to half a step of its own (measured
# ~0.0075, two steps); 0.025 leaves headroom. The scores vary by ~0.5 between samples,
# so a wrong graph (logits without the softmax, a dropped layer) cannot pass.
TOLERANCE = {"float32": 1e-5, "float16": 1e-3, "int8": 0.025}


def test_batch_one_model_matches_keras(classifier, converted):
    from edgecnn.runtime.interpreter import make_interpreter, predict

    model, samples = classifier
    fmt_name, path = converted
    got = predict(make_interpreter(path), samples)  # the host evaluation path
    expected = model(samples, training=False).numpy()
    assert got.shape == expected.shape == (len(samples), NUM_CLASSES)
    np.testing.assert_allclose(got, expected, atol=TOLERANCE[fmt_name], rtol=0)
    assert np.ptp(expected, axis=0).max() > 10 * TOLERANCE[fmt_name]  # scores that vary: the match means something


def test_host_evaluation_batches_a_static_model_with_the_same_results(converted, classifier):
    """predict() resizes a static batch-1 model to run many samples per invoke (evaluation
    was 1.3-3x slower one sample at a time) and gets what per-sample runs get."""
    from edgecnn.runtime.interpreter import make_interpreter, predict

    _, samples = classifier
    _, path = converted
    interpreter = make_interpreter(path, threads=1)
    batched = predict(interpreter, samples, batch_size=16)
    assert interpreter.get_input_details()[0]["shape"][0] > 1  # it really ran batches (last: 8)
    single = predict(make_interpreter(path, threads=1), samples, batch_size=1)
    np.testing.assert_allclose(batched, single, atol=2 / 256, rtol=0)


def test_a_model_that_bakes_batch_one_in_runs_one_sample_at_a_time(tmp_path):
    """A graph reshaping to a constant [1, 64] cannot run a larger batch (the runtime
    refuses the resize): predict() falls back to one sample at a time and gets the
    per-sample results. (A graph that resized silently and computed something else would
    be caught by the first-batch check; the converter folds every such graph we tried.)"""
    from edgecnn._tf import keras, tensorflow
    from edgecnn.export.formats import get_format
    from edgecnn.export.tflite import convert_float, inference_model
    from edgecnn.runtime.interpreter import make_interpreter, predict

    k, tf = keras(), tensorflow()
    k.utils.set_random_seed(5)
    inputs = k.Input(SHAPE, name="image")
    x = k.layers.Conv2D(4, 3, strides=4)(inputs)
    x = k.layers.Lambda(lambda t: tf.reshape(t, [1, 64]))(x)  # 4x4x4 features, the batch baked in
    model = inference_model(k.Model(inputs, k.layers.Dense(NUM_CLASSES)(x), name="baked"))
    path = convert_float(model, get_format("float32"), tmp_path / "baked.tflite")
    samples = np.random.default_rng(1).uniform(-1, 1, (6, *SHAPE)).astype(np.float32)
    got = predict(make_interpreter(path, threads=1), samples, batch_size=4)
    expected = np.concatenate([model(s[None], training=False).numpy() for s in samples])
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
