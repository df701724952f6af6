"""The build stages, each a function ``(recipe, ctx) -> StageResult``.

A stage reads upstream artifacts from ``ctx.artifacts`` (an
:class:`~edgecnn.artifacts.ArtifactStore`) by role or kind, never by another stage's
name: export and quantize convert ``latest(kind="keras")``, evaluate, bundle and bench
take every TFLite model. It writes its own files atomically into the run directory and
returns them as typed :class:`~edgecnn.artifacts.Artifact` values with its metrics.
Ordering, caching and timing belong to :mod:`edgecnn.pipeline`, not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgecnn.artifacts import MODEL_FILE_KINDS, Artifact
from edgecnn.errors import ModelFileError
from edgecnn.fileio import atomic_path, write_json_atomic

if TYPE_CHECKING:
    from edgecnn.pipeline import BuildContext
    from edgecnn.recipe import Recipe

DATASET_FILE = "dataset.json"
TEACHER_FILE = "teacher.keras"
STUDENT_FILE = "student.keras"
EVALUATION_FILE = "evaluation.json"
BUNDLE_DIR = "bundle"


@dataclass
class StageResult:
    """What a stage produced: typed artifacts (sha256 left to the pipeline) and metrics.

    ``skipped``: why the stage made nothing although the recipe asks for it (one line: a
    tool this host lacks and how to get it). The build goes on; the pipeline prints the
    reason and the reports list it. Such a stage should declare what decides it (the
    tool's presence and version) in its ``environment``, so the skip is cached only until
    that changes.
    """

    artifacts: list[Artifact] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    skipped: str | None = None


def keras_artifact(role: str, path: Path) -> Artifact:
    """A float32 ``.keras`` model artifact (``model.keras.<step>``)."""
    return Artifact(role, "keras", path, precision="float32")


# --------------------------------------------------------------------------- helpers
# (save_keras, load_model and keras_artifact are public: a stage of its own module uses them)


def _input_shape(recipe: "Recipe") -> tuple[int, int, int]:
    return (recipe.data.image_size, recipe.data.image_size, recipe.data.channels)


def save_keras(model, path: Path) -> Path:
    """``model.save`` to a ``.keras`` file whose bytes depend only on the model.

    Keras stamps the archive with the save time (``metadata.json``'s ``date_saved`` and
    the weights entry's zip date), so the same weights would get a new sha256 on every
    save and re-run every later stage. The archive is rewritten without either.
    """
    from edgecnn.models.loading import save_keras_model

    with atomic_path(path) as tmp:
        save_keras_model(model, tmp)  # also for tfmot-wrapped models (see edgecnn.models.loading)
        if tmp.is_file():
            _normalize_keras_archive(tmp)
    return path


def _normalize_keras_archive(path: Path) -> None:
    import json
    import zipfile

    from edgecnn.fileio import reproducible_zip_info

    with zipfile.ZipFile(path) as zf:
        entries = [(info.filename, info.compress_type, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(path, "w") as zf:
        for name, compression, data in entries:
            if name == "metadata.json":
                meta = json.loads(data)
                meta.pop("date_saved", None)
                data = json.dumps(meta).encode()
            zf.writestr(reproducible_zip_info(name, compression), data)


def _eval_dataset(ctx: "BuildContext", x, y):
    from edgecnn.data import make_tf_dataset

    ds = ctx.dataset
    return make_tf_dataset(x, y, ds.normalization, ctx.recipe.evaluate.batch_size)


def _train_val_datasets(ctx: "BuildContext", batch_size: int, soft_targets=None):
    from edgecnn.data import make_tf_dataset

    r, ds = ctx.recipe, ctx.dataset
    train = make_tf_dataset(ds.x_train, ds.y_train, ds.normalization, batch_size,
                            augment=r.data.augment, shuffle=True, seed=r.seed, extra=soft_targets)
    val = None
    if len(ds.x_val):
        val = make_tf_dataset(ds.x_val, ds.y_val, ds.normalization, r.evaluate.batch_size)
    return train, val


def _rounded(values) -> list[float]:
    return [round(float(v), 5) for v in values or []]


def _recalibrate(ctx: "BuildContext", model) -> None:
    """Fresh BatchNorm statistics from un-augmented training images (see recalibrate_batchnorm)."""
    from edgecnn.compress.train import recalibrate_batchnorm

    ds = ctx.dataset
    batches = recalibrate_batchnorm(model, _eval_dataset(ctx, ds.x_train, ds.y_train), max_batches=50)
    if batches:
        ctx.progress.line(f"    BatchNorm statistics re-estimated on {batches} training batches")


def _final(history: dict, name: str) -> float | None:
    values = history.get(name)
    return round(float(values[-1]), 5) if values else None


def load_model(path, what: str | None = None, **options):
    """Load a ``.keras`` model artifact (or ``teacher.path``); ``what`` names it in errors.

    ``options`` go to :func:`edgecnn.models.loading.load_keras_model` (``trust_code``,
    ``origin``: the user's file an artifact was copied from, which errors then name).
    """
    from edgecnn.models.teachers import load_keras_model

    return load_keras_model(path, what=what or Path(path).name, **options)


def load_teacher(recipe: "Recipe", ctx: "BuildContext"):
    """The teacher artifact, trusted as ``teacher.trust_code`` says; errors name ``teacher.path`` if given."""
    cfg = recipe.teacher
    return load_model(ctx.artifacts.one("model.keras.teacher").path, "teacher.path" if cfg.path else None,
                      trust_code=cfg.trust_code, origin=cfg.path)


def _add_metadata(path: Path, recipe: "Recipe", ctx: "BuildContext") -> Path:
    """Write labels and input normalization into the .tflite (standard TFLite metadata)."""
    import json

    from edgecnn._version import __version__
    from edgecnn.tflite.metadata import write_metadata

    info = json.loads(ctx.artifacts.one("dataset").path.read_text())
    classes = info["class_names"]
    write_metadata(path, classes, info["normalization"],
                   input_color="RGB" if recipe.data.channels == 3 else "GRAYSCALE", name=recipe.name,
                   description=f"{recipe.student.architecture} image classifier, {len(classes)} classes (edgecnn)",
                   version=__version__, out=path)
    return path


def _seed_everything(seed: int) -> None:
    from edgecnn._tf import keras

    keras().utils.set_random_seed(seed)


# --------------------------------------------------------------------------- stages


def run_data(recipe: "Recipe", ctx: "BuildContext") -> StageResult:
    """Load and split the dataset; record its fingerprint, classes and normalization."""
    from edgecnn.data import dataset_fingerprint

    ds = ctx.dataset
    counts = {"train": len(ds.y_train), "validation": len(ds.y_val), "test": len(ds.y_test)}
    summary = {
        "source": recipe.data.source,
        "fingerprint": dataset_fingerprint(recipe.data, recipe.seed),
        "class_names": list(ds.class_names),
        "input_shape": list(_input_shape(recipe)),
        "normalization": ds.normalization.to_dict(),
        "splits": counts,
        "config": recipe.to_dict()["data"],
    }
    if ctx.inputs.get("data"):
        # The images' content (the fingerprint has only names, sizes and times), so a
        # changed image changes this file and with it every later stage's key.
        summary["inputs_sha256"] = ctx.inputs["data"]
    if ds.notes:  # e.g. hidden/system entries an image folder skipped
        summary["notes"] = list(ds.notes)
    path = write_json_atomic(ctx.path(DATASET_FILE), summary)
    ctx.progress.line(f"    {counts['train']} train / {counts['validation']} validation / {counts['test']} test images, "
                      f"{len(ds.class_names)} classes")
    for note in ds.notes:
        ctx.progress.line(f"    note: {note}")
    return StageResult([Artifact("dataset", "json", path)], {"splits": counts, "num_classes": len(ds.class_names)})


def _check_teacher_fits(model, recipe: "Recipe", num_classes: int, path) -> None:
    want = _input_shape(recipe)
    got = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    if got != want:
        raise ModelFileError(f"{path}: the teacher takes input {got}, the data gives {want}; "
                             "set data.image_size / data.channels to match the teacher")
    classes = model.output_shape[-1]
    if classes != num_classes:
        raise ModelFileError(f"{path}: the teacher has {classes} outputs, the dataset has {num_classes} classes; "
                             "use a teacher trained on these classes")


def run_teacher(recipe: "Recipe", ctx: "BuildContext") -> StageResult:
    """Train the teacher (or load ``teacher.path``) and measure its test accuracy."""
    from edgecnn.compress.train import evaluate_classifier, train_classifier
    from edgecnn.models import create_teacher

    ds = ctx.dataset
    cfg = recipe.teacher
    metrics: dict = {}
    if cfg.path is not None:
        if cfg.trust_code:
            ctx.progress.line(f"    teacher.trust_code: true: loading {cfg.path} runs the Python code it carries")
        model = load_model(cfg.path, "teacher.path", trust_code=cfg.trust_code)
        _check_teacher_fits(model, recipe, len(ds.class_names), cfg.path)
        metrics["source"] = str(cfg.path)
        metrics["trust_code"] = cfg.trust_code
    else:
        from edgecnn.compress.distribute import detach_from_strategy, make_strategy

        strategy = make_strategy(cfg.train.distribute, timeout_s=cfg.train.distribute_timeout_s)
        _seed_everything(recipe.seed)
        with strategy.scope():  # variables of the model (and, in fit, the optimizer) are mirrored
            model = create_teacher(cfg.architecture, _input_shape(recipe), len(ds.class_names), cfg)
        train, val = _train_val_datasets(ctx, cfg.train.batch_size)
        history = train_classifier(model, train, val, len(ds.x_train), cfg.train, ctx.progress, "teacher",
                                   checkpoint_dir=ctx.checkpoint_dir, checkpoint_key=ctx.stage_key,
                                   strategy=strategy)
        # On every worker, before anyone goes on alone. Every worker saves its model, so a
        # re-run finds the stage finished on all of them (the pipeline stops non-chief
        # workers after their last distributed stage).
        model = detach_from_strategy(model, strategy)
        _recalibrate(ctx, model)
        metrics.update(train_accuracy=_final(history, "accuracy"), val_accuracy=_final(history, "val_accuracy"),
                       val_accuracy_per_epoch=_rounded(history.get("val_accuracy")))
    metrics["params"] = int(model.count_params())
    metrics["accuracy"] = round(evaluate_classifier(model, _eval_dataset(ctx, ds.x_test, ds.y_test)), 5)
    return StageResult([keras_artifact("model.keras.teacher", save_keras(model, ctx.path(TEACHER_FILE)))], metrics)


def run_student(recipe: "Recipe", ctx: "BuildContext") -> StageResult:
    """Build the student and train it: distilled from the teacher, or on hard labels."""
    from edgecnn.compress.distill import distill_student, precompute_teacher_logits
    from edgecnn.compress.train import evaluate_classifier, train_classifier
    from edgecnn.models import create_student

    from edgecnn.compress.distribute import detach_from_strategy, make_strategy

    ds = ctx.dataset
    train_cfg = recipe.distill.train
    strategy = make_strategy(train_cfg.distribute, timeout_s=train_cfg.distribute_timeout_s)
    resume = {"checkpoint_dir": ctx.checkpoint_dir, "checkpoint_key": ctx.stage_key, "strategy": strategy}
    _seed_everything(recipe.seed)
    with strategy.scope():  # student and (online) teacher variables are mirrored
        student = create_student(recipe.student.architecture, _input_shape(recipe), len(ds.class_names),
                                 recipe.student)
        teacher = load_teacher(recipe, ctx) if recipe.distill.enabled else None
    if teacher is not None:
        soft = None
        if recipe.distill.teacher_outputs == "cached":
            ctx.progress.line("    computing teacher logits once (distill.teacher_outputs: cached)")
            soft = precompute_teacher_logits(teacher, _eval_dataset(ctx, ds.x_train, ds.y_train))
        train, val = _train_val_datasets(ctx, train_cfg.batch_size, soft)
        history = distill_student(student, teacher, train, val, len(ds.x_train), recipe.distill, ctx.progress,
                                  **resume)
    else:
        train, val = _train_val_datasets(ctx, train_cfg.batch_size)
        history = train_classifier(student, train, val, len(ds.x_train), train_cfg, ctx.progress, "student",
                                   **resume)
    student = detach_from_strategy(student, strategy)  # on every worker, before anyone goes on alone
    _recalibrate(ctx, student)
    metrics = {
        "params": int(student.count_params()),
        "train_accuracy": _final(history, "accuracy"),
        "val_accuracy": _final(history, "val_accuracy"),
        "val_accuracy_per_epoch": _rounded(history.get("val_accuracy")),
        "accuracy": round(evaluate_classifier(student, _eval_dataset(ctx, ds.x_test, ds.y_test)), 5),
    }
    return StageResult([keras_artifact("model.keras.student", save_keras(student, ctx.path(STUDENT_FILE)))], metrics)


def _format_artifact(fmt, path: Path) -> Artifact:
    return Artifact(fmt.role, fmt.kind, path, precision=fmt.precision, runtime=fmt.runtime)


def _model_to_convert(ctx: "BuildContext"):
    """The latest Keras model in the chain (the student, or what a later step made of it)."""
    from edgecnn.export.tflite import inference_model

    source = ctx.artifacts.latest(kind="keras")
    ctx.progress.line(f"    converting {source.path.name} ({source.role})")
    return inference_model(load_model(source.path)), source


def run_export(recipe: "Recipe", ctx: "BuildContext") -> StageResult:
    """Convert the latest Keras model to each float TFLite format in ``export.formats``, with TFLite metadata."""
    from edgecnn.export.formats import float_formats
    from edgecnn.export.tflite import convert_float

    model, source = _model_to_convert(ctx)
    produced = []
    for fmt in float_formats(recipe.export.formats):  # (edgetpu is the edgetpu stage's)
        path = _add_metadata(convert_float(model, fmt, ctx.path(fmt.filename)), recipe, ctx)
        produced.append(_format_artifact(fmt, path))
    return StageResult(produced, {"source": source.role})


def run_quantize(recipe: "Recipe", ctx: "BuildContext") -> StageResult:
    """Full-integer post-training quantization, calibrated on un-augmented training images; with metadata."""
    from edgecnn.data import representative_images
    from edgecnn.export.formats import get_format
    from edgecnn.export.tflite import convert_int8

    ds = ctx.dataset
    n = recipe.quantize.calibration_samples or recipe.data.representative_samples
    calibration = ds.normalization.apply(representative_images(ds, n, recipe.seed))
    model, source = _model_to_convert(ctx)
    fmt = get_format("int8")
    path = convert_int8(model, calibration, recipe.quantize.io_dtype, ctx.path(fmt.filename))
    _add_metadata(path, recipe, ctx)
    return StageResult([_format_artifact(fmt, path)], {"calibration_samples": int(len(calibration)),
                                                       "io_dtype": recipe.quantize.io_dtype, "source": source.role})


def edgetpu_environment(recipe: "Recipe") -> dict[str, str]:
    """The compiler the ``edgetpu`` stage would use, for its cache key: a new compiler
    (or one installed since a skip) re-compiles."""
    from edgecnn.export.edgetpu import COMPILER, compiler_identity

    return {COMPILER: compiler_identity() or "absent"}


def run_edgetpu(recipe: "Recipe", ctx: "BuildContext") -> StageResult:
    """Compile the int8 model for the Coral Edge TPU with ``edgetpu_compiler``.

    Skipped, with the reason and how to install the compiler, on a host without it: the
    build goes on and the reports say so. A compiler output without the
    ``edgetpu-custom-op`` (nothing mapped to the TPU) fails the stage.
    """
    import os
    import tempfile

    from edgecnn.errors import MissingDependencyError
    from edgecnn.export.edgetpu import compile_edgetpu, find_edgetpu_compiler, format_compile_summary
    from edgecnn.export.formats import EDGETPU_FORMAT

    # Present: the recipe refuses edgetpu without quantize.int8 (edgecnn.recipe).
    int8 = ctx.artifacts.one("model.tflite.int8")
    out = ctx.path(EDGETPU_FORMAT.filename)
    try:
        find_edgetpu_compiler()
    except MissingDependencyError as exc:
        # An earlier build's compile would pass for this build's model: this stage's file, removed.
        out.unlink(missing_ok=True)
        return StageResult(skipped=str(exc))
    # Compiled in a folder of its own (".tmp-": a killed build's is cleaned up), so the
    # compiler's log and report stay out of the run directory and the model file, which
    # is this stage's, is replaced whatever an earlier build left there.
    with tempfile.TemporaryDirectory(prefix=".tmp-edgetpu-stage.", dir=ctx.out_dir) as work:
        compiled = compile_edgetpu(int8.path, work)
        os.replace(compiled.model, out)
    parsed = compiled.parsed
    for line in format_compile_summary(parsed, out.name).splitlines():
        ctx.progress.line(f"    {line}")
    keep = ("compiler_version", "total_ops", "ops_on_tpu", "ops_on_cpu", "subgraphs", "cpu_fallback_ops",
            "on_chip_memory_used_bytes", "off_chip_memory_used_bytes")
    metrics = {k: parsed.get(k) for k in keep}
    metrics["source"] = int8.role
    return StageResult([_format_artifact(EDGETPU_FORMAT, out)], metrics)


# Runtimes the evaluate stage runs on the host: the TFLite CPU interpreter. An Edge TPU
# model needs the accelerator (measure it with a coral bench target), so it is listed as
# not evaluable rather than run on kernels it was not compiled for.
HOST_RUNTIMES = frozenset({"litert"})
NOT_EVALUABLE = "not evaluable on this host"
# Per runtime the host lacks: what it is, and how to measure such a model ({file}) instead.
_NOT_EVALUABLE_WHY = {
    "edgetpu": ("a Coral Edge TPU", "measure it on one with `edgecnn bench {file} --target coral --inputs "
                                    "bench_samples_N.npz`, or a `bench: [{{target: coral, samples: N}}]` recipe entry"),
}


def _not_evaluable_reason(artifact: Artifact, host_runtime: str) -> str:
    what, hint = _NOT_EVALUABLE_WHY.get(artifact.runtime, (None, None))
    return (f"needs the {artifact.runtime} runtime{f' ({what})' if what else ''}; the host evaluates on "
            f"{host_runtime} (CPU)" + (f"; {hint.format(file=artifact.path.name)}" if hint else ""))


def run_evaluate(recipe: "Recipe", ctx: "BuildContext") -> StageResult:
    """Run every TFLite model whose runtime the host has on the test split, with the real TFLite runtime.

    A model for another runtime (an Edge TPU model) is listed with ``status`` "not
    evaluable on this host" and no accuracy; the build goes on.
    """
    from edgecnn.tflite.reader import inspect_tflite
    from edgecnn.fileio import path_size
    from edgecnn.runtime.interpreter import evaluate_tflite, runtime_name_version

    ds = ctx.dataset
    x_test = ds.normalization.apply(ds.x_test)
    runtime, version = runtime_name_version()
    results = {}
    skipped = []
    for artifact in ctx.artifacts.all(kind=MODEL_FILE_KINDS):
        row = {"path": artifact.path.name, "role": artifact.role, "kind": artifact.kind,
               "precision": artifact.precision, "runtime": artifact.runtime}
        if artifact.runtime not in HOST_RUNTIMES:
            row.update(status=NOT_EVALUABLE, accuracy=None, size_bytes=path_size(artifact.path),
                       reason=_not_evaluable_reason(artifact, runtime))
            skipped.append(f"{artifact.path.name}: {NOT_EVALUABLE}: {row['reason']}")
        else:
            summary = inspect_tflite(artifact.path)
            accuracy = evaluate_tflite(artifact.path, x_test, ds.y_test, num_threads=recipe.evaluate.threads)
            row.update(status="evaluated", accuracy=round(float(accuracy), 5), input_dtype=summary.inputs[0].dtype,
                       output_dtype=summary.outputs[0].dtype, size_bytes=summary.file_size)
        results[artifact.name] = row
    # Names only: the accuracies are the build's result, printed once at its end (the CLI's
    # table) and kept in report.json, not repeated here.
    evaluated = ", ".join(r["path"] for r in results.values() if r["status"] == "evaluated") or "no .tflite model"
    ctx.progress.line(f"    {evaluated} on {len(ds.y_test)} test images ({runtime} {version})")
    for line in skipped:
        ctx.progress.line(f"    {line}")
    evaluation = {"runtime": runtime, "runtime_version": version, "test_images": int(len(ds.y_test)),
                  "models": results}
    path = write_json_atomic(ctx.path(EVALUATION_FILE), evaluation)
    return StageResult([Artifact("report.evaluation", "json", path)], evaluation)


def run_bundle(recipe: "Recipe", ctx: "BuildContext") -> StageResult:
    """A deploy bundle of every produced model in ``bundle/`` (see edgecnn.export.bundle)."""
    from edgecnn.export.bundle import write_bundle

    # Every host-runnable model of this build (the golden outputs need the host interpreter,
    # so Edge TPU files stay out), by kind: never a stale file of another build by name.
    models = ctx.artifacts.all(kind="tflite")
    # The bundle folder is this stage's own output inside the run directory: replace it.
    path = write_bundle(ctx.out_dir, ctx.path(BUNDLE_DIR), recipe=recipe, force=True,
                        models=[(m.name, m.precision, m.path) for m in models])
    ctx.progress.line(f"    {path}: verify it with 'edgecnn verify {path}'")
    return StageResult([Artifact("bundle", "dir", path)], {"models": [m.role for m in models]})


def run_bench(recipe: "Recipe", ctx: "BuildContext") -> StageResult:
    """Benchmark every .tflite (int8 first, then float) on each ``bench`` target.

    Each target gets the first ``samples`` test-split images (normalized, as
    ``bench_samples_<n>.npz``) for device-side accuracy. Results are appended to
    ``bench.jsonl`` in the run directory (the file ``edgecnn bench --out RUN_DIR`` also
    appends to) and kept in the stage metrics, which the report shows under ``bench``.
    A target that fails -- unreachable, timed out, bad options -- is recorded as a failed
    result, never fatal to the build.

    Cached like every stage, by the ``bench`` section and the content of the models and
    data: re-measure with a changed ``bench`` section (``--set``) or by deleting
    ``stages/bench.json``.
    """
    import numpy as np

    from edgecnn.bench.harness import AdbOptions, SshOptions, run_benchmarks
    from edgecnn.bench.schema import append_result, failed_result, model_info
    from edgecnn.targets import parse_target
    from edgecnn.errors import EdgecnnError

    ds = ctx.dataset
    # int8 first (the model a device runs), then the float ones, each kind in chain order.
    models = sorted(ctx.artifacts.all(kind=MODEL_FILE_KINDS), key=lambda a: (a.precision != "int8", a.name))
    samples: dict[int, Path] = {}
    for n in sorted({t.samples for t in recipe.bench if t.samples}):
        count = min(n, len(ds.y_test))
        with atomic_path(ctx.path(f"bench_samples_{n}.npz")) as tmp:
            # (np.savez dates its zip entries 1980-01-01: the file's bytes depend on the data only)
            np.savez(tmp, x=ds.normalization.apply(ds.x_test[:count]).astype(np.float32),
                     y=np.asarray(ds.y_test[:count]))
        samples[n] = ctx.path(f"bench_samples_{n}.npz")
    results = []
    for cfg in recipe.bench:
        target = parse_target(cfg.target)  # once per bench row; the harness takes the Target
        settings = dict(threads=cfg.threads, runs=cfg.runs, warmup=cfg.warmup, timeout_s=cfg.timeout_s,
                        inputs_npz=samples.get(cfg.samples),
                        ssh=SshOptions(remote_python=cfg.remote_python, identity=cfg.identity,
                                       known_hosts=cfg.known_hosts),
                        adb=AdbOptions(benchmark_binary=cfg.benchmark_binary))
        # An Edge TPU model runs only where an Edge TPU is (a coral target); CPU models run everywhere.
        runtimes = {"litert", "edgetpu"} if target.kind == "coral" else {"litert"}
        for artifact in (a for a in models if a.runtime in runtimes):
            path = artifact.path
            try:
                result = run_benchmarks(path, [target], **settings)[0]
            except EdgecnnError as exc:  # bad options for this target: recorded, not fatal
                result = failed_result(cfg.target, model_info(path), str(exc), threads=cfg.threads, runs=cfg.runs,
                                       warmup=cfg.warmup)
            append_result(ctx.out_dir, result)
            results.append(result)
            ctx.progress.line(f"    {cfg.target}: {path.name}: " + _bench_note(result))
    failed = sum(r["status"] != "ok" for r in results)
    produced = [Artifact(f"bench_samples.{n}", "npz", path) for n, path in samples.items()]
    return StageResult(produced, {"results": results, "failed": failed, "results_file": "bench.jsonl"})


def _bench_note(result: dict) -> str:
    if result["status"] != "ok":
        return f"FAILED: {result['reason']}"
    lat = result["latency_ms"]
    note = f"p50 {lat['p50'] if lat['p50'] is not None else lat['mean']:.3f} ms"
    if result.get("accuracy") is not None:
        note += f", accuracy {result['accuracy'] * 100:.2f}% on {result['samples']} test images"
    return note


__all__ = ["HOST_RUNTIMES", "NOT_EVALUABLE", "StageResult", "edgetpu_environment", "keras_artifact", "load_model",
           "run_bench", "run_bundle", "run_data", "run_edgetpu", "run_evaluate", "run_export", "run_quantize",
           "run_student", "run_teacher", "save_keras"]
