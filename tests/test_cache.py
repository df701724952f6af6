"""The shared stage cache: builds into different run directories share stage results.

Real builds on real Fashion-MNIST with the tiny loaded teacher of test_pipeline_cache (no
teacher training, one student epoch on 100 images, no TFLite), a real read-only tmpfs
mount, a real second file system (/dev/shm) for copies, real concurrent processes.
Every test points the cache at its own temporary folder (never ~/.cache).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import EDGECNN_COMMAND, assert_one_line_error, write_teacher_path_recipe
from test_pipeline_cache import CACHE_TAIL, STAGES

from edgecnn import pipeline
from edgecnn.cache import CACHE_ENV, StageCache, cache_root, parse_size
from edgecnn.errors import FilesystemError
from edgecnn.fileio import sha256_file
from edgecnn.pipeline import Stage, StageResult, build, insert_stage
from edgecnn.progress import Progress

REPO = Path(__file__).resolve().parents[1]
EDGECNN = [EDGECNN_COMMAND]  # the `edgecnn` entry point, as typed


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test here gets its own cache folder (so nothing reaches ~/.cache/edgecnn)."""
    base = tmp_path / "edgecnn-cache"
    monkeypatch.setenv(CACHE_ENV, str(base))
    return base / "stages"


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory):
    return write_teacher_path_recipe(tmp_path_factory.mktemp("shared"), "cache", seed=3, test_limit=50,
                                     tail=CACHE_TAIL)


@pytest.fixture(scope="module")
def warm_cache(recipe_file, tmp_path_factory) -> Path:
    """A stage cache holding every stage of ``recipe_file``, built once (one cold build) for
    the tests that need a filled cache to start from; each takes a copy (:func:`warm_copy`)."""
    work = tmp_path_factory.mktemp("warm")
    result, printed = quiet_build(recipe_file, work / "run", StageCache(work / "stages"))
    assert result.ran == STAGES, printed
    return work / "stages"


def warm_copy(warm_cache: Path, private_cache: Path) -> StageCache:
    """This test's own cache, a copy of ``warm_cache``: a first build restores every stage from it
    (what a cold build would have left there), and the test may damage or prune it freely."""
    shutil.copytree(warm_cache, private_cache)
    return StageCache(private_cache)


def quiet_build(recipe: Path, out: Path, cache: StageCache | None, **kw) -> tuple[pipeline.BuildResult, str]:
    stream = io.StringIO()
    result = build(recipe, out_dir=out, progress=Progress(quiet=True, stream=stream), cache=cache, **kw)
    return result, stream.getvalue()


def artifact_hashes(out: Path) -> dict[str, str]:
    manifest = json.loads((out / "manifest.json").read_text())
    return {name: item["sha256"] for name, item in manifest["artifacts"].items()}


# --------------------------------------------------------------------- sharing between runs


def test_second_out_restores_every_stage_as_hard_links(recipe_file, tmp_path, private_cache):
    cache = StageCache(private_cache)
    first, _ = quiet_build(recipe_file, tmp_path / "a", cache)
    assert first.ran == STAGES
    second, printed = quiet_build(recipe_file, tmp_path / "b", cache)
    assert second.ran == [] and second.cached == STAGES, printed
    assert "restored from the shared cache" in printed
    assert artifact_hashes(tmp_path / "a") == artifact_hashes(tmp_path / "b")
    student = tmp_path / "b" / "student.keras"
    obj = private_cache / "objects" / sha256_file(student)[:2] / sha256_file(student)
    assert os.path.samestat(student.stat(), obj.stat())  # the same data, stored once
    record = json.loads((tmp_path / "b" / "stages" / "student.json").read_text())
    assert record["cache"]["files"] == "hardlink"
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert all(s["cached"] for s in report["stages"])


def test_run_dir_survives_a_pruned_cache(recipe_file, tmp_path, private_cache, warm_cache):
    cache = warm_copy(warm_cache, private_cache)
    quiet_build(recipe_file, tmp_path / "a", cache)
    before = artifact_hashes(tmp_path / "a")
    pruned = cache.prune(max_bytes=0)
    assert len(pruned.entries) == len(STAGES) and pruned.objects > 0
    assert not list((private_cache / "objects").rglob("*/*")) and not list((private_cache / "entries").iterdir())
    again, _ = quiet_build(recipe_file, tmp_path / "a", cache)
    assert again.ran == []  # the run directory's links kept every file
    assert artifact_hashes(tmp_path / "a") == before
    assert all(sha256_file(tmp_path / "a" / n) == h for n, h in
               {"student.keras": before["student"], "dataset.json": before["dataset"]}.items())


def test_copies_across_file_systems(recipe_file, tmp_path):
    """A cache on /dev/shm (tmpfs) and run directories on another file system: copies."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on a file system other than the temporary folder's")
    root = Path(os.path.join(shm, f"edgecnn-test-cache-{os.getpid()}"))
    try:
        cache = StageCache(root)
        quiet_build(recipe_file, tmp_path / "a", cache)
        result, _ = quiet_build(recipe_file, tmp_path / "b", cache)
        assert result.ran == []
        record = json.loads((tmp_path / "b" / "stages" / "student.json").read_text())
        assert record["cache"]["files"] == "copy"
        assert json.loads((tmp_path / "a" / "stages" / "student.json").read_text())["cache"]["files"] == "copy"
        student = tmp_path / "b" / "student.keras"
        assert student.stat().st_nlink == 1 and sha256_file(student) == artifact_hashes(tmp_path / "a")["student"]
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def test_folders_and_identical_files_are_stored_file_by_file_once(tmp_path, private_cache):
    cache = StageCache(private_cache).open()
    out = tmp_path / "run"
    (out / "bundle" / "models").mkdir(parents=True)
    (out / "bundle" / "models" / "m.tflite").write_bytes(b"model bytes")
    (out / "bundle" / "labels.txt").write_text("a\nb\n")
    (out / "bundle" / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(out / "bundle" / "run.sh", 0o755)
    (out / "copy.tflite").write_bytes(b"model bytes")  # same content as a bundle file
    arts = {"bundle": {"role": "bundle", "kind": "dir", "path": "bundle", "sha256": sha256_file(out / "bundle")},
            "copy": {"role": "copy", "kind": "tflite", "path": "copy.tflite", "sha256": sha256_file(out / "copy.tflite")}}
    key = "k" * 64
    cache.publish(key, {"stage": "bundle", "key": key, "artifacts": arts, "metrics": {}}, out)
    assert len(list((private_cache / "objects").rglob("*/*"))) == 3  # 4 files, 3 contents
    record, problem = cache.lookup(key)
    assert problem is None
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    assert cache.restore(record, elsewhere) == "hardlink"
    assert sha256_file(elsewhere / "bundle") == arts["bundle"]["sha256"]
    assert (elsewhere / "bundle" / "run.sh").stat().st_mode & 0o777 == 0o755


# ------------------------------------------------------------------------------ corruption


def test_corrupt_object_is_detected_and_rebuilt(recipe_file, tmp_path, private_cache, warm_cache):
    cache = warm_copy(warm_cache, private_cache)
    quiet_build(recipe_file, tmp_path / "a", cache)
    record = json.loads((private_cache / "entries" / json.loads(
        (tmp_path / "a" / "stages" / "student.json").read_text())["key"] / "record.json").read_text())
    sha = record["files"]["student"][0][1]
    obj = private_cache / "objects" / sha[:2] / sha
    obj.unlink()  # break the link to run a's file first (a's copy stays intact)
    data = bytearray((tmp_path / "a" / "student.keras").read_bytes())
    data[len(data) // 2] ^= 0xFF
    obj.write_bytes(bytes(data))
    result, printed = quiet_build(recipe_file, tmp_path / "b", cache)
    assert result.ran == ["student"], printed  # evaluate's key holds the student's bytes: reproducible
    warnings = [ln for ln in printed.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and "student" in warnings[0] and "sha256" in warnings[0], printed
    assert cache.lookup(record["key"])[1] is None  # rebuilt and re-published, sound again
    assert quiet_build(recipe_file, tmp_path / "c", cache)[0].ran == []


@pytest.mark.parametrize("junk", ['{"key": 5', "[1, 2, 3]", "null",
                                  '{"key": "KEY", "artifacts": {}, "files": {"x": 5}}',
                                  '{"key": "KEY", "artifacts": {}, "files": {"x": [[1]]}}'],
                         ids=["truncated", "list", "null", "files-not-lists", "short-row"])
def test_malformed_entry_record_is_rebuilt(recipe_file, tmp_path, private_cache, warm_cache, junk):
    """Invalid JSON and valid JSON of the wrong shape alike: one warning, rebuilt, then clean."""
    cache = warm_copy(warm_cache, private_cache)
    quiet_build(recipe_file, tmp_path / "a", cache)
    key = json.loads((tmp_path / "a" / "stages" / "data.json").read_text())["key"]
    (private_cache / "entries" / key / "record.json").write_text(junk.replace("KEY", key))
    result, printed = quiet_build(recipe_file, tmp_path / "b", cache)
    assert result.ran == ["data"], printed
    assert sum("warning" in ln and "data" in ln for ln in printed.splitlines()) == 1
    result, printed = quiet_build(recipe_file, tmp_path / "c", cache)  # the bad entry did not stick
    assert result.ran == [] and "warning" not in printed, printed


# ----------------------------------------------------------------------- unwritable cache


def test_cache_under_a_file_is_one_line(recipe_file, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(FilesystemError, match=f"stage cache {blocker}/cache .*: cannot be used: .*set {CACHE_ENV} "
                                              "to a writable"):
        quiet_build(recipe_file, tmp_path / "out", StageCache(blocker / "cache", env_named=True))
    env = {**os.environ, CACHE_ENV: str(blocker / "cache")}
    proc = subprocess.run([*EDGECNN, "build", str(recipe_file), "--out", str(tmp_path / "out2"), "--quiet"],
                          cwd=REPO, env=env, capture_output=True, text=True)
    assert_one_line_error(proc, FilesystemError.exit_code, f"{CACHE_ENV}={blocker / 'cache'}",
                          str(blocker / "cache" / "stages"), "ENOTDIR")
    assert not (tmp_path / "out2" / "stages").exists()  # nothing built


def test_read_only_mounted_cache_is_one_line(recipe_file, tmp_path):
    mnt = tmp_path / "ro"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        env = {**os.environ, CACHE_ENV: str(mnt / "cache")}
        proc = subprocess.run([*EDGECNN, "build", str(recipe_file), "--out", str(tmp_path / "out"), "--quiet"],
                              cwd=REPO, env=env, capture_output=True, text=True)
        assert_one_line_error(proc, FilesystemError.exit_code, CACHE_ENV, "EROFS", f"{CACHE_ENV}=off")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_cache_location_rules(tmp_path):
    assert cache_root({CACHE_ENV: str(tmp_path)}) == tmp_path / "stages"
    assert cache_root({"XDG_CACHE_HOME": "/x/y"}) == Path("/x/y/edgecnn/stages")
    assert cache_root({"HOME": "/h"}) is not None and cache_root({CACHE_ENV: "off"}) is None
    assert parse_size("2G") == 2 << 30 and parse_size("500M") == 500 << 20 and parse_size("12") == 12
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")


def test_a_users_folder_is_not_taken_as_cache(recipe_file, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(FilesystemError, match="did not create"):
        StageCache(mine, env_named=True).open()
    with pytest.raises(FilesystemError, match="not an edgecnn stage cache"):
        StageCache(mine).prune(max_bytes=0)
    assert (mine / "notes.txt").read_text() == "mine"


# ----------------------------------------------------------------------------- concurrency


def test_concurrent_builds_of_the_same_stage_run_it_once(recipe_file, tmp_path, private_cache):
    """Two processes build one recipe into two run dirs at once: each stage runs once overall."""
    env = dict(os.environ)  # EDGECNN_CACHE: private_cache's parent
    procs = [subprocess.Popen([*EDGECNN, "build", str(recipe_file), "--out", str(tmp_path / name), "--quiet"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("p1", "p2")]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    ran = []
    for name in ("p1", "p2"):
        report = json.loads((tmp_path / name / "report.json").read_text())
        ran += [s["stage"] for s in report["stages"] if not s["cached"]]
    assert sorted(ran) == sorted(STAGES), (ran, outputs)
    assert artifact_hashes(tmp_path / "p1") == artifact_hashes(tmp_path / "p2")
    cache = StageCache(private_cache)
    assert all(cache.lookup(json.loads((tmp_path / "p1" / "stages" / f"{s}.json").read_text())["key"])[1] is None
               for s in STAGES)


# ----------------------------------------------------------------------- checkpoint folder


@pytest.mark.parametrize("shared", [True, False], ids=["shared-cache", "cache-off"])
def test_checkpoint_dir_survives_a_failed_stage_and_goes_when_it_finishes(recipe_file, tmp_path, private_cache,
                                                                          shared):
    """The folder training stages keep epoch checkpoints in: per key, kept across a crash."""
    seen = []

    def flaky(recipe, ctx):
        state = ctx.checkpoint_dir / "epoch.txt"
        seen.append(state.read_text() if state.exists() else None)
        if state.exists():
            path = ctx.path("probe.json")
            path.write_text("{}")
            return StageResult([pipeline.Artifact("report.probe", "json", path)], {})
        state.write_text("epoch 1")
        raise RuntimeError("killed after epoch 1")

    table = insert_stage(Stage("probe", (), ("dataset",), ("report.probe",), flaky, lambda r: True, lambda r: "probe"),
                         after="data")
    cache = StageCache(private_cache) if shared else None
    work = private_cache / "work" if shared else tmp_path / "a" / "stages" / "work"
    with pytest.raises(RuntimeError, match="killed after epoch 1"):
        quiet_build(recipe_file, tmp_path / "a", cache, stages=table)
    assert len(list(work.iterdir())) == 1
    result, _ = quiet_build(recipe_file, tmp_path / "a", cache, stages=table)
    assert seen == [None, "epoch 1"] and "probe" in result.ran
    assert not list(work.iterdir())  # finished: scratch removed


# -------------------------------------------------------------------------- info and prune


def test_cache_info_and_prune_commands(recipe_file, tmp_path, private_cache, warm_cache):
    quiet_build(recipe_file, tmp_path / "a", warm_copy(warm_cache, private_cache))
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    (private_cache / "objects" / "zz").mkdir()
    os.symlink(outside, private_cache / "objects" / "zz" / ("0" * 64))
    env = dict(os.environ)  # EDGECNN_CACHE: private_cache's parent

    def cli(*args):
        return subprocess.run([*EDGECNN, "cache", *args], cwd=REPO, env=env, capture_output=True, text=True)

    info = cli("info")
    assert info.returncode == 0, info.stderr
    assert f"location: {private_cache}\n" in info.stdout and f"entries:  {len(STAGES)}" in info.stdout
    assert "student" in info.stdout and "MiB" in info.stdout
    dry = cli("prune", "--max-size", "0", "--dry-run")
    assert dry.returncode == 0 and f"would remove {len(STAGES)} entries" in dry.stdout
    assert len(list((private_cache / "entries").iterdir())) == len(STAGES)
    assert cli("prune", "--older-than", "1").stdout.startswith("removed 0 entries")
    # The README's line: an entry last used 31 days ago goes with --older-than 30; the others stay.
    old_entry = sorted((private_cache / "entries").iterdir())[0]
    month_ago = time.time() - 31 * 86400
    for path in (old_entry, *old_entry.rglob("*")):
        os.utime(path, (month_ago, month_ago))
    aged = cli("prune", "--older-than", "30")
    assert aged.returncode == 0 and aged.stdout.startswith("removed ") and old_entry.name[:12] in aged.stdout, \
        aged.stdout
    assert "removed 1 entries" in aged.stdout and not old_entry.exists()
    assert len(list((private_cache / "entries").iterdir())) == len(STAGES) - 1
    roomy = cli("prune", "--max-size", "2G")  # the README's other line: a tiny cache is under 2 GB
    assert roomy.returncode == 0 and roomy.stdout.startswith("removed 0 entries"), roomy.stdout
    done = cli("prune", "--max-size", "0")
    assert done.returncode == 0 and f"removed {len(STAGES) - 1} entries" in done.stdout
    assert not list((private_cache / "entries").iterdir())
    assert outside.read_text() == "keep me"  # a symlink in the cache is never followed
    bad = cli("prune", "--max-size", "lots")
    assert bad.returncode == 2 and "not a size" in bad.stderr
    assert (tmp_path / "a" / "student.keras").is_file()


# --------------------------------------------------------------------- prune against builds

_HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_SH if sys.argv[2] == "shared" else fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()  # hold it until the test closes stdin
"""


def _publish_one(cache: StageCache, out: Path, key: str, content: bytes) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "m.tflite").write_bytes(content)
    arts = {"m": {"role": "model.tflite.int8", "kind": "tflite", "path": "m.tflite",
                  "sha256": sha256_file(out / "m.tflite")}}
    cache.publish(key, {"stage": "quantize", "key": key, "artifacts": arts, "metrics": {}}, out)


def _holder(lock: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(lock), mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_prune_keeps_an_entry_a_build_holds_and_waits_for_a_publish_in_flight(tmp_path, private_cache):
    """Another process holds a stage's lock (a build restoring it) and the objects lock
    shared (a build publishing): prune must leave that entry and its object, and must not
    sweep objects until the publish is over."""
    import threading

    cache = StageCache(private_cache).open()
    held, free = "a" * 64, "b" * 64
    _publish_one(cache, tmp_path / "r1", held, b"held model")
    _publish_one(cache, tmp_path / "r2", free, b"free model")
    build = _holder(private_cache / "locks" / f"{held}.lock", "exclusive")
    publisher = _holder(private_cache / "locks" / "objects.lock", "shared")
    results = []
    pruner = threading.Thread(target=lambda: results.append(cache.prune(max_bytes=0)))
    try:
        pruner.start()
        pruner.join(1.5)
        assert pruner.is_alive(), "prune swept objects while a publish was in flight"
        assert not (private_cache / "entries" / free).exists()  # entries go first, under their own lock
    finally:
        publisher.communicate("")
        pruner.join(30)
        build.communicate("")
    assert not pruner.is_alive() and len(results) == 1
    assert results[0].entries == [f"quantize {free[:12]}"]
    record, problem = cache.lookup(held)
    assert problem is None, problem  # the held entry and its object are intact
    assert cache.restore(record, tmp_path / "again") == "hardlink"
    assert (tmp_path / "again" / "m.tflite").read_bytes() == b"held model"
    assert results[0].objects == 1  # the free entry's object only


def test_edgecnn_cache_off_builds_with_the_run_directory_only(recipe_file, tmp_path):
    """`EDGECNN_CACHE=off edgecnn build ...`: no shared cache is read or written, and `edgecnn cache
    info` says it is off (exit 1, one line)."""
    from helpers import run_edgecnn

    home = tmp_path / "home"  # where the default cache would go
    env = {"EDGECNN_CACHE": "off", "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    proc = run_edgecnn("build", str(recipe_file), "--out", str(tmp_path / "run"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "student.keras").is_file()
    assert not (home / ".cache" / "edgecnn").exists()
    assert all("cache" not in json.loads(p.read_text()) for p in (tmp_path / "run" / "stages").glob("*.json")
               if p.name != "input_hashes.json")
    info = run_edgecnn("cache", "info", env=env)
    assert_one_line_error(info, 1, "turned off", "EDGECNN_CACHE=off")
