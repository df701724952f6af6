"""The one training engine: teacher training, distillation and (next) pruning / QAT fine-tuning.

:func:`fit` trains a functional tf_keras model with a loss from
:mod:`edgecnn.compress.losses`, an optimizer built from the recipe's ``TrainConfig``
(:func:`make_optimizer`, the one place), injectable callbacks (progress, tfmot's
``UpdatePruningStep``...), per-epoch checkpoints that make a killed run resume, and any
``tf.distribute`` strategy.

Distribution: build the model inside ``strategy.scope()`` (the engine checks) and pass the
strategy; the engine creates the optimizer and its training harness there too. Datasets
are batched with the *global* batch size; tf_keras ``fit`` splits them across replicas.
A custom ``train_step`` gets no loss scaling from tf_keras: the per-example loss is
averaged over the global batch (``tf.nn.compute_average_loss``) and regularization losses
are divided by the replica count (``tf.nn.scale_regularization_loss``), so the gradients
that the optimizer sums over replicas are those of the global-batch mean.

Checkpoint format (``checkpoint_dir``), written after every epoch:

    checkpoint.json    {"format": 1, "key", "epoch" (epochs done), "epochs", "weights", "history", "rng"}
    epoch-NNNN/        tf.train.Checkpoint of the model and optimizer (weights, slots, step)

Under ``multi_worker`` every worker writes its own checkpoint (the chief into
``checkpoint_dir``, the others into ``checkpoint_dir/worker-N/``) and, on a re-run, the
workers check that they all resume the same epoch. ``epoch-NNNN/`` is written under a
temporary name and renamed; ``checkpoint.json`` is then
replaced atomically and is the commit point, so a kill at any moment leaves the previous
complete checkpoint. ``key`` hashes the training config, the loss, the step count, the
model's structure and the caller's ``checkpoint_key``: a checkpoint from another config is
never resumed. RNG state: Python's and NumPy's global generators and TensorFlow's global
``tf.random.Generator``; TensorFlow's op-level seed counters and tf.data's per-epoch
shuffle cannot be saved, so a resumed run sees different (equally random) batches than an
uninterrupted one and agrees with it within run-to-run noise, not bit for bit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import random
import shutil
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from edgecnn._tf import keras, tensorflow
from edgecnn.errors import ModelFileError
from edgecnn.fileio import json_type_name, make_dirs, write_json_atomic

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.json"
_FORMAT = 1
_KEY_EXCLUDES = ("distribute", "distribute_timeout_s")  # a run may resume on another strategy


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` did.

    Attributes:
        history: per-epoch metrics over *all* epochs, resumed ones included.
        initial_epoch: epochs restored from the checkpoint (0 for a fresh run).
    """

    history: dict
    initial_epoch: int = 0


def steps_for(n: int, batch_size: int) -> int:
    """Optimizer steps per epoch for ``n`` images in batches of ``batch_size``."""
    return max(1, math.ceil(n / batch_size))


def make_optimizer(cfg, steps_per_epoch: int):
    """Optimizer and learning-rate schedule for ``cfg`` (a TrainConfig).

    The cosine schedule decays from ``learning_rate`` to 0 over all training steps
    (Loshchilov & Hutter, 2017, arXiv:1608.03983, without restarts). Call inside the
    strategy's scope when training distributed (:func:`fit` does).
    """
    K = keras()
    total = max(1, cfg.epochs * steps_per_epoch)
    lr = K.optimizers.schedules.CosineDecay(cfg.learning_rate, total) if cfg.schedule == "cosine" else cfg.learning_rate
    if cfg.optimizer == "adam":
        if cfg.weight_decay > 0:
            return K.optimizers.AdamW(learning_rate=lr, weight_decay=cfg.weight_decay)
        return K.optimizers.Adam(learning_rate=lr)
    return K.optimizers.SGD(learning_rate=lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay or None)


def _unpack(data):
    x, y = data[0], data[1]
    if isinstance(y, dict):  # precomputed teacher logits travel with the labels
        return x, y["label"], y.get("soft")
    return x, y, None


def _make_trainer(model, loss, teacher_logits: Optional[Callable]):
    K = keras()
    tf = tensorflow()

    class _Trainer(K.Model):
        """Training harness only: it holds the model and is never saved or returned."""

        def __init__(self):
            super().__init__(name="edgecnn_trainer")
            self.inner = model
            self.loss_tracker = K.metrics.Mean(name="loss")
            self.acc = K.metrics.SparseCategoricalAccuracy(name="accuracy")

        @property
        def metrics(self):
            return [self.loss_tracker, self.acc]

        def train_step(self, data):
            x, y, z_t = _unpack(data)
            if loss.needs_teacher and z_t is None:
                z_t = tf.stop_gradient(teacher_logits(x))
            with tf.GradientTape() as tape:
                z = self.inner(x, training=True)
                per_example = loss.per_example(y, z, z_t)
                # Mean over the *global* batch: tf.distribute sums gradients over replicas.
                total = tf.nn.compute_average_loss(per_example)
                if self.inner.losses:
                    total += tf.nn.scale_regularization_loss(tf.add_n(self.inner.losses))
            variables = self.inner.trainable_variables
            self.optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
            self.loss_tracker.update_state(per_example)
            self.acc.update_state(y, z)
            return {m.name: m.result() for m in self.metrics}

        def test_step(self, data):
            x, y, _ = _unpack(data)
            z = self.inner(x, training=False)
            self.loss_tracker.update_state(loss.validation_per_example(y, z))
            self.acc.update_state(y, z)
            return {m.name: m.result() for m in self.metrics}

        def call(self, x, training=False):
            return self.inner(x, training=training)

    return _Trainer()


def checkpoint_key(model, cfg, loss, steps_per_epoch: int, extra: str = "") -> str:
    """Content key of a training run: config, loss, step count, model structure and ``extra``."""
    config = cfg.model_dump(mode="json", exclude=set(_KEY_EXCLUDES)) if hasattr(cfg, "model_dump") else dict(vars(cfg))
    structure = [[layer.__class__.__name__, [list(w.shape) for w in layer.weights]] for layer in model.layers]
    payload = {"cfg": config, "loss": loss.get_config(), "steps": int(steps_per_epoch),
               "model": structure, "extra": extra, "format": _FORMAT}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _rng_state() -> dict:
    tf = tensorflow()
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "tf_generator": tf.random.get_global_generator().state.numpy().tolist(),
    }


def _set_rng_state(state: dict) -> None:
    tf = tensorflow()
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    tf.random.get_global_generator().state.assign(np.asarray(state["tf_generator"], dtype=np.int64))



def _checkpoint_meta_problem(meta) -> str | None:
    """Why ``checkpoint.json`` cannot be a checkpoint record, or None."""
    if not isinstance(meta, dict):
        return f"holds a JSON {json_type_name(meta)}, not a checkpoint record"
    if not isinstance(meta.get("weights"), str) or "/" in meta["weights"] or meta["weights"].startswith("."):
        return "names no weights folder"
    if not isinstance(meta.get("epoch"), int) or not isinstance(meta.get("history"), dict):
        return "has no epoch count or history"
    if not isinstance(meta.get("rng"), dict):
        return "has no RNG state"
    return None

class _Checkpointer:
    """Reads and writes the per-epoch checkpoint described in the module docstring."""

    def __init__(self, directory: Path, key: str, epochs: int, model, optimizer):
        tf = tensorflow()
        self.directory, self.key, self.epochs = Path(directory), key, epochs
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
        self.history: dict = {}

    def restore(self) -> int:
        """Restore the newest matching checkpoint; returns the epochs it had done (0: none)."""
        meta_path = self.directory / CHECKPOINT_FILE
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable checkpoint (%s); training from the start", meta_path, exc)
            return 0
        problem = _checkpoint_meta_problem(meta)
        if problem is not None:  # valid JSON of the wrong shape must not stick either
            log.warning("%s: %s; training from the start", meta_path, problem)
            return 0
        if meta.get("format") != _FORMAT or meta.get("key") != self.key or meta.get("epochs") != self.epochs:
            log.info("%s: checkpoint of another training config; training from the start", meta_path)
            return 0
        tf = tensorflow()
        prefix = str(self.directory / meta["weights"] / "ckpt")
        try:
            tf.train.list_variables(prefix)  # a missing or torn index: nothing restored yet, start over
        except (tf.errors.OpError, ValueError) as exc:
            log.warning("%s: checkpoint files unreadable (%s); training from the start", prefix, exc)
            return 0
        try:
            self.checkpoint.read(prefix).assert_existing_objects_matched()
        except (tf.errors.OpError, AssertionError, ValueError, IndexError, KeyError) as exc:
            # Some variables may already hold restored values: training on would mix two runs.
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ModelFileError(f"{self.directory}: training checkpoint is damaged ({first}); "
                                 "delete this directory to train from the start") from None
        _set_rng_state(meta["rng"])
        self.history = {k: list(v) for k, v in meta["history"].items()}
        return int(meta["epoch"])

    def save(self, epoch_done: int, logs: dict) -> None:
        for name, value in (logs or {}).items():
            self.history.setdefault(name, []).append(float(value))
        rng = _rng_state()
        make_dirs(self.directory)
        name = f"epoch-{epoch_done:04d}"
        tmp = self.directory / f".tmp-{name}"
        final = self.directory / name
        shutil.rmtree(tmp, ignore_errors=True)
        self.checkpoint.write(str(tmp / "ckpt"))
        if final.exists():  # left by a run killed between rename and commit
            shutil.rmtree(final)
        tmp.rename(final)
        write_json_atomic(self.directory / CHECKPOINT_FILE, {
            "format": _FORMAT, "key": self.key, "epoch": epoch_done, "epochs": self.epochs,
            "weights": name, "history": self.history, "rng": rng,
        })
        for old in self.directory.glob("epoch-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)


def _checkpoint_callback(checkpointer: _Checkpointer):
    K = keras()

    class _EpochCheckpoint(K.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            checkpointer.save(epoch + 1, logs)

    return _EpochCheckpoint()


def _check_in_scope(model, strategy) -> None:
    outside = [v.name for v in model.weights if not strategy.extended.variable_created_in_scope(v)]
    if outside:
        raise ValueError(f"fit: the model's variables (e.g. {outside[0]}) were created outside the strategy's "
                         "scope; build the model inside `with strategy.scope():`")


def fit(model, train_ds, val_ds=None, *, loss, cfg, steps_per_epoch: int, callbacks: Sequence = (),
        teacher_logits: Optional[Callable] = None, checkpoint_dir=None, checkpoint_key_extra: str = "",
        strategy=None, on_resume: Optional[Callable[[int], None]] = None) -> FitResult:
    """Train ``model`` in place for ``cfg.epochs`` epochs.

    Args:
        model: a functional tf_keras model producing logits (plain or tfmot-wrapped),
            built inside ``strategy.scope()`` when a strategy is given.
        train_ds: batched (global batch) dataset of ``(image, label)`` or
            ``(image, {"label", "soft"})`` with precomputed teacher logits.
        val_ds: optional batched validation dataset of ``(image, label)``.
        loss: a loss object from :mod:`edgecnn.compress.losses`.
        cfg: the TrainConfig (epochs, optimizer, schedule).
        steps_per_epoch: optimizer steps per epoch, for the learning-rate schedule.
        callbacks: extra tf_keras callbacks (progress, ``UpdatePruningStep``...); they
            run after the epoch's checkpoint is written.
        teacher_logits: ``x -> logits`` of a frozen teacher, for a loss that needs one
            when the dataset carries no precomputed logits.
        checkpoint_dir: where per-epoch checkpoints go; a matching one found there is
            resumed. None: no checkpoints.
        checkpoint_key_extra: more content for the checkpoint key (e.g. the stage key).
        strategy: a ``tf.distribute.Strategy``; None = the current one.
        on_resume: called with the number of epochs restored, before training goes on
            (e.g. to print a line); not called for a fresh run.

    Returns:
        A :class:`FitResult`.

    Raises:
        ValueError: the model was built outside the strategy's scope, or the loss needs
            a teacher and there is none.
    """
    tf = tensorflow()
    strategy = strategy or tf.distribute.get_strategy()
    _check_in_scope(model, strategy)
    carries_logits = isinstance(train_ds.element_spec, tuple) and isinstance(train_ds.element_spec[1], dict)
    if loss.needs_teacher and teacher_logits is None and not carries_logits:
        raise ValueError(f"fit: loss {loss.name} needs teacher logits: pass teacher_logits or a dataset "
                         "of (image, {'label', 'soft'})")
    with strategy.scope():
        optimizer = make_optimizer(cfg, steps_per_epoch)
        trainer = _make_trainer(model, loss, teacher_logits)
        trainer.compile(optimizer=optimizer)
        optimizer.build(model.trainable_variables)  # slots exist before a checkpoint restores them
    cbs = list(callbacks)
    start = 0
    # Created here, outside the strategy's scope, TensorFlow's global generator stays a
    # local variable on each worker; created first inside the scope (as the checkpoint
    # reading it would), it would be a distributed one needing every worker to broadcast.
    tf.random.get_global_generator()
    checkpointer = None
    if checkpoint_dir is not None:
        from edgecnn.compress.distribute import agree_on_epoch, task_name

        key = checkpoint_key(model, cfg, loss, steps_per_epoch, checkpoint_key_extra)
        directory = Path(checkpoint_dir)
        task = task_name(strategy)
        if task is not None:
            # Every worker keeps its own checkpoint (its own copy of the same weights); the
            # chief's is the directory itself, the others' sit in a folder per task, so a
            # checkpoint directory shared by all workers never holds two writers' files.
            directory = directory / task
        checkpointer = _Checkpointer(directory, key, cfg.epochs, model, optimizer)
        start = agree_on_epoch(strategy, checkpointer.restore(), directory)
        cbs.insert(0, _checkpoint_callback(checkpointer))
        if start and on_resume is not None:
            on_resume(start)
    history: dict = dict(checkpointer.history) if checkpointer else {}
    if start < cfg.epochs:
        trained = trainer.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, initial_epoch=start,
                              verbose=0, callbacks=cbs)
        history = checkpointer.history if checkpointer else trained.history
    return FitResult({k: list(v) for k, v in history.items()}, start)
