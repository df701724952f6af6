"""Pure parsers of other tools' text output: TFLite ``benchmark_model`` and ``edgetpu_compiler``.

Nothing here runs a process; the transports hand the captured text in. Both tools'
formats were taken from their sources and published logs:

* ``benchmark_model`` (tensorflow/lite/tools/benchmark/benchmark_model.cc): each of the
  warm-up and regular phases prints one ``Stat`` line
  ``count=50 first=… curr=… min=… max=… avg=… std=…`` (newer builds append
  ``p5=… median=… p95=…``), then ``Inference timings in us: Init: …, First inference:
  …, Warmup (avg): …, Inference (avg): …`` and memory lines. Numbers are printed by a
  C++ stream, so large values appear in exponent notation (``avg=2.95034e+06``). With
  ``--enable_op_profiling`` a profiler summary repeats ``Timings (microseconds):
  count=…`` lines, which are not the benchmark's figures. On Android the lines may carry
  a logcat prefix (``… I tflite  : ``) and CR line ends.
* ``edgetpu_compiler`` (https://coral.ai/docs/edgetpu/compiler/): a summary block
  (``Model compiled successfully in N ms.``, input/output model and size, on-chip and
  off-chip parameter memory, ``Number of Edge TPU subgraphs``, ``Total number of
  operations``), optionally ``Number of operations that will run on Edge TPU/CPU`` and
  an ``Operator  Count  Status`` table (printed with ``-s``, and always written to the
  ``*_edgetpu.log`` file). A segmented compile (``-n``) or a delegate search (``-d``)
  prints several blocks.
"""

from __future__ import annotations

import re

from edgecnn.errors import DeviceError

__all__ = ["parse_number", "parse_byte_size", "parse_benchmark_model", "parse_edgetpu_compiler_log"]

# A C++ stream number: 1234, 1100.5, 1.23457e+06, -3, .5
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NUM_RE = re.compile(rf"^{_NUM}$")
_KV = re.compile(rf"\b([A-Za-z][A-Za-z0-9_]*)=({_NUM})(?=\s|$|,)")

_BYTE_UNITS = {
    "B": 1,
    "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3, "TiB": 1024 ** 4,
    "KB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3, "TB": 1000 ** 4,
    "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3,
}


def parse_number(text: str) -> float:
    """Parse a number as a C++ stream prints it, exponent notation included.

    Raises:
        ValueError: ``text`` is not a number.
    """
    t = text.strip()
    if not _NUM_RE.match(t):
        raise ValueError(f"not a number: {text!r}")
    return float(t)


def parse_byte_size(text: str) -> int:
    """``"4.50KiB"`` / ``"1.23MiB"`` / ``"0.00B"`` / ``"12 KB"`` -> bytes (rounded).

    Raises:
        ValueError: not a size with a known unit.
    """
    m = re.fullmatch(rf"\s*({_NUM})\s*([KMGT]?i?B|[KMG])\s*", text)
    if not m or m.group(2) not in _BYTE_UNITS:
        raise ValueError(f"not a byte size: {text!r}")
    return int(round(float(m.group(1)) * _BYTE_UNITS[m.group(2)]))


# ------------------------------------------------------------------- benchmark_model

_STAT_LINE = re.compile(rf"(?:^|[\s:])count=({_NUM})\b(.*)$")
_PROFILER_PREFIX = re.compile(r"(Timings \(microseconds\)|Memory \(bytes\)):\s*count=")
_SUMMARY = re.compile(
    rf"Inference timings in us:\s*Init:\s*({_NUM}),\s*First inference:\s*({_NUM}),\s*"
    rf"Warmup \(avg\):\s*({_NUM}),\s*Inference \(avg\):\s*({_NUM})")
_OLD_SUMMARY = re.compile(  # benchmark_model before ~2019: "Average inference timings in us: …"
    rf"Average inference timings in us:\s*Warmup:\s*({_NUM}),\s*Init:\s*({_NUM}),\s*Inference:\s*({_NUM})")
_MEM_DELTA = re.compile(
    rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\):\s*"
    rf"init=({_NUM})\s+overall=({_NUM})")
_MEM_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring:\s*({_NUM})")
_VMRSS = re.compile(rf"-\s*VmRSS\s*:\s*({_NUM})\s*MB")
_INIT_SESSION = re.compile(rf"Initialized session in\s*({_NUM})\s*ms")
_DELEGATED = re.compile(r"Replacing (\d+) out of (\d+) node\(s\) with delegate \(([^)]+)\)")
_FAILURE_MARKERS = ("Benchmarking failed", "Failed to apply", "ERROR:", "Aborted", "Segmentation fault")


def _lines(text: str) -> list[str]:
    return [ln.rstrip() for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]


def _stat_fields(line: str) -> dict[str, float] | None:
    """``count=… first=… …`` -> {"count": …, …}, or None when the line is not a Stat line."""
    if _PROFILER_PREFIX.search(line):
        return None
    m = _STAT_LINE.search(line)
    if not m:
        return None
    fields = {k: float(v) for k, v in _KV.findall("count=" + m.group(1) + m.group(2))}
    return fields if "count" in fields else None


def parse_benchmark_model(text: str) -> dict:
    """Map ``benchmark_model`` output onto the result schema's fields.

    Times become milliseconds. ``latency_ms.p50/p90/p99`` are filled only when the tool
    printed them (``median=`` -> p50, ``p90=``/``p99=`` when present); ``p5``/``p95``
    and the raw figures go to ``details``. ``peak_rss_kb`` comes from the periodic peak
    monitor (``--report_peak_memory_footprint``) or the VmRSS line; the footprint
    *deltas* are not RSS and stay in ``details``.

    Args:
        text: stdout and stderr of one ``benchmark_model`` run, as captured.

    Returns:
        A dict with the schema keys ``runs``, ``warmup``, ``init_ms``,
        ``first_inference_ms``, ``latency_ms``, ``throughput_ips``, ``peak_rss_kb`` and
        ``details`` (a dict of everything else parsed).

    Raises:
        DeviceError: the text holds no regular-run timings; the message quotes the
            tool's own error line when there is one.
    """
    lines = _lines(text)
    stats: list[tuple[int, dict[str, float]]] = []
    summary_at = None
    summary = None
    details: dict = {}
    peak_mb = None
    vmrss_mb = None
    for i, line in enumerate(lines):
        fields = _stat_fields(line)
        if fields is not None:
            stats.append((i, fields))
            continue
        m = _SUMMARY.search(line)
        if m and summary is None:
            summary_at, summary = i, [float(v) for v in m.groups()]
            continue
        m = _OLD_SUMMARY.search(line)
        if m and summary is None:
            warm, init, inference = (float(v) for v in m.groups())
            summary_at, summary = i, [init, None, warm, inference]
            continue
        m = _MEM_DELTA.search(line)
        if m:
            details["memory_init_mb"], details["memory_overall_mb"] = float(m.group(1)), float(m.group(2))
            continue
        m = _MEM_PEAK.search(line)
        if m:
            peak_mb = float(m.group(1))
            continue
        m = _VMRSS.search(line)
        if m:
            vmrss_mb = float(m.group(1))
            continue
        m = _INIT_SESSION.search(line)
        if m:
            details["initialized_session_ms"] = float(m.group(1))
            continue
        m = _DELEGATED.search(line)
        if m:
            details.setdefault("delegated", []).append(
                {"nodes": int(m.group(1)), "of": int(m.group(2)), "delegate": m.group(3)})

    # The regular run's Stat line is the last one before the summary line (the first is
    # the warm-up's); profiler summaries after it are excluded by _stat_fields.
    candidates = [s for i, s in stats if summary_at is None or i < summary_at]
    regular = candidates[-1] if candidates else None
    warmup = candidates[-2] if len(candidates) >= 2 else None
    if regular is None or "avg" not in regular:
        if summary is not None and summary[3] is not None:
            regular = {"avg": summary[3]}
        else:
            raise DeviceError("benchmark_model printed no timings"
                              + (f" ({_first_error(lines)})" if _first_error(lines) else "")
                              + "; check the model path on the device and the tool's flags")

    def ms(us):
        return None if us is None else us / 1000.0

    mean = ms(regular.get("avg"))
    lo = ms(regular.get("min", regular.get("avg")))
    hi = ms(regular.get("max", regular.get("avg")))
    latency = {
        "mean": mean,
        "std": ms(regular.get("std")),
        "min": lo,
        "p50": ms(regular.get("median", regular.get("p50"))),
        "p90": ms(regular.get("p90")),
        "p99": ms(regular.get("p99")),
        "max": hi,
    }
    for key in ("p5", "p95", "first", "curr"):
        if key in regular:
            details[f"{key}_ms"] = ms(regular[key])
    init_us, first_us, warm_avg_us, _ = summary if summary is not None else (None, None, None, None)
    if warm_avg_us is not None:
        details["warmup_avg_ms"] = ms(warm_avg_us)
    if vmrss_mb is not None:
        details["vmrss_mb"] = vmrss_mb
    if peak_mb is not None:
        details["peak_memory_mb"] = peak_mb
    peak_kb = peak_mb if peak_mb is not None else vmrss_mb
    return {
        "runs": int(regular["count"]) if "count" in regular else None,
        "warmup": int(warmup["count"]) if warmup and "count" in warmup else None,
        "init_ms": ms(init_us),
        "first_inference_ms": ms(first_us),
        "latency_ms": latency,
        "throughput_ips": 1000.0 / mean if mean else None,
        "peak_rss_kb": None if peak_kb is None else int(round(peak_kb * 1024)),
        "details": details,
    }


def _first_error(lines: list[str]) -> str | None:
    for line in lines:
        if any(marker in line for marker in _FAILURE_MARKERS):
            text = " ".join(line.split())
            return text if len(text) <= 200 else text[:197] + "..."
    return None


# ------------------------------------------------------------------- edgetpu_compiler

_COMPILED = re.compile(rf"Model compiled successfully in\s*({_NUM})\s*ms")
_VERSION = re.compile(r"Edge TPU Compiler version\s+(\S+)")
_SUMMARY_KEYS = {
    "Input model": ("input_model", str),
    "Input": ("input_model", str),
    "Input size": ("input_size_bytes", parse_byte_size),
    "Output model": ("output_model", str),
    "Output": ("output_model", str),
    "Output size": ("output_size_bytes", parse_byte_size),
    "On-chip memory used for caching model parameters": ("on_chip_memory_used_bytes", parse_byte_size),
    "On-chip memory remaining for caching model parameters": ("on_chip_memory_remaining_bytes", parse_byte_size),
    "On-chip memory available for caching model parameters": ("on_chip_memory_available_bytes", parse_byte_size),
    "Off-chip memory used for streaming uncached model parameters": ("off_chip_memory_used_bytes",
                                                                      parse_byte_size),
    "Number of Edge TPU subgraphs": ("subgraphs", int),
    "Total number of operations": ("total_ops", int),
    "Operation log": ("operation_log", str),
    "Number of operations that will run on Edge TPU": ("ops_on_tpu", int),
    "Number of operations that will run on CPU": ("ops_on_cpu", int),
}
_TABLE_HEADER = re.compile(r"^\s*Operator\s+Count\s+Status\s*$")
_TABLE_ROW = re.compile(r"^\s*(\S+)\s+(\d+)\s+(\S.*?)\s*$")
_MAPPED = "Mapped to Edge TPU"
_COMPILER_ERRORS = ("Internal compiler error", "Compilation failed", "ERROR:", "Invalid model",
                    "Model not quantized", "Didn't find op for builtin opcode")
_SUMMED = ("input_size_bytes", "output_size_bytes", "on_chip_memory_used_bytes",
           "off_chip_memory_used_bytes", "subgraphs", "total_ops", "ops_on_tpu", "ops_on_cpu")


def _parse_block(lines: list[str]) -> dict:
    """Summary values and the operator table of one compiled model."""
    block: dict = {"operators": []}
    in_table = False
    for line in lines:
        if _TABLE_HEADER.match(line):
            in_table = True
            continue
        if in_table:
            if not line.strip():
                continue  # the table has a blank line after its header
            m = _TABLE_ROW.match(line)
            if m and m.group(2).isdigit():
                status = m.group(3)
                block["operators"].append({"operator": m.group(1), "count": int(m.group(2)),
                                           "status": status, "on_tpu": status == _MAPPED})
                continue
            in_table = False  # first line that is not a row ends the table
        if ":" in line:
            key, _, value = line.partition(":")
            spec = _SUMMARY_KEYS.get(key.strip())
            if spec and value.strip():
                name, convert = spec
                try:
                    block[name] = convert(value.strip())
                except ValueError:
                    pass  # a value in a format this parser does not know: leave it out
        m = _COMPILED.search(line)
        if m:
            block["compile_ms"] = float(m.group(1))
    return block


def parse_edgetpu_compiler_log(text: str) -> dict:
    """Parse ``edgetpu_compiler`` stdout, or the ``*_edgetpu.log`` it writes.

    Operations on the Edge TPU vs the CPU come from the ``Number of operations that will
    run on …`` lines, else from the operator table; when neither is printed and the
    compiler reported no unmapped operations, every operation runs on the Edge TPU.

    Args:
        text: the compiler's output.

    Returns:
        A dict: ``compiler_version``, ``compiled`` (True/False; None when the text shows
        neither), ``compile_ms``, ``input_model``, ``output_model``,
        ``input_size_bytes``, ``output_size_bytes``, ``on_chip_memory_used_bytes``,
        ``on_chip_memory_remaining_bytes``, ``off_chip_memory_used_bytes``,
        ``subgraphs`` (Edge TPU subgraphs), ``total_ops``, ``ops_on_tpu``,
        ``ops_on_cpu``, ``operators`` (table rows: operator, count, status, on_tpu),
        ``ops_by_operator`` ({operator: {"tpu": n, "cpu": n}}), ``cpu_fallback_ops``
        (sorted operator names with any count on the CPU), ``cpu_fallback_reasons``
        ({operator: [status, ...]}), ``has_operator_table``, ``errors`` (the compiler's
        error lines) and ``segments`` (one summary per compiled block when there are
        several; totals are summed at the top level). Missing figures are None.
    """
    lines = _lines(text)
    version = next((m.group(1) for m in map(_VERSION.search, lines) if m), None)
    starts = [i for i, ln in enumerate(lines) if _COMPILED.search(ln)]
    if starts:
        # Each "Model compiled successfully" opens a block that runs to the next one.
        bounds = list(zip(starts, starts[1:] + [len(lines)]))
        blocks = [_parse_block(lines[a:b]) for a, b in bounds]
    else:
        blocks = [_parse_block(lines)]
    blocks = [b for b in blocks if len(b) > 1 or b["operators"]] or [blocks[0]]

    errors = []
    for line in lines:
        if any(marker in line for marker in _COMPILER_ERRORS):
            clean = " ".join(line.split())
            if clean not in errors:
                errors.append(clean)
    not_all_mapped = "not all operations are supported" in text

    out: dict = {
        "compiler_version": version,
        "compiled": True if starts or any(b["operators"] for b in blocks) else (False if errors else None),
    }
    for key in ("compile_ms", "input_model", "output_model", "on_chip_memory_remaining_bytes",
                "operation_log"):
        out[key] = blocks[0].get(key)
    for key in _SUMMED:
        values = [b[key] for b in blocks if key in b]
        out[key] = sum(values) if values else None
    if len(blocks) > 1:
        # Segments share the on-chip cache: remaining memory is per segment, not a total.
        out["on_chip_memory_remaining_bytes"] = None
        out["compile_ms"] = sum(b.get("compile_ms") or 0.0 for b in blocks)

    operators = [row for b in blocks for row in b["operators"]]
    by_op: dict[str, dict[str, int]] = {}
    reasons: dict[str, list[str]] = {}
    for row in operators:
        counts = by_op.setdefault(row["operator"], {"tpu": 0, "cpu": 0})
        counts["tpu" if row["on_tpu"] else "cpu"] += row["count"]
        if not row["on_tpu"] and row["status"] not in reasons.setdefault(row["operator"], []):
            reasons[row["operator"]].append(row["status"])
    reasons = {k: v for k, v in reasons.items() if v}

    if out["ops_on_tpu"] is None and operators:
        out["ops_on_tpu"] = sum(c["tpu"] for c in by_op.values())
    if out["ops_on_cpu"] is None and operators:
        out["ops_on_cpu"] = sum(c["cpu"] for c in by_op.values())
    if out["ops_on_tpu"] is None and out["total_ops"] is not None and starts and not not_all_mapped:
        out["ops_on_tpu"], out["ops_on_cpu"] = out["total_ops"], 0

    out.update(
        operators=operators,
        ops_by_operator=by_op,
        cpu_fallback_ops=sorted(op for op, c in by_op.items() if c["cpu"] > 0),
        cpu_fallback_reasons=reasons,
        has_operator_table=bool(operators),
        errors=errors,
        segments=[{k: v for k, v in b.items() if k != "operators"} for b in blocks] if len(blocks) > 1 else [],
    )
    return out
