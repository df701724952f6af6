"""The ``bundle`` stage: a deploy bundle of every host-runnable model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecnn.artifacts import Artifact
from edgecnn.stage import StageResult
from edgecnn.stages.common import BUNDLE_DIR

if TYPE_CHECKING:
    from edgecnn.recipe import Recipe
    from edgecnn.stage import BuildContext


def run_bundle(recipe: "Recipe", ctx: "BuildContext") -> StageResult:
    """A deploy bundle of every produced model in ``bundle/`` (see edgecnn.export.bundle)."""
    from edgecnn.export.bundle import write_bundle

    # Every host-runnable model of this build (the golden outputs need the host interpreter,
    # so Edge TPU files stay out), by kind: never a stale file of another build by name.
    models = ctx.artifacts.all(kind="tflite")
    # The bundle folder is this stage's own output inside the run directory: replace it.
    path = write_bundle(ctx.out_dir, ctx.path(BUNDLE_DIR), recipe=recipe, force=True,
                        models=[(m.name, m.precision, m.path) for m in models])
    ctx.progress.line(f"    {path}: verify it with 'edgecnn verify {path}'")
    return StageResult([Artifact("bundle", "dir", path)], {"models": [m.role for m in models]})
