"""The ``evaluate`` stage: every TFLite model on the test split, with the real TFLite runtime."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecnn.artifacts import MODEL_FILE_KINDS, Artifact
from edgecnn.fileio import write_json_atomic
from edgecnn.stage import StageResult
from edgecnn.stages.common import EVALUATION_FILE

if TYPE_CHECKING:
    from edgecnn.recipe import Recipe
    from edgecnn.stage import BuildContext


# Runtimes the evaluate stage runs on the host: the TFLite CPU interpreter. An Edge TPU
# model needs the accelerator (measure it with a coral bench target), so it is listed as
# not evaluable rather than run on kernels it was not compiled for.
HOST_RUNTIMES = frozenset({"litert"})


NOT_EVALUABLE = "not evaluable on this host"


# Per runtime the host lacks: what it is, and how to measure such a model ({file}) instead.
_NOT_EVALUABLE_WHY = {
    "edgetpu": ("a Coral Edge TPU", "measure it on one with `edgecnn bench {file} --target coral --inputs "
                                    "bench_samples_N.npz`, or a `bench: [{{target: coral, samples: N}}]` recipe entry"),
}


def _not_evaluable_reason(artifact: Artifact, host_runtime: str) -> str:
    what, hint = _NOT_EVALUABLE_WHY.get(artifact.runtime, (None, None))
    return (f"needs the {artifact.runtime} runtime{f' ({what})' if what else ''}; the host evaluates on "
            f"{host_runtime} (CPU)" + (f"; {hint.format(file=artifact.path.name)}" if hint else ""))


def run_evaluate(recipe: "Recipe", ctx: "BuildContext") -> StageResult:
    """Run every TFLite model whose runtime the host has on the test split, with the real TFLite runtime.

    A model for another runtime (an Edge TPU model) is listed with ``status`` "not
    evaluable on this host" and no accuracy; the build goes on.
    """
    from edgecnn.tflite.reader import inspect_tflite
    from edgecnn.fileio import path_size
    from edgecnn.runtime.interpreter import evaluate_tflite, runtime_name_version

    ds = ctx.dataset
    x_test = ds.normalization.apply(ds.x_test)
    runtime, version = runtime_name_version()
    results = {}
    skipped = []
    for artifact in ctx.artifacts.all(kind=MODEL_FILE_KINDS):
        row = {"path": artifact.path.name, "role": artifact.role, "kind": artifact.kind,
               "precision": artifact.precision, "runtime": artifact.runtime}
        if artifact.runtime not in HOST_RUNTIMES:
            row.update(status=NOT_EVALUABLE, accuracy=None, size_bytes=path_size(artifact.path),
                       reason=_not_evaluable_reason(artifact, runtime))
            skipped.append(f"{artifact.path.name}: {NOT_EVALUABLE}: {row['reason']}")
        else:
            summary = inspect_tflite(artifact.path)
            accuracy = evaluate_tflite(artifact.path, x_test, ds.y_test, num_threads=recipe.evaluate.threads)
            row.update(status="evaluated", accuracy=round(float(accuracy), 5), input_dtype=summary.inputs[0].dtype,
                       output_dtype=summary.outputs[0].dtype, size_bytes=summary.file_size)
        results[artifact.name] = row
    # Names only: the accuracies are the build's result, printed once at its end (the CLI's
    # table) and kept in report.json, not repeated here.
    evaluated = ", ".join(r["path"] for r in results.values() if r["status"] == "evaluated") or "no .tflite model"
    ctx.progress.line(f"    {evaluated} on {len(ds.y_test)} test images ({runtime} {version})")
    for line in skipped:
        ctx.progress.line(f"    {line}")
    evaluation = {"runtime": runtime, "runtime_version": version, "test_images": int(len(ds.y_test)),
                  "models": results}
    path = write_json_atomic(ctx.path(EVALUATION_FILE), evaluation)
    return StageResult([Artifact("report.evaluation", "json", path)], evaluation)
