"""The ``evaluate`` stage: every TFLite model on the test split, with the real TFLite runtime."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecnn.artifacts import MODEL_FILE_KINDS, QUANTIZATION_AWARE_ROLES, Artifact
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


def file_compression(path) -> dict:
    """What compression left in a model file: its gzip size and the zeros read back from its
    weights (global, and over the tensors at least 30 % zero, i.e. the pruned ones). Computed
    here, in a cached stage, so a report of an unchanged build reads no model file again."""
    import gzip

    from edgecnn.tflite.reader import sparsity_summary, weight_sparsity

    # mtime=0: the same file always gives the same gzip size.
    gz = len(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0))
    summary = sparsity_summary(weight_sparsity(path), min_sparsity=0.3)
    channel, tensor = summary["per_channel_tensors"], summary["per_tensor_tensors"]
    scales = None if not (channel or tensor) else "per channel" if not tensor else "per tensor" if not channel else "mixed"
    return {"gzip_bytes": gz, "weight_sparsity": summary["sparsity"], "weight_scales": scales,
            "pruned_tensors": summary["pruned_tensors"], "pruned_tensors_sparsity": summary["pruned_sparsity"]}


def float_reference(ctx: "BuildContext", artifact: Artifact) -> Artifact | None:
    """The float32 file ``artifact`` should be compared with, following the artifact graph.

    A converted file (int8, float16 ...) is compared with the float32 file of the same
    Keras model; a quantization-aware model's files with the float32 file of the model it
    was made from; a float32 file of a compressed model (pruned) with the float32 file of
    the model it was compressed from. None when there is no such file (float32 not built).
    """
    float32 = {a.source: a for a in ctx.artifacts.all(kind="tflite") if a.precision == "float32" and a.source}
    source = ctx.artifacts.get(artifact.source) if artifact.source else None
    if source is None:
        return None
    if artifact.precision == "float32":  # compare with the float model it was compressed from
        return float32.get(source.source) if source.source else None
    while source.role in QUANTIZATION_AWARE_ROLES and source.source and ctx.artifacts.get(source.source):
        source = ctx.artifacts.get(source.source)
    reference = float32.get(source.role)
    return reference if reference is not None and reference.role != artifact.role else None


def forgetting(predicted, reference, labels, class_names, reference_name: str) -> dict:
    """What a compressed model forgot against its float reference (Hooker et al., 2019,
    "What do compressed deep neural networks forget?", arXiv:1911.05248): top-1 agreement,
    the test images whose prediction flipped, and the accuracy change per class in points."""
    import numpy as np

    per_class = []
    for c, name in enumerate(class_names):
        rows = labels == c
        if rows.any():
            change = (np.mean(predicted[rows] == c) - np.mean(reference[rows] == c)) * 100
            per_class.append({"class": name, "change_points": round(float(change), 2)})
    worst = min(per_class, key=lambda row: row["change_points"]) if per_class else None
    return {"reference": reference_name, "top1_agreement": round(float(np.mean(predicted == reference)), 5),
            "flipped": int(np.sum(predicted != reference)),
            "flipped_to_wrong": int(np.sum((predicted != reference) & (reference == labels))),
            "per_class_change_points": per_class, "worst_class": worst}


def run_evaluate(recipe: "Recipe", ctx: "BuildContext") -> StageResult:
    """Run every TFLite model whose runtime the host has on the test split, with the real TFLite runtime.

    A model for another runtime (an Edge TPU model) is listed with ``status`` "not
    evaluable on this host" and no accuracy; the build goes on.
    """
    import numpy as np

    from edgecnn.tflite.reader import count_macs, inspect_tflite
    from edgecnn.fileio import path_size
    from edgecnn.runtime.interpreter import predict_classes, runtime_name_version

    ds = ctx.dataset
    x_test = ds.normalization.apply(ds.x_test)
    labels = np.asarray(ds.y_test).reshape(-1)
    runtime, version = runtime_name_version()
    results = {}
    predictions: dict[str, np.ndarray] = {}
    skipped = []
    for artifact in ctx.artifacts.all(kind=MODEL_FILE_KINDS):
        row = {"path": artifact.path.name, "role": artifact.role, "kind": artifact.kind,
               "precision": artifact.precision, "runtime": artifact.runtime, **file_compression(artifact.path)}
        if artifact.runtime not in HOST_RUNTIMES:
            row.update(status=NOT_EVALUABLE, accuracy=None, size_bytes=path_size(artifact.path),
                       reason=_not_evaluable_reason(artifact, runtime))
            skipped.append(f"{artifact.path.name}: {NOT_EVALUABLE}: {row['reason']}")
        else:
            summary = inspect_tflite(artifact.path)
            predicted = predict_classes(artifact.path, x_test, num_threads=recipe.evaluate.threads)
            predictions[artifact.role] = predicted
            accuracy = float(np.mean(predicted == labels))
            row.update(status="evaluated", accuracy=round(accuracy, 5), input_dtype=summary.inputs[0].dtype,
                       output_dtype=summary.outputs[0].dtype, size_bytes=summary.file_size,
                       params=summary.parameter_count, macs=count_macs(artifact.path))
        results[artifact.name] = row
    for artifact in ctx.artifacts.all(kind=MODEL_FILE_KINDS):
        reference = float_reference(ctx, artifact)
        if artifact.role in predictions and reference is not None and reference.role in predictions:
            results[artifact.name].update(forgetting(predictions[artifact.role], predictions[reference.role],
                                                     labels, ds.class_names, reference.name))
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
