"""Supervised training of one model from a :class:`~edgecnn.recipe.TrainConfig`, and BatchNorm upkeep.

Training itself is :func:`edgecnn.compress.engine.fit`; this module keeps the
classifier-level entry points the stages call.
"""

from __future__ import annotations

from edgecnn._tf import tensorflow
from edgecnn.compress.engine import fit, make_optimizer, steps_for
from edgecnn.compress.losses import CrossEntropy
from edgecnn.progress import Progress, keras_progress_callback

__all__ = ["train_classifier", "evaluate_classifier", "recalibrate_batchnorm", "batchnorm_layers",
           "hard_label_loss", "make_optimizer", "steps_for"]


def hard_label_loss(label_smoothing: float):
    """Batch-mean cross-entropy on logits against integer labels, with optional label smoothing."""
    loss = CrossEntropy(label_smoothing)
    tf = tensorflow()

    def mean(y_true, logits):
        return tf.reduce_mean(loss.per_example(y_true, logits))

    return mean


def train_classifier(model, train_ds, val_ds, n_train: int, cfg, progress: Progress, label: str, *,
                     callbacks=(), checkpoint_dir=None, checkpoint_key: str = "", strategy=None) -> dict:
    """Fit ``model`` (logits output) on integer labels with the ``cross_entropy`` loss.

    Args:
        model: a functional tf_keras model producing logits (built inside
            ``strategy.scope()`` when ``strategy`` is given).
        train_ds, val_ds: batched tf.data datasets of (image, label).
        n_train: training images, for the step count.
        cfg: TrainConfig.
        progress: where epoch lines go.
        label: name in progress lines.
        callbacks: extra tf_keras callbacks (e.g. tfmot's ``UpdatePruningStep``).
        checkpoint_dir: per-epoch checkpoints; a run killed part-way resumes from here.
        checkpoint_key: more content for the checkpoint key (e.g. the stage's cache key).
        strategy: a ``tf.distribute.Strategy`` (None: the current one).

    Returns:
        The Keras history dict (per-epoch metrics, resumed epochs included).
    """
    steps = steps_for(n_train, cfg.batch_size)
    result = fit(
        model, train_ds, val_ds, loss=CrossEntropy(cfg.label_smoothing), cfg=cfg, steps_per_epoch=steps,
        callbacks=[*callbacks, keras_progress_callback(progress, label, cfg.epochs, steps)],
        checkpoint_dir=checkpoint_dir, checkpoint_key_extra=checkpoint_key, strategy=strategy,
        on_resume=resume_note(progress, label, cfg.epochs),
    )
    return result.history


def resume_note(progress: Progress, label: str, epochs: int):
    """An ``on_resume`` for :func:`~edgecnn.compress.engine.fit` that prints where training picks up."""
    return lambda done: progress.line(f"    {label}: resuming from the checkpoint after epoch {done}/{epochs}")


def evaluate_classifier(model, ds) -> float:
    """Top-1 accuracy of a logits (or probabilities) model on a batched (image, label) dataset."""
    tf = tensorflow()
    correct = total = 0
    for x, y in ds:
        pred = tf.argmax(model(x, training=False), axis=-1)
        correct += int(tf.reduce_sum(tf.cast(tf.equal(pred, tf.cast(tf.reshape(y, [-1]), pred.dtype)), tf.int32)))
        total += int(tf.shape(y)[0])
    return correct / max(1, total)


_BATCHNORM_CLASSES = ("BatchNormalization", "SyncBatchNormalization")


def batchnorm_layers(model) -> list:
    """Every BatchNormalization layer in ``model``: top level, in nested models and inside wrappers.

    tfmot's ``PruneLowMagnitude`` and ``QuantizeWrapper`` (tf_keras ``Wrapper`` layers)
    hold the real layer in ``.layer``; a nested functional model holds its own ``.layers``.
    """
    found: list = []
    seen: set[int] = set()

    def visit(layer) -> None:
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if layer.__class__.__name__ in _BATCHNORM_CLASSES:
            found.append(layer)
        inner = getattr(layer, "layer", None)  # tf_keras Wrapper
        if inner is not None and hasattr(inner, "weights"):
            visit(inner)
        for child in getattr(layer, "layers", ()) or ():
            visit(child)

    for layer in model.layers:
        visit(layer)
    return found


def _pruning_steps(model) -> list:
    return [layer.pruning_step for layer in model.layers if hasattr(layer, "pruning_step")]


def recalibrate_batchnorm(model, ds, max_batches: int = 100) -> int:
    """Re-estimate every BatchNormalization layer's moving statistics on training data.

    Moving averages lag the weights; after a short run (or a last epoch at a high learning
    rate) they describe an older network and inference-mode accuracy can sit at chance.
    Like PyTorch's ``torch.optim.swa_utils.update_bn``, this runs ``max_batches`` batches
    in training mode with momentum ``i / (i + 1)`` at batch ``i``, which makes each moving
    statistic the exact mean of the per-batch statistics. Weights are not changed.
    BatchNorm inside tfmot wrappers and nested models is found too (:func:`batchnorm_layers`).

    Args:
        model: a tf_keras model.
        ds: batched dataset of (image, target) — typically the un-augmented training split.
        max_batches: batches to average over.

    Returns:
        The number of batches used (0 when the model has no BatchNormalization).
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    saved = [layer.momentum for layer in layers]
    statistics = {id(v) for layer in layers for v in (layer.moving_mean, layer.moving_variance)}
    # Training-mode calls also move tfmot state (pruning masks, quantizer ranges); keep it as it was.
    others = [(v, v.numpy()) for v in model.weights if id(v) not in statistics]
    for step in _pruning_steps(model):
        # A never-trained PruneLowMagnitude refuses training-mode calls at step 0; restored below.
        if int(step.numpy()) < 1:
            step.assign(1)
    used = 0
    try:
        for used, (x, _) in enumerate(ds.take(max_batches), start=1):
            for layer in layers:
                layer.momentum = (used - 1) / used
            model(x, training=True)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
        for variable, value in others:
            variable.assign(value)
    return used
