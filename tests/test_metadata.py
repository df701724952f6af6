"""TFLite metadata: labels and normalization inside the .tflite, in the standard form.

Round trips through our writer and reader, plus checks that do not trust our reader:
the runtime still loads the file and computes the same outputs, ``zipfile`` finds
``labels.txt``, the flatbuffer identifiers are where the spec puts them.
"""

from __future__ import annotations

import io
import random
import struct
import time
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from edgecnn.errors import ModelFileError
from edgecnn.tflite.metadata import (
    LABELS_FILE,
    METADATA_NAME,
    copy_metadata,
    has_metadata,
    read_metadata,
    write_metadata,
)
from edgecnn.tflite.reader import metadata_buffer_span
from edgecnn.runtime.interpreter import input_specs, make_interpreter, output_specs
from helpers import FASHION_LABELS, assert_raised_error, build_tiny_classifier


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """int8 and float32 tiny classifiers without metadata."""
    out = tmp_path_factory.mktemp("plain")
    return {d: build_tiny_classifier(out, io_dtype=d, metadata=False) for d in ("int8", "float32")}


def _outputs(model, n=8):
    interpreter = make_interpreter(model)
    spec, out = input_specs(interpreter)[0], output_specs(interpreter)[0]
    rng = np.random.RandomState(1)
    results = []
    for _ in range(n):
        if spec.dtype.kind == "f":
            x = rng.uniform(-1, 1, spec.shape).astype(spec.dtype)
        else:
            x = rng.randint(-128, 128, spec.shape).astype(spec.dtype)
        interpreter.set_tensor(spec.index, x)
        interpreter.invoke()
        results.append(interpreter.get_tensor(out.index).copy())
    return np.stack(results)


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_round_trip_and_identical_outputs(plain, tmp_path, dtype):
    src = plain[dtype]
    data = write_metadata(src, FASHION_LABELS, ([127.5, 127.5, 127.5], [127.5, 64.0, 127.5]), name="tiny",
                          description="a test", version="1.2.3", author="me", license="Apache-2.0")
    meta = read_metadata(data)
    assert meta["labels"] == list(FASHION_LABELS)
    assert meta["mean"] == [127.5, 127.5, 127.5] and meta["std"] == [127.5, 64.0, 127.5]
    assert (meta["name"], meta["description"], meta["version"], meta["author"], meta["license"]) == \
        ("tiny", "a test", "1.2.3", "me", "Apache-2.0")
    assert meta["color_space"] == "RGB" and meta["image_size"] == [32, 32]
    assert meta["min_parser_version"] == "1.0.0"
    assert meta["associated_files"] == [LABELS_FILE]
    assert not has_metadata(src) and has_metadata(data)

    path = tmp_path / "with_metadata.tflite"
    path.write_bytes(data)
    assert np.array_equal(_outputs(src), _outputs(path))


def test_file_is_a_flatbuffer_and_a_zip(plain):
    data = write_metadata(plain["int8"], FASHION_LABELS, ([127.5], [127.5]))
    assert data[4:8] == b"TFL3"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == [LABELS_FILE]
        assert zf.read(LABELS_FILE).decode().splitlines() == list(FASHION_LABELS)
    start, length = metadata_buffer_span(data, METADATA_NAME)
    assert data[start + 4:start + 8] == b"M001"  # the ModelMetadata file identifier


def test_weight_buffers_stay_16_byte_aligned(plain):
    from ai_edge_litert import schema_py_generated as schema

    data = write_metadata(plain["int8"], FASHION_LABELS, ([127.5], [127.5]))
    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.BuffersLength()):
        buf = model.Buffers(i)
        if buf.DataLength():
            start = buf._tab.Vector(buf._tab.Offset(4))
            assert start % 16 == 0, (i, start)


def test_rewriting_replaces_labels_and_keeps_one_entry(plain):
    first = write_metadata(plain["int8"], FASHION_LABELS, ([127.5], [127.5]))
    labels = [f"class {i}" for i in range(10)]
    second = write_metadata(first, labels, ([0.0], [255.0]))
    meta = read_metadata(second)
    assert meta["labels"] == labels and meta["mean"] == [0.0] and meta["std"] == [255.0]
    from edgecnn.tflite.reader import inspect_tflite_bytes

    assert inspect_tflite_bytes(second).metadata_names.count(METADATA_NAME) == 1
    assert abs(len(second) - len(first)) < 256  # the old metadata buffer was replaced, not orphaned


def test_inspect_lists_tflite_metadata(plain, tmp_path):
    from edgecnn.cli import main

    path = tmp_path / "m.tflite"
    write_metadata(plain["int8"], FASHION_LABELS, ([127.5], [127.5]), out=path)
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    assert METADATA_NAME in result.output
    result = CliRunner().invoke(main, ["inspect", "--json", str(path)])
    assert METADATA_NAME in result.output


def test_copy_metadata_onto_a_model_without_it(plain, tmp_path):
    src = tmp_path / "src.tflite"
    write_metadata(plain["int8"], FASHION_LABELS, ([127.5], [127.5]), name="tiny", out=src)
    dst = tmp_path / "compiled.tflite"  # stands in for edgetpu_compiler output
    dst.write_bytes(plain["int8"].read_bytes())
    copy_metadata(src, dst)
    assert read_metadata(dst) == read_metadata(src)
    assert np.array_equal(_outputs(dst), _outputs(plain["int8"]))
    with pytest.raises(ModelFileError) as exc:
        copy_metadata(plain["float32"], dst)
    assert_raised_error(exc, ModelFileError, "no TFLite metadata")


def test_errors_are_one_line(plain, tmp_path):
    with pytest.raises(ModelFileError) as exc:
        read_metadata(plain["int8"])
    assert_raised_error(exc, ModelFileError, "has no TFLite metadata")
    with pytest.raises(ModelFileError) as exc:
        write_metadata(plain["int8"], FASHION_LABELS[:3], ([127.5], [127.5]))
    assert_raised_error(exc, ModelFileError, "10 scores but 3 labels")
    with pytest.raises(ValueError):
        write_metadata(plain["int8"], FASHION_LABELS, ([127.5], [0.0]))
    not_tflite = tmp_path / "x.tflite"
    not_tflite.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    with pytest.raises(ModelFileError):
        read_metadata(not_tflite)


def test_truncated_metadata_is_a_model_file_error(plain):
    data = bytearray(write_metadata(plain["int8"], FASHION_LABELS, ([127.5], [127.5])))
    start, length = metadata_buffer_span(bytes(data), METADATA_NAME)
    # Point the metadata's root offset far outside its buffer.
    struct.pack_into("<I", data, start, 10 ** 6)
    with pytest.raises(ModelFileError) as exc:
        read_metadata(bytes(data))
    assert_raised_error(exc, ModelFileError, "malformed TFLITE_METADATA")


def test_grayscale_model_round_trip(tmp_path):
    path = build_tiny_classifier(tmp_path, "uint8", metadata=False, channels=1)
    data = write_metadata(path, FASHION_LABELS, ([0.0], [255.0]), input_color="GRAYSCALE")
    meta = read_metadata(data)
    assert meta["color_space"] == "GRAYSCALE" and meta["mean"] == [0.0] and meta["std"] == [255.0]
    with pytest.raises(ValueError, match="does not fit"):
        write_metadata(path, FASHION_LABELS, ([0.0], [255.0]), input_color="RGB")


def test_fuzzed_metadata_is_a_clean_error_or_a_result(plain):
    """Single-byte mutations of the ModelMetadata flatbuffer: a dict or one ModelFileError line, fast.

    The metadata is read with the same bounded reader as ``edgecnn inspect`` (offset,
    vtable and vector checks plus the work budget), so no mutation may escape as a
    traceback or run long.
    """
    real = write_metadata(plain["int8"], FASHION_LABELS, ([127.5], [127.5]))
    start, length = metadata_buffer_span(real, METADATA_NAME)
    rng = random.Random(11)
    errors = 0
    began = time.perf_counter()
    for _ in range(300):
        data = bytearray(real)
        data[start + rng.randrange(length)] = rng.randrange(256)
        try:
            meta = read_metadata(bytes(data))
        except ModelFileError as exc:
            assert "malformed TFLITE_METADATA" in str(exc) and "\n" not in str(exc), str(exc)
            errors += 1
            continue
        assert isinstance(meta["labels"], list) and isinstance(meta["name"], str)
    assert errors > 0  # the mutations did reach the reader's checks
    assert time.perf_counter() - began < 5.0
