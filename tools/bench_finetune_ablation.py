"""Which part of edgecnn's prune fine-tune costs accuracy: one factor changed at a time.

    python tools/bench_finetune_ablation.py                          # the default variants, then the table
    python tools/bench_finetune_ablation.py --variants no_augment+hard_labels,keep_first_last_off
    python tools/bench_finetune_ablation.py --table                  # only rebuild the table from the results
    python tools/bench_finetune_ablation.py --quick --out bench_out/ablation_quick   # checks the script (minutes)

Background: ``tools/bench_compression.py`` measures plain tfmot above edgecnn in every
compression mode on one distilled student (prune 50 %: 90.68 vs 88.99 int8). The tfmot
arm fine-tunes with Adam 1e-3 on hard labels, un-augmented images, ConstantSparsity and
no BatchNorm re-estimation; edgecnn's ``prune`` stage distills from the teacher
(``soft_kd``), trains on the recipe's augmentation, uses polynomial-decay sparsity and a
cosine learning rate, and re-estimates BatchNorm. This script takes the already trained
student and teacher of that benchmark (``--student`` / ``--teacher``, default
``bench_out/compression/runs/pqat/``) and re-runs edgecnn's own 50 % magnitude-prune
fine-tune with one difference changed at a time.

What is edgecnn's own code here: the recipe (``recipes/fashion_mnist_prune_qat.yaml``,
loaded by :func:`edgecnn.recipe.load_recipe`, variants as ``--set``-style overrides),
the dataset (:func:`edgecnn.data.load_dataset`: same splits, normalization and
calibration images), model loading (:mod:`edgecnn.models.loading`), layer choice,
wrapping, fine-tune and stripping (the body of :func:`edgecnn.stages.prune.run_prune`:
``choose_layers``, ``wrap_for_pruning``, ``edgecnn.stages.common.fine_tune`` with
``UpdatePruningStep``, ``strip``, ``recalibrate``), int8 conversion
(:func:`edgecnn.export.tflite.convert_int8` of ``inference_model``, calibration images of
:func:`edgecnn.stages.common.calibration_images`) and evaluation on all test images
(:func:`edgecnn.runtime.interpreter.predict_classes` on ai-edge-litert). The only step
done here rather than by ``run_prune`` is BatchNorm re-estimation, which the stage always
runs (the product has no knob to turn it off): every training run is evaluated twice,
on the same weights, before and after :func:`edgecnn.stages.common.recalibrate`, so each
variant ``X`` also gives the row ``X+no_bn_recal`` without training again.

Each variant trains in its own process (``--run-one``) and writes
``OUT/variants/<name>.json``; a variant whose result exists is not trained again
(``--force`` re-trains). A killed variant resumes from edgecnn's per-epoch checkpoint in
``OUT/work/<name>/``. The table goes to ``OUT/ablation.json`` and ``OUT/ablation.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE = ROOT / "recipes" / "fashion_mnist_prune_qat.yaml"
QUICK_BASE = ROOT / "recipes" / "quickstart_prune_qat.yaml"
RUN_DIR = ROOT / "bench_out" / "compression" / "runs" / "pqat"

# Since commit 12dcbdc the fine-tuning stages train on un-augmented images unless
# prune.train.augment is true; the augmented variants (edgecnn before that commit, the
# build in bench_out/compression) set it. Runs recorded before that commit reached the same
# settings through data.augment alone; each record keeps the overrides it ran with.
AUGMENTED = ("prune.train.augment=true",)
NO_AUGMENT = ("prune.train.augment=false", "data.augment.horizontal_flip=false", "data.augment.translate=0")
HARD_LABELS = ("distill.enabled=false",)  # the product's own switch: fine_tune then trains on cross_entropy
ALL_LAYERS = ("prune.keep_first_last=false",)  # tfmot's arm also prunes the stem and the classifier
TFMOT_SCHEDULE = ("prune.schedule={kind: constant}", "prune.begin=0", "prune.end=1.0",
                  "prune.train.learning_rate=0.001", "prune.train.schedule=constant")

# Training variants: name -> (recipe overrides, what differs from edgecnn as-is).
# Each also yields "<name>+no_bn_recal" (the same weights, BatchNorm not re-estimated).
VARIANTS: dict[str, tuple[tuple[str, ...], str]] = {
    "edgecnn": (AUGMENTED, "edgecnn's prune stage as in bench_out/compression (soft_kd alpha 0.7 T 4, augmentation, polynomial decay, cosine 5e-4)"),
    "no_augment": (NO_AUGMENT, "data.augment off (no flip, no translate) during the fine-tune"),
    "hard_labels": (AUGMENTED + HARD_LABELS, "distill.enabled false: hard-label cross-entropy, no teacher"),
    "no_augment+hard_labels": (NO_AUGMENT + HARD_LABELS, "both: the tfmot arm's loss and data"),
    "flip_only": (AUGMENTED + ("data.augment.translate=0",), "horizontal flip kept, translate off"),
    "translate_only": (AUGMENTED + ("data.augment.horizontal_flip=false",), "translate 0.1 kept, flip off"),
    "online_teacher": (AUGMENTED + ("distill.teacher_outputs=online",),
                       "teacher logits computed on the same augmented batch (recipe default here: cached, "
                       "i.e. on un-augmented images)"),
    "no_augment+online_teacher": (NO_AUGMENT + ("distill.teacher_outputs=online",),
                                  "no augmentation, teacher run online: the same soft targets as cached, so its "
                                  "difference from no_augment is run-to-run noise"),
    "alpha_0.3": (AUGMENTED + ("distill.alpha=0.3",), "soft_kd with alpha 0.3 (more weight on hard labels)"),
    "no_augment+alpha_0.3": (NO_AUGMENT + ("distill.alpha=0.3",), "no augmentation, soft_kd alpha 0.3"),
    "no_augment+temperature_2": (NO_AUGMENT + ("distill.temperature=2",),
                                 "no augmentation, soft_kd at T 2 (sharper targets from a teacher only ~2 points "
                                 "better than the student)"),
    "keep_first_last_off": (AUGMENTED + ALL_LAYERS, "prune.keep_first_last false (stem and classifier pruned too)"),
    "tfmot_schedule": (NO_AUGMENT + TFMOT_SCHEDULE,
                       "no augmentation, distillation kept, tfmot's schedule: constant sparsity from step 0, "
                       "Adam 1e-3 constant"),
    "tfmot_like": (NO_AUGMENT + HARD_LABELS + TFMOT_SCHEDULE,
                   "no augmentation, hard labels, constant sparsity from step 0, Adam 1e-3 constant"),
    # At 80 % pruning costs accuracy, which is what distillation can give back; at 50 % the
    # pruned student is as good as the unpruned one, so there is nothing to recover.
    "sparsity_0.8": (NO_AUGMENT + ("prune.sparsity=0.8",), "edgecnn as-is (un-augmented, distilled), 80 % sparsity"),
    "tfmot_like+sparsity_0.8": (NO_AUGMENT + HARD_LABELS + TFMOT_SCHEDULE + ("prune.sparsity=0.8",),
                                "tfmot_like at 80 % sparsity"),
}
DEFAULT_VARIANTS = ("edgecnn", "no_augment", "hard_labels", "no_augment+hard_labels")


def _log(text: str) -> None:
    print(text, flush=True)


class AblationContext:
    """The parts of :class:`edgecnn.stage.BuildContext` that the prune stage's helpers read."""

    def __init__(self, recipe, dataset, student: Path, teacher: Path, work: Path, key: str):
        from edgecnn.artifacts import Artifact, ArtifactStore
        from edgecnn.progress import Progress

        self.recipe = recipe
        self.dataset = dataset
        self.progress = Progress(quiet=True, stream=sys.stdout)
        self.artifacts = ArtifactStore()
        self.artifacts.add(Artifact("model.keras.teacher", "keras", teacher, precision="float32"), "teacher")
        self.artifacts.add(Artifact("model.keras.student", "keras", student, precision="float32"), "student")
        self.stage_key = key
        self.checkpoint_dir = work
        self.out_dir = work.parent


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _git_head() -> str | None:
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or None


def evaluate_int8(model_path: Path, recipe, ctx, tflite_path: Path, x_test, labels) -> dict:
    """Full-int8 file of the saved Keras model, as the quantize stage converts it, and its test accuracy."""
    import gzip

    from edgecnn.export.tflite import convert_int8, inference_model
    from edgecnn.runtime.interpreter import predict_classes
    from edgecnn.stages.common import calibration_images, load_model
    from edgecnn.tflite.reader import sparsity_summary, weight_sparsity

    start = time.perf_counter()
    model = inference_model(load_model(model_path))
    convert_int8(model, calibration_images(recipe, ctx), recipe.quantize.io_dtype, tflite_path,
                 per_channel=recipe.quantize.per_channel)
    predicted = predict_classes(tflite_path, x_test, num_threads=recipe.evaluate.threads)
    summary = sparsity_summary(weight_sparsity(tflite_path), min_sparsity=0.3)
    return {"int8_accuracy": round(float(np.mean(predicted == labels)), 5), "int8_path": str(tflite_path),
            "gzip_bytes": len(gzip.compress(tflite_path.read_bytes(), compresslevel=9, mtime=0)),
            "file_weight_sparsity": summary["sparsity"], "file_pruned_tensors": summary["pruned_tensors"],
            "file_pruned_tensors_sparsity": summary["pruned_sparsity"],
            "int8_seconds": round(time.perf_counter() - start, 1)}


def run_one(name: str, base: Path, out: Path, student: Path, teacher: Path, epochs: int | None) -> dict:
    """Train variant ``name`` (edgecnn's prune stage body) and evaluate it with and without BatchNorm re-estimation."""
    from edgecnn.compress.engine import steps_for
    from edgecnn.compress.prune import (choose_layers, count_nonzero_params, kernel_sparsity, strip,
                                        update_step_callback, wrap_for_pruning)
    from edgecnn.compress.train import evaluate_classifier
    from edgecnn.data import load_dataset
    from edgecnn.fileio import make_dirs, write_json_atomic
    from edgecnn.recipe import load_recipe
    from edgecnn.stages.common import eval_dataset, fine_tune, load_model, recalibrate, save_keras, seed_everything

    overrides, what = VARIANTS[name]
    if epochs is not None:
        overrides = (*overrides, f"prune.train.epochs={epochs}")
    recipe = load_recipe(base, list(overrides))
    folder = make_dirs(out / "variants" / name)
    work = out / "work" / name
    started = time.perf_counter()
    ds = load_dataset(recipe.data, recipe.seed)
    ctx = AblationContext(recipe, ds, student, teacher, work, f"ablation:{name}")
    x_test, labels = ds.normalization.apply(ds.x_test), np.asarray(ds.y_test).reshape(-1)
    test = eval_dataset(ctx, ds.x_test, ds.y_test)

    # The body of edgecnn.stages.prune.run_prune (magnitude method).
    cfg = recipe.prune
    model = load_model(student)
    choice = choose_layers(model, cfg)
    total = steps_for(len(ds.x_train), cfg.train.batch_size) * cfg.train.epochs
    _log(f"[{name}] {what}\n[{name}] overrides: {' '.join(overrides) or '(none)'}; pruning {len(choice.pruned)} "
         f"layers to {cfg.sparsity:.0%} ({cfg.schedule.kind}, steps {int(cfg.begin * total)}-"
         f"{int(round(cfg.end * total))} of {total}), distill {'on' if recipe.distill.enabled else 'off'} "
         f"(alpha {recipe.distill.alpha}, T {recipe.distill.temperature}), prune.train.augment {cfg.train.augment}, "
         f"data.augment {recipe.data.augment.model_dump()}")
    seed_everything(recipe.seed)
    wrapped = wrap_for_pruning(model, cfg, total, choice)
    train_start = time.perf_counter()
    history = fine_tune(recipe, ctx, wrapped, cfg.train, "prune", callbacks=[update_step_callback()])
    train_seconds = round(time.perf_counter() - train_start, 1)
    pruned = strip(wrapped)
    per_layer = kernel_sparsity(pruned, choice.pruned)
    weights = sum(int(layer.kernel.shape.num_elements()) for layer in pruned.layers if layer.name in per_layer)
    zeros = sum(per_layer[layer.name] * layer.kernel.shape.num_elements() for layer in pruned.layers
                if layer.name in per_layer)
    common = {"variant": name, "what": what, "overrides": list(overrides),
              "pruned_layers": len(choice.pruned), "kept_dense": len(choice.kept),
              "sparsity_pruned_layers": round(zeros / max(1, weights), 5),
              "nonzero_params": count_nonzero_params(pruned), "params": int(pruned.count_params()),
              "train_seconds": train_seconds,
              "history": {k: [round(float(v), 5) for v in vals] for k, vals in history.items()}}

    rows = {}
    for recal in (False, True):
        row_name = name if recal else f"{name}+no_bn_recal"
        if recal:
            recalibrate(ctx, pruned)
        path = save_keras(pruned, folder / ("pruned.keras" if recal else "pruned_no_bn_recal.keras"))
        float_accuracy = round(evaluate_classifier(pruned, test), 5)
        result = evaluate_int8(path, recipe, ctx, folder / (path.stem + "_int8.tflite"), x_test, labels)
        rows[row_name] = {**common, "variant": row_name, "bn_recalibrated": recal, "float_accuracy": float_accuracy,
                          **result}
        _log(f"[{row_name}] float {100 * float_accuracy:.2f} %, int8 {100 * result['int8_accuracy']:.2f} %, "
             f"sparsity of pruned layers {common['sparsity_pruned_layers']:.1%}")
    record = {"variant": name, "edgecnn_commit": _git_head(), "base_recipe": str(base), "student": str(student), "student_sha256": _sha256(student),
              "teacher": str(teacher), "test_images": int(len(labels)), "train_images": int(len(ds.y_train)),
              "prune_train": cfg.train.model_dump(mode="json"), "rows": rows,
              "seconds": round(time.perf_counter() - started, 1)}
    write_json_atomic(out / "variants" / f"{name}.json", record)
    shutil.rmtree(work, ignore_errors=True)  # the checkpoint is only for a killed run
    return record


ORDER = ("edgecnn", "edgecnn+no_bn_recal")


def write_table(out: Path, command: str) -> str:
    """``OUT/ablation.json`` and ``OUT/ablation.md`` from every ``OUT/variants/*.json``."""
    from edgecnn.fileio import write_json_atomic, write_text_atomic

    records = [json.loads(p.read_text()) for p in sorted((out / "variants").glob("*.json"))]
    rows = [row for record in records for row in record["rows"].values()]
    rank = {name: i for i, name in enumerate(VARIANTS)}
    rows.sort(key=lambda r: (rank.get(r["variant"].removesuffix("+no_bn_recal"), 99), r["bn_recalibrated"] is False))
    seconds = {record["variant"]: record["seconds"] for record in records}
    commits = {record["variant"]: record.get("edgecnn_commit") or "-" for record in records}
    ref = next((r for r in rows if r["variant"] == "edgecnn"), None)
    head = ("variant", "float %", "int8 %", "int8 vs edgecnn (points)", "sparsity (pruned layers / file)",
            "last epoch train / val acc", "wall s (variant)", "edgecnn code")
    body = []
    for r in rows:
        hist = r["history"]
        train_val = (f"{100 * hist['accuracy'][-1]:.2f} / {100 * hist['val_accuracy'][-1]:.2f}"
                     if hist.get("accuracy") and hist.get("val_accuracy") else "-")
        delta = f"{100 * (r['int8_accuracy'] - ref['int8_accuracy']):+.2f}" if ref else "-"
        base_name = r["variant"].removesuffix("+no_bn_recal")
        wall = f"{seconds.get(base_name, 0):.0f}" if r["bn_recalibrated"] else "(same run)"
        body.append((r["variant"], f"{100 * r['float_accuracy']:.2f}", f"{100 * r['int8_accuracy']:.2f}", delta,
                     f"{r['sparsity_pruned_layers']:.1%} of {r['pruned_layers']} layers / "
                     f"{r['file_weight_sparsity']:.1%} all", train_val, wall, commits.get(base_name, "-")))
    widths = [max(len(str(line[i])) for line in (head, *body)) for i in range(len(head))]
    text = "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in (head, *body))
    md = "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                   + ["| " + " | ".join(str(c) for c in line) + " |" for line in body])
    reference = ""
    # The tools/bench_compression.py result of the same student, wherever its --out put it.
    student_sha = records[0].get("student_sha256") if records else None
    compression = next((p for p in sorted(ROOT.glob("bench_out/*/compression.json"))
                        if json.loads(p.read_text()).get("student_sha256") == student_sha), None)
    if compression is not None:
        for row in json.loads(compression.read_text()).get("rows", []):
            if row.get("mode") == "prune50":
                reference = (f"Reference ({compression.relative_to(ROOT)}, prune50): plain tfmot int8 "
                             f"{100 * row['tfmot']['accuracy']:.2f} % (Keras {100 * row['tfmot']['keras_accuracy']:.2f} %), "
                             f"edgecnn build int8 {100 * row['edgecnn']['accuracy']:.2f} %.\n\n")
    ran_with = {record["variant"]: next(iter(record["rows"].values())).get("overrides", []) for record in records}
    what = "\n".join(f"- `{name}`: {desc} (overrides run: `{' '.join(ran_with[name]) or '(none)'}`)"
                     for name, (ov, desc) in VARIANTS.items() if name in seconds)
    first = records[0] if records else {}
    report = {"what": "edgecnn's 50 % magnitude-prune fine-tune with one factor changed at a time",
              "command": command, "base_recipe": first.get("base_recipe"), "student": first.get("student"),
              "student_sha256": first.get("student_sha256"), "teacher": first.get("teacher"),
              "test_images": first.get("test_images"), "prune_train": first.get("prune_train"),
              "variant_seconds": seconds, "rows": rows}
    write_json_atomic(out / "ablation.json", report)
    write_text_atomic(out / "ablation.md",
                      f"# Prune fine-tune ablation ({Path(str(first.get('base_recipe', ''))).name}, "
                      f"{first.get('test_images')} test images, int8 on ai-edge-litert)\n\n{md}\n\n{reference}"
                      f"Variants:\n\n{what}\n- `X+no_bn_recal`: the same trained weights as `X`, BatchNorm "
                      f"statistics not re-estimated after stripping (the prune stage always re-estimates them).\n\n"
                      f"Runs on code before commit 12dcbdc had no `prune.train.augment` (the prune stage always "
                      f"trained on `data.augment`); from 12dcbdc the stage fine-tunes un-augmented unless "
                      f"`prune.train.augment: true`. `edgecnn` re-run on 12dcbdc with `prune.train.augment=true` "
                      f"(`--out bench_out/ablation/recheck_new_code`) gave the same figures.\n\n"
                      f"Sparsity: exact zeros in the pruned layers' kernels / zeros read back from the int8 file over "
                      f"all weights. Train accuracy is on the variant's own training images (augmented where "
                      f"augmentation is on). Wall time: training, re-estimation and both conversions and "
                      f"evaluations of the variant, on this host.\n\nCommand: `python tools/{command}`\n")
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", help=f"comma-separated, from: {', '.join(VARIANTS)} "
                                           f"(default {','.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--base", type=Path, help=f"base recipe (default {BASE.relative_to(ROOT)})")
    parser.add_argument("--student", type=Path, help=f"distilled student (default {RUN_DIR.relative_to(ROOT)}/student.keras)")
    parser.add_argument("--teacher", type=Path, help=f"teacher (default {RUN_DIR.relative_to(ROOT)}/teacher.keras)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench_out" / "ablation")
    parser.add_argument("--epochs", type=int, help="fine-tune epochs (default: the recipe's prune.train.epochs)")
    parser.add_argument("--quick", action="store_true", help="quickstart recipe, 1 epoch: checks the script")
    parser.add_argument("--force", action="store_true", help="train variants again even when their result exists")
    parser.add_argument("--table", action="store_true", help="only rebuild the table from OUT/variants/")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    base = (args.base or (QUICK_BASE if args.quick else BASE)).resolve()
    epochs = args.epochs if args.epochs is not None else (1 if args.quick else None)
    student = (args.student or RUN_DIR / "student.keras").resolve()
    teacher = (args.teacher or RUN_DIR / "teacher.keras").resolve()
    out = args.out.resolve()

    if args.run_one:
        run_one(args.run_one, base, out, student, teacher, epochs)
        return
    command = " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])
    if not args.table:
        names = args.variants.split(",") if args.variants else list(DEFAULT_VARIANTS)
        unknown = [n for n in names if n not in VARIANTS]
        if unknown:
            parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
        for name in names:
            if (out / "variants" / f"{name}.json").is_file() and not args.force:
                _log(f"=== {name}: result exists (--force trains again)")
                continue
            _log(f"\n=== {name}  ({time.strftime('%H:%M:%S')})")
            one = [sys.executable, __file__, "--run-one", name, "--base", str(base), "--out", str(out),
                   "--student", str(student), "--teacher", str(teacher)]
            if epochs is not None:
                one += ["--epochs", str(epochs)]
            if subprocess.run(one).returncode:
                raise SystemExit(f"variant {name} failed; see the log above")
    _log("\n" + write_table(out, command))
    _log(f"\nwritten {out / 'ablation.json'} and {out / 'ablation.md'}")


if __name__ == "__main__":
    main()
