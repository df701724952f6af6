"""The ``teacher`` stage: train the teacher, or load (and check) ``teacher.path``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecnn.errors import ModelFileError
from edgecnn.stage import StageResult
from edgecnn.stages.common import (TEACHER_FILE, eval_dataset, final_metric, input_shape, keras_artifact, load_model,
                                   recalibrate, rounded, save_keras, seed_everything, train_val_datasets)

if TYPE_CHECKING:
    from edgecnn.recipe import Recipe
    from edgecnn.stage import BuildContext


def _check_teacher_fits(model, recipe: "Recipe", num_classes: int, path) -> None:
    want = input_shape(recipe)
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
        seed_everything(recipe.seed)
        with strategy.scope():  # variables of the model (and, in fit, the optimizer) are mirrored
            model = create_teacher(cfg.architecture, input_shape(recipe), len(ds.class_names), cfg)
        train, val = train_val_datasets(ctx, cfg.train.batch_size, augment=cfg.train.augment is not False)
        history = train_classifier(model, train, val, len(ds.x_train), cfg.train, ctx.progress, "teacher",
                                   checkpoint_dir=ctx.checkpoint_dir, checkpoint_key=ctx.stage_key,
                                   strategy=strategy)
        # On every worker, before anyone goes on alone. Every worker saves its model, so a
        # re-run finds the stage finished on all of them (the pipeline stops non-chief
        # workers after their last distributed stage).
        model = detach_from_strategy(model, strategy)
        recalibrate(ctx, model)
        metrics.update(train_accuracy=final_metric(history, "accuracy"), val_accuracy=final_metric(history, "val_accuracy"),
                       val_accuracy_per_epoch=rounded(history.get("val_accuracy")))
    metrics["params"] = int(model.count_params())
    metrics["accuracy"] = round(evaluate_classifier(model, eval_dataset(ctx, ds.x_test, ds.y_test)), 5)
    return StageResult([keras_artifact("model.keras.teacher", save_keras(model, ctx.path(TEACHER_FILE)))], metrics)
