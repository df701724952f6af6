"""The accuracy gate (``quantize.max_drop``): keep the layers that quantize worst in float
until the int8 model is within budget of its float source.

Three steps, each a function:

1. :func:`rank_layers`: the converter's ``QuantizationDebugger`` runs the int8 model with a
   float copy of every quantized op and reports each op's error *in isolation* (its input
   is the dequantized int8 input, so errors do not accumulate down the net, unlike an
   end-to-end comparison). Ops are ranked by RMSE over their output scale, the measure
   TensorFlow's debugger guide uses: about 0.29 (uniform rounding) is normal, much more
   means the op's int8 weights or ranges lose information.
2. :func:`search`: with ``litert-quantizer`` (:mod:`edgecnn.export.requantize`), calibrated
   once, try the full int8 model, then the worst layer in float, the worst two, ...; each
   attempt is measured on held-out images and costs ~0.1 s to make. Stop at the first that
   meets the budget.
3. :func:`node_data`: the per-layer error as node data for Google's Model Explorer, so a
   person sees the bad layers on the graph.

Layers are matched between the debugger's model and the float file by their Keras layer
path (``model/conv_b/...`` -> ``conv_b``): tensor names differ in their fused suffixes, and
one Keras layer may become several ops, all of which stay float together.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

# The debugger's rounding-only level of RMSE / scale: 1/sqrt(12) for uniform rounding.
ROUNDING_RMSE_SCALE = float(1 / np.sqrt(12))


@dataclass(frozen=True)
class LayerError:
    """One quantized op's isolated error, from the debugger."""

    layer: str  # Keras layer name
    op: str  # TFLite op (CONV_2D ...)
    tensor: str  # the debugger model's output tensor name
    rmse_scale: float  # RMSE of the op's int8 output over its quantization scale
    float_ops: tuple[str, ...] = ()  # output tensor names of this layer's ops in the float file


@dataclass
class Attempt:
    """One gated candidate: the layers kept float and what it measured."""

    keep_float: list[str]
    accuracy: float
    drop_points: float
    latency_ms: float | None
    seconds: float


@dataclass
class GateResult:
    """What the search found: the passing model (None when none passed) and every attempt."""

    model: bytes | None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def kept_float(self) -> list[str]:
        return self.attempts[-1].keep_float if self.model is not None else []

    def to_dict(self) -> list[dict]:
        return [asdict(a) for a in self.attempts]


def layer_key(tensor_name: str) -> str:
    """The Keras layer an op's output tensor belongs to.

    ``model_classifier/block_1_expand_relu/Relu6;model_classifier/block_1_expand_BN/...`` ->
    ``block_1_expand_relu``: the first fused name, without the model prefix and the op
    suffix. Empty for tensors that name no layer (``StatefulPartitionedCall:0``).
    """
    parts = tensor_name.split(";")[0].split("/")
    return parts[-2] if len(parts) >= 3 else ""


def layer_names(tensor_name: str) -> set[str]:
    """Every Keras layer named in an op's (fused) output tensor name: a convolution fused
    with its BatchNorm names both (``block_16_project_BN/...;block_16_project/Conv2D``)."""
    return {parts[-2] for part in tensor_name.split(";") if len(parts := part.split("/")) >= 3}


def rank_layers(model, calibration: np.ndarray, float_ops: Sequence[str], per_channel: bool = True) -> list[LayerError]:
    """The quantized ops of ``model`` (a tf_keras inference model), worst first, with the
    float file's op outputs of each (``float_ops``: :attr:`FloatModel.op_outputs`), quantized
    with the weight scales of the file it explains (``per_channel``).

    Only layers found in the float file are returned: those are what the search can keep float.
    """
    import csv
    import io

    from edgecnn._tf import native_stderr_silenced, tensorflow
    from edgecnn.export.formats import get_format
    from edgecnn.export.tflite import converter_for, representative_batches

    tf = tensorflow()
    # Float I/O: the debugger compares float outputs; the I/O type does not change layer errors.
    converter = converter_for(model, get_format("int8"), calibration, "float32", per_channel)
    # The debugger runs TensorFlow's deprecated tf.lite.Interpreter, which warns on every
    # load; the ranking is all a person needs from it.
    with native_stderr_silenced(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter,
                                                              debug_dataset=representative_batches(calibration))
        debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    by_layer: dict[str, list[str]] = {}
    for name in float_ops:
        if layer_key(name):
            by_layer.setdefault(layer_key(name), []).append(name)
    ranked: dict[str, LayerError] = {}
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        key, scale = layer_key(row["tensor_name"]), float(row["scale"] or 0)
        if not key or key not in by_layer or scale <= 0:
            continue
        error = float(np.sqrt(float(row["mean_squared_error"]))) / scale
        if key not in ranked or error > ranked[key].rmse_scale:
            ranked[key] = LayerError(key, row["op_name"], row["tensor_name"], round(error, 4), tuple(by_layer[key]))
    return sorted(ranked.values(), key=lambda e: -e.rmse_scale)


def search(quantize: Callable[[Sequence[str]], bytes], ranked: Sequence[LayerError],
           accuracy: Callable[[bytes], float], float_accuracy: float, max_drop: float, attempts: int,
           latency: Callable[[bytes], float] | None = None, on_attempt: Callable[[Attempt], None] | None = None
           ) -> GateResult:
    """Try the full int8 model, then the ``k`` worst layers in float for k = 1, 2, ...

    Args:
        quantize: makes the int8 model with the given float-file op outputs kept float.
        ranked: :func:`rank_layers`' result, worst first.
        accuracy: top-1 accuracy (0-1) of a model on the held-out images.
        float_accuracy: the float source's accuracy on the same images.
        max_drop: the budget, in points.
        attempts: how many candidates at most (the full int8 one included).
        latency: host latency (ms) of a model, recorded per attempt (what float layers cost).
        on_attempt: called after each attempt (progress lines).
    """
    result = GateResult(None)
    for k in range(min(attempts, len(ranked) + 1)):
        start = time.perf_counter()
        layers = ranked[:k]
        model = quantize([name for layer in layers for name in layer.float_ops])
        acc = accuracy(model)
        attempt = Attempt([layer.layer for layer in layers], round(acc, 5), round((float_accuracy - acc) * 100, 3),
                          round(latency(model), 4) if latency else None, 0.0)
        attempt.seconds = round(time.perf_counter() - start, 3)
        result.attempts.append(attempt)
        if on_attempt:
            on_attempt(attempt)
        if attempt.drop_points <= max_drop:
            result.model = model
            break
    return result


def node_data(ranked: Sequence[LayerError], name: str) -> dict:
    """Model Explorer node data (its ``GraphNodeData`` JSON) of the per-layer error: one
    value per op output of the float file, coloured from green (rounding only) to red.

    Load it with the float ``.tflite`` in Model Explorer ("Add per-node data").
    """
    results = {tensor: {"value": layer.rmse_scale} for layer in ranked for tensor in layer.float_ops}
    return {"name": name, "results": results,
            "gradient": [{"stop": 0, "bgColor": "#a5d6a7"}, {"stop": 0.5, "bgColor": "#fff59d"},
                         {"stop": 1, "bgColor": "#ef9a9a"}]}


def host_latency_ms(model: bytes, sample: np.ndarray) -> float:
    """Median latency (ms) of ``model``, 1 thread, 50 runs: what keeping layers float costs,
    measured the way the report's latency column is."""
    from edgecnn.runtime.interpreter import host_latency

    return host_latency(model, sample)["p50"]
