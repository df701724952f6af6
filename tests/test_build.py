"""End to end on real Fashion-MNIST (a few hundred images, one epoch, tiny widths).

Checks the int8 model itself (int8 weights, requested I/O type, runs on ai-edge-litert),
that report.json's accuracy equals an independent re-evaluation of the file, the manifest,
the stage cache, and that failures leave nothing half-written.
"""

from __future__ import annotations

import json
import subprocess
from xml.etree import ElementTree

import numpy as np
import pytest
from helpers import EDGECNN_COMMAND, assert_one_line_error, run_edgecnn, write_tiny_recipe

from edgecnn.errors import ModelFileError
from edgecnn.fileio import sha256_file
from edgecnn.pipeline import build
from edgecnn.progress import Progress
from edgecnn.recipe import load_recipe

ALL_STAGES = ["data", "teacher", "student", "export", "quantize", "evaluate"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    work = tmp_path_factory.mktemp("build")
    recipe = write_tiny_recipe(work)
    result = build(recipe, out_dir=work / "run", progress=Progress(quiet=True))
    return recipe, result


def test_every_stage_ran_and_report_lists_models(built):
    _, result = built
    assert result.ran == ALL_STAGES and result.cached == []
    report = json.loads(result.report_path.read_text())
    names = {m["name"] for m in report["models"]}
    assert names == {"teacher", "student", "tflite_float32", "tflite_int8"}
    for model in report["models"]:
        path = result.out_dir / model["path"]
        assert path.exists() and model["size_bytes"] > 0
        assert 0.0 <= model["accuracy"] <= 1.0
        assert model["precision"] in ("float32", "int8")
    assert {s["stage"] for s in report["stages"]} == set(ALL_STAGES)
    assert all(s["wall_s"] >= 0 for s in report["stages"])
    md = result.report_md_path.read_text()
    assert "student_int8.tflite" in md and "int8 accuracy drop" in md
    assert set(report["plots"]) == {"accuracy_size.svg", "accuracy_latency_size.svg", "training_curves.svg"}
    for plot in report["plots"]:
        root = ElementTree.parse(result.out_dir / plot).getroot()
        assert root.tag.endswith("svg") and f"![{plot}]" in md
    assert report["preprocessing"]["input_shape"] == [32, 32, 3]
    assert len(report["preprocessing"]["class_names"]) == 10


# Stage outputs whose bytes depend only on the recipe and the data. Not compared, by
# design: report.json / report.md (build date, wall times), manifest.json as a file (it
# lists the reports; its "artifacts" section is compared), stages/*.json (finish and wall
# times), logs/build.log, stages/input_hashes.json (inodes, change times), .edgecnn-lock.
DETERMINISTIC = ("dataset.json", "teacher.keras", "student.keras", "student_float32.tflite", "student_int8.tflite",
                 "evaluation.json", "accuracy_size.svg", "training_curves.svg")


def test_a_second_build_in_another_process_gives_identical_artifacts(built, tmp_path):
    """Build the same recipe again in a new process (the CLI) into a new directory.

    Training on the CPU with the recipe's seed is bit-reproducible between processes on
    one machine (tf_keras seeds Python, NumPy and TensorFlow; the tf.data shuffle is
    seeded; the CPU kernels used here are deterministic at a fixed thread count), so the
    Keras files match too once the save date is stripped. Across machines with other
    CPUs (other oneDNN kernels, other thread counts) the trained weights may differ in
    the last bits; what is then still reproducible is every file computed from equal
    inputs (the TFLite files from an equal student, evaluation.json from equal models).

    Also: the CLI prints the result table once (the evaluate stage does not repeat it).
    """
    recipe_path, result = built
    out = tmp_path / "second"
    proc = run_edgecnn("build", str(recipe_path), "--out", str(out), "-q", timeout=600)
    assert proc.returncode == 0, proc.stderr
    for name in DETERMINISTIC:
        assert sha256_file(out / name) == sha256_file(result.out_dir / name), name
    first, second = (json.loads((d / "manifest.json").read_text())["artifacts"] for d in (result.out_dir, out))
    assert first == second and set(first) >= {"teacher", "student", "tflite_int8", "tflite_float32", "evaluation"}
    lines = (proc.stdout + proc.stderr).splitlines()
    for model in ("student_int8.tflite", "student_float32.tflite"):
        assert len([ln for ln in lines if model in ln and "%" in ln]) == 1, proc.stdout + proc.stderr
    assert len([ln for ln in lines if ln.startswith("report:")]) == 1, proc.stdout + proc.stderr


def test_int8_model_has_int8_weights_and_requested_io(built):
    from edgecnn.tflite.reader import inspect_tflite

    _, result = built
    summary = inspect_tflite(result.out_dir / "student_int8.tflite")
    assert summary.inputs[0].dtype == "UINT8" and summary.outputs[0].dtype == "UINT8"
    assert summary.inputs[0].scale > 0
    assert summary.weights_int8
    assert "FLOAT32" not in {t.dtype for t in summary.tensor_types}
    float_size = (result.out_dir / "student_float32.tflite").stat().st_size
    assert summary.file_size < 0.5 * float_size


def test_report_accuracy_matches_independent_reevaluation(built):
    """Re-run the int8 file with the bare ai-edge-litert API, quantizing by hand.

    The hand quantization follows the rule documented in ``runner.quantize_values``
    (float32 ``x / scale``, half away from zero, plus zero point, clipped), written out
    here independently; the same file on the same runtime must then give exactly the
    reported accuracy.
    """
    from ai_edge_litert.interpreter import Interpreter

    from edgecnn.data import load_dataset

    recipe_path, result = built
    recipe = load_recipe(recipe_path)
    ds = load_dataset(recipe.data, recipe.seed)
    interpreter = Interpreter(model_path=str(result.out_dir / "student_int8.tflite"))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = inp["quantization"]
    mean = np.array(ds.normalization.mean, np.float32)
    std = np.array(ds.normalization.std, np.float32)
    correct = 0
    for image, label in zip(ds.x_test, ds.y_test):
        x = (image.astype(np.float32) - mean) / std
        v = x / np.float32(scale)  # float32, as TFLite's QUANTIZE kernel
        v = np.where(v >= 0, np.floor(v.astype(np.float64) + 0.5), np.ceil(v.astype(np.float64) - 0.5))
        q = np.clip(v + zero, 0, 255).astype(np.uint8)[None]
        interpreter.set_tensor(inp["index"], q)
        interpreter.invoke()
        correct += int(np.argmax(interpreter.get_tensor(out["index"])[0]) == label)
    independent = correct / len(ds.y_test)
    report = json.loads(result.report_path.read_text())
    reported = next(m["accuracy"] for m in report["models"] if m["name"] == "tflite_int8")
    assert reported == round(independent, 5), (reported, independent)
    assert independent > 0.15, "four distilled epochs on 540 images should beat chance (10%)"


def test_manifest_records_sha256_of_every_artifact(built):
    recipe_path, result = built
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["recipe_hash"] == load_recipe(recipe_path).recipe_hash
    assert manifest["versions"]["tensorflow"].startswith("2.21")
    for name, item in manifest["artifacts"].items():
        assert sha256_file(result.out_dir / item["path"]) == item["sha256"], name


def test_inspect_cli_on_the_built_model(built):
    _, result = built
    proc = run_edgecnn("inspect", "--json", str(result.out_dir / "student_int8.tflite"), timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["inputs"][0]["dtype"] == "UINT8"
    assert data["op_counts"]["CONV_2D"] > 10 and data["op_counts"]["DEPTHWISE_CONV_2D"] > 5
    assert data["tflite_metadata"]["labels"][0] == "T-shirt/top" and len(data["tflite_metadata"]["labels"]) == 10
    text = run_edgecnn("inspect", str(result.out_dir / "student_int8.tflite"), timeout=60).stdout
    assert "DEPTHWISE_CONV_2D" in text and "zero_point" in text and "labels (10): T-shirt/top" in text


def test_unchanged_rebuild_reuses_every_stage(built):
    recipe_path, result = built
    before = {p.name: p.stat().st_mtime_ns for p in result.out_dir.glob("*.tflite")}
    again = build(recipe_path, out_dir=result.out_dir, progress=Progress(quiet=True))
    assert again.ran == [] and again.cached == ALL_STAGES
    assert {p.name: p.stat().st_mtime_ns for p in result.out_dir.glob("*.tflite")} == before


def test_crash_mid_write_leaves_nothing_that_passes_for_valid(built, monkeypatch):
    """A stage that dies while writing: no temp file stays, and the next build re-runs it."""
    import edgecnn.export.tflite as tflite
    from edgecnn.fileio import atomic_path

    recipe_path, result = built
    override = ("quantize.calibration_samples=16",)

    def dying_convert(model, representative, io_dtype, path, per_channel=True):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"TFL3 half a model")
            raise RuntimeError("killed mid-write")

    monkeypatch.setattr(tflite, "convert_int8", dying_convert)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        build(recipe_path, out_dir=result.out_dir, overrides=override, progress=Progress(quiet=True))
    assert not list(result.out_dir.rglob(".tmp-*"))
    monkeypatch.undo()
    rebuilt = build(recipe_path, out_dir=result.out_dir, overrides=override, progress=Progress(quiet=True))
    assert "quantize" in rebuilt.ran


def test_stale_record_after_tampering_forces_rerun(built):
    recipe_path, result = built
    int8 = result.out_dir / "student_int8.tflite"
    data = bytearray(int8.read_bytes())
    data[len(data) // 2] ^= 0xFF
    int8.write_bytes(bytes(data))
    rebuilt = build(recipe_path, out_dir=result.out_dir, progress=Progress(quiet=True))
    assert rebuilt.ran == ["quantize", "evaluate"]


def test_unchanged_quantize_does_not_rerun_evaluate_or_bundle(built):
    """Re-quantizing gives the same bytes (no date in the metadata's zip), so every later
    stage, keyed by the int8 file's content, stays cached."""
    recipe_path, result = built
    bundled = ("export.bundle=true",)
    first = build(recipe_path, out_dir=result.out_dir, overrides=bundled, progress=Progress(quiet=True))
    assert "bundle" in first.ran + first.cached
    int8 = result.out_dir / "student_int8.tflite"
    before = sha256_file(int8)
    (result.out_dir / "stages" / "quantize.json").unlink()
    again = build(recipe_path, out_dir=result.out_dir, overrides=bundled, progress=Progress(quiet=True))
    assert again.ran == ["quantize"], again.ran
    assert "evaluate" in again.cached and "bundle" in again.cached
    assert sha256_file(int8) == before


def test_teacher_file_that_is_not_a_keras_model(tmp_path):
    fake = tmp_path / "teacher.keras"
    fake.write_text("this is not a model")
    recipe = write_tiny_recipe(tmp_path, extra="")
    out = tmp_path / "run"
    with pytest.raises(ModelFileError, match="not a Keras model"):
        build(recipe, out_dir=out, overrides=(f"teacher.path={fake}",), progress=Progress(quiet=True))
    assert not (out / "teacher.keras").exists() and not (out / "stages" / "teacher.json").exists()
    proc = run_edgecnn("build", str(recipe), "--out", str(out), "--set", f"teacher.path={fake}", timeout=300)
    assert_one_line_error(proc, 4, "teacher.keras", "not a Keras model", build=True)


def test_a_build_killed_during_student_training_resumes_at_the_last_finished_epoch(built, tmp_path):
    """SIGKILL a real ``edgecnn build`` after student epoch 2 of 4; the re-run trains epochs 3-4 only.

    The resumed model is compared with the uninterrupted build of the same recipe (the
    module's ``built``). They are not bit-identical -- tf.data's per-epoch shuffle order
    cannot be checkpointed -- so accuracy is compared within noise: on 300 test images one
    run's accuracy has a binomial sd of about 0.029, the difference of two runs about 0.041,
    and 0.10 is ~2.5 sd.
    """
    import os
    import signal
    import time

    recipe = write_tiny_recipe(tmp_path)
    out = tmp_path / "run"
    argv = [EDGECNN_COMMAND, "build", str(recipe), "--out", str(out), "--quiet"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "first.log"
    with open(log, "w") as fh:
        first = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 600
        while "student epoch 2/4" not in log.read_text():
            assert first.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "student epoch 2 never finished"
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert "student epoch 3/4" not in log.read_text()

    second = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stderr
    text = second.stdout + second.stderr
    assert "student: resuming from the checkpoint after epoch 2/4" in text, text
    assert "student epoch 3/4" in text and "student epoch 4/4" in text
    assert "student epoch 1/4" not in text and "student epoch 2/4" not in text, text
    resumed = json.loads((out / "stages" / "student.json").read_text())["metrics"]
    reference = built[1].report
    reference_acc = next(m["accuracy"] for m in reference["models"] if m["name"] == "student")
    assert len(resumed["val_accuracy_per_epoch"]) == 4, "the history carries the epochs before the kill"
    print(f"accuracy resumed {resumed['accuracy']:.3f} uninterrupted {reference_acc:.3f}")
    assert abs(resumed["accuracy"] - reference_acc) <= 0.10, (resumed["accuracy"], reference_acc)
