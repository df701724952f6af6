"""``edgecnn compile --target edgetpu``: the missing-compiler path (real: edgetpu_compiler is
not installed here), the --fail-on-cpu-ops policy on parsed logs (pure), and the whole
command through a fake ``edgetpu_compiler``.

No real compiler can be installed on this machine (it is not in Debian, it comes from
Google's Coral apt repository, and there is no network), so the end-to-end tests put a
FAKE compiler first on PATH; see ``FAKE_COMPILER``'s docstring.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_one_line_error

from edgecnn.bench.parsers import parse_edgetpu_compiler_log
from edgecnn.export.edgetpu import compile_edgetpu, cpu_fallback_problem, format_compile_summary

REPO = Path(__file__).resolve().parents[1]
EDGECNN = [sys.executable, "-m", "edgecnn.cli"]

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

FAKE_COMPILER = '''\
#!{python}
"""FAKE edgetpu_compiler, for tests only: the real one cannot be installed here. It takes
the real command line (-s -o OUTDIR MODEL), prints the log given in $FAKE_EDGETPU_LOG
(real compiler formats, see test_compile.py) and, unless the log is a failure, copies the
model (or $FAKE_EDGETPU_OUTPUT) to OUTDIR/<name>_edgetpu.tflite and writes OUTDIR/<name>_edgetpu.log from
$FAKE_EDGETPU_LOGFILE, as the real compiler does."""
import os, shutil, sys
args = sys.argv[1:]
assert args[0] == "-s" and args[1] == "-o", args
out, model = args[2], args[3]
stem = os.path.splitext(os.path.basename(model))[0]
fill = dict(model=model, out=out, stem=stem)
text = open(os.environ["FAKE_EDGETPU_LOG"]).read().format(**fill)
sys.stdout.write(text)
if "Internal compiler error" in text:
    sys.exit(1)
shutil.copy(os.environ.get("FAKE_EDGETPU_OUTPUT") or model, os.path.join(out, stem + "_edgetpu.tflite"))
with open(os.path.join(out, stem + "_edgetpu.log"), "w") as fh:
    fh.write(open(os.environ["FAKE_EDGETPU_LOGFILE"]).read().format(**fill))
'''


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
    """Returns env for a CLI run with the fake compiler first on PATH, given a log kind."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "edgetpu_compiler"
    script.write_text(FAKE_COMPILER.format(python=sys.executable))
    script.chmod(0o755)
    (tmp_path / "logfile.txt").write_text(LOG_FILE)

    def env(kind: str) -> dict:
        log = tmp_path / f"{kind}.txt"
        log.write_text(LOGS[kind])
        return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_EDGETPU_LOG": str(log),
                "FAKE_EDGETPU_LOGFILE": str(tmp_path / "logfile.txt")}

    return env


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGECNN, *args], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)


def test_compile_writes_model_report_and_log(fake_compiler, bench_models, tmp_path):
    out = tmp_path / "out"
    proc = _cli("compile", str(bench_models["int8"]), "--target", "edgetpu", "--out", str(out),
                env=fake_compiler("all"))
    assert proc.returncode == 0, proc.stderr
    assert "operations: 3 total, 3 on the Edge TPU, 0 on the CPU; 1 Edge TPU subgraph" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["tiny_int8_edgetpu.json", "tiny_int8_edgetpu.log",
                                                      "tiny_int8_edgetpu.tflite"]  # no .tmp- leftovers
    assert (out / "tiny_int8_edgetpu.tflite").read_bytes() == bench_models["int8"].read_bytes()
    report = json.loads((out / "tiny_int8_edgetpu.json").read_text())
    assert report["compiler_version"] == "16.0.384591198" and report["cpu_fallback_ops"] == []
    assert report["output_model"] == "tiny_int8_edgetpu.tflite"
    assert report["operation_log"] == "tiny_int8_edgetpu.log"
    assert report["source_model"] == str(bench_models["int8"])


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
    assert "1 on the Edge TPU, 2 on the CPU" in proc.stdout and (out / "tiny_int8_edgetpu.tflite").is_file()


def test_operator_table_comes_from_the_log_file_when_stdout_has_none(fake_compiler, bench_models, tmp_path,
                                                                     monkeypatch):
    env = fake_compiler("notable")
    monkeypatch.setenv("PATH", env["PATH"])
    for key in ("FAKE_EDGETPU_LOG", "FAKE_EDGETPU_LOGFILE"):
        monkeypatch.setenv(key, env[key])
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
    proc = _cli("compile", str(bench_models["edgetpu"]), "--out", str(out), env=fake_compiler("all"))
    assert_one_line_error(proc, 4, "already compiled for the Edge TPU")


def test_metadata_survives_a_compiler_that_drops_it(fake_compiler, bench_models, tmp_path, monkeypatch):
    """The source carries labels and normalization; the "compiled" file (the bare model) has none."""
    from edgecnn.export.metadata import has_metadata, read_metadata, write_metadata

    source = tmp_path / "labelled_int8.tflite"
    write_metadata(bench_models["int8"], ["left", "middle", "right"], ((0.0,), (255.0,)), input_color="GRAYSCALE",
                   out=source)
    env = fake_compiler("all")
    for key in ("PATH", "FAKE_EDGETPU_LOG", "FAKE_EDGETPU_LOGFILE"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("FAKE_EDGETPU_OUTPUT", str(bench_models["int8"]))
    assert not has_metadata(bench_models["int8"])
    result = compile_edgetpu(source, tmp_path / "out")
    assert read_metadata(result.model)["labels"] == ["left", "middle", "right"]


def test_cli_target_choices_match_the_table():
    from edgecnn.cli import compile_command
    from edgecnn.export.edgetpu import COMPILE_TARGETS

    option = next(p for p in compile_command.params if p.name == "target")
    assert tuple(option.type.choices) == COMPILE_TARGETS
