"""The ``prune`` stage: magnitude or M:N pruning of the student, fine-tuned with distillation.

Wrap (tfmot ``prune_low_magnitude`` on the chosen layers), fine-tune with the recipe's
distillation loss and ``UpdatePruningStep``, strip the wrappers, re-estimate BatchNorm,
then save a plain model (``pruned.keras``, role ``model.keras.pruned``) whose kernels hold
the zeros. Export and quantize convert it beside the student (``pruned_int8.tflite``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecnn.stage import StageResult
from edgecnn.stages.common import (eval_dataset, final_metric, keras_artifact, load_model, recalibrate, rounded,
                                   save_keras, seed_everything)

if TYPE_CHECKING:
    from edgecnn.recipe import Recipe
    from edgecnn.stage import BuildContext

PRUNED_FILE = "pruned.keras"


def check_prune(recipe: "Recipe") -> None:
    """Before training: ``prune.include``/``exclude`` match layers of the student and leave
    something to prune (one line naming the pattern and close layer names otherwise)."""
    from edgecnn.compress.channels import choose_groups
    from edgecnn.compress.prune import choose_layers
    from edgecnn.stages.common import student_architecture

    model = student_architecture(recipe)
    if recipe.prune.method == "channels":
        choose_groups(model, recipe.prune)
        return
    choose_layers(model, recipe.prune)


def run_prune(recipe: "Recipe", ctx: "BuildContext") -> StageResult:
    """Prune the student to ``prune.sparsity`` (or M:N) while fine-tuning it; save the stripped model."""
    from edgecnn.compress.engine import steps_for
    from edgecnn.compress.prune import (choose_layers, count_nonzero_params, kernel_sparsity, strip,
                                        update_step_callback, wrap_for_pruning)
    from edgecnn.compress.train import evaluate_classifier
    from edgecnn.stages.common import fine_tune

    cfg = recipe.prune
    ds = ctx.dataset
    source = ctx.artifacts.one("model.keras.student")
    student = load_model(source.path)
    if cfg.method == "channels":
        return _prune_channels(recipe, ctx, student, source)
    choice = choose_layers(student, cfg)
    total = steps_for(len(ds.x_train), cfg.train.batch_size) * cfg.train.epochs
    pattern = f"{cfg.m_by_n[0]}:{cfg.m_by_n[1]}" if cfg.m_by_n else f"{cfg.sparsity:.0%}"
    ctx.progress.line(f"    pruning {len(choice.pruned)} layers to {pattern} ({cfg.schedule.kind}, steps "
                      f"{int(cfg.begin * total)}-{int(round(cfg.end * total))} of {total}); "
                      f"{len(choice.kept)} stay dense")
    seed_everything(recipe.seed)
    wrapped = wrap_for_pruning(student, cfg, total, choice)
    history = fine_tune(recipe, ctx, wrapped, cfg.train, "prune", callbacks=[update_step_callback()])
    pruned = strip(wrapped)
    recalibrate(ctx, pruned)
    per_layer = kernel_sparsity(pruned, choice.pruned)
    pruned_weights = sum(int(layer.kernel.shape.num_elements()) for layer in pruned.layers
                         if layer.name in per_layer)
    zeros = sum(per_layer[layer.name] * layer.kernel.shape.num_elements() for layer in pruned.layers
                if layer.name in per_layer)
    metrics = {
        "source": source.role,
        "params": int(pruned.count_params()),
        "nonzero_params": count_nonzero_params(pruned),
        "sparsity_pruned_layers": round(zeros / max(1, pruned_weights), 5),
        "sparsity_per_layer": per_layer,
        "kept_dense": choice.kept,
        "m_by_n": list(cfg.m_by_n) if cfg.m_by_n else None,
        "train_accuracy": final_metric(history, "accuracy"),
        "val_accuracy": final_metric(history, "val_accuracy"),
        "val_accuracy_per_epoch": rounded(history.get("val_accuracy")),
        "accuracy": round(evaluate_classifier(pruned, eval_dataset(ctx, ds.x_test, ds.y_test)), 5),
    }
    ctx.progress.line(f"    sparsity of the pruned layers {metrics['sparsity_pruned_layers']:.1%}, "
                      f"{metrics['nonzero_params']:,} of {metrics['params']:,} parameters non-zero")
    return StageResult([keras_artifact("model.keras.pruned", save_keras(pruned, ctx.path(PRUNED_FILE)), source)],
                       metrics)


def _prune_channels(recipe: "Recipe", ctx: "BuildContext", student, source) -> StageResult:
    """Remove ``prune.ratio`` of the channels of every chosen channel group, then fine-tune."""
    from edgecnn.compress.channels import choose_groups, prune_channels
    from edgecnn.compress.train import evaluate_classifier
    from edgecnn.stages.common import fine_tune

    cfg = recipe.prune
    ds = ctx.dataset
    groups = choose_groups(student, cfg)
    slim, widths = prune_channels(student, cfg.ratio, cfg.criterion, groups=groups)
    before, after = sum(g.channels for g in groups), sum(widths[g.producer][1] for g in groups)
    residual = sum(g.residual for g in groups)
    ctx.progress.line(f"    removing channels of {len(groups)} groups ({residual} residual chains), {len(widths)} layers, "
                      f"{cfg.criterion} ranking: {before} -> {after} channels; "
                      f"parameters {student.count_params():,} -> {slim.count_params():,}")
    seed_everything(recipe.seed)
    history = fine_tune(recipe, ctx, slim, cfg.train, "prune")
    recalibrate(ctx, slim)
    metrics = {
        "source": source.role,
        "method": "channels",
        "ratio": cfg.ratio,
        "criterion": cfg.criterion,
        "residual": cfg.residual,
        "groups": [{"producers": list(g.producers), "consumers": list(g.consumers),
                    "channels": [g.channels, widths[g.producer][1]]} for g in groups],
        "params_before": int(student.count_params()),
        "params": int(slim.count_params()),
        "channels": {name: list(w) for name, w in widths.items()},
        "train_accuracy": final_metric(history, "accuracy"),
        "val_accuracy": final_metric(history, "val_accuracy"),
        "val_accuracy_per_epoch": rounded(history.get("val_accuracy")),
        "accuracy": round(evaluate_classifier(slim, eval_dataset(ctx, ds.x_test, ds.y_test)), 5),
    }
    return StageResult([keras_artifact("model.keras.pruned", save_keras(slim, ctx.path(PRUNED_FILE)), source)], metrics)
