"""Shared pieces of the on-device suites: reference rows, models, samples, the checks.

Reference thresholds live in ``reference/*.csv`` (``model,threads,p50_ms_max,
accuracy_min``; lines starting with ``#`` are comments). The fixtures that read the
environment are in ``conftest.py``.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
SAMPLES = 500  # test-split images sent to the device for accuracy


@dataclass(frozen=True)
class Reference:
    """One row of a reference CSV: limits a result must meet (None = not checked)."""

    model: str
    threads: int
    p50_ms_max: float | None
    accuracy_min: float | None

    @property
    def id(self) -> str:
        return f"{Path(self.model).name}-t{self.threads}"


def reference_rows(name: str) -> list[Reference]:
    """The rows of ``reference/<name>``."""
    lines = [ln for ln in (REFERENCE_DIR / name).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    rows = []
    for row in csv.DictReader(lines):
        rows.append(Reference(row["model"], int(row["threads"]),
                              float(row["p50_ms_max"]) if row["p50_ms_max"].strip() else None,
                              float(row["accuracy_min"]) if row["accuracy_min"].strip() else None))
    return rows


def env_or_skip(name: str, what: str) -> str:
    """The variable's value, or skip the test saying which variable configures it."""
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.skip(f"{what} not configured: set {name} (see device_tests/README.md)")
    return value


def model_or_skip(row: Reference) -> Path:
    """The reference row's model file, or skip saying how to build it."""
    path = REPO / row.model
    if not path.is_file():
        hint = ("compile it with 'edgecnn compile runs/quickstart/student_int8.tflite --target edgetpu'"
                if path.stem.endswith("_edgetpu") else "build it with 'bash tools/dev.sh quickstart'")
        pytest.skip(f"{row.model} does not exist; {hint}")
    return path


_samples_cache: dict[Path, Path] = {}


def samples_for(model: Path, tmp_dir: Path) -> Path:
    """Labelled test-split samples for ``model``'s run directory (``x`` normalized, ``y``).

    Uses the ``bench_samples_*.npz`` a build with a ``bench`` section wrote, else makes
    one from the run's recipe (``manifest.json``) and the dataset on this host.
    """
    run_dir = model.parent
    if run_dir in _samples_cache:
        return _samples_cache[run_dir]
    written = sorted(run_dir.glob("bench_samples_*.npz"))
    if written:
        path = written[-1]
    else:
        from edgecnn.data import load_dataset
        from edgecnn.recipe import validate_recipe

        manifest = run_dir / "manifest.json"
        if not manifest.is_file():
            pytest.skip(f"{run_dir} has no manifest.json to rebuild its test split from; build it with edgecnn")
        recipe = validate_recipe(json.loads(manifest.read_text())["recipe"], str(manifest))
        ds = load_dataset(recipe.data, recipe.seed)
        path = tmp_dir / f"{run_dir.name}_samples.npz"
        np.savez(path, x=ds.normalization.apply(ds.x_test[:SAMPLES]).astype(np.float32), y=ds.y_test[:SAMPLES])
    _samples_cache[run_dir] = path
    return path


def host_accuracy(model: Path, samples: Path) -> float:
    """The accuracy this host's runtime gets on the same samples (the device must match it)."""
    from edgecnn.runtime.interpreter import evaluate_tflite

    with np.load(samples) as npz:
        return float(evaluate_tflite(model, npz["x"], npz["y"], num_threads=1))


def check_against_reference(result: dict, row: Reference, host_acc: float | None = None) -> None:
    """The shared assertions: ok, not throttled, within the row's limits, accuracy as on the host."""
    assert result["status"] == "ok", result["reason"]
    thermal = result.get("thermal") or {}
    assert not thermal.get("throttled"), (
        f"the board was throttled ({thermal}); fix cooling or power first, these figures are not representative")
    _record(result)
    lat = result["latency_ms"]
    p50 = lat["p50"] if lat.get("p50") is not None else lat["mean"]
    if row.p50_ms_max is not None:
        assert p50 <= row.p50_ms_max, f"{row.id}: p50 {p50:.3f} ms > reference limit {row.p50_ms_max} ms"
    if row.accuracy_min is not None and result.get("accuracy") is not None:
        assert result["accuracy"] >= row.accuracy_min, (
            f"{row.id}: accuracy {result['accuracy']:.4f} < reference floor {row.accuracy_min}")
    if host_acc is not None and result.get("accuracy") is not None:
        # Same int8 arithmetic everywhere; different kernels (XNNPACK, 32-bit builds) may
        # flip a rare near-tie, never more than half a point on 500 images.
        assert abs(result["accuracy"] - host_acc) <= 0.005, (result["accuracy"], host_acc)


def _record(result: dict) -> None:
    """Append the result to $EDGECNN_DEVICE_RESULTS (a .jsonl) when set, for tightening limits."""
    target = os.environ.get("EDGECNN_DEVICE_RESULTS")
    if target:
        from edgecnn.bench.schema import append_result

        append_result(target, result)
