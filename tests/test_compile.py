"""``edgecnn compile --target edgetpu``: the missing-compiler path (real: edgetpu_compiler is
not installed here), the --fail-on-cpu-ops policy on parsed logs (pure), and the whole
command through a fake ``edgetpu_compiler``.

No real compiler can be installed on this machine (it is not in Debian, it comes from
Google's Coral apt repository, and there is no network), so the end-to-end tests put a
FAKE compiler first on PATH: ``tests/fakes/edgetpu_compiler.py``. It takes the real
command line, prints and logs in the real compiler's formats, and writes a real TFLite
file whose subgraph holds one ``edgetpu-custom-op`` in place of the model's operations,
which is what edgecnn checks; a mode that copies the input unchanged (a compiler that
mapped nothing) must be refused. The output folder tests check that ``--out`` replaces
only an earlier compile's files (by the sha256 its report records), never a user's.

What only the real compiler (and an Edge TPU) can prove: which operations it actually
maps to the TPU and why it leaves others on the CPU, that its executable in the op's
custom options runs on the TPU, the memory figures it reports, and the exact text of
compiler versions not quoted here. ``device_tests/test_coral.py`` runs a really compiled
model on a real Edge TPU.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import EDGECNN_COMMAND, assert_one_line_error

from edgecnn.tool_output import parse_edgetpu_compiler_log
from edgecnn.export.edgetpu import compile_edgetpu, cpu_fallback_problem, format_compile_summary

REPO = Path(__file__).resolve().parents[1]
EDGECNN = [EDGECNN_COMMAND]  # the `edgecnn` entry point, as typed

# Compiler output in the formats real compilers print, for the tiny test model (CONV_2D,
# RESHAPE, FULLY_CONNECTED). Layouts from published logs: compiler 16.0 with -s
# (https://github.com/WongKinYiu/yolov7/pull/1672), 2.1 with CPU fallback
# (https://github.com/google-coral/edgetpu/issues/60), 14.1 without a table
# (https://github.com/google-coral/edgetpu/issues/173), the operation log file
# (https://github.com/rajansaini691/retinanet-model-tflite/blob/master/tiny_yolo_edgetpu.log),
# and an internal error (https://github.com/google-coral/edgetpu/issues/189).
SUMMARY = """\
Model compiled successfully in 41 ms.

Input model: {model}
Input size: 2.55KiB
Output model: {out}/{stem}_edgetpu.tflite
Output size: 61.45KiB
On-chip memory used for caching model parameters: 1.75KiB
On-chip memory remaining for caching model parameters: 7.97MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 3
Operation log: {out}/{stem}_edgetpu.log
"""
HEADER = "\nOperator                       Count      Status\n\n"
ALL_MAPPED_ROWS = """\
FULLY_CONNECTED                1          Mapped to Edge TPU
RESHAPE                        1          Mapped to Edge TPU
CONV_2D                        1          Mapped to Edge TPU
"""
CPU_ROWS = """\
FULLY_CONNECTED                1          More than one subgraph is not supported
RESHAPE                        1          Operation is otherwise supported, but not mapped due to some unspecified limitation
CONV_2D                        1          Mapped to Edge TPU
"""
NOT_ALL = """
Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 1
Number of operations that will run on CPU: 2
"""
LOGS = {
    "all": ("Edge TPU Compiler version 16.0.384591198\nStarted a compilation timeout timer of 180 seconds.\n\n"
            + SUMMARY + HEADER + ALL_MAPPED_ROWS
            + "Compilation child process completed within timeout period.\nCompilation succeeded! \n"),
    "cpu": "Edge TPU Compiler version 2.1.302470888\n\n" + SUMMARY + NOT_ALL + HEADER + CPU_ROWS,
    "notable": ("Edge TPU Compiler version 14.1.317412892\n\n" + SUMMARY + NOT_ALL
                + "See the operation log file for individual operation details.\n"),
    "fail": "Edge TPU Compiler version 14.1.317412892\nInternal compiler error. Aborting!\n",
}
LOG_FILE = ("Edge TPU Compiler version 14.1.317412892\nInput: {model}\nOutput: {out}/{stem}_edgetpu.tflite\n"
            + HEADER + CPU_ROWS)

FAKE_COMPILER = Path(__file__).resolve().parent / "fakes" / "edgetpu_compiler.py"


def _parsed(kind: str) -> dict:
    return parse_edgetpu_compiler_log(LOGS[kind].format(model="m.tflite", out="o", stem="m"))


# ----------------------------------------------------------------------------- pure


def test_cpu_fallback_policy_on_parsed_logs():
    assert cpu_fallback_problem(_parsed("all")) is None
    problem = cpu_fallback_problem(_parsed("cpu"))
    assert problem.startswith("2 operations would run on the CPU, not the Edge TPU: ")
    assert "FULLY_CONNECTED x1 (More than one subgraph is not supported)" in problem
    assert "RESHAPE x1 (Operation is otherwise supported" in problem and "CONV_2D" not in problem
    assert "\n" not in problem
    # Counts without the per-operator table still fail, and say where to look.
    assert cpu_fallback_problem(_parsed("notable")) == (
        "2 operations would run on the CPU, not the Edge TPU (the compiler printed no per-operator table; "
        "see its .log)")
    assert cpu_fallback_problem({"ops_on_cpu": 0, "cpu_fallback_ops": []}) is None


def test_compile_summary_lists_operators_and_memory():
    text = format_compile_summary(_parsed("cpu"), "out/m_edgetpu.tflite")
    lines = text.splitlines()
    assert lines[0] == "edgetpu_compiler 2.1.302470888: compiled in 41 ms -> out/m_edgetpu.tflite"
    assert lines[1] == "  operations: 3 total, 1 on the Edge TPU, 2 on the CPU; 1 Edge TPU subgraph"
    assert "1.75 KiB used (7.97 MiB left), off-chip (streamed): 0 B" in lines[2]
    assert lines[4].split()[:3] == ["FULLY_CONNECTED", "0", "1"]  # CPU rows first
    assert lines[-1].split() == ["CONV_2D", "1", "0"]


# --------------------------------------------------------------------- real: missing


def test_missing_compiler_says_how_to_install_it(bench_models, tmp_path):
    if shutil.which("edgetpu_compiler"):
        pytest.skip("edgetpu_compiler is installed here")
    proc = _cli("compile", str(bench_models["int8"]), "--target", "edgetpu", "--out", str(tmp_path))
    assert_one_line_error(proc, 6, "edgetpu_compiler not found", "apt-get install edgetpu-compiler",
                          "x86-64 Linux only")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- fake compiler


@pytest.fixture
def fake_compiler(tmp_path):
    """Returns env for a CLI run with the fake compiler first on PATH.

    ``env()`` lets the fake print and log what it generates from the model; ``env(kind)``
    makes it print ``LOGS[kind]`` (published real logs) and write ``LOG_FILE`` as its log;
    ``mode`` is ``FAKE_EDGETPU_MODE`` (see the fake's docstring).
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "edgetpu_compiler"
    script.write_text(f"#!/bin/sh\nexec '{sys.executable}' '{FAKE_COMPILER}' \"$@\"\n")
    script.chmod(0o755)
    (tmp_path / "logfile.txt").write_text(LOG_FILE)

    def env(kind: str | None = None, mode: str = "compile") -> dict:
        out = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_EDGETPU_")}
        out.update(PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_EDGETPU_MODE=mode)
        if kind is not None:
            log = tmp_path / f"{kind}.txt"
            log.write_text(LOGS[kind])
            out.update(FAKE_EDGETPU_LOG=str(log), FAKE_EDGETPU_LOGFILE=str(tmp_path / "logfile.txt"))
        return out

    return env


def _use(monkeypatch, env: dict) -> None:
    """Make an in-process compile_edgetpu() see ``env``'s PATH and FAKE_EDGETPU_* settings."""
    for key in [k for k in os.environ if k.startswith("FAKE_EDGETPU_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key == "PATH" or key.startswith("FAKE_EDGETPU_"):
            monkeypatch.setenv(key, value)


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGECNN, *args], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)


OUTPUTS = ["tiny_int8_edgetpu.json", "tiny_int8_edgetpu.log", "tiny_int8_edgetpu.tflite"]


def test_compile_writes_an_edgetpu_model_its_report_and_log(fake_compiler, bench_models, tmp_path):
    from edgecnn.tflite.reader import inspect_tflite
    from edgecnn.fileio import sha256_file

    out = tmp_path / "out"
    proc = _cli("compile", str(bench_models["int8"]), "--target", "edgetpu", "--out", str(out), env=fake_compiler())
    assert proc.returncode == 0, proc.stderr
    assert "operations: 3 total, 3 on the Edge TPU, 0 on the CPU; 1 Edge TPU subgraph" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS  # no .tmp- leftovers
    source, compiled = inspect_tflite(bench_models["int8"]), inspect_tflite(out / "tiny_int8_edgetpu.tflite")
    assert source.op_counts == {"CONV_2D": 1, "RESHAPE": 1, "FULLY_CONNECTED": 1}
    assert compiled.op_counts == {"edgetpu-custom-op": 1} and compiled.custom_ops == ("edgetpu-custom-op",)
    assert compiled.inputs == source.inputs and compiled.outputs == source.outputs
    report = json.loads((out / "tiny_int8_edgetpu.json").read_text())
    assert report["compiler_version"] == "16.0.384591198" and report["cpu_fallback_ops"] == []
    assert report["ops_by_operator"] == {op: {"tpu": 1, "cpu": 0} for op in source.op_counts}
    assert report["output_model"] == "tiny_int8_edgetpu.tflite"
    assert report["operation_log"] == "tiny_int8_edgetpu.log"
    assert report["source_model"] == str(bench_models["int8"])
    assert report["files"] == {name: sha256_file(out / name) for name in OUTPUTS[1:]}


def test_a_compiler_output_without_the_edgetpu_op_is_refused(fake_compiler, bench_models, tmp_path):
    """A compiler that maps nothing (here: one that copies its input) must not yield an *_edgetpu.tflite."""
    out = tmp_path / "out"
    proc = _cli("compile", str(bench_models["int8"]), "--out", str(out), env=fake_compiler(mode="copy"))
    assert_one_line_error(proc, 4, "tiny_int8.tflite: ", "produced no Edge TPU op", "no edgetpu-custom-op",
                          "full-integer int8")
    assert list(out.iterdir()) == []  # no model, log or report: nothing that looks deployable
    # With the compiler's per-operator reasons, the line says why nothing was mapped.
    proc = _cli("compile", str(bench_models["int8"]), "--out", str(out), env=fake_compiler("cpu", mode="copy"))
    assert_one_line_error(proc, 4, "produced no Edge TPU op", "2 operations would run on the CPU",
                          "FULLY_CONNECTED x1 (More than one subgraph is not supported)")
    assert list(out.iterdir()) == []
    proc = _cli("compile", str(bench_models["int8"]), "--out", str(out), env=fake_compiler(mode="truncate"))
    assert_one_line_error(proc, 4, "wrote an output that is not a valid TFLite model", "--version")
    assert list(out.iterdir()) == []


def test_fail_on_cpu_ops_names_the_ops_and_writes_no_model(fake_compiler, bench_models, tmp_path):
    out = tmp_path / "out"
    proc = _cli("compile", str(bench_models["int8"]), "--target", "edgetpu", "--out", str(out),
                "--fail-on-cpu-ops", env=fake_compiler("cpu"))
    assert_one_line_error(proc, 4, "2 operations would run on the CPU", "FULLY_CONNECTED x1", "RESHAPE x1",
                          "--fail-on-cpu-ops")
    assert sorted(p.name for p in out.iterdir()) == ["tiny_int8_edgetpu.json"]
    # Without the flag the same model compiles, and the summary shows where ops run.
    proc = _cli("compile", str(bench_models["int8"]), "--out", str(out), env=fake_compiler("cpu"))
    assert proc.returncode == 0, proc.stderr
    assert "1 on the Edge TPU, 2 on the CPU" in proc.stdout and sorted(p.name for p in out.iterdir()) == OUTPUTS
    # Refused again: the earlier compile's model must not stay next to a report that refuses it.
    proc = _cli("compile", str(bench_models["int8"]), "--out", str(out), "--fail-on-cpu-ops",
                env=fake_compiler("cpu"))
    assert proc.returncode == 4, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["tiny_int8_edgetpu.json"]


def test_operator_table_comes_from_the_log_file_when_stdout_has_none(fake_compiler, bench_models, tmp_path,
                                                                     monkeypatch):
    _use(monkeypatch, fake_compiler("notable"))
    result = compile_edgetpu(bench_models["int8"], tmp_path / "out")
    assert result.parsed["has_operator_table"] is True
    assert result.parsed["ops_by_operator"]["RESHAPE"] == {"tpu": 0, "cpu": 1}
    assert result.parsed["cpu_fallback_ops"] == ["FULLY_CONNECTED", "RESHAPE"]
    assert result.model.is_file() and result.log.is_file()


def test_compiler_failure_and_compiled_input_are_one_line(fake_compiler, bench_models, tmp_path):
    out = tmp_path / "out"
    proc = _cli("compile", str(bench_models["int8"]), "--out", str(out), env=fake_compiler("fail"))
    assert_one_line_error(proc, 4, "could not compile it (Internal compiler error. Aborting!)")
    assert list(out.iterdir()) == []
    proc = _cli("compile", str(bench_models["edgetpu"]), "--out", str(out), env=fake_compiler())
    assert_one_line_error(proc, 4, "already compiled for the Edge TPU")


@pytest.mark.parametrize("mode", ["compile", "strip-metadata"])
def test_metadata_survives_the_compile(mode, fake_compiler, bench_models, tmp_path, monkeypatch):
    """The source carries labels and normalization. The default fake keeps the TFLITE_METADATA
    entry but loses the packed labels (it re-packs the flatbuffer); strip-metadata drops it all."""
    from edgecnn.tflite.metadata import read_metadata, write_metadata

    source = tmp_path / "labelled_int8.tflite"
    write_metadata(bench_models["int8"], ["left", "middle", "right"], ((0.0,), (255.0,)), input_color="GRAYSCALE",
                   out=source)
    _use(monkeypatch, fake_compiler(mode=mode))
    result = compile_edgetpu(source, tmp_path / "out")
    assert read_metadata(result.model) == read_metadata(source)
    assert read_metadata(result.model)["labels"] == ["left", "middle", "right"]


# ------------------------------------------------------------- the output folder


@pytest.mark.parametrize("name", OUTPUTS)
def test_a_file_edgecnn_did_not_write_is_never_overwritten(name, fake_compiler, bench_models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    mine = out / name
    mine.write_text('{"my": "own file"}\n')
    proc = _cli("compile", str(bench_models["int8"]), "--out", str(out), env=fake_compiler())
    assert_one_line_error(proc, 7, str(mine), "is not the output of an earlier edgecnn compile",
                          "edgecnn never overwrites what it did not write")
    assert mine.read_text() == '{"my": "own file"}\n'
    assert [p.name for p in out.iterdir()] == [name]  # nothing else written either


def test_a_folder_or_link_with_an_output_name_is_refused(fake_compiler, bench_models, tmp_path):
    out = tmp_path / "out"
    (out / "tiny_int8_edgetpu.tflite").mkdir(parents=True)
    proc = _cli("compile", str(bench_models["int8"]), "--out", str(out), env=fake_compiler())
    assert_one_line_error(proc, 7, "tiny_int8_edgetpu.tflite: exists and is not a file edgecnn wrote")
    elsewhere = tmp_path / "elsewhere.log"
    elsewhere.write_text("keep me\n")
    (out / "tiny_int8_edgetpu.tflite").rmdir()
    (out / "tiny_int8_edgetpu.log").symlink_to(elsewhere)
    proc = _cli("compile", str(bench_models["int8"]), "--out", str(out), env=fake_compiler())
    assert_one_line_error(proc, 7, "tiny_int8_edgetpu.log: exists and is not a file edgecnn wrote")
    assert elsewhere.read_text() == "keep me\n" and [p.name for p in out.iterdir()] == ["tiny_int8_edgetpu.log"]


def test_an_earlier_compile_is_replaced_but_not_an_edited_output(fake_compiler, bench_models, tmp_path):
    out = tmp_path / "out"
    for _ in range(2):
        proc = _cli("compile", str(bench_models["int8"]), "--out", str(out), env=fake_compiler())
        assert proc.returncode == 0, proc.stderr
        assert sorted(p.name for p in out.iterdir()) == OUTPUTS
    # A report from before sha256 were recorded still marks its files as edgecnn's.
    report = out / "tiny_int8_edgetpu.json"
    legacy = json.loads(report.read_text())
    del legacy["files"]
    report.write_text(json.dumps(legacy))
    proc = _cli("compile", str(bench_models["int8"]), "--out", str(out), env=fake_compiler())
    assert proc.returncode == 0, proc.stderr
    assert "files" in json.loads(report.read_text())
    # A compiled model the user changed afterwards is theirs now.
    log = out / "tiny_int8_edgetpu.log"
    log.write_text(log.read_text() + "my notes\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = _cli("compile", str(bench_models["int8"]), "--out", str(out), env=fake_compiler())
    assert_one_line_error(proc, 7, str(log), "changed since edgecnn wrote it")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_cli_target_choices_match_the_table():
    from edgecnn.cli import compile_command
    from edgecnn.export.edgetpu import COMPILE_TARGETS

    option = next(p for p in compile_command.params if p.name == "target")
    assert tuple(option.type.choices) == COMPILE_TARGETS
