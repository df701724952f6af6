"""The ``export`` stage: the float TFLite formats of the latest Keras model."""

from __future__ import annotations

import tempfile
from pathlib import Path
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
    from edgecnn.export.formats import float_formats, get_format
    from edgecnn.export.requantize import describe, quantize_weights
    from edgecnn.export.tflite import convert
    from edgecnn.fileio import write_bytes_atomic

    formats = float_formats(recipe.export.formats)
    # (data.representative_samples, not the quantize section: this stage's key has no quantize section)
    needs = any(f.needs_calibration for f in formats)
    calibration = calibration_images(recipe, ctx, recipe.data.representative_samples) if needs else None
    produced = []
    sources = deployable_models(ctx, quantization_aware=False)
    for source in sources:
        model, _ = model_to_convert(ctx, source)
        float32 = None  # the float32 file the quantizer's rows start from
        with tempfile.TemporaryDirectory(prefix=".export-", dir=ctx.out_dir) as tmp:
            for fmt in formats:
                path = ctx.path(fmt.filename_for(source.name))
                if fmt.tool == "litert-quantizer":
                    if float32 is None:
                        float32 = convert(model, get_format("float32"), Path(tmp) / "float32.tflite")
                    write_bytes_atomic(path, quantize_weights(describe(float32), fmt.weight_bits))
                else:
                    convert(model, fmt, path, calibration)
                    float32 = path if fmt.name == "float32" else float32
                produced.append(format_artifact(fmt, add_metadata(path, recipe, ctx), source))
    return StageResult(produced, {"sources": [a.role for a in sources]})


def export_environment(recipe: "Recipe") -> dict[str, str]:
    """The quantizer's version, when a format it writes is asked for (its cache key)."""
    from edgecnn.export.formats import float_formats
    from edgecnn.export.requantize import version

    return {"litert-quantizer": version()} if any(f.tool == "litert-quantizer"
                                                   for f in float_formats(recipe.export.formats)) else {}


def check_export(recipe: "Recipe") -> None:
    """Before training: the quantizer is installed when a format needs it."""
    from edgecnn.export.formats import float_formats
    from edgecnn.export.requantize import require

    for fmt in float_formats(recipe.export.formats):
        if fmt.tool == "litert-quantizer":
            require(f"export.formats {fmt.name}")
