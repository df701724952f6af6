"""Read the structure of an untrusted ``.tflite`` file, without TensorFlow.

``edgecnn inspect MODEL.tflite`` uses :func:`inspect_tflite`. The file may come from
anywhere, so this module parses flatbuffers with its own small reader
(:class:`FlatBuffer`, :class:`Table`) in which every offset, vtable and vector is
checked against the buffer length before it is read, and the total work is capped by
the size (flatbuffer offsets can be shared, so a small hostile file could otherwise
describe an enormous structure). Any structural problem becomes one
:class:`~edgecnn.errors.ModelFileError` line naming the file, what is wrong and the fix.
The reader is edgecnn's only one: :mod:`edgecnn.tflite.metadata` reads the
``ModelMetadata`` flatbuffer, and finds it (:func:`metadata_buffer_span`), with it too.

Only the fields this summary needs are read; field ids follow ``schema.fbs`` as shipped
in ``ai_edge_litert/schema_py_generated.py`` (Model, SubGraph, Tensor, Operator,
OperatorCode, Buffer, Metadata, QuantizationParameters, SignatureDef). The flatbuffer
format itself is described at https://flatbuffers.dev/internals/.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import mmap
import os
import struct
from dataclasses import dataclass
from typing import Iterator

from edgecnn.errors import ModelFileError

__all__ = [
    "TensorSummary",
    "TensorTypeSummary",
    "SubgraphSummary",
    "TfliteSummary",
    "inspect_tflite",
    "inspect_tflite_bytes",
    "format_summary",
    "summary_to_dict",
    "EDGETPU_CUSTOM_OP",
    "is_edgetpu_model",
    "FlatBuffer",
    "Table",
    "MalformedFlatbuffer",
    "Schema",
    "TFLITE_SCHEMA",
    "INT8",
    "UINT8",
    "UINT16",
    "INT32",
    "UINT32",
    "UINT64",
    "FLOAT32",
    "metadata_buffer_span",
]

# The op edgetpu_compiler puts in place of the layers it maps to the Edge TPU. The
# standalone runner keeps its own copy (it never imports edgecnn; a test checks they agree).
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"

FILE_IDENTIFIER = b"TFL3"

# Files up to this size are read into memory; bigger ones (models whose weights sit
# after the flatbuffer, addressed by Buffer.offset/size) are memory-mapped so that
# inspecting a multi-GB model does not copy it.
_READ_LIMIT = 256 << 20
# A real TFLite tensor never has more dimensions than this; a larger rank means the
# shape vector is garbage, and reading it would only waste memory.
_MAX_RANK = 64
# Quantization parameters are materialized only for input/output tensors; per-axis
# vectors longer than this are not plausible for I/O and would only waste memory.
_MAX_QUANT_PARAMS = 1 << 20
_MAX_STRING = 1 << 20
# Work budget: units are tables visited plus vector elements read. A well-formed file
# needs far less than one unit per two bytes; the constant covers tiny files.
_BUDGET_BASE = 20_000

_FIX_COPY = "copy it again or re-export it with the TFLite converter"
_FIX_CORRUPT = f"the file is corrupt or truncated; {_FIX_COPY}"
_ROOT = "root table"
_FIX_NOT_TFLITE = "pass a .tflite produced by the TFLite converter"

# Builtin operator codes whose input 1 is the weight tensor (filter / weights matrix).
_WEIGHT_OP_CODES = {
    3: "CONV_2D",
    4: "DEPTHWISE_CONV_2D",
    9: "FULLY_CONNECTED",
    67: "TRANSPOSE_CONV",
    132: "CONV_3D",
    141: "CONV_3D_TRANSPOSE",
}
_DEQUANTIZE = 6
_SOFTMAX = 25
_QUANTIZE = 114
_CUSTOM = 32

# TensorType names, used when ai_edge_litert is not installed (the enum only grows).
_TENSOR_TYPES_FALLBACK = (
    "FLOAT32", "FLOAT16", "INT32", "UINT8", "INT64", "STRING", "BOOL", "INT16",
    "COMPLEX64", "INT8", "FLOAT64", "COMPLEX128", "UINT64", "RESOURCE", "VARIANT",
    "UINT32", "UINT16", "INT4", "BFLOAT16", "INT2", "UINT4", "FLOAT8_E4M3FN",
    "FLOAT8_E5M2",
)
# Bytes per element, for counting parameters when a constant's shape is unusable.
_ITEMSIZE = {
    "FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT8": 1, "INT64": 8, "BOOL": 1,
    "INT16": 2, "COMPLEX64": 8, "INT8": 1, "FLOAT64": 8, "COMPLEX128": 16,
    "UINT64": 8, "UINT32": 4, "UINT16": 2, "BFLOAT16": 2, "FLOAT8_E4M3FN": 1,
    "FLOAT8_E5M2": 1,
}

# Magic numbers of files people commonly mistake for a .tflite, with the fix to print.
_KNOWN_MAGIC = (
    (b"\x89PNG", "a PNG image", _FIX_NOT_TFLITE),
    (b"\xff\xd8\xff", "a JPEG image", _FIX_NOT_TFLITE),
    (b"PK\x03\x04", "a ZIP archive (a .keras model?)",
     "convert the Keras model to .tflite first (edgecnn build), then inspect that"),
    (b"\x89HDF", "an HDF5 file (a Keras .h5 model?)",
     "convert the Keras model to .tflite first (edgecnn build), then inspect that"),
    (b"\x1f\x8b", "a gzip archive", "decompress it first"),
)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class TensorSummary:
    """One model input or output tensor.

    Attributes:
        index: tensor index in the primary subgraph.
        name: tensor name.
        shape: static shape, as the interpreter allocates it.
        shape_signature: shape with -1 for dynamic dims (equals ``shape`` if absent).
        dtype: TensorType name, e.g. ``"INT8"``.
        scales: quantization scale(s); empty when not quantized.
        zero_points: quantization zero point(s).
        quantized_dimension: axis of per-axis quantization.
    """

    index: int
    name: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    dtype: str
    scales: tuple[float, ...] = ()
    zero_points: tuple[int, ...] = ()
    quantized_dimension: int = 0

    @property
    def per_axis(self) -> bool:
        """True when the tensor carries one scale per channel."""
        return len(self.scales) > 1

    @property
    def scale(self) -> float:
        """First scale, or 0.0 like the interpreter's ``quantization`` tuple."""
        return self.scales[0] if self.scales else 0.0

    @property
    def zero_point(self) -> int:
        """First zero point, or 0."""
        return self.zero_points[0] if self.zero_points else 0


@dataclass(frozen=True)
class TensorTypeSummary:
    """Tensor counts and constant-buffer bytes for one TensorType, over all subgraphs.

    A constant buffer shared by several tensors is counted once, under the first
    tensor that references it.
    """

    dtype: str
    tensors: int
    constant_tensors: int
    parameters: int
    parameter_bytes: int


@dataclass(frozen=True)
class SubgraphSummary:
    """Size of one subgraph."""

    index: int
    name: str
    tensor_count: int
    operator_count: int


@dataclass(frozen=True)
class TfliteSummary:
    """What :func:`inspect_tflite` learns about a model file.

    Attributes:
        path: the file as given (or the label of an in-memory buffer).
        file_size: bytes in the file.
        schema_version: ``Model.version`` (3 for every current converter).
        description: ``Model.description``, e.g. ``"MLIR Converted."``.
        subgraphs: one entry per subgraph; I/O below is subgraph 0's.
        inputs: inputs of subgraph 0, in order.
        outputs: outputs of subgraph 0, in order.
        op_counts: operator name -> count over all subgraphs; builtin ops by enum name
            (``"CONV_2D"``), custom ops by their custom code.
        custom_ops: names of custom ops present, sorted.
        tensor_types: per TensorType counts, sorted by parameter bytes, largest first.
        parameter_count: elements held in constant buffers.
        parameter_bytes: bytes held in constant buffers.
        offset_buffer_count: buffers stored after the flatbuffer (Buffer.offset/size,
            used by models over 2 GB).
        metadata_names: ``Model.metadata`` entry names (e.g. ``min_runtime_version``).
        min_runtime_version: value of that metadata entry, when present.
        signature_keys: signature def keys (e.g. ``serving_default``).
        weight_dtypes: sorted TensorType names of the constant weights feeding
            CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED (and transpose/3-D conv);
            a weight produced by DEQUANTIZE of a constant reports that constant's type.
    """

    path: str
    file_size: int
    schema_version: int
    description: str
    subgraphs: tuple[SubgraphSummary, ...]
    inputs: tuple[TensorSummary, ...]
    outputs: tuple[TensorSummary, ...]
    op_counts: dict[str, int]
    custom_ops: tuple[str, ...]
    tensor_types: tuple[TensorTypeSummary, ...]
    parameter_count: int
    parameter_bytes: int
    offset_buffer_count: int
    metadata_names: tuple[str, ...]
    min_runtime_version: str | None
    signature_keys: tuple[str, ...]
    weight_dtypes: tuple[str, ...]

    @property
    def subgraph_count(self) -> int:
        """Number of subgraphs."""
        return len(self.subgraphs)

    @property
    def operator_count(self) -> int:
        """Operators over all subgraphs."""
        return sum(self.op_counts.values())

    @property
    def has_metadata(self) -> bool:
        """True when the model has any ``Model.metadata`` entry."""
        return bool(self.metadata_names)

    @property
    def weights_int8(self) -> bool:
        """True when there are conv/FC weights and all of them are INT8."""
        return self.weight_dtypes == ("INT8",)


# ------------------------------------------------------------------- public functions


def inspect_tflite(path: str | os.PathLike) -> TfliteSummary:
    """Summarize a ``.tflite`` file without loading TensorFlow or an interpreter.

    Args:
        path: the model file. It is treated as untrusted input.

    Returns:
        The file's :class:`TfliteSummary`.

    Raises:
        ModelFileError: the file cannot be read or is not a well-formed TFLite model;
            the one-line message names the file, the problem and the fix.
    """
    label = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < _READ_LIMIT:
                return inspect_tflite_bytes(fh.read(_READ_LIMIT), label=label)
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return inspect_tflite_bytes(mm, label=label)
    except FileNotFoundError:
        raise ModelFileError(f"{label}: no such file; check the path") from None
    except IsADirectoryError:
        raise ModelFileError(f"{label}: is a directory, not a .tflite file; "
                             f"pass the model file inside it") from None
    except PermissionError:
        raise ModelFileError(f"{label}: permission denied; make the file readable") from None
    except OSError as exc:
        raise ModelFileError(f"{label}: cannot read ({exc.strerror or exc}); "
                             f"check the path and the disk") from None


def inspect_tflite_bytes(data: bytes | bytearray | memoryview | mmap.mmap,
                         label: str = "<bytes>") -> TfliteSummary:
    """Summarize a TFLite model held in memory; see :func:`inspect_tflite`.

    Args:
        data: the model bytes (untrusted).
        label: how error messages and the summary name the model.

    Returns:
        The model's :class:`TfliteSummary`.

    Raises:
        ModelFileError: the bytes are not a well-formed TFLite model.
    """
    size = len(data)
    if size == 0:
        raise ModelFileError(f"{label}: the file is empty; {_FIX_COPY}")
    if size < 8:
        raise ModelFileError(f"{label}: only {size} bytes, too small for a TFLite "
                             f"flatbuffer; {_FIX_COPY}")
    ident = bytes(data[4:8])
    if ident != FILE_IDENTIFIER:
        raise ModelFileError(_wrong_kind_message(label, bytes(data[:8]), ident))
    try:
        return _summarize(FlatBuffer(data, TFLITE_SCHEMA), label)
    except MalformedFlatbuffer as exc:
        raise ModelFileError(f"{label}: {exc}; {_FIX_CORRUPT}") from None
    except (struct.error, IndexError, OverflowError, ValueError) as exc:
        # The bounds checks should make these unreachable; if a check was missed, a
        # malformed file must still surface as ModelFileError, not a traceback.
        raise ModelFileError(f"{label}: malformed flatbuffer ({type(exc).__name__}: {exc}); "
                             f"{_FIX_CORRUPT}") from None


def is_edgetpu_model(summary: "TfliteSummary") -> bool:
    """True when a summary shows a model compiled by ``edgetpu_compiler`` (it carries the
    ``edgetpu-custom-op``)."""
    return EDGETPU_CUSTOM_OP in summary.custom_ops


def format_summary(summary: TfliteSummary) -> str:
    """Render a summary as aligned, human-readable text (for ``edgecnn inspect``).

    Args:
        summary: what :func:`inspect_tflite` returned.

    Returns:
        Multi-line text without a trailing newline.
    """
    s = summary
    lines = [
        f"{s.path}",
        f"  size {_human_bytes(s.file_size)} ({s.file_size:,} bytes), schema v{s.schema_version}, "
        f"{s.subgraph_count} subgraph{'s' if s.subgraph_count != 1 else ''}, "
        f"{s.operator_count} operators",
    ]
    if s.schema_version != 3:
        lines.append("  warning: schema version is not 3; current runtimes refuse this file")
    if s.description:
        lines.append(f"  description: {_clip(s.description)}")
    for title, tensors in (("inputs", s.inputs), ("outputs", s.outputs)):
        lines.append(f"{title}:")
        for t in tensors:
            lines.append(f"  [{t.index}] {_clip(t.name, 60)}  {t.dtype}  {_fmt_shape(t.shape, t.shape_signature)}"
                         f"  {_fmt_quant(t)}")
    lines.append("operators:")
    width = max((len(k) for k in s.op_counts), default=0)
    for name, count in sorted(s.op_counts.items(), key=lambda kv: (-kv[1], kv[0])):
        tag = "  (custom)" if name in s.custom_ops else ""
        lines.append(f"  {_clip(name, 60):<{width}}  {count:>5}{tag}")
    lines.append("tensors by type:")
    lines.append(f"  {'dtype':<10} {'tensors':>8} {'constant':>9} {'parameters':>12} {'bytes':>10}")
    for tt in s.tensor_types:
        lines.append(f"  {tt.dtype:<10} {tt.tensors:>8} {tt.constant_tensors:>9} "
                     f"{tt.parameters:>12,} {_human_bytes(tt.parameter_bytes):>10}")
    lines.append(f"parameters: {s.parameter_count:,} in {_human_bytes(s.parameter_bytes)}"
                 + (f" ({s.offset_buffer_count} buffers stored after the flatbuffer)"
                    if s.offset_buffer_count else ""))
    weights = ", ".join(s.weight_dtypes) or "none (no constant conv/FC weights)"
    lines.append(f"conv/FC weights: {weights}")
    meta = ", ".join(_clip(n, 40) for n in s.metadata_names) or "none"
    if s.min_runtime_version:
        meta += f" (min_runtime_version {s.min_runtime_version})"
    lines.append(f"metadata: {meta}")
    if s.signature_keys:
        lines.append(f"signatures: {', '.join(_clip(k, 40) for k in s.signature_keys)}")
    if s.subgraph_count > 1:
        for g in s.subgraphs:
            lines.append(f"subgraph {g.index} {_clip(g.name, 40)!r}: {g.tensor_count} tensors, "
                         f"{g.operator_count} operators")
    return "\n".join(lines)


def summary_to_dict(summary: TfliteSummary) -> dict:
    """Return the summary as JSON-able data (for ``edgecnn inspect --json``).

    Non-finite floats (possible in a hostile file) become ``None`` so the result is
    strict JSON.

    Args:
        summary: what :func:`inspect_tflite` returned.

    Returns:
        A dict of str, int, float, bool, None, lists and dicts only.
    """
    out = _jsonable(dataclasses.asdict(summary))
    out["subgraph_count"] = summary.subgraph_count
    out["operator_count"] = summary.operator_count
    out["has_metadata"] = summary.has_metadata
    out["weights_int8"] = summary.weights_int8
    for key, tensors in (("inputs", summary.inputs), ("outputs", summary.outputs)):
        for d, t in zip(out[key], tensors):
            d["per_axis"] = t.per_axis
    return out


# ------------------------------------------------------------------ flatbuffer reader
# edgecnn's one flatbuffer reader: the model summary below and edgecnn.tflite.metadata
# (the ModelMetadata flatbuffer inside a model) both read through FlatBuffer and Table.


class MalformedFlatbuffer(Exception):
    """The flatbuffer breaks a structural rule; the message says which, and where.

    Not an :class:`~edgecnn.errors.EdgecnnError`: each caller turns it into a
    :class:`~edgecnn.errors.ModelFileError` that names the file and the fix.
    """


# A flatbuffer schema as the reader needs it: table name -> field name -> field id (the
# vtable slot; a union field takes two ids, ``<name>_type`` then the table).
Schema = dict[str, dict[str, int]]

# Field ids of the schema.fbs tables read here, as in ai_edge_litert/schema_py_generated.py;
# tests/test_inspect.py checks them against it.
TFLITE_SCHEMA: Schema = {
    "Model": {"version": 0, "operator_codes": 1, "subgraphs": 2, "description": 3,
              "buffers": 4, "metadata": 6, "signature_defs": 7},
    "OperatorCode": {"deprecated_builtin_code": 0, "custom_code": 1, "builtin_code": 3},
    "SubGraph": {"tensors": 0, "inputs": 1, "outputs": 2, "operators": 3, "name": 4},
    "Tensor": {"shape": 0, "type": 1, "buffer": 2, "name": 3, "quantization": 4,
               "shape_signature": 7},
    "QuantizationParameters": {"scale": 2, "zero_point": 3, "quantized_dimension": 6},
    "Operator": {"opcode_index": 0, "inputs": 1, "outputs": 2, "builtin_options": 4},
    "SoftmaxOptions": {"beta": 0},
    "Buffer": {"data": 0, "offset": 1, "size": 2},
    "Metadata": {"name": 0, "buffer": 1},
    "SignatureDef": {"signature_key": 2},
}

# Scalar types for Table.scalar / Table.element (flatbuffers are little-endian).
INT8, UINT8, UINT16, INT32, UINT32, UINT64, FLOAT32 = (
    struct.Struct(f) for f in ("<b", "<B", "<H", "<i", "<I", "<Q", "<f"))


class FlatBuffer:
    """Bounds-checked little-endian reads of one untrusted flatbuffer, with a work budget.

    Every offset, vtable and vector is checked against ``len(data)`` before it is read.
    Offsets can be shared, so a small hostile buffer could describe an enormous
    structure: work (tables visited plus vector elements read) is capped at a constant
    plus half the byte count. Breaking a rule raises :class:`MalformedFlatbuffer`.

    Args:
        data: the bytes (bytes, bytearray, memoryview or mmap).
        schema: the field ids of the tables that will be read (e.g. :data:`TFLITE_SCHEMA`).
    """

    __slots__ = ("data", "schema", "size", "work", "limit")

    def __init__(self, data, schema: Schema):
        self.data = data
        self.schema = schema
        self.size = len(data)
        self.work = 0
        self.limit = _BUDGET_BASE + self.size // 2

    def charge(self, units: int) -> None:
        self.work += units
        if self.work > self.limit:
            raise MalformedFlatbuffer("the structure is far larger than the file could hold "
                                      "(offsets are shared or looping)")

    def check(self, pos: int, length: int, what: str) -> None:
        if pos < 0 or length < 0 or pos + length > self.size:
            raise MalformedFlatbuffer(f"{what} at byte {pos} (+{length}) lies outside the file "
                                      f"({self.size} bytes)")

    def read(self, st: struct.Struct, pos: int, what: str):
        self.check(pos, st.size, what)
        return st.unpack_from(self.data, pos)[0]

    def root(self, kind: str) -> "Table":
        """The root table, of schema table ``kind``."""
        return Table(self, self.read(UINT32, 0, "root offset"), kind, _ROOT)


class Table:
    """One flatbuffer table of schema table ``kind``; its vtable is checked on creation.

    Fields are addressed by their schema name; ``what`` is the table's path from the root
    (``subgraphs[0].tensors[3]``) for error messages.
    """

    __slots__ = ("buf", "pos", "kind", "what", "vt", "vt_size", "tbl_size")

    def __init__(self, buf: FlatBuffer, pos: int, kind: str, what: str):
        buf.charge(1)
        self.buf, self.pos, self.kind, self.what = buf, pos, kind, what
        vt = pos - buf.read(INT32, pos, what)
        vt_size = buf.read(UINT16, vt, f"{what} vtable")
        tbl_size = buf.read(UINT16, vt + 2, f"{what} vtable")
        if vt_size < 4 or vt_size % 2:
            raise MalformedFlatbuffer(f"{what} has an invalid vtable size {vt_size}")
        if tbl_size < 4:
            raise MalformedFlatbuffer(f"{what} has an invalid table size {tbl_size}")
        buf.check(vt, vt_size, f"{what} vtable")
        buf.check(pos, tbl_size, what)
        self.vt, self.vt_size, self.tbl_size = vt, vt_size, tbl_size

    def _path(self, name: str) -> str:
        return f"{self.what}.{name}" if self.what != _ROOT else name

    def _field(self, name: str, size: int) -> int:
        """Absolute position of field ``name`` (``size`` bytes), or 0 when absent."""
        slot = 4 + 2 * self.buf.schema[self.kind][name]
        if slot + 2 > self.vt_size:
            return 0
        voff = self.buf.read(UINT16, self.vt + slot, f"{self.what} vtable")
        if voff == 0:
            return 0
        if voff < 4 or voff + size > self.tbl_size:
            raise MalformedFlatbuffer(f"{self._path(name)} lies outside its table")
        return self.pos + voff

    def scalar(self, name: str, st: struct.Struct, default=0):
        """A scalar field of type ``st`` (e.g. :data:`UINT32`); ``default`` when absent."""
        pos = self._field(name, st.size)
        return st.unpack_from(self.buf.data, pos)[0] if pos else default

    def _target(self, name: str) -> int:
        """Follow the uoffset in field ``name``; 0 when absent."""
        pos = self._field(name, 4)
        if not pos:
            return 0
        target = pos + UINT32.unpack_from(self.buf.data, pos)[0]
        self.buf.check(target, 4, self._path(name))
        return target

    def table(self, name: str, kind: str) -> "Table | None":
        """A table field (of schema table ``kind``), or None when absent."""
        target = self._target(name)
        return Table(self.buf, target, kind, self._path(name)) if target else None

    def vector(self, name: str, elem_size: int) -> tuple[int, int]:
        """(start, count) of a vector field; (0, 0) when absent."""
        target = self._target(name)
        if not target:
            return 0, 0
        count = UINT32.unpack_from(self.buf.data, target)[0]
        # Checking the whole extent first stops absurd lengths before any allocation.
        self.buf.check(target + 4, count * elem_size, f"{self._path(name)} ({count:,} elements)")
        return target + 4, count

    def numbers(self, name: str, code: str, max_len: int) -> tuple:
        """A scalar vector (struct ``code``) as a tuple, refusing more than ``max_len``."""
        start, count = self.vector(name, struct.calcsize("<" + code))
        if count > max_len:
            raise MalformedFlatbuffer(f"{self._path(name)} has {count:,} elements (limit {max_len:,})")
        self.buf.charge(count)
        return struct.unpack_from(f"<{count}{code}", self.buf.data, start) if count else ()

    def element(self, name: str, st: struct.Struct, index: int):
        """Element ``index`` of a scalar vector, or None when the vector is shorter."""
        start, count = self.vector(name, st.size)
        return st.unpack_from(self.buf.data, start + st.size * index)[0] if index < count else None

    def string(self, name: str) -> str:
        """A string field ("" when absent); undecodable bytes become U+FFFD."""
        start, count = self.vector(name, 1)
        if count > _MAX_STRING:
            raise MalformedFlatbuffer(f"{self._path(name)} is {count:,} bytes long (limit {_MAX_STRING:,})")
        self.buf.charge(count // 64)
        return bytes(self.buf.data[start:start + count]).decode("utf-8", errors="replace")

    def tables(self, name: str, kind: str) -> Iterator["Table"]:
        """Yield the tables of a vector-of-tables field one at a time (never all at once)."""
        start, count = self.vector(name, 4)
        self.buf.charge(count)
        for i in range(count):
            yield self._element_table(name, kind, start, i)

    def table_at(self, name: str, kind: str, index: int) -> "Table":
        """Table ``index`` of a vector-of-tables field."""
        start, count = self.vector(name, 4)
        if not 0 <= index < count:
            raise MalformedFlatbuffer(f"{self._path(name)} has no element {index}")
        return self._element_table(name, kind, start, index)

    def _element_table(self, name: str, kind: str, start: int, index: int) -> "Table":
        pos = start + 4 * index
        return Table(self.buf, pos + UINT32.unpack_from(self.buf.data, pos)[0], kind,
                     f"{self._path(name)}[{index}]")


# ------------------------------------------------------------- model buffers by name


def metadata_buffer_span(data, name: str) -> tuple[int, int] | None:
    """Where the model keeps the buffer of its ``Model.metadata`` entry called ``name``.

    Args:
        data: the model bytes (untrusted; the caller has checked the TFL3 identifier).
        name: the metadata entry, e.g. ``TFLITE_METADATA``.

    Returns:
        ``(start, length)`` in ``data`` of the first such entry's non-empty buffer, or
        None when there is none.

    Raises:
        MalformedFlatbuffer: the model flatbuffer is malformed.
    """
    model = FlatBuffer(data, TFLITE_SCHEMA).root("Model")
    for entry in model.tables("metadata", "Metadata"):
        if entry.string("name") == name:
            start, length, _ = _buffer_extent(_metadata_buffer(model, entry))
            if length:
                return start, length
    return None


def _metadata_buffer(model: Table, entry: Table) -> Table:
    """The Buffer a ``Model.metadata`` entry points at."""
    index = entry.scalar("buffer", UINT32, 0)
    _, count = model.vector("buffers", 4)
    if index >= count:
        raise MalformedFlatbuffer(f"{entry.what} refers to buffer {index} but the model has {count}")
    return model.table_at("buffers", "Buffer", index)


def _buffer_extent(b: Table) -> tuple[int, int, bool]:
    """(start, length, stored after the flatbuffer) of a Buffer's bytes in the file."""
    start, length = b.vector("data", 1)
    if length:
        return start, length, False
    offset, size = b.scalar("offset", UINT64, 0), b.scalar("size", UINT64, 0)
    # offset 0 means unset and 1 is the converter's placeholder; data lives at
    # file[offset:offset+size] only beyond that (TFLite's IsValidBufferOffset).
    if offset > 1 and size:
        b.buf.check(offset, size, f"{b.what} data (Buffer.offset/size)")
        return offset, size, True
    return 0, 0, False


# ---------------------------------------------------------------------- the summary


@functools.lru_cache(maxsize=None)
def _enum_names(enum: str) -> dict[int, str]:
    """Value -> name of a schema enum, from ai_edge_litert if it is installed."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        # Optional: without it ops are named by number and types by the fallback table.
        return {}
    cls = getattr(schema, enum, None)
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)} if cls else {}


def _op_name(code: int) -> str:
    return _enum_names("BuiltinOperator").get(code) or f"BUILTIN_{code}"


def _type_name(code: int) -> str:
    name = _enum_names("TensorType").get(code)
    if name is None and 0 <= code < len(_TENSOR_TYPES_FALLBACK):
        name = _TENSOR_TYPES_FALLBACK[code]
    return name or f"TYPE_{code}"


@dataclass
class _TypeAcc:
    tensors: int = 0
    constant_tensors: int = 0
    parameters: int = 0
    parameter_bytes: int = 0


def _summarize(buf: FlatBuffer, label: str) -> TfliteSummary:
    model = buf.root("Model")

    # Operator codes: the real code is the larger of the int8 legacy field (capped at
    # 127) and the int32 field added when codes outgrew int8.
    opcodes: list[tuple[int, str]] = []
    for oc in model.tables("operator_codes", "OperatorCode"):
        code = max(oc.scalar("deprecated_builtin_code", INT8, 0), oc.scalar("builtin_code", INT32, 0))
        custom = (oc.string("custom_code") or "CUSTOM") if code == _CUSTOM else ""
        opcodes.append((code, custom))

    # Buffer sizes, so tensors can tell constants (non-empty buffer) from activations.
    buffer_bytes: list[int] = []
    offset_buffers = 0
    for b in model.tables("buffers", "Buffer"):
        _, nbytes, after_flatbuffer = _buffer_extent(b)
        offset_buffers += after_flatbuffer
        buffer_bytes.append(nbytes)

    op_counts: dict[str, int] = {}
    custom_ops: set[str] = set()
    types: dict[str, _TypeAcc] = {}
    counted_buffers: set[int] = set()
    weight_types: set[str] = set()
    subgraphs: list[SubgraphSummary] = []
    inputs: tuple[TensorSummary, ...] = ()
    outputs: tuple[TensorSummary, ...] = ()

    for gi, g in enumerate(model.tables("subgraphs", "SubGraph")):
        tensor_pos: list[int] = []
        tensor_type: list[str] = []
        tensor_const: list[bool] = []
        for t in g.tables("tensors", "Tensor"):
            dtype = _type_name(t.scalar("type", INT8, 0))
            bidx = t.scalar("buffer", UINT32, 0)
            if bidx >= len(buffer_bytes) and bidx != 0:
                raise MalformedFlatbuffer(f"{t.what} uses buffer {bidx} but the model has "
                                          f"{len(buffer_bytes)} buffers")
            # Buffer 0 is the schema's always-empty sentinel.
            is_const = bidx != 0 and buffer_bytes[bidx] > 0
            acc = types.setdefault(dtype, _TypeAcc())
            acc.tensors += 1
            if is_const:
                acc.constant_tensors += 1
                if bidx not in counted_buffers:
                    counted_buffers.add(bidx)
                    nbytes = buffer_bytes[bidx]
                    acc.parameter_bytes += nbytes
                    acc.parameters += _element_count(t, dtype, nbytes)
            tensor_pos.append(t.pos)
            tensor_type.append(dtype)
            tensor_const.append(is_const)

        ntensors = len(tensor_pos)
        dequantized: dict[int, int] = {}  # DEQUANTIZE output tensor -> its input tensor
        weight_inputs: list[int] = []
        nops = 0
        for op in g.tables("operators", "Operator"):
            nops += 1
            oi = op.scalar("opcode_index", UINT32, 0)
            if oi >= len(opcodes):
                raise MalformedFlatbuffer(f"{op.what} uses operator code {oi} but the model has "
                                          f"{len(opcodes)}")
            code, custom = opcodes[oi]
            name = custom or _op_name(code)
            if custom:
                custom_ops.add(custom)
            op_counts[name] = op_counts.get(name, 0) + 1
            if code in _WEIGHT_OP_CODES:
                w = op.element("inputs", INT32, 1)
                if w is not None and w >= 0:  # -1 marks an omitted optional input
                    weight_inputs.append(_check_index(w, ntensors, f"{op.what}.inputs"))
            elif code == _DEQUANTIZE:
                src, dst = op.element("inputs", INT32, 0), op.element("outputs", INT32, 0)
                if src is not None and dst is not None and src >= 0 and dst >= 0:
                    dequantized[_check_index(dst, ntensors, f"{op.what}.outputs")] = \
                        _check_index(src, ntensors, f"{op.what}.inputs")
        for w in weight_inputs:
            if tensor_const[w]:
                weight_types.add(tensor_type[w])
            elif w in dequantized and tensor_const[dequantized[w]]:
                # float16 / int8 weights stored compressed and expanded at load time.
                weight_types.add(tensor_type[dequantized[w]])

        subgraphs.append(SubgraphSummary(gi, g.string("name"), ntensors, nops))
        if gi == 0:
            inputs = _io_tensors(g, "inputs", tensor_pos, tensor_type)
            outputs = _io_tensors(g, "outputs", tensor_pos, tensor_type)

    if not subgraphs:
        raise MalformedFlatbuffer("the model has no subgraphs")

    metadata_names: list[str] = []
    min_runtime = None
    for m in model.tables("metadata", "Metadata"):
        metadata_names.append(m.string("name"))
        if metadata_names[-1] == "min_runtime_version":
            min_runtime = _small_buffer_text(_metadata_buffer(model, m))

    signature_keys = tuple(s.string("signature_key")
                           for s in model.tables("signature_defs", "SignatureDef"))

    tensor_types = tuple(sorted(
        (TensorTypeSummary(k, a.tensors, a.constant_tensors, a.parameters, a.parameter_bytes)
         for k, a in types.items()),
        key=lambda tt: (-tt.parameter_bytes, -tt.tensors, tt.dtype)))
    return TfliteSummary(
        path=label,
        file_size=buf.size,
        schema_version=model.scalar("version", UINT32, 0),
        description=model.string("description"),
        subgraphs=tuple(subgraphs),
        inputs=inputs,
        outputs=outputs,
        op_counts=op_counts,
        custom_ops=tuple(sorted(custom_ops)),
        tensor_types=tensor_types,
        parameter_count=sum(tt.parameters for tt in tensor_types),
        parameter_bytes=sum(tt.parameter_bytes for tt in tensor_types),
        offset_buffer_count=offset_buffers,
        metadata_names=tuple(metadata_names),
        min_runtime_version=min_runtime,
        signature_keys=signature_keys,
        weight_dtypes=tuple(sorted(weight_types)),
    )


def _check_index(index: int, count: int, what: str) -> int:
    if not 0 <= index < count:
        raise MalformedFlatbuffer(f"{what} refers to tensor {index} but the subgraph has {count} tensors")
    return index


def _element_count(t: Table, dtype: str, nbytes: int) -> int:
    """Elements in a constant tensor: its shape's product, else bytes / item size."""
    shape = t.numbers("shape", "i", _MAX_RANK)
    if all(d >= 0 for d in shape):
        return math.prod(shape)
    return nbytes // _ITEMSIZE.get(dtype, 1)


def _io_tensors(g: Table, which: str, tensor_pos: list[int],
                tensor_type: list[str]) -> tuple[TensorSummary, ...]:
    out = []
    for i in g.numbers(which, "i", len(tensor_pos)):
        _check_index(i, len(tensor_pos), f"{g.what}.{which}")
        t = Table(g.buf, tensor_pos[i], "Tensor", f"{g.what}.tensors[{i}]")
        shape = t.numbers("shape", "i", _MAX_RANK)
        signature = t.numbers("shape_signature", "i", _MAX_RANK) or shape
        scales: tuple = ()
        zero_points: tuple = ()
        qdim = 0
        q = t.table("quantization", "QuantizationParameters")
        if q is not None:
            scales = q.numbers("scale", "f", _MAX_QUANT_PARAMS)
            zero_points = q.numbers("zero_point", "q", _MAX_QUANT_PARAMS)
            qdim = q.scalar("quantized_dimension", INT32, 0)
        out.append(TensorSummary(
            index=i, name=t.string("name"), shape=tuple(shape), shape_signature=tuple(signature),
            dtype=tensor_type[i], scales=tuple(scales), zero_points=tuple(zero_points),
            quantized_dimension=qdim))
    return tuple(out)


def _small_buffer_text(b: Table) -> str | None:
    """Text of a short metadata buffer such as ``min_runtime_version``."""
    start, length, _ = _buffer_extent(b)
    raw = bytes(b.buf.data[start:start + min(length, 64)])
    return raw.split(b"\0", 1)[0].decode("ascii", errors="replace") or None


# ------------------------------------------------------------------------ formatting


def _wrong_kind_message(label: str, head: bytes, ident: bytes) -> str:
    for magic, kind, fix in _KNOWN_MAGIC:
        if head.startswith(magic):
            return f"{label}: not a TFLite flatbuffer, it looks like {kind}; {fix}"
    if all(32 <= c < 127 or c in b"\t\r\n" for c in head):
        return f"{label}: not a TFLite flatbuffer, it looks like a text file; {_FIX_NOT_TFLITE}"
    return (f"{label}: not a TFLite flatbuffer (file identifier is {ident!r}, expected "
            f"{FILE_IDENTIFIER!r}); {_FIX_NOT_TFLITE}")


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _clip(text: str, width: int = 100) -> str:
    # Names come from an untrusted file: keep one line and a sane width.
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= width else text[:width - 3] + "..."


def _fmt_shape(shape: tuple[int, ...], signature: tuple[int, ...]) -> str:
    text = "[" + ", ".join(map(str, shape)) + "]"
    if signature != shape:
        text += " (signature [" + ", ".join(map(str, signature)) + "])"
    return text


def _fmt_quant(t: TensorSummary) -> str:
    if not t.scales:
        return "not quantized"
    if t.per_axis:
        return (f"per-axis quantized on dim {t.quantized_dimension} "
                f"({len(t.scales)} scales)")
    return f"scale={t.scale:.6g} zero_point={t.zero_point}"


def _jsonable(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# ------------------------------------------------------------ weight sparsity read-back

# numpy dtypes of weight tensors whose zeros can be counted from the stored bytes. An
# int8/uint8 kernel is stored as integers: with TFLite's symmetric weight quantization
# (zero point 0) a stored 0 is a weight of exactly 0.
_WEIGHT_DTYPES = {"FLOAT32": "<f4", "FLOAT16": "<f2", "INT8": "i1", "UINT8": "u1", "INT16": "<i2"}


@dataclass(frozen=True)
class WeightSparsity:
    """Zeros in one operator's constant weight tensor, read from the file's bytes.

    Attributes:
        tensor: the weight tensor's name.
        op: the operator using it (``CONV_2D``, ``FULLY_CONNECTED`` ...).
        dtype: its stored type.
        shape: its shape (``[out, h, w, in]`` for CONV_2D, ``[out, in]`` for FULLY_CONNECTED).
        elements: number of weights.
        zeros: weights stored as exactly zero.
        min_zeros_per_block: with ``m_by_n=(M, N)``: the fewest zeros in any block of N
            consecutive weights along the last (input-channel) axis; None when N does not
            divide that axis or no pattern was asked for.
        scales: quantization scales stored for it: 0 = not quantized, 1 = per tensor,
            more = per channel (each a float32 in the file, with an int64 zero point); a
            one-channel tensor has one scale either way and counts as per tensor.
    """

    tensor: str
    op: str
    dtype: str
    shape: tuple[int, ...]
    elements: int
    zeros: int
    min_zeros_per_block: int | None = None
    scales: int = 0

    @property
    def sparsity(self) -> float:
        return self.zeros / self.elements if self.elements else 0.0


def _checked_model(path: str | os.PathLike) -> tuple[str, bytes, Table]:
    """``(label, bytes, Model table)`` of a file :func:`inspect_tflite` accepts (it raises one
    clear line for anything that is not a well-formed model)."""
    inspect_tflite(path)
    with open(path, "rb") as fh:
        data = fh.read()
    return os.fspath(path), data, FlatBuffer(data, TFLITE_SCHEMA).root("Model")


def _opcodes(model: Table) -> list[int]:
    """Builtin code of each operator code (see :func:`_summarize` for the two fields)."""
    return [max(oc.scalar("deprecated_builtin_code", INT8, 0), oc.scalar("builtin_code", INT32, 0))
            for oc in model.tables("operator_codes", "OperatorCode")]


def weight_sparsity(path: str | os.PathLike, block: int | None = None) -> list[WeightSparsity]:
    """Per weight tensor (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED ... input 1), the zeros
    stored in the file: what pruning really left in the model, not what training claimed.

    Args:
        path: the ``.tflite`` file (untrusted; bounds-checked like :func:`inspect_tflite`).
        block: N of an M:N pattern to check (``min_zeros_per_block``), or None.

    Raises:
        ModelFileError: the file is not a well-formed TFLite model.
    """
    import numpy as np

    label, data, model = _checked_model(path)
    try:
        opcodes = _opcodes(model)
        buffers = [_buffer_extent(b)[:2] for b in model.tables("buffers", "Buffer")]
        rows, seen = [], set()
        for g in model.tables("subgraphs", "SubGraph"):
            tensors = list(g.tables("tensors", "Tensor"))
            for op in g.tables("operators", "Operator"):
                index = op.scalar("opcode_index", UINT32, 0)
                if index >= len(opcodes):
                    raise MalformedFlatbuffer(f"{op.what} uses operator code {index} but the model has {len(opcodes)}")
                code = opcodes[index]
                if code not in _WEIGHT_OP_CODES:
                    continue
                w = op.element("inputs", INT32, 1)
                if w is None or w < 0 or w in seen:
                    continue
                t = tensors[_check_index(w, len(tensors), f"{op.what}.inputs")]
                dtype = _type_name(t.scalar("type", INT8, 0))
                bidx = t.scalar("buffer", UINT32, 0)
                if dtype not in _WEIGHT_DTYPES or not 0 < bidx < len(buffers) or not buffers[bidx][1]:
                    continue  # a weight computed at run time (e.g. DEQUANTIZE of int4), or a type we do not read
                seen.add(w)
                start, length = buffers[bidx]
                values = np.frombuffer(bytes(data[start:start + length]), dtype=_WEIGHT_DTYPES[dtype])
                shape = tuple(int(d) for d in t.numbers("shape", "i", _MAX_RANK))
                zeros = int(np.count_nonzero(values == 0))
                per_block = None
                if block and shape and shape[-1] % block == 0 and values.size % block == 0:
                    per_block = int((values.reshape(-1, block) == 0).sum(axis=1).min())
                q = t.table("quantization", "QuantizationParameters")
                scales = len(q.numbers("scale", "f", _MAX_QUANT_PARAMS)) if q is not None else 0
                rows.append(WeightSparsity(t.string("name"), _WEIGHT_OP_CODES[code], dtype, shape, int(values.size),
                                           zeros, per_block, scales))
        return rows
    except (MalformedFlatbuffer, struct.error, IndexError, OverflowError, ValueError) as exc:
        raise ModelFileError(f"{label}: malformed weights ({exc}); {_FIX_CORRUPT}") from None


def count_macs(path: str | os.PathLike) -> int:
    """Multiply-accumulates of one inference (batch 1), from the file's shapes: CONV_2D
    (output pixels x output channels x kernel area x input channels), DEPTHWISE_CONV_2D
    (output pixels x channels x kernel area) and FULLY_CONNECTED (rows x units x inputs), the
    ops that hold nearly all of a CNN's arithmetic. What channel pruning lowers and magnitude
    pruning does not (TFLite's int8 kernels multiply the zeros too).

    Raises:
        ModelFileError: the file is not a well-formed TFLite model.
    """
    label, data, model = _checked_model(path)
    try:
        opcodes = _opcodes(model)
        total = 0
        for g in model.tables("subgraphs", "SubGraph"):
            tensors = list(g.tables("tensors", "Tensor"))

            def shape(op, which: str, index: int) -> tuple[int, ...]:
                i = op.element(which, INT32, index)
                if i is None or i < 0:
                    return ()
                t = tensors[_check_index(i, len(tensors), f"{op.what}.{which}")]
                return tuple(max(1, int(d)) for d in t.numbers("shape", "i", _MAX_RANK))

            for op in g.tables("operators", "Operator"):
                index = op.scalar("opcode_index", UINT32, 0)
                code = opcodes[index] if index < len(opcodes) else -1
                name = _WEIGHT_OP_CODES.get(code)
                if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
                    continue
                weight, out = shape(op, "inputs", 1), shape(op, "outputs", 0)
                if not weight or not out:
                    continue
                if name == "CONV_2D" and len(weight) == 4 and len(out) == 4:  # weight [O, H, W, I]
                    total += out[1] * out[2] * weight[0] * weight[1] * weight[2] * weight[3]
                elif name == "DEPTHWISE_CONV_2D" and len(weight) == 4 and len(out) == 4:  # weight [1, H, W, O]
                    total += out[1] * out[2] * weight[3] * weight[1] * weight[2]
                elif name == "FULLY_CONNECTED" and len(weight) == 2:  # weight [units, inputs]
                    rows = 1
                    for d in out[:-1]:
                        rows *= d
                    total += rows * weight[0] * weight[1]
        return int(total)
    except (MalformedFlatbuffer, struct.error, IndexError, OverflowError, ValueError) as exc:
        raise ModelFileError(f"{label}: malformed operators ({exc}); {_FIX_CORRUPT}") from None


def softmax_output_gain(path: str | os.PathLike) -> float | None:
    """How many output steps one input step of a quantized SOFTMAX producing the model's
    first output (directly, or through the QUANTIZE that uint8 I/O adds) is worth at slope 1:
    ``beta * input_scale / output_scale``; None when that output is not a quantized SOFTMAX's.

    The softmax's slope is ``p * (1 - p)`` per unit of logit, so near a tie between two
    classes (p = 0.5) a one-step difference in the logits moves the probability by about a
    quarter of this many steps; :func:`edgecnn.bench.verify.compare_outputs` widens its
    tolerance there by it.

    Raises:
        ModelFileError: the file is not a well-formed TFLite model.
    """
    label, data, model = _checked_model(path)
    try:
        opcodes = _opcodes(model)
        g = model.table_at("subgraphs", "SubGraph", 0)
        tensors = list(g.tables("tensors", "Tensor"))
        output = g.element("outputs", INT32, 0)
        if output is None or output < 0:
            return None
        producer = {}  # tensor -> the operator writing it
        for op in g.tables("operators", "Operator"):
            written = op.element("outputs", INT32, 0)
            if written is not None and written >= 0:
                producer[written] = op

        def scale(tensor: int) -> float | None:
            t = tensors[_check_index(tensor, len(tensors), f"{g.what}.tensors")]
            q = t.table("quantization", "QuantizationParameters")
            values = q.numbers("scale", "f", _MAX_QUANT_PARAMS) if q is not None else ()
            return values[0] if len(values) == 1 and values[0] > 0 else None  # None: float, or per-axis

        # uint8 I/O puts a QUANTIZE (int8 -> uint8, same scale) after the SOFTMAX: step over it.
        tensor, op = output, producer.get(output)
        for _ in range(4):
            index = op.scalar("opcode_index", UINT32, 0) if op is not None else len(opcodes)
            if index >= len(opcodes) or opcodes[index] != _QUANTIZE:
                break
            tensor = op.element("inputs", INT32, 0)
            op = producer.get(tensor) if tensor is not None and tensor >= 0 else None
        index = op.scalar("opcode_index", UINT32, 0) if op is not None else len(opcodes)
        if index >= len(opcodes) or opcodes[index] != _SOFTMAX:
            return None
        source = op.element("inputs", INT32, 0)
        if source is None or source < 0:
            return None
        s_in, s_out = scale(source), scale(output)  # the output's steps are what verify counts
        if s_in is None or s_out is None:
            return None
        options = op.table("builtin_options", "SoftmaxOptions")
        beta = options.scalar("beta", FLOAT32, 1.0) if options is not None else 1.0
        gain = beta * s_in / s_out
        return float(gain) if math.isfinite(gain) and gain > 0 else None
    except (MalformedFlatbuffer, struct.error, IndexError, OverflowError, ValueError) as exc:
        raise ModelFileError(f"{label}: malformed operators ({exc}); {_FIX_CORRUPT}") from None


def sparsity_summary(rows: list[WeightSparsity], min_sparsity: float = 0.0) -> dict:
    """Global sparsity of all weight tensors, and of those at least ``min_sparsity`` sparse
    (the pruned ones), for reports."""
    pruned = [r for r in rows if r.sparsity >= min_sparsity and min_sparsity > 0]
    total = sum(r.elements for r in rows)
    return {"weights": total, "zeros": sum(r.zeros for r in rows),
            "per_channel_tensors": sum(r.scales > 1 for r in rows), "per_tensor_tensors": sum(r.scales == 1 for r in rows),
            "sparsity": round(sum(r.zeros for r in rows) / total, 5) if total else 0.0,
            "pruned_tensors": len(pruned),
            "pruned_sparsity": round(sum(r.zeros for r in pruned) / max(1, sum(r.elements for r in pruned)), 5)
            if pruned else None}
