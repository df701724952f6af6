"""The one place that loads a TFLite interpreter, plus pure (de)quantization helpers.

Runtimes are tried in order: ``ai_edge_litert`` (LiteRT, the supported package),
``tflite_runtime`` (older devices), then ``tensorflow.lite`` (only if TensorFlow is
installed anyway; importing it is slow). Nothing here imports TensorFlow unless the
first two are missing.

The numeric helpers follow TFLite's affine quantization, ``real = scale * (q - zero_point)``
(Jacob et al. 2018, https://arxiv.org/abs/1712.05877), and are pure numpy so they can be
tested on any host.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgecnn.runtime.runner import quantize_values
from edgecnn.errors import DataError, DeviceError, MissingDependencyError, ModelFileError

__all__ = [
    "IoSpec",
    "load_delegate",
    "load_interpreter",
    "runtime_name_version",
    "input_specs",
    "output_specs",
    "quantize_input",
    "dequantize_output",
    "predict",
    "evaluate_tflite",
]

_INSTALL_HINT = "pip install ai-edge-litert"


# --------------------------------------------------------------------- runtime choice


@dataclass(frozen=True)
class _Runtime:
    name: str  # the pip distribution name
    version: str
    interpreter_class: Any


# (pip distribution, import name, module holding ``Interpreter``), most preferred first.
_RUNTIMES = (
    ("ai-edge-litert", "ai_edge_litert", "ai_edge_litert.interpreter"),
    ("tflite-runtime", "tflite_runtime", "tflite_runtime.interpreter"),
)


def _find_runtime() -> _Runtime:
    """Return the first TFLite runtime that imports, in order of preference."""
    for dist, package, module in _RUNTIMES:
        try:
            interpreter_module = importlib.import_module(module)
        except ImportError:
            continue  # not installed here: the next runtime may be
        return _Runtime(dist, _dist_version(dist, package), interpreter_module.Interpreter)
    # Probe without importing: TensorFlow must be imported through edgecnn._tf.
    if importlib.util.find_spec("tensorflow") is None:
        raise MissingDependencyError(
            f"no TFLite runtime is installed (tried ai_edge_litert, tflite_runtime, "
            f"tensorflow); {_INSTALL_HINT}")
    from edgecnn._tf import tensorflow

    tf = tensorflow()
    return _Runtime("tensorflow", tf.__version__, tf.lite.Interpreter)


def _dist_version(dist: str, module: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        # Installed from source or vendored: fall back to the module's own attribute.
        return str(getattr(importlib.import_module(module), "__version__", "unknown"))


def runtime_name_version() -> tuple[str, str]:
    """Name and version of the runtime :func:`load_interpreter` would use.

    Returns:
        ``(pip distribution name, version)``, e.g. ``("ai-edge-litert", "2.3.0")``.

    Raises:
        MissingDependencyError: no TFLite runtime is installed.
    """
    rt = _find_runtime()
    return rt.name, rt.version


def load_delegate(name: str, device: str | None = None):
    """Load a delegate for the runtime :func:`load_interpreter` uses.

    The Edge TPU library name per OS and the install hints are the device runner's
    (:func:`edgecnn.runtime.runner.make_delegates`), so the bench, the demo and this layer
    load ``edgetpu`` the same way: by library name, found by the dynamic linker.

    Args:
        name: ``"edgetpu"`` (``libedgetpu.so.1`` on Linux), or the path of a TFLite
            external delegate library.
        device: the delegate's ``device`` option (Edge TPU: ``usb``, ``usb:0``, ``pci``).

    Returns:
        The runtime's delegate object, to pass in ``load_interpreter(delegates=[...])``.

    Raises:
        DeviceError: the library is missing or refuses to load (for the Edge TPU: no
            accelerator connected); one line with the fix.
        MissingDependencyError: no TFLite runtime is installed.
    """
    from edgecnn.runtime.runner import RunnerFailure, make_delegates

    if not name:
        raise ValueError("name the delegate: 'edgetpu' or a library path")
    runtime = _find_runtime()
    # Each runtime's load_delegate lives next to its Interpreter class.
    loader = getattr(importlib.import_module(runtime.interpreter_class.__module__), "load_delegate", None)
    if loader is None:
        raise MissingDependencyError(f"{runtime.name} {runtime.version} cannot load delegates; {_INSTALL_HINT}")
    try:
        delegates, _ = make_delegates(loader, name, device)
    except RunnerFailure as exc:
        raise DeviceError(str(exc)) from None
    return delegates[0]


def load_interpreter(path_or_bytes: str | os.PathLike | bytes | bytearray | memoryview,
                     num_threads: int | None = None,
                     delegates: Sequence[Any] | None = None,
                     check: bool = True):
    """Load a TFLite model into an interpreter with tensors allocated.

    Args:
        path_or_bytes: a ``.tflite`` path, or the model's bytes.
        num_threads: CPU threads for the kernels; None leaves the runtime's default.
        delegates: delegate objects (e.g. from ``load_delegate``) applied in order.
        check: first parse the model with
            :func:`edgecnn.tflite.reader.inspect_tflite`, so that a truncated or
            foreign file fails with a message that says what is wrong (the runtime's
            own verifier only says "not a valid Flatbuffer buffer").

    Returns:
        The runtime's ``Interpreter``, after ``allocate_tensors()``.

    Raises:
        ModelFileError: the model is missing, malformed, or the runtime refuses it.
        MissingDependencyError: no TFLite runtime is installed.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        label = "<model bytes>"
        source = {"model_content": bytes(path_or_bytes)}
    else:
        label = os.fspath(path_or_bytes)
        if not Path(label).is_file():
            raise ModelFileError(f"{label}: no such file; check the path")
        source = {"model_path": label}
    if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
        raise ValueError(f"num_threads must be a positive int or None, got {num_threads!r}")
    if check:
        from edgecnn.tflite import reader as _inspect

        if "model_content" in source:
            _inspect.inspect_tflite_bytes(source["model_content"], label=label)
        else:
            _inspect.inspect_tflite(label)

    runtime = _find_runtime()
    kwargs: dict[str, Any] = dict(source)
    if num_threads is not None:
        kwargs["num_threads"] = num_threads
    if delegates:
        kwargs["experimental_delegates"] = list(delegates)
    from edgecnn._tf import native_stderr_silenced  # stdlib-only module; TF is not imported

    try:
        # The runtime logs "Created TensorFlow Lite XNNPACK delegate" to fd 2 on every load.
        with native_stderr_silenced():
            interpreter = runtime.interpreter_class(**kwargs)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        # Runtimes report corrupt models and unsupported ops as ValueError/RuntimeError
        # with multi-line native logs; keep the first line for the one-line CLI error.
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        fix = ("check the delegate, or run without it" if delegates else
               "re-export the model, or upgrade the runtime if it uses newer ops")
        raise ModelFileError(f"{label}: {runtime.name} {runtime.version} cannot load it ({first}); "
                             f"{fix}") from None
    return interpreter


# ---------------------------------------------------------------------- I/O specs


@dataclass(frozen=True)
class IoSpec:
    """Shape, type and quantization of one interpreter input or output.

    Attributes:
        name: tensor name.
        index: tensor index to pass to ``set_tensor`` / ``get_tensor``.
        shape: current (allocated) shape.
        shape_signature: shape with -1 where the model allows any size.
        dtype: numpy dtype of the tensor.
        scale: quantization scale; 0.0 when the tensor is not quantized.
        zero_point: quantization zero point.
    """

    name: str
    index: int
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    dtype: np.dtype
    scale: float = 0.0
    zero_point: int = 0

    @classmethod
    def from_details(cls, details: dict) -> "IoSpec":
        """Build from one entry of ``get_input_details()`` / ``get_output_details()``."""
        scale, zero_point = details.get("quantization", (0.0, 0))
        shape = tuple(int(d) for d in details["shape"])
        signature = details.get("shape_signature")
        return cls(
            name=str(details.get("name", "")),
            index=int(details["index"]),
            shape=shape,
            shape_signature=tuple(int(d) for d in signature) if signature is not None and len(signature) else shape,
            dtype=np.dtype(details["dtype"]),
            scale=float(scale),
            zero_point=int(zero_point),
        )

    @property
    def is_quantized(self) -> bool:
        """True for an integer tensor with a quantization scale."""
        return self.dtype.kind in "iu" and self.scale > 0

    @property
    def dynamic_batch(self) -> bool:
        """True when the leading dimension may be resized."""
        return len(self.shape_signature) > 0 and self.shape_signature[0] == -1


def input_specs(interpreter) -> list[IoSpec]:
    """The interpreter's inputs as :class:`IoSpec` objects, in order."""
    return [IoSpec.from_details(d) for d in interpreter.get_input_details()]


def output_specs(interpreter) -> list[IoSpec]:
    """The interpreter's outputs as :class:`IoSpec` objects, in order."""
    return [IoSpec.from_details(d) for d in interpreter.get_output_details()]


def quantize_input(x_float: np.ndarray, spec: IoSpec) -> np.ndarray:
    """Convert real values to what the input tensor holds.

    Applies edgecnn's one input quantization rule,
    :func:`edgecnn.runtime.runner.quantize_values` (TFLite's reference QUANTIZE kernel:
    float32 ``x / scale``, rounding half away from zero, plus the zero point, clipped to
    the dtype). The device runner, evaluation, ``verify`` and the demo all use it.

    Args:
        x_float: real-valued input.
        spec: the input's :class:`IoSpec`.

    Returns:
        An array of ``spec.dtype`` with the shape of ``x_float``.
    """
    return quantize_values(x_float, spec.dtype, spec.scale if spec.is_quantized else 0.0, spec.zero_point)


def dequantize_output(y: np.ndarray, spec: IoSpec) -> np.ndarray:
    """Convert an output tensor's values to real float32 values.

    ``real = scale * (q - zero_point)`` for quantized tensors; other tensors are cast.

    Args:
        y: raw output values.
        spec: the output's :class:`IoSpec`.

    Returns:
        A float32 array with the shape of ``y``.
    """
    y = np.asarray(y)
    if not spec.is_quantized:
        return y.astype(np.float32)
    # Widen before subtracting so int8/uint8 values minus the zero point cannot wrap.
    return ((y.astype(np.int64) - spec.zero_point) * spec.scale).astype(np.float32)


# ---------------------------------------------------------------------- inference


def predict(interpreter, x_float_batch: np.ndarray, output: int = 0,
            batch_size: int = 32) -> np.ndarray:
    """Run a single-input model on a batch of real-valued samples.

    Inputs are quantized and outputs dequantized as the tensors require. When the
    model's batch dimension is dynamic (signature -1) the input is resized to run up to
    ``batch_size`` samples per invoke; otherwise samples run one at a time.

    Args:
        interpreter: from :func:`load_interpreter`.
        x_float_batch: array of shape ``(N, *input_shape[1:])``.
        output: which model output to return.
        batch_size: samples per ``invoke`` when the batch dimension is resizable.

    Returns:
        float32 array of shape ``(N, *output_shape[1:])``.

    Raises:
        ModelFileError: the model does not have exactly one input, or lacks ``output``.
        DataError: the samples do not match the model's input shape.
    """
    ins = input_specs(interpreter)
    outs = output_specs(interpreter)
    if len(ins) != 1:
        raise ModelFileError(f"the model has {len(ins)} inputs; predict() supports single-input models")
    if not 0 <= output < len(outs):
        raise ModelFileError(f"the model has {len(outs)} outputs; output {output} does not exist")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    spec = ins[0]
    x = np.asarray(x_float_batch)
    _check_sample_shape(x, spec)
    n = x.shape[0]
    if n == 0:
        out_shape = outs[output].shape[1:]
        return np.zeros((0, *out_shape), np.float32)

    step = batch_size if spec.dynamic_batch else 1
    results = []
    start = 0
    while start < n:
        chunk = x[start:start + step]
        if not _resize_input(interpreter, spec, chunk.shape):
            step = 1  # the runtime refused a larger batch: redo this chunk per sample
            continue
        results.append(_invoke(interpreter, spec, chunk, output))
        start += len(chunk)
    return np.concatenate(results, axis=0)


def _check_sample_shape(x: np.ndarray, spec: IoSpec) -> None:
    expected = spec.shape_signature[1:]
    got = x.shape[1:]
    if x.ndim != len(spec.shape) or any(e != -1 and e != g for e, g in zip(expected, got)):
        want = ", ".join("N" if i == 0 else ("?" if d == -1 else str(d))
                         for i, d in enumerate(spec.shape_signature))
        raise DataError(f"input batch has shape {tuple(x.shape)} but the model's input "
                        f"'{spec.name}' expects ({want}); reshape the samples to match")


def _resize_input(interpreter, spec: IoSpec, shape: tuple[int, ...]) -> bool:
    """Give the input tensor ``shape``; False (input left at batch 1) if refused.

    ``shape`` passed :func:`_check_sample_shape`, so it differs from the allocated shape
    only in the batch and in dimensions the signature marks -1.
    """
    current = tuple(int(d) for d in interpreter.get_input_details()[0]["shape"])
    if current == tuple(shape):
        return True
    try:
        interpreter.resize_tensor_input(spec.index, list(shape))
        interpreter.allocate_tensors()
        return True
    except (ValueError, RuntimeError) as exc:
        if shape[0] == 1:
            raise ModelFileError(f"the runtime cannot run input '{spec.name}' with shape "
                                 f"{tuple(shape)} ({exc}); re-export the model for that shape") from None
        # Some ops refuse a new batch size even when the signature says -1; batch 1
        # works because that is the shape the converter allocated.
        interpreter.resize_tensor_input(spec.index, [1, *shape[1:]])
        interpreter.allocate_tensors()
        return False


def _invoke(interpreter, spec: IoSpec, chunk: np.ndarray, output: int) -> np.ndarray:
    interpreter.set_tensor(spec.index, quantize_input(chunk, spec))
    interpreter.invoke()
    # Details are re-read after invoke: resizing changes the output shape.
    out_spec = IoSpec.from_details(interpreter.get_output_details()[output])
    return dequantize_output(interpreter.get_tensor(out_spec.index), out_spec)


def evaluate_tflite(path: str | os.PathLike, x_float: np.ndarray, y: np.ndarray,
                    num_threads: int = 2, batch_size: int = 64) -> float:
    """Top-1 accuracy of a single-input classifier ``.tflite`` on real-valued samples.

    Args:
        path: the model file.
        x_float: samples, shape ``(N, *input_shape[1:])``.
        y: integer labels ``(N,)`` or one-hot / score rows ``(N, classes)``.
        num_threads: CPU threads for the interpreter.
        batch_size: samples per invoke when the model's batch dimension is resizable.

    Returns:
        Fraction of samples whose highest score is the label, in [0, 1].

    Raises:
        DataError: no samples, or labels that do not match the samples.
        ModelFileError: the model cannot be loaded.
    """
    y = np.asarray(y)
    labels = y.argmax(axis=-1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(-1)
    if len(labels) == 0:
        raise DataError("no samples to evaluate; pass a non-empty dataset")
    if len(labels) != len(x_float):
        raise DataError(f"{len(x_float)} samples but {len(labels)} labels; they must match")
    interpreter = load_interpreter(path, num_threads=num_threads)
    scores = predict(interpreter, x_float, batch_size=batch_size)
    return float(np.mean(scores.reshape(len(labels), -1).argmax(axis=-1) == labels))
