"""edgecnn's compression against plain tfmot driven as its own guides show, on one distilled student.

    python tools/bench_compression.py                       # full Fashion-MNIST (recipes/fashion_mnist_prune_qat.yaml)
    python tools/bench_compression.py --quick               # quickstart data, 1 fine-tune epoch: checks the script
    python tools/bench_compression.py --base R.yaml --epochs 2 --out bench_out/compression

What it measures: for four modes, the test accuracy of the full-int8 ``.tflite`` that
edgecnn builds and of the one plain tensorflow-model-optimization builds from the *same*
distilled student (the ``student`` stage's ``student.keras``), the same training images,
the same fine-tune epochs and batch size, the same calibration images and the same test
images (all 10k on the full data), each file run on ai-edge-litert by edgecnn's own evaluation helper
(:func:`edgecnn.runtime.interpreter.predict_classes`, what the ``evaluate`` stage uses),
plus the zeros read back from each file (:func:`edgecnn.tflite.reader.weight_sparsity`).

Modes:
  prune50  50 % magnitude pruning            (epochs = prune.train.epochs)
  2:4      2:4 structured pruning            (epochs = prune.train.epochs)
  qat      quantization-aware training       (epochs = qat.train.epochs)
  pqat     prune 50 %, then sparsity-preserving QAT (prune + qat epochs)
and a reference row ``ptq``: the student's post-training int8, no fine-tuning, as each arm
converts it (the difference there is the conversion alone).

The edgecnn arm is edgecnn itself: three ``edgecnn build`` runs of recipes generated in
``OUT/recipes/`` that ``extends:`` the base recipe (``pqat``: the base's 50 % prune and
QAT, whose ``pruned_int8.tflite`` is the prune50 row and ``qat_int8.tflite`` the pqat row;
``2by4``: ``prune.m_by_n: [2, 4]``, no QAT; ``qat``: no pruning; all with
``export: {formats: [], bundle: false}``, int8 files only). With the default base, the
``qat`` and ``2by4`` builds extend ``recipes/fashion_mnist_qat.yaml`` and
``recipes/fashion_mnist_2by4.yaml`` instead, the recipes for that mode alone, whose
fine-tune rate was chosen on the validation split (``MODE_RECIPES``); the script checks
that every build fine-tunes with the epochs and batch size the tfmot arm uses. Their data,
teacher and student sections are the base's, so the teacher and student are trained once and shared through
edgecnn's stage cache (the script checks that the three builds hold the same
``student.keras``). A second run re-trains nothing: edgecnn's stages come from its cache,
the tfmot arm from ``OUT/tfmot/tfmot.json`` while the student and settings are unchanged
(``--retrain-tfmot`` trains it again).

The tfmot arm copies the calls of tfmot's guides (tensorflow/model-optimization,
``g3doc/guide/pruning/pruning_with_keras.ipynb``, ``pruning_with_sparsity_2_by_4.ipynb``,
``quantization/training_example.ipynb``, ``combine/pqat_example.ipynb``) onto the student:
``prune_low_magnitude`` on the whole model with its default layer coverage and
``ConstantSparsity(0.5, begin_step=0, frequency=100)`` (or ``sparsity_m_by_n=(2, 4)``),
``UpdatePruningStep``, ``strip_pruning``; ``quantize_model``; PQAT as
``quantize_apply(quantize_annotate_model(stripped), Default8BitPrunePreserveQuantizeScheme())``
on the stripped 50 % model; every model compiled with ``optimizer='adam'`` and
``SparseCategoricalCrossentropy(from_logits=True)`` on hard labels and fitted on the
un-augmented training images (``validation_data`` = edgecnn's validation split, where the
guides pass ``validation_split=0.1``, so both arms train on the same images). Conversion:
``TFLiteConverter.from_keras_model`` with ``Optimize.DEFAULT``, a representative dataset
(edgecnn's calibration images), ``TFLITE_BUILTINS_INT8`` and the recipe's int8/uint8 I/O,
as TFLite's post-training integer quantization guide does. The model is converted as the
guides convert theirs (logits out); edgecnn appends a softmax (``inference_model``).
What edgecnn adds on its side: distillation from the teacher (in the fine-tunes, and in the
student both arms start from), its layer choice (first, last and depthwise layers dense),
BatchNorm re-estimation, and the base recipe's schedules and learning rates. ``--set``
overrides reach the edgecnn builds; the tfmot arm reads only the data, seed, I/O type and
the fine-tunes' epochs and batch size, so it is trained once per student.

Output: one table on stdout and ``OUT/compression.json`` + ``OUT/compression.md``
(written atomically); the tfmot files in ``OUT/tfmot/``, the edgecnn runs in ``OUT/runs/``.
The difference is edgecnn minus tfmot, in points of top-1 accuracy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FULL_BASE = ROOT / "recipes" / "fashion_mnist_prune_qat.yaml"
QUICK_BASE = ROOT / "recipes" / "quickstart_prune_qat.yaml"

# Rows of the table, in order: (mode, what it is).
MODES = (
    ("ptq", "post-training int8 of the student (reference, no fine-tune)"),
    ("prune50", "50 % magnitude pruning"),
    ("2:4", "2:4 structured pruning"),
    ("qat", "quantization-aware training"),
    ("pqat", "prune 50 %, then sparsity-preserving QAT"),
)

# The edgecnn builds: name -> the recipe sections written over the base (None removes a
# section), and which int8 file (by artifact role) of that build each mode reads.
EDGECNN_BUILDS = ("pqat", "2by4", "qat")
# Builds that extend a recipe of their own (full data only): the recipe a user of that mode
# alone runs, whose fine-tune rates were chosen on the validation split for that mode (both
# happen to keep the base recipe's rates; a mode whose best rate differs sets its own there).
MODE_RECIPES = {"qat": ROOT / "recipes" / "fashion_mnist_qat.yaml",
                "2by4": ROOT / "recipes" / "fashion_mnist_2by4.yaml"}
EDGECNN_FILES = {
    "ptq": ("pqat", "model.tflite.int8"),
    "prune50": ("pqat", "model.tflite.int8.pruned"),
    "pqat": ("pqat", "model.tflite.int8.qat"),
    "2:4": ("2by4", "model.tflite.int8.pruned"),
    "qat": ("qat", "model.tflite.int8.qat"),
}


def _log(text: str) -> None:
    print(text, flush=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- recipes


def _build_overrides(name: str, epochs: int | None) -> dict:
    """The sections the ``name`` build writes over the base recipe."""
    train = {"train": {"epochs": epochs}} if epochs else {}
    # sparsity 0.5 and method magnitude restate the base (same stage key when it has them).
    prune50 = {"method": "magnitude", "sparsity": 0.5, **train}
    sections = {
        "pqat": {"prune": prune50, "qat": dict(train)},
        "2by4": {"prune": {**prune50, "m_by_n": [2, 4]}, "qat": None},
        "qat": {"prune": None, "qat": dict(train)},
    }[name]
    # int8 only (quantize): float files and bundles cost minutes and measure nothing here.
    return {**sections, "export": {"formats": [], "bundle": False}}


def build_parent(name: str, base: Path) -> Path:
    """The recipe the ``name`` build extends: the mode's own shipped recipe when the base is
    the default full one and edgecnn ships a recipe for that mode alone, else the base."""
    return MODE_RECIPES.get(name, base) if base.resolve() == FULL_BASE.resolve() else base


def write_recipes(base: Path, epochs: int | None, folder: Path) -> dict[str, Path]:
    """One recipe per edgecnn build, each ``extends:`` its parent (absolute path, :func:`build_parent`)."""
    import yaml

    from edgecnn.fileio import make_dirs, write_text_atomic

    make_dirs(folder)
    paths = {}
    for name in EDGECNN_BUILDS:
        data = {"extends": str(build_parent(name, base).resolve()), **_build_overrides(name, epochs)}
        text = (f"# Generated by tools/bench_compression.py: the {name} arm of edgecnn against plain tfmot.\n"
                + yaml.safe_dump(data, sort_keys=False))
        paths[name] = write_text_atomic(folder / f"{name}.yaml", text)
    return paths


# --------------------------------------------------------------------------- edgecnn arm


def run_edgecnn(recipes: dict[str, Path], runs: Path, overrides: tuple[str, ...] = ()) -> dict:
    """``edgecnn build`` of each generated recipe (with ``--set`` ``overrides``); the int8 file of every mode and the student."""
    cli = Path(sys.executable).with_name("edgecnn")
    command = [str(cli)] if cli.is_file() else [sys.executable, "-c", "from edgecnn.cli import main; main()"]
    out: dict = {"builds": {}, "files": {}}
    for name in EDGECNN_BUILDS:
        run_dir = runs / name
        _log(f"\n=== edgecnn build {recipes[name].name} -> {run_dir}")
        start = time.perf_counter()
        sets = [arg for item in overrides for arg in ("--set", item)]
        done = subprocess.run([*command, "build", str(recipes[name]), "--out", str(run_dir), "-q", *sets])
        seconds = round(time.perf_counter() - start, 1)
        if done.returncode:
            raise SystemExit(f"edgecnn build {recipes[name]} failed (exit {done.returncode}); see the log above")
        evaluation = json.loads((run_dir / "evaluation.json").read_text())
        student = run_dir / "student.keras"
        out["builds"][name] = {"recipe": str(recipes[name]), "run_dir": str(run_dir), "seconds": seconds,
                               "student_sha256": _sha256(student), "evaluation": evaluation}
        by_role = {row["role"]: run_dir / row["path"] for row in evaluation["models"].values()}
        for mode, (build, role) in EDGECNN_FILES.items():
            if build == name:
                if role not in by_role:
                    raise SystemExit(f"{run_dir}: no {role} file in evaluation.json (roles: {', '.join(by_role)})")
                out["files"][mode] = by_role[role]
    students = {b["student_sha256"] for b in out["builds"].values()}
    if len(students) != 1:
        raise SystemExit("the edgecnn builds hold different student.keras files (the stage cache did not share "
                         f"the student): {sorted(students)}")
    out["student"] = runs / "pqat" / "student.keras"
    return out


# --------------------------------------------------------------------------- tfmot arm


def _tfmot_data(recipe):
    """Training/validation arrays, calibration images and the test split, as edgecnn makes them."""
    from edgecnn.data import load_dataset, representative_images

    ds = load_dataset(recipe.data, recipe.seed)
    norm = ds.normalization.apply
    calibration = norm(representative_images(ds, recipe.quantize.calibration_samples
                                             or recipe.data.representative_samples, recipe.seed))
    validation = (norm(ds.x_val), ds.y_val) if len(ds.x_val) else None
    return ds, norm(ds.x_train), ds.y_train, validation, calibration


def convert_int8_guide(model, calibration: np.ndarray, io_dtype: str, path: Path) -> Path:
    """Full-integer TFLite as TFLite's post-training integer quantization guide converts."""
    from edgecnn._tf import native_stderr_silenced, tensorflow
    from edgecnn.fileio import write_bytes_atomic

    tf = tensorflow()

    def representative_data_gen():
        for image in calibration:
            yield [np.expand_dims(image, axis=0).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_data_gen
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if io_dtype != "float32":
        converter.inference_input_type = getattr(tf, io_dtype)
        converter.inference_output_type = getattr(tf, io_dtype)
    with native_stderr_silenced():
        data = converter.convert()
    return write_bytes_atomic(path, data)


def run_tfmot(recipe, student_path: Path, folder: Path, prune_train, qat_train, learning_rate: float | None) -> dict:
    """Plain tfmot, as its guides drive it, on the student: one int8 file per mode."""
    import tensorflow_model_optimization as tfmot

    from edgecnn._tf import keras
    from edgecnn.fileio import make_dirs
    from edgecnn.stages.common import load_model

    K = keras()
    make_dirs(folder)
    ds, x_train, y_train, validation, calibration = _tfmot_data(recipe)
    io_dtype = recipe.quantize.io_dtype
    x_test = ds.normalization.apply(ds.x_test)
    files, keras_accuracy, seconds = {}, {}, {}

    def fresh_student():
        # prune_low_magnitude wraps the model's own layers: every mode starts from a new copy.
        K.utils.set_random_seed(recipe.seed)
        return load_model(student_path)

    def compile_guide(model):
        optimizer = "adam" if learning_rate is None else K.optimizers.Adam(learning_rate=learning_rate)
        model.compile(optimizer=optimizer, loss=K.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])

    def fit_guide(model, train_cfg, callbacks=()):
        model.fit(x_train, y_train, batch_size=train_cfg.batch_size, epochs=train_cfg.epochs,
                  validation_data=validation, callbacks=list(callbacks), verbose=2)

    def finish(mode, model, start):
        # predict, not evaluate: a stripped model is not compiled (the guides evaluate before stripping).
        scores = model.predict(x_test, batch_size=512, verbose=0)
        keras_accuracy[mode] = round(float(np.mean(scores.argmax(axis=-1) == ds.y_test)), 5)
        files[mode] = convert_int8_guide(model, calibration, io_dtype, folder / f"{mode.replace(':', 'by')}_int8.tflite")
        seconds[mode] = round(time.perf_counter() - start, 1)
        _log(f"    tfmot {mode}: Keras test accuracy {keras_accuracy[mode]:.4f}, {seconds[mode]:.0f} s")

    prune = tfmot.sparsity.keras
    _log("\n=== tfmot ptq (the student converted, no fine-tune)")
    start = time.perf_counter()
    student = fresh_student()
    compile_guide(student)
    finish("ptq", student, start)

    _log(f"\n=== tfmot prune50: prune_low_magnitude(model, ConstantSparsity(0.5, 0, frequency=100)), "
         f"{prune_train.epochs} epochs, batch {prune_train.batch_size}")
    start = time.perf_counter()
    pruned = prune.prune_low_magnitude(
        fresh_student(), pruning_schedule=prune.ConstantSparsity(0.5, begin_step=0, frequency=100))
    compile_guide(pruned)
    fit_guide(pruned, prune_train, [prune.UpdatePruningStep()])
    stripped = prune.strip_pruning(pruned)
    finish("prune50", stripped, start)

    _log(f"\n=== tfmot pqat: quantize_apply(quantize_annotate_model(stripped 50 %), "
         f"Default8BitPrunePreserveQuantizeScheme()), {qat_train.epochs} epochs after the prune50 model")
    start = time.perf_counter()
    K.utils.set_random_seed(recipe.seed)
    annotated = tfmot.quantization.keras.quantize_annotate_model(stripped)
    pqat = tfmot.quantization.keras.quantize_apply(annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
    compile_guide(pqat)
    fit_guide(pqat, qat_train)
    finish("pqat", pqat, start)
    seconds["pqat"] = round(seconds["pqat"] + seconds["prune50"], 1)

    _log(f"\n=== tfmot 2:4: prune_low_magnitude(model, sparsity_m_by_n=(2, 4)), {prune_train.epochs} epochs")
    start = time.perf_counter()
    mn = prune.prune_low_magnitude(fresh_student(), sparsity_m_by_n=(2, 4))
    compile_guide(mn)
    fit_guide(mn, prune_train, [prune.UpdatePruningStep()])
    finish("2:4", prune.strip_pruning(mn), start)

    _log(f"\n=== tfmot qat: quantize_model(model), {qat_train.epochs} epochs")
    start = time.perf_counter()
    qat = tfmot.quantization.keras.quantize_model(fresh_student())
    compile_guide(qat)
    fit_guide(qat, qat_train)
    finish("qat", qat, start)
    return {"files": files, "keras_accuracy": keras_accuracy, "seconds": seconds}


# The tfmot arm's record, kept beside its files so that a re-run with the same student and
# settings (after a failure in a later step, say) re-trains nothing; bump on changing run_tfmot.
TFMOT_RECORD = "tfmot.json"
TFMOT_REVISION = 1


def _what_tfmot_uses(settings: dict) -> dict:
    """``settings`` with the fine-tune sections cut to what the tfmot arm reads (epochs, batch
    size: its optimizer is the guides' Adam), so a change to edgecnn's own learning rate or
    schedule does not train the tfmot arm again."""
    return {**settings, **{key: {k: settings.get(key, {}).get(k) for k in ("epochs", "batch_size")}
                           for key in ("prune_train", "qat_train")}}


def tfmot_arm(recipe, student_path: Path, folder: Path, learning_rate: float | None, retrain: bool) -> dict:
    """:func:`run_tfmot`, or its recorded result when the student, data and settings are unchanged."""
    from edgecnn.fileio import write_json_atomic

    settings = {"revision": TFMOT_REVISION, "student_sha256": _sha256(student_path),
                "data": recipe.data.model_dump(mode="json"), "seed": recipe.seed,
                "quantize": recipe.quantize.model_dump(mode="json", exclude={"weights"}),  # the arm is per channel
                "prune_train": recipe.prune.train.model_dump(mode="json"),
                "qat_train": recipe.qat.train.model_dump(mode="json"), "learning_rate": learning_rate}
    record_path = folder / TFMOT_RECORD
    if not retrain and record_path.is_file():
        record = json.loads(record_path.read_text())
        if _what_tfmot_uses(record.get("settings", {})) == _what_tfmot_uses(settings) and all(
                Path(f).is_file() and _sha256(Path(f)) == record["sha256"][mode] for mode, f in record["files"].items()):
            _log(f"\n=== tfmot arm re-used from {record_path} (same student and settings; --retrain-tfmot trains again)")
            return {**record, "files": {mode: Path(f) for mode, f in record["files"].items()}}
    result = run_tfmot(recipe, student_path, folder, recipe.prune.train, recipe.qat.train, learning_rate)
    record = {"settings": settings, "files": {mode: str(f) for mode, f in result["files"].items()},
              "sha256": {mode: _sha256(Path(f)) for mode, f in result["files"].items()},
              "keras_accuracy": result["keras_accuracy"], "seconds": result["seconds"]}
    write_json_atomic(record_path, record)
    return result


# --------------------------------------------------------------------------- evaluation


def evaluate_file(path: Path, x_test: np.ndarray, labels: np.ndarray, threads: int, m_by_n: bool) -> dict:
    """Accuracy on ai-edge-litert (edgecnn's evaluation helper) and the zeros read back from the file."""
    import gzip

    from edgecnn.runtime.interpreter import predict_classes
    from edgecnn.tflite.reader import sparsity_summary, weight_sparsity

    predicted = predict_classes(path, x_test, num_threads=threads)
    rows = weight_sparsity(path, block=4 if m_by_n else None)
    summary = sparsity_summary(rows, min_sparsity=0.3)
    pruned = [r for r in rows if r.sparsity >= 0.3]
    result = {"path": str(path), "accuracy": round(float(np.mean(predicted == labels)), 5),
              "size_bytes": path.stat().st_size,
              "gzip_bytes": len(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0)),
              "weight_sparsity": summary["sparsity"], "pruned_tensors": summary["pruned_tensors"],
              "weight_tensors": len(rows), "pruned_tensors_sparsity": summary["pruned_sparsity"],
              "predicted": predicted}
    if m_by_n:
        checked = [r for r in pruned if r.min_zeros_per_block is not None]
        result["tensors_2_of_4"] = sum(1 for r in checked if r.min_zeros_per_block >= 2)
    return result


def _sparsity_text(row: dict) -> str:
    if not row["pruned_tensors"]:
        return f"{row['weight_sparsity']:.1%} all"
    text = f"{row['pruned_tensors_sparsity']:.1%} of {row['pruned_tensors']} t, {row['weight_sparsity']:.1%} all"
    if "tensors_2_of_4" in row:
        text += f", 2:4 in {row['tensors_2_of_4']}"
    return text


def _sparsity_note(mode: str, results: dict, train_images: int, prune_train) -> str | None:
    """Why a pruning row is not a comparison at equal sparsity, when the files say so."""
    if mode not in ("prune50", "2:4", "pqat"):
        return None
    tf_, ec = results["tfmot"], results["edgecnn"]
    if abs(tf_["weight_sparsity"] - ec["weight_sparsity"]) <= 0.03:
        return None
    steps = -(-train_images // prune_train.batch_size) * prune_train.epochs
    text = (f"weights read back {tf_['weight_sparsity']:.1%} zero (tfmot) vs {ec['weight_sparsity']:.1%} (edgecnn)")
    if mode != "2:4" and steps < 100:
        text += (f"; tfmot's ConstantSparsity(0.5, begin_step=0, frequency=100) first masks at step 100 (the wrapper "
                 f"counts steps from 1) and this fine-tune has {steps} steps")
    return text


def render_table(head: tuple, body: list[tuple]) -> tuple[str, str]:
    """Rows as aligned plain text (stdout) and as a Markdown table."""
    widths = [max(len(str(line[i])) for line in (head, *body)) for i in range(len(head))]
    text = "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in (head, *body))
    md = "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                    + ["| " + " | ".join(str(c) for c in line) + " |" for line in body])
    return text, md


def make_table(rows: list[dict]) -> tuple[str, str]:
    """The table as plain text (stdout) and Markdown, each followed by the rows' notes."""
    head = ("mode", "tfmot int8 %", "edgecnn int8 %", "difference (points)", "sparsity read back (tfmot / edgecnn)",
            "epochs")
    body = [(r["mode"], f"{100 * r['tfmot']['accuracy']:.2f}", f"{100 * r['edgecnn']['accuracy']:.2f}",
             f"{r['difference_points']:+.2f}", f"{_sparsity_text(r['tfmot'])} / {_sparsity_text(r['edgecnn'])}",
             r["epochs"]) for r in rows]
    text, md = render_table(head, body)
    notes = "\n".join(f"- {r['mode']}: {r['note']}" for r in rows if r.get("note"))
    if notes:
        text += "\n\nnot at equal sparsity:\n" + notes
        md += "\n\nNot at equal sparsity:\n\n" + notes
    return text, md


def write_report(out: Path, report: dict) -> str:
    """``OUT/compression.json`` and ``OUT/compression.md`` (atomic writes); returns the plain-text table."""
    from edgecnn.fileio import write_json_atomic, write_text_atomic

    text, md = make_table(report["rows"])
    write_json_atomic(out / "compression.json", report)
    write_text_atomic(out / "compression.md",
                      f"# edgecnn vs plain tfmot ({Path(report['base_recipe']).name}, {report['test_images']} test "
                      f"images, int8 on ai-edge-litert)\n\n{md}\n\nDifference = edgecnn - tfmot (points). Sparsity: "
                      f"zeros read back from the file, over the weight tensors at least 30 % zero (t = tensors), and "
                      f"over all weights; \"2:4 in n\": tensors with >= 2 zeros in every 4 input-channel weights. "
                      f"Command: `python tools/{report['command']}`\n")
    return text


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help=f"base recipe (default {FULL_BASE.relative_to(ROOT)}; "
                                                  f"--quick: {QUICK_BASE.relative_to(ROOT)})")
    parser.add_argument("--epochs", type=int, help="fine-tune epochs of prune and of QAT, both arms "
                                                   "(default: the base recipe's prune.train / qat.train; --quick: 1)")
    parser.add_argument("--out", type=Path, help="output folder (default bench_out/compression, "
                                                 "--quick: bench_out/compression_quick)")
    parser.add_argument("--quick", action="store_true",
                        help="quickstart data (3000 train / 1000 test images) and 1 epoch: checks the script")
    parser.add_argument("--tfmot-learning-rate", type=float,
                        help="Adam learning rate of the tfmot arm (default: optimizer='adam' as the guides, 0.001; "
                             "pqat_example prunes with 1e-5)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override for every edgecnn build (as edgecnn build --set), e.g. "
                             "teacher.train.epochs=18: a stronger teacher; the tfmot arm starts from the "
                             "student those builds distill and takes only the data, seed, quantize I/O and "
                             "prune/qat train settings")
    parser.add_argument("--retrain-tfmot", action="store_true",
                        help="train the tfmot arm again even when OUT/tfmot/tfmot.json records the same run")
    args = parser.parse_args(argv)
    base = args.base or (QUICK_BASE if args.quick else FULL_BASE)
    epochs = args.epochs if args.epochs is not None else (1 if args.quick else None)
    out = args.out or ROOT / "bench_out" / ("compression_quick" if args.quick else "compression")
    if epochs is not None and epochs < 1:
        parser.error("--epochs must be >= 1")

    from edgecnn.fileio import make_dirs
    from edgecnn.recipe import load_recipe

    make_dirs(out)
    started = time.perf_counter()
    recipes = write_recipes(base, epochs, out / "recipes")
    overrides = tuple(args.overrides)
    recipe = load_recipe(recipes["pqat"], overrides)  # data, student, prune and qat sections of every arm
    if not recipe.quantize.per_channel:
        parser.error("quantize.weights: the tfmot arm converts as TFLite's guide does, per channel; "
                     "compare per-tensor files with tools/bench_weight_scales.py")
    prune_train, qat_train = recipe.prune.train, recipe.qat.train
    # The tfmot arm trains each mode with these epochs and batch size: every build must too.
    for name in EDGECNN_BUILDS:
        other = load_recipe(recipes[name], overrides)
        if other.data != recipe.data or other.seed != recipe.seed:
            parser.error(f"{recipes[name]}: its data or seed differ from {recipes['pqat']}'s; the arms must share them")
        for section, train in (("prune", prune_train), ("qat", qat_train)):
            mine = getattr(other, section)
            if mine is not None and (mine.train.epochs, mine.train.batch_size) != (train.epochs, train.batch_size):
                parser.error(f"{recipes[name]}: {section}.train has {mine.train.epochs} epochs, batch "
                             f"{mine.train.batch_size}; the tfmot arm trains {train.epochs}, batch {train.batch_size}")
    _log(f"base {base}; prune {prune_train.epochs} epochs, QAT {qat_train.epochs} epochs, "
         f"batch {prune_train.batch_size}/{qat_train.batch_size}; output {out}")

    edgecnn = run_edgecnn(recipes, out / "runs", overrides)
    tfmot = tfmot_arm(recipe, edgecnn["student"], out / "tfmot", args.tfmot_learning_rate, args.retrain_tfmot)

    from edgecnn.data import load_dataset

    ds = load_dataset(recipe.data, recipe.seed)
    x_test, labels = ds.normalization.apply(ds.x_test), np.asarray(ds.y_test).reshape(-1)
    epochs_text = {"ptq": "0", "prune50": str(prune_train.epochs), "2:4": str(prune_train.epochs),
                   "qat": str(qat_train.epochs), "pqat": f"{prune_train.epochs} + {qat_train.epochs}"}
    rows = []
    for mode, what in MODES:
        results = {arm: evaluate_file(Path(files[mode]), x_test, labels, recipe.evaluate.threads, mode == "2:4")
                   for arm, files in (("tfmot", tfmot["files"]), ("edgecnn", edgecnn["files"]))}
        agreement = float(np.mean(results["tfmot"].pop("predicted") == results["edgecnn"].pop("predicted")))
        diff = round(100 * (results["edgecnn"]["accuracy"] - results["tfmot"]["accuracy"]), 2)
        results["tfmot"]["keras_accuracy"] = tfmot["keras_accuracy"][mode]
        results["tfmot"]["seconds"] = tfmot["seconds"][mode]
        rows.append({"mode": mode, "what": what, "epochs": epochs_text[mode], "difference_points": diff,
                     "top1_agreement_between_arms": round(agreement, 5), **results,
                     "note": _sparsity_note(mode, results, len(ds.y_train), prune_train)})
    report = {
        "what": "edgecnn compression against plain tfmot (its guides' calls) on one distilled student; "
                "difference = edgecnn - tfmot in points of int8 top-1 accuracy on ai-edge-litert",
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "base_recipe": str(base), "overrides": list(overrides), "seed": recipe.seed, "test_images": int(len(labels)), "train_images": int(len(ds.y_train)),
        "prune_train": prune_train.model_dump(mode="json"), "qat_train": qat_train.model_dump(mode="json"),
        "student": str(edgecnn["student"]), "student_sha256": _sha256(edgecnn["student"]),
        "tfmot_settings": {"optimizer": "adam" if args.tfmot_learning_rate is None else
                           f"Adam(learning_rate={args.tfmot_learning_rate:g})",
                           "loss": "SparseCategoricalCrossentropy(from_logits=True), hard labels, no augmentation",
                           "prune50": "prune_low_magnitude(model, pruning_schedule=ConstantSparsity(0.5, begin_step=0, "
                                      "frequency=100)) + UpdatePruningStep + strip_pruning",
                           "2:4": "prune_low_magnitude(model, sparsity_m_by_n=(2, 4)) + UpdatePruningStep + strip_pruning",
                           "qat": "quantize_model(model)",
                           "pqat": "quantize_apply(quantize_annotate_model(stripped prune50 model), "
                                   "Default8BitPrunePreserveQuantizeScheme())",
                           "conversion": f"TFLiteConverter.from_keras_model, Optimize.DEFAULT, representative "
                                         f"dataset, TFLITE_BUILTINS_INT8, {recipe.quantize.io_dtype} I/O"},
        "edgecnn_builds": {name: {k: v for k, v in b.items() if k != "evaluation"}
                           for name, b in edgecnn["builds"].items()},
        "rows": rows, "seconds": round(time.perf_counter() - started, 1),
    }
    text = write_report(out, report)
    _log(f"\n{text}\n\nwritten {out / 'compression.json'} and {out / 'compression.md'} "
         f"({report['seconds'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
