"""Tests of the TFLite inspector (untrusted files) and the interpreter helpers.

Tiny real models are converted once per session with TensorFlow; everything else is
pure Python/numpy. Malformed and fuzzed files must only ever raise ModelFileError.
"""

from __future__ import annotations

import inspect as pyinspect
import json
import os
import random
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from edgecnn.errors import DataError, MissingDependencyError, ModelFileError
from edgecnn.tflite import reader as insp
from edgecnn.tflite.reader import (
    format_summary,
    inspect_tflite,
    inspect_tflite_bytes,
    summary_to_dict,
)
from edgecnn.runtime import interpreter as rt
from edgecnn.runtime.interpreter import (
    IoSpec,
    dequantize_output,
    evaluate_tflite,
    make_interpreter,
    predict,
    quantize_input,
)

REPO = Path(__file__).resolve().parents[1]
INPUT_SHAPE = (12, 12, 1)
NUM_CLASSES = 3


def _toy_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is which of three vertical bands is bright."""
    rng = np.random.RandomState(seed)
    y = rng.randint(0, NUM_CLASSES, n)
    x = rng.rand(n, *INPUT_SHAPE).astype(np.float32) * 0.3
    for i, c in enumerate(y):
        x[i, :, c * 4:(c + 1) * 4, :] += 0.7
    return x, y


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """float32, int8 (int8 I/O), buffer-offset and fixed-batch .tflite files of one CNN."""
    from edgecnn._tf import keras, tensorflow

    tf, k = tensorflow(), keras()
    k.utils.set_random_seed(0)
    layers = [k.layers.Conv2D(4, 3, activation="relu"), k.layers.DepthwiseConv2D(3),
              k.layers.Flatten(), k.layers.Dense(NUM_CLASSES)]
    model = k.Sequential([k.layers.Input(INPUT_SHAPE), *layers])
    x, y = _toy_data(384, seed=0)
    model.compile("adam", k.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=4, batch_size=32, verbose=0)

    out = tmp_path_factory.mktemp("tflite")
    paths = {}
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    paths["float"] = out / "float32.tflite"
    paths["float"].write_bytes(conv.convert())

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(64))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    paths["int8"] = out / "int8.tflite"
    with warnings.catch_warnings():
        # TF asks for input statistics that a representative dataset makes unnecessary.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        paths["int8"].write_bytes(conv.convert())

    # Weights appended after the flatbuffer, addressed by Buffer.offset/size (the layout
    # of models over 2 GB); the flag is private, so a test skips if it stops working.
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv._experimental_use_buffer_offset = True
    paths["offset"] = out / "buffer_offset.tflite"
    paths["offset"].write_bytes(conv.convert())

    # Same weights, batch dimension fixed at 1: predict() must loop per sample.
    fixed = k.Sequential([k.layers.Input(INPUT_SHAPE, batch_size=1), *layers])
    conv = tf.lite.TFLiteConverter.from_keras_model(fixed)
    paths["fixed"] = out / "fixed_batch.tflite"
    paths["fixed"].write_bytes(conv.convert())
    paths["keras_scores"] = model.predict(_toy_data(64, seed=1)[0], verbose=0)
    return paths


def _litert_details(path):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    return it.get_input_details(), it.get_output_details()


def assert_model_file_error(path: Path, budget_s: float = 1.0) -> str:
    """inspect_tflite(path) must raise ModelFileError: one line, naming the file, fast."""
    start = time.perf_counter()
    with pytest.raises(ModelFileError) as info:
        inspect_tflite(path)
    elapsed = time.perf_counter() - start
    msg = str(info.value)
    assert path.name in msg and "\n" not in msg, msg
    assert elapsed < budget_s, f"{elapsed:.2f}s for {path.name}"
    return msg


# ------------------------------------------------------------------- inspect: content


def test_schema_field_ids_match_installed_schema():
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    for kind, fields in insp.TFLITE_SCHEMA.items():
        cls = getattr(schema, kind)
        for name, fid in fields.items():
            method = getattr(cls, "".join(p.title() for p in name.split("_")))
            assert f"Offset({4 + 2 * fid})" in pyinspect.getsource(method), (kind, name)


def test_summary_of_float_and_int8_models(models):
    f32, i8 = inspect_tflite(models["float"]), inspect_tflite(models["int8"])
    for s, path in ((f32, models["float"]), (i8, models["int8"])):
        assert s.file_size == os.path.getsize(path)
        assert s.schema_version == 3 and s.subgraph_count == 1
        for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            assert s.op_counts.get(op) == 1, s.op_counts
        assert "min_runtime_version" in s.metadata_names and s.min_runtime_version
        assert s.parameter_count >= 36 + 36 + 256 * NUM_CLASSES
        text = format_summary(s)
        assert "CONV_2D" in text and path.name in text
        json.dumps(summary_to_dict(s), allow_nan=False)

    assert f32.weight_dtypes == ("FLOAT32",) and not f32.weights_int8
    assert f32.inputs[0].dtype == "FLOAT32" and f32.inputs[0].scales == ()
    assert i8.weights_int8
    (inp,), (out,) = i8.inputs, i8.outputs
    assert inp.dtype == "INT8" and inp.scale > 0 and not inp.per_axis
    assert out.dtype == "INT8" and out.shape == (1, NUM_CLASSES)
    assert inp.shape_signature == (-1, *INPUT_SHAPE)
    int8_stats = {t.dtype: t for t in i8.tensor_types}["INT8"]
    assert int8_stats.parameter_bytes == int8_stats.parameters  # one byte per weight


@pytest.mark.parametrize("kind", ["float", "int8", "fixed", "offset"])
def test_io_matches_interpreter(models, kind):
    s = inspect_tflite(models[kind])
    for ours, theirs in zip((s.inputs, s.outputs), _litert_details(models[kind])):
        assert len(ours) == len(theirs) > 0
        for t, d in zip(ours, theirs):
            assert (t.index, t.name) == (d["index"], d["name"])
            assert t.shape == tuple(d["shape"])
            assert t.shape_signature == tuple(d["shape_signature"])
            assert t.dtype == np.dtype(d["dtype"]).name.upper()
            assert (t.scale, t.zero_point) == pytest.approx(d["quantization"])
            qp = d["quantization_parameters"]
            assert list(t.scales) == pytest.approx(list(qp["scales"]))
            assert list(t.zero_points) == list(qp["zero_points"])


def test_parameter_bytes_match_schema_reader(models):
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    for kind in ("float", "int8"):
        data = models[kind].read_bytes()
        m = schema.Model.GetRootAsModel(data, 0)
        g = m.Subgraphs(0)
        used = {g.Tensors(i).Buffer() for i in range(g.TensorsLength())} - {0}
        expected = sum(m.Buffers(b).DataLength() for b in used)
        assert inspect_tflite_bytes(data).parameter_bytes == expected


def test_buffers_stored_after_flatbuffer(models, tmp_path):
    s = inspect_tflite(models["offset"])
    if s.offset_buffer_count == 0:
        pytest.skip("the converter ignored _experimental_use_buffer_offset")
    assert s.parameter_bytes == inspect_tflite(models["float"]).parameter_bytes
    assert s.parameter_count == inspect_tflite(models["float"]).parameter_count
    cut = tmp_path / "cut_weights.tflite"
    data = models["offset"].read_bytes()
    cut.write_bytes(data[: len(data) * 3 // 4])  # flatbuffer intact, weights cut off
    assert "Buffer.offset" in assert_model_file_error(cut)


def _hand_built_model() -> bytes:
    """CONV_3D (code 132, beyond the int8 legacy field) feeding a custom op."""
    fb = pytest.importorskip("flatbuffers")
    b = fb.Builder(0)

    def int_vector(values):
        b.StartVector(4, len(values), 4)
        for v in reversed(values):
            b.PrependInt32(v)
        return b.EndVector()

    def table_vector(offsets):
        b.StartVector(4, len(offsets), 4)
        for o in reversed(offsets):
            b.PrependUOffsetTRelative(o)
        return b.EndVector()

    custom_name = b.CreateString("MyCustomOp")
    b.StartObject(4)
    b.PrependInt8Slot(0, 127, 0)  # PLACEHOLDER_FOR_GREATER_OP_CODES
    b.PrependInt32Slot(3, 132, 0)
    conv3d = b.EndObject()
    b.StartObject(4)
    b.PrependInt8Slot(0, 32, 0)
    b.PrependUOffsetTRelativeSlot(1, custom_name, 0)
    custom = b.EndObject()
    shape = int_vector([1, 2, 2, 2, 1])
    tensors = []
    for _ in range(3):
        b.StartObject(8)
        b.PrependUOffsetTRelativeSlot(0, shape, 0)
        tensors.append(b.EndObject())
    ops = []
    for code, ins, outs in ((0, [0, 1], [2]), (1, [2], [0])):
        vin, vout = int_vector(ins), int_vector(outs)
        b.StartObject(3)
        b.PrependUint32Slot(0, code, 0)
        b.PrependUOffsetTRelativeSlot(1, vin, 0)
        b.PrependUOffsetTRelativeSlot(2, vout, 0)
        ops.append(b.EndObject())
    tv, ov, gin, gout = table_vector(tensors), table_vector(ops), int_vector([0]), int_vector([2])
    b.StartObject(5)
    for slot, off in ((0, tv), (1, gin), (2, gout), (3, ov)):
        b.PrependUOffsetTRelativeSlot(slot, off, 0)
    graph = b.EndObject()
    codes, graphs = table_vector([conv3d, custom]), table_vector([graph])
    b.StartObject(8)
    b.PrependUint32Slot(0, 3, 0)
    b.PrependUOffsetTRelativeSlot(1, codes, 0)
    b.PrependUOffsetTRelativeSlot(2, graphs, 0)
    b.Finish(b.EndObject(), file_identifier=b"TFL3")
    return bytes(b.Output())


def test_extended_and_custom_op_codes():
    s = inspect_tflite_bytes(_hand_built_model(), label="hand.tflite")
    assert s.op_counts == {"CONV_3D": 1, "MyCustomOp": 1}
    assert s.custom_ops == ("MyCustomOp",)
    assert s.inputs[0].shape == s.inputs[0].shape_signature == (1, 2, 2, 2, 1)
    assert s.weight_dtypes == () and not s.weights_int8  # the conv weight is not constant
    assert "(custom)" in format_summary(s)


def test_memory_mapped_path_gives_the_same_summary(models, monkeypatch):
    direct = inspect_tflite(models["int8"])
    monkeypatch.setattr(insp, "_READ_LIMIT", 0)  # what a multi-GB file would take
    assert inspect_tflite(models["int8"]) == direct


# ---------------------------------------------------------------- inspect: malformed


def _locate(data: bytes):
    """Positions of the Model.subgraphs offset field and the tensors vector length."""
    from ai_edge_litert import schema_py_generated as schema

    m = schema.Model.GetRootAsModel(data, 0)
    subgraphs_field = m._tab.Pos + m._tab.Offset(8)
    g = m.Subgraphs(0)
    tensors_len = g._tab.Vector(g._tab.Offset(4)) - 4
    return subgraphs_field, tensors_len


def _malformed_cases(real: bytes) -> dict[str, bytes]:
    subgraphs_field, tensors_len = _locate(real)
    past_end = bytearray(real)
    struct.pack_into("<I", past_end, subgraphs_field, len(real) * 4)
    absurd = bytearray(real)
    struct.pack_into("<I", absurd, tensors_len, 0x7FFFFFFF)
    bad_root = bytearray(real)
    struct.pack_into("<I", bad_root, 0, len(real) + 100)
    return {
        "empty": b"",
        "truncated10": real[:10],
        "half": real[: len(real) // 2],
        "png": b"\x89PNG\r\n\x1a\n" + bytes(200),
        "zip": b"PK\x03\x04" + bytes(200),
        "text": b"this is not a model\n" * 20,
        "random": random.Random(0).randbytes(4096),
        "offset_past_end": bytes(past_end),
        "absurd_vector_length": bytes(absurd),
        "root_past_end": bytes(bad_root),
    }


@pytest.mark.parametrize("case", ["empty", "truncated10", "half", "png", "zip", "text", "random",
                                  "offset_past_end", "absurd_vector_length", "root_past_end"])
def test_malformed_files_raise_model_file_error(models, tmp_path, case):
    data = _malformed_cases(models["int8"].read_bytes())[case]
    path = tmp_path / f"bad_{case}.tflite"
    path.write_bytes(data)
    msg = assert_model_file_error(path)
    if case == "png":
        assert "PNG" in msg


def test_missing_path_and_directory(tmp_path):
    assert "no such file" in assert_model_file_error(tmp_path / "missing.tflite")
    (tmp_path / "dir.tflite").mkdir()
    assert_model_file_error(tmp_path / "dir.tflite")


def test_shared_offsets_cannot_blow_up():
    """20,000 subgraph entries all pointing at one 20,000-tensor subgraph (160 KB)."""
    flatbuffers = pytest.importorskip("flatbuffers")
    n = 20_000
    b = flatbuffers.Builder(0)
    b.StartObject(8)
    b.PrependInt8Slot(1, 0, 0)
    tensor = b.EndObject()
    b.StartVector(4, n, 4)
    for _ in range(n):
        b.PrependUOffsetTRelative(tensor)
    tensors = b.EndVector()
    b.StartObject(5)
    b.PrependUOffsetTRelativeSlot(0, tensors, 0)
    subgraph = b.EndObject()
    b.StartVector(4, n, 4)
    for _ in range(n):
        b.PrependUOffsetTRelative(subgraph)
    subgraphs = b.EndVector()
    b.StartObject(8)
    b.PrependUint32Slot(0, 3, 0)
    b.PrependUOffsetTRelativeSlot(2, subgraphs, 0)
    b.Finish(b.EndObject(), file_identifier=b"TFL3")
    start = time.perf_counter()
    with pytest.raises(ModelFileError, match="far larger"):
        inspect_tflite_bytes(bytes(b.Output()), label="bomb.tflite")
    assert time.perf_counter() - start < 1.0


def test_fuzz_single_byte_mutations(models):
    real = models["int8"].read_bytes()
    rng = random.Random(1234)
    parsed = 0
    for _ in range(300):
        data = bytearray(real)
        data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            s = inspect_tflite_bytes(bytes(data), label="fuzz.tflite")
        except ModelFileError as exc:
            assert str(exc).startswith("fuzz.tflite: ") and "\n" not in str(exc)
            continue
        parsed += 1
        format_summary(s)
        json.dumps(summary_to_dict(s), allow_nan=False)
    assert parsed > 0  # most bytes are weights: mutating them must still parse


def test_inspect_does_not_import_tensorflow(models):
    code = ("import sys\n"
            "import edgecnn.tflite.reader as m, edgecnn.runtime.interpreter\n"
            f"m.inspect_tflite({str(models['int8'])!r})\n"
            "bad = [k for k in sys.modules if k.split('.')[0] in ('tensorflow', 'tf_keras', 'keras')]\n"
            "assert not bad, bad\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=REPO, timeout=60)


# ------------------------------------------------------------------- runtime helpers


def test_quantize_dequantize_round_trip():
    spec = IoSpec("x", 0, (1, 4), (-1, 4), np.dtype(np.int8), scale=0.1, zero_point=-3)
    x = np.array([[-12.0, -0.05, 0.05, 12.4]], np.float32)
    q = quantize_input(x, spec)
    assert q.dtype == np.int8
    # Half away from zero, like TFLite's QUANTIZE kernel; values beyond range clip.
    assert q.tolist() == [[-123, -4, -2, 121]]
    back = dequantize_output(q, spec)
    assert back.dtype == np.float32
    assert np.allclose(back, x, atol=spec.scale / 2 + 1e-6)
    assert quantize_input(np.array([100.0]), spec).item() == 127
    assert quantize_input(np.array([-100.0]), spec).item() == -128

    u8 = IoSpec("x", 0, (1,), (1,), np.dtype(np.uint8), scale=1 / 255, zero_point=0)
    vals = np.linspace(0, 1, 11)
    assert np.allclose(dequantize_output(quantize_input(vals, u8), u8), vals, atol=0.5 / 255 + 1e-7)

    f = IoSpec("x", 0, (1,), (1,), np.dtype(np.float32))
    assert quantize_input(np.array([0.25], np.float64), f).dtype == np.float32
    assert dequantize_output(np.array([0.25], np.float32), f).item() == 0.25


def test_predict_int8_agrees_with_float(models):
    x, y = _toy_data(64, seed=1)
    scores_f = predict(make_interpreter(models["float"], threads=1), x, batch_size=16)
    assert np.allclose(scores_f, models["keras_scores"], atol=1e-4)
    i8 = make_interpreter(models["int8"].read_bytes(), threads=1)
    scores_q = predict(i8, x, batch_size=10)  # uneven last batch forces a resize
    assert scores_q.shape == (64, NUM_CLASSES) and scores_q.dtype == np.float32
    assert (scores_q.argmax(1) == scores_f.argmax(1)).mean() >= 0.9
    fixed = make_interpreter(models["fixed"])
    assert np.allclose(predict(fixed, x[:5]), scores_f[:5], atol=1e-4)
    assert np.allclose(predict(make_interpreter(models["offset"]), x), scores_f, atol=1e-4)

    acc = evaluate_tflite(models["int8"], x, y, num_threads=1, batch_size=32)
    assert acc == pytest.approx((scores_q.argmax(1) == y).mean())
    assert acc > 0.8
    with pytest.raises(DataError):
        predict(i8, x[:, :6])


def test_load_interpreter_errors(models, monkeypatch, tmp_path):
    half = models["int8"].read_bytes()[:1500]
    with pytest.raises(ModelFileError, match="cannot load"):
        make_interpreter(half, check=False)  # the runtime's own refusal, wrapped
    with pytest.raises(ModelFileError, match="no such file"):
        make_interpreter(tmp_path / "nope.tflite")
    from edgecnn.runtime import runner

    monkeypatch.setattr(runner, "RUNTIMES", (("no-such-runtime", "no_such_pkg.interpreter"), ("tensorflow", "tensorflow")))
    monkeypatch.setattr(rt.importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(MissingDependencyError, match="pip install ai-edge-litert"):
        rt.runtime_name_version()


def _batch_one_model() -> bytes:
    """A real TFLite model whose signature says batch -1 but which only runs batch 1.

    One RESHAPE to the constant shape [1, 2], int8 in (scale 0.5, zero point 1) and out
    (scale 0.25, zero point 0): the runtime refuses any other batch when it allocates, as
    models with a fixed reshape inside do, and batch 1 returns the raw input values.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    def tensor(name, shape, buffer, ttype=schema.TensorType.INT8, scale=None, zero_point=None):
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name, shape, ttype, buffer
        t.shapeSignature = [-1, *shape[1:]] if scale is not None else shape
        if scale is not None:
            t.quantization = schema.QuantizationParametersT()
            t.quantization.scale, t.quantization.zeroPoint = [scale], [zero_point]
        return t

    model = schema.ModelT()
    model.version = 3
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.RESHAPE
    code.version = 1
    model.operatorCodes = [code]
    model.buffers = [schema.BufferT() for _ in range(4)]  # 0: the schema's empty sentinel
    model.buffers[2].data = list(np.array([1, 2], np.int32).tobytes())
    graph = schema.SubGraphT()
    graph.name = "main"
    graph.tensors = [tensor("in", [1, 2], 1, scale=0.5, zero_point=1),
                     tensor("shape", [2], 2, ttype=schema.TensorType.INT32),
                     tensor("out", [1, 2], 3, scale=0.25, zero_point=0)]
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1], [2]
    graph.operators, graph.inputs, graph.outputs = [op], [0], [2]
    model.subgraphs = [graph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_predict_falls_back_to_one_sample_per_invoke():
    pytest.importorskip("ai_edge_litert", reason="builds its model with ai_edge_litert's schema")
    data = _batch_one_model()
    probe = make_interpreter(data)
    probe.resize_tensor_input(0, [4, 2])
    with pytest.raises(RuntimeError, match="RESHAPE"):
        probe.allocate_tensors()  # the real runtime refuses batch 4: the path under test
    interpreter = make_interpreter(data)
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    out = predict(interpreter, x, batch_size=4)
    # q = round(x / 0.5) + 1, read back as (q - 0) * 0.25
    assert np.array_equal(out, (np.round(x / 0.5) + 1) * 0.25)
    assert interpreter.get_input_details()[0]["shape"].tolist() == [1, 2]
