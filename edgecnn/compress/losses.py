"""Training losses as small value objects, in a registry that can list itself.

Every loss gives a *per-example* loss (shape ``[batch]``), never a batch mean: the
training engine averages it over the *global* batch with ``tf.nn.compute_average_loss``,
which is what keeps gradients right when ``tf.distribute`` sums them over replicas (a
per-replica mean summed over N replicas would be N times too large).

Losses:
    ``cross_entropy``: softmax cross-entropy on logits against integer labels, with
        optional label smoothing (Szegedy et al., 2016, arXiv:1512.00567).
    ``soft_kd``: soft-target knowledge distillation (Hinton, Vinyals & Dean, 2015,
        arXiv:1503.02531)::

            L = (1 - alpha) * CE(y, softmax(z_s)) + alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))

        The T^2 factor keeps the soft term's gradient magnitude independent of T (the
        gradients of the softened term scale as 1/T^2).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from edgecnn._tf import keras, tensorflow


class LossRegistry:
    """Name -> loss class; build a fresh one in tests, the module keeps :data:`LOSSES`."""

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}

    def register(self, cls: type) -> type:
        """Class decorator: register ``cls`` under its ``name`` attribute."""
        if cls.name in self._classes:
            raise ValueError(f"loss {cls.name!r} is registered twice")
        self._classes[cls.name] = cls
        return cls

    def create(self, name: str, **options):
        """Build the loss ``name`` with ``options`` (its constructor arguments).

        Raises:
            ValueError: ``name`` is not registered (the message lists the known ones).
        """
        if name not in self._classes:
            raise ValueError(f"unknown loss {name!r}; known: {', '.join(self.names())}")
        return self._classes[name](**options)

    def from_config(self, config: dict):
        """Inverse of a loss's ``get_config()``."""
        config = dict(config)
        return self.create(config.pop("name"), **config)

    def names(self) -> list[str]:
        return sorted(self._classes)


LOSSES = LossRegistry()


def create_loss(name: str, **options):
    """Build a registered loss by name (see :data:`LOSSES`)."""
    return LOSSES.create(name, **options)


def list_losses() -> list[str]:
    """Names of the registered losses."""
    return LOSSES.names()


def _cross_entropy_per_example(labels, logits, label_smoothing: float):
    K = keras()
    tf = tensorflow()
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    if label_smoothing == 0:
        return K.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    onehot = tf.one_hot(labels, tf.shape(logits)[-1])
    return K.losses.categorical_crossentropy(onehot, logits, from_logits=True, label_smoothing=label_smoothing)


@dataclasses.dataclass(frozen=True)
class CrossEntropy:
    """Softmax cross-entropy on logits against integer labels.

    Args:
        label_smoothing: in [0, 1); the target puts ``1 - s + s/K`` on the label and
            ``s/K`` on each other class.
    """

    name: ClassVar[str] = "cross_entropy"
    needs_teacher: ClassVar[bool] = False
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"cross_entropy: label_smoothing {self.label_smoothing} must be in [0, 1)")

    def per_example(self, labels, logits, teacher_logits=None):
        """Per-example loss, shape [batch]."""
        return _cross_entropy_per_example(labels, logits, self.label_smoothing)

    def validation_per_example(self, labels, logits):
        """The per-example loss reported as ``val_loss``."""
        return self.per_example(labels, logits)

    def get_config(self) -> dict:
        return {"name": self.name, "label_smoothing": float(self.label_smoothing)}


@dataclasses.dataclass(frozen=True)
class SoftKD:
    """Hinton distillation: hard-label cross-entropy mixed with T^2-scaled KL (module docstring).

    Args:
        temperature: T > 0 for both softmaxes of the soft term.
        alpha: weight of the soft term, in [0, 1]; ``1 - alpha`` weights the hard term.
        label_smoothing: for the hard term.
    """

    name: ClassVar[str] = "soft_kd"
    needs_teacher: ClassVar[bool] = True
    temperature: float = 4.0
    alpha: float = 0.7
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"soft_kd: temperature {self.temperature} must be > 0")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"soft_kd: alpha {self.alpha} must be in [0, 1]")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"soft_kd: label_smoothing {self.label_smoothing} must be in [0, 1)")

    def per_example(self, labels, logits, teacher_logits=None):
        """Per-example loss, shape [batch]; ``teacher_logits`` is required."""
        if teacher_logits is None:
            raise ValueError("soft_kd needs teacher logits")
        tf = tensorflow()
        hard = _cross_entropy_per_example(labels, logits, self.label_smoothing)
        t = float(self.temperature)
        p_teacher = tf.nn.softmax(teacher_logits / t, axis=-1)
        log_p_teacher = tf.nn.log_softmax(teacher_logits / t, axis=-1)
        log_p_student = tf.nn.log_softmax(logits / t, axis=-1)
        kl = tf.reduce_sum(p_teacher * (log_p_teacher - log_p_student), axis=-1)
        return (1.0 - self.alpha) * hard + self.alpha * (t * t) * kl

    def validation_per_example(self, labels, logits):
        """``val_loss`` of a distilled student is its plain cross-entropy (no teacher at validation)."""
        return _cross_entropy_per_example(labels, logits, 0.0)

    def get_config(self) -> dict:
        return {"name": self.name, "temperature": float(self.temperature), "alpha": float(self.alpha),
                "label_smoothing": float(self.label_smoothing)}


LOSSES.register(CrossEntropy)
LOSSES.register(SoftKD)


def distillation_loss(cfg):
    """The recipe's distillation loss (``distill.loss``, a DistillConfig) from the registry."""
    return create_loss(cfg.loss, temperature=cfg.temperature, alpha=cfg.alpha,
                       label_smoothing=cfg.train.label_smoothing)


def mean_loss(loss, labels, logits, teacher_logits=None):
    """Batch mean of ``loss`` (a scalar tensor), for callers outside the engine."""
    return tensorflow().reduce_mean(loss.per_example(labels, logits, teacher_logits))
