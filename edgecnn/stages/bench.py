"""The ``bench`` stage: every TFLite model on each recipe ``bench`` target."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgecnn.artifacts import MODEL_FILE_KINDS, Artifact
from edgecnn.fileio import atomic_path
from edgecnn.stage import StageResult

if TYPE_CHECKING:
    from edgecnn.recipe import Recipe
    from edgecnn.stage import BuildContext


def run_bench(recipe: "Recipe", ctx: "BuildContext") -> StageResult:
    """Benchmark every .tflite (int8 first, then float) on each ``bench`` target.

    Each target gets the first ``samples`` test-split images (normalized, as
    ``bench_samples_<n>.npz``) for device-side accuracy. Results are appended to
    ``bench.jsonl`` in the run directory (the file ``edgecnn bench --out RUN_DIR`` also
    appends to) and kept in the stage metrics, which the report shows under ``bench``.
    A target that fails -- unreachable, timed out, bad options -- is recorded as a failed
    result, never fatal to the build.

    Cached like every stage, by the ``bench`` section and the content of the models and
    data: re-measure with a changed ``bench`` section (``--set``) or by deleting
    ``stages/bench.json``.
    """
    import numpy as np

    from edgecnn.bench.harness import AdbOptions, SshOptions, run_benchmarks
    from edgecnn.bench.schema import append_result, failed_result, model_info
    from edgecnn.targets import parse_target
    from edgecnn.errors import EdgecnnError

    ds = ctx.dataset
    # int8 first (the model a device runs), then the float ones, each kind in chain order.
    models = sorted(ctx.artifacts.all(kind=MODEL_FILE_KINDS), key=lambda a: (a.precision != "int8", a.name))
    samples: dict[int, Path] = {}
    for n in sorted({t.samples for t in recipe.bench if t.samples}):
        count = min(n, len(ds.y_test))
        with atomic_path(ctx.path(f"bench_samples_{n}.npz")) as tmp:
            # (np.savez dates its zip entries 1980-01-01: the file's bytes depend on the data only)
            np.savez(tmp, x=ds.normalization.apply(ds.x_test[:count]).astype(np.float32),
                     y=np.asarray(ds.y_test[:count]))
        samples[n] = ctx.path(f"bench_samples_{n}.npz")
    results = []
    for cfg in recipe.bench:
        target = parse_target(cfg.target)  # once per bench row; the harness takes the Target
        settings = dict(threads=cfg.threads, runs=cfg.runs, warmup=cfg.warmup, timeout_s=cfg.timeout_s,
                        inputs_npz=samples.get(cfg.samples),
                        ssh=SshOptions(remote_python=cfg.remote_python, identity=cfg.identity,
                                       known_hosts=cfg.known_hosts),
                        adb=AdbOptions(benchmark_binary=cfg.benchmark_binary))
        # An Edge TPU model runs only where an Edge TPU is (a coral target); CPU models run everywhere.
        runtimes = {"litert", "edgetpu"} if target.kind == "coral" else {"litert"}
        for artifact in (a for a in models if a.runtime in runtimes):
            path = artifact.path
            try:
                result = run_benchmarks(path, [target], **settings)[0]
            except EdgecnnError as exc:  # bad options for this target: recorded, not fatal
                result = failed_result(cfg.target, model_info(path), str(exc), threads=cfg.threads, runs=cfg.runs,
                                       warmup=cfg.warmup)
            append_result(ctx.out_dir, result)
            results.append(result)
            ctx.progress.line(f"    {cfg.target}: {path.name}: " + _bench_note(result))
    failed = sum(r["status"] != "ok" for r in results)
    produced = [Artifact(f"bench_samples.{n}", "npz", path) for n, path in samples.items()]
    return StageResult(produced, {"results": results, "failed": failed, "results_file": "bench.jsonl"})


def _bench_note(result: dict) -> str:
    if result["status"] != "ok":
        return f"FAILED: {result['reason']}"
    lat = result["latency_ms"]
    note = f"p50 {lat['p50'] if lat['p50'] is not None else lat['mean']:.3f} ms"
    if result.get("accuracy") is not None:
        note += f", accuracy {result['accuracy'] * 100:.2f}% on {result['samples']} test images"
    return note
