"""The accuracy gate on a real student built to quantize badly: does it meet the budget, with
int8 I/O, and how long does it take after the first calibration?

    python tools/bench_gate.py [--run runs/quickstart] [--recipe recipes/quickstart.yaml]
                               [--max-drop 0.3] [--layer block_16_project] [--out DIR]

Takes the trained student of a build (``--run``; built first with ``edgecnn build --recipe``
when the folder has no ``student.keras``, through the shared stage cache), and makes one
layer quantize badly the way outlier-heavy models do: one input channel of ``--layer`` (a
1x1 convolution) is made dead (its depthwise channel zeroed and its BatchNorm shift set to
-10, so ReLU6 gives 0), and the layer reads that channel with weight 1000. The float model
computes what it did without the channel; the int8 model's per-channel weight scales are set
by the 1000, so the layer's real weights round to 0. Then it converts the model to float32
and full int8 (the converter, as the quantize stage does) and runs the gate exactly as the
``gate`` stage does: rank (QuantizationDebugger), calibrate (litert-quantizer, min/max),
search with ``--max-drop`` on the validation split. Prints each step's wall time, every
attempt, the kept layers, the I/O types, and test accuracy of the float, int8 and gated
files; writes ``bench_gate.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _break_layer(model, layer: str) -> int:
    """Make ``layer`` (a 1x1 Conv2D after a depthwise block) read a dead channel with weight 1000."""
    conv = model.get_layer(layer)
    block = layer.rsplit("_", 1)[0]  # block_16_project -> block_16
    depthwise, bn = model.get_layer(f"{block}_depthwise"), model.get_layer(f"{block}_depthwise_BN")
    channel = 0
    (kernel,) = depthwise.get_weights()
    kernel[..., channel, :] = 0.0
    depthwise.set_weights([kernel])
    gamma, beta, mean, var = bn.get_weights()
    beta[channel], mean[channel] = -10.0, 0.0
    bn.set_weights([gamma, beta, mean, var])
    weights = conv.get_weights()
    weights[0][..., channel, :] = 1000.0
    conv.set_weights(weights)
    return channel


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "quickstart")
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "quickstart.yaml")
    parser.add_argument("--max-drop", type=float, default=0.3)
    parser.add_argument("--attempts", type=int, default=8)
    parser.add_argument("--layer", default="block_16_project")
    parser.add_argument("--out", type=Path, default=ROOT / "bench_out")
    args = parser.parse_args(argv)

    from _built_student import built_student

    built = built_student(args.run, args.recipe)
    from edgecnn.export import gate, requantize
    from edgecnn.export.formats import get_format
    from edgecnn.export.tflite import convert, inference_model
    from edgecnn.runtime.interpreter import make_interpreter, predict
    from edgecnn.stages.common import load_model
    from edgecnn.tflite.reader import inspect_tflite

    ds, calibration = built.dataset, built.calibration
    x_val, y_val = ds.normalization.apply(ds.x_val), ds.y_val
    x_test, y_test = ds.normalization.apply(ds.x_test), ds.y_test

    def accuracy(model, x, y) -> float:
        return float(np.mean(predict(make_interpreter(model, threads=1), x).argmax(-1) == y))

    student = load_model(args.run / "student.keras")
    channel = _break_layer(student, args.layer)
    model = inference_model(student)
    figures: dict = {"layer": args.layer, "dead_channel": channel, "max_drop": args.max_drop,
                     "validation_images": int(len(y_val)), "test_images": int(len(y_test))}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        float_path = convert(model, get_format("float32"), Path(tmp) / "float32.tflite")
        int8_path = convert(model, get_format("int8"), Path(tmp) / "int8.tflite", calibration, "int8")
        figures["convert_s"] = round(time.perf_counter() - t, 2)
        float_val, int8_val = accuracy(float_path, x_val, y_val), accuracy(int8_path, x_val, y_val)
        figures.update(float_val=float_val, int8_val=int8_val, int8_drop_points=round((float_val - int8_val) * 100, 2))
        print(f"float32 {float_val:.2%}, converter int8 {int8_val:.2%} on {len(y_val)} validation images "
              f"({figures['int8_drop_points']:+.2f} points); conversions {figures['convert_s']} s")
        t = time.perf_counter()
        described = requantize.describe(float_path)
        ranked = gate.rank_layers(model, calibration, described.op_outputs)
        figures["rank_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        ranges = requantize.calibrate(described, calibration)
        figures["calibrate_s"] = round(time.perf_counter() - t, 2)
        print(f"ranking (QuantizationDebugger) {figures['rank_s']} s, worst: "
              + ", ".join(f"{e.layer} {e.rmse_scale:.2f}" for e in ranked[:4])
              + f"; calibration (litert-quantizer, min/max) {figures['calibrate_s']} s")
        t = time.perf_counter()
        result = gate.search(lambda names: requantize.quantize_int8(described, ranges, names), ranked,
                             lambda m: accuracy(m, x_val, y_val), float_val, args.max_drop, args.attempts,
                             latency=lambda m: gate.host_latency_ms(m, x_val),
                             on_attempt=lambda a: print(f"  float [{', '.join(a.keep_float)}]: {a.accuracy:.2%} "
                                                        f"({a.drop_points:+.2f} points), {a.latency_ms:.3f} ms, "
                                                        f"{a.seconds:.2f} s"))
        figures["search_s"] = round(time.perf_counter() - t, 2)
        figures["attempts"] = result.to_dict()
        figures["ranking"] = [{"layer": e.layer, "rmse_scale": e.rmse_scale} for e in ranked[:10]]
        figures["test_accuracy"] = {"float32": accuracy(float_path, x_test, y_test),
                                    "int8": accuracy(int8_path, x_test, y_test)}
        if result.model is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            gated = args.out / "bench_gate_gated.tflite"  # kept: tools/bench_quantize_paths.py --extra
            gated.write_bytes(result.model)
            summary = inspect_tflite(gated)
            figures["gated_io"] = [summary.inputs[0].dtype, summary.outputs[0].dtype]
            figures["kept_float"] = result.kept_float
            figures["test_accuracy"]["gated"] = accuracy(gated, x_test, y_test)
    met = result.model is not None
    print(f"budget {args.max_drop} points {'met' if met else 'NOT met'}"
          + (f" keeping {', '.join(result.kept_float)} float, I/O {'/'.join(figures['gated_io'])}" if met else "")
          + f"; search after the first calibration: {figures['search_s']} s "
            f"(ranking + calibration + search: {figures['rank_s'] + figures['calibrate_s'] + figures['search_s']:.2f} s)")
    print("test accuracy: " + ", ".join(f"{k} {v:.2%}" for k, v in figures["test_accuracy"].items())
          + f" on {len(y_test)} images")
    args.out.mkdir(parents=True, exist_ok=True)
    from edgecnn.fileio import write_json_atomic

    write_json_atomic(args.out / "bench_gate.json", figures)
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
