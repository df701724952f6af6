"""Run the full Fashion-MNIST recipe and check the accuracy/size targets of issue #2.

    python tools/bench_full_recipe.py [--recipe recipes/fashion_mnist_mobilenetv2.yaml] [--out runs/full]

Prints one line per target with the measured figure and PASS/MISS, and writes the same as
JSON to ``<out>/targets.json``. The build is the normal ``edgecnn build`` (cached stages are
re-used, so re-running after a finished build only re-checks the figures).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

TARGETS = {
    "teacher_accuracy": (">=", 0.930),
    "int8_student_accuracy": (">=", 0.925),
    "int8_drop_points": ("<=", 0.5),
    "int8_size_ratio": ("<=", 0.3),
}


def figures(report: dict) -> dict:
    models = {m["name"]: m for m in report["models"]}
    int8, f32 = models["tflite_int8"], models["tflite_float32"]
    return {
        "teacher_accuracy": models["teacher"]["accuracy"],
        "float_student_keras_accuracy": models["student"]["accuracy"],
        "float_student_tflite_accuracy": f32["accuracy"],
        "int8_student_accuracy": int8["accuracy"],
        "int8_drop_points": round((f32["accuracy"] - int8["accuracy"]) * 100, 3),
        "int8_size_ratio": round(int8["size_bytes"] / f32["size_bytes"], 4),
        "int8_size_bytes": int8["size_bytes"],
        "float_size_bytes": f32["size_bytes"],
        "stage_wall_s": {s["stage"]: s["compute_wall_s"] for s in report["stages"]},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/fashion_mnist_mobilenetv2.yaml")
    parser.add_argument("--out", default="runs/full")
    args = parser.parse_args()
    start = time.monotonic()
    edgecnn = Path(sys.executable).with_name("edgecnn")
    subprocess.run([str(edgecnn), "build", args.recipe, "--out", args.out, "--quiet"], check=True)
    report = json.loads((Path(args.out) / "report.json").read_text())
    result = figures(report)
    result["this_invocation_wall_s"] = round(time.monotonic() - start, 1)
    ok = True
    for key, (op, bound) in TARGETS.items():
        value = result[key]
        passed = value >= bound if op == ">=" else value <= bound
        ok &= passed
        print(f"{key:<24} {value:>10}  target {op} {bound}  {'PASS' if passed else 'MISS'}")
    print(json.dumps(result, indent=2))
    (Path(args.out) / "targets.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
