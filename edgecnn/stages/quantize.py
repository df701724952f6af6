"""The ``quantize`` stage: full-integer post-training quantization of the latest Keras model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecnn.stage import StageResult
from edgecnn.stages.common import add_metadata, format_artifact, model_to_convert

if TYPE_CHECKING:
    from edgecnn.recipe import Recipe
    from edgecnn.stage import BuildContext


def run_quantize(recipe: "Recipe", ctx: "BuildContext") -> StageResult:
    """Full-integer post-training quantization, calibrated on un-augmented training images; with metadata."""
    from edgecnn.data import representative_images
    from edgecnn.export.formats import get_format
    from edgecnn.export.tflite import convert_int8

    ds = ctx.dataset
    n = recipe.quantize.calibration_samples or recipe.data.representative_samples
    calibration = ds.normalization.apply(representative_images(ds, n, recipe.seed))
    model, source = model_to_convert(ctx)
    fmt = get_format("int8")
    path = convert_int8(model, calibration, recipe.quantize.io_dtype, ctx.path(fmt.filename))
    add_metadata(path, recipe, ctx)
    return StageResult([format_artifact(fmt, path)], {"calibration_samples": int(len(calibration)),
                                                       "io_dtype": recipe.quantize.io_dtype, "source": source.role})
