"""The ``export`` stage: the float TFLite formats of the latest Keras model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecnn.stage import StageResult
from edgecnn.stages.common import (add_metadata, calibration_images, deployable_models, format_artifact,
                                   model_to_convert)

if TYPE_CHECKING:
    from edgecnn.recipe import Recipe
    from edgecnn.stage import BuildContext


def run_export(recipe: "Recipe", ctx: "BuildContext") -> StageResult:
    """Convert every deployable float Keras model (QAT models become int8 only) to each
    format in ``export.formats`` but int8 and edgetpu, with TFLite metadata."""
    from edgecnn.export.formats import float_formats
    from edgecnn.export.tflite import convert

    formats = float_formats(recipe.export.formats)
    # (data.representative_samples, not the quantize section: this stage's key has no quantize section)
    needs = any(f.needs_calibration for f in formats)
    calibration = calibration_images(recipe, ctx, recipe.data.representative_samples) if needs else None
    produced = []
    sources = deployable_models(ctx, quantization_aware=False)
    for source in sources:
        model, _ = model_to_convert(ctx, source)
        for fmt in formats:
            path = convert(model, fmt, ctx.path(fmt.filename_for(source.name)), calibration)
            produced.append(format_artifact(fmt, add_metadata(path, recipe, ctx), source))
    return StageResult(produced, {"sources": [a.role for a in sources]})
