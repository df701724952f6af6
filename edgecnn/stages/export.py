"""The ``export`` stage: the float TFLite formats of the latest Keras model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecnn.stage import StageResult
from edgecnn.stages.common import add_metadata, deployable_models, format_artifact, model_to_convert

if TYPE_CHECKING:
    from edgecnn.recipe import Recipe
    from edgecnn.stage import BuildContext


def run_export(recipe: "Recipe", ctx: "BuildContext") -> StageResult:
    """Convert every deployable float Keras model (QAT models become int8 only) to each float TFLite format in ``export.formats``, with TFLite metadata."""
    from edgecnn.export.formats import float_formats
    from edgecnn.export.tflite import convert_float

    produced = []
    for source in deployable_models(ctx, quantization_aware=False):
        model, _ = model_to_convert(ctx, source)
        for fmt in float_formats(recipe.export.formats):  # (edgetpu is the edgetpu stage's)
            path = add_metadata(convert_float(model, fmt, ctx.path(fmt.filename_for(source.name))), recipe, ctx)
            produced.append(format_artifact(fmt, path, source))
    return StageResult(produced, {"sources": [a.role for a in deployable_models(ctx, quantization_aware=False)]})
