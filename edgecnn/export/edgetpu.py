"""Compile a full-integer ``.tflite`` for the Coral Edge TPU with Google's ``edgetpu_compiler``.

The compiler is a closed-source x86-64 Linux binary from the Coral apt repository
(package ``edgetpu-compiler``); edgecnn never installs it. :func:`compile_edgetpu` runs
``edgetpu_compiler -s -o TMPDIR MODEL`` in a temporary folder inside the output folder,
parses its report with :func:`~edgecnn.tool_output.parse_edgetpu_compiler_log`, checks
with the bounded flatbuffer reader that the output really holds the ``edgetpu-custom-op``
(a compiler that maps nothing, or a stand-in that copies its input, is refused), and
moves ``<name>_edgetpu.tflite`` (and the compiler's ``<name>_edgetpu.log``) into place
with an atomic rename, next to the parsed report ``<name>_edgetpu.json``, which records
the sha256 of each file written. TFLite metadata (labels, normalization) of the source
model is carried over when the compiled model lacks it or lost part of it.

The output folder may be any folder of the user's: edgecnn writes only those three
names, and replaces one only when it is the output of an earlier compile there (the
earlier report names it and, for the model and log, records its sha256); any other file
of that name is refused with one line, never overwritten.

Operations the Edge TPU cannot run fall back to the CPU (and split the graph into
several Edge TPU subgraphs). :func:`cpu_fallback_problem` is the pure policy behind
``--fail-on-cpu-ops``: with it, a model with any CPU operation is refused and only the
JSON report is written, so nothing that looks like a deployable model is left behind.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgecnn.errors import FilesystemError, MissingDependencyError, ModelFileError
from edgecnn.fileio import sha256_file, write_json_atomic

__all__ = ["COMPILE_TARGETS", "COMPILER", "EdgeTpuCompileResult", "compiler_identity", "find_edgetpu_compiler",
           "cpu_fallback_problem", "format_compile_summary", "compile_edgetpu"]

COMPILE_TARGETS = ("edgetpu",)
COMPILER = "edgetpu_compiler"
INSTALL_HINT = ("install it from the Coral apt repository: add 'deb https://packages.cloud.google.com/apt "
                "coral-edgetpu-stable main' and run 'sudo apt-get install edgetpu-compiler' "
                "(x86-64 Linux only; see https://coral.ai/docs/edgetpu/compiler/)")
_COMPILE_TIMEOUT_S = 600.0  # the compiler's own per-segment limit is 180 s


@dataclass(frozen=True)
class EdgeTpuCompileResult:
    """What :func:`compile_edgetpu` wrote.

    Attributes:
        model: the compiled ``<name>_edgetpu.tflite``.
        report: the parsed compiler report ``<name>_edgetpu.json``.
        log: the compiler's own operation log ``<name>_edgetpu.log``, or None when it
            wrote none.
        parsed: the parsed report (as in ``report``).
    """

    model: Path
    report: Path
    log: Path | None
    parsed: dict


def find_edgetpu_compiler() -> str:
    """The ``edgetpu_compiler`` on PATH.

    Raises:
        MissingDependencyError: it is not installed; the message says how, and that it
            exists for x86-64 Linux only.
    """
    found = shutil.which(COMPILER)
    if found:
        return found
    here = f"{platform.system()} {platform.machine()}"
    where = "" if (platform.system(), platform.machine()) == ("Linux", "x86_64") else \
        f" this machine is {here}, so compile on an x86-64 Linux host (or in Docker) instead;"
    raise MissingDependencyError(f"{COMPILER} not found on PATH;{where} {INSTALL_HINT}")


def compiler_identity() -> str | None:
    """What identifies the installed compiler's output: its version, or None when absent.

    The ``edgetpu`` build stage puts it into its cache key, so a new compiler re-compiles.
    The version is what ``edgetpu_compiler --version`` prints (a few milliseconds); a
    compiler that prints none is identified by the sha256 of its file instead (the
    Debian package's ``/usr/bin/edgetpu_compiler`` is the binary itself).
    """
    from edgecnn.process import run_process
    from edgecnn.tool_output import parse_edgetpu_compiler_log

    found = shutil.which(COMPILER)
    if not found:
        return None
    proc = run_process([found, "--version"], 30.0)
    version = parse_edgetpu_compiler_log(proc.stdout + "\n" + proc.stderr)["compiler_version"] \
        if proc.returncode == 0 else None
    return f"version {version}" if version else f"sha256 {sha256_file(Path(found).resolve())}"


def cpu_fallback_problem(parsed: dict) -> str | None:
    """Why a compiled model fails ``--fail-on-cpu-ops``, or None when every op is on the TPU.

    Args:
        parsed: from :func:`~edgecnn.tool_output.parse_edgetpu_compiler_log`.

    Returns:
        One line naming the operators that fall back to the CPU, with counts and the
        compiler's reasons; None when none do.
    """
    by_op = parsed.get("ops_by_operator") or {}
    fallback = [op for op in parsed.get("cpu_fallback_ops") or [] if op in by_op]
    on_cpu = parsed.get("ops_on_cpu")
    if on_cpu is None and fallback:
        on_cpu = sum(by_op[op]["cpu"] for op in fallback)
    if not on_cpu and not fallback:
        return None
    head = f"{on_cpu} operation{'s' if on_cpu != 1 else ''} would run on the CPU, not the Edge TPU"
    if not fallback:
        return head + " (the compiler printed no per-operator table; see its .log)"
    reasons = parsed.get("cpu_fallback_reasons") or {}
    parts = []
    for op in fallback:
        why = "; ".join(reasons.get(op, []))
        parts.append(f"{op} x{by_op[op]['cpu']}" + (f" ({why})" if why else ""))
    return f"{head}: {', '.join(parts)}"


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def format_compile_summary(parsed: dict, model: str | os.PathLike | None = None) -> str:
    """A few lines for people: ops on the TPU vs the CPU by operator, subgraphs, memory."""
    version = parsed.get("compiler_version") or "?"
    took = f" in {parsed['compile_ms']:g} ms" if parsed.get("compile_ms") is not None else ""
    lines = [f"edgetpu_compiler {version}: compiled{took}" + (f" -> {model}" if model else "")]
    tpu, cpu, total = parsed.get("ops_on_tpu"), parsed.get("ops_on_cpu"), parsed.get("total_ops")
    subgraphs = parsed.get("subgraphs")
    lines.append(f"  operations: {total if total is not None else '?'} total, "
                 f"{tpu if tpu is not None else '?'} on the Edge TPU, {cpu if cpu is not None else '?'} on the CPU"
                 + (f"; {subgraphs} Edge TPU subgraph{'s' if subgraphs != 1 else ''}" if subgraphs is not None else ""))
    remaining = parsed.get("on_chip_memory_remaining_bytes")
    lines.append(f"  on-chip memory for parameters: {_size(parsed.get('on_chip_memory_used_bytes'))} used"
                 + (f" ({_size(remaining)} left)" if remaining is not None else "")
                 + f", off-chip (streamed): {_size(parsed.get('off_chip_memory_used_bytes'))}")
    by_op = parsed.get("ops_by_operator") or {}
    if by_op:
        reasons = parsed.get("cpu_fallback_reasons") or {}
        width = max(len("operator"), *(len(op) for op in by_op))
        lines.append(f"  {'operator':<{width}}  {'tpu':>5}  {'cpu':>5}  why not on the TPU")
        for op, counts in sorted(by_op.items(), key=lambda kv: (-kv[1]["cpu"], kv[0])):
            why = "; ".join(reasons.get(op, []))
            lines.append(f"  {op:<{width}}  {counts['tpu']:>5}  {counts['cpu']:>5}  {why}".rstrip())
    return "\n".join(lines)


def compile_edgetpu(model: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                    fail_on_cpu_ops: bool = False, timeout_s: float = _COMPILE_TIMEOUT_S) -> EdgeTpuCompileResult:
    """Compile ``model`` for the Edge TPU.

    Args:
        model: a full-integer int8 ``.tflite`` (e.g. ``student_int8.tflite``).
        out_dir: where to write (default: the model's folder).
        fail_on_cpu_ops: refuse a model with any operation left on the CPU.
        timeout_s: limit for the compiler process.

    Returns:
        The paths written and the parsed report.

    Raises:
        MissingDependencyError: ``edgetpu_compiler`` is not installed.
        ModelFileError: ``model`` is not a TFLite file, is already compiled, has float
            weights, the compiler fails or its output holds no ``edgetpu-custom-op``, or
            (with ``fail_on_cpu_ops``) ops fall back to the CPU -- one line each, naming
            the fix.
        FilesystemError: an output name in ``out_dir`` is taken by a file an earlier
            compile there did not write.
    """
    from edgecnn.tflite.reader import is_edgetpu_model
    from edgecnn.tool_output import parse_edgetpu_compiler_log
    from edgecnn.process import last_line, run_process
    from edgecnn.tflite.reader import inspect_tflite

    compiler = find_edgetpu_compiler()
    model = Path(model)
    summary = inspect_tflite(model)
    if is_edgetpu_model(summary):
        raise ModelFileError(f"{model}: already compiled for the Edge TPU (it contains edgetpu-custom-op); "
                             f"compile the int8 .tflite it was made from")
    if summary.weight_dtypes and not summary.weights_int8:
        raise ModelFileError(f"{model}: conv/FC weights are {', '.join(summary.weight_dtypes)}, not int8; the Edge "
                             f"TPU needs a full-integer model: compile student_int8.tflite")
    out = Path(out_dir) if out_dir is not None else model.parent
    out.mkdir(parents=True, exist_ok=True)
    stem = model.stem
    targets = {"model": out / f"{stem}_edgetpu.tflite", "log": out / f"{stem}_edgetpu.log",
               "report": out / f"{stem}_edgetpu.json"}
    previous = _check_replaceable(targets)

    # ".tmp-" like every partial file: clean_stale_temporaries removes a killed run's folder.
    # Absolute: the compiler runs inside it (cwd) and is told to write there (-o), so a
    # relative path would resolve twice (runs/x/.tmp-edgetpu.N/runs/x/.tmp-edgetpu.N).
    work = Path(tempfile.mkdtemp(prefix=".tmp-edgetpu.", dir=out.resolve()))
    try:
        proc = run_process([compiler, "-s", "-o", str(work), str(model.resolve())], timeout_s, cwd=work)
        if proc.timed_out:
            raise ModelFileError(f"{model}: {COMPILER} did not finish within {timeout_s:g} s; try a smaller "
                                 f"model, or compile by hand to see where it stops")
        parsed = parse_edgetpu_compiler_log(proc.stdout + "\n" + proc.stderr)
        produced = work / f"{stem}_edgetpu.tflite"
        log_file = work / f"{stem}_edgetpu.log"
        if proc.returncode != 0 or not produced.is_file() or parsed["compiled"] is False:
            why = (parsed["errors"] or [last_line(proc.stderr) or last_line(proc.stdout)
                                        or f"exit status {proc.returncode}"])[0]
            raise ModelFileError(f"{model}: {COMPILER} could not compile it ({why}); the Edge TPU needs a "
                                 f"full-integer int8 model with supported ops (https://coral.ai/docs/edgetpu/models-intro/)")
        if not parsed["has_operator_table"] and log_file.is_file():
            # Without the table on stdout, the per-operator rows come from the log file.
            table = parse_edgetpu_compiler_log(log_file.read_text(encoding="utf-8", errors="replace"))
            for key in ("operators", "ops_by_operator", "cpu_fallback_ops", "cpu_fallback_reasons",
                        "has_operator_table"):
                parsed[key] = table[key]
        _require_edgetpu_op(produced, model, compiler, parsed)
        _carry_metadata(model, produced)
        parsed["source_model"] = str(model)
        parsed["output_model"] = targets["model"].name
        parsed["operation_log"] = targets["log"].name if log_file.is_file() else None
        problem = cpu_fallback_problem(parsed) if fail_on_cpu_ops else None
        if problem:
            # Only the report is written; an earlier compile's model would look deployable.
            parsed["files"] = {}
            report = write_json_atomic(targets["report"], parsed)
            for key in ("model", "log"):
                if targets[key].name in previous:
                    targets[key].unlink(missing_ok=True)
            raise ModelFileError(f"{model}: {problem}; --fail-on-cpu-ops refuses it (report: {report})")
        written = {targets["model"].name: sha256_file(produced)}
        if log_file.is_file():
            written[targets["log"].name] = sha256_file(log_file)
        parsed["files"] = written  # sha256 of what this compile wrote: a later one may replace them
        report = write_json_atomic(targets["report"], parsed)
        os.replace(produced, targets["model"])  # same folder tree: atomic
        log_path = None
        if log_file.is_file():
            os.replace(log_file, targets["log"])
            log_path = targets["log"]
        elif targets["log"].name in previous:
            targets["log"].unlink(missing_ok=True)  # an earlier compile's log would describe another model
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return EdgeTpuCompileResult(targets["model"], report, log_path, parsed)


def _require_edgetpu_op(produced: Path, model: Path, compiler: str, parsed: dict) -> None:
    """Refuse a compiler output that is not a TFLite model holding the ``edgetpu-custom-op``.

    A compiler that could map no operation (or a stand-in that copies its input) writes a
    file that runs entirely on the CPU; shipping it as ``*_edgetpu.tflite`` would be a lie.
    The message carries the compiler's reasons per operator when it printed them.
    """
    from edgecnn.tflite.reader import EDGETPU_CUSTOM_OP, is_edgetpu_model
    from edgecnn.tflite.reader import inspect_tflite

    try:
        summary = inspect_tflite(produced)
    except ModelFileError as exc:
        detail = str(exc).removeprefix(f"{produced}: ").split(";")[0]
        raise ModelFileError(f"{model}: {compiler} wrote an output that is not a valid TFLite model ({detail}); "
                             f"check that it is Google's {COMPILER} ('{COMPILER} --version')") from None
    if not is_edgetpu_model(summary):
        problem = cpu_fallback_problem(parsed)
        raise ModelFileError(f"{model}: {compiler} produced no Edge TPU op (its output has no {EDGETPU_CUSTOM_OP}, "
                             f"so every operation would run on the CPU{'; ' + problem if problem else ''}); "
                             f"the Edge TPU needs a full-integer int8 "
                             f"model with static shapes and supported ops "
                             f"(https://coral.ai/docs/edgetpu/models-intro/), compiled by Google's {COMPILER}")


def _carry_metadata(model: Path, produced: Path) -> None:
    """Give the compiled model the source's metadata unless it kept all of it.

    Compilers that re-pack the flatbuffer may keep the ``TFLITE_METADATA`` entry but lose
    the labels packed after it, so "has metadata" is not enough: compare what is read.
    """
    from edgecnn.tflite.metadata import copy_metadata, has_metadata, read_metadata

    if not has_metadata(model):
        return
    try:
        kept = read_metadata(produced) == read_metadata(model)
    except ModelFileError:
        kept = False  # the entry is there but its labels are not: copy it whole
    if not kept:
        copy_metadata(model, produced)  # labels and normalization survive the compile


def _check_replaceable(targets: dict[str, Path]) -> set[str]:
    """Names among ``targets`` that exist and an earlier compile here wrote; refuse any other.

    Returns:
        The existing file names that may be replaced (or removed).

    Raises:
        FilesystemError: a target name exists and is not an earlier compile's output.
    """
    import json

    report = targets["report"]
    previous: dict | None = None
    if report.is_file() and not report.is_symlink():
        try:
            data = json.loads(report.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            data = None
        if isinstance(data, dict) and data.get("output_model") == targets["model"].name and "source_model" in data:
            previous = data
    replaceable: set[str] = set()
    for key in ("report", "model", "log"):
        path = targets[key]
        if not (path.exists() or path.is_symlink()):
            continue
        ok = previous is not None and path.is_file() and not path.is_symlink()
        if ok and key != "report":
            files = previous.get("files")
            if isinstance(files, dict):
                ok = files.get(path.name) == sha256_file(path)
            else:  # a report from before sha256 were recorded: trust the names it gives
                ok = path.name in (previous.get("output_model"), previous.get("operation_log"))
        if not ok:
            if not path.is_file() or path.is_symlink():
                why = "is not a file edgecnn wrote"
            elif key == "report" or previous is None:
                why = f"is not the output of an earlier edgecnn compile ({report.name} does not record it)"
            else:
                why = f"has changed since edgecnn wrote it (its sha256 is not the one {report.name} records)"
            raise FilesystemError(f"{path}: exists and {why}; move it away or choose another --out "
                                  f"(edgecnn never overwrites what it did not write)")
        replaceable.add(path.name)
    return replaceable
