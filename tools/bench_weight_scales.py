"""Per-channel against per-tensor int8 weight scales (``quantize.weights``) on a built run.

    python tools/bench_weight_scales.py                      # runs/fashion_mnist_prune_qat (built first if absent)
    python tools/bench_weight_scales.py --run bench_out/compression/runs/pqat \\
        --recipe bench_out/compression/recipes/pqat.yaml --out bench_out/weight_scales

For the student and (when the run has one) the pruned model, each post-training int8 file is
written both ways by edgecnn's own converter call (:func:`edgecnn.export.tflite.convert_int8`
of ``inference_model``, the quantize stage's calibration images), then measured: size, gzip -9
and its ratio to the unpruned student's float32 file (issue 18's "pruned int8 + gzip <= 0.20x"),
accuracy on every test image and top-1 agreement with the model's float32 file on
ai-edge-litert, host latency (1 thread, median of 50), the scales read back from the file, and,
when the x86 tflite-runtime 2.14 environment of ``tools/tflite_runtime_x86.sh`` exists, the
worst output deviation (int8 steps) and top-1 agreement of tflite-runtime 2.14 against
ai-edge-litert on the first 500 test images.

Output: a table on stdout, ``OUT/weight_scales.json`` and ``OUT/weight_scales.md``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def measure(path: Path, float_size: int, x_test, y_test, reference_top1, old_python: str | None) -> dict:
    from bench_quantize_paths import old_runtime_check

    from edgecnn.runtime.interpreter import host_latency, predict_classes
    from edgecnn.tflite.reader import sparsity_summary, weight_sparsity

    data = path.read_bytes()
    gz = len(gzip.compress(data, compresslevel=9, mtime=0))
    top1 = predict_classes(path, x_test, num_threads=2)
    summary = sparsity_summary(weight_sparsity(path), 0.3)
    row = {"size_bytes": len(data), "gzip_bytes": gz, "gzip_over_float32": round(gz / float_size, 4),
           "accuracy": round(float(np.mean(top1 == y_test)), 5),
           "top1_agreement_with_float": round(float(np.mean(top1 == reference_top1)), 5),
           "latency_ms_p50": round(host_latency(path, x_test)["p50"], 4),
           "per_channel_tensors": summary["per_channel_tensors"], "per_tensor_tensors": summary["per_tensor_tensors"],
           "weight_sparsity": summary["sparsity"]}
    if old_python:
        row["tflite_runtime_2_14"] = old_runtime_check(path, x_test[:500], old_python)
    return row


def render(report: dict) -> str:
    lines = [f"# int8 weight scales: per channel against per tensor ({report['run']}, {report['test_images']} test images)",
             "", "| model | weights | size | gzip | gzip / float32 | accuracy | agreement with float | "
             "latency p50 ms | tflite-runtime 2.14 worst steps / top-1 |", "|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        old = row.get("tflite_runtime_2_14") or {}
        old_text = f"{old['worst_deviation']:.0f} / {old['top1_agreement']:.3f}" if old.get("loads") else \
            (old.get("error") or "not run")
        lines.append(f"| {row['model']} | {row['weights']} | {row['size_bytes']:,} | {row['gzip_bytes']:,} | "
                     f"{row['gzip_over_float32']:.3f} | {row['accuracy']:.2%} | {row['top1_agreement_with_float']:.4f} | "
                     f"{row['latency_ms_p50']:.3f} | {old_text} |")
    lines += ["", f"float32 reference: `{report['float32']}`, {report['float32_bytes']:,} bytes. "
                  f"Command: `python tools/{report['command']}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "fashion_mnist_prune_qat")
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "fashion_mnist_prune_qat.yaml")
    parser.add_argument("--old-python", default=str(Path.home() / ".cache/edgecnn/x86-tflite-runtime/venv/bin/python"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench_out" / "weight_scales")
    args = parser.parse_args(argv)

    from _built_student import built_student

    from edgecnn.export.formats import get_format
    from edgecnn.export.tflite import convert, convert_int8, inference_model
    from edgecnn.fileio import make_dirs, write_json_atomic, write_text_atomic
    from edgecnn.runtime.interpreter import predict_classes
    from edgecnn.stages.common import load_model

    built = built_student(args.run, args.recipe)
    ds = built.dataset
    x_test, y_test = ds.normalization.apply(ds.x_test), np.asarray(ds.y_test).reshape(-1)
    old_python = args.old_python if Path(args.old_python).is_file() else None
    make_dirs(args.out)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        float_files = {}
        for name in ("student", "pruned"):
            if not (args.run / f"{name}.keras").is_file():
                continue
            model = inference_model(load_model(args.run / f"{name}.keras", name))
            float_files[name] = args.run / f"{name}_float32.tflite"
            if not float_files[name].is_file():
                float_files[name] = convert(model, get_format("float32"), work / f"{name}_float32.tflite")
            reference = predict_classes(float_files[name], x_test, num_threads=2)
            for weights in ("per_channel", "per_tensor"):
                path = convert_int8(model, built.calibration, built.recipe.quantize.io_dtype,
                                    work / f"{name}_int8_{weights}.tflite", per_channel=weights == "per_channel")
                row = {"model": name, "weights": weights,
                       **measure(path, float_files["student"].stat().st_size, x_test, y_test, reference, old_python)}
                print(json.dumps(row), flush=True)
                rows.append(row)
        report = {"run": str(args.run), "recipe": str(args.recipe), "test_images": int(len(y_test)),
                  "float32": str(float_files["student"].relative_to(args.run) if float_files["student"].is_relative_to(args.run)
                                 else "student.keras, converted"),
                  "float32_bytes": float_files["student"].stat().st_size,
                  "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                  "rows": rows}
    write_json_atomic(args.out / "weight_scales.json", report)
    text = render(report)
    write_text_atomic(args.out / "weight_scales.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
