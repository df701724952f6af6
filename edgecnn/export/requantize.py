"""Re-quantizing a float ``.tflite`` with Google's LiteRT quantizer (``litert-quantizer``).

The one module that touches the package, so a change in it breaks one place (and
``tests/test_gate.py``, which checks the internals used here). Why this tool next to the
converter (measured in ``../shared/notes/quantization-tools.md``):

* it quantizes the float file we already wrote: calibrate once (seconds), then each
  "keep these ops float" variant costs ~0.1 s, against a full conversion per attempt;
* it keeps int8 inputs and outputs when a layer stays float (the converter's selective
  path, ``QuantizationDebugger`` + ``denylisted_nodes``, silently returns float I/O);
* min/max calibration, as the converter does. The package's default smooths the ranges
  (moving average 0.95), which on an under-trained model clipped by luck (higher accuracy
  but 89.9 % agreement with float against the converter's 96.3 %). ``Quantizer.calibrate``
  does not take the update rule, so :func:`calibrate` builds the ``Calibrator`` itself.

The package pins ``ai-edge-litert`` exactly, so it is an extra (``pip install
'edgecnn[quantize]'``, which the README's set-up installs); without it the features that
need it fail with one line saying so, before any training.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from edgecnn.errors import MissingDependencyError
from edgecnn.tflite.metadata import inline_buffers

PACKAGE = "litert-quantizer"
MODULE = "litert_quantizer"
INSTALL_HINT = "pip install 'edgecnn[quantize]' (the README's set-up installs it)"

# The quantizer's algorithm key for "leave this op float". Op output names are matched
# whole, so a kept-float layer never drags in a neighbour whose name it prefixes.
_FLOAT = "no_quantize"


def available() -> bool:
    """Whether ``litert-quantizer`` can be imported (without importing it)."""
    return importlib.util.find_spec(MODULE) is not None


def version() -> str:
    """The installed version, or ``absent``."""
    from importlib.metadata import PackageNotFoundError, version as _version

    try:
        return _version(PACKAGE)
    except PackageNotFoundError:
        return "absent"


def require(what: str) -> None:
    """Raise one line naming ``what`` needs the package, and how to get it."""
    if not available():
        raise MissingDependencyError(f"{what} needs {PACKAGE}, which is not installed: {INSTALL_HINT}")


@dataclass(frozen=True)
class FloatModel:
    """A float ``.tflite`` and what the quantizer needs to know about it."""

    path: Path
    signature: str
    input_name: str
    op_outputs: tuple[str, ...]  # output tensor name of each op, in graph order


def describe(path: Path) -> FloatModel:
    """The serving signature, its input and each op's output tensor name of a float file."""
    from edgecnn.runtime.interpreter import make_interpreter

    interpreter = make_interpreter(path, threads=1)
    signatures = interpreter.get_signature_list()
    signature = "serving_default" if "serving_default" in signatures else next(iter(signatures))
    (input_name,) = signatures[signature]["inputs"]
    tensors = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    outputs = tuple(tensors[i] for op in interpreter._get_ops_details() for i in op["outputs"] if i in tensors)
    return FloatModel(Path(path), signature, input_name, outputs)


def calibrate(model: FloatModel, images: np.ndarray, threads: int = 1) -> dict:
    """Min/max ranges of every tensor of ``model`` over ``images`` (float32, model-ready).

    One pass; every :func:`quantize_int8` of this model reuses the result.
    """
    from litert_quantizer import calibrator, recipe, recipe_manager
    from litert_quantizer.utils import qsv_utils

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe.static_wi8_ai8())
    samples = [{model.input_name: images[i:i + 1].astype(np.float32)} for i in range(len(images))]
    with _quiet():
        calib = calibrator.Calibrator(model.path.read_bytes(), num_threads=threads,
                                      qsv_update_func=qsv_utils.min_max_update)
        calib.calibrate({model.signature: samples}, manager)
    return calib.get_model_qsvs()


# Per-op precisions besides int8 that a full-integer model can mix in.
MIXED_PRECISIONS = ("float32", "int16x8")


def quantize_int8(model: FloatModel, ranges: dict, keep_float: Iterable[str] = (),
                  precisions: dict[str, str] | None = None, per_channel: bool = True) -> bytes:
    """Full-integer int8 (int8 I/O) of ``model`` with the ops whose output tensor is named
    in ``keep_float`` left in float32 (dequantized around them), and the ops named in
    ``precisions`` at theirs (``float32``, or ``int16x8``: int16 activations with int8
    weights; the quantizer inserts the conversions between them). Weight scales are per
    output channel, or one per tensor with ``per_channel`` False."""
    from litert_quantizer import qtyping, quantizer

    granularity = qtyping.QuantGranularity.CHANNELWISE if per_channel else qtyping.QuantGranularity.TENSORWISE
    every_op = qtyping.TFLOperationName.ALL_SUPPORTED
    q = quantizer.Quantizer(str(model.path))
    # What recipe.static_wi8_ai8() sets up, with the weight granularity as asked.
    q.add_static_config(regex=".*", operation_name=every_op, activation_num_bits=8, weight_num_bits=8,
                        weight_granularity=granularity)
    wanted = {**(precisions or {}), **{name: "float32" for name in keep_float}}
    for name, precision in wanted.items():
        # The quantizer matches an op by its "scope": its output tensor names, each followed by ";".
        scope = f"(^|;){re.escape(name)};"
        if precision == "float32":
            q.update_quantization_recipe(regex=scope, operation_name=every_op, algorithm_key=_FLOAT)
        elif precision == "int16x8":
            q.add_static_config(regex=scope, operation_name=every_op, activation_num_bits=16, weight_num_bits=8,
                                weight_granularity=granularity)
        else:
            raise ValueError(f"precision {precision!r} is not one of {', '.join(MIXED_PRECISIONS)}")
    with _quiet():
        model_bytes = bytes(q.quantize(ranges, enable_progress_report=False).quantized_model)
    # Models with over 256 KiB of weights come back with them stored after the flatbuffer,
    # which older runtimes and the metadata writer do not read: move them inside.
    return inline_buffers(model_bytes)


def quantize_weights(model: FloatModel, bits: int, depthwise_bits: int = 8) -> bytes:
    """Weight-only quantization of ``model``: Conv2D and Dense weights to ``bits`` (per
    channel), depthwise weights to ``depthwise_bits``; activations and compute stay float.
    Needs no calibration."""
    from litert_quantizer import qtyping, quantizer

    q = quantizer.Quantizer(str(model.path))
    ops = qtyping.TFLOperationName
    for op, n in ((ops.CONV_2D, bits), (ops.FULLY_CONNECTED, bits), (ops.DEPTHWISE_CONV_2D, depthwise_bits)):
        q.add_weight_only_config(regex=".*", operation_name=op, num_bits=n)
    with _quiet():
        model_bytes = bytes(q.quantize(enable_progress_report=False).quantized_model)
    return inline_buffers(model_bytes)


@contextlib.contextmanager
def _quiet():
    """The package's progress bars (tqdm on stderr) and the runtime's "preserve all tensors
    is for debugging" warning say nothing to a person reading the build: the stage prints
    its own lines."""
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
        yield
