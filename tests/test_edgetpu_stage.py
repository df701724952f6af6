"""The ``edgetpu`` build stage: ``export.formats: [edgetpu]`` compiles the int8 model.

One real tiny build (Fashion-MNIST, a tiny loaded teacher, one student epoch) with the
FAKE ``edgetpu_compiler`` (``tests/fakes/edgetpu_compiler.py``, see test_compile.py for
why it is a fake) first on PATH. Then copies of that run directory are rebuilt, so only
the stages whose key changes run again:

* without any compiler on PATH: the stage is skipped with the reason (how to install
  it) in the build output and both reports, its earlier file is gone, the build succeeds;
* with a "compiler" that copies its input unchanged (maps nothing to the TPU): the
  build fails with one line naming the missing ``edgetpu-custom-op``, exit status 4;
* with a newer compiler version: only the compile runs again (the version is in its key).

What only a real compiler and an Edge TPU can show is in test_compile.py's docstring.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from helpers import assert_one_line_error, run_edgecnn, write_teacher_path_recipe

from edgecnn.export.formats import EDGETPU_FORMAT
from edgecnn.fileio import sha256_file
from edgecnn.pipeline import build
from edgecnn.progress import Progress
from edgecnn.stages import NOT_EVALUABLE
from edgecnn.tflite.reader import EDGETPU_CUSTOM_OP, inspect_tflite, is_edgetpu_model

REPO = Path(__file__).resolve().parents[1]
FAKE_COMPILER = Path(__file__).resolve().parent / "fakes" / "edgetpu_compiler.py"
TAIL = "export: {formats: [edgetpu]}\n"
STAGES = ["data", "teacher", "student", "quantize", "edgetpu", "evaluate"]

# A compiler that maps nothing: it writes its input back unchanged (and says it compiled).
COPYING_COMPILER = """#!/bin/sh
echo "Edge TPU Compiler version 15.0.340273435"
[ "$1" = "--version" ] && exit 0
while [ $# -gt 0 ]; do
  case "$1" in -o) out="$2"; shift 2;; -s) shift;; *) model="$1"; shift;; esac
done
cp "$model" "$out/$(basename "$model" .tflite)_edgetpu.tflite"
echo "Model compiled successfully in 3 ms."
"""


def _bin_dir(directory: Path, script: str) -> Path:
    directory.mkdir(parents=True)
    path = directory / "edgetpu_compiler"
    path.write_text(script)
    path.chmod(0o755)
    return directory


def _path_without_compiler() -> str:
    path = os.environ["PATH"]
    if shutil.which("edgetpu_compiler", path=path):
        pytest.skip("a real edgetpu_compiler is installed here")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A finished build with the fake compiler: ``(recipe path, BuildResult, fake bin dir, output)``."""
    work = tmp_path_factory.mktemp("edgetpu")
    recipe = write_teacher_path_recipe(work, "tpu", seed=4, test_limit=40, tail=TAIL)
    fake_bin = _bin_dir(work / "bin", f"#!/bin/sh\nexec '{sys.executable}' '{FAKE_COMPILER}' \"$@\"\n")
    stream = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{fake_bin}:{_path_without_compiler()}")
        mp.delenv("FAKE_EDGETPU_MODE", raising=False)
        result = build(recipe, out_dir=work / "run", progress=Progress(quiet=True, stream=stream))
    return recipe, result, fake_bin, stream.getvalue()


def _copy_run(result, tmp_path: Path) -> Path:
    """A copy of the run directory: a rebuild into it re-uses every stage whose key is unchanged."""
    copy = tmp_path / "run"
    shutil.copytree(result.out_dir, copy)
    return copy


def test_the_compiled_model_is_an_artifact_with_the_edgetpu_op(built):
    _, result, _, printed = built
    assert result.ran == STAGES, result.ran
    out = result.out_dir
    model = out / EDGETPU_FORMAT.filename
    assert is_edgetpu_model(inspect_tflite(model))
    assert not is_edgetpu_model(inspect_tflite(out / "student_int8.tflite"))
    # Only the model is left in the run directory: the compiler's log and report were in a temporary folder.
    assert not list(out.glob("*_edgetpu.log")) and not list(out.glob("*_edgetpu.json"))
    assert not list(out.glob(".tmp-*"))

    manifest = json.loads(result.manifest_path.read_text())["artifacts"]
    row = manifest["tflite_edgetpu"]
    assert (row["role"], row["kind"], row["runtime"], row["path"]) == (
        "model.tflite.edgetpu", "edgetpu", "edgetpu", EDGETPU_FORMAT.filename)
    assert row["sha256"] == sha256_file(model)

    record = json.loads((out / "stages" / "edgetpu.json").read_text())
    assert record["metrics"]["compiler_version"] == "16.0.384591198"
    assert record["metrics"]["ops_on_cpu"] == 0 and record["metrics"]["source"] == "model.tflite.int8"
    assert "skipped" not in record
    assert "edgetpu_compiler 16.0.384591198: compiled" in printed


def test_the_report_says_the_edgetpu_model_is_not_evaluable_here(built):
    _, result, _, printed = built
    evaluation = json.loads((result.out_dir / "evaluation.json").read_text())["models"]
    assert evaluation["tflite_int8"]["status"] == "evaluated"
    tpu = evaluation["tflite_edgetpu"]
    assert tpu["status"] == NOT_EVALUABLE and tpu["accuracy"] is None
    assert "Coral Edge TPU" in tpu["reason"] and "--target coral" in tpu["reason"]

    rows = {m["name"]: m for m in result.report["models"]}
    assert rows["tflite_edgetpu"]["evaluated_with"] == NOT_EVALUABLE
    assert rows["tflite_edgetpu"]["reason"] == tpu["reason"] and "reason" not in rows["tflite_int8"]
    assert result.report["skipped"] == []
    md = result.report_md_path.read_text()
    assert f"- tflite_edgetpu: {NOT_EVALUABLE}: needs the edgetpu runtime (a Coral Edge TPU)" in md
    assert f"{EDGETPU_FORMAT.filename}: {NOT_EVALUABLE}: " in printed


def test_an_unchanged_rebuild_reuses_the_compile(built, tmp_path):
    recipe, result, fake_bin, _ = built
    copy = _copy_run(result, tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{fake_bin}:{_path_without_compiler()}")
        again = build(recipe, out_dir=copy, progress=Progress(quiet=True, stream=io.StringIO()))
        assert again.ran == [] and again.cached == STAGES
        # A new compiler version is a new key: the compile runs again (same bytes, so evaluate stays cached).
        mp.setenv("FAKE_EDGETPU_VERSION", "16.1.0")
        newer = build(recipe, out_dir=copy, progress=Progress(quiet=True, stream=io.StringIO()))
    assert newer.ran == ["edgetpu"], newer.ran
    assert json.loads((copy / "stages" / "edgetpu.json").read_text())["metrics"]["compiler_version"] == "16.1.0"


def test_without_the_compiler_the_stage_is_skipped_with_the_reason(built, tmp_path):
    recipe, result, _, _ = built
    copy = _copy_run(result, tmp_path)
    stream = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", _path_without_compiler())
        skipped = build(recipe, out_dir=copy, progress=Progress(quiet=True, stream=stream))
    assert skipped.ran == ["edgetpu", "evaluate"], skipped.ran  # evaluate: the model set changed
    printed = [ln.strip() for ln in stream.getvalue().splitlines() if "skipped:" in ln]
    assert len(printed) == 1 and printed[0].startswith("edgetpu: skipped: edgetpu_compiler not found on PATH;")
    assert "https://coral.ai/docs/edgetpu/compiler/" in printed[0]

    reason = printed[0].removeprefix("edgetpu: skipped: ")
    assert skipped.report["skipped"] == [{"stage": "edgetpu", "reason": reason}]
    assert [t.get("skipped") for t in skipped.report["stages"] if t["stage"] == "edgetpu"] == [reason]
    assert f"**Skipped:** edgetpu: {reason}" in skipped.report_md_path.read_text()
    # Nothing left that passes for this build's Edge TPU model; the int8 model is still evaluated.
    assert not (copy / EDGETPU_FORMAT.filename).exists()
    assert "tflite_edgetpu" not in json.loads(skipped.manifest_path.read_text())["artifacts"]
    assert [m["name"] for m in skipped.report["models"]][-1] == "tflite_int8"
    assert skipped.report["models"][-1]["accuracy"] is not None

    # Cached, the skip is said again; installing the compiler ends it.
    stream = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", _path_without_compiler())
        again = build(recipe, out_dir=copy, progress=Progress(quiet=True, stream=stream))
    assert again.ran == [] and "edgetpu: skipped: edgetpu_compiler not found" in stream.getvalue()
    assert again.report["skipped"] == skipped.report["skipped"]


def test_a_compiler_that_leaves_the_model_unchanged_fails_the_build(built, tmp_path):
    recipe, result, _, _ = built
    copy = _copy_run(result, tmp_path)
    copying_bin = _bin_dir(tmp_path / "bin", COPYING_COMPILER)
    proc = run_edgecnn("build", str(recipe), "--out", str(copy), cwd=REPO, timeout=300,
                       env={"PATH": f"{copying_bin}:{_path_without_compiler()}"})
    # (the progress lines, stage banners, go to stderr before the error line)
    assert_one_line_error(proc, 4, "student_int8.tflite", f"no {EDGETPU_CUSTOM_OP}", "edgetpu_compiler", build=True)
    # The failed stage wrote no record (the earlier build's stays, with its own key) and no temporaries.
    assert json.loads((copy / "stages" / "edgetpu.json").read_text()) == \
        json.loads((result.out_dir / "stages" / "edgetpu.json").read_text())
    assert not list(copy.glob(".tmp-*"))


def test_compiler_identity_is_its_version_else_its_file(tmp_path, monkeypatch):
    from edgecnn.export.edgetpu import compiler_identity

    bare = _path_without_compiler()
    monkeypatch.setenv("PATH", bare)
    assert compiler_identity() is None
    versioned = _bin_dir(tmp_path / "a", COPYING_COMPILER)
    monkeypatch.setenv("PATH", f"{versioned}:{bare}")
    assert compiler_identity() == "version 15.0.340273435"
    silent = _bin_dir(tmp_path / "b", "#!/bin/sh\nexit 1\n")  # says no version: its bytes identify it
    monkeypatch.setenv("PATH", f"{silent}:{bare}")
    assert compiler_identity() == f"sha256 {sha256_file(silent / 'edgetpu_compiler')}"
