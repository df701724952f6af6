"""edgecnn: from images and a big model to a small, accurate, int8 .tflite, measured.

The public surface is small on purpose; everything else is reachable two levels deep.
Importing this package does not import TensorFlow.
"""

from edgecnn.errors import DataError, EdgecnnError, ModelFileError, RecipeError
from edgecnn.recipe import Recipe, load_recipe

__version__ = "0.1.0"

__all__ = ["DataError", "EdgecnnError", "ModelFileError", "Recipe", "RecipeError", "__version__", "build", "load_recipe"]


def build(recipe, out_dir=None, **kwargs):
    """Run the pipeline for ``recipe`` (a Recipe or a path); see :func:`edgecnn.pipeline.build`."""
    from edgecnn.pipeline import build as _build

    return _build(recipe, out_dir=out_dir, **kwargs)
