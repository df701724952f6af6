"""The ``mixed`` stage (``quantize.mixed``): int8 with chosen layers at another precision.

The recipe names Keras layers of the student by glob and gives each a precision
(``float32``, or ``int16x8``: int16 activations with int8 weights); every other op is int8
and the I/O stays int8. Written by litert-quantizer from the float32 file of each
post-training source (:mod:`edgecnn.export.requantize`), calibrated once on the images the
quantize stage uses. Ops are matched by the Keras layers their fused tensor names carry, so
``block_16_project`` finds the convolution the converter fused with its BatchNorm.
"""

from __future__ import annotations

import tempfile
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING

from edgecnn.stage import StageResult
from edgecnn.stages.common import add_metadata, calibration_images, deployable_models, float32_file, format_artifact

if TYPE_CHECKING:
    from edgecnn.recipe import Recipe
    from edgecnn.stage import BuildContext


def _unmatched(patterns, names) -> list[str]:
    return [p for p in patterns if not any(fnmatchcase(n, p) for n in names)]


def _no_match_error(pattern: str, names) -> "Exception":
    import difflib

    from edgecnn.errors import RecipeError

    close = difflib.get_close_matches(pattern.replace("*", ""), sorted(names), n=4, cutoff=0.4)
    return RecipeError(f"quantize.mixed: '{pattern}' matches no layer of the student"
                       + (f"; close names: {', '.join(close)}" if close else "")
                       + "; fix the pattern (layer names: `edgecnn inspect` of the float32 file, or the Keras model)")


def check_mixed(recipe: "Recipe") -> None:
    """Before training: the quantizer is installed and every glob matches a student layer."""
    from edgecnn.export.requantize import require
    from edgecnn.stages.common import student_architecture

    require("quantize.mixed")
    names = [layer.name for layer in student_architecture(recipe).layers]
    for pattern in _unmatched(recipe.quantize.mixed, names):
        raise _no_match_error(pattern, names)


def run_mixed(recipe: "Recipe", ctx: "BuildContext") -> StageResult:
    """``<model>_int8_mixed.tflite`` for every post-training deployable model."""
    from edgecnn.export import requantize
    from edgecnn.export.formats import MIXED_FORMAT
    from edgecnn.export.gate import layer_names
    from edgecnn.fileio import write_bytes_atomic

    mixed = recipe.quantize.mixed
    calibration = calibration_images(recipe, ctx)
    produced, records = [], []
    for source in deployable_models(ctx, quantization_aware=False):
        with tempfile.TemporaryDirectory(prefix=".mixed-", dir=ctx.out_dir) as tmp:
            float_path, _ = float32_file(ctx, source, Path(tmp))
            described = requantize.describe(float_path)
            precisions, layers = {}, {}
            for pattern, precision in mixed.items():
                ops = [name for name in described.op_outputs
                       if any(fnmatchcase(layer, pattern) for layer in layer_names(name))]
                if not ops:  # a layer with no op of its own (folded into another by the converter)
                    raise _no_match_error(pattern, {n for name in described.op_outputs for n in layer_names(name)})
                precisions.update({op: precision for op in ops})
                layers[pattern] = sorted({n for op in ops for n in layer_names(op) if fnmatchcase(n, pattern)})
            ranges = requantize.calibrate(described, calibration)
            model = requantize.quantize_int8(described, ranges, precisions=precisions,
                                             per_channel=recipe.quantize.per_channel)
        path = write_bytes_atomic(ctx.path(MIXED_FORMAT.filename_for(source.name)), model)
        add_metadata(path, recipe, ctx)
        produced.append(format_artifact(MIXED_FORMAT, path, source))
        records.append({"model": path.name, "source": source.role, "ops": len(precisions),
                        "layers": {p: {"precision": mixed[p], "layers": names} for p, names in layers.items()}})
        ctx.progress.line(f"    {path.name}: " + "; ".join(f"{p} -> {mixed[p]} ({len(n)} layers)"
                                                        for p, n in layers.items()))
    return StageResult(produced, {"models": records})
