"""Supervised training of one model from a :class:`~edgecnn.recipe.TrainConfig`."""

from __future__ import annotations

import math

from edgecnn._tf import keras, tensorflow
from edgecnn.progress import Progress, keras_progress_callback


def make_optimizer(cfg, steps_per_epoch: int):
    """Optimizer and learning-rate schedule for ``cfg`` (a TrainConfig).

    The cosine schedule decays from ``learning_rate`` to 0 over all training steps
    (Loshchilov & Hutter, 2017, arXiv:1608.03983, without restarts).
    """
    K = keras()
    total = max(1, cfg.epochs * steps_per_epoch)
    lr = K.optimizers.schedules.CosineDecay(cfg.learning_rate, total) if cfg.schedule == "cosine" else cfg.learning_rate
    if cfg.optimizer == "adam":
        if cfg.weight_decay > 0:
            return K.optimizers.AdamW(learning_rate=lr, weight_decay=cfg.weight_decay)
        return K.optimizers.Adam(learning_rate=lr)
    return K.optimizers.SGD(learning_rate=lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay or None)


def hard_label_loss(label_smoothing: float):
    """Cross-entropy on logits against integer labels, with optional label smoothing."""
    K = keras()
    tf = tensorflow()
    if label_smoothing == 0:
        return K.losses.SparseCategoricalCrossentropy(from_logits=True)
    cce = K.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing)

    def loss(y_true, logits):
        y = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), tf.shape(logits)[-1])
        return cce(y, logits)

    return loss


def steps_for(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


def train_classifier(model, train_ds, val_ds, n_train: int, cfg, progress: Progress, label: str) -> dict:
    """Fit ``model`` (logits output) on integer labels.

    Args:
        model: a functional tf_keras model producing logits.
        train_ds, val_ds: batched tf.data datasets of (image, label).
        n_train: training images, for the step count.
        cfg: TrainConfig.
        progress: where epoch lines go.
        label: name in progress lines.

    Returns:
        The Keras history dict (per-epoch metrics).
    """
    K = keras()
    steps = steps_for(n_train, cfg.batch_size)
    model.compile(
        optimizer=make_optimizer(cfg, steps),
        loss=hard_label_loss(cfg.label_smoothing),
        metrics=[K.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    history = model.fit(
        train_ds, validation_data=val_ds, epochs=cfg.epochs, verbose=0,
        callbacks=[keras_progress_callback(progress, label, cfg.epochs, steps)],
    )
    return history.history


def evaluate_classifier(model, ds) -> float:
    """Top-1 accuracy of a logits (or probabilities) model on a batched (image, label) dataset."""
    tf = tensorflow()
    correct = total = 0
    for x, y in ds:
        pred = tf.argmax(model(x, training=False), axis=-1)
        correct += int(tf.reduce_sum(tf.cast(tf.equal(pred, tf.cast(tf.reshape(y, [-1]), pred.dtype)), tf.int32)))
        total += int(tf.shape(y)[0])
    return correct / max(1, total)


def recalibrate_batchnorm(model, ds, max_batches: int = 100) -> int:
    """Re-estimate every BatchNormalization layer's moving statistics on training data.

    Moving averages lag the weights; after a short run (or a last epoch at a high learning
    rate) they describe an older network and inference-mode accuracy can sit at chance.
    Like PyTorch's ``torch.optim.swa_utils.update_bn``, this runs ``max_batches`` batches
    in training mode with momentum ``i / (i + 1)`` at batch ``i``, which makes each moving
    statistic the exact mean of the per-batch statistics. Weights are not changed.

    Args:
        model: a tf_keras model.
        ds: batched dataset of (image, target) — typically the un-augmented training split.
        max_batches: batches to average over.

    Returns:
        The number of batches used (0 when the model has no BatchNormalization).
    """
    layers = [layer for layer in model.layers if layer.__class__.__name__ == "BatchNormalization"]
    if not layers:
        return 0
    saved = [layer.momentum for layer in layers]
    used = 0
    try:
        for used, (x, _) in enumerate(ds.take(max_batches), start=1):
            for layer in layers:
                layer.momentum = (used - 1) / used
            model(x, training=True)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
    return used
