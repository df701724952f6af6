"""Soft-target knowledge distillation (Hinton, Vinyals & Dean, 2015, arXiv:1503.02531).

The loss mixes the hard-label cross-entropy with the KL divergence between the
temperature-softened teacher and student distributions::

    L = (1 - alpha) * CE(y, softmax(z_s)) + alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))

The T^2 factor keeps the soft term's gradient magnitude independent of T (the gradients of
the softened term scale as 1/T^2). Training uses a small ``Distiller`` harness, but what
leaves this module is always the plain functional student, which tfmot can wrap.
"""

from __future__ import annotations

from edgecnn._tf import keras, tensorflow
from edgecnn.compress.train import hard_label_loss, make_optimizer, steps_for
from edgecnn.progress import Progress, keras_progress_callback


def kd_loss(labels, student_logits, teacher_logits, temperature: float, alpha: float, label_smoothing: float = 0.0):
    """Per-batch distillation loss (a scalar tensor); see the module docstring for the formula."""
    tf = tensorflow()
    hard = hard_label_loss(label_smoothing)(labels, student_logits)
    t = float(temperature)
    p_teacher = tf.nn.softmax(teacher_logits / t, axis=-1)
    log_p_teacher = tf.nn.log_softmax(teacher_logits / t, axis=-1)
    log_p_student = tf.nn.log_softmax(student_logits / t, axis=-1)
    kl = tf.reduce_mean(tf.reduce_sum(p_teacher * (log_p_teacher - log_p_student), axis=-1))
    return (1.0 - alpha) * hard + alpha * (t * t) * kl


def teacher_logits_fn(teacher, sample):
    """A function giving logits from ``teacher``, whether it outputs logits or probabilities.

    A teacher loaded from a file often ends in softmax; log-probabilities differ from its
    logits only by a per-row constant, which softmax ignores, so they serve as logits.
    """
    tf = tensorflow()
    out = teacher(sample, training=False).numpy()
    looks_like_probabilities = (out >= 0).all() and abs(out.sum(axis=-1) - 1.0).max() < 1e-3
    if looks_like_probabilities:
        return lambda x: tf.math.log(tf.clip_by_value(teacher(x, training=False), 1e-8, 1.0))
    return lambda x: teacher(x, training=False)


def precompute_teacher_logits(teacher, ds):
    """Teacher logits (a float32 numpy array) for every image of a batched, un-shuffled (image, label) dataset.

    "Offline" distillation: the soft targets are computed once on un-augmented images
    and reused every epoch, which halves the cost of a CPU epoch. The augmentations used
    here (flips, small shifts) barely move the teacher's distribution, so little is lost.
    """
    import numpy as np

    sample = next(iter(ds))[0][:8]
    logits_of = teacher_logits_fn(teacher, sample)
    return np.concatenate([logits_of(x).numpy() for x, _ in ds]).astype(np.float32)


def distill_student(student, teacher, train_ds, val_ds, n_train: int, cfg, progress: Progress) -> dict:
    """Train ``student`` on ``teacher``'s soft targets; the student is updated in place.

    Args:
        student: functional tf_keras model producing logits.
        teacher: tf_keras model producing logits or probabilities; kept frozen.
        train_ds, val_ds: batched (image, label) datasets; augmentation, if any, is in
            ``train_ds`` so teacher and student see the same augmented image. A
            ``train_ds`` yielding ``(image, {"label", "soft"})`` carries precomputed
            teacher logits (see :func:`precompute_teacher_logits`) and the teacher is
            not run during training.
        n_train: training images, for the step count.
        cfg: DistillConfig.
        progress: where epoch lines go.

    Returns:
        The Keras history dict.
    """
    K = keras()
    tf = tensorflow()
    teacher.trainable = False
    sample = next(iter(train_ds))[0][:8]
    teacher_logits = teacher_logits_fn(teacher, sample)
    temperature, alpha, smoothing = cfg.temperature, cfg.alpha, cfg.train.label_smoothing

    class Distiller(K.Model):
        """Training harness only: it holds the student, it is never exported."""

        def __init__(self):
            super().__init__()
            self.student = student
            self.loss_tracker = K.metrics.Mean(name="loss")
            self.acc = K.metrics.SparseCategoricalAccuracy(name="accuracy")

        @property
        def metrics(self):
            return [self.loss_tracker, self.acc]

        def train_step(self, data):
            x, y = data
            if isinstance(y, dict):  # cached teacher logits travel with the labels
                y, z_t = y["label"], y["soft"]
            else:
                z_t = tf.stop_gradient(teacher_logits(x))
            with tf.GradientTape() as tape:
                z_s = self.student(x, training=True)
                loss = kd_loss(y, z_s, z_t, temperature, alpha, smoothing)
                if self.student.losses:
                    loss += tf.add_n(self.student.losses)
            grads = tape.gradient(loss, self.student.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.student.trainable_variables))
            self.loss_tracker.update_state(loss)
            self.acc.update_state(y, z_s)
            return {m.name: m.result() for m in self.metrics}

        def test_step(self, data):
            x, y = data
            z_s = self.student(x, training=False)
            self.loss_tracker.update_state(hard_label_loss(0.0)(y, z_s))
            self.acc.update_state(y, z_s)
            return {m.name: m.result() for m in self.metrics}

        def call(self, x, training=False):
            return self.student(x, training=training)

    steps = steps_for(n_train, cfg.train.batch_size)
    distiller = Distiller()
    distiller.compile(optimizer=make_optimizer(cfg.train, steps))
    history = distiller.fit(
        train_ds, validation_data=val_ds, epochs=cfg.train.epochs, verbose=0,
        callbacks=[keras_progress_callback(progress, "student", cfg.train.epochs, steps)],
    )
    return history.history
