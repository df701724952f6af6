"""Which tool should write the default int8 file: TensorFlow's converter (from the Keras
model) or litert-quantizer (from the float32 file)? Time, accuracy, and whether each file
runs on tflite-runtime 2.14, the runtime older devices use.

    python tools/bench_quantize_paths.py [--run runs/quickstart] [--recipe recipes/quickstart.yaml]
        [--old-python ~/.cache/edgecnn/x86-tflite-runtime/venv/bin/python] [--extra FILE ...]

``--run`` is a finished build with ``student.keras`` and ``student_float32.tflite`` (built
with ``--recipe`` through the stage cache when missing). Both int8 files are made from the
same calibration images the quantize stage uses and timed whole (the converter: load the
Keras model and convert; the quantizer: read the float file, calibrate with min/max,
quantize). Each is evaluated on the test split with ai-edge-litert, and, with
``--old-python`` (a Python that has tflite-runtime 2.14: ``bash tools/tflite_runtime_x86.sh
build``), run on the first 500 test images there too: the worst output deviation from
ai-edge-litert in quantization steps and the top-1 agreement. ``--extra`` files (gated,
mixed, int4 files of a build) get the same old-runtime check. Edge TPU compilation needs
``edgetpu_compiler``, which is only checked when it is on PATH.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Runs inside the old runtime's own Python (numpy<2, tflite_runtime): raw outputs per image.
_OLD_RUNTIME = r"""
import sys, numpy as np
from tflite_runtime.interpreter import Interpreter
model, inputs, out = sys.argv[1:4]
x = np.load(inputs)
it = Interpreter(model_path=model, num_threads=1)
it.allocate_tensors()
i, o = it.get_input_details()[0], it.get_output_details()[0]
rows = []
for sample in x:
    it.set_tensor(i["index"], sample[None].astype(i["dtype"]))
    it.invoke()
    rows.append(it.get_tensor(o["index"])[0])
np.save(out, np.stack(rows))
"""


def _raw_outputs_litert(model: Path, x_raw: np.ndarray) -> np.ndarray:
    from edgecnn.runtime.interpreter import make_interpreter

    it = make_interpreter(model, threads=1)
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    rows = []
    for sample in x_raw:
        it.set_tensor(i["index"], sample[None].astype(i["dtype"]))
        it.invoke()
        rows.append(it.get_tensor(o["index"])[0])
    return np.stack(rows)


def old_runtime_check(model: Path, x_float: np.ndarray, python: str) -> dict:
    """Outputs of ``model`` on tflite-runtime 2.14 against ai-edge-litert's, same raw inputs."""
    from edgecnn.runtime.interpreter import input_specs, make_interpreter, output_specs, quantize_input

    it = make_interpreter(model, threads=1)
    spec, out_spec = input_specs(it)[0], output_specs(it)[0]
    x_raw = quantize_input(x_float, spec)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", x_raw)
        proc = subprocess.run([python, "-c", _OLD_RUNTIME, str(model), str(Path(tmp) / "x.npy"),
                               str(Path(tmp) / "y.npy")], capture_output=True, text=True)
        if proc.returncode != 0:
            return {"loads": False, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
        old = np.load(Path(tmp) / "y.npy")
    new = _raw_outputs_litert(model, x_raw)
    diff = np.abs(old.astype(np.float64) - new.astype(np.float64))
    steps = diff if out_spec.is_quantized else diff / max(float(np.abs(new).max()), 1e-12)
    return {"loads": True, "worst_deviation": float(steps.max()),
            "unit": "quantization steps" if out_spec.is_quantized else "relative",
            "top1_agreement": float(np.mean(old.argmax(-1) == new.argmax(-1)))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "quickstart")
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "quickstart.yaml")
    parser.add_argument("--old-python", default=str(Path.home() / ".cache/edgecnn/x86-tflite-runtime/venv/bin/python"))
    parser.add_argument("--extra", type=Path, nargs="*", default=[])
    parser.add_argument("--out", type=Path, default=ROOT / "bench_out")
    args = parser.parse_args(argv)
    from _built_student import built_student

    built = built_student(args.run, args.recipe)
    from edgecnn.export import requantize
    from edgecnn.export.tflite import convert_int8, inference_model
    from edgecnn.runtime.interpreter import make_interpreter, predict
    from edgecnn.stages.common import load_model

    ds, calibration = built.dataset, built.calibration
    x_test, y_test = ds.normalization.apply(ds.x_test), ds.y_test
    float_path = args.run / "student_float32.tflite"
    old_python = args.old_python if Path(args.old_python).is_file() else None

    def top1(model):
        return predict(make_interpreter(model, threads=1), x_test).argmax(-1)

    reference = top1(float_path)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"converter": Path(tmp) / "converter_int8.tflite", "litert-quantizer": Path(tmp) / "quantizer_int8.tflite"}
        t = time.perf_counter()
        convert_int8(inference_model(load_model(args.run / "student.keras")), calibration, "int8", files["converter"])
        times = {"converter": time.perf_counter() - t}
        t = time.perf_counter()
        described = requantize.describe(float_path)
        files["litert-quantizer"].write_bytes(requantize.quantize_int8(described, requantize.calibrate(described, calibration)))
        times["litert-quantizer"] = time.perf_counter() - t
        for name, path in list(files.items()) + [(p.name, p) for p in args.extra]:
            predicted = top1(path)
            row = {"seconds": round(times[name], 2) if name in times else None, "bytes": path.stat().st_size,
                   "accuracy": float(np.mean(predicted == y_test)),
                   "agreement_with_float": float(np.mean(predicted == reference))}
            if old_python:
                row["tflite_runtime_2.14"] = old_runtime_check(path, x_test[:500], old_python)
            rows[name] = row
            old = row.get("tflite_runtime_2.14", {})
            print(f"{name:>28}: {row['seconds'] if row['seconds'] is not None else '-':>6} s  "
                  f"{row['bytes']:>8} bytes  test {row['accuracy']:.2%}  agreement with float "
                  f"{row['agreement_with_float']:.2%}  tflite-runtime 2.14: "
                  + ("not checked" if not old_python else
                     f"loads, worst {old['worst_deviation']:.3g} {old['unit']}, top-1 agreement "
                     f"{old['top1_agreement']:.2%}" if old.get("loads") else f"FAILS: {old.get('error')}"))
        compiler = shutil.which("edgetpu_compiler")
        print("Edge TPU compiler: " + ("on PATH (compile by hand: edgetpu_compiler FILE)" if compiler
                                       else "not on PATH here: compilation not checked"))
    args.out.mkdir(parents=True, exist_ok=True)
    from edgecnn.fileio import write_json_atomic

    write_json_atomic(args.out / "bench_quantize_paths.json", {"float_accuracy": float(np.mean(reference == y_test)),
                                                               "test_images": int(len(y_test)), "files": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
