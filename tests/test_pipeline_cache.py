"""The stage cache and the run directory: input files by content, corrupt records, the lock.

Builds on real Fashion-MNIST with a tiny loaded teacher (no teacher training) and no
TFLite conversion, so a build is data + teacher (load) + student (one epoch) + evaluate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import EDGECNN_COMMAND, assert_one_line_error, save_tiny_teacher, write_teacher_path_recipe

from edgecnn import pipeline
from edgecnn.errors import FilesystemError
from edgecnn.pipeline import RunDirectoryBusyError, build
from edgecnn.progress import Progress
from edgecnn.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
EDGECNN = [EDGECNN_COMMAND]  # the `edgecnn` entry point, as typed
STAGES = ["data", "teacher", "student", "evaluate"]

# Only the stages the cache tests need: no TFLite conversion.
CACHE_TAIL = "quantize: {int8: false}\nexport: {formats: []}\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished build: ``(recipe path, run dir, teacher path)``."""
    work = tmp_path_factory.mktemp("cache")
    recipe = write_teacher_path_recipe(work, "cache", seed=3, test_limit=50, tail=CACHE_TAIL)
    teacher = work / "teacher.keras"
    out = work / "run"
    result = build(recipe, out_dir=out, progress=Progress(quiet=True))
    assert result.ran == STAGES
    return recipe, out, teacher


def rebuild(recipe: Path, out: Path) -> tuple[pipeline.BuildResult, str]:
    """Build again, returning the result and the progress output."""
    import io

    stream = io.StringIO()
    result = build(recipe, out_dir=out, progress=Progress(quiet=True, stream=stream))
    return result, stream.getvalue()


# ------------------------------------------------------------------ input files by content


def test_retrained_teacher_at_the_same_path_is_a_new_teacher(run):
    """Before the fix the teacher stage's key held only the path string: the old teacher stayed."""
    recipe, out, teacher = run
    assert rebuild(recipe, out)[0].ran == []
    old_teacher_record = json.loads((out / "stages" / "teacher.json").read_text())
    stat = teacher.stat()
    save_tiny_teacher(teacher, seed=1)  # "retrained": same path, new weights
    # Even with size and modification time put back, the content decides.
    os.utime(teacher, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    result, _ = rebuild(recipe, out)
    assert result.ran == ["teacher", "student"], result.ran  # (evaluate reads only .tflite files)
    new_record = json.loads((out / "stages" / "teacher.json").read_text())
    assert new_record["artifacts"]["teacher"]["sha256"] != old_teacher_record["artifacts"]["teacher"]["sha256"]
    assert rebuild(recipe, out)[0].ran == []


def test_input_hashes_are_not_recomputed_for_unchanged_files(run, monkeypatch):
    """The fast path: an unchanged input file (size, times, inode) is not read again."""
    recipe, out, teacher = run
    time.sleep(max(0.0, pipeline._RACY_NS / 1e9 + 0.1 - (time.time() - teacher.stat().st_ctime)))
    rebuild(recipe, out)  # the hash cache now knows the teacher file (it is older than 2 s)
    cache = json.loads((out / "stages" / pipeline.INPUT_HASHES_FILE).read_text())
    assert str(teacher.resolve()) in cache
    read = []
    real = pipeline.sha256_file
    monkeypatch.setattr(pipeline, "sha256_file", lambda p, *a: read.append(Path(p)) or real(p, *a))
    start = time.monotonic()
    assert rebuild(recipe, out)[0].ran == []
    assert teacher.resolve() not in {p.resolve() for p in read}, read
    assert time.monotonic() - start < 15


def test_a_corrupt_hash_cache_is_forgotten_not_trusted(run):
    recipe, out, teacher = run
    cache = out / "stages" / pipeline.INPUT_HASHES_FILE
    for junk in ("[1, 2]", '{"%s": {"stat": 5}}' % teacher.resolve(), "{"):
        cache.write_text(junk)
        assert rebuild(recipe, out)[0].ran == []
        assert json.loads(cache.read_text())[str(teacher.resolve())]["sha256"]


def test_content_key_covers_image_folders_and_weights_files(tmp_path):
    """The key of a stage changes with the bytes of every file it reads, not its name."""
    root = tmp_path / "images"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(12):  # the key reads bytes and decodes nothing: any bytes will do
            (root / cls / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + f"{cls} {i:04d}".encode() * 8)
    weights = tmp_path / "backbone.h5"
    weights.write_bytes(b"weights v1")
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"name: r\ndata: {{source: image_folder, path: {root}}}\nstudent: {{weights: {weights}}}\n")
    recipe = load_recipe(recipe_file)
    stages = {s.name: s for s in pipeline.STAGES}
    content = pipeline._ContentHashes(tmp_path / "hashes.json")

    def key(name):
        ctx = pipeline.BuildContext(recipe, tmp_path, Progress(quiet=True))
        return pipeline._stage_key(stages[name], recipe, ctx, content)

    data_key, student_key = key("data"), key("student")
    image = root / "cat" / "3.png"
    stat = image.stat()
    data = bytearray(image.read_bytes())
    data[-20] ^= 0xFF  # other bytes, same size (the key reads bytes, it decodes nothing)
    image.write_bytes(bytes(data))
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert key("data") != data_key
    weights.write_bytes(b"weights v2")
    assert key("student") != student_key


def test_unreadable_input_file_is_one_line(tmp_path):
    """An input that vanished between the recipe check and the hashing names its key."""
    from edgecnn.errors import ModelFileError

    gone = tmp_path / "teacher.keras"
    content = pipeline._ContentHashes(tmp_path / "hashes.json")
    with pytest.raises(ModelFileError) as info:
        content.digest("teacher.path", pipeline.InputFiles(gone, (gone,)))
    assert "teacher.path" in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------ corrupt records


@pytest.mark.parametrize("content", ["[1, 2, 3]", "null", '{"artifacts": 5}', '{"key": "k", "artifacts": {"x": 5}}',
                                     '{"key": "k", "artifacts": {"x": {"path": "/etc/passwd", "sha256": "0"}}}',
                                     '{"key": "k", "artifacts": {}, "metrics": [1]}', '{"key": ', "\x00\xff"])
def test_a_record_of_the_wrong_shape_is_a_cache_miss_with_a_warning(run, content):
    recipe, out, _ = run
    (out / "stages" / "teacher.json").write_text(content, encoding="latin-1")
    result, printed = rebuild(recipe, out)
    assert "teacher" in result.ran
    warnings = [ln for ln in printed.splitlines() if "warning:" in ln]
    assert len(warnings) == 1 and "stages/teacher.json" in warnings[0] and "rebuilding" in warnings[0], printed
    assert json.loads((out / "stages" / "teacher.json").read_text())["stage"] == "teacher"
    again, printed = rebuild(recipe, out)
    assert again.ran == [] and "warning" not in printed


# ------------------------------------------------------------------ the run directory


def test_a_folder_of_the_users_files_is_refused_and_untouched(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\n")
    documents = tmp_path / "Documents"
    documents.mkdir()
    (documents / "thesis.txt").write_text("mine")
    (documents / ".tmp-draft.txt").write_text("also mine")  # looks like an edgecnn temporary
    before = sorted(p.name for p in documents.iterdir())
    with pytest.raises(FilesystemError, match="did not create"):
        build(recipe, out_dir=documents, progress=Progress(quiet=True))
    assert sorted(p.name for p in documents.iterdir()) == before
    proc = subprocess.run([*EDGECNN, "build", str(recipe), "--out", str(documents)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc, FilesystemError.exit_code, str(documents), "did not create")
    assert sorted(p.name for p in documents.iterdir()) == before


_HOLD_LOCK = """
import sys
from pathlib import Path
from edgecnn import pipeline
from edgecnn.progress import Progress
with pipeline._run_lock(Path(sys.argv[1]), False, Progress(quiet=True)):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_a_second_build_of_the_same_run_directory_waits_or_fails(run):
    """Two real processes: one holds the run directory's lock, a real build meets it."""
    recipe, out, _ = run
    rebuild(recipe, out)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = subprocess.run([*EDGECNN, "build", str(recipe), "--out", str(out)], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        line = assert_one_line_error(proc, RunDirectoryBusyError.exit_code, str(out), f"PID {holder.pid}", "--wait")
        assert line.startswith("error:")
        waiting = subprocess.Popen([*EDGECNN, "build", str(recipe), "--out", str(out), "--wait"], cwd=REPO,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = waiting.stderr.readline()
        assert "waiting" in first and f"PID {holder.pid}" in first, first
        time.sleep(1.0)
        assert waiting.poll() is None, "the waiting build must not proceed while the lock is held"
        holder.stdin.write("\n")
        holder.stdin.flush()
        stdout, stderr = waiting.communicate(timeout=120)
        assert waiting.returncode == 0, stderr
        assert stderr.count("re-used from cache") == len(STAGES), stderr
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_released_when_its_holder_dies(run):
    recipe, out, _ = run
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunDirectoryBusyError):
        build(recipe, out_dir=out, progress=Progress(quiet=True))
    holder.kill()
    holder.wait()
    assert build(recipe, out_dir=out, progress=Progress(quiet=True)).ran == []


# ------------------------------------------------------------------ recipe advice


def test_recipe_warnings_and_inherited_augmentations_reach_log_and_report(run, tmp_path):
    """A recipe that extends the cache recipe, switches the data folder and keeps its flip."""
    from edgecnn.data import locate_fashion_mnist
    from edgecnn.recipe import inherited_settings, recipe_warnings

    recipe, _, _ = run
    parent = tmp_path / "parent.yaml"
    parent.write_text(recipe.read_text().replace("horizontal_flip: false", "horizontal_flip: true"))
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: parent.yaml\nname: child\ndata: {{path: {locate_fashion_mnist(None)}}}\n")
    loaded = load_recipe(child)
    assert "data.augment.horizontal_flip" in inherited_settings(loaded)
    warnings = recipe_warnings(loaded)
    assert warnings, "the recipe switches data.path and keeps an inherited flip: recipe_warnings should say so"
    result, printed = rebuild(child, tmp_path / "run")
    lines = printed.splitlines()
    assert lines[1:1 + len(warnings)] == [f"warning: {w}" for w in warnings], printed
    inherited = [ln for ln in lines if "inherited through extends" in ln]
    assert any("data.augment.horizontal_flip = true" in ln and "parent.yaml" in ln for ln in inherited), printed
    assert "data.augment.horizontal_flip = true" in (tmp_path / "run" / "logs" / "build.log").read_text()
    report = json.loads(result.report_path.read_text())
    rows = report["dataset"]["inherited_augmentations"]
    assert {"key": "data.augment.horizontal_flip", "value": True} in [{k: r[k] for k in ("key", "value")} for r in rows]
    assert all(Path(r["from"]).name == "parent.yaml" for r in rows)
    assert "`data.augment.horizontal_flip` = `true`" in result.report_md_path.read_text()


def test_a_renamed_recipe_keys_every_stage_that_writes_the_name_into_a_file(tmp_path):
    """add_metadata writes recipe.name into each .tflite: export and quantize keys cover it, training keys do not."""
    base = write_teacher_path_recipe(tmp_path, "one", seed=3, test_limit=50, tail="export: {formats: [float32], bundle: true}\n")
    one, two = load_recipe(base), load_recipe(base, ("name=two",))
    changed = {s.name for s in pipeline.planned_stages(one)
               if one.section_hash(*s.sections) != two.section_hash(*s.sections)}
    assert changed == {"export", "quantize", "bundle"}, changed
