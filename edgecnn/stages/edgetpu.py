"""The ``edgetpu`` stage: the int8 model compiled for the Coral Edge TPU."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecnn.stage import StageResult
from edgecnn.artifacts import Artifact

if TYPE_CHECKING:
    from edgecnn.recipe import Recipe
    from edgecnn.stage import BuildContext


def edgetpu_environment(recipe: "Recipe") -> dict[str, str]:
    """The compiler the ``edgetpu`` stage would use, for its cache key: a new compiler
    (or one installed since a skip) re-compiles."""
    from edgecnn.export.edgetpu import COMPILER, compiler_identity

    return {COMPILER: compiler_identity() or "absent"}


def run_edgetpu(recipe: "Recipe", ctx: "BuildContext") -> StageResult:
    """Compile the int8 model for the Coral Edge TPU with ``edgetpu_compiler``.

    Skipped, with the reason and how to install the compiler, on a host without it: the
    build goes on and the reports say so. A compiler output without the
    ``edgetpu-custom-op`` (nothing mapped to the TPU) fails the stage.
    """
    import os
    import tempfile

    from edgecnn.errors import MissingDependencyError
    from edgecnn.export.edgetpu import compile_edgetpu, find_edgetpu_compiler, format_compile_summary
    from edgecnn.export.formats import EDGETPU_FORMAT

    # Present: the recipe refuses edgetpu without quantize.int8 (edgecnn.recipe).
    int8 = ctx.artifacts.one("model.tflite.int8")
    out = ctx.path(EDGETPU_FORMAT.filename)
    try:
        find_edgetpu_compiler()
    except MissingDependencyError as exc:
        # An earlier build's compile would pass for this build's model: this stage's file, removed.
        out.unlink(missing_ok=True)
        return StageResult(skipped=str(exc))
    # Compiled in a folder of its own (".tmp-": a killed build's is cleaned up), so the
    # compiler's log and report stay out of the run directory and the model file, which
    # is this stage's, is replaced whatever an earlier build left there.
    with tempfile.TemporaryDirectory(prefix=".tmp-edgetpu-stage.", dir=ctx.out_dir) as work:
        compiled = compile_edgetpu(int8.path, work)
        os.replace(compiled.model, out)
    parsed = compiled.parsed
    for line in format_compile_summary(parsed, out.name).splitlines():
        ctx.progress.line(f"    {line}")
    keep = ("compiler_version", "total_ops", "ops_on_tpu", "ops_on_cpu", "subgraphs", "cpu_fallback_ops",
            "on_chip_memory_used_bytes", "off_chip_memory_used_bytes")
    metrics = {k: parsed.get(k) for k in keep}
    metrics["source"] = int8.role
    artifact = Artifact(EDGETPU_FORMAT.role, EDGETPU_FORMAT.kind, out, precision=EDGETPU_FORMAT.precision,
                        runtime=EDGETPU_FORMAT.runtime, source=int8.role)
    return StageResult([artifact], metrics)
