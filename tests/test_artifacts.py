"""Typed artifacts: the store's queries, typed stage records, and a stage inserted mid-chain.

The end-to-end test builds real Fashion-MNIST with a tiny loaded teacher and a stage
table made by :func:`edgecnn.pipeline.insert_stage` (never the global table) with two
test-only stages:

* ``zero_half`` between ``student`` and ``export``: a real magnitude pruning of the student
  (every kernel's smaller half set to zero), producing ``model.keras.pruned``. Export,
  quantize, evaluate and report must pick it up without being told.
* ``edgetpu`` after ``quantize``: a stand-in for the Edge TPU compiler, which this host
  does not have. It copies the int8 file as ``model.tflite.edgetpu`` (kind ``edgetpu``,
  runtime ``edgetpu``); what is checked is only that evaluation reports such a model as
  not evaluable on this host instead of running it, which does not depend on its bytes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import write_teacher_path_recipe

from edgecnn import pipeline
from edgecnn.artifacts import Artifact, ArtifactStore, role_matches
from edgecnn.progress import Progress
from edgecnn.stages import NOT_EVALUABLE, StageResult, keras_artifact, load_model, save_keras

# ------------------------------------------------------------------ the test-only stages


def run_prune(recipe, ctx) -> StageResult:  # test-stage:start
    """Magnitude pruning of the latest Keras model: zero every kernel's smaller half."""
    from edgecnn._tf import keras

    source = load_model(ctx.artifacts.latest(kind="keras").path)
    model = keras().models.clone_model(source)
    weights = []
    for w in source.get_weights():
        weights.append(np.where(np.abs(w) < np.median(np.abs(w)), 0, w) if w.ndim >= 2 else w)
    model.set_weights(weights)
    ds = ctx.dataset
    predicted = model.predict(ds.normalization.apply(ds.x_test), verbose=0).argmax(-1)
    metrics = {"accuracy": round(float(np.mean(predicted == ds.y_test)), 5), "params": int(model.count_params())}
    return StageResult([keras_artifact("model.keras.pruned", save_keras(model, ctx.path("pruned.keras")))], metrics)


PRUNE = pipeline.Stage("zero_half", ("seed",), ("model.keras.*",), ("model.keras.pruned",), run_prune,
                       lambda r: True, lambda r: "zero the smaller half of every kernel")  # test-stage:end


def run_fake_edgetpu(recipe, ctx) -> StageResult:
    """Stand-in for edgetpu_compiler (absent here): the int8 file, typed as an Edge TPU model."""
    int8 = ctx.artifacts.one("model.tflite.int8")
    out = ctx.path("student_int8_edgetpu.tflite")
    shutil.copyfile(int8.path, out)
    return StageResult([Artifact("model.tflite.edgetpu", "edgetpu", out, precision="int8", runtime="edgetpu")])


EDGETPU = pipeline.Stage("fake_edgetpu", (), ("model.tflite.int8",), ("model.tflite.edgetpu",), run_fake_edgetpu,
                         lambda r: True, lambda r: "fake Edge TPU compile")


# ------------------------------------------------------------------ pure pieces


def test_artifact_names_and_validation():
    assert [Artifact(r, "json", "x").name for r in ("dataset", "model.keras.student", "model.keras.pruned",
                                                     "model.tflite.int8", "report.evaluation", "bench_samples.30")] \
        == ["dataset", "student", "pruned", "tflite_int8", "evaluation", "bench_samples_30"]
    for bad in (dict(role="model..x", kind="keras"), dict(role="m", kind="pickle"),
                dict(role="m", kind="tflite", precision="int2")):
        with pytest.raises(ValueError):
            Artifact(path="x", **bad)


def test_store_queries_follow_the_chain():
    store = ArtifactStore()
    store.add(Artifact("dataset", "json", "d.json"), "data")
    store.add(keras_artifact("model.keras.teacher", Path("t.keras")), "teacher")
    store.add(keras_artifact("model.keras.student", Path("s.keras")), "student")
    assert store.latest(kind="keras").role == "model.keras.student"
    store.add(keras_artifact("model.keras.pruned", Path("p.keras")), "prune")
    assert store.latest(kind="keras").role == "model.keras.pruned" and store.producer("model.keras.pruned") == "prune"
    store.add(Artifact("model.tflite.int8", "tflite", "i.tflite", precision="int8", runtime="litert"), "quantize")
    store.add(Artifact("model.tflite.edgetpu", "edgetpu", "e.tflite", precision="int8", runtime="edgetpu"), "tpu")
    assert [a.role for a in store.all(kind="tflite")] == ["model.tflite.int8"]
    assert [a.name for a in store.all(kind=("tflite", "edgetpu"))] == ["tflite_int8", "tflite_edgetpu"]
    assert [a.role for a in store.matching(("dataset", "model.keras.*"))] == [
        "dataset", "model.keras.teacher", "model.keras.student", "model.keras.pruned"]
    assert store.one("dataset").path == Path("d.json")
    with pytest.raises(LookupError, match="model.keras.qat"):
        store.one("model.keras.qat")
    with pytest.raises(LookupError):
        store.latest(kind="dir")
    with pytest.raises(ValueError, match="both stage 'student' and stage 'again'"):
        store.add(keras_artifact("model.keras.student", Path("s2.keras")), "again")
    assert role_matches("model.tflite.float16", "model.tflite.*") and not role_matches("model.keras.s", "model.tflite.*")


def test_insert_stage_makes_a_new_table_and_leaves_the_global_one():
    before = pipeline.STAGES
    table = pipeline.insert_stage(PRUNE, after="student")
    names = [s.name for s in table]
    assert names == [s.name for s in pipeline.STAGES][:3] + ["zero_half"] + [s.name for s in pipeline.STAGES][3:]
    assert pipeline.STAGES is before and "zero_half" not in [s.name for s in pipeline.STAGES]
    with pytest.raises(ValueError, match="no stage named 'studnet'"):
        pipeline.insert_stage(PRUNE, after="studnet")
    with pytest.raises(ValueError, match="already has a stage named 'zero_half'"):
        pipeline.insert_stage(PRUNE, after="export", stages=table)


def test_a_stage_returning_an_undeclared_role_is_refused():
    result = StageResult([keras_artifact("model.keras.student", Path("s.keras"))])
    with pytest.raises(ValueError, match="produced role 'model.keras.student'"):
        pipeline._checked_outputs(PRUNE, result)
    with pytest.raises(TypeError, match="not an Artifact"):
        pipeline._checked_outputs(PRUNE, StageResult([Path("s.keras")]))


def _write_record(out: Path, artifacts: dict) -> None:
    (out / "stages").mkdir(parents=True, exist_ok=True)
    (out / "stages" / "zero_half.json").write_text(json.dumps({"stage": "zero_half", "key": "k", "artifacts": artifacts}))


def test_typed_records_round_trip_and_bad_ones_are_misses(tmp_path):
    import io

    from edgecnn.fileio import sha256_file

    model = tmp_path / "pruned.keras"
    model.write_bytes(b"model bytes")
    artifact = keras_artifact("model.keras.pruned", model).hashed(sha256_file(model))
    _write_record(tmp_path, {"pruned": artifact.to_record(tmp_path, 11)})
    stream = io.StringIO()
    record = pipeline._load_record(tmp_path, PRUNE, "k", Progress(quiet=True, stream=stream))
    assert Artifact.from_record(record["artifacts"]["pruned"], tmp_path) == artifact and not stream.getvalue()
    # A record from before typed artifacts (no role, no kind): a silent miss, rebuilt.
    _write_record(tmp_path, {"pruned": {"path": "pruned.keras", "sha256": artifact.sha256}})
    assert pipeline._load_record(tmp_path, PRUNE, "k", Progress(quiet=True, stream=stream)) is None
    assert not stream.getvalue()
    # Typed, but wrong: a warning each, and a miss.
    bad = [{"pruned": {**artifact.to_record(tmp_path, 11), "kind": "pickle"}},
           {"pruned": {**artifact.to_record(tmp_path, 11), "precision": 8}},
           {"student": artifact.to_record(tmp_path, 11)},  # named unlike its role
           {"student": {**artifact.to_record(tmp_path, 11), "role": "model.keras.student"}}]  # not prune's role
    for artifacts in bad:
        stream = io.StringIO()
        _write_record(tmp_path, artifacts)
        assert pipeline._load_record(tmp_path, PRUNE, "k", Progress(quiet=True, stream=stream)) is None
        assert "warning: stages/zero_half.json" in stream.getvalue(), artifacts


# ------------------------------------------------------------------ a stage in the middle of the chain


@pytest.fixture(scope="module")
def inserted(tmp_path_factory):
    recipe = write_teacher_path_recipe(tmp_path_factory.mktemp("typed"), "typed", seed=5, test_limit=60,
                                       tail="export: {formats: [float32]}\n")
    work = recipe.parent
    table = pipeline.insert_stage(EDGETPU, after="quantize", stages=pipeline.insert_stage(PRUNE, after="student"))
    result = pipeline.build(recipe, out_dir=work / "run", progress=Progress(quiet=True), stages=table)
    return recipe, table, result


def _run_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x.astype(np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_export_quantize_evaluate_report_pick_up_the_inserted_model(inserted):
    from edgecnn.data import load_dataset
    from edgecnn.recipe import load_recipe

    recipe_path, _, result = inserted
    out = result.out_dir
    assert result.ran == ["data", "teacher", "student", "zero_half", "export", "quantize", "fake_edgetpu", "evaluate"]
    records = {name: json.loads((out / "stages" / f"{name}.json").read_text()) for name in result.ran}
    pruned = records["zero_half"]["artifacts"]["pruned"]
    assert (pruned["role"], pruned["kind"], pruned["precision"]) == ("model.keras.pruned", "keras", "float32")
    # Both deployable models are converted side by side, each file naming its source.
    assert records["export"]["metrics"]["sources"] == ["model.keras.student", "model.keras.pruned"]
    assert records["quantize"]["metrics"]["sources"] == ["model.keras.student", "model.keras.pruned"]
    assert records["quantize"]["artifacts"]["tflite_int8_pruned"]["source"] == "model.keras.pruned"

    # Each float32 file computes its own Keras model (both give logits; the exported
    # classifier ends in a softmax).
    recipe = load_recipe(recipe_path)
    ds = load_dataset(recipe.data, recipe.seed)
    x = ds.normalization.apply(ds.x_test[:16])
    pruned = _softmax(load_model(out / "pruned.keras").predict(x, verbose=0))
    student = _softmax(load_model(out / "student.keras").predict(x, verbose=0))
    np.testing.assert_allclose(_run_tflite(out / "pruned_float32.tflite", x), pruned, atol=1e-4)
    np.testing.assert_allclose(_run_tflite(out / "student_float32.tflite", x), student, atol=1e-4)
    assert np.abs(pruned - student).max() > 1e-3

    evaluation = json.loads((out / "evaluation.json").read_text())["models"]
    assert {n: r["status"] for n, r in evaluation.items()} == {
        "tflite_float32": "evaluated", "tflite_float32_pruned": "evaluated", "tflite_int8": "evaluated",
        "tflite_int8_pruned": "evaluated", "tflite_edgetpu": NOT_EVALUABLE}
    assert evaluation["tflite_edgetpu"]["accuracy"] is None and "edgetpu" in evaluation["tflite_edgetpu"]["reason"]
    assert evaluation["tflite_float32"]["role"] == "model.tflite.float32"
    assert evaluation["tflite_int8_pruned"]["role"] == "model.tflite.int8.pruned"

    report = json.loads(result.report_path.read_text())
    rows = {m["name"]: m for m in report["models"]}
    assert list(rows) == ["teacher", "student", "pruned", "tflite_float32", "tflite_float32_pruned", "tflite_int8",
                          "tflite_int8_pruned", "tflite_edgetpu"]
    # Comparisons follow the graph: each int8 file against the float32 file of its own source.
    variants = {v["name"]: v for v in report["summary"]["variants"]}
    assert variants["tflite_int8_pruned"]["reference"] == "tflite_float32_pruned"
    assert variants["tflite_int8"]["reference"] == "tflite_float32"
    drop = (rows["tflite_float32_pruned"]["accuracy"] - rows["tflite_int8_pruned"]["accuracy"]) * 100
    assert variants["tflite_int8_pruned"]["accuracy_drop_points"] == pytest.approx(drop, abs=1e-3)
    assert rows["pruned"]["accuracy"] == records["zero_half"]["metrics"]["accuracy"]
    assert rows["tflite_edgetpu"]["accuracy"] is None and rows["tflite_edgetpu"]["evaluated_with"] == NOT_EVALUABLE
    assert rows["tflite_int8"]["accuracy"] == evaluation["tflite_int8"]["accuracy"]
    md = result.report_md_path.read_text()
    assert "| pruned | `pruned.keras` |" in md and NOT_EVALUABLE in md

    manifest = json.loads(result.manifest_path.read_text())["artifacts"]
    assert manifest["pruned"]["role"] == "model.keras.pruned"
    assert manifest["tflite_edgetpu"]["kind"] == "edgetpu" and manifest["tflite_edgetpu"]["runtime"] == "edgetpu"
    assert {a["role"] for a in manifest.values()} >= {"dataset", "model.keras.student", "model.tflite.int8",
                                                      "report.evaluation"}


def test_cached_stages_restore_typed_artifacts(inserted):
    recipe_path, table, result = inserted
    again = pipeline.build(recipe_path, out_dir=result.out_dir, progress=Progress(quiet=True), stages=table)
    assert again.ran == [] and again.cached == result.ran
    # Host latency is measured anew by every report (a timing of this machine, not a stage result).
    def restored(models):
        return [{k: v for k, v in m.items() if k != "latency_ms"} for m in models]

    assert restored(again.report["models"]) == restored(result.report["models"])
    assert all(m["latency_ms"]["p50"] > 0 for m in again.report["models"] if m.get("evaluated_with", "").startswith("ai-edge"))
    first, second = (json.loads(r.manifest_path.read_text())["artifacts"] for r in (result, again))
    assert first == second
