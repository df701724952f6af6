"""The build stages, one module each, each a function ``run_<stage>(recipe, ctx) -> StageResult``.

A stage reads upstream artifacts from ``ctx.artifacts`` (an
:class:`~edgecnn.artifacts.ArtifactStore`) by role or kind, never by another stage's
name: export and quantize convert ``latest(kind="keras")``, evaluate, bundle and bench
take every TFLite model. It writes its own files atomically into the run directory and
returns them as typed :class:`~edgecnn.artifacts.Artifact` values with its metrics.
Ordering, caching and timing belong to :mod:`edgecnn.pipeline`, the shapes a stage
deals in to :mod:`edgecnn.stage`, and what every stage needs to :mod:`edgecnn.stages.common`.
"""

from edgecnn.stage import StageResult
from edgecnn.stages.bench import run_bench
from edgecnn.stages.bundle import run_bundle
from edgecnn.stages.common import keras_artifact, load_model, save_keras
from edgecnn.stages.data import run_data
from edgecnn.stages.edgetpu import edgetpu_environment, run_edgetpu
from edgecnn.stages.evaluate import NOT_EVALUABLE, run_evaluate
from edgecnn.stages.export import check_export, export_environment, run_export
from edgecnn.stages.gate import LAYER_ERROR_ROLE, check_gate, gate_environment, run_gate
from edgecnn.stages.mixed import check_mixed, run_mixed
from edgecnn.stages.prune import check_prune, run_prune
from edgecnn.stages.qat import check_qat, run_qat
from edgecnn.stages.quantize import run_quantize
from edgecnn.stages.student import run_student
from edgecnn.stages.teacher import run_teacher

__all__ = ["LAYER_ERROR_ROLE", "NOT_EVALUABLE", "StageResult", "check_export", "check_gate", "check_mixed", "check_prune", "export_environment", "gate_environment", "check_qat", "edgetpu_environment", "keras_artifact", "load_model", "run_bench",
           "run_bundle", "run_data", "run_edgetpu", "run_evaluate", "run_export", "run_gate", "run_mixed", "run_prune", "run_qat", "run_quantize", "run_student",
           "run_teacher", "save_keras"]
