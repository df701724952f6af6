"""Local harness vs LiteRT's own benchmark tool: median latency, side by side, one run.

    python tools/bench_local_vs_litert.py [MODEL.tflite] [--threads 1] [--runs 200]
        [--warmup 20] [--rounds 3] [--size 224]

Without MODEL, a MobileNetV2 (alpha 0.35, random weights, 10 classes) is converted to a
full-integer int8 ``.tflite`` in /tmp (weights do not change latency). The two tools are
alternated ``--rounds`` times on the same model and thread count so that background load
affects both alike:

* the harness: ``edgecnn.bench.local.run_local`` (runner.py in a child process,
  ``ai_edge_litert.interpreter.Interpreter``, perf_counter around ``invoke()``);
* the reference: ``ai_edge_litert/tools/benchmark_litert_model.py`` from the installed
  wheel (LiteRT ``CompiledModel`` API, CPU accelerator), its ``median_ms`` from
  ``--result_json``.

Target (issue #3): the harness's median within 5 % of the reference's. Prints each
round, both medians (median over rounds) and the ratio; exit status 1 when outside 5 %.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgecnn.bench.local import run_local  # noqa: E402
from edgecnn.targets import parse_target  # noqa: E402


def build_mobilenet_v2(path: Path, size: int) -> Path:
    """Convert a MobileNetV2-0.35 (random weights) to int8 TFLite at ``path``."""
    import warnings

    from edgecnn._tf import keras, native_stderr_silenced, tensorflow

    tf, k = tensorflow(), keras()
    k.utils.set_random_seed(0)
    model = k.applications.MobileNetV2(input_shape=(size, size, 3), alpha=0.35, weights=None, classes=10)
    rng = np.random.RandomState(0)
    calibration = rng.rand(16, size, size, 3).astype(np.float32) * 2 - 1
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([calibration[i:i + 1]] for i in range(len(calibration)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with warnings.catch_warnings(), native_stderr_silenced():
        warnings.simplefilter("ignore")
        path.write_bytes(conv.convert())
    return path


def litert_tool() -> Path:
    import ai_edge_litert

    tool = Path(ai_edge_litert.__file__).parent / "tools" / "benchmark_litert_model.py"
    if not tool.is_file():
        sys.exit(f"{tool} is missing; this ai-edge-litert wheel does not ship the benchmark tool")
    return tool


def run_reference(tool: Path, model: Path, threads: int, runs: int, warmup: int) -> float:
    """Median latency (ms) reported by LiteRT's benchmark tool."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        proc = subprocess.run([sys.executable, str(tool), f"--model={model}", f"--num_threads={threads}",
                               f"--num_runs={runs}", f"--warmup_runs={warmup}", f"--result_json={out}"],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not out.is_file():
            sys.exit(f"benchmark_litert_model failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        return float(json.loads(out.read_text())["latency"]["median_ms"])


def run_harness(model: Path, threads: int, runs: int, warmup: int) -> float:
    result = run_local(model, parse_target("local"), threads=threads, runs=runs, warmup=warmup, timeout_s=600)
    if result["status"] != "ok":
        sys.exit(f"harness failed: {result['reason']}")
    return float(result["latency_ms"]["p50"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="a .tflite (default: build MobileNetV2-0.35 int8 in /tmp)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=224, help="input size of the built model")
    args = parser.parse_args()

    if args.model:
        model = Path(args.model)
    else:
        model = Path(tempfile.gettempdir()) / f"mobilenet_v2_035_{args.size}_int8.tflite"
        if not model.is_file():
            print(f"building {model} ...", flush=True)
            build_mobilenet_v2(model, args.size)
    tool = litert_tool()
    print(f"model {model} ({model.stat().st_size / 1024:.0f} KiB), threads {args.threads}, "
          f"{args.runs} runs + {args.warmup} warm-up per measurement, {args.rounds} rounds")

    harness, reference = [], []
    for i in range(args.rounds):
        # Alternate which goes first so a trend in background load does not favour one.
        order = ("harness", "reference") if i % 2 == 0 else ("reference", "harness")
        for which in order:
            if which == "harness":
                harness.append(run_harness(model, args.threads, args.runs, args.warmup))
            else:
                reference.append(run_reference(tool, model, args.threads, args.runs, args.warmup))
        print(f"round {i + 1}: harness p50 {harness[-1]:.3f} ms, benchmark_litert_model median "
              f"{reference[-1]:.3f} ms, ratio {harness[-1] / reference[-1]:.3f}", flush=True)

    h, r = statistics.median(harness), statistics.median(reference)
    ratio = h / r
    ok = abs(ratio - 1) <= 0.05
    print(f"median over rounds: harness {h:.3f} ms, benchmark_litert_model {r:.3f} ms, "
          f"ratio {ratio:.3f} ({'within' if ok else 'OUTSIDE'} 5 %)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
