"""The ``data`` stage: load and split the dataset, record what it is."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecnn.fileio import write_json_atomic
from edgecnn.stage import StageResult
from edgecnn.artifacts import Artifact
from edgecnn.stages.common import DATASET_FILE, input_shape

if TYPE_CHECKING:
    from edgecnn.recipe import Recipe
    from edgecnn.stage import BuildContext


def run_data(recipe: "Recipe", ctx: "BuildContext") -> StageResult:
    """Load and split the dataset; record its fingerprint, classes and normalization."""
    from edgecnn.data import dataset_fingerprint

    ds = ctx.dataset
    counts = {"train": len(ds.y_train), "validation": len(ds.y_val), "test": len(ds.y_test)}
    summary = {
        "source": recipe.data.source,
        "fingerprint": dataset_fingerprint(recipe.data, recipe.seed),
        "class_names": list(ds.class_names),
        "input_shape": list(input_shape(recipe)),
        "normalization": ds.normalization.to_dict(),
        "splits": counts,
        "config": recipe.to_dict()["data"],
    }
    if ctx.inputs.get("data"):
        # The images' content (the fingerprint has only names, sizes and times), so a
        # changed image changes this file and with it every later stage's key.
        summary["inputs_sha256"] = ctx.inputs["data"]
    if ds.notes:  # e.g. hidden/system entries an image folder skipped
        summary["notes"] = list(ds.notes)
    path = write_json_atomic(ctx.path(DATASET_FILE), summary)
    ctx.progress.line(f"    {counts['train']} train / {counts['validation']} validation / {counts['test']} test images, "
                      f"{len(ds.class_names)} classes")
    for note in ds.notes:
        ctx.progress.line(f"    note: {note}")
    return StageResult([Artifact("dataset", "json", path)], {"splits": counts, "num_classes": len(ds.class_names)})
