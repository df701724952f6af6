"""The build pipeline: stage order, caching by input hash, timing, manifest.

A stage is a function ``run(recipe, ctx) -> StageResult``: it owns one transformation and
writes its files atomically into the run directory. The pipeline owns everything else:
which stages run, in what order, whether a cached result can be re-used, and the record
of what was produced.

Stages meet through typed artifacts (:mod:`edgecnn.artifacts`), never through each
other's names: each :class:`Stage` declares the roles it ``consumes`` and ``produces``
(``model.keras.*``, ``model.tflite.int8``), and reads what it needs from the build's
:class:`~edgecnn.artifacts.ArtifactStore` by kind or role (export converts
``latest(kind="keras")``). :data:`STAGES` is the one place that lists the stages in
order: a new step between ``student`` and ``export`` is its module plus one row there
(or :func:`insert_stage` on a copy of the table, as the tests do).

Caching: a stage's key is the sha256 of its name, the edgecnn version, the recipe
sections it reads, the sha256 of every upstream artifact whose role matches its
``consumes`` patterns (content, not upstream keys, so a re-trained teacher invalidates the student even under the same
recipe) and the sha256 of every file outside the run directory it reads
(``teacher.path``, local weights files, an image folder's images, a benchmark binary: a
teacher re-trained and saved at the same path is a new teacher), and the host tools it
declares in its ``environment`` (the ``edgetpu_compiler`` version: a new compiler
re-compiles, and a stage skipped for want of it runs once it is installed). ``stages/<name>.json``
records the key and each output's role, kind, precision, runtime and sha256 (so a cached
stage restores typed artifacts); a stage is re-used only when the key
matches and every output still hashes to its record. The record is written last, so a
build killed mid-stage leaves a stale record that no longer matches, never a file that
passes for valid; a record that is not one at all (hand-edited, wrong shape) is a cache
miss with a one-line warning, never an error.

Input files are read once: ``stages/input_hashes.json`` keeps each file's sha256 with
its size, modification and change times and inode, and a file whose four values are
unchanged is not read again (the hash decides; the stat only saves the reading).

Stage outputs are reproducible: the same inputs give the same bytes (no dates inside
``.keras`` or ``.tflite`` files), so an unchanged re-run of a stage leaves every later
stage cached, and two builds of one recipe list the same artifact sha256s.

One build at a time per run directory: :func:`build` holds an exclusive ``flock`` on its
``.edgecnn-lock`` (the kernel releases it when the process ends, however it ends).

Shared cache (:mod:`edgecnn.cache`): every finished stage is also published, by its key,
to the cache shared by all run directories (``~/.cache/edgecnn``, ``EDGECNN_CACHE``). A
stage missing from the run directory is restored from there (hard links or copies) before
it is run, so a second build into another ``--out`` with the same sections trains
nothing. A build holds the key's lock while it looks up, runs and publishes a stage, so a
concurrent build of the same stage waits and re-uses the result. ``bench`` is not shared:
it measures devices, and its results file is not an artifact.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from edgecnn import stages as _stages
from edgecnn.artifacts import Artifact, role_matches
from edgecnn.cache import StageCache, default_cache
from edgecnn.compress.distribute import WorkerFinished  # no TensorFlow: safe at module level
from edgecnn.stages.common import METADATA_SECTIONS
from edgecnn.stage import STAGE_DIR, BuildContext, Cluster, InputFiles, Stage, StageResult
from edgecnn.errors import DataError, EdgecnnError, ModelFileError
from edgecnn.export.edgetpu import COMPILER as EDGETPU_COMPILER
from edgecnn.export.formats import EDGETPU_FORMAT, FORMATS, GATED_FORMAT, MIXED_FORMAT, float_formats
from edgecnn.fileio import (claim_output_dir, clean_stale_temporaries, json_type_name, path_size, sha256_file,
                            write_json_atomic)
from edgecnn.progress import Progress
from edgecnn.recipe import Recipe, load_recipe

INPUT_HASHES_FILE = "input_hashes.json"  # under STAGE_DIR
LOCK_FILE = ".edgecnn-lock"


class RunDirectoryBusyError(EdgecnnError):
    """Another build holds the run directory's lock (and the caller asked not to wait)."""

    exit_code = 8


def _model_file(key: str, path) -> dict[str, InputFiles]:
    """A file (a Keras model, weights, a binary), or every file of a folder (a SavedModel)."""
    root = Path(path).expanduser()
    files = tuple(sorted(p for p in root.rglob("*") if p.is_file())) if root.is_dir() else (root,)
    return {key: InputFiles(root, files)}


def _weights_file(key: str, weights: str | None) -> dict[str, InputFiles]:
    # None and 'imagenet' name no local file (keras.applications downloads and checks those).
    return _model_file(key, weights) if weights not in (None, "imagenet") else {}


def _data_inputs(r: Recipe) -> dict[str, InputFiles]:
    if r.data.source != "image_folder":
        return {}  # the Fashion-MNIST files are hashed by content in dataset_fingerprint
    from edgecnn.data.image_folder import list_image_files

    root = Path(r.data.path).expanduser()
    return {"data.path": InputFiles(root, tuple(list_image_files(root)))}


def _teacher_inputs(r: Recipe) -> dict[str, InputFiles]:
    if r.teacher.path is not None:
        return _model_file("teacher.path", r.teacher.path)
    return _weights_file("teacher.weights", r.teacher.weights)


def _bench_inputs(r: Recipe) -> dict[str, InputFiles]:
    # The benchmark binary shapes the figures; ssh keys and known-hosts files do not.
    inputs: dict[str, InputFiles] = {}
    for i, target in enumerate(r.bench):
        if target.benchmark_binary is not None:
            inputs.update(_model_file(f"bench[{i}].benchmark_binary", target.benchmark_binary))
    return inputs


def _teacher_needed(r: Recipe) -> bool:
    return r.distill.enabled


# The stage table: the one place that lists the stages, in order. Stages find what they
# read by role and kind, so a new row between student and export (a pruning or QAT step
# producing model.keras.<step>) needs no edit to any other stage.
STAGES: tuple[Stage, ...] = (
    Stage("data", ("data", "seed"), (), ("dataset",), _stages.run_data, lambda r: True,
          lambda r: f"{r.data.source} at {r.data.image_size}x{r.data.image_size}x{r.data.channels}"
                    f"{f', train_limit {r.data.train_limit}' if r.data.train_limit else ''}", _data_inputs),
    Stage("teacher", ("teacher", "seed"), ("dataset",), ("model.keras.teacher",), _stages.run_teacher,
          _teacher_needed,
          lambda r: f"load {r.teacher.path}" if r.teacher.path else
                    f"train {r.teacher.architecture} for {r.teacher.train.epochs} epochs", _teacher_inputs,
          trains=lambda r: r.teacher.train if r.teacher.path is None else None),
    Stage("student", ("student", "distill", "seed"), ("dataset", "model.keras.teacher"), ("model.keras.student",),
          _stages.run_student, lambda r: True,
          lambda r: f"{r.student.architecture} alpha {r.student.alpha:g}"
                    + (f" (output stride {r.student.output_stride})" if r.student.output_stride != 32 else "") + ", "
                    + (f"distilled at T={r.distill.temperature:g}, alpha={r.distill.alpha:g}" if r.distill.enabled else "hard labels only")
                    + f", {r.distill.train.epochs} epochs",
          lambda r: _weights_file("student.weights", r.student.weights), trains=lambda r: r.distill.train),
    Stage("prune", ("prune", "distill", "seed"), ("dataset", "model.keras.teacher", "model.keras.student"),
          ("model.keras.pruned",), _stages.run_prune, lambda r: r.prune is not None,
          lambda r: (f"channel pruning of the student ({r.prune.ratio:.0%} of each channel group's channels, "
                     f"{'residual chains included' if r.prune.residual else 'free widths only'}, "
                     f"{r.prune.criterion})" if r.prune.method == "channels" else
                     (f"{r.prune.m_by_n[0]}:{r.prune.m_by_n[1]}" if r.prune.m_by_n else f"{r.prune.sparsity:.0%}")
                     + f" magnitude pruning of the student, {r.prune.schedule.kind} schedule")
                    + ", "
                    + f"{r.prune.train.epochs} fine-tune epochs" + (" distilled" if r.distill.enabled else ""),
          trains=lambda r: r.prune.train, check=_stages.check_prune,
          revision=2),  # 2: fine-tunes on un-augmented images unless prune.train.augment
    Stage("qat", ("qat", "distill", "seed"), ("dataset", "model.keras.teacher", "model.keras.student",
                                                "model.keras.pruned"),
          ("model.keras.qat",), _stages.run_qat, lambda r: r.qat is not None,
          lambda r: ("sparsity-preserving " if r.prune is not None and r.qat.preserve_sparsity is not False else "")
                    + f"quantization-aware training, {r.qat.train.epochs} epochs"
                    + (" distilled" if r.distill.enabled else ""),
          trains=lambda r: r.qat.train, check=_stages.check_qat,
          revision=2),  # 2: fine-tunes on un-augmented images unless qat.train.augment
    # data + seed: int16x8 calibrates on data.representative_samples training images.
    Stage("export", ("export", "data", "seed", *METADATA_SECTIONS), ("dataset", "model.keras.*"),
          tuple(p for f in FORMATS if f.name != "int8" for p in (f.role, f"{f.role}.*")),
          _stages.run_export, lambda r: bool(float_formats(r.export.formats)),
          lambda r: "TFLite " + ", ".join(f.name for f in float_formats(r.export.formats))
                    + " of every float Keras model (student" + (", pruned" if r.prune else "") + ")",
          environment=_stages.export_environment, check=_stages.check_export),
    Stage("quantize", ("quantize", "seed", *METADATA_SECTIONS), ("dataset", "model.keras.*"), ("model.tflite.int8", "model.tflite.int8.*"),
          _stages.run_quantize,
          lambda r: r.quantize.int8,
          lambda r: "int8 of every deployable model (student" + (", pruned" if r.prune else "")
                    + (", qat" if r.qat else "") + f"), {r.quantize.io_dtype} I/O, "
                    f"{r.quantize.calibration_samples or r.data.representative_samples} calibration images"
                    + (", per-tensor weights (post-training files)" if r.quantize.weights == "per_tensor" else "")),
    # Per-layer mixed precision named in the recipe: from each float32 file, calibrated like quantize.
    Stage("mixed", ("quantize", "data", "seed", *METADATA_SECTIONS),
          ("dataset", "model.keras.*", "model.tflite.float32", "model.tflite.float32.*"),
          (MIXED_FORMAT.role, f"{MIXED_FORMAT.role}.*"), _stages.run_mixed,
          lambda r: r.quantize.int8 and bool(r.quantize.mixed),
          lambda r: "int8 with " + ", ".join(f"{p} in {v}" for p, v in r.quantize.mixed.items()),
          environment=_stages.gate_environment, check=_stages.check_mixed),
    # The accuracy gate: quantize's int8 files against their float32 sources on the validation
    # split (data), calibrated like quantize (seed); litert-quantizer's version shapes its files.
    Stage("gate", ("quantize", "data", "seed", *METADATA_SECTIONS),
          ("dataset", "model.keras.*", "model.tflite.int8", "model.tflite.int8.*", "model.tflite.float32",
           "model.tflite.float32.*"),
          (GATED_FORMAT.role, f"{GATED_FORMAT.role}.*", f"{_stages.LAYER_ERROR_ROLE}.*"), _stages.run_gate,
          lambda r: r.quantize.int8 and r.quantize.max_drop is not None,
          lambda r: f"accuracy gate: int8 within {r.quantize.max_drop:g} points of its float model on the validation "
                    f"split, else up to {r.quantize.gate_attempts} candidates with the worst layers kept float",
          environment=_stages.gate_environment, check=_stages.check_gate),
    # No recipe section: the output depends only on the int8 model and the compiler.
    Stage("edgetpu", (), ("model.tflite.int8", "model.tflite.int8.*"), (EDGETPU_FORMAT.role, f"{EDGETPU_FORMAT.role}.*"),
          _stages.run_edgetpu,
          lambda r: "edgetpu" in r.export.formats,
          lambda r: "compile every int8 model (student" + (", pruned" if r.prune else "") + (", qat" if r.qat else "")
                    + ") for the Coral Edge TPU with edgetpu_compiler"
                    + ("" if shutil.which(EDGETPU_COMPILER) else " (not on PATH here: skipped, the build goes on)"),
          environment=_stages.edgetpu_environment),
    Stage("evaluate", ("evaluate",), ("dataset", "model.tflite.*"), ("report.evaluation",), _stages.run_evaluate,
          lambda r: True, lambda r: "test-split accuracy and MACs of every .tflite on ai-edge-litert",
          revision=3),  # 3: weight_scales read back
    # The bundle records the whole recipe's hash and name: every section is in its key.
    Stage("bundle", tuple(Recipe.model_fields), ("dataset", "model.tflite.*", "report.evaluation"), ("bundle",), _stages.run_bundle,
          lambda r: r.export.bundle,
          lambda r: "deploy bundle in bundle/: models, labels, golden samples, device runner"),
    # Cached like the others (config + model and data content); re-measure by changing
    # the bench section or deleting stages/bench.json.
    Stage("bench", ("bench",), ("dataset", "model.tflite.*"), ("bench_samples.*",), _stages.run_bench,
          lambda r: bool(r.bench),
          lambda r: "every .tflite on " + ", ".join(t.target for t in r.bench) + ", device-side accuracy",
          _bench_inputs, shared=False),
)


def insert_stage(stage: Stage, *, after: str, stages: tuple[Stage, ...] = STAGES) -> tuple[Stage, ...]:
    """A new stage table: ``stages`` with ``stage`` right after the stage named ``after``.

    The table passed in is not changed (pass the result to :func:`build` as ``stages``).

    Raises:
        ValueError: no stage is named ``after``, or one is already named like ``stage``.
    """
    names = [s.name for s in stages]
    if stage.name in names:
        raise ValueError(f"the stage table already has a stage named '{stage.name}'")
    if after not in names:
        raise ValueError(f"no stage named '{after}' in the stage table ({', '.join(names)})")
    i = names.index(after) + 1
    return (*stages[:i], stage, *stages[i:])


def planned_stages(recipe: Recipe, stages: tuple[Stage, ...] = STAGES) -> list[Stage]:
    """The stages of ``stages`` this recipe will run, in order (``edgecnn validate`` prints them)."""
    return [s for s in stages if s.enabled(recipe)]


# Files changed this recently are hashed but not remembered: a write in the same clock
# tick as the hashing could leave size and times unchanged (git's "racy" index entries).
_RACY_NS = 2_000_000_000


@dataclass
class _ContentHashes:
    """sha256 of input files, remembered in the run directory by (size, mtime, ctime, inode)."""

    path: Path
    entries: dict[str, dict] = field(default_factory=dict)
    dirty: bool = False
    seen: set[str] = field(default_factory=set)  # files this build read; only they are kept

    @classmethod
    def load(cls, path: Path) -> "_ContentHashes":
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        entries = data if isinstance(data, dict) else {}
        # Anything of the wrong shape is forgotten (and re-hashed), never trusted.
        entries = {k: v for k, v in entries.items() if isinstance(v, dict) and isinstance(v.get("sha256"), str)
                   and isinstance(v.get("stat"), list)}
        return cls(path, entries)

    def file_digest(self, path: Path) -> str:
        st = os.stat(path)
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        name = str(path.resolve())
        self.seen.add(name)
        entry = self.entries.get(name)
        if entry is not None and entry["stat"] == stamp:
            return entry["sha256"]
        digest = sha256_file(path)
        if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > _RACY_NS:
            self.entries[name] = {"stat": stamp, "sha256": digest}
            self.dirty = True
        return digest

    def digest(self, key: str, inputs: InputFiles) -> str:
        """One sha256 over the files' paths (relative to the root) and contents.

        Raises:
            DataError / ModelFileError: a file cannot be read (one line naming ``key``).
        """
        digest = hashlib.sha256()
        try:
            for f in inputs.files:
                rel = f.relative_to(inputs.root).as_posix() if f != inputs.root else ""
                digest.update(json.dumps([rel, self.file_digest(f)]).encode())
        except OSError as exc:
            error = DataError if key.startswith("data.") else ModelFileError
            raise error(f"{key} '{inputs.root}': cannot read {exc.filename or f}: {exc.strerror or exc}; "
                        "fix the path or its permissions") from None
        return digest.hexdigest()

    def save(self) -> None:
        if self.dirty:
            write_json_atomic(self.path, {k: v for k, v in self.entries.items() if k in self.seen})
            self.dirty = False


def _stage_key(stage: Stage, recipe: Recipe, ctx: BuildContext, content: _ContentHashes) -> str:
    from edgecnn._version import __version__

    upstream = {a.role: a.sha256 for a in ctx.artifacts.matching(stage.consumes)}
    payload = {
        "stage": stage.name,
        "edgecnn": __version__,
        "config": recipe.section_hash(*[s for s in stage.sections if s != "seed"]),
        "seed": recipe.seed if "seed" in stage.sections else None,
        "upstream": upstream,
    }
    inputs = {key: content.digest(key, files) for key, files in stage.inputs(recipe).items()}
    ctx.inputs[stage.name] = inputs
    if inputs:  # absent when empty, so keys of stages without input files are as before
        payload["inputs"] = inputs
    environment = stage.environment(recipe)
    if environment:  # likewise
        payload["environment"] = environment
    if stage.revision > 1:  # likewise
        payload["revision"] = stage.revision
    if stage.name == "data":
        from edgecnn.data import dataset_fingerprint

        payload["dataset"] = dataset_fingerprint(recipe.data, recipe.seed)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _record_problem(record: object, produces: tuple[str, ...] = ("*",)) -> str | None:
    """Why ``record`` is not a stage record as :func:`_run_stages` writes it (None if it is).

    ``produces`` are the stage's role patterns: a record claiming another role (say, the
    student's) is not this stage's.

    ``"legacy"`` is a record of an edgecnn that kept no artifact roles: a plain cache miss.
    """
    if not isinstance(record, dict):
        return f"holds a JSON {json_type_name(record)}, not a stage record"
    if not isinstance(record.get("key"), str):
        return "has no cache key"
    artifacts = record.get("artifacts")
    if not isinstance(artifacts, dict):
        return "its 'artifacts' is not a mapping"
    legacy = False
    for name, item in artifacts.items():
        problem = Artifact.record_problem(name, item)
        if problem == "legacy":
            legacy = True
        elif problem is not None:
            return problem
        elif not role_matches(item["role"], produces):
            return f"its artifact '{name}' has role '{item['role']}', which this stage does not produce"
    if not isinstance(record.get("metrics", {}), dict):
        return "its 'metrics' is not a mapping"
    if not isinstance(record.get("skipped", ""), str):
        return "its 'skipped' is not a reason"
    wall = record.get("wall_s", 0.0)
    if isinstance(wall, bool) or not isinstance(wall, (int, float)):
        return "its 'wall_s' is not a number"
    return "legacy" if legacy else None


def _load_record(out_dir: Path, stage: Stage, key: str, progress: Progress | None = None) -> dict | None:
    """The stage's record if it matches ``key`` and every recorded output is intact.

    A record that cannot be read as one (bad JSON, wrong shape) is a cache miss with a
    one-line warning: the stage is rebuilt and its record rewritten.
    """
    record_path = out_dir / STAGE_DIR / f"{stage.name}.json"
    if not record_path.exists():
        return None
    try:
        record = json.loads(record_path.read_text())
        problem = _record_problem(record, stage.produces)
    except ValueError as exc:
        problem = f"is not valid JSON ({type(exc).__name__})"
    except OSError as exc:
        problem = f"cannot be read ({exc.strerror or exc})"
    if problem == "legacy":
        return None  # its key could not match anyway (keys hash roles now): rebuilt, no warning
    if problem is not None:
        if progress is not None:
            progress.line(f"    warning: {STAGE_DIR}/{stage.name}.json {problem}; rebuilding the stage")
        return None
    if record["key"] != key:
        return None
    for item in record.get("artifacts", {}).values():
        path = out_dir / item["path"]
        try:
            if not path.exists() or sha256_file(path) != item["sha256"]:
                return None
        except OSError:  # unreadable now: rebuild it (writing it will say what is wrong)
            return None
    return record


@dataclass
class BuildResult:
    """Where a finished build put things.

    On a non-chief worker of distributed training the build stops after training: the
    paths are None and ``report`` is ``{"models": [], "worker_only": True}``.
    """

    out_dir: Path
    report_path: Path | None
    report_md_path: Path | None
    manifest_path: Path | None
    report: dict
    ran: list[str]
    cached: list[str]


_DEFAULT_CACHE = object()


def build(recipe: Recipe | str | Path, out_dir: str | Path | None = None, overrides: tuple[str, ...] = (),
          progress: Progress | None = None, wait: bool = False, stages: tuple[Stage, ...] = STAGES,
          cache: StageCache | None | object = _DEFAULT_CACHE) -> BuildResult:
    """Run every planned stage of ``recipe``, re-using cached ones, then write the report.

    Args:
        recipe: a Recipe or the path of a recipe file.
        out_dir: the run directory (default ``runs/<recipe name>``): new, empty, or one
            edgecnn made; a folder of other files is refused and left untouched.
        overrides: ``a.b=c`` strings, applied when ``recipe`` is a path.
        progress: progress printer (default: a non-quiet one on stderr).
        wait: when another build holds the run directory, wait for it to finish (then
            re-use what it cached) instead of failing at once.
        stages: the stage table (default :data:`STAGES`; :func:`insert_stage` makes
            another one).
        cache: the shared stage cache (default: the one ``EDGECNN_CACHE`` names, see
            :func:`edgecnn.cache.cache_root`); None builds with the run directory only.

    Returns:
        A :class:`BuildResult`.

    Raises:
        RunDirectoryBusyError: another build holds the run directory and ``wait`` is False.
        FilesystemError: the run directory is not edgecnn's or cannot be created, or
            the shared cache cannot be written.
        EdgecnnError: bad recipe, data or model files.
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    out = claim_output_dir(Path(out_dir) if out_dir else Path("runs") / recipe.name, "run", what="--out",
                           legacy=(STAGE_DIR, "manifest.json"))
    shared = default_cache() if cache is _DEFAULT_CACHE else cache
    if shared is not None:
        shared.open()  # an unwritable cache is one clear line before any work
    progress = progress or Progress()
    with _run_lock(out, wait, progress):
        # Only under the lock: another build's temporaries are not stale while it runs.
        clean_stale_temporaries(out)
        progress.attach_log(out / "logs" / "build.log")
        try:
            return _run_stages(recipe, out, progress, stages, shared)
        finally:
            progress.close()


def _lock_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"PID {text}" if text.isdigit() else "a process that has not written its PID yet"


@contextlib.contextmanager
def _run_lock(out: Path, wait: bool, progress: Progress) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` (``flock``; released by the kernel if the process dies)."""
    import fcntl

    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            if not wait:
                raise RunDirectoryBusyError(
                    f"--out {out}: another edgecnn build ({holder}) is using this run directory; "
                    "pass --wait to wait for it and re-use what it builds, or choose another --out") from None
            progress.line(f"waiting for the edgecnn build ({holder}) that holds {out} to finish ...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _inherited_augmentations(recipe: Recipe) -> list[dict]:
    """The ``data.augment`` settings this recipe takes from an ``extends:`` parent."""
    from edgecnn import recipe as recipe_module

    resolved = recipe.to_dict()
    rows = []
    for key, parent in sorted(recipe_module.inherited_settings(recipe).items()):
        if key == "data.augment" or key.startswith("data.augment."):
            value = resolved
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            rows.append({"key": key, "value": value, "from": str(parent)})
    return rows


def _checked_outputs(stage: Stage, result: StageResult) -> list[Artifact]:
    """The stage's artifacts, each a typed Artifact within its declared ``produces``."""
    for artifact in result.artifacts:
        if not isinstance(artifact, Artifact):
            raise TypeError(f"stage '{stage.name}' returned {artifact!r}, not an Artifact")
        if not role_matches(artifact.role, stage.produces):
            raise ValueError(f"stage '{stage.name}' produced role '{artifact.role}', which its produces "
                             f"{stage.produces} does not declare")
    return list(result.artifacts)


def _run_stage(stage: Stage, recipe: Recipe, ctx: BuildContext, key: str, in_cache: bool = False) -> dict:
    """Run ``stage`` and write its record into the run directory; returns the record.

    ``in_cache``: the caller holds the key's shared-cache lock, so the stage's
    checkpoints go to the cache's ``work/<key>/`` (removed when the entry is published).
    """
    out = ctx.out_dir
    start = time.monotonic()
    ctx.stage_key, ctx._work_in_cache = key, in_cache
    try:
        result = stage.run(recipe, ctx)
    finally:
        ctx.stage_key, ctx._work_in_cache = None, False
    if not in_cache:
        shutil.rmtree(out / STAGE_DIR / "work" / key, ignore_errors=True)  # finished: checkpoints are spent
    wall = time.monotonic() - start
    produced = {}
    for artifact in _checked_outputs(stage, result):
        artifact = artifact.hashed(sha256_file(artifact.path))
        produced[artifact.name] = artifact.to_record(out, path_size(artifact.path))
    record = {"stage": stage.name, "key": key, "artifacts": produced, "metrics": result.metrics,
              "wall_s": round(wall, 3), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if result.skipped is not None:
        record["skipped"] = " ".join(result.skipped.split())  # one line, whatever the stage said
    write_json_atomic(out / STAGE_DIR / f"{stage.name}.json", record)
    return record


def _from_shared(stage: Stage, key: str, ctx: BuildContext, shared: StageCache) -> dict | None:
    """The stage's record restored from the shared cache into the run directory, or None.

    Call it holding the key's lock. A corrupt entry (an object that no longer hashes to
    its name, a malformed record) is discarded with a one-line warning: the stage is rebuilt.
    """
    record, problem = shared.lookup(key)
    if record is not None:
        problem = _record_problem({k: v for k, v in record.items() if k != "files"}, stage.produces)
    if problem is not None:
        ctx.progress.line(f"    warning: shared cache entry {key[:12]} of stage '{stage.name}' is corrupt "
                          f"({problem}); rebuilding it")
        shared.discard(key)
        return None
    if record is None:
        return None
    how = shared.restore(record, ctx.out_dir)
    local = {k: v for k, v in record.items() if k not in ("files", "stored_at", "cache")}
    local["cache"] = {"restored_from": str(shared.entry_dir(key)), "files": how}
    write_json_atomic(ctx.out_dir / STAGE_DIR / f"{stage.name}.json", local)
    return local


def _publish(stage: Stage, key: str, record: dict, ctx: BuildContext, shared: StageCache) -> None:
    """Store a stage just run in the shared cache."""
    how = shared.publish(key, {k: v for k, v in record.items() if k != "cache"}, ctx.out_dir)
    shared.finish_work(key)
    # Say in the run directory's record whether its files are the cache's (links) or copies.
    record["cache"] = {"stored_in": str(shared.entry_dir(key)), "files": how}
    write_json_atomic(ctx.out_dir / STAGE_DIR / f"{stage.name}.json", record)


def _run_stages(recipe: Recipe, out: Path, progress: Progress, stages: tuple[Stage, ...] = STAGES,
                shared: StageCache | None = None) -> BuildResult:
    from edgecnn import recipe as recipe_module
    from edgecnn.report import write_reports

    ctx = BuildContext(recipe, out, progress, shared)
    content = _ContentHashes.load(out / STAGE_DIR / INPUT_HASHES_FILE)
    plan = planned_stages(recipe, stages)
    timings: list[dict] = []
    ran, cached = [], []
    progress.line(f"edgecnn build '{recipe.name}' -> {out}")
    for warning in recipe_module.recipe_warnings(recipe):
        progress.line(f"warning: {warning}")
    inherited = _inherited_augmentations(recipe)
    for row in inherited:
        progress.line(f"    augmentation inherited through extends: {row['key']} = {json.dumps(row['value'])} "
                      f"(from {row['from']})")
    try:
        # Before any stage: MultiWorkerMirroredStrategy must exist before the process runs a
        # TensorFlow op (collective ops are configured once, at start-up).
        ctx.cluster = join_cluster(recipe, plan, progress)
        for stage in plan:  # settings only the built model can check: fail now, not after training
            stage.check(recipe)
        _run_planned(plan, recipe, ctx, content, shared, timings, ran, cached)
    except WorkerFinished as done:
        # A non-chief worker of distributed training: its part is done, the chief writes
        # the artifacts. No record, and its checkpoints stay for a resume of the cluster.
        progress.line(f"    {done}: distributed training done on this worker; the chief writes the artifacts")
        return BuildResult(out, None, None, None, {"models": [], "worker_only": True}, ran, cached)
    report_paths = write_reports(recipe, ctx, timings, inherited_augmentations=inherited)
    # No summary here: the result (models, accuracies, report path) is the caller's to
    # print once -- the CLI prints it as a table -- not a second copy in the progress.
    progress.line(f"build '{recipe.name}' finished in {progress.elapsed():.1f}s")
    return BuildResult(out, report_paths["report"], report_paths["report_md"], report_paths["manifest"],
                       report_paths["data"], ran, cached)


def distributed_stages(recipe: Recipe, plan: list[Stage]) -> list[Stage]:
    """The planned stages whose training the recipe spreads over workers (``multi_worker``)."""
    return [s for s in plan if (t := s.trains(recipe)) is not None and t.distribute == "multi_worker"]




def join_cluster(recipe: Recipe, plan: list[Stage], progress: Progress) -> Cluster | None:
    """Join the training cluster of ``TF_CONFIG`` when a planned stage trains ``multi_worker``; else None.

    Called before the first stage, so the strategy exists before any TensorFlow op runs
    in this process. Measured with ``tools/bench_distribute.py``: making the strategy
    costs 0.05 s after TensorFlow's import (plus waiting for the peers), where running each
    distributed stage in a process of its own would pay TensorFlow's import and the
    dataset load again, 4.2 s per stage for the quickstart, before loading its models.

    Raises:
        DeviceError: ``TF_CONFIG`` is malformed, a worker does not answer within
            ``distribute_timeout_s`` (the line names its address), or TensorFlow refuses.
    """
    from edgecnn.compress.distribute import make_strategy, parse_tf_config

    stages = distributed_stages(recipe, plan)
    if not stages:
        return None
    task = parse_tf_config(os.environ.get("TF_CONFIG"))
    timeout = max(s.trains(recipe).distribute_timeout_s for s in stages)
    progress.line(f"joining the training cluster as {task.job}:{task.index} of {len(task.tasks)} "
                  f"({', '.join(a for _, _, a in task.tasks)}); waiting up to {timeout:g} s for the others")
    strategy = make_strategy("multi_worker", timeout_s=timeout)
    return Cluster(strategy, task, tuple(s.name for s in stages))


def _run_planned(plan: list[Stage], recipe: Recipe, ctx: BuildContext, content: "_ContentHashes",
                 shared: StageCache | None, timings: list[dict], ran: list[str], cached: list[str]) -> None:
    """Run or restore each planned stage in order, filling ``timings``, ``ran`` and ``cached``.

    A stage trained across workers is restored only when *every* worker has it finished
    (they compare cache keys and hits in one collective); otherwise all train it together,
    so a worker with a warm cache never leaves the others waiting in a collective. A
    non-chief worker stops after its last distributed stage (:class:`WorkerFinished`).
    """
    out, progress = ctx.out_dir, ctx.progress
    cluster: Cluster | None = ctx.cluster
    for index, stage in enumerate(plan, start=1):
        key = _stage_key(stage, recipe, ctx, content)
        content.save()
        with progress.stage(index, len(plan), stage.name, stage.describe(recipe)) as info:
            start = time.monotonic()
            record = _load_record(out, stage, key, progress)
            was_run = False
            use_shared = shared is not None and stage.shared
            together = cluster is not None and stage.name in cluster.stages
            restore = True  # whether a finished result may be re-used
            guard: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
            if together:
                from edgecnn.compress.distribute import agree_on_cache, peer_failures

                # A peer that dies or goes silent becomes one line naming it.
                guard = functools.partial(peer_failures, cluster.task, f"stage '{stage.name}'")
                have = record is not None or (use_shared and shared.lookup(key)[0] is not None)
                with guard():
                    restore = agree_on_cache(cluster.strategy, key, have, f"stage '{stage.name}'")
                if not restore:
                    if have:
                        progress.line(f"    another worker has no finished '{stage.name}': training it together")
                    record = None
            # A run-directory hit touches no shared state: the unchanged rebuild stays fast.
            if record is None and use_shared:
                def waiting(holder: str, name: str = stage.name) -> None:
                    progress.line(f"    waiting for another edgecnn build ({holder}) building stage '{name}' ...")

                with shared.lock(key, on_wait=waiting):
                    record = _from_shared(stage, key, ctx, shared) if restore else None
                    if record is not None:
                        info["note"] = "restored from the shared cache"
                    else:
                        with guard():
                            record = _run_stage(stage, recipe, ctx, key, in_cache=True)
                        was_run = True
                        _publish(stage, key, record, ctx, shared)
            elif record is None:
                with guard():
                    record = _run_stage(stage, recipe, ctx, key)
                was_run = True
            for item in record["artifacts"].values():
                ctx.artifacts.add(Artifact.from_record(item, out), stage.name)
            metrics = record.get("metrics", {})
            wall = record.get("wall_s", 0.0)
            if was_run:
                ran.append(stage.name)
            else:
                info["cached"] = True
                cached.append(stage.name)
            ctx.metrics[stage.name] = metrics
            timings.append({"stage": stage.name, "cached": not was_run, "wall_s": round(time.monotonic() - start, 3),
                            "compute_wall_s": round(wall, 3)})
            if "accuracy" in metrics:
                info["note"] = f"test accuracy {metrics['accuracy'] * 100:.2f}%"
            if record.get("skipped"):
                # Said on every build, cached or not: the recipe asked for something it did not get.
                timings[-1]["skipped"] = record["skipped"]
                progress.line(f"    {stage.name}: skipped: {record['skipped']}")
                info["note"] = "skipped"
        if together and not cluster.task.is_chief and cluster.is_last_stage(stage.name):
            raise WorkerFinished(stage.name)


__all__ = ["Artifact", "BuildResult", "EdgecnnError", "InputFiles", "RunDirectoryBusyError", "STAGES", "Stage",
           "StageResult", "build", "insert_stage", "planned_stages"]
