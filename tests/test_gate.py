"""The accuracy gate (``quantize.max_drop``) and the litert-quantizer wrapper it uses.

The model that quantizes badly is made by hand, so the test knows which layer is at fault:
a small CNN trained on band images, then one channel of its first convolution is made dead
(ReLU of a negative constant: always 0) and the second convolution reads that channel with
weight 1000. The float model is unchanged (0 x 1000), but the second convolution's int8
weights share one scale per output channel, set by the 1000: every real weight rounds to 0
and the int8 model guesses. Keeping that one layer float fixes it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import run_edgecnn

pytest.importorskip("litert_quantizer")


def _band_data(n: int, seed: int):
    """16x16x1 images; the class is which of four vertical bands is bright."""
    rng = np.random.RandomState(seed)
    y = rng.randint(0, 4, n)
    x = rng.rand(n, 16, 16, 1).astype(np.float32) * 0.3
    for i, c in enumerate(y):
        x[i, :, c * 4:(c + 1) * 4, :] += 0.7
    return x, y


@pytest.fixture(scope="module")
def bad_model(tmp_path_factory):
    """(inference model, float32 file, validation x, y, calibration x) of a model whose
    ``conv_b`` cannot be quantized per channel without losing everything."""
    from edgecnn._tf import keras
    from edgecnn.export.formats import get_format
    from edgecnn.export.tflite import convert, inference_model

    k = keras()
    k.utils.set_random_seed(0)
    x, y = _band_data(1200, 0)
    inputs = k.layers.Input((16, 16, 1), name="image")
    h = k.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv_a")(inputs)
    h = k.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv_b")(h)
    h = k.layers.Flatten(name="flat")(h)  # where the bright band is: no global pooling
    model = k.Model(inputs, k.layers.Dense(4, name="logits")(h), name="bad")
    # Set before training: no gradient reaches a dead ReLU's weights or what reads its zeros
    # (Adam moves nothing on a zero gradient), so training learns around them and they stay.
    kernel, bias = model.get_layer("conv_a").get_weights()
    kernel[..., 7], bias[7] = 0.0, -1.0  # channel 7 of conv_a: ReLU(-1) = 0 for every input
    model.get_layer("conv_a").set_weights([kernel, bias])
    kernel, bias = model.get_layer("conv_b").get_weights()
    kernel[:, :, 7, :] = 1000.0  # ... read with weight 1000: no effect in float, ruins int8 weights
    model.get_layer("conv_b").set_weights([kernel, bias])
    model.compile(k.optimizers.Adam(0.01), k.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    model.fit(x[:1000], y[:1000], epochs=10, batch_size=50, verbose=0)
    assert np.all(model.get_layer("conv_b").get_weights()[0][:, :, 7, :] == 1000.0)
    inference = inference_model(model)
    out = tmp_path_factory.mktemp("gate")
    float_path = convert(inference, get_format("float32"), out / "bad_float32.tflite")
    return inference, float_path, x[1000:], y[1000:], x[:64]


def _accuracy(model, x, y) -> float:
    from edgecnn.runtime.interpreter import make_interpreter, predict

    return float(np.mean(predict(make_interpreter(model, threads=1), x).argmax(-1) == y))


def test_min_max_calibration_reaches_the_quantizer(bad_model):
    """The one use of litert-quantizer internals (its Calibrator with a min/max update rule,
    which ``Quantizer.calibrate`` does not expose): if the package moves them, this fails
    here, naming the wrapper, rather than the gate silently calibrating differently.

    Min/max ranges are the extremes of the calibration images' activations; the package's
    default (moving average) would give a narrower range for the input tensor than the
    true min/max of the calibration images."""
    from edgecnn.export import requantize

    _, float_path, _, _, calibration = bad_model
    described = requantize.describe(float_path)
    assert described.input_name == "image" and described.signature == "serving_default"
    ranges = requantize.calibrate(described, calibration)
    input_tensor = next(name for name in ranges if "image" in name)
    qsv = ranges[input_tensor]
    assert float(np.min(qsv["min"])) == pytest.approx(float(calibration.min()), abs=1e-6)
    assert float(np.max(qsv["max"])) == pytest.approx(float(calibration.max()), abs=1e-6)


def test_keep_float_keeps_int8_io_and_the_named_layer_float(bad_model):
    from edgecnn.export import requantize
    from edgecnn.runtime.interpreter import input_specs, make_interpreter, output_specs

    _, float_path, _, _, calibration = bad_model
    described = requantize.describe(float_path)
    ranges = requantize.calibrate(described, calibration)
    conv_b = [name for name in described.op_outputs if "/conv_b/" in name]
    assert len(conv_b) == 1
    for keep in ([], conv_b):
        interpreter = make_interpreter(requantize.quantize_int8(described, ranges, keep), threads=1)
        assert [s.dtype for s in input_specs(interpreter) + output_specs(interpreter)] == [np.int8, np.int8]
        ops = [op["op_name"] for op in interpreter._get_ops_details()]
        assert ops.count("DEQUANTIZE") == (1 if keep else 0), ops


@pytest.mark.parametrize("per_channel", [True, False])
def test_weight_scales_per_channel_or_per_tensor_in_both_quantizers(bad_model, tmp_path, per_channel):
    """quantize.weights reaches both writers of int8 files: the converter (a private switch,
    so this read-back is what notices a TensorFlow that drops it) and litert-quantizer. The
    scales are counted in the file and as the runtime reports them."""
    from edgecnn.export import requantize
    from edgecnn.export.tflite import convert_int8
    from edgecnn.runtime.interpreter import make_interpreter
    from edgecnn.tflite.reader import weight_sparsity

    inference, float_path, _, _, calibration = bad_model
    converted = convert_int8(inference, calibration, "int8", tmp_path / "converter.tflite", per_channel=per_channel)
    described = requantize.describe(float_path)
    ranges = requantize.calibrate(described, calibration)
    quantized, mixed = tmp_path / "quantizer.tflite", tmp_path / "mixed.tflite"
    quantized.write_bytes(requantize.quantize_int8(described, ranges, per_channel=per_channel))
    # quantize.mixed's int16x8 layers (int16 activations, int8 weights) follow it too
    conv_b = [name for name in described.op_outputs if "/conv_b/" in name]
    mixed.write_bytes(requantize.quantize_int8(described, ranges, precisions={conv_b[0]: "int16x8"},
                                               per_channel=per_channel))
    for path in (converted, quantized, mixed):
        rows = {r.tensor: r for r in weight_sparsity(path) if r.dtype == "INT8"}
        assert len(rows) == 3, list(rows)  # conv_a, conv_b, logits
        expected = {name: (r.shape[0] if per_channel else 1) for name, r in rows.items()}
        assert {name: r.scales for name, r in rows.items()} == expected
        # The runtime agrees on the convolutions. Not on FULLY_CONNECTED: once prepared,
        # ai-edge-litert reports a per-tensor weight's one scale repeated per output row.
        interpreter = make_interpreter(path, threads=1)
        seen = {d["name"]: len(d["quantization_parameters"]["scales"]) for d in interpreter.get_tensor_details()}
        convs = [name for name, r in rows.items() if r.op == "CONV_2D"]
        assert len(convs) == 2 and {name: seen[name] for name in convs} == {name: expected[name] for name in convs}


def test_gate_finds_the_bad_layer_and_meets_the_budget(bad_model, tmp_path):
    """max_drop 0.3 on the hand-made bad model: the full int8 model fails, the ranking puts
    conv_b first, keeping it float meets the budget with int8 I/O, within 60 s of the
    first calibration; the node data names the float file's tensors."""
    from edgecnn.export import gate, requantize

    model, float_path, x_val, y_val, calibration = bad_model
    float_acc = _accuracy(float_path, x_val, y_val)
    assert float_acc > 0.9, "the hand-made model should classify the bands"
    described = requantize.describe(float_path)
    ranked = gate.rank_layers(model, calibration, described.op_outputs)
    assert ranked[0].layer == "conv_b", [(e.layer, e.rmse_scale) for e in ranked]
    assert ranked[0].rmse_scale > 3 * gate.ROUNDING_RMSE_SCALE > ranked[-1].rmse_scale / 3
    ranges = requantize.calibrate(described, calibration)
    start = time.perf_counter()
    result = gate.search(lambda names: requantize.quantize_int8(described, ranges, names), ranked,
                         lambda m: _accuracy(m, x_val, y_val), float_acc, 0.3, 8,
                         latency=lambda m: gate.host_latency_ms(m, x_val))
    assert time.perf_counter() - start <= 60
    assert result.attempts[0].keep_float == [] and result.attempts[0].drop_points > 20
    assert result.model is not None and result.kept_float == ["conv_b"]
    assert result.attempts[-1].drop_points <= 0.3
    assert all(a.latency_ms > 0 for a in result.attempts)
    data = gate.node_data(ranked, "int8 error")
    assert set(data["results"]) <= set(described.op_outputs)
    assert data["results"][ranked[0].float_ops[0]]["value"] == ranked[0].rmse_scale


def test_gate_gives_up_after_its_attempts(bad_model):
    """One attempt only (the full int8 model): no model, and the attempt is recorded."""
    from edgecnn.export import gate, requantize

    model, float_path, x_val, y_val, calibration = bad_model
    described = requantize.describe(float_path)
    ranges = requantize.calibrate(described, calibration)
    ranked = gate.rank_layers(model, calibration, described.op_outputs)
    result = gate.search(lambda names: requantize.quantize_int8(described, ranges, names), ranked,
                         lambda m: _accuracy(m, x_val, y_val), _accuracy(float_path, x_val, y_val), 0.3, 1)
    assert result.model is None and len(result.attempts) == 1 and result.kept_float == []


GATE_TAIL = """\
quantize:
  max_drop: 0.0
  gate_attempts: 64
  mixed: {block_16_project: float32, Conv1: int16x8}
export:
  formats: [float32, int4]
"""


def test_build_with_a_gate_reports_it_and_keeps_int8_io(tmp_path):
    """`edgecnn build` of a recipe with `quantize.max_drop: 0` (the strictest budget), as a
    user runs it; one build also checks the other litert-quantizer files (int4 export,
    quantize.mixed), each evaluated beside the converter's int8 file. Which way the gate goes depends on how this 1-epoch student rounds, so
    both are checked for what each must hold: within budget, no gated file and the report
    says so; else a gated file with int8 I/O whose last attempt meets the budget, evaluated
    on the test split like every file, named in report.md with what stayed float; or, when
    no attempt meets it, one error line listing the attempts and no gated file."""
    from helpers import write_teacher_path_recipe

    from edgecnn.tflite.reader import inspect_tflite

    recipe = write_teacher_path_recipe(tmp_path, "gated", 0, 200, GATE_TAIL)
    recipe.write_text(recipe.read_text().replace("validation_fraction: 0.0", "validation_fraction: 0.3")
                      .replace("train_limit: 100", "train_limit: 200"))
    run = tmp_path / "run"
    proc = run_edgecnn("build", str(recipe), "--out", str(run))
    gated = run / "student_int8_gated.tflite"
    if proc.returncode != 0:
        from helpers import assert_one_line_error

        line = assert_one_line_error(proc, 2, "quantize.max_drop 0", "student_int8.tflite", "tried float []",
                                     build=True)
        assert "student_int8_layer_error.json" in line and not gated.exists()
        return
    report = json.loads((run / "report.json").read_text())
    evaluation = json.loads((run / "evaluation.json").read_text())["models"]
    mixed, int4 = inspect_tflite(run / "student_int8_mixed.tflite"), inspect_tflite(run / "student_int4.tflite")
    assert mixed.inputs[0].dtype == mixed.outputs[0].dtype == "INT8"
    assert {"INT16", "FLOAT32"} <= {t.dtype for t in mixed.tensor_types if t.tensors > t.constant_tensors}
    assert "INT4" in int4.weight_dtypes and int4.inputs[0].dtype == "FLOAT32"
    rows = {m["name"]: m for m in report["models"]}
    for name in ("tflite_int8", "tflite_int8_mixed", "tflite_int4"):
        assert evaluation[name]["status"] == "evaluated" and evaluation[name]["reference"] == "tflite_float32"
        assert evaluation[name]["macs"] == evaluation["tflite_float32"]["macs"] > 1e6  # same shapes, same arithmetic
        assert 0 < rows[name]["latency_ms"]["p50"] <= rows[name]["latency_ms"]["p90"]
    (record,) = report["gate"]
    assert record["model"] == "student_int8.tflite" and record["validation_images"] == 60
    if record["int8_drop_points"] <= 0.0:
        assert record["gated_model"] is None and not gated.exists()
        assert "within budget, no layer kept float" in (run / "report.md").read_text()
        return
    assert record["gated_model"] == gated.name and record["attempts"][-1]["drop_points"] <= 0.0
    assert record["kept_float"] == record["attempts"][-1]["keep_float"] and record["kept_float"]
    summary = inspect_tflite(gated)
    assert summary.inputs[0].dtype == summary.outputs[0].dtype == "INT8"
    assert evaluation["tflite_int8_gated"]["status"] == "evaluated"
    assert evaluation["tflite_int8_gated"]["reference"] == "tflite_float32"
    assert f"keeps **{', '.join(record['kept_float'])}** float" in (run / "report.md").read_text()
    layer_error = json.loads((run / "student_int8_layer_error.json").read_text())
    assert record["ranking"][0]["rmse_scale"] in {v["value"] for v in layer_error["results"].values()}


def test_large_quantizer_output_is_made_inline_and_computes_the_same(tmp_path):
    """litert-quantizer stores weights after the flatbuffer once they pass 256 KiB; edgecnn
    moves them inside (older runtimes and the metadata writer read only that), and the
    model computes exactly what the quantizer's own file computes (same bytes, same kernels)."""
    from litert_quantizer import quantizer, recipe

    from edgecnn._tf import keras
    from edgecnn.export import requantize
    from edgecnn.export.formats import get_format
    from edgecnn.export.tflite import convert, inference_model
    from edgecnn.runtime.interpreter import make_interpreter, predict
    from edgecnn.tflite.metadata import _raw_buffers

    k = keras()
    k.utils.set_random_seed(0)
    inputs = k.layers.Input((16, 16, 1), name="image")
    hidden = k.layers.Dense(1200, activation="relu", name="wide")(k.layers.Flatten()(inputs))  # 307k weights
    model = inference_model(k.Model(inputs, k.layers.Dense(4, name="logits")(hidden), name="wide"))
    float_path = convert(model, get_format("float32"), tmp_path / "wide.tflite")
    x, _ = _band_data(32, 1)
    described = requantize.describe(float_path)
    ranges = requantize.calibrate(described, x)
    raw = bytes(quantizer.Quantizer(str(float_path), recipe.static_wi8_ai8()).quantize(
        ranges, enable_progress_report=False).quantized_model)
    assert any(b.Offset() > 1 for b in _raw_buffers(raw)), "the quantizer no longer stores large weights outside"
    inline = requantize.quantize_int8(described, ranges)
    assert not any(b.Offset() > 1 for b in _raw_buffers(inline))
    np.testing.assert_array_equal(predict(make_interpreter(inline, threads=1), x),
                                  predict(make_interpreter(raw, threads=1), x))


def test_int4_row_stores_int4_conv_and_dense_weights_and_int8_depthwise(tmp_path):
    """The int4 row of the format table (litert-quantizer, weight-only): Conv2D and Dense
    kernels are stored as INT4, depthwise kernels as INT8, I/O and activations stay float,
    the file is smaller than the float32 one, and it classifies like it on ai-edge-litert."""
    from edgecnn._tf import keras
    from edgecnn.export import requantize
    from edgecnn.export.formats import get_format
    from edgecnn.export.tflite import convert, inference_model
    from edgecnn.tflite.reader import inspect_tflite

    k = keras()
    k.utils.set_random_seed(0)
    x, y = _band_data(600, 2)
    inputs = k.layers.Input((16, 16, 1), name="image")
    h = k.layers.Conv2D(32, 3, strides=2, activation="relu", name="conv")(inputs)
    h = k.layers.DepthwiseConv2D(3, activation="relu", name="depthwise")(h)
    h = k.layers.Conv2D(64, 1, activation="relu", name="pointwise")(h)
    model = k.Model(inputs, k.layers.Dense(4, name="logits")(k.layers.Flatten()(h)), name="int4")
    model.compile(k.optimizers.Adam(0.01), k.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:500], y[:500], epochs=4, batch_size=50, verbose=0)
    float_path = convert(inference_model(model), get_format("float32"), tmp_path / "float32.tflite")
    fmt = get_format("int4")
    path = tmp_path / fmt.filename
    path.write_bytes(requantize.quantize_weights(requantize.describe(float_path), fmt.weight_bits))
    summary = inspect_tflite(path)
    assert set(summary.weight_dtypes) == {"INT4", "INT8"}, summary.weight_dtypes
    assert summary.inputs[0].dtype == summary.outputs[0].dtype == "FLOAT32"
    assert path.stat().st_size < 0.4 * float_path.stat().st_size
    agreement = np.mean(predict_top1(path, x[500:]) == predict_top1(float_path, x[500:]))
    assert agreement >= 0.95, agreement


def predict_top1(model, x):
    from edgecnn.runtime.interpreter import make_interpreter, predict

    return predict(make_interpreter(model, threads=1), x).argmax(-1)


def test_mixed_precision_puts_named_layers_at_their_precision(bad_model):
    """quantize.mixed's engine: conv_a at int16x8 (int16 activations), conv_b in float32,
    the rest int8, I/O int8; and it fixes the bad model as the gate does."""
    from edgecnn.export import requantize
    from edgecnn.export.gate import layer_names
    from edgecnn.runtime.interpreter import make_interpreter

    _, float_path, x_val, y_val, calibration = bad_model
    described = requantize.describe(float_path)
    ranges = requantize.calibrate(described, calibration)
    wanted = {"conv_a": "int16x8", "conv_b": "float32"}
    precisions = {op: wanted[n] for op in described.op_outputs for n in layer_names(op) if n in wanted}
    assert sorted(precisions.values()) == ["float32", "int16x8"]
    model = requantize.quantize_int8(described, ranges, precisions=precisions)
    interpreter = make_interpreter(model, threads=1)
    dtypes = {d["name"]: d["dtype"] for d in interpreter.get_tensor_details()}
    conv_a_out = next(op for op, p in precisions.items() if p == "int16x8")
    assert dtypes[conv_a_out] == np.int16
    assert interpreter.get_input_details()[0]["dtype"] == interpreter.get_output_details()[0]["dtype"] == np.int8
    assert abs(_accuracy(model, x_val, y_val) - _accuracy(float_path, x_val, y_val)) <= 0.02


def test_mixed_pattern_matching_no_layer_fails_before_training(tmp_path):
    """A quantize.mixed glob that names no student layer: one line naming it and close
    layer names, exit 2, before any stage runs (no run directory content)."""
    from helpers import assert_one_line_error, write_teacher_path_recipe

    recipe = write_teacher_path_recipe(tmp_path, "mixed", 0, 50, "quantize:\n  mixed: {'block_16_projct': float32}\n")
    run = tmp_path / "run"
    proc = run_edgecnn("build", str(recipe), "--out", str(run))
    assert_one_line_error(proc, 2, "quantize.mixed", "'block_16_projct'", "block_16_project", build=True)
    assert not (run / "student.keras").exists()
