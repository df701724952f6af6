"""What every stage needs: file names, saving and loading Keras models, the datasets a
training stage feeds, BatchNorm re-estimation, seeding, TFLite metadata, and the model to convert.

A stage module imports these instead of re-writing them; a new training stage (prune,
QAT, channel pruning) is its ``run_<name>`` function plus a row in
:data:`edgecnn.pipeline.STAGES`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgecnn.artifacts import QUANTIZATION_AWARE_ROLES, Artifact
from edgecnn.fileio import atomic_path

if TYPE_CHECKING:
    from edgecnn.recipe import Recipe
    from edgecnn.stage import BuildContext

DATASET_FILE = "dataset.json"

TEACHER_FILE = "teacher.keras"

STUDENT_FILE = "student.keras"

EVALUATION_FILE = "evaluation.json"

BUNDLE_DIR = "bundle"

def keras_artifact(role: str, path: Path, source: Artifact | None = None) -> Artifact:
    """A float32 ``.keras`` model artifact (``model.keras.<step>``), made from ``source`` if given."""
    return Artifact(role, "keras", path, precision="float32", source=source.role if source is not None else None)


def input_shape(recipe: "Recipe") -> tuple[int, int, int]:
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


def eval_dataset(ctx: "BuildContext", x, y):
    from edgecnn.data import make_tf_dataset

    ds = ctx.dataset
    return make_tf_dataset(x, y, ds.normalization, ctx.recipe.evaluate.batch_size)


def train_val_datasets(ctx: "BuildContext", batch_size: int, soft_targets=None, augment: bool = True):
    """Shuffled training batches (augmented by ``data.augment`` when ``augment``) and validation batches."""
    from edgecnn.data import make_tf_dataset

    r, ds = ctx.recipe, ctx.dataset
    train = make_tf_dataset(ds.x_train, ds.y_train, ds.normalization, batch_size,
                            augment=r.data.augment if augment else None, shuffle=True, seed=r.seed, extra=soft_targets)
    val = None
    if len(ds.x_val):
        val = make_tf_dataset(ds.x_val, ds.y_val, ds.normalization, r.evaluate.batch_size)
    return train, val


def rounded(values) -> list[float]:
    return [round(float(v), 5) for v in values or []]


def recalibrate(ctx: "BuildContext", model) -> None:
    """Fresh BatchNorm statistics from un-augmented training images (see recalibrate_batchnorm)."""
    from edgecnn.compress.train import recalibrate_batchnorm

    ds = ctx.dataset
    batches = recalibrate_batchnorm(model, eval_dataset(ctx, ds.x_train, ds.y_train), max_batches=50)
    if batches:
        ctx.progress.line(f"    BatchNorm statistics re-estimated on {batches} training batches")


def final_metric(history: dict, name: str) -> float | None:
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


def student_architecture(recipe: "Recipe"):
    """The recipe's student, untrained and without downloaded weights: its layer names, for
    checks that should fail before any training (the class count does not change them)."""
    from edgecnn.models import create_student

    cfg = recipe.student.model_copy(update={"weights": None})
    return create_student(cfg.architecture, input_shape(recipe), 2, cfg)


def fine_tune(recipe: "Recipe", ctx: "BuildContext", model, train_cfg, label: str, callbacks=()) -> dict:
    """Train ``model`` in place for a compression stage (prune, QAT, channels); returns the history.

    Distilled from the build's teacher with the recipe's ``distill.loss`` (through the loss
    registry) when there is one, else on hard labels; resumable per epoch like every stage.
    On un-augmented images unless ``train_cfg.augment`` is true (see TrainConfig.augment).
    """
    from edgecnn.compress.distill import distill_student, precompute_teacher_logits
    from edgecnn.compress.train import train_classifier

    ds = ctx.dataset
    resume = {"checkpoint_dir": ctx.checkpoint_dir, "checkpoint_key": ctx.stage_key}
    augment = train_cfg.augment is True
    ctx.progress.line(f"    fine-tuning on {'augmented' if augment else 'un-augmented'} training images"
                      + ("" if augment else f" ({label}.train.augment: true to augment)"))
    if recipe.distill.enabled and "model.keras.teacher" in ctx.artifacts:
        teacher = load_teacher(recipe, ctx)
        soft = None
        if recipe.distill.teacher_outputs == "cached":
            soft = precompute_teacher_logits(teacher, eval_dataset(ctx, ds.x_train, ds.y_train))
        train, val = train_val_datasets(ctx, train_cfg.batch_size, soft, augment=augment)
        cfg = recipe.distill.model_copy(update={"train": train_cfg})
        return distill_student(model, teacher, train, val, len(ds.x_train), cfg, ctx.progress, label=label,
                               callbacks=callbacks, **resume)
    train, val = train_val_datasets(ctx, train_cfg.batch_size, augment=augment)
    return train_classifier(model, train, val, len(ds.x_train), train_cfg, ctx.progress, label,
                            callbacks=callbacks, **resume)


# The recipe parts add_metadata writes into a .tflite besides the dataset's labels and
# normalization (an upstream artifact): every stage that calls it lists them in its cache
# key, so a renamed recipe never restores a file carrying the other name from the cache.
METADATA_SECTIONS = ("name", "student")


def add_metadata(path: Path, recipe: "Recipe", ctx: "BuildContext") -> Path:
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


def seed_everything(seed: int) -> None:
    from edgecnn._tf import keras

    keras().utils.set_random_seed(seed)


def format_artifact(fmt, path: Path, source: Artifact | None = None) -> Artifact:
    """The artifact of ``fmt`` converted from ``source`` (a Keras model), written at ``path``."""
    role = fmt.role_for(source.name) if source is not None else fmt.role
    return Artifact(role, fmt.kind, path, precision=fmt.precision, runtime=fmt.runtime,
                    source=source.role if source is not None else None)


def deployable_models(ctx: "BuildContext", quantization_aware: bool = True) -> list[Artifact]:
    """The Keras models that ship to a device, in chain order: the student and every model a
    compression step made of it (pruned, QAT ...); never the teacher. ``quantization_aware``
    False leaves out QAT models (the float formats have no use for them)."""
    return [a for a in ctx.artifacts.all(kind="keras") if a.role != "model.keras.teacher"
            and (quantization_aware or a.role not in QUANTIZATION_AWARE_ROLES)]


def calibration_images(recipe: "Recipe", ctx: "BuildContext", samples: int | None = None):
    """Un-augmented, normalized training images for quantization calibration: ``samples``,
    else ``quantize.calibration_samples``, else ``data.representative_samples``."""
    from edgecnn.data import representative_images

    ds = ctx.dataset
    n = samples or recipe.quantize.calibration_samples or recipe.data.representative_samples
    return ds.normalization.apply(representative_images(ds, n, recipe.seed))


def float32_file(ctx: "BuildContext", source: Artifact, folder: Path) -> tuple[Path, bool]:
    """The float32 ``.tflite`` of Keras model ``source`` that litert-quantizer starts from: the
    export stage's, else one converted into ``folder`` (a temporary folder of the caller's,
    when ``export.formats`` leaves float32 out). Also whether it is the exported one."""
    from edgecnn.export.formats import get_format
    from edgecnn.export.tflite import convert

    fmt = get_format("float32")
    exported = ctx.artifacts.get(fmt.role_for(source.name))
    if exported is not None:
        return exported.path, True
    return convert(model_to_convert(ctx, source)[0], fmt, Path(folder) / "float32.tflite"), False


def model_to_convert(ctx: "BuildContext", source: Artifact | None = None):
    """``source`` (default: the latest Keras model in the chain) loaded for conversion, and its artifact."""
    from edgecnn.export.tflite import inference_model

    source = source or ctx.artifacts.latest(kind="keras")
    ctx.progress.line(f"    converting {source.path.name} ({source.role})")
    return inference_model(load_model(source.path)), source
