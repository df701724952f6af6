"""edgecnn: from images and a big model to a small, accurate, int8 .tflite, measured.

The public surface is small on purpose; everything else is reachable two levels deep.
Importing this package does not import TensorFlow.
"""

from edgecnn._version import __version__
from edgecnn.errors import DataError, EdgecnnError, ModelFileError, RecipeError

__all__ = ["DataError", "EdgecnnError", "ModelFileError", "Recipe", "RecipeError", "__version__", "build", "load_recipe"]


def __getattr__(name: str):
    # Lazy: pydantic costs ~0.1 s to import and `edgecnn --help` needs none of it.
    if name in ("Recipe", "load_recipe"):
        from edgecnn import recipe

        return getattr(recipe, name)
    raise AttributeError(f"module 'edgecnn' has no attribute {name!r}")


def build(recipe, out_dir=None, **kwargs):
    """Run the pipeline for ``recipe`` (a Recipe or a path); see :func:`edgecnn.pipeline.build`."""
    from edgecnn.pipeline import build as _build

    return _build(recipe, out_dir=out_dir, **kwargs)
