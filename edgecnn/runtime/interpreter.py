"""The host's runtime layer: one :func:`make_interpreter`, plus pure (de)quantization helpers.

Evaluation, bundles' golden outputs, ``verify`` and the demo load models through
:func:`make_interpreter`. Runtime discovery, interpreter construction, the Edge TPU
library table and delegate loading are the device runner's
(:mod:`edgecnn.runtime.runner`, which devices run alone), so a model loads the same way
on the host, in the bench and on a device. Runtimes are tried in order: ``ai_edge_litert``
(LiteRT, the supported package), ``tflite_runtime`` (older devices), then
``tensorflow.lite`` (only if TensorFlow is installed anyway; it is imported through
:mod:`edgecnn._tf`, and only when the first two are missing).

The numeric helpers follow TFLite's affine quantization, ``real = scale * (q - zero_point)``
(Jacob et al. 2018, https://arxiv.org/abs/1712.05877), and are pure numpy so they can be
tested on any host.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecnn.errors import DataError, DeviceError, MissingDependencyError, ModelFileError
from edgecnn.runtime import runner

__all__ = [
    "RUNTIME_NAMES",
    "IoSpec",
    "make_interpreter",
    "runtime_name_version",
    "input_specs",
    "output_specs",
    "quantize_input",
    "dequantize_output",
    "predict",
    "evaluate_tflite",
    "predict_classes",
]

# The pip names ``make_interpreter(runtime=...)`` accepts, most preferred first.
RUNTIME_NAMES = tuple(name for name, _ in runner.RUNTIMES)


# --------------------------------------------------------------------- runtime choice


@dataclass(frozen=True)
class _Runtime:
    name: str  # the pip distribution name
    version: str
    interpreter_class: Any
    load_delegate: Any


def _import_tensorflow():
    # Probe without importing: TensorFlow is imported only through edgecnn._tf, which
    # selects Keras 2 first.
    if importlib.util.find_spec("tensorflow") is None:
        raise ImportError("tensorflow is not installed")
    from edgecnn._tf import tensorflow

    return tensorflow()


def _find_runtime(runtime: str | None = None) -> _Runtime:
    if runtime is not None and runtime not in RUNTIME_NAMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIME_NAMES)} or None, got {runtime!r}")
    try:
        return _Runtime(*runner.load_runtime(runtime, import_tensorflow=_import_tensorflow))
    except runner.RunnerFailure as exc:
        raise MissingDependencyError(str(exc)) from None


def runtime_name_version(runtime: str | None = None) -> tuple[str, str]:
    """Name and version of the runtime :func:`make_interpreter` would use.

    Args:
        runtime: as in :func:`make_interpreter`.

    Returns:
        ``(pip distribution name, version)``, e.g. ``("ai-edge-litert", "2.3.0")``.

    Raises:
        MissingDependencyError: no TFLite runtime (or not ``runtime``) is installed.
    """
    rt = _find_runtime(runtime)
    return rt.name, rt.version


def make_interpreter(model: str | os.PathLike | bytes | bytearray | memoryview, *,
                     runtime: str | None = None, delegate: str | None = None, device: str | None = None,
                     threads: int | None = None, check: bool = True):
    """Load a TFLite model into an interpreter with tensors allocated: edgecnn's one way.

    Args:
        model: a ``.tflite`` path, or the model's bytes.
        runtime: one of :data:`RUNTIME_NAMES` (``"ai-edge-litert"``, ``"tflite-runtime"``,
            ``"tensorflow"``); None takes the first installed, in that order.
        delegate: None (CPU), ``"edgetpu"`` (``libedgetpu.so.1`` on Linux, found by the
            dynamic linker, as the device runner loads it) or the path of a TFLite
            external delegate library.
        device: the delegate's ``device`` option (Edge TPU: ``usb``, ``usb:0``, ``pci``).
        threads: CPU threads for the kernels; None leaves the runtime's default.
        check: first parse the model with
            :func:`edgecnn.tflite.reader.inspect_tflite`, so that a truncated or
            foreign file fails with a message that says what is wrong (the runtime's
            own verifier only says "not a valid Flatbuffer buffer").

    Returns:
        The runtime's ``Interpreter``, after ``allocate_tensors()``.

    Raises:
        ModelFileError: the model is missing, malformed, or the runtime refuses it.
        DeviceError: the delegate library is missing or refuses to load (for the Edge
            TPU: no accelerator connected); one line with the fix.
        MissingDependencyError: no TFLite runtime (or not ``runtime``) is installed.
    """
    if isinstance(model, (bytes, bytearray, memoryview)):
        label, source = "<model bytes>", bytes(model)
    else:
        label = source = os.fspath(model)
        if not Path(label).is_file():
            raise ModelFileError(f"{label}: no such file; check the path")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    if device is not None and not delegate:
        raise ValueError("device is an option of a delegate; pass delegate='edgetpu' (or a library) with it")
    if check:
        from edgecnn.tflite import reader as _inspect

        if isinstance(source, bytes):
            _inspect.inspect_tflite_bytes(source, label=label)
        else:
            _inspect.inspect_tflite(label)

    rt = _find_runtime(runtime)
    try:
        delegates, _ = runner.make_delegates(rt.load_delegate, delegate, device)
    except runner.RunnerFailure as exc:
        raise DeviceError(str(exc)) from None
    from edgecnn._tf import native_stderr_silenced  # stdlib-only module; TF is not imported

    try:
        # The runtime logs "Created TensorFlow Lite XNNPACK delegate" to fd 2 on every load.
        with native_stderr_silenced():
            return runner.new_interpreter(rt.interpreter_class, source, threads, delegates)
    except (ValueError, RuntimeError) as exc:
        # Keep the first line of the runtime's multi-line native log for the one-line error.
        fix = ("check the delegate, or run without it" if delegates else
               "re-export the model, or upgrade the runtime if it uses newer ops")
        raise ModelFileError(f"{label}: {rt.name} {rt.version} cannot load it ({runner.first_line(exc)}); "
                             f"{fix}") from None


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
    return runner.quantize_values(x_float, spec.dtype, spec.scale if spec.is_quantized else 0.0, spec.zero_point)


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

    Inputs are quantized and outputs dequantized as the tensors require. The input is
    resized to run up to ``batch_size`` samples per invoke: at once when the model's
    batch dimension is dynamic (signature -1); for a static batch (what edgecnn exports)
    once the first batch matched per-sample runs; otherwise samples run one at a time.

    Args:
        interpreter: from :func:`make_interpreter`.
        x_float_batch: array of shape ``(N, *input_shape[1:])``.
        output: which model output to return.
        batch_size: samples per ``invoke`` when the model can be resized to it.

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

    # edgecnn exports a static batch of 1 (edgetpu_compiler needs it), and the CPU kernels
    # still run such a model resized to a larger batch. A graph that bakes the batch in (a
    # Reshape to a constant shape) may resize without complaint and compute something
    # else, so for a static model the first batched chunk is checked against per-sample
    # runs before batching is trusted.
    step = batch_size
    trusted = spec.dynamic_batch
    results = []
    start = 0
    while start < n:
        chunk = x[start:start + step]
        if not _resize_input(interpreter, spec, chunk.shape):
            step = 1  # the runtime refused a larger batch: redo this chunk per sample
            continue
        got = _invoke(interpreter, spec, chunk, output)
        if not trusted and len(chunk) > 1:
            if not _matches_single_runs(interpreter, spec, chunk[:2], got, output):
                step = 1  # batching changes the results: this model runs one sample at a time
                continue
            trusted = True
        results.append(got)
        start += len(chunk)
    return np.concatenate(results, axis=0)


def _matches_single_runs(interpreter, spec: IoSpec, samples: np.ndarray, batched: np.ndarray, output: int) -> bool:
    """Whether ``batched``'s first rows equal running ``samples`` one at a time (leaves batch 1).

    Equal within a kernel's rounding: two quantization steps of an integer output (a
    batched GEMM may round one accumulator differently), else 1e-4 on probabilities.
    """
    _resize_input(interpreter, spec, (1, *samples.shape[1:]))
    single = np.concatenate([_invoke(interpreter, spec, s[None], output) for s in samples], axis=0)
    if batched.shape[0] < len(samples) or batched.shape[1:] != single.shape[1:]:
        return False
    scale = IoSpec.from_details(interpreter.get_output_details()[output]).scale
    return bool(np.allclose(batched[:len(samples)], single, rtol=0, atol=max(1e-4, 2 * scale)))


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
                    num_threads: int = 2, batch_size: int = 64, runtime: str | None = None) -> float:
    """Top-1 accuracy of a single-input classifier ``.tflite`` on real-valued samples.

    Args:
        path: the model file.
        x_float: samples, shape ``(N, *input_shape[1:])``.
        y: integer labels ``(N,)`` or one-hot / score rows ``(N, classes)``.
        num_threads: CPU threads for the interpreter.
        batch_size: samples per invoke when the model's batch dimension is resizable.
        runtime: as in :func:`make_interpreter`.

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
    predicted = predict_classes(path, x_float, num_threads=num_threads, batch_size=batch_size, runtime=runtime)
    return float(np.mean(predicted == labels))


def predict_classes(path: str | os.PathLike | bytes, x_float: np.ndarray, num_threads: int = 2, batch_size: int = 64,
                    runtime: str | None = None) -> np.ndarray:
    """The top-1 class a single-input classifier ``.tflite`` (a path, or the model's bytes)
    predicts for each real-valued sample.

    Raises:
        ModelFileError: the model cannot be loaded.
    """
    interpreter = make_interpreter(path, runtime=runtime, threads=num_threads)
    scores = predict(interpreter, x_float, batch_size=batch_size)
    return scores.reshape(len(x_float), -1).argmax(axis=-1)


def host_latency(model: str | os.PathLike | bytes, sample: np.ndarray | None = None, threads: int = 1,
                 runs: int = 50, warmup: int = 10) -> dict:
    """Latency (ms) of one batch-1 inference of ``model`` on this host's CPU: median and p90
    of ``runs`` timed ``invoke()`` calls after ``warmup`` untimed ones, on ``sample[:1]``
    (None: zeros; a CNN's kernels take the same time whatever the values).

    One thread by default: what a small device core sees, and the figure least disturbed by
    other work on the machine. Timings are of ``invoke()`` only, as the device runner's.
    """
    import time

    interpreter = make_interpreter(model, threads=threads)
    spec = input_specs(interpreter)[0]
    if sample is None:
        interpreter.set_tensor(spec.index, np.zeros(spec.shape, spec.dtype))
    else:
        interpreter.set_tensor(spec.index, quantize_input(np.asarray(sample[:1], np.float32), spec))
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        interpreter.invoke()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    p50, p90 = np.percentile(times, [50, 90])
    return {"p50": round(float(p50), 4), "p90": round(float(p90), 4), "runs": runs, "threads": threads}
