"""Host latency of channel pruning: an int8 MobileNetV2 against its channel-pruned copy.

    python tools/bench_channels.py [--alpha 0.35] [--size 32] [--ratio 0.5] [--output-stride 32]
                                   [--runs 300] [--model runs/x/student.keras]

Builds the student (untrained unless ``--model`` gives a trained ``.keras``), removes
``--ratio`` of the channels of every channel group
(:func:`edgecnn.compress.channels.prune_channels`: the default, residual chains included),
converts each variant to full-int8 TFLite and times them on ai-edge-litert with 1 thread:
``--runs`` invokes each after a warm-up, in alternating rounds of 25 so that load on the
machine hits all alike. Prints the median and p90 of each and the speed-up. Variants:
``channels`` (every group, the default), ``free widths`` (``prune.residual: false``: no
residual chain), ``expansions only`` (free widths without the head). Latency does not depend on the weights' values, so an untrained model
measures the same as a trained one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _interpreter(path: Path):
    from edgecnn.runtime.interpreter import make_interpreter

    interpreter = make_interpreter(path, threads=1)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    return interpreter


def _time(interpreters: dict, runs: int, round_size: int = 25) -> dict[str, np.ndarray]:
    for interpreter in interpreters.values():
        for _ in range(20):
            interpreter.invoke()
    times = {name: [] for name in interpreters}
    for _ in range(max(1, runs // round_size)):
        for name, interpreter in interpreters.items():
            for _ in range(round_size):
                start = time.perf_counter()
                interpreter.invoke()
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: np.asarray(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=0.35)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--output-stride", type=int, default=32, choices=(8, 16, 32))
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--model", type=Path, help="a trained .keras student instead of an untrained one")
    args = parser.parse_args()

    from edgecnn.compress.channels import find_channel_groups, prune_channels
    from edgecnn.export.tflite import convert_int8, inference_model
    from edgecnn.tflite.reader import count_macs

    if args.model:
        from edgecnn.models.loading import load_keras_model

        model = load_keras_model(args.model, "--model")
    else:
        from edgecnn.models import create_student
        from edgecnn.recipe import StudentConfig

        model = create_student("mobilenet_v2", (args.size, args.size, 3), 10,
                               StudentConfig(alpha=args.alpha, output_stride=args.output_stride))
    slim, widths = prune_channels(model, args.ratio)
    free = find_channel_groups(model, residual=False)
    free_only, _ = prune_channels(model, args.ratio, groups=free)
    expansion_only, _ = prune_channels(model, args.ratio, groups=[g for g in free if g.producer != "Conv_1"])
    calibration = np.random.default_rng(0).uniform(-1, 1, (32, *model.input_shape[1:])).astype(np.float32)
    work = Path(tempfile.mkdtemp(prefix="bench-channels-"))
    paths = {}
    for name, m in (("unpruned", model), ("channels", slim), ("free widths", free_only), ("expansions only", expansion_only)):
        paths[name] = convert_int8(inference_model(m), calibration, "int8", work / f"{name.replace(' ', '_')}.tflite")
        print(f"{name:>15}: {m.count_params():>9,} parameters, {count_macs(paths[name]):>11,} MACs, "
              f"int8 file {paths[name].stat().st_size:>9,} bytes")
    times = _time({name: _interpreter(p) for name, p in paths.items()}, args.runs)
    base = float(np.median(times["unpruned"]))
    print(f"\nMobileNetV2-{args.alpha:g} {args.size}x{args.size} (output stride {args.output_stride}), int8, "
          f"ai-edge-litert, 1 thread, {len(times['unpruned'])} runs each; ratio {args.ratio:g}, "
          f"{len(widths)} layers pruned")
    for name, t in times.items():
        print(f"{name:>15}: median {np.median(t):.4f} ms, p90 {np.percentile(t, 90):.4f} ms, "
              f"speed-up {base / np.median(t):.2f}x")


if __name__ == "__main__":
    main()
