"""The one place that selects Keras 2 (``tf_keras``) and imports TensorFlow.

tensorflow-model-optimization only accepts tf_keras models, and TensorFlow picks its
Keras flavour when it is first imported, so ``TF_USE_LEGACY_KERAS`` must be set before
that. Every module that needs TensorFlow calls :func:`tensorflow` / :func:`keras` here
instead of importing it at module level, which also keeps ``edgecnn --help`` fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator



def native_logs_wanted() -> bool:
    """True when the person asked for native log lines (``--verbose`` or ``--debug``).

    The CLI sets ``EDGECNN_VERBOSE=1`` for ``-v/--verbose`` and both ``EDGECNN_DEBUG=1``
    and ``EDGECNN_VERBOSE=1`` for ``--debug``; either variable alone also counts, for
    library users.
    """
    return os.environ.get("EDGECNN_VERBOSE") == "1" or os.environ.get("EDGECNN_DEBUG") == "1"


os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ start-up chatter is noise in a CLI; errors still show. Read when
# TensorFlow is first imported, which is after the CLI has parsed --verbose.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if native_logs_wanted() else "2")


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Silence what C++ code writes straight to file descriptor 2 while the block runs.

    TensorFlow's import (CUDA probing on a CPU machine), the TFLite converter and the
    interpreter print absl/glog lines that Python cannot filter, that bury the one line
    of progress a person reads and that would turn a one-line error into several.
    ``--verbose`` and ``--debug`` keep them (:func:`native_logs_wanted`).

    Only wrap short native calls: Python's own stderr writes inside are lost too. An
    exception raised inside propagates after fd 2 is restored, so the CLI's one error
    line is always seen.
    """
    if native_logs_wanted():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def tensorflow():
    """Return the ``tensorflow`` module, importing it with tf_keras selected."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with native_stderr_silenced():
        import tensorflow as tf

        # Device discovery probes CUDA and logs a failed cuInit on CPU-only machines.
        tf.config.list_physical_devices()

    tf.get_logger().setLevel("ERROR")
    return tf


def keras():
    """Return the ``tf_keras`` module (Keras 2), the only Keras tfmot accepts."""
    tensorflow()
    import tf_keras

    return tf_keras
