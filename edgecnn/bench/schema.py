"""The benchmark result schema (host side): build, validate, store and compare results.

A result is a plain JSON object with the fields documented in
:mod:`edgecnn.runtime.runner` (schema ``edgecnn.bench/1``); every target -- local, SSH,
Coral, Android -- produces the same shape. Results that come back from a device are
untrusted: :func:`validate_result` checks every field's type and range and returns a
clean copy, so nothing malformed reaches a report or a comparison table.

Storage: :func:`append_result` keeps one JSON object per line in ``bench.jsonl`` in the
run directory (JSON Lines). Each append rewrites the file through an atomic rename, so a
killed process or a full disk leaves either the old or the new file, never a half-written
line; the cost is one copy of the file per append, fine for a few thousand results. One
writer at a time is assumed. Only a results file is appended to: any other existing file
is refused, so a mistyped ``--out`` never changes a user's file.
"""

from __future__ import annotations

import errno
import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from edgecnn.errors import DeviceError, FilesystemError
from edgecnn.fileio import path_size, sha256_file, write_text_atomic

__all__ = [
    "SCHEMA_VERSION",
    "RESULT_FIELDS",
    "LATENCY_KEYS",
    "RESULTS_FILENAME",
    "CompareRow",
    "model_info",
    "new_result",
    "failed_result",
    "validate_result",
    "append_result",
    "check_results_target",
    "load_results",
    "compare",
    "format_compare",
    "format_result",
]

SCHEMA_VERSION = "edgecnn.bench/1"
LATENCY_KEYS = ("mean", "std", "min", "p50", "p90", "p99", "max")
RESULTS_FILENAME = "bench.jsonl"

# Device-supplied text is clipped: it ends up in terminals and Markdown reports.
_MAX_TEXT = 1000
_MAX_RESULT_BYTES = 1 << 20


@dataclass(frozen=True)
class _Field:
    """One top-level result field and how to check it."""

    name: str
    check: Callable[[Any, str], Any]  # returns the clean value or raises _Invalid
    required: bool = True  # must be present in a result from a device


class _Invalid(Exception):
    pass


# ------------------------------------------------------------------------ field checks


def _text(value, what, nullable=False):
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise _Invalid(f"{what} must be a string, got {type(value).__name__}")
    # Keep one printable line: device text reaches terminals and Markdown.
    clean = "".join(c if c.isprintable() else " " for c in value)
    return clean if len(clean) <= _MAX_TEXT else clean[:_MAX_TEXT - 3] + "..."


def _number(value, what, nullable=True, integer=False, low=0.0, high=None):
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"{what} must be a number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Invalid(f"{what} is {value}, not a finite number")
    if integer and (isinstance(value, float) and not value.is_integer()):
        raise _Invalid(f"{what} must be an integer, got {value}")
    if low is not None and value < low:
        raise _Invalid(f"{what} is {value}, below {low}")
    if high is not None and value > high:
        raise _Invalid(f"{what} is {value}, above {high}")
    return int(value) if integer else float(value)


def _mapping(value, what, nullable=True):
    if value is None and nullable:
        return None
    if not isinstance(value, dict):
        raise _Invalid(f"{what} must be an object, got {type(value).__name__}")
    return value


def _check_schema(value, what):
    if value != SCHEMA_VERSION:
        raise _Invalid(f"{what} is {str(value)[:40]!r}, expected {SCHEMA_VERSION!r} "
                       f"(runner and host versions differ? copy the runner again)")
    return value


def _check_status(value, what):
    if value not in ("ok", "failed"):
        raise _Invalid(f"{what} must be 'ok' or 'failed', got {str(value)[:40]!r}")
    return value


def _check_model(value, what):
    value = _mapping(value, what, nullable=False)
    sha = _text(value.get("sha256"), f"{what}.sha256", nullable=True)
    if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
        raise _Invalid(f"{what}.sha256 is not a sha256 hex digest")
    return {"path": _text(value.get("path", ""), f"{what}.path"),
            "sha256": sha,
            "size_bytes": _number(value.get("size_bytes"), f"{what}.size_bytes", integer=True)}


def _check_runtime(value, what):
    value = _mapping(value, what)
    if value is None:
        return None
    return {"name": _text(value.get("name"), f"{what}.name"),
            "version": _text(value.get("version"), f"{what}.version")}


def _check_latency(value, what):
    value = _mapping(value, what)
    if value is None:
        return None
    # Other tools (benchmark_model) may not report percentiles; mean/min/max are required.
    clean = {k: _number(value.get(k), f"{what}.{k}", nullable=k not in ("mean", "min", "max"))
             for k in LATENCY_KEYS}
    ordered = [clean[k] for k in ("min", "p50", "p90", "p99", "max") if clean[k] is not None]
    # Tolerate float rounding from other tools' printed figures.
    if any(b < a * (1 - 1e-9) - 1e-9 for a, b in zip(ordered, ordered[1:])):
        raise _Invalid(f"{what} is not ordered min <= p50 <= p90 <= p99 <= max")
    if not clean["min"] - 1e-9 <= clean["mean"] <= clean["max"] + 1e-9:
        raise _Invalid(f"{what}.mean is outside [min, max]")
    return clean


def _check_thermal(value, what):
    value = _mapping(value, what)
    if value is None:
        return None
    throttled = value.get("throttled")
    if not isinstance(throttled, bool):
        raise _Invalid(f"{what}.throttled must be true or false")
    return {"before": _jsonable_small(value.get("before"), f"{what}.before"),
            "after": _jsonable_small(value.get("after"), f"{what}.after"),
            "throttled": throttled}


def _check_host(value, what):
    value = _mapping(value, what)
    if value is None:
        return None
    return {k: _text(value.get(k, ""), f"{what}.{k}", nullable=True)
            for k in ("hostname", "machine", "system", "python")}


def _jsonable_small(value, what, depth=0):
    """Nested plain JSON data of bounded depth, with text clipped and numbers finite."""
    if depth > 6:
        raise _Invalid(f"{what} is nested too deeply")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return _number(value, what, low=None)
    if isinstance(value, str):
        return _text(value, what)
    if isinstance(value, list):
        return [_jsonable_small(v, f"{what}[{i}]", depth + 1) for i, v in enumerate(value[:1000])]
    if isinstance(value, dict):
        return {_text(str(k), f"{what} key"): _jsonable_small(v, f"{what}.{k}", depth + 1)
                for k, v in list(value.items())[:1000]}
    raise _Invalid(f"{what} has a value of type {type(value).__name__}")


_FIELDS: tuple[_Field, ...] = (
    _Field("schema", _check_schema),
    _Field("status", _check_status),
    _Field("reason", lambda v, w: _text(v, w, nullable=True)),
    _Field("target", lambda v, w: _text(v, w)),
    _Field("model", _check_model),
    _Field("runtime", _check_runtime),
    _Field("delegate", lambda v, w: _text(v, w, nullable=True)),
    _Field("threads", lambda v, w: _number(v, w, integer=True, low=-1, high=1024)),
    _Field("runs", lambda v, w: _number(v, w, integer=True)),
    _Field("warmup", lambda v, w: _number(v, w, integer=True)),
    _Field("init_ms", lambda v, w: _number(v, w)),
    _Field("first_inference_ms", lambda v, w: _number(v, w)),
    _Field("latency_ms", _check_latency),
    _Field("throughput_ips", lambda v, w: _number(v, w)),
    _Field("peak_rss_kb", lambda v, w: _number(v, w, integer=True)),
    _Field("accuracy", lambda v, w: _number(v, w, high=1.0)),
    _Field("outputs_sha256", lambda v, w: _text(v, w, nullable=True)),
    _Field("samples", lambda v, w: _number(v, w, integer=True)),
    _Field("thermal", _check_thermal),
    _Field("host", _check_host),
    _Field("transfer_s", lambda v, w: _number(v, w)),
    _Field("startup_s", lambda v, w: _number(v, w)),
    _Field("timestamp", lambda v, w: _text(v, w)),
    _Field("details", lambda v, w: _jsonable_small(_mapping(v, w), w), required=False),
)
RESULT_FIELDS: tuple[str, ...] = tuple(f.name for f in _FIELDS)


# ------------------------------------------------------------------------ construction


def model_info(path: str | os.PathLike) -> dict:
    """The ``model`` field for a file on this host: path, sha256 and size."""
    p = Path(path)
    if not p.is_file():
        return {"path": str(path), "sha256": None, "size_bytes": None}
    return {"path": str(path), "sha256": sha256_file(p), "size_bytes": path_size(p)}


def new_result(target: str, model: dict | str | os.PathLike, **fields) -> dict:
    """A result with every schema field (measurements None), ``fields`` applied on top.

    Args:
        target: the target text, e.g. ``"local"``.
        model: a ``model`` dict, or a path (hashed here).
        **fields: schema fields to set.

    Returns:
        A dict with exactly the keys of :data:`RESULT_FIELDS`, in order.
    """
    unknown = set(fields) - set(RESULT_FIELDS)
    if unknown:
        raise KeyError(f"not result fields: {', '.join(sorted(unknown))}")
    result = dict.fromkeys(RESULT_FIELDS)
    result.update(schema=SCHEMA_VERSION, status="ok", target=target,
                  model=model if isinstance(model, dict) else model_info(model),
                  timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    result.update(fields)
    return result


def failed_result(target: str, model: dict | str | os.PathLike, reason: str, **fields) -> dict:
    """A result marked failed with a one-line ``reason``.

    Args:
        target: the target text.
        model: a ``model`` dict, or a path (hashed here when it exists).
        reason: why it failed and, where known, the fix.
        **fields: more schema fields to set (e.g. ``threads``, ``startup_s``).

    Returns:
        A result dict with ``status: "failed"``.
    """
    return new_result(target, model, status="failed", reason=" ".join(str(reason).split()), **fields)


def validate_result(data: Any, source: str = "result") -> dict:
    """Check a result read back from a device and return a clean copy.

    Unknown fields are dropped, text is clipped to one printable line, numbers must be
    finite and in range, and an ``ok`` result must carry latency figures.

    Args:
        data: the parsed JSON (untrusted).
        source: how error messages name it (e.g. ``"result from pi@raspberrypi"``).

    Returns:
        A dict with the keys of :data:`RESULT_FIELDS`.

    Raises:
        DeviceError: one line naming the first problem.
    """
    if not isinstance(data, dict):
        raise DeviceError(f"{source}: expected a JSON object, got {type(data).__name__}; "
                          f"the runner on the device may be outdated or broken")
    clean = {}
    try:
        for field in _FIELDS:
            if field.name not in data:
                if field.required:
                    raise _Invalid(f"field {field.name!r} is missing")
                clean[field.name] = None
                continue
            clean[field.name] = field.check(data[field.name], field.name)
        if clean["status"] == "ok" and clean["latency_ms"] is None:
            raise _Invalid("status is ok but latency_ms is missing")
        if clean["status"] == "failed" and not clean["reason"]:
            raise _Invalid("status is failed but no reason is given")
    except _Invalid as exc:
        raise DeviceError(f"{source}: invalid benchmark result ({exc}); "
                          f"copy the runner to the device again") from None
    return clean


# ----------------------------------------------------------------------------- storage


def _results_path(run_dir_or_file: str | os.PathLike) -> Path:
    p = Path(run_dir_or_file)
    if p.suffix in (".jsonl", ".json"):
        return p
    return p / RESULTS_FILENAME


def append_result(run_dir_or_file: str | os.PathLike, result: dict) -> Path:
    """Append one result to a JSON Lines file, atomically.

    The file is rewritten through a temporary and a rename (see the module docstring),
    so a full disk or a killed process leaves the old file byte for byte, never a torn
    last line. An existing file is appended to only when it already is a results file
    (every entry valid): a user's file passed to ``--out`` by mistake is never changed.

    Args:
        run_dir_or_file: a run directory (the file is ``bench.jsonl`` in it) or a
            ``.jsonl`` path. A ``.json`` path holds a JSON list instead.
        result: the result (validated first).

    Returns:
        The file written.

    Raises:
        DeviceError: the result is not a valid result.
        FilesystemError: the path is a file that is not a results file, or a file
            where a run directory was meant.
        OSError: the file cannot be written (read-only, full disk); it names the path.
    """
    clean = validate_result(result, "result to append")
    path = _checked_results_path(run_dir_or_file)
    existing = _existing_results(path)
    if path.suffix == ".json":
        write_text_atomic(path, json.dumps(existing + [clean], indent=1) + "\n")
        return path
    old = path.read_text(encoding="utf-8") if existing else ""
    if old and not old.endswith("\n"):
        old += "\n"
    write_text_atomic(path, old + json.dumps(clean, separators=(",", ":")) + "\n")
    return path


def check_results_target(run_dir_or_file: str | os.PathLike) -> Path:
    """Refuse, before any benchmark runs, an ``--out`` that :func:`append_result` would refuse.

    Creates nothing. Checks that the path is a folder, a results file or a new file
    name, and that the nearest existing folder above it is writable.

    Returns:
        The results file that :func:`append_result` will write.

    Raises:
        FilesystemError: as :func:`append_result`.
        OSError: the folder is read-only or not writable (EROFS, EACCES), naming it.
    """
    path = _checked_results_path(run_dir_or_file)
    _existing_results(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
    if not os.access(folder, os.W_OK):
        code = errno.EROFS if _read_only(folder) else errno.EACCES
        raise OSError(code, os.strerror(code), str(path))
    return path


def _checked_results_path(run_dir_or_file: str | os.PathLike) -> Path:
    given = Path(run_dir_or_file)
    if given.suffix not in (".jsonl", ".json") and given.exists() and not given.is_dir():
        raise FilesystemError(f"--out {given}: is a file, not a run directory or a .jsonl results file; pass a "
                              "folder or a new .jsonl path")
    return _results_path(given)


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _existing_results(path: Path) -> list[dict]:
    """The results already in ``path`` ([] when absent or empty); refuses any other file."""
    if not path.exists() and not path.is_symlink():
        return []
    if path.is_dir():
        raise FilesystemError(f"--out {path}: is a folder; pass a .jsonl file path or the run directory above it")
    with open(path, "rb") as fh:  # an unreadable file is an OS error, named as such
        if not fh.read(1):
            return []
    try:
        return load_results(path)
    except DeviceError as exc:
        raise FilesystemError(f"--out {path}: exists and is not an edgecnn results file "
                              f"({_short_reason(exc, path)}); edgecnn appends only to files it wrote: "
                              "choose a new .jsonl path") from None


def _short_reason(exc: Exception, path: Path) -> str:
    text = str(exc)
    prefix = f"{path}: "
    text = text[len(prefix):] if text.startswith(prefix) else text
    return text.split(";")[0][:120]


def load_results(path: str | os.PathLike) -> list[dict]:
    """Read results from a ``.jsonl`` file, a JSON list, or a single JSON object.

    Raises:
        DeviceError: the file is missing, not JSON, or holds an invalid result.
    """
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILENAME
    try:
        if p.stat().st_size > 256 * _MAX_RESULT_BYTES:
            raise DeviceError(f"{p}: {p.stat().st_size} bytes is too large for a results file")
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DeviceError(f"{p}: no such results file; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DeviceError(f"{p}: cannot read ({exc}); check the path") from None
    stripped = text.strip()
    items: list
    try:
        if stripped.startswith("["):
            items = json.loads(stripped)
        elif "\n" in stripped and stripped.startswith("{") and _is_json_lines(stripped):
            items = [json.loads(line) for line in stripped.splitlines() if line.strip()]
        else:
            items = [json.loads(stripped)]
    except json.JSONDecodeError as exc:
        raise DeviceError(f"{p}: not JSON or JSON Lines ({exc.msg} at line {exc.lineno}); "
                          f"pass a file written by 'edgecnn bench --json' or --out") from None
    return [validate_result(item, f"{p} entry {i + 1}") for i, item in enumerate(items)]


def _is_json_lines(text: str) -> bool:
    first = text.splitlines()[0]
    try:
        json.loads(first)
        return True
    except json.JSONDecodeError:
        return False  # an indented single object spans lines


# ---------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class CompareRow:
    """One line of ``edgecnn bench --compare``.

    Attributes:
        label: what the row shows, e.g. ``"p50 latency (ms)"``.
        a: value in the first result (a number, text, or None).
        b: value in the second result.
        ratio: ``b / a`` for numbers when both are present and ``a`` is not 0.
        lower_is_better: True for latencies and memory; None for text rows.
    """

    label: str
    a: Any
    b: Any
    ratio: float | None = None
    lower_is_better: bool | None = None


# (label, getter, lower_is_better) -- the metric rows of the comparison table.
_METRICS: tuple[tuple[str, Callable[[dict], Any], bool], ...] = (
    ("p50 latency (ms)", lambda r: (r.get("latency_ms") or {}).get("p50"), True),
    ("mean latency (ms)", lambda r: (r.get("latency_ms") or {}).get("mean"), True),
    ("p90 latency (ms)", lambda r: (r.get("latency_ms") or {}).get("p90"), True),
    ("p99 latency (ms)", lambda r: (r.get("latency_ms") or {}).get("p99"), True),
    ("init (ms)", lambda r: r.get("init_ms"), True),
    ("first inference (ms)", lambda r: r.get("first_inference_ms"), True),
    ("throughput (samples/s)", lambda r: r.get("throughput_ips"), False),
    ("peak RSS (MiB)", lambda r: None if r.get("peak_rss_kb") is None else r["peak_rss_kb"] / 1024, True),
    ("accuracy", lambda r: r.get("accuracy"), False),
)
_INFO: tuple[tuple[str, Callable[[dict], Any]], ...] = (
    ("target", lambda r: r.get("target")),
    ("status", lambda r: r.get("status") if r.get("status") == "ok" else f"failed: {r.get('reason')}"),
    ("model", lambda r: Path((r.get("model") or {}).get("path") or "?").name),
    ("runtime", lambda r: " ".join(filter(None, ((r.get("runtime") or {}).get("name"),
                                                 (r.get("runtime") or {}).get("version")))) or None),
    ("delegate", lambda r: r.get("delegate") or "none"),
    ("threads", lambda r: r.get("threads")),
    ("runs", lambda r: r.get("runs")),
)


def compare(a: dict, b: dict) -> list[CompareRow]:
    """Side-by-side rows of two results, with ``b / a`` ratios for the metrics.

    Args:
        a: the baseline result.
        b: the result compared against it.

    Returns:
        Info rows (target, runtime, ...) then metric rows (p50, mean, p90, p99, init,
        first inference, throughput, peak RSS, accuracy).
    """
    rows = [CompareRow(label, get(a), get(b)) for label, get in _INFO]
    for label, get, lower in _METRICS:
        va, vb = get(a), get(b)
        ratio = vb / va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and va else None
        rows.append(CompareRow(label, va, vb, ratio, lower))
    return rows


def format_compare(rows: Iterable[CompareRow], a_name: str = "A", b_name: str = "B") -> str:
    """Render :func:`compare` rows as an aligned text table.

    Args:
        rows: from :func:`compare`.
        a_name: column title of the first result (e.g. its file name).
        b_name: column title of the second.

    Returns:
        Multi-line text without a trailing newline; ratios read ``b/a``.
    """
    rows = list(rows)
    table = [("", a_name, b_name, "b/a")]
    for row in rows:
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        table.append((row.label, _fmt(row.a), _fmt(row.b), ratio))
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}".rstrip()
             for r in table]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1 else f"{value:.3g}" if abs(value) >= 1e4 else f"{value:.2f}"
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def format_result(result: dict) -> str:
    """A few human-readable lines for one result (what ``edgecnn bench`` prints)."""
    r = result
    rt = r.get("runtime") or {}
    head = f"{r.get('target')}: {Path((r.get('model') or {}).get('path') or '?').name}"
    if rt:
        head += f" on {rt.get('name')} {rt.get('version')}"
    head += f", {r.get('threads')} thread{'s' if r.get('threads') != 1 else ''}"
    if r.get("delegate"):
        head += f", delegate {r['delegate']}"
    if r.get("status") != "ok":
        return f"{head}\n  FAILED: {r.get('reason')}"
    lat = r["latency_ms"]
    figures = "  ".join(f"{k} {lat[k]:.3f}" for k in ("p50", "mean", "std", "p90", "p99", "min", "max")
                        if lat.get(k) is not None)
    lines = [head, f"  latency ms over {r.get('runs')} runs: {figures}"]
    extra = []
    if r.get("init_ms") is not None:
        extra.append(f"init {r['init_ms']:.1f} ms")
    if r.get("first_inference_ms") is not None:
        extra.append(f"first inference {r['first_inference_ms']:.2f} ms")
    if r.get("throughput_ips") is not None:
        extra.append(f"{r['throughput_ips']:.1f} samples/s")
    if r.get("peak_rss_kb") is not None:
        extra.append(f"peak RSS {r['peak_rss_kb'] / 1024:.1f} MiB")
    if r.get("startup_s") is not None:
        extra.append(f"start-up {r['startup_s']:.2f} s")
    if r.get("transfer_s") is not None:
        extra.append(f"copy to the device {r['transfer_s']:.2f} s")
    if extra:
        lines.append("  " + ", ".join(extra))
    if r.get("samples") is not None:
        acc = f"accuracy {r['accuracy'] * 100:.2f}% on " if r.get("accuracy") is not None else ""
        lines.append(f"  {acc}{r['samples']} samples, outputs sha256 {str(r.get('outputs_sha256'))[:16]}")
    thermal = r.get("thermal")
    if thermal:
        temps = [((thermal.get(k) or {}).get("temp_c")) for k in ("before", "after")]
        if any(t is not None for t in temps):
            lines.append("  SoC temperature " + " -> ".join("?" if t is None else f"{t:.1f} C" for t in temps)
                         + (" THROTTLED: latency figures are not representative" if thermal.get("throttled") else ""))
    return "\n".join(lines)


def check_run_settings(threads: int, runs: int, warmup: int, timeout_s: float) -> None:
    """The run settings every transport shares; raises ValueError when one is out of range."""
    if threads < 1 or runs < 1 or warmup < 0 or not timeout_s > 0:
        raise ValueError(f"need threads >= 1, runs >= 1, warmup >= 0 and timeout_s > 0; got "
                         f"{threads}, {runs}, {warmup}, {timeout_s}")
