"""What the quantization benchmarks share: a finished build's student, its data and its
calibration images, prepared the way the quantize stage prepares them."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class BuiltStudent:
    run: Path  # the run directory (student.keras, student_float32.tflite)
    recipe: object
    dataset: object
    calibration: np.ndarray  # normalized, as the quantize stage calibrates


def built_student(run: Path, recipe_path: Path) -> BuiltStudent:
    """``run``'s build of ``recipe_path`` (built first, through the stage cache, when it has
    no ``student.keras``), its dataset and the quantize stage's calibration images."""
    if not (run / "student.keras").is_file():
        subprocess.run([sys.executable, "-m", "edgecnn.cli", "build", str(recipe_path), "--out", str(run)], check=True)
    from edgecnn.data import load_dataset, representative_images
    from edgecnn.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    ds = load_dataset(recipe.data, recipe.seed)
    samples = recipe.quantize.calibration_samples or recipe.data.representative_samples
    return BuiltStudent(run, recipe, ds, ds.normalization.apply(representative_images(ds, samples, recipe.seed)))
