"""Training programs that tests run in their own processes (importable for their builders).

    python tests/_distribute_worker.py resume OUT --epochs N [--stall-epoch K]
        Train a tiny CNN on a real Fashion-MNIST subset with per-epoch checkpoints in
        OUT/ckpt; with --stall-epoch K it stops moving in the middle of epoch K (so a
        test can SIGKILL it there). Writes OUT/result.json (history, test accuracy).

    python tests/_distribute_worker.py worker OUT [--steps S]
        One worker of a MultiWorkerMirroredStrategy cluster (TF_CONFIG from the
        environment): distils a tiny student from a tiny teacher for S steps with
        per-epoch checkpoints in OUT/ckpt, writes OUT/weights.npz on every worker and
        OUT/student.keras on the chief only.

Every model here has seeded initializers and no BatchNorm/Dropout, so each worker (and a
single-process reference run) starts from the same weights and a distributed step is
exactly a global-batch step.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edgecnn._tf import keras  # noqa: E402  (after the path fix)

SIZE = 14  # Fashion-MNIST 28x28 pooled 2x2: tiny models train in seconds on two cores


def fashion_subset(n_train: int, n_test: int, seed: int = 0):
    """A class-balanced-ish random subset of real Fashion-MNIST, 2x2 mean-pooled to 14x14 uint8."""
    from edgecnn.data.fashion_mnist import load_fashion_mnist

    raw = load_fashion_mnist()
    rng = np.random.default_rng(seed)

    def pick(x, y, n):
        idx = rng.choice(len(x), n, replace=False)
        small = x[idx].reshape(n, SIZE, 2, SIZE, 2, 1).mean(axis=(2, 4)).round().astype(np.uint8)
        return small, y[idx]

    return (*pick(raw.x_train, raw.y_train, n_train), *pick(raw.x_test, raw.y_test, n_test))


def normalization():
    from edgecnn.data.preprocess import NormalizationSpec

    return NormalizationSpec((127.5,), (127.5,))


def tiny_cnn(name: str, width: int, seed: int, batchnorm: bool = False):
    """conv-pool-conv-GAP-dense with seeded initializers (same weights in every process)."""
    K = keras()
    L = K.layers
    init = lambda k: K.initializers.GlorotUniform(seed=seed * 100 + k)  # noqa: E731
    inputs = K.Input((SIZE, SIZE, 1), name="image")
    x = L.Conv2D(width, 3, padding="same", kernel_initializer=init(1), name="conv1")(inputs)
    if batchnorm:
        x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(name="relu1")(x)
    x = L.MaxPooling2D(name="pool1")(x)
    x = L.Conv2D(2 * width, 3, padding="same", kernel_initializer=init(2), name="conv2")(x)
    if batchnorm:
        x = L.BatchNormalization(name="bn2")(x)
    x = L.ReLU(name="relu2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    logits = L.Dense(10, kernel_initializer=init(3), name="logits")(x)
    return K.Model(inputs, logits, name=name)


def distill_config(steps: int, batch: int):
    from edgecnn.recipe import DistillConfig, TrainConfig

    return DistillConfig(temperature=2.0, alpha=0.5, teacher_outputs="online",
                         train=TrainConfig(epochs=1, batch_size=batch, learning_rate=0.05, optimizer="sgd",
                                           schedule="constant", distribute="multi_worker",
                                           distribute_timeout_s=30.0))


def distill_data(steps: int, batch: int):
    from edgecnn.data import make_tf_dataset

    x, y, _, _ = fashion_subset(steps * batch, 1, seed=1)
    return x, y, make_tf_dataset(x, y, normalization(), batch)


def _resume(out: Path, epochs: int, stall_epoch: int | None, shuffle_seed: int = 0) -> None:
    from edgecnn.compress.train import evaluate_classifier, recalibrate_batchnorm, train_classifier
    from edgecnn.data import make_tf_dataset
    from edgecnn.progress import Progress
    from edgecnn.recipe import TrainConfig

    K = keras()
    K.utils.set_random_seed(0)
    x, y, xt, yt = fashion_subset(768, 500, seed=0)
    norm = normalization()
    train = make_tf_dataset(x, y, norm, 32, shuffle=True, seed=shuffle_seed)
    test = make_tf_dataset(xt, yt, norm, 250)
    model = tiny_cnn("resume_cnn", 16, seed=1, batchnorm=True)
    cfg = TrainConfig(epochs=epochs, batch_size=32, learning_rate=3e-3)

    class _Stall(K.callbacks.Callback):
        """Stops making progress mid-epoch, as a long epoch would, so the kill lands inside it."""

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if stall_epoch is not None and self._epoch + 1 == stall_epoch and batch == 3:
                print(f"stalling in epoch {stall_epoch}", flush=True)
                time.sleep(600)

    history = train_classifier(model, train, test, len(x), cfg, Progress(quiet=True, stream=sys.stdout), "tiny",
                               callbacks=[_Stall()], checkpoint_dir=out / "ckpt")
    recalibrate_batchnorm(model, make_tf_dataset(x, y, norm, 64), max_batches=12)  # as the stages do
    result = {"history": history, "accuracy": evaluate_classifier(model, test)}
    (out / "result.json").write_text(json.dumps(result))


def _worker(out: Path, steps: int) -> None:
    from edgecnn.compress.distill import distill_student
    from edgecnn.compress.distribute import detach_from_strategy, is_chief, make_strategy
    from edgecnn.errors import DeviceError
    from edgecnn.models.loading import save_keras_model
    from edgecnn.progress import Progress

    batch = 32
    cfg = distill_config(steps, batch)
    t0 = time.monotonic()
    try:
        strategy = make_strategy("multi_worker", timeout_s=cfg.train.distribute_timeout_s)
    except DeviceError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(DeviceError.exit_code)
    again = make_strategy("multi_worker", timeout_s=1)  # a second stage gets the same cluster, no new rendezvous
    assert again is strategy
    x, _, train = distill_data(steps, batch)
    with strategy.scope():
        teacher = tiny_cnn("teacher", 16, seed=7)
        student = tiny_cnn("student", 8, seed=3)
    history = distill_student(student, teacher, train, None, len(x), cfg, Progress(quiet=True, stream=sys.stdout),
                              strategy=strategy, checkpoint_dir=out / "ckpt")
    student = detach_from_strategy(student, strategy)  # on every worker; then each may go on alone
    weights = student.get_weights()
    np.savez(out / "weights.npz", *weights)
    chief = is_chief(strategy)
    if chief:
        save_keras_model(student, out / "student.keras")
    (out / "worker.json").write_text(json.dumps({
        "chief": chief, "replicas": int(strategy.num_replicas_in_sync), "history": history,
        "student_class": type(student).__name__,
        "distributed_variables": sum(type(v).__name__ in ("MirroredVariable", "SyncOnReadVariable")
                                     for v in student.weights),
        "seconds": time.monotonic() - t0,
    }))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["resume", "worker"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--stall-epoch", type=int)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--shuffle-seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.mode == "resume":
        _resume(args.out, args.epochs, args.stall_epoch, args.shuffle_seed)
    else:
        _worker(args.out, args.steps)


if __name__ == "__main__":
    main()
