"""The ``quantize`` stage: full-integer post-training quantization of the latest Keras model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecnn.stage import StageResult
from edgecnn.stages.common import (add_metadata, calibration_images, deployable_models, format_artifact,
                                   model_to_convert)

if TYPE_CHECKING:
    from edgecnn.recipe import Recipe
    from edgecnn.stage import BuildContext


def run_quantize(recipe: "Recipe", ctx: "BuildContext") -> StageResult:
    """Full-integer post-training quantization of every deployable Keras model, calibrated on
    un-augmented training images; with metadata. ``quantize.weights`` sets the weight scales
    of post-training files; a quantization-aware model keeps the quantizers it trained with
    (tfmot's: per channel for convolutions, per tensor for Dense; its ranges were learned for them)."""
    from edgecnn.export.formats import get_format
    from edgecnn.artifacts import QUANTIZATION_AWARE_ROLES
    from edgecnn.export.tflite import convert_int8

    calibration = calibration_images(recipe, ctx)
    fmt = get_format("int8")
    produced = []
    for source in deployable_models(ctx):
        model, _ = model_to_convert(ctx, source)
        per_channel = recipe.quantize.per_channel or source.role in QUANTIZATION_AWARE_ROLES
        path = convert_int8(model, calibration, recipe.quantize.io_dtype, ctx.path(fmt.filename_for(source.name)),
                            per_channel=per_channel)
        add_metadata(path, recipe, ctx)
        produced.append(format_artifact(fmt, path, source))
    return StageResult(produced, {"calibration_samples": int(len(calibration)), "io_dtype": recipe.quantize.io_dtype,
                                  "weights": recipe.quantize.weights,
                                  "sources": [a.source for a in produced]})
