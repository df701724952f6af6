"""The ``qat`` stage: quantization-aware training of the distilled (and possibly pruned) student.

The source is the latest deployable Keras model (``model.keras.pruned`` after ``prune``,
else the student). After pruning, the prune-preserve scheme keeps the zeros; the stage
reports the sparsity it actually kept. The QAT model (``qat.keras``, role
``model.keras.qat``) becomes an int8 file only (``qat_int8.tflite``); its float
reference in the report is its source.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecnn.artifacts import Artifact
from edgecnn.stage import StageResult
from edgecnn.stages.common import (deployable_models, eval_dataset, fine_tune, final_metric, load_model, rounded,
                                   save_keras, seed_everything)

if TYPE_CHECKING:
    from edgecnn.recipe import Recipe
    from edgecnn.stage import BuildContext

QAT_FILE = "qat.keras"


def _kernel_zeros(model) -> tuple[int, int]:
    """(zeros, weights) over every Conv2D/Dense kernel, wrapped or not."""
    import numpy as np

    zeros = total = 0
    for variable in model.weights:
        name = variable.name.split("/")[-1]
        if name.startswith("kernel") and len(variable.shape) >= 2 and "depthwise" not in variable.name:
            values = np.asarray(variable.numpy())
            zeros += int((values == 0).sum())
            total += values.size
    return zeros, total


def check_qat(recipe: "Recipe") -> None:
    """Before training: every ``qat.keep_float`` name is a layer of the student."""
    from edgecnn.compress.qat import check_keep_float
    from edgecnn.stages.common import student_architecture

    if recipe.qat.keep_float:
        check_keep_float(student_architecture(recipe), recipe.qat.keep_float)


def run_qat(recipe: "Recipe", ctx: "BuildContext") -> StageResult:
    """Make the latest deployable model quantization-aware, fine-tune it (distilled), save it."""
    from edgecnn.compress.qat import quantize_aware
    from edgecnn.compress.train import evaluate_classifier

    cfg = recipe.qat
    ds = ctx.dataset
    source = deployable_models(ctx, quantization_aware=False)[-1]
    model = load_model(source.path)
    preserve = cfg.preserve_sparsity if cfg.preserve_sparsity is not None else source.role == "model.keras.pruned"
    zeros_before, total = _kernel_zeros(model)
    ctx.progress.line(f"    quantization-aware training of {source.path.name}"
                      + (" (sparsity-preserving: the pruned zeros stay zero)" if preserve else "")
                      + (f"; float layers: {', '.join(cfg.keep_float)}" if cfg.keep_float else ""))
    seed_everything(recipe.seed)
    qat = quantize_aware(model, keep_float=tuple(cfg.keep_float), preserve_sparsity=preserve)
    history = fine_tune(recipe, ctx, qat, cfg.train, "qat")
    zeros_after, _ = _kernel_zeros(qat)
    metrics = {
        "source": source.role,
        "preserve_sparsity": preserve,
        "keep_float": list(cfg.keep_float),
        "kernel_sparsity_before": round(zeros_before / max(1, total), 5),
        "kernel_sparsity_after": round(zeros_after / max(1, total), 5),
        "params": int(model.count_params()),
        "train_accuracy": final_metric(history, "accuracy"),
        "val_accuracy": final_metric(history, "val_accuracy"),
        "val_accuracy_per_epoch": rounded(history.get("val_accuracy")),
        "accuracy": round(evaluate_classifier(qat, eval_dataset(ctx, ds.x_test, ds.y_test)), 5),
    }
    if preserve:
        ctx.progress.line(f"    kernel sparsity {metrics['kernel_sparsity_before']:.1%} before QAT, "
                          f"{metrics['kernel_sparsity_after']:.1%} after")
    path = save_keras(qat, ctx.path(QAT_FILE))
    return StageResult([Artifact("model.keras.qat", "keras", path, precision="float32", source=source.role)], metrics)
