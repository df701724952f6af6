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

    from edgecnn.artifacts import role_matches

    # Every converter-made int8 file: the student's (present: the recipe refuses edgetpu
    # without quantize.int8), and the pruned and QAT models' (``model.tflite.int8.<source>``).
    # The gate's and mixed-precision files keep float layers by design and are not compiled.
    sources = [a for a in ctx.artifacts.all(kind="tflite") if role_matches(a.role, INT8_ROLES)]
    try:
        find_edgetpu_compiler()
    except MissingDependencyError as exc:
        # An earlier build's compile would pass for this build's model: this stage's files, removed.
        for int8 in sources:
            ctx.path(EDGETPU_FORMAT.filename_for(_source_name(ctx, int8))).unlink(missing_ok=True)
        return StageResult(skipped=str(exc))
    keep = ("compiler_version", "total_ops", "ops_on_tpu", "ops_on_cpu", "subgraphs", "cpu_fallback_ops",
            "on_chip_memory_used_bytes", "off_chip_memory_used_bytes")
    produced, per_model = [], []
    for int8 in sources:
        name = _source_name(ctx, int8)
        out = ctx.path(EDGETPU_FORMAT.filename_for(name))
        # Compiled in a folder of its own (".tmp-": a killed build's is cleaned up), so the
        # compiler's log and report stay out of the run directory and the model file, which
        # is this stage's, is replaced whatever an earlier build left there.
        with tempfile.TemporaryDirectory(prefix=".tmp-edgetpu-stage.", dir=ctx.out_dir) as work:
            compiled = compile_edgetpu(int8.path, work)
            os.replace(compiled.model, out)
        parsed = compiled.parsed
        for line in format_compile_summary(parsed, out.name).splitlines():
            ctx.progress.line(f"    {line}")
        per_model.append({**{k: parsed.get(k) for k in keep}, "source": int8.role, "path": out.name})
        produced.append(Artifact(EDGETPU_FORMAT.role_for(name), EDGETPU_FORMAT.kind, out,
                                 precision=EDGETPU_FORMAT.precision, runtime=EDGETPU_FORMAT.runtime, source=int8.role))
    # The student's compile at the top level (as before), every file's under "models".
    metrics = {k: v for k, v in per_model[0].items() if k != "path"}
    metrics["models"] = per_model
    return StageResult(produced, metrics)


# The converter's int8 files: the student's and every other deployable model's.
INT8_ROLES = ("model.tflite.int8", "model.tflite.int8.*")


def _source_name(ctx: "BuildContext", int8) -> str:
    """``student``, ``pruned``, ``qat``: the Keras model an int8 file was converted from."""
    source = ctx.artifacts.get(int8.source) if int8.source else None
    return source.name if source is not None else "student"
