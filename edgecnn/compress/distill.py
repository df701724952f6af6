"""Soft-target knowledge distillation (Hinton, Vinyals & Dean, 2015, arXiv:1503.02531).

The loss mixes the hard-label cross-entropy with the KL divergence between the
temperature-softened teacher and student distributions::

    L = (1 - alpha) * CE(y, softmax(z_s)) + alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))

The T^2 factor keeps the soft term's gradient magnitude independent of T (the gradients of
the softened term scale as 1/T^2). The loss lives in :mod:`edgecnn.compress.losses` (``soft_kd``) and training in
:func:`edgecnn.compress.engine.fit`; what leaves this module is always the plain
functional student, which tfmot can wrap.
"""

from __future__ import annotations

from edgecnn._tf import tensorflow
from edgecnn.compress.engine import fit, steps_for
from edgecnn.compress.losses import SoftKD, distillation_loss, mean_loss
from edgecnn.compress.train import resume_note
from edgecnn.progress import Progress, keras_progress_callback


def kd_loss(labels, student_logits, teacher_logits, temperature: float, alpha: float, label_smoothing: float = 0.0):
    """Per-batch distillation loss (a scalar tensor): the batch mean of the ``soft_kd`` loss."""
    return mean_loss(SoftKD(temperature, alpha, label_smoothing), labels, student_logits, teacher_logits)


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


def distill_student(student, teacher, train_ds, val_ds, n_train: int, cfg, progress: Progress, *,
                    callbacks=(), checkpoint_dir=None, checkpoint_key: str = "", strategy=None,
                    label: str = "student") -> dict:
    """Train ``student`` on ``teacher``'s soft targets; the student is updated in place.

    Args:
        student: functional tf_keras model producing logits (built inside
            ``strategy.scope()`` when ``strategy`` is given).
        teacher: tf_keras model producing logits or probabilities; kept frozen.
        train_ds, val_ds: batched (image, label) datasets; augmentation, if any, is in
            ``train_ds`` so teacher and student see the same augmented image. A
            ``train_ds`` yielding ``(image, {"label", "soft"})`` carries precomputed
            teacher logits (see :func:`precompute_teacher_logits`) and the teacher is
            not run during training.
        n_train: training images, for the step count.
        cfg: DistillConfig.
        progress: where epoch lines go.
        callbacks: extra tf_keras callbacks (e.g. tfmot's ``UpdatePruningStep``).
        checkpoint_dir: per-epoch checkpoints; a run killed part-way resumes from here.
        checkpoint_key: more content for the checkpoint key (e.g. the stage's cache key).
        strategy: a ``tf.distribute.Strategy`` (None: the current one).
        label: what the progress lines call the model (``student``, ``prune``).

    Returns:
        The Keras history dict.
    """
    tf = tensorflow()
    teacher.trainable = False
    sample = next(iter(train_ds))[0][:8]
    logits_of = teacher_logits_fn(teacher, sample)
    steps = steps_for(n_train, cfg.train.batch_size)
    loss = distillation_loss(cfg)  # the recipe's distill.loss, from the registry
    result = fit(
        student, train_ds, val_ds, loss=loss, cfg=cfg.train, steps_per_epoch=steps,
        teacher_logits=lambda x: tf.stop_gradient(logits_of(x)),
        callbacks=[*callbacks, keras_progress_callback(progress, label, cfg.train.epochs, steps)],
        checkpoint_dir=checkpoint_dir,
        checkpoint_key_extra=f"distill:{cfg.teacher_outputs}:{checkpoint_key}", strategy=strategy,
        on_resume=resume_note(progress, label, cfg.train.epochs),
    )
    return result.history
