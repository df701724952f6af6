"""The layout of a deploy bundle: its file names, manifest schema and the tolerance it promises.

Shared by the side that writes bundles (:mod:`edgecnn.export.bundle`) and the side that
checks them on a device (:mod:`edgecnn.bench.verify`), so neither imports the other;
the demo reads a bundle's model and labels through it too. Stdlib and numpy only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from edgecnn.errors import ModelFileError
from edgecnn.fileio import json_type_name

__all__ = ["BUNDLE_SCHEMA", "BUNDLE_MANIFEST", "BUNDLE_METADATA", "LABELS_FILE", "RUNNER_FILE", "README_FILE",
           "MIN_TOP1_AGREEMENT", "TOLERANCE_SIGMAS", "FLOAT_OP_ERROR", "golden_name", "read_bundle_json",
           "load_bundle_metadata", "tolerance_steps", "float_tolerance"]

BUNDLE_SCHEMA = "edgecnn.bundle/1"
BUNDLE_MANIFEST = "bundle.json"
BUNDLE_METADATA = "metadata.json"
LABELS_FILE = "labels.txt"
RUNNER_FILE = "runner.py"
README_FILE = "README.md"

# The verify tolerance (derivation in edgecnn.bench.verify.verify_bundle's docstring).
TOLERANCE_SIGMAS = 3.0
# Float rounding of one op, relative to the output's magnitude: a reordered float32 sum
# of K terms differs by about sqrt(K) * eps; K is at most ~1000 in these students.
FLOAT_OP_ERROR = 32 * float(np.finfo(np.float32).eps)
MIN_TOP1_AGREEMENT = 0.9


def golden_name(precision: str, model_file: str | None = None) -> str:
    """The golden-outputs file of a bundle's model: ``golden_int8.npz`` for the student's
    ``student_int8.tflite``, ``golden_pruned_int8.npz`` for ``pruned_int8.tflite`` (several
    models of one precision side by side)."""
    if model_file is None or model_file == f"student_{precision}.tflite":
        return f"golden_{precision}.npz"
    return f"golden_{model_file.rsplit('.', 1)[0]}.npz"


def read_bundle_json(path: Path, what: str) -> dict:
    """A bundle JSON file that must hold an object; one line naming the file otherwise."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelFileError(f"{path}: not found; {what}") from None
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: unreadable ({exc}); {what}") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: holds a JSON {json_type_name(data)}, "
                             f"not an object; {what}")
    return data


def load_bundle_metadata(bundle_dir) -> dict:
    """The bundle's ``metadata.json`` (the demo reads labels and normalization from it)."""
    return read_bundle_json(Path(bundle_dir) / BUNDLE_METADATA,
                            "not an edgecnn bundle; create one with 'edgecnn bundle'")


def tolerance_steps(operators: int) -> int:
    """Allowed deviation of an integer output, in its quantization steps: ``ceil(3 * sqrt(operators))``.

    See :func:`verify_bundle` for the derivation.
    """
    return int(math.ceil(TOLERANCE_SIGMAS * math.sqrt(max(int(operators), 1))))


def float_tolerance(operators: int, golden: np.ndarray) -> float:
    """Allowed absolute deviation of a float output:
    ``3 * sqrt(operators) * 32 * float32_eps * max(1, max |golden|)``."""
    finite = np.asarray(golden, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    magnitude = max(1.0, float(np.max(np.abs(finite)))) if finite.size else 1.0
    return TOLERANCE_SIGMAS * math.sqrt(max(int(operators), 1)) * FLOAT_OP_ERROR * magnitude

