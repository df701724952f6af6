"""TFLite model metadata: labels and input normalization carried inside the ``.tflite``.

The format is the standard one that the TFLite Task Library, MediaPipe's image
classifier and Android Studio's model binding read (tflite-support's
``metadata_schema.fbs``, schema 1.x, file identifier ``M001``):

* a ``ModelMetadata`` flatbuffer is stored in one of the model's buffers, and a
  ``Model.metadata`` entry named ``TFLITE_METADATA`` points at that buffer;
* associated files (here ``labels.txt``, one label per line, attached to the output
  tensor as ``TENSOR_AXIS_LABELS``) are appended after the flatbuffer as a ZIP archive,
  as tflite-support's ``MetadataPopulator`` does. The file stays a valid flatbuffer (the
  runtime ignores the trailing bytes) and becomes a valid zip (readers find the central
  directory from the end).

tflite-support, which generated this, is unmaintained and does not install on current
Pythons, so the few tables needed are written here with the ``flatbuffers`` Builder
(field slots from ``metadata_schema.fbs``) and read back with the bounded flatbuffer
reader of :mod:`edgecnn.tflite.reader`, which also finds the metadata buffer in the
model. The model itself is re-packed with the object API of
``ai_edge_litert.schema_py_generated`` (what ``MetadataPopulator`` does too), keeping
weight buffers 16-byte aligned as the converter writes them.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgecnn.errors import ModelFileError
from edgecnn.fileio import reproducible_zip_info
from edgecnn.tflite.reader import (UINT8, UINT32, FlatBuffer, MalformedFlatbuffer, Schema, inspect_tflite_bytes,
                                   metadata_buffer_span)

__all__ = ["LABELS_FILE", "METADATA_NAME", "copy_metadata", "has_metadata", "read_metadata", "write_metadata"]

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
MODEL_IDENTIFIER = b"TFL3"
LABELS_FILE = "labels.txt"
# Every field written here exists since metadata schema 1.0.0 (tflite-support's
# metadata_version.cc would compute the same value for this set of fields).
MIN_PARSER_VERSION = "1.0.0"
COLOR_SPACES = {"RGB": 1, "GRAYSCALE": 2}

# Enum values of metadata_schema.fbs.
_TENSOR_AXIS_LABELS = 2
_CONTENT_FEATURE, _CONTENT_IMAGE = 1, 2  # union ContentProperties
_OPTIONS_NORMALIZATION = 1  # union ProcessUnitOptions
# The converter aligns buffer data to 16 bytes (schema.fbs: force_align 16); kernels
# may read weights in place, so a re-packed model keeps that alignment.
_BUFFER_ALIGN = 16

# Field slots (vtable ids) of metadata_schema.fbs, for the writer and the reader. A union
# field takes two slots: the ``<name>_type`` byte, then the table offset.
_META: Schema = {
    "ModelMetadata": {"name": 0, "description": 1, "version": 2, "subgraph_metadata": 3, "author": 4,
                      "license": 5, "associated_files": 6, "min_parser_version": 7},
    "SubGraphMetadata": {"name": 0, "description": 1, "input_tensor_metadata": 2, "output_tensor_metadata": 3,
                         "associated_files": 4, "input_process_units": 5, "output_process_units": 6},
    "TensorMetadata": {"name": 0, "description": 1, "dimension_names": 2, "content": 3, "process_units": 4,
                       "stats": 5, "associated_files": 6},
    "Content": {"content_properties_type": 0, "content_properties": 1, "range": 2},
    "ImageProperties": {"color_space": 0, "default_size": 1},
    "ImageSize": {"width": 0, "height": 1},
    "ProcessUnit": {"options_type": 0, "options": 1},
    "NormalizationOptions": {"mean": 0, "std": 1},
    "Stats": {"max": 0, "min": 1},
    "AssociatedFile": {"name": 0, "description": 1, "type": 2, "locale": 3},
}
# Means and stds are one per channel; more than this is not an image's normalization.
_MAX_CHANNELS = 1 << 16


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class _Spec:
    labels: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    color: str
    name: str
    description: str
    version: str
    author: str
    license: str
    width: int
    height: int


def _build_metadata(spec: _Spec) -> bytes:
    """The ``ModelMetadata`` flatbuffer for a one-input image classifier."""
    import flatbuffers

    b = flatbuffers.Builder(1024)

    def table(kind: str, fields: dict[str, tuple[str, Any]]) -> int:
        """fields: name -> ("offset" | "u8" | "u32", value); None values are skipped."""
        slots = _META[kind]
        b.StartObject(len(slots))
        for fname, (ftype, value) in fields.items():
            if value is None:
                continue
            slot = slots[fname]
            if ftype == "offset":
                b.PrependUOffsetTRelativeSlot(slot, value, 0)
            elif ftype == "u8":
                b.PrependUint8Slot(slot, value, 0)
            else:
                b.PrependUint32Slot(slot, value, 0)
        return b.EndObject()

    def offsets(items: Sequence[int]) -> int:
        b.StartVector(4, len(items), 4)
        for item in reversed(items):
            b.PrependUOffsetTRelative(item)
        return b.EndVector()

    def floats(values: Sequence[float]) -> int:
        return b.CreateNumpyVector(np.asarray(values, dtype="<f4"))

    def text(value: str) -> int | None:
        return b.CreateString(value) if value else None

    def opt(value):
        return ("offset", value)

    # Children are built before their parents: flatbuffers grow back to front.
    labels_file = table("AssociatedFile", {
        "name": opt(b.CreateString(LABELS_FILE)),
        "description": opt(b.CreateString("Labels for the categories the model can recognize.")),
        "type": ("u8", _TENSOR_AXIS_LABELS)})
    out_stats = table("Stats", {"max": opt(floats([1.0])), "min": opt(floats([0.0]))})
    feature = _empty(b)  # FeatureProperties has no fields
    out_content = table("Content", {"content_properties_type": ("u8", _CONTENT_FEATURE),
                                    "content_properties": opt(feature)})
    output_md = table("TensorMetadata", {
        "name": opt(b.CreateString("probability")),
        "description": opt(b.CreateString(f"Probabilities of the {len(spec.labels)} labels respectively.")),
        "content": opt(out_content), "stats": opt(out_stats),
        "associated_files": opt(offsets([labels_file]))})

    size = table("ImageSize", {"width": ("u32", spec.width), "height": ("u32", spec.height)})
    image = table("ImageProperties", {"color_space": ("u8", COLOR_SPACES[spec.color]), "default_size": opt(size)})
    in_content = table("Content", {"content_properties_type": ("u8", _CONTENT_IMAGE),
                                   "content_properties": opt(image)})
    norm = table("NormalizationOptions", {"mean": opt(floats(spec.mean)), "std": opt(floats(spec.std))})
    unit = table("ProcessUnit", {"options_type": ("u8", _OPTIONS_NORMALIZATION), "options": opt(norm)})
    # Stats of the normalized input: what 0 and 255 become, per channel.
    mean, std = np.broadcast_arrays(np.asarray(spec.mean, np.float64), np.asarray(spec.std, np.float64))
    lo, hi = list((0.0 - mean) / std), list((255.0 - mean) / std)
    in_stats = table("Stats", {"max": opt(floats(hi)), "min": opt(floats(lo))})
    input_md = table("TensorMetadata", {
        "name": opt(b.CreateString("image")),
        "description": opt(b.CreateString(
            f"Input image, {spec.width}x{spec.height} {spec.color}, normalized as (pixel - mean) / std.")),
        "content": opt(in_content), "process_units": opt(offsets([unit])), "stats": opt(in_stats)})

    subgraph = table("SubGraphMetadata", {
        "name": opt(text("image_classifier")),
        "input_tensor_metadata": opt(offsets([input_md])),
        "output_tensor_metadata": opt(offsets([output_md]))})
    root = table("ModelMetadata", {
        "name": opt(text(spec.name)), "description": opt(text(spec.description)),
        "version": opt(text(spec.version)), "subgraph_metadata": opt(offsets([subgraph])),
        "author": opt(text(spec.author)), "license": opt(text(spec.license)),
        "min_parser_version": opt(b.CreateString(MIN_PARSER_VERSION))})
    b.Finish(root, file_identifier=METADATA_IDENTIFIER)
    return bytes(b.Output())


def _empty(b) -> int:
    """An empty table."""
    b.StartObject(0)
    return b.EndObject()


def _read_source(model: str | os.PathLike | bytes | bytearray | memoryview) -> tuple[bytes, str]:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model), "<model bytes>"
    path = Path(model)
    try:
        return path.read_bytes(), str(path)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the model ({exc.strerror or exc}); check the path") from None


def _normalization(normalization) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if hasattr(normalization, "mean") and hasattr(normalization, "std"):
        mean, std = normalization.mean, normalization.std
    elif isinstance(normalization, dict):
        mean, std = normalization["mean"], normalization["std"]
    else:
        mean, std = normalization
    mean = tuple(float(v) for v in np.atleast_1d(mean))
    std = tuple(float(v) for v in np.atleast_1d(std))
    if not mean or not std or any(not s > 0 for s in std):
        raise ValueError(f"normalization needs mean and std values with std > 0, got {mean} / {std}")
    return mean, std


def write_metadata(model: str | os.PathLike | bytes, labels: Sequence[str], normalization,
                   input_color: str = "RGB", name: str = "edgecnn image classifier", description: str = "",
                   version: str = "", author: str = "edgecnn", license: str = "",
                   out: str | os.PathLike | None = None) -> bytes:
    """Embed labels and input normalization in a one-input, one-output image classifier.

    Any metadata and associated files already in the model are replaced. The operators,
    tensors and weights are unchanged, so the model computes exactly what it did.

    Args:
        model: a ``.tflite`` path or the model's bytes.
        labels: class names in output order (one per output score, no newlines).
        normalization: ``(mean, std)`` per channel (or one value for all), or an object
            with ``mean``/``std`` such as :class:`edgecnn.data.NormalizationSpec`, on
            0..255 pixels: ``x = (pixel - mean) / std``.
        input_color: ``RGB`` or ``GRAYSCALE``.
        name, description, version, author, license: ``ModelMetadata`` strings.
        out: also write the result here (atomically).

    Returns:
        The new model bytes.

    Raises:
        ModelFileError: the model is not a TFLite classifier these labels fit.
        ValueError: malformed labels, normalization or color.
    """
    data, label = _read_source(model)
    summary = inspect_tflite_bytes(data, label=label)
    if len(summary.inputs) != 1 or len(summary.outputs) != 1:
        raise ModelFileError(f"{label}: classifier metadata needs one input and one output; the model has "
                             f"{len(summary.inputs)} and {len(summary.outputs)}")
    labels = tuple(str(x) for x in labels)
    if not labels or any(not x or "\n" in x or "\r" in x for x in labels):
        raise ValueError("labels must be non-empty strings without line breaks")
    classes = summary.outputs[0].shape[-1] if summary.outputs[0].shape else 0
    if classes != len(labels):
        raise ModelFileError(f"{label}: the output has {classes} scores but {len(labels)} labels were given; "
                             "pass one label per class")
    if input_color not in COLOR_SPACES:
        raise ValueError(f"input_color must be one of {', '.join(COLOR_SPACES)}, got {input_color!r}")
    shape = summary.inputs[0].shape
    if len(shape) != 4:
        raise ModelFileError(f"{label}: the input has shape {shape}; image metadata needs (1, H, W, C)")
    channels = shape[3]
    mean, std = _normalization(normalization)
    for what, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise ValueError(f"normalization {what} has {len(values)} values; give 1 or {channels}")
    if (input_color == "RGB") != (channels == 3):
        raise ValueError(f"input_color {input_color} does not fit a {channels}-channel input")
    spec = _Spec(labels, mean, std, input_color, name, description, version, author, license,
                 width=int(shape[2]), height=int(shape[1]))
    labels_txt = ("\n".join(labels) + "\n").encode("utf-8")
    result = _attach(data, _build_metadata(spec), {LABELS_FILE: labels_txt}, label)
    if out is not None:
        from edgecnn.fileio import write_bytes_atomic

        write_bytes_atomic(out, result)
    return result


def _unpack(data: bytes, label: str):
    """``data``'s flatbuffer as the schema's object model, with every buffer stored after the
    flatbuffer (``Buffer.offset``/``size``, as litert-quantizer writes models with over 256 KiB
    of weights) moved inside it: re-packing moves the flatbuffer's end, which would break
    such offsets, and runtimes older than the format (tflite-runtime 2.14, the Edge TPU
    compiler) read weights only from inside. Files under 2 GB always fit inline."""
    from ai_edge_litert import schema_py_generated as schema

    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    except Exception as exc:  # the generated reader does no bounds checks of its own
        raise ModelFileError(f"{label}: cannot parse the model flatbuffer ({type(exc).__name__}); "
                             "re-export it with the TFLite converter") from None
    model.buffers = model.buffers or []
    for buf in model.buffers:
        if getattr(buf, "offset", 0) > 1:
            if len(data) >= 2 ** 31 or buf.offset + buf.size > len(data):
                raise ModelFileError(f"{label}: the model keeps weights after the flatbuffer "
                                     + ("(over 2 GB); adding metadata to such files is not supported"
                                        if len(data) >= 2 ** 31 else "beyond the end of the file; it is truncated"))
            buf.data = np.frombuffer(data, dtype=np.uint8, count=buf.size, offset=buf.offset)
            buf.offset = buf.size = 0
    return model


def _pack(model, size_hint: int) -> bytes:
    """The flatbuffer of ``model`` (object model), every buffer 16-byte aligned."""
    import flatbuffers

    model.buffers = [_AlignedBuffer(buf) for buf in model.buffers]
    builder = flatbuffers.Builder(size_hint + 4096)
    builder.Finish(model.Pack(builder), file_identifier=MODEL_IDENTIFIER)
    return bytes(builder.Output())


def inline_buffers(data: bytes, label: str = "<model bytes>") -> bytes:
    """``data`` with every weight buffer inside the flatbuffer (see :func:`_unpack`); a file
    that has none stored outside is returned as is."""
    if not any(b.Offset() > 1 for b in _raw_buffers(data)):
        return data
    return _pack(_unpack(data, label), len(data))


def _raw_buffers(data: bytes):
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAs(data, 0)
    return [root.Buffers(i) for i in range(root.BuffersLength())]


def _attach(data: bytes, metadata: bytes, files: dict[str, bytes], label: str) -> bytes:
    """``data``'s flatbuffer with ``metadata`` as TFLITE_METADATA, then ``files`` as a zip."""
    from ai_edge_litert import schema_py_generated as schema

    model = _unpack(data, label)
    model.metadata = model.metadata or []
    entry = next((m for m in model.metadata if _text(m.name) == METADATA_NAME), None)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata, dtype=np.uint8)
    if entry is not None and 0 <= entry.buffer < len(model.buffers):
        model.buffers[entry.buffer] = buffer  # replace in place: tensors keep their buffer numbers
    else:
        model.metadata = [m for m in model.metadata if _text(m.name) != METADATA_NAME]
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    packed = io.BytesIO(_pack(model, len(data) + len(metadata)))
    if files:
        packed.seek(0, io.SEEK_END)
        with zipfile.ZipFile(packed, "a") as zf:
            for fname, content in sorted(files.items()):
                # A fixed date and mode instead of "now": the same model and labels give
                # the same bytes, so the file's sha256 (the cache key of every later stage
                # and the manifests) only changes when its content does.
                zf.writestr(reproducible_zip_info(fname), content)
    return packed.getvalue()


class _AlignedBuffer:
    """Packs a ``BufferT`` with its data aligned to 16 bytes (the generated code uses 1)."""

    def __init__(self, buf):
        self.buf = buf

    def Pack(self, builder):  # noqa: N802 (the object API's method name)
        from ai_edge_litert import schema_py_generated as schema

        data = self.buf.data
        offset = None
        if data is not None:
            raw = np.asarray(data, dtype=np.uint8).tobytes()
            builder.StartVector(1, len(raw), _BUFFER_ALIGN)
            builder.head -= len(raw)
            builder.Bytes[builder.head:builder.head + len(raw)] = raw
            offset = builder.EndVector()
        schema.BufferStart(builder)
        if offset is not None:
            schema.BufferAddData(builder, offset)
        schema.BufferAddOffset(builder, self.buf.offset)
        schema.BufferAddSize(builder, self.buf.size)
        return schema.BufferEnd(builder)


def _text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value or "")


# --------------------------------------------------------------------------- reading


def _parse(data: bytes, label: str) -> tuple[bytes | None, dict[str, bytes]]:
    """(metadata flatbuffer or None, associated files) of a model file's bytes."""
    if len(data) < 8 or data[4:8] != MODEL_IDENTIFIER:
        raise ModelFileError(f"{label}: not a TFLite model (no TFL3 identifier); pass a .tflite file")
    try:
        span = metadata_buffer_span(data, METADATA_NAME)
    except (MalformedFlatbuffer, struct.error) as exc:
        raise ModelFileError(f"{label}: malformed model flatbuffer ({exc}); re-export it") from None
    metadata = data[span[0]:span[0] + span[1]] if span else None
    files: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            files = {info.filename: zf.read(info) for info in zf.infolist() if info.file_size < (64 << 20)}
    except zipfile.BadZipFile:
        pass  # no associated files packed
    return metadata, files


def has_metadata(model: str | os.PathLike | bytes) -> bool:
    """True when the model carries a ``TFLITE_METADATA`` entry."""
    data, label = _read_source(model)
    return _parse(data, label)[0] is not None


def read_metadata(model: str | os.PathLike | bytes) -> dict:
    """Read what :func:`write_metadata` stored (and what tflite-support writers store).

    Args:
        model: a ``.tflite`` path or the model's bytes.

    Returns:
        A dict: ``name``, ``description``, ``version``, ``author``, ``license``,
        ``min_parser_version``, ``labels`` (list, from the output's TENSOR_AXIS_LABELS
        file; empty if none), ``mean``/``std`` (lists, from the input's
        NormalizationOptions; None if absent), ``color_space`` (``RGB``/``GRAYSCALE``/
        None), ``image_size`` (``[width, height]`` or None) and ``associated_files``
        (names packed in the file).

    Raises:
        ModelFileError: the file is not a TFLite model, has no metadata, or the
            metadata is malformed.
    """
    data, label = _read_source(model)
    metadata, files = _parse(data, label)
    if metadata is None:
        raise ModelFileError(f"{label}: the model has no TFLite metadata ({METADATA_NAME}); "
                             "re-export it with edgecnn build, or add it with write_metadata")
    try:
        return _decode(metadata, files)
    except (MalformedFlatbuffer, struct.error) as exc:
        raise ModelFileError(f"{label}: malformed {METADATA_NAME} ({exc}); re-export the model") from None


def _decode(metadata: bytes, files: dict[str, bytes]) -> dict:
    if len(metadata) < 8 or metadata[4:8] != METADATA_IDENTIFIER:
        raise MalformedFlatbuffer("no M001 file identifier")
    root = FlatBuffer(metadata, _META).root("ModelMetadata")
    out: dict = {k: root.string(k) for k in ("name", "description", "version", "author", "license",
                                               "min_parser_version")}
    out.update(labels=[], mean=None, std=None, color_space=None, image_size=None,
               associated_files=sorted(files))
    sub = next(root.tables("subgraph_metadata", "SubGraphMetadata"), None)
    if sub is None:
        return out
    tensor = next(sub.tables("input_tensor_metadata", "TensorMetadata"), None)
    if tensor is not None:
        content = tensor.table("content", "Content")
        if content and content.scalar("content_properties_type", UINT8) == _CONTENT_IMAGE:
            image = content.table("content_properties", "ImageProperties")
            if image:
                color = image.scalar("color_space", UINT8)
                out["color_space"] = {v: k for k, v in COLOR_SPACES.items()}.get(color)
                size = image.table("default_size", "ImageSize")
                if size:
                    out["image_size"] = [size.scalar("width", UINT32), size.scalar("height", UINT32)]
        for unit in tensor.tables("process_units", "ProcessUnit"):
            if unit.scalar("options_type", UINT8) == _OPTIONS_NORMALIZATION:
                norm = unit.table("options", "NormalizationOptions")
                if norm:
                    out["mean"], out["std"] = (list(norm.numbers(k, "f", _MAX_CHANNELS)) for k in ("mean", "std"))
                break
    tensor = next(sub.tables("output_tensor_metadata", "TensorMetadata"), None)
    for f in (tensor.tables("associated_files", "AssociatedFile") if tensor is not None else ()):
        if f.scalar("type", UINT8) == _TENSOR_AXIS_LABELS:
            content = files.get(f.string("name"))
            if content is None:
                raise MalformedFlatbuffer(f"the labels file {f.string('name')!r} is declared but not packed "
                                          "in the model")
            out["labels"] = [ln for ln in content.decode("utf-8").splitlines() if ln]
            break
    return out


def copy_metadata(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy ``src``'s TFLite metadata and associated files into ``dst`` (in place, atomically).

    For models rewritten by tools that drop metadata, such as ``edgetpu_compiler``: the
    compiled model keeps the same inputs and outputs, so the metadata still fits.

    Raises:
        ModelFileError: ``src`` has no metadata, or ``dst`` has a different number of
            inputs or outputs.
    """
    from edgecnn.fileio import write_bytes_atomic

    src_data, src_label = _read_source(src)
    metadata, files = _parse(src_data, src_label)
    if metadata is None:
        raise ModelFileError(f"{src_label}: no TFLite metadata to copy; write it first (write_metadata)")
    dst_data, dst_label = _read_source(dst)
    a, b = inspect_tflite_bytes(src_data, label=src_label), inspect_tflite_bytes(dst_data, label=dst_label)
    if (len(a.inputs), len(a.outputs)) != (len(b.inputs), len(b.outputs)):
        raise ModelFileError(f"{dst_label}: has {len(b.inputs)} inputs / {len(b.outputs)} outputs but {src_label} "
                             f"has {len(a.inputs)} / {len(a.outputs)}; the metadata does not fit")
    return write_bytes_atomic(dst, _attach(dst_data, metadata, files, dst_label))
