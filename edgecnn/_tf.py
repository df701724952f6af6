"""The one place that selects Keras 2 (``tf_keras``) and imports TensorFlow.

tensorflow-model-optimization only accepts tf_keras models, and TensorFlow picks its
Keras flavour when it is first imported, so ``TF_USE_LEGACY_KERAS`` must be set before
that. Every module that needs TensorFlow calls :func:`tensorflow` / :func:`keras` here
instead of importing it at module level, which also keeps ``edgecnn --help`` fast.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ start-up chatter is noise in a CLI; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def tensorflow():
    """Return the ``tensorflow`` module, importing it with tf_keras selected."""
    if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise RuntimeError("TensorFlow was imported before edgecnn selected tf_keras; "
                           "set TF_USE_LEGACY_KERAS=1 or import edgecnn first")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf


def keras():
    """Return the ``tf_keras`` module (Keras 2), the only Keras tfmot accepts."""
    tensorflow()
    import tf_keras

    return tf_keras
