"""The ``student`` stage: build the student and train it, distilled from the teacher or on hard labels."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecnn.stage import StageResult
from edgecnn.stages.common import (STUDENT_FILE, eval_dataset, final_metric, input_shape, keras_artifact,
                                   load_teacher, recalibrate, rounded, save_keras, seed_everything,
                                   train_val_datasets)

if TYPE_CHECKING:
    from edgecnn.recipe import Recipe
    from edgecnn.stage import BuildContext


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
    seed_everything(recipe.seed)
    with strategy.scope():  # student and (online) teacher variables are mirrored
        student = create_student(recipe.student.architecture, input_shape(recipe), len(ds.class_names),
                                 recipe.student)
        teacher = load_teacher(recipe, ctx) if recipe.distill.enabled else None
    if teacher is not None:
        soft = None
        if recipe.distill.teacher_outputs == "cached":
            ctx.progress.line("    computing teacher logits once (distill.teacher_outputs: cached)")
            soft = precompute_teacher_logits(teacher, eval_dataset(ctx, ds.x_train, ds.y_train))
        train, val = train_val_datasets(ctx, train_cfg.batch_size, soft, augment=train_cfg.augment is not False)
        history = distill_student(student, teacher, train, val, len(ds.x_train), recipe.distill, ctx.progress,
                                  **resume)
    else:
        train, val = train_val_datasets(ctx, train_cfg.batch_size, augment=train_cfg.augment is not False)
        history = train_classifier(student, train, val, len(ds.x_train), train_cfg, ctx.progress, "student",
                                   **resume)
    student = detach_from_strategy(student, strategy)  # on every worker, before anyone goes on alone
    recalibrate(ctx, student)
    metrics = {
        "params": int(student.count_params()),
        "train_accuracy": final_metric(history, "accuracy"),
        "val_accuracy": final_metric(history, "val_accuracy"),
        "val_accuracy_per_epoch": rounded(history.get("val_accuracy")),
        "accuracy": round(evaluate_classifier(student, eval_dataset(ctx, ds.x_test, ds.y_test)), 5),
    }
    return StageResult([keras_artifact("model.keras.student", save_keras(student, ctx.path(STUDENT_FILE)))], metrics)
