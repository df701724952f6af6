"""The ``export`` stage: the float TFLite formats of the latest Keras model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecnn.stage import StageResult
from edgecnn.stages.common import add_metadata, format_artifact, model_to_convert

if TYPE_CHECKING:
    from edgecnn.recipe import Recipe
    from edgecnn.stage import BuildContext


def run_export(recipe: "Recipe", ctx: "BuildContext") -> StageResult:
    """Convert the latest Keras model to each float TFLite format in ``export.formats``, with TFLite metadata."""
    from edgecnn.export.formats import float_formats
    from edgecnn.export.tflite import convert_float

    model, source = model_to_convert(ctx)
    produced = []
    for fmt in float_formats(recipe.export.formats):  # (edgetpu is the edgetpu stage's)
        path = add_metadata(convert_float(model, fmt, ctx.path(fmt.filename)), recipe, ctx)
        produced.append(format_artifact(fmt, path))
    return StageResult(produced, {"source": source.role})
