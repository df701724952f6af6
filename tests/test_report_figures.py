"""The report's per-model figures that are computed, not measured by training: MACs read from
a file's shapes, host latency, and which variants the accuracy/cost plot marks as best."""

from __future__ import annotations

import numpy as np
import pytest


def test_macs_are_counted_from_the_file_shapes(tmp_path):
    """A model whose MACs are known by hand: conv 3x3 stride 2 on 16x16x1 -> 7x7x8
    (7*7*8*3*3*1 = 3528), depthwise 3x3 -> 5x5x8 (5*5*8*9 = 1800), dense 200 -> 4 (800)."""
    from edgecnn._tf import keras
    from edgecnn.export.formats import get_format
    from edgecnn.export.tflite import convert, inference_model
    from edgecnn.tflite.reader import count_macs

    k = keras()
    inputs = k.layers.Input((16, 16, 1))
    h = k.layers.Conv2D(8, 3, strides=2)(inputs)
    h = k.layers.DepthwiseConv2D(3)(h)
    model = inference_model(k.Model(inputs, k.layers.Dense(4)(k.layers.Flatten()(h)), name="macs"))
    for fmt in ("float32", "int8"):
        path = convert(model, get_format(fmt), tmp_path / f"{fmt}.tflite",
                       np.random.RandomState(0).rand(8, 16, 16, 1).astype(np.float32), "int8")
        assert count_macs(path) == 3528 + 1800 + 800, fmt


def test_host_latency_reports_median_and_p90_of_the_runs(tmp_path):
    from helpers import build_tiny_classifier

    from edgecnn.runtime.interpreter import host_latency

    path = build_tiny_classifier(tmp_path, io_dtype="int8", metadata=False)
    result = host_latency(path, np.zeros((1, 32, 32, 3), np.float32), runs=20, warmup=2)
    assert result["runs"] == 20 and result["threads"] == 1
    assert 0 < result["p50"] <= result["p90"]


def test_best_variants_are_the_ones_nothing_beats_on_both():
    from edgecnn.plots import accuracy_cost_chart, pareto_best

    points = [("float32", 1.0, 0.90), ("int8", 0.4, 0.89), ("pruned_int8", 0.4, 0.88), ("slow_bad", 2.0, 0.80)]
    assert pareto_best(points) == {"float32", "int8"}
    models = [{"name": n, "accuracy": a, "latency_ms": {"p50": c}, "size_bytes": int(c * 1000)} for n, c, a in points]
    svg = accuracy_cost_chart(models)
    assert svg.count('r="9"') == 2 * 2  # two best rings in each of the two panels
    assert accuracy_cost_chart(models[:1]) is None
