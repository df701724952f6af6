"""Deploy bundles: write, then verify (sha256 of every file, golden outputs on the target).

The run directory is assembled from a tiny classifier and the files a build writes, so
no training runs here; the golden images come from the real Fashion-MNIST test split.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgecnn.data import fashion_mnist
from edgecnn.errors import ModelFileError
from edgecnn.export.bundle import (
    BUNDLE_MANIFEST,
    _golden_images,
    check_bundle_files,
    verify_bundle,
    write_bundle,
)
from edgecnn.fileio import sha256_file
from edgecnn.recipe import validate_recipe
from helpers import FASHION_LABELS, TINY_RECIPE, assert_one_line_error, build_tiny_classifier

pytestmark = pytest.mark.skipif(fashion_mnist.locate_fashion_mnist(None, download=False) is None,
                                reason="Fashion-MNIST not found (edgecnn data download fashion_mnist)")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory as a build leaves it (only the files a bundle reads)."""
    run = tmp_path_factory.mktemp("run")
    recipe = validate_recipe(yaml.safe_load(TINY_RECIPE))
    shutil.move(build_tiny_classifier(run, "int8"), run / "student_int8.tflite")
    shutil.move(build_tiny_classifier(run, "float32"), run / "student_float32.tflite")
    norm = {"formula": "(pixel - mean) / std", "pixel_range": [0, 255], "mean": [127.5] * 3, "std": [127.5] * 3}
    (run / "dataset.json").write_text(json.dumps({"class_names": list(FASHION_LABELS), "input_shape": [32, 32, 3],
                                                  "normalization": norm}))
    (run / "evaluation.json").write_text(json.dumps({
        "runtime": "ai-edge-litert", "runtime_version": "2.3.0", "test_images": 300,
        "models": {"tflite_int8": {"accuracy": 0.1}, "tflite_float32": {"accuracy": 0.11}}}))
    (run / "manifest.json").write_text(json.dumps({"recipe": recipe.to_dict()}))
    return run


@pytest.fixture(scope="module")
def bundle(run_dir, tmp_path_factory):
    return write_bundle(run_dir, tmp_path_factory.mktemp("b") / "bundle", model="all", samples=16)


@pytest.fixture
def copy(bundle, tmp_path):
    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


def _verify_cli(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgecnn.cli", "verify", str(path)], capture_output=True,
                          text=True, timeout=120)


def test_bundle_has_every_file_and_verifies(bundle):
    names = {p.name for p in bundle.iterdir()}
    assert names == {"student_int8.tflite", "student_float32.tflite", "labels.txt", "metadata.json", "README.md",
                     "runner.py", "golden_int8.npz", "golden_float32.npz", BUNDLE_MANIFEST}
    manifest = json.loads((bundle / BUNDLE_MANIFEST).read_text())
    assert set(manifest["files"]) == names - {BUNDLE_MANIFEST}
    meta = json.loads((bundle / "metadata.json").read_text())
    assert meta["classes"] == list(FASHION_LABELS) and meta["normalization"]["mean"] == [127.5] * 3
    assert meta["accuracy"]["models"] == {"student_int8.tflite": 0.1, "student_float32.tflite": 0.11}
    assert len(meta["recipe_hash"]) == 64
    golden = np.load(bundle / "golden_int8.npz")
    assert golden["x"].dtype == np.int8 and golden["x"].shape == (16, 32, 32, 3)
    assert golden["outputs"].dtype == np.int8 and golden["outputs"].shape == (16, 10)
    assert (bundle / "labels.txt").read_text().splitlines() == list(FASHION_LABELS)

    report = verify_bundle(bundle)
    assert report.ok and [m.comparison for m in report.models] == ["exact", "atol 1e-05"]
    assert all(m.samples == 16 and m.max_abs_diff == 0.0 for m in report.models)
    proc = _verify_cli(bundle)
    assert proc.returncode == 0, proc.stderr
    assert "student_int8.tflite on local: 16 golden outputs identical to the host" in proc.stdout


def test_golden_images_are_the_builds_test_split(run_dir):
    from edgecnn.data import load_dataset

    recipe = validate_recipe(json.loads((run_dir / "manifest.json").read_text())["recipe"])
    x, y = _golden_images(recipe, None, 8)
    full = load_dataset(recipe.data, recipe.seed)
    assert np.array_equal(x, full.x_test[:8]) and np.array_equal(y, full.y_test[:8])


def test_flipped_byte_in_the_model_names_the_file(copy):
    model = copy / "student_int8.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    assert_one_line_error(_verify_cli(copy), ModelFileError.exit_code, "student_int8.tflite", "sha256 mismatch")


def test_missing_labels_is_one_clear_line(copy):
    (copy / "labels.txt").unlink()
    assert_one_line_error(_verify_cli(copy), ModelFileError.exit_code, "labels.txt", "missing")


def _rehash(bundle: Path, name: str) -> None:
    manifest = json.loads((bundle / BUNDLE_MANIFEST).read_text())
    manifest["files"][name]["sha256"] = sha256_file(bundle / name)
    (bundle / BUNDLE_MANIFEST).write_text(json.dumps(manifest))


def _edit_outputs(bundle: Path, name: str, change) -> None:
    with np.load(bundle / name) as npz:
        arrays = dict(npz)
    arrays["outputs"] = change(arrays["outputs"])
    np.savez(bundle / name, **arrays)
    _rehash(bundle, name)


def test_int8_outputs_must_match_exactly(copy):
    def bump(o):
        o = o.copy()
        o[3, 2] = np.int8(o[3, 2] + 1 if o[3, 2] < 127 else o[3, 2] - 1)
        return o

    _edit_outputs(copy, "golden_int8.npz", bump)
    report = verify_bundle(copy)
    int8 = report.models[0]
    assert not report.ok and not int8.ok and "differ from the host" in int8.reason
    assert report.models[1].ok
    proc = _verify_cli(copy)
    assert proc.returncode == 5 and "FAILED" in proc.stdout


def test_float_outputs_within_tolerance_pass_and_beyond_fail(copy):
    _edit_outputs(copy, "golden_float32.npz", lambda o: o + np.float32(2e-6))
    check = verify_bundle(copy).models[1]
    assert check.ok and 0 < check.max_abs_diff <= 1e-5
    _edit_outputs(copy, "golden_float32.npz", lambda o: o + np.float32(1e-3))
    check = verify_bundle(copy).models[1]
    assert not check.ok and check.mismatched == 16 and "more than 1e-05" in check.reason


def test_missing_model_fails_before_writing(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "student_float32.tflite").unlink()
    with pytest.raises(ModelFileError, match="student_float32.tflite"):
        write_bundle(run, tmp_path / "out", model="float32")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".tmp-*"))


def test_rewriting_replaces_the_bundle(run_dir, tmp_path):
    out = write_bundle(run_dir, tmp_path / "b", model="all", samples=4)
    out = write_bundle(run_dir, tmp_path / "b", model="int8", samples=4)
    assert not (out / "student_float32.tflite").exists()
    assert check_bundle_files(out)["models"] == [{"file": "student_int8.tflite", "golden": "golden_int8.npz"}]
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_recipe_flag_adds_a_bundle_stage_after_evaluate():
    from edgecnn.pipeline import planned_stages

    raw = yaml.safe_load(TINY_RECIPE)
    assert "bundle" not in [s.name for s in planned_stages(validate_recipe(raw))]
    raw["export"]["bundle"] = True
    names = [s.name for s in planned_stages(validate_recipe(raw))]
    assert names.index("bundle") > names.index("evaluate")


def test_verify_on_a_target_without_the_runner_says_so(bundle):
    from edgecnn.errors import DeviceError

    with pytest.raises(DeviceError, match="runner.py by hand"):
        verify_bundle(bundle, target="android")
