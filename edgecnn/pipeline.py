"""The build pipeline: stage order, caching by input hash, timing, manifest.

A stage is a function ``run(recipe, ctx) -> StageResult``: it owns one transformation and
writes its files atomically into the run directory. The pipeline owns everything else:
which stages run, in what order, whether a cached result can be re-used, and the record
of what was produced.

Caching: a stage's key is the sha256 of its name, the edgecnn version, the recipe
sections it reads, and the sha256 of every upstream artifact it consumes (content, not
upstream keys, so a re-trained teacher invalidates the student even under the same
recipe). ``stages/<name>.json`` records the key and the sha256 of each output; a stage is
re-used only when the key matches and every output still hashes to its record. The
record is written last, so a build killed mid-stage leaves a stale record that no longer
matches, never a file that passes for valid.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

from edgecnn import stages as _stages
from edgecnn.stages import StageResult
from edgecnn.errors import EdgecnnError
from edgecnn.fileio import clean_stale_temporaries, path_size, sha256_file, write_json_atomic
from edgecnn.progress import Progress
from edgecnn.recipe import Recipe, load_recipe

STAGE_DIR = "stages"


@dataclass(frozen=True)
class Stage:
    """One pipeline step.

    Attributes:
        name: stage name (also its record file name).
        sections: recipe sections whose values go into the cache key.
        consumes: upstream artifact names whose content goes into the cache key.
        run: the transformation.
        enabled: whether the recipe asks for this stage.
        describe: one line for ``edgecnn validate``.
    """

    name: str
    sections: tuple[str, ...]
    consumes: tuple[str, ...]
    run: Callable[[Recipe, "BuildContext"], StageResult]
    enabled: Callable[[Recipe], bool]
    describe: Callable[[Recipe], str]


def _teacher_needed(r: Recipe) -> bool:
    return r.distill.enabled


STAGES: tuple[Stage, ...] = (
    Stage("data", ("data", "seed"), (), _stages.run_data, lambda r: True,
          lambda r: f"{r.data.source} at {r.data.image_size}x{r.data.image_size}x{r.data.channels}"
                    f"{f', train_limit {r.data.train_limit}' if r.data.train_limit else ''}"),
    Stage("teacher", ("teacher", "seed"), ("dataset",), _stages.run_teacher, _teacher_needed,
          lambda r: f"load {r.teacher.path}" if r.teacher.path else
                    f"train {r.teacher.architecture} for {r.teacher.train.epochs} epochs"),
    Stage("student", ("student", "distill", "seed"), ("dataset", "teacher"), _stages.run_student, lambda r: True,
          lambda r: f"{r.student.architecture} alpha {r.student.alpha:g}"
                    + (f" (output stride {r.student.output_stride})" if r.student.output_stride != 32 else "") + ", "
                    + (f"distilled at T={r.distill.temperature:g}, alpha={r.distill.alpha:g}" if r.distill.enabled else "hard labels only")
                    + f", {r.distill.train.epochs} epochs"),
    Stage("export", ("export",), ("dataset", "student"), _stages.run_export, lambda r: bool(r.export.formats),
          lambda r: "TFLite " + ", ".join(r.export.formats)),
    Stage("quantize", ("quantize", "seed"), ("dataset", "student"), _stages.run_quantize, lambda r: r.quantize.int8,
          lambda r: f"post-training int8, {r.quantize.io_dtype} I/O, "
                    f"{r.quantize.calibration_samples or r.data.representative_samples} calibration images"),
    Stage("evaluate", ("evaluate",), ("dataset", "tflite"), _stages.run_evaluate, lambda r: True,
          lambda r: "test-split accuracy of every .tflite on ai-edge-litert"),
    Stage("bundle", ("export",), ("dataset", "tflite", "evaluation"), _stages.run_bundle, lambda r: r.export.bundle,
          lambda r: "deploy bundle in bundle/: models, labels, golden samples, device runner"),
    # Cached like the others (config + model and data content); re-measure by changing
    # the bench section or deleting stages/bench.json.
    Stage("bench", ("bench",), ("dataset", "tflite"), _stages.run_bench, lambda r: bool(r.bench),
          lambda r: "every .tflite on " + ", ".join(t.target for t in r.bench) + ", device-side accuracy"),
)


def planned_stages(recipe: Recipe) -> list[Stage]:
    """The stages this recipe will run, in order (``edgecnn validate`` prints them)."""
    return [s for s in STAGES if s.enabled(recipe)]


class BuildContext:
    """What stages share: the run directory, produced artifacts, progress and lazy data."""

    def __init__(self, recipe: Recipe, out_dir: Path, progress: Progress):
        self.recipe = recipe
        self.out_dir = out_dir
        self.progress = progress
        self.artifacts: dict[str, Path] = {}
        self.metrics: dict[str, dict] = {}

    @cached_property
    def dataset(self):
        """The loaded dataset; only stages that really run pay for loading it."""
        from edgecnn.data import load_dataset

        return load_dataset(self.recipe.data, self.recipe.seed)

    def path(self, name: str) -> Path:
        return self.out_dir / name

    def artifacts_for(self, names: tuple[str, ...]) -> dict[str, Path]:
        """Upstream artifacts whose names equal or start with one of ``names``."""
        return {k: v for k, v in sorted(self.artifacts.items()) if any(k == n or k.startswith(n + "_") for n in names)}


def _stage_key(stage: Stage, recipe: Recipe, ctx: BuildContext, hashes: dict[str, str]) -> str:
    from edgecnn import __version__

    upstream = {name: hashes[name] for name in ctx.artifacts_for(stage.consumes)}
    payload = {
        "stage": stage.name,
        "edgecnn": __version__,
        "config": recipe.section_hash(*[s for s in stage.sections if s != "seed"]),
        "seed": recipe.seed if "seed" in stage.sections else None,
        "upstream": upstream,
    }
    if stage.name == "data":
        from edgecnn.data import dataset_fingerprint

        payload["dataset"] = dataset_fingerprint(recipe.data, recipe.seed)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _load_record(out_dir: Path, stage: Stage, key: str) -> dict | None:
    """The stage's record if it matches ``key`` and every recorded output is intact."""
    record_path = out_dir / STAGE_DIR / f"{stage.name}.json"
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("key") != key:
        return None
    for item in record.get("artifacts", {}).values():
        path = out_dir / item["path"]
        if not path.exists() or sha256_file(path) != item["sha256"]:
            return None
    return record


@dataclass
class BuildResult:
    """Where a finished build put things."""

    out_dir: Path
    report_path: Path
    report_md_path: Path
    manifest_path: Path
    report: dict
    ran: list[str]
    cached: list[str]


def build(recipe: Recipe | str | Path, out_dir: str | Path | None = None, overrides: tuple[str, ...] = (),
          progress: Progress | None = None) -> BuildResult:
    """Run every planned stage of ``recipe``, re-using cached ones, then write the report.

    Args:
        recipe: a Recipe or the path of a recipe file.
        out_dir: the run directory (default ``runs/<recipe name>``).
        overrides: ``a.b=c`` strings, applied when ``recipe`` is a path.
        progress: progress printer (default: a non-quiet one on stderr).

    Returns:
        A :class:`BuildResult`.

    Raises:
        EdgecnnError: bad recipe, data or model files.
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    out = Path(out_dir) if out_dir else Path("runs") / recipe.name
    out.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(out)
    progress = progress or Progress()
    progress.attach_log(out / "logs" / "build.log")
    try:
        return _run_stages(recipe, out, progress)
    finally:
        progress.close()


def _run_stages(recipe: Recipe, out: Path, progress: Progress) -> BuildResult:
    from edgecnn.report import write_reports

    ctx = BuildContext(recipe, out, progress)
    hashes: dict[str, str] = {}
    plan = planned_stages(recipe)
    timings: list[dict] = []
    ran, cached = [], []
    progress.line(f"edgecnn build '{recipe.name}' -> {out}")
    for index, stage in enumerate(plan, start=1):
        key = _stage_key(stage, recipe, ctx, hashes)
        with progress.stage(index, len(plan), stage.name, stage.describe(recipe)) as info:
            start = time.monotonic()
            record = _load_record(out, stage, key)
            if record is not None:
                info["cached"] = True
                cached.append(stage.name)
                for name, item in record["artifacts"].items():
                    ctx.artifacts[name] = out / item["path"]
                    hashes[name] = item["sha256"]
                metrics = record.get("metrics", {})
                wall = record.get("wall_s", 0.0)
            else:
                result = stage.run(recipe, ctx)
                wall = time.monotonic() - start
                metrics = result.metrics
                produced = {}
                for name, path in result.artifacts.items():
                    digest = sha256_file(path)
                    ctx.artifacts[name] = path
                    hashes[name] = digest
                    produced[name] = {"path": str(path.relative_to(out)), "sha256": digest, "size_bytes": path_size(path)}
                write_json_atomic(out / STAGE_DIR / f"{stage.name}.json", {
                    "stage": stage.name, "key": key, "artifacts": produced, "metrics": metrics,
                    "wall_s": round(wall, 3), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                })
                ran.append(stage.name)
            ctx.metrics[stage.name] = metrics
            timings.append({"stage": stage.name, "cached": record is not None, "wall_s": round(time.monotonic() - start, 3),
                            "compute_wall_s": round(wall, 3)})
            if "accuracy" in metrics:
                info["note"] = f"test accuracy {metrics['accuracy'] * 100:.2f}%"
    report_paths = write_reports(recipe, ctx, hashes, timings)
    progress.line(f"model:  {ctx.artifacts.get('tflite_int8') or next(iter(ctx.artifacts_for(('tflite',)).values()), '-')}")
    progress.line(f"report: {report_paths['report_md']}")
    return BuildResult(out, report_paths["report"], report_paths["report_md"], report_paths["manifest"],
                       report_paths["data"], ran, cached)



__all__ = ["BuildResult", "EdgecnnError", "STAGES", "Stage", "StageResult", "build", "planned_stages"]
