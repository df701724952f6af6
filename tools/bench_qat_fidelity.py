"""How closely a QAT build's int8 file follows the quantization-aware Keras model it came from.

    python tools/bench_qat_fidelity.py bench_out/compression_teacher18/runs/qat bench_out/seed1/runs/qat \\
        --recipe recipes/fashion_mnist_qat.yaml --out bench_out/qat_fidelity

Issue 18 asks that a QAT model's int8 file stay within 0.1 points of its float model. For each
run folder (an ``edgecnn build`` with a ``qat`` stage: ``qat.keras`` and ``qat_int8.tflite``)
this measures, on every test image: the accuracy of the Keras QAT model (fake-quantized, as it
trained), of its int8 file on ai-edge-litert (edgecnn's own ``predict_classes``), their top-1
agreement, and how many of the images they disagree on are near-ties in the file, where its
two best int8 output scores are at most one quantization step apart (a softmax quantized to
1/256 cannot order them; such flips go either way). The recipe gives the test images and their
normalization only, which do not depend on the seed. Output: a table on stdout,
``OUT/qat_fidelity.json`` and ``OUT/qat_fidelity.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(run: Path, x_test: np.ndarray, y_test: np.ndarray) -> dict:
    from edgecnn.runtime.interpreter import make_interpreter, output_specs, predict
    from edgecnn.stages.common import load_model

    keras_top1 = load_model(run / "qat.keras", "qat.keras").predict(x_test, batch_size=256, verbose=0).argmax(-1)
    interpreter = make_interpreter(run / "qat_int8.tflite", threads=2)
    step = output_specs(interpreter)[0].scale  # one int8 step of the (dequantized) scores
    scores = predict(interpreter, x_test, batch_size=64).reshape(len(x_test), -1)
    int8_top1 = scores.argmax(-1)
    top2 = np.sort(scores, axis=-1)[:, -2:]
    near_tie = (top2[:, 1] - top2[:, 0]) <= step * 1.001
    differ = keras_top1 != int8_top1
    return {"run": str(run), "keras_accuracy": round(float((keras_top1 == y_test).mean()), 5),
            "int8_accuracy": round(float((int8_top1 == y_test).mean()), 5),
            "drop_points": round(100 * float((keras_top1 == y_test).mean() - (int8_top1 == y_test).mean()), 2),
            "top1_agreement": round(float(1 - differ.mean()), 5), "disagreements": int(differ.sum()),
            "disagreements_at_near_ties": int((differ & near_tie).sum())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="build folders with qat.keras and qat_int8.tflite")
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "fashion_mnist_qat.yaml",
                        help="the recipe the runs share (for the test images and their normalization)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench_out" / "qat_fidelity")
    args = parser.parse_args(argv)
    for run in args.runs:  # before the data loads
        for name in ("qat.keras", "qat_int8.tflite"):
            if not (run / name).is_file():
                raise SystemExit(f"{run / name}: not found; give the folder of a build with a qat stage")

    from edgecnn.data import load_dataset
    from edgecnn.fileio import make_dirs, write_json_atomic, write_text_atomic
    from edgecnn.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    ds = load_dataset(recipe.data, recipe.seed)
    x_test, y_test = ds.normalization.apply(ds.x_test), np.asarray(ds.y_test).reshape(-1)
    rows = [measure(run, x_test, y_test) for run in args.runs]
    lines = [f"# QAT: Keras model against its int8 file ({len(y_test)} test images, ai-edge-litert)", "",
             "| run | Keras QAT | int8 | drop (points) | top-1 agreement | disagreements (at near-ties) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| `{r['run']}` | {r['keras_accuracy']:.2%} | {r['int8_accuracy']:.2%} | {r['drop_points']:+.2f} | "
              f"{r['top1_agreement']:.4f} | {r['disagreements']} ({r['disagreements_at_near_ties']}) |" for r in rows]
    text = "\n".join(lines) + "\n"
    make_dirs(args.out)
    write_json_atomic(args.out / "qat_fidelity.json", {"recipe": str(args.recipe), "test_images": int(len(y_test)),
                                                        "rows": rows})
    write_text_atomic(args.out / "qat_fidelity.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
