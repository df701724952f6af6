"""The contract between the pipeline and a stage: what a stage is, what it gets, what it returns.

:class:`Stage` is one row of the pipeline's stage table; its ``run(recipe, ctx)`` receives
a :class:`BuildContext` and returns a :class:`StageResult`. The pipeline, the stage
modules (:mod:`edgecnn.stages`) and the report import these from here, so none of them
imports another to learn the shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from edgecnn.artifacts import Artifact, ArtifactStore
from edgecnn.progress import Progress
from edgecnn.recipe import Recipe, TrainConfig

if TYPE_CHECKING:
    from edgecnn.cache import StageCache
    from edgecnn.compress.distribute import ClusterTask

STAGE_DIR = "stages"  # in a run directory: one record per stage, input hashes, checkpoints


@dataclass
class StageResult:
    """What a stage produced: typed artifacts (sha256 left to the pipeline) and metrics.

    ``skipped``: why the stage made nothing although the recipe asks for it (one line: a
    tool this host lacks and how to get it). The build goes on; the pipeline prints the
    reason and the reports list it. Such a stage should declare what decides it (the
    tool's presence and version) in its ``environment``, so the skip is cached only until
    that changes.
    """

    artifacts: list[Artifact] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    skipped: str | None = None


@dataclass(frozen=True)
class InputFiles:
    """Files outside the run directory that a stage reads; their content goes into its key.

    Attributes:
        root: the file or folder the recipe names (``teacher.path``, ``data.path`` ...).
        files: the files read, under ``root`` (or ``root`` itself).
    """

    root: Path
    files: tuple[Path, ...]


def _no_inputs(recipe: Recipe) -> dict[str, InputFiles]:
    return {}


def _no_environment(recipe: Recipe) -> dict[str, str]:
    return {}


def _no_training(recipe: Recipe) -> TrainConfig | None:
    return None


def _no_check(recipe: Recipe) -> None:
    return None


@dataclass(frozen=True)
class Stage:
    """One pipeline step.

    Attributes:
        name: stage name (also its record file name).
        sections: recipe sections whose values go into the cache key.
        consumes: role patterns (``fnmatch``, e.g. ``model.keras.*``) of the upstream
            artifacts the stage may read; the content of every matching artifact goes
            into the cache key.
        produces: role patterns of the artifacts the stage writes; a stage that returns
            an artifact outside them is a programming error.
        run: the transformation.
        enabled: whether the recipe asks for this stage.
        describe: one line for ``edgecnn validate``.
        inputs: files outside the run directory the stage reads (recipe key -> files);
            their content goes into the cache key.
        shared: whether the stage's result goes into the shared cache (False for a
            stage whose result is a measurement of the moment, or writes files that
            are not artifacts).
        environment: the host tools whose presence and version shape the result
            (name -> identity, ``"absent"`` when missing); they go into the cache key.
        trains: the recipe's training settings of this stage (None: it trains nothing).
            A ``multi_worker`` one makes the build join the cluster before any stage
            runs, and every worker decide together whether the stage is cached.
        check: run before the first stage: raises a one-line error for a setting that
            can only be checked against the built model (a layer name), so it fails in
            seconds instead of after training.
        revision: bumped when the stage's code writes different output for the same
            inputs (evaluation.json gained parameters and MACs: revision 2), so cached results
            of the older code are not restored; part of the cache key when above 1.
    """

    name: str
    sections: tuple[str, ...]
    consumes: tuple[str, ...]
    produces: tuple[str, ...]
    run: Callable[[Recipe, "BuildContext"], StageResult]
    enabled: Callable[[Recipe], bool]
    describe: Callable[[Recipe], str]
    inputs: Callable[[Recipe], dict[str, InputFiles]] = _no_inputs
    shared: bool = True
    environment: Callable[[Recipe], dict[str, str]] = _no_environment
    trains: Callable[[Recipe], TrainConfig | None] = _no_training
    check: Callable[[Recipe], None] = _no_check
    revision: int = 1


class BuildContext:
    """What stages share: the run directory, produced artifacts, progress and lazy data.

    Attributes:
        artifacts: the typed artifacts produced so far, in chain order (query it with
            ``latest(kind=...)``, ``all(kind=...)``, ``one(role)``).
        metrics: per stage name, the metrics it returned (numbers for the report; stages
            find each other's files through ``artifacts``, never here).
        inputs: per stage, the sha256 of each input file set it read (recipe key -> digest).
        stage_key: the cache key of the stage running now.
    """

    def __init__(self, recipe: Recipe, out_dir: Path, progress: Progress, cache: StageCache | None = None):
        self.recipe = recipe
        self.out_dir = out_dir
        self.progress = progress
        self.cache = cache
        self.artifacts = ArtifactStore()
        self.metrics: dict[str, dict] = {}
        self.inputs: dict[str, dict[str, str]] = {}
        self.stage_key: str | None = None
        self.cluster: Cluster | None = None  # set by the pipeline when the recipe trains multi_worker
        self._work_in_cache = False  # whether the running stage's checkpoints live in the shared cache

    @property
    def checkpoint_dir(self) -> Path:
        """A folder for the running stage's resumable state (epoch checkpoints), created on demand.

        It belongs to the stage's cache key: the shared cache's ``work/<key>/`` (or
        ``stages/work/<key>/`` in the run directory when the shared cache is off). It
        survives a killed build, so a re-run with the same key finds it; only the build
        holding the key's lock writes it; the pipeline removes it once the stage is
        finished and recorded. Write into it atomically (``fileio.atomic_path``).
        """
        if self.stage_key is None:
            raise RuntimeError("checkpoint_dir is only available while a stage runs")
        if self._work_in_cache and self.cache is not None:
            return self.cache.work_dir(self.stage_key)
        from edgecnn.fileio import make_dirs

        return make_dirs(self.out_dir / STAGE_DIR / "work" / self.stage_key)

    @cached_property
    def dataset(self):
        """The loaded dataset; only stages that really run pay for loading it."""
        from edgecnn.data import load_dataset

        return load_dataset(self.recipe.data, self.recipe.seed)

    def path(self, name: str) -> Path:
        return self.out_dir / name

    def metrics_of(self, artifact: Artifact) -> dict:
        """The metrics of the stage that produced ``artifact`` (its accuracy, params ...)."""
        return self.metrics.get(self.artifacts.producer(artifact.role), {})

@dataclass
class Cluster:
    """This build's place in multi-worker training: the strategy, this task, and the stages trained together."""

    strategy: object
    task: "ClusterTask"
    stages: tuple[str, ...]

    def is_last_stage(self, name: str) -> bool:
        return name == self.stages[-1]
