"""Filesystem faults are the user's environment, not edgecnn bugs: one line, exit 7, nothing half-written.

Real faults, no mocks: a read-only bind mount (root; ``chmod 0555`` does not stop root,
so as another user the folder is chmod'ed instead), a 64 KiB tmpfs that fills up
(ENOSPC; root only, else skipped), and a path under a regular file (ENOTDIR).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from helpers import assert_one_line_error, run_edgecnn, write_tiny_recipe

from edgecnn.errors import FilesystemError

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path = REPO, timeout: float = 180) -> subprocess.CompletedProcess:
    return run_edgecnn(*map(str, args), cwd=cwd, timeout=timeout)


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@contextlib.contextmanager
def read_only(folder: Path):
    """Make ``folder`` read-only in place while the block runs.

    As root a read-only bind mount of the folder over itself (EROFS): root ignores
    permission bits, so ``chmod`` would prove nothing. Otherwise ``chmod 0555`` (EACCES).
    """
    folder = Path(folder)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield "EACCES"
        finally:
            folder.chmod(0o755)
        return
    bound = _mount("--bind", str(folder), str(folder))
    if bound.returncode != 0:
        pytest.skip(f"root, but cannot bind-mount here ({bound.stderr.strip()}); chmod does not stop root")
    try:
        remount = _mount("-o", "remount,bind,ro", str(folder))
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only ({remount.stderr.strip()})")
        yield "EROFS"
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@contextlib.contextmanager
def tiny_disk(folder: Path, size: str = "64k"):
    """A tmpfs of ``size`` mounted on ``folder`` (created): a disk that fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs to fill a disk needs root")
    folder.mkdir(parents=True, exist_ok=True)
    mounted = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to the last byte."""
    with open(folder / "ballast", "wb", buffering=0) as fh:
        with contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 4096)


def temporaries(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob(".tmp-*"))


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ------------------------------------------------------------------------ fileio units


@pytest.fixture(autouse=True)
def _own_stage_cache(tmp_path, monkeypatch):
    """Builds here use a stage cache of their own, never the user's ~/.cache/edgecnn."""
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "stage-cache"))



def test_atomic_write_under_a_file_names_the_path_as_enotdir(tmp_path):
    from edgecnn.fileio import write_text_atomic

    (tmp_path / "notes").write_text("mine")
    with pytest.raises(NotADirectoryError) as info:
        write_text_atomic(tmp_path / "notes" / "out.json", "{}")
    assert info.value.filename == str(tmp_path / "notes" / "out.json")
    assert (tmp_path / "notes").read_text() == "mine"


def test_atomic_write_in_a_read_only_folder_names_the_target_not_the_temporary(tmp_path):
    from edgecnn.fileio import write_text_atomic

    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "kept.json").write_text("old")
    with read_only(folder) as reason:
        with pytest.raises(OSError) as info:
            write_text_atomic(folder / "kept.json", "new")
    assert info.value.errno == getattr(__import__("errno"), reason)
    assert info.value.filename == str(folder / "kept.json")
    assert (folder / "kept.json").read_text() == "old" and not temporaries(folder)


def test_full_disk_leaves_the_old_file_and_no_temporary(tmp_path):
    from edgecnn.fileio import write_bytes_atomic

    with tiny_disk(tmp_path / "disk") as disk:
        (disk / "model.bin").write_bytes(b"old model")
        fill(disk)
        with pytest.raises(OSError) as info:
            write_bytes_atomic(disk / "model.bin", b"x" * 200_000)
        assert info.value.errno == 28 and info.value.filename == str(disk / "model.bin")
        assert (disk / "model.bin").read_bytes() == b"old model"
        assert not temporaries(disk)


def test_replace_output_dir_on_a_full_disk_names_the_target(tmp_path):
    from edgecnn.fileio import replace_output_dir

    with tiny_disk(tmp_path / "disk") as disk:
        with pytest.raises(OSError) as info:
            with replace_output_dir(disk / "bundle", "bundle") as tmp:
                fill(disk)  # the disk fills up while the bundle is being written
                (tmp / "model.tflite").write_bytes(b"x" * 200_000)
        assert info.value.errno == 28
        # write() reports no file name: the folder the person chose is named, never the .tmp- one.
        assert info.value.filename == str(disk / "bundle")
        assert not (disk / "bundle").exists() and not temporaries(disk)


# ------------------------------------------------------------------------------ build


def test_build_into_a_read_only_run_directory_is_one_line_exit_7(tmp_path):
    recipe = write_tiny_recipe(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / ".edgecnn-owned").write_text('{"created_by": "edgecnn", "kind": "run", "edgecnn": "0"}')
    with read_only(run) as reason:
        proc = run_cli("build", recipe, "--out", run)
    line = assert_one_line_error(proc, FilesystemError.exit_code, str(run), f"({reason})", build=True)
    assert "choose a writable location" in line or "permission" in line


def test_build_on_a_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path):
    """A real (tiny) build runs until the teacher is saved, where a 64 KiB disk is full."""
    recipe = write_tiny_recipe(tmp_path)
    with tiny_disk(tmp_path / "disk") as disk:
        proc = run_cli("build", recipe, "--out", disk / "run", "-q")
        assert_one_line_error(proc, FilesystemError.exit_code, str(disk / "run"), "(ENOSPC)", "disk is full", build=True)
        assert not temporaries(disk)
        assert not (disk / "run" / "teacher.keras").exists()


# ------------------------------------------------------------------------------ bench


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from helpers import build_tiny_classifier

    return build_tiny_classifier(tmp_path_factory.mktemp("fsmodel"), io_dtype="int8")


def _bench(model: Path, out: Path) -> subprocess.CompletedProcess:
    return run_cli("bench", model, "--runs", "2", "--warmup", "0", "--out", out)


def test_bench_out_read_only_folder(model, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    with read_only(folder) as reason:
        proc = _bench(model, folder / "bench.jsonl")
    assert_one_line_error(proc, FilesystemError.exit_code, str(folder / "bench.jsonl"), f"({reason})")
    assert list(folder.iterdir()) == []


def test_bench_out_under_a_file(model, tmp_path):
    (tmp_path / "notes.txt").write_text("mine\n")
    proc = _bench(model, tmp_path / "notes.txt" / "bench.jsonl")
    assert_one_line_error(proc, FilesystemError.exit_code, "notes.txt", "(ENOTDIR)")
    assert (tmp_path / "notes.txt").read_text() == "mine\n"


def test_bench_out_a_file_that_is_not_a_results_file_is_never_changed(model, tmp_path):
    for name, text in (("notes.jsonl", "my notes\n"), ("data.json", '{"mine": 1}\n'), ("notes.txt", "x\n")):
        user = tmp_path / name
        user.write_text(text)
        proc = _bench(model, user)
        assert_one_line_error(proc, FilesystemError.exit_code, str(user))
        assert user.read_text() == text
    assert not temporaries(tmp_path)


def test_bench_out_on_a_full_disk_keeps_every_earlier_result(model, tmp_path):
    from edgecnn.bench.schema import load_results

    with tiny_disk(tmp_path / "disk") as disk:
        results = disk / "bench.jsonl"
        first = _bench(model, results)
        assert first.returncode == 0, first.stderr
        before = digest(results)
        fill(disk)
        proc = _bench(model, results)
        assert_one_line_error(proc, FilesystemError.exit_code, str(results), "(ENOSPC)")
        assert digest(results) == before and len(load_results(results)) == 1
        assert not temporaries(disk)


def test_append_result_on_a_full_disk_adds_no_torn_line(tmp_path):
    from edgecnn.bench.schema import append_result, load_results, new_result

    result = new_result("local", {"path": "m.tflite", "sha256": None, "size_bytes": 1},
                        latency_ms=dict.fromkeys(("mean", "std", "min", "p50", "p90", "p99", "max"), 1.0))
    with tiny_disk(tmp_path / "disk", size="16k") as disk:
        path = disk / "bench.jsonl"
        appended = 0
        with pytest.raises(OSError) as info:
            for _ in range(10_000):
                append_result(path, result)
                appended += 1
        assert info.value.errno == 28 and info.value.filename == str(path)
        assert appended > 0 and len(load_results(path)) == appended
        assert path.read_text().endswith("\n") and not temporaries(disk)


# ------------------------------------------------------------------------------- demo


@pytest.fixture
def images(tmp_path):
    cv2 = pytest.importorskip("cv2")
    import numpy as np

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.RandomState(0)
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), rng.randint(0, 255, (40, 40, 3)).astype(np.uint8))
    return folder


def _demo(model, images, *args) -> subprocess.CompletedProcess:
    return run_cli("demo", "--headless", "--model", model, "--source", images, *args)


def test_demo_log_under_a_file(model, images, tmp_path):
    (tmp_path / "notes").write_text("mine")
    proc = _demo(model, images, "--log", tmp_path / "notes" / "frames.jsonl")
    assert_one_line_error(proc, FilesystemError.exit_code, str(tmp_path / "notes"), "(ENOTDIR)")
    assert (tmp_path / "notes").read_text() == "mine"


def test_demo_log_and_video_in_a_read_only_folder(model, images, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    with read_only(folder) as reason:
        for option, name in (("--log", "frames.jsonl"), ("--out", "annotated.avi")):
            proc = _demo(model, images, option, folder / name)
            assert_one_line_error(proc, FilesystemError.exit_code, str(folder / name), f"({reason})")
    assert list(folder.iterdir()) == []


def test_demo_outputs_on_a_full_disk_leave_no_half_file(model, images, tmp_path):
    with tiny_disk(tmp_path / "disk", size="16k") as disk:
        fill(disk)
        for option, name in (("--log", "frames.jsonl"), ("--out", "annotated.avi")):
            proc = _demo(model, images, option, disk / name)
            line = assert_one_line_error(proc, FilesystemError.exit_code, str(disk / name))
            assert "(ENOSPC)" in line or "could not be written completely" in line, line
        assert sorted(p.name for p in disk.iterdir()) == ["ballast"]


def test_demo_never_replaces_a_file_it_did_not_write(model, images, tmp_path):
    for option, name in (("--log", "frames.jsonl"), ("--out", "holiday.mp4")):
        user = tmp_path / name
        user.write_bytes(b"the user's own file")
        proc = _demo(model, images, option, user)
        assert_one_line_error(proc, FilesystemError.exit_code, str(user), "not written by 'edgecnn demo'")
        assert user.read_bytes() == b"the user's own file"


def test_demo_replaces_its_own_log_and_video(model, images, tmp_path):
    log, video = tmp_path / "frames.jsonl", tmp_path / "annotated.avi"
    for _ in range(2):
        proc = _demo(model, images, "--log", log, "--out", video)
        assert proc.returncode == 0, proc.stderr
    assert len(log.read_text().splitlines()) == 3 and video.stat().st_size > 0
    assert not temporaries(tmp_path)


def test_check_results_target_refuses_before_anything_runs(tmp_path):
    """What ``bench --out`` can check up front, creating nothing (for the CLI to call first)."""
    from edgecnn.bench.schema import check_results_target

    assert check_results_target(tmp_path / "new" / "r.jsonl") == tmp_path / "new" / "r.jsonl"
    assert check_results_target(tmp_path) == tmp_path / "bench.jsonl"
    (tmp_path / "notes.jsonl").write_text("mine\n")
    with pytest.raises(FilesystemError, match="not an edgecnn results file"):
        check_results_target(tmp_path / "notes.jsonl")
    (tmp_path / "notes.txt").write_text("mine\n")
    with pytest.raises(FilesystemError, match="is a file, not a run directory"):
        check_results_target(tmp_path / "notes.txt")
    with pytest.raises(NotADirectoryError):
        check_results_target(tmp_path / "notes.txt" / "r.jsonl")
    folder = tmp_path / "ro"
    folder.mkdir()
    with read_only(folder) as reason:
        with pytest.raises(OSError) as info:
            check_results_target(folder / "sub" / "r.jsonl")
    assert info.value.errno == getattr(__import__("errno"), reason)
    assert info.value.filename == str(folder / "sub" / "r.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.jsonl", "notes.txt", "ro"]
