"""The ``gate`` stage (``quantize.max_drop``): int8 models within an accuracy budget.

For each post-training int8 file (the student's, the pruned model's; quantization-aware
models are int8 by training and are not gated): measure it and its float32 source on the
validation split. Within budget: nothing to do, recorded. Otherwise rank the layers by
isolated quantization error, keep the worst in float one more at a time with
litert-quantizer until the budget is met (``<model>_int8_gated.tflite``, int8 I/O), or fail
with one line listing every attempt. The ranking is also written as Model Explorer node
data (``<model>_int8_layer_error.json``). See :mod:`edgecnn.export.gate`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from edgecnn.artifacts import Artifact
from edgecnn.stage import StageResult
from edgecnn.stages.common import (add_metadata, calibration_images, deployable_models, float32_file, format_artifact,
                                   model_to_convert)

if TYPE_CHECKING:
    from edgecnn.recipe import Recipe
    from edgecnn.stage import BuildContext

LAYER_ERROR_ROLE = "report.layer_error"


def check_gate(recipe: "Recipe") -> None:
    """Before training: the gate's tool is installed."""
    from edgecnn.export.requantize import require

    require("quantize.max_drop (the accuracy gate)")


def gate_environment(recipe: "Recipe") -> dict[str, str]:
    """The quantizer's version shapes the gated files: a new one re-runs the gate."""
    from edgecnn.export.requantize import version

    return {"litert-quantizer": version()}


def _accuracy(model, x, y) -> float:
    """Top-1 accuracy of a model (file or bytes) on one thread, as the gate measures candidates."""
    import numpy as np

    from edgecnn.runtime.interpreter import predict_classes

    return float(np.mean(predict_classes(model, x, num_threads=1) == y))


def run_gate(recipe: "Recipe", ctx: "BuildContext") -> StageResult:
    """Gate every post-training int8 model; write the gated files and the layer errors."""
    import numpy as np

    from edgecnn.errors import RecipeError
    from edgecnn.export import gate, requantize
    from edgecnn.export.formats import GATED_FORMAT, get_format
    from edgecnn.fileio import write_bytes_atomic, write_json_atomic

    cfg = recipe.quantize
    per_channel = cfg.per_channel  # the gated file keeps the int8 file's weight scales
    ds = ctx.dataset
    x_val, y_val = ds.normalization.apply(ds.x_val), np.asarray(ds.y_val).reshape(-1)
    calibration = calibration_images(recipe, ctx)
    int8 = get_format("int8")
    produced, records = [], []
    resolution = 100 / max(1, len(y_val))  # points one validation image is worth
    if cfg.max_drop < resolution:
        ctx.progress.line(f"    note: one of the {len(y_val)} validation images is {resolution:.2f} points, more than "
                          f"quantize.max_drop {cfg.max_drop:g}: the gate decides on one or two images; hold out more "
                          f"(data.validation_fraction) for a budget this fine")
    for source in deployable_models(ctx, quantization_aware=False):
        quantized = ctx.artifacts.get(int8.role_for(source.name))
        if quantized is None:
            continue
        record: dict = {"model": quantized.path.name, "source": source.role, "max_drop_points": cfg.max_drop,
                        "validation_images": int(len(y_val))}
        with tempfile.TemporaryDirectory(prefix=".gate-", dir=ctx.out_dir) as tmp:
            float_path, exported = float32_file(ctx, source, Path(tmp))
            float_acc = _accuracy(float_path, x_val, y_val)
            int8_acc = _accuracy(quantized.path, x_val, y_val)
            drop = round((float_acc - int8_acc) * 100, 3)
            record.update(float_accuracy=round(float_acc, 5), int8_accuracy=round(int8_acc, 5), int8_drop_points=drop)
            ctx.progress.line(f"    {quantized.path.name}: {int8_acc:.2%} on {len(y_val)} validation images, drop "
                              f"{drop:+.2f} points against {float_path.name if exported else 'its float model'} "
                              f"({float_acc:.2%}); budget {cfg.max_drop:g}")
            if drop <= cfg.max_drop:
                record.update(passed=True, gated_model=None, kept_float=[], attempts=[])
                records.append(record)
                continue
            start = time.perf_counter()
            keras_model, _ = model_to_convert(ctx, source)  # the debugger converts it again to rank layers
            described = requantize.describe(float_path)
            ranked = gate.rank_layers(keras_model, calibration, described.op_outputs, per_channel)
            ranges = requantize.calibrate(described, calibration)
            prepared = time.perf_counter()
            ctx.progress.line(f"    ranked {len(ranked)} layers by isolated int8 error and calibrated "
                              f"in {prepared - start:.1f} s; worst: "
                              + ", ".join(f"{e.layer} {e.rmse_scale:.2f}" for e in ranked[:3]))
            on_attempt = lambda a: ctx.progress.line(  # noqa: E731
                f"    float {', '.join(a.keep_float) or 'none'}: {a.accuracy:.2%} ({a.drop_points:+.2f} points)")
            result = gate.search(lambda names: requantize.quantize_int8(described, ranges, names, per_channel=per_channel),
                                 ranked,
                                 lambda m: _accuracy(m, x_val, y_val), float_acc, cfg.max_drop, cfg.gate_attempts,
                                 latency=lambda m: gate.host_latency_ms(m, x_val), on_attempt=on_attempt)
            search_s = round(time.perf_counter() - prepared, 3)
        node_data = write_json_atomic(ctx.path(f"{source.name}_int8_layer_error.json"),
                                      gate.node_data(ranked, f"int8 error (RMSE/scale) of {quantized.path.name}"))
        produced.append(Artifact(f"{LAYER_ERROR_ROLE}.{source.name}", "json", node_data, source=source.role))
        record.update(ranking=[{"layer": e.layer, "op": e.op, "rmse_scale": e.rmse_scale} for e in ranked],
                      attempts=result.to_dict(), search_s=search_s, prepare_s=round(prepared - start, 3),
                      node_data=node_data.name)
        if result.model is None:
            tried = "; ".join(f"float [{', '.join(a.keep_float)}] -> {a.drop_points:+.2f}" for a in result.attempts)
            raise RecipeError(f"quantize.max_drop {cfg.max_drop:g}: no int8 variant of {quantized.path.name} stays "
                              f"within budget on {len(y_val)} validation images (full int8 {drop:+.2f} points; tried {tried}); "
                              f"raise max_drop or quantize.gate_attempts, train the float model longer, or add a qat "
                              f"section; per-layer errors: {node_data.name}")
        path = write_bytes_atomic(ctx.path(GATED_FORMAT.filename_for(source.name)), result.model)
        add_metadata(path, recipe, ctx)
        produced.append(format_artifact(GATED_FORMAT, path, source))
        base = result.attempts[0].latency_ms
        costs = [{"layer": layer, "latency_ms_added": round(a.latency_ms - prev.latency_ms, 4)}
                 for prev, a in zip(result.attempts, result.attempts[1:]) for layer in a.keep_float[len(prev.keep_float):]]
        record.update(passed=True, gated_model=path.name, kept_float=result.kept_float, float_layer_costs=costs,
                      latency_ms_full_int8=base, latency_ms_gated=result.attempts[-1].latency_ms)
        records.append(record)
    return StageResult(produced, {"models": records})
