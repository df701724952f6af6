"""Typed build artifacts: what a stage produced, by role, and the store stages query.

Stages find each other's results by *role* and *kind*, never by file or stage name: the
export stage converts "the latest Keras model in the chain" (``latest(kind="keras")``),
evaluation runs every TFLite file (``all(kind=...)``), so a stage inserted between
``student`` and ``export`` (pruning, QAT) is picked up by every later stage without
editing any of them.

Roles are dotted names, most general part first:

==========================  =======  =========  ========  =========================================
role                        kind     precision  runtime   what
==========================  =======  =========  ========  =========================================
``dataset``                 json     -          -         ``dataset.json``: classes, normalization
``model.keras.teacher``     keras    float32    -         the teacher
``model.keras.student``     keras    float32    -         the (distilled) student
``model.keras.<step>``      keras    float32    -         a compression step's model (``pruned``)
``model.tflite.float32``    tflite   float32    litert    float TFLite export
``model.tflite.float16``    tflite   float16    litert    float16-weight TFLite export
``model.tflite.int8``       tflite   int8       litert    full-integer TFLite
``model.tflite.<f>.<src>``  tflite   ...        litert    format ``f`` of another Keras model ``src``
``model.tflite.edgetpu``    edgetpu  int8       edgetpu   int8 TFLite compiled for the Edge TPU
``report.evaluation``       json     -          -         ``evaluation.json``
``bench_samples.<n>``       npz      -          -         the first n normalized test images
``bundle``                  dir      -          -         the deploy bundle folder
==========================  =======  =========  ========  =========================================

Every format is written for each deployable Keras model (all but the teacher): the
student's files keep the short roles above (``model.tflite.int8``, ``student_int8.tflite``),
another model's carry its name (``model.tflite.int8.pruned``, ``pruned_int8.tflite``).
A converted file records the role of the model it came from in :attr:`Artifact.source`,
so comparisons ("drop against its float source") follow the artifact graph, not names.

``runtime`` names what can run a model: ``litert`` is any host TFLite interpreter
(ai-edge-litert, tflite-runtime, ``tf.lite``: the same reference kernels); ``edgetpu``
needs an Edge TPU, so the host evaluation reports such a model as not evaluable.

Every artifact also has a short :attr:`Artifact.name` derived from its role
(``tflite_int8``, ``student``, ``evaluation``): the key of ``manifest.json``'s
``artifacts``, ``report.json``'s model rows and ``evaluation.json``'s models.

This module imports nothing heavy: ``edgecnn validate`` plans stages with it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

__all__ = ["ARTIFACT_KINDS", "MODEL_FILE_KINDS", "QUANTIZATION_AWARE_ROLES", "Artifact", "ArtifactStore", "role_matches"]

# What a file is, i.e. how a stage can read it.
ARTIFACT_KINDS = ("keras", "tflite", "edgetpu", "json", "npz", "dir")
# Kinds that are TFLite flatbuffers (an Edge TPU model is one with a custom op).
MODEL_FILE_KINDS = ("tflite", "edgetpu")
PRECISIONS = ("float32", "float16", "int8", "dynamic", "int16x8", "int4")
# Keras models that simulate int8 (quantization-aware): they become int8 files only, and
# their float reference is the model they were made from (their artifact's ``source``).
QUANTIZATION_AWARE_ROLES = ("model.keras.qat",)


def role_matches(role: str, patterns: str | Iterable[str]) -> bool:
    """Whether ``role`` matches one of the shell-style ``patterns`` (``model.keras.*``)."""
    if isinstance(patterns, str):
        patterns = (patterns,)
    return any(fnmatchcase(role, p) for p in patterns)


@dataclass(frozen=True)
class Artifact:
    """One file (or folder) a stage wrote into the run directory.

    Attributes:
        role: what it is for the pipeline (see the module's role table).
        kind: how to read it: one of :data:`ARTIFACT_KINDS`.
        path: where it is (inside the run directory).
        sha256: its content hash; None until the pipeline has recorded it.
        precision: ``float32``/``float16``/``int8`` for models, None otherwise.
        runtime: what can evaluate it (``litert``, ``edgetpu``), None for non-models and
            Keras models (evaluated with tf_keras by the stage that made them).
        source: the role of the artifact this one was converted from (a TFLite file's
            Keras model, an Edge TPU file's int8 file); None for originals.
    """

    role: str
    kind: str
    path: Path
    sha256: str | None = None
    precision: str | None = None
    runtime: str | None = None
    source: str | None = None

    def __post_init__(self):
        if not self.role or any(not part for part in self.role.split(".")):
            raise ValueError(f"artifact role {self.role!r} must be dotted words, e.g. 'model.keras.student'")
        if self.kind not in ARTIFACT_KINDS:
            raise ValueError(f"artifact kind {self.kind!r} is not one of {', '.join(ARTIFACT_KINDS)}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"artifact precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        """The short name: ``model.keras.student`` -> ``student``, ``model.tflite.int8`` ->
        ``tflite_int8``, ``report.evaluation`` -> ``evaluation``, others dots -> ``_``."""
        parts = self.role.split(".")
        if parts[0] == "model" and len(parts) > 2:
            return "_".join(parts[2:]) if parts[1] == "keras" else "_".join(parts[1:])
        if parts[0] == "report" and len(parts) > 1:
            return "_".join(parts[1:])
        return "_".join(parts)

    def hashed(self, sha256: str) -> "Artifact":
        """A copy with its content hash set."""
        return replace(self, sha256=sha256)

    def to_record(self, root: Path, size_bytes: int) -> dict:
        """The JSON form kept in ``stages/<stage>.json`` and ``manifest.json``."""
        record = {"role": self.role, "kind": self.kind, "precision": self.precision, "runtime": self.runtime,
                  "path": self.path.relative_to(root).as_posix(), "sha256": self.sha256, "size_bytes": size_bytes}
        if self.source is not None:
            record["source"] = self.source
        return record

    @classmethod
    def from_record(cls, item: dict, root: Path) -> "Artifact":
        """The artifact :meth:`to_record` wrote (an item :meth:`record_problem` accepts)."""
        artifact = _artifact_from_item(item)
        return replace(artifact, path=root / artifact.path)

    @staticmethod
    def record_problem(name: str, item: object) -> str | None:
        """Why ``item`` is not an artifact record (None if it is; ``"legacy"`` for a record
        written before artifacts had roles, which is a plain cache miss)."""
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("path", "sha256")):
            return f"its artifact '{name}' has no path and sha256"
        rel = PurePosixPath(item["path"])
        if rel.is_absolute() or not rel.parts or ".." in rel.parts:
            return f"its artifact '{name}' points outside the run directory"
        if "role" not in item and "kind" not in item:
            return "legacy"
        try:
            artifact = _artifact_from_item(item)
        except (TypeError, ValueError, KeyError) as exc:
            return f"its artifact '{name}' is not a typed artifact ({exc})"
        if artifact.name != name:
            return f"its artifact '{name}' has role '{artifact.role}', which is named '{artifact.name}'"
        return None


def _artifact_from_item(item: dict) -> Artifact:
    # Type-checks the fields a record holds; Artifact.__post_init__ checks their values.
    for key in ("role", "kind"):
        if not isinstance(item.get(key), str):
            raise TypeError(f"'{key}' is not a string")
    for key in ("precision", "runtime", "source"):
        if item.get(key) is not None and not isinstance(item[key], str):
            raise TypeError(f"'{key}' is not a string or null")
    return Artifact(item["role"], item["kind"], Path(item["path"]), item["sha256"], item.get("precision"),
                    item.get("runtime"), item.get("source"))


class ArtifactStore:
    """The artifacts of one build, in the order the stages produced them.

    The order is the chain's: "the latest Keras model" is the one the last stage that
    made a Keras model made. Each role is produced once per build.
    """

    def __init__(self) -> None:
        self._items: dict[str, Artifact] = {}
        self._producer: dict[str, str] = {}

    def add(self, artifact: Artifact, stage: str) -> None:
        """Record ``artifact``, produced by ``stage``.

        Raises:
            ValueError: the role was already produced in this build (two stages claim it).
        """
        if artifact.role in self._items:
            raise ValueError(f"artifact role '{artifact.role}' is produced by both stage "
                             f"'{self._producer[artifact.role]}' and stage '{stage}'")
        self._items[artifact.role] = artifact
        self._producer[artifact.role] = stage

    def producer(self, role: str) -> str:
        """The name of the stage that produced ``role``."""
        return self._producer[role]

    def get(self, role: str) -> Artifact | None:
        """The artifact of ``role``, or None."""
        return self._items.get(role)

    def one(self, role: str) -> Artifact:
        """The artifact of ``role``.

        Raises:
            LookupError: no stage of this build produced it (a stage table that runs a
                consumer before its producer).
        """
        try:
            return self._items[role]
        except KeyError:
            raise LookupError(f"no artifact with role '{role}' in this build "
                              f"(have: {', '.join(self._items) or 'none'})") from None

    def all(self, kind: str | Iterable[str] | None = None, role: str | Iterable[str] | None = None) -> list[Artifact]:
        """Artifacts of ``kind`` (one or several) whose role matches ``role`` patterns, in chain order."""
        kinds = (kind,) if isinstance(kind, str) else tuple(kind) if kind is not None else None
        return [a for a in self._items.values()
                if (kinds is None or a.kind in kinds) and (role is None or role_matches(a.role, role))]

    def latest(self, kind: str | Iterable[str] | None = None, role: str | Iterable[str] | None = None) -> Artifact:
        """The last artifact produced of ``kind`` / ``role`` (e.g. the Keras model to export).

        Raises:
            LookupError: there is none.
        """
        found = self.all(kind, role)
        if not found:
            raise LookupError(f"no artifact of kind {kind!r}{f' and role {role!r}' if role else ''} in this build")
        return found[-1]

    def matching(self, patterns: Iterable[str]) -> list[Artifact]:
        """Artifacts whose role matches one of ``patterns`` (a stage's ``consumes``)."""
        return [a for a in self._items.values() if role_matches(a.role, tuple(patterns))]

    def __iter__(self) -> Iterator[Artifact]:
        return iter(list(self._items.values()))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, role: object) -> bool:
        return role in self._items

