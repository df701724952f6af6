"""The table of TFLite formats edgecnn writes: one frozen row per format, validated up front."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExportFormat:
    """One TFLite flavour.

    Attributes:
        name: recipe name (``export.formats`` / the int8 quantize stage).
        filename: artifact file name in the run directory.
        precision: what ``report.json`` calls it.
        needs_calibration: needs a representative dataset (full-integer quantization).
        description: one line for people.
        kind: the artifact kind of the file (see :mod:`edgecnn.artifacts`).
        runtime: what can run it: ``litert`` (any host TFLite interpreter) or ``edgetpu``.
        optimize: the converter's ``Optimize.DEFAULT`` (quantize what the row allows).
        supported_types: ``target_spec.supported_types`` (``float16`` for float16 weights).
        ops: ``target_spec.supported_ops`` (names of ``tf.lite.OpsSet``); empty = the default.
        io: input/output type: ``float32``, or ``recipe`` (``quantize.io_dtype``).
        tool: what writes it: ``converter`` (TensorFlow's, from the Keras model) or
            ``litert-quantizer`` (Google's LiteRT quantizer, from the float32 file; the
            ``quantize`` extra), with ``weight_bits`` for its weight-only rows.
    """

    name: str
    filename: str
    precision: str
    needs_calibration: bool
    description: str
    kind: str = "tflite"
    runtime: str = "litert"
    optimize: bool = False
    supported_types: tuple[str, ...] = ()
    ops: tuple[str, ...] = ()
    io: str = "float32"
    tool: str = "converter"
    weight_bits: int = 0

    @property
    def role(self) -> str:
        """The artifact role of the student's file: ``model.tflite.<name>``."""
        return f"model.tflite.{self.name}"

    def role_for(self, source: str) -> str:
        """The role of this format of the Keras model named ``source`` (``student``, ``pruned``)."""
        return self.role if source == PRIMARY_SOURCE else f"{self.role}.{source}"

    def filename_for(self, source: str) -> str:
        """The file name of this format of ``source``: ``student_int8.tflite``, ``pruned_int8.tflite``."""
        return self.filename.replace(f"{PRIMARY_SOURCE}_", f"{source}_", 1)


# The model whose files keep the short roles (model.tflite.int8): the student. Every other
# deployable model's files carry its name, so several models of one precision coexist.
PRIMARY_SOURCE = "student"


# The converter modes: adding one is one row here (and its name in the recipe's
# export.formats Literal). The quantize stage writes int8; export writes the others.
FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("float32", "student_float32.tflite", "float32", False, "float32 weights and activations"),
    ExportFormat("float16", "student_float16.tflite", "float16", False, "float16 weights, float32 compute (GPU delegates)",
                 optimize=True, supported_types=("float16",)),
    ExportFormat("dynamic", "student_dynamic.tflite", "dynamic", False,
                 "int8 weights, float activations quantized on the fly (dynamic range; CPU only)", optimize=True),
    ExportFormat("int16x8", "student_int16x8.tflite", "int16x8", True,
                 "int8 weights, int16 activations (more accurate than int8; slow reference kernels on most CPUs)",
                 optimize=True, ops=("EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8",)),
    ExportFormat("int8", "student_int8.tflite", "int8", True, "full-integer int8 weights and activations (CPU, Edge TPU, NPUs)",
                 optimize=True, ops=("TFLITE_BUILTINS_INT8",), io="recipe"),
    # Weight-only: the converter cannot write int4. Depthwise kernels stay int8 (9 weights a
    # channel: int4 would cost accuracy for a few bytes).
    ExportFormat("int4", "student_int4.tflite", "int4", False,
                 "int4 weights for Conv2D and Dense, int8 depthwise weights, float activations (smallest file)",
                 tool="litert-quantizer", weight_bits=4),
)


# The Edge TPU compiler's output (issue #11 item 8): a row of its own, not in FORMATS,
# because no converter writes it: the ``edgetpu`` build stage compiles the int8 model with
# ``edgetpu_compiler``. Evaluation on the host reports it as "not evaluable on this host"
# (its runtime is the Edge TPU).
EDGETPU_FORMAT = ExportFormat("edgetpu", "student_int8_edgetpu.tflite", "int8", True,
                              "int8 model compiled for the Coral Edge TPU", kind="edgetpu", runtime="edgetpu")


# The accuracy gate's output (``quantize.max_drop``): full int8 with the layers that broke the
# budget kept float, written by litert-quantizer from the float32 file (int8 I/O). A row of
# its own beside the int8 one, so a build holds both (and its report compares them).
GATED_FORMAT = ExportFormat("int8_gated", "student_int8_gated.tflite", "int8", True,
                            "int8 with the layers that broke quantize.max_drop kept float (int8 I/O)",
                            optimize=True, io="int8", tool="litert-quantizer")

# Per-layer mixed precision named in the recipe (``quantize.mixed``): int8 with the listed
# layers in float32 or int16x8, by litert-quantizer from the float32 file (int8 I/O).
MIXED_FORMAT = ExportFormat("int8_mixed", "student_int8_mixed.tflite", "int8", True,
                            "int8 with the layers named in quantize.mixed at their precision (int8 I/O)",
                            optimize=True, io="int8", tool="litert-quantizer")

_ALL = (*FORMATS, EDGETPU_FORMAT, GATED_FORMAT, MIXED_FORMAT)


def get_format(name: str) -> ExportFormat:
    """The row called ``name`` (``edgetpu`` and ``int8_gated`` included)."""
    for row in _ALL:
        if row.name == name:
            return row
    raise KeyError(f"unknown export format {name!r}; known: {', '.join(f.name for f in _ALL)}")


def float_formats(names) -> list[ExportFormat]:
    """The rows among ``names`` (``export.formats``) that the export stage converts from
    Keras, in the given order: all but int8 (the quantize stage's) and edgetpu (the
    compiler's)."""
    return [row for name in names for row in FORMATS if row.name == name and row.name != "int8"]
