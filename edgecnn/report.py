"""Build reports: ``report.json`` for machines, ``report.md`` for people, ``manifest.json`` for audit."""

from __future__ import annotations

import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from edgecnn.artifacts import MODEL_FILE_KINDS, QUANTIZATION_AWARE_ROLES
from edgecnn.fileio import path_size, sha256_file, write_json_atomic, write_text_atomic

if TYPE_CHECKING:
    from edgecnn.stage import BuildContext
    from edgecnn.recipe import Recipe

ACCURACY_PLOT_FILE = "accuracy_size.svg"
COST_PLOT_FILE = "accuracy_latency_size.svg"  # accuracy against latency and size, best variants ringed
CURVES_PLOT_FILE = "training_curves.svg"
REPORT_FILE = "report.json"
REPORT_MD_FILE = "report.md"
MANIFEST_FILE = "manifest.json"

# Versions that decide what a build produces; read from package metadata (no imports).
_PACKAGES = ("edgecnn", "tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert", "numpy",
             "pydantic", "click", "pyyaml")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape a build (None when absent)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions



# Timed inferences per model for the report's host latency (after 10 untimed): enough for a
# stable median and p90 of a sub-millisecond model, a fraction of a second each.
LATENCY_RUNS = 50


def collect_models(ctx: "BuildContext") -> list[dict]:
    """One row per produced model, in chain order: Keras models (accuracy measured by the
    stage that made them), then TFLite models (accuracy from ``evaluation.json``)."""
    from edgecnn.runtime.interpreter import host_latency

    rows = []
    for artifact in ctx.artifacts.all(kind="keras"):
        metrics = ctx.metrics_of(artifact)
        rows.append({"name": artifact.name, "role": artifact.role, "kind": "keras", "path": artifact.path.name,
                     "source": artifact.source, "quantization_aware": artifact.role in QUANTIZATION_AWARE_ROLES,
                     "precision": artifact.precision or "float32", "size_bytes": path_size(artifact.path),
                     "accuracy": metrics.get("accuracy"), "params": metrics.get("params"),
                     "evaluated_with": "tf_keras"})
    evaluation_artifact = ctx.artifacts.get("report.evaluation")
    evaluation = _read_json(evaluation_artifact.path if evaluation_artifact else None)
    for artifact in ctx.artifacts.all(kind=MODEL_FILE_KINDS):
        result = evaluation.get("models", {}).get(artifact.name, {})
        evaluated = result.get("status", "evaluated") == "evaluated" and result.get("accuracy") is not None
        rows.append({"name": artifact.name, "role": artifact.role, "kind": artifact.kind, "path": artifact.path.name,
                     "precision": artifact.precision, "runtime": artifact.runtime,
                     "size_bytes": path_size(artifact.path), "accuracy": result.get("accuracy"),
                     "input_dtype": result.get("input_dtype"), "output_dtype": result.get("output_dtype"),
                     "source": artifact.source,
                     "evaluated_with": f"{evaluation.get('runtime')} {evaluation.get('runtime_version')}"
                     if evaluated else result.get("status", "not evaluated")})
        if evaluated:
            # Measured now, not in the cached evaluate stage: a timing is of this machine and
            # moment, and the stage's evaluation.json stays the same bytes for the same models.
            rows[-1]["latency_ms"] = host_latency(artifact.path, runs=LATENCY_RUNS)
        for key in ("params", "macs", "gzip_bytes", "weight_sparsity", "weight_scales", "pruned_tensors",
                    "pruned_tensors_sparsity", "reference",
                    "top1_agreement", "flipped", "flipped_to_wrong", "per_class_change_points", "worst_class"):
            if key in result:
                rows[-1][key] = result[key]
        if not evaluated and result.get("reason"):
            rows[-1]["reason"] = result["reason"]  # e.g. an Edge TPU model: where to measure it instead
    return rows


def compare_to_sources(models: list[dict]) -> list[dict]:
    """Each converted model against its float source, following the artifact graph.

    A TFLite file's reference is the float32 TFLite file of the same Keras model when that
    was evaluated, else the Keras model itself (``source``). One row per converted file
    with an accuracy: drop in points, reference name, size ratio to the float32 file.
    """
    by_role = {m.get("role"): m for m in models}
    float32_of = {m.get("source"): m for m in models
                  if m["kind"] == "tflite" and m.get("precision") == "float32" and m.get("accuracy") is not None}
    rows = []
    for m in models:
        if m["kind"] == "keras" or m.get("accuracy") is None or m.get("source") is None:
            continue
        source = m["source"]
        # A quantization-aware Keras model simulates int8: its float reference is the model it
        # was made from, so follow the graph up to the first float model.
        while by_role.get(source, {}).get("quantization_aware") and by_role[source].get("source"):
            source = by_role[source]["source"]
        f32 = float32_of.get(source)
        reference = f32 if f32 is not None and f32 is not m else by_role.get(source)
        if reference is None or reference.get("accuracy") is None:
            continue
        row = {"name": m["name"], "source": m["source"], "reference": reference["name"],
               "accuracy_drop_points": round((reference["accuracy"] - m["accuracy"]) * 100, 3)}
        if f32 is not None and f32 is not m:
            row["size_ratio"] = round(m["size_bytes"] / f32["size_bytes"], 4)
        rows.append(row)
    return rows


def summarize(models: list[dict]) -> dict:
    """Headline comparisons: the student's int8 accuracy drop and size ratio against its
    float model, and every converted file against its own float source (``variants``).

    The reference is the float32 TFLite file of the same Keras model, else that Keras model.
    """
    out: dict = {}
    variants = compare_to_sources(models)
    student_int8 = next((v for v in variants if v["name"] == "tflite_int8"), None)
    if student_int8 is not None:
        out["int8_accuracy_drop_points"] = student_int8["accuracy_drop_points"]
        out["int8_drop_reference"] = student_int8["reference"]
        if "size_ratio" in student_int8:
            out["int8_size_ratio"] = student_int8["size_ratio"]
    if variants:
        out["variants"] = variants
    return out


def write_reports(recipe: "Recipe", ctx: "BuildContext", timings: list[dict],
                  inherited_augmentations: list[dict] | None = None) -> dict[str, Path]:
    """Write report.json, report.md and manifest.json atomically; return their paths and the report.

    Args:
        recipe: the build's recipe.
        ctx: the finished build's context (typed artifacts with their sha256, metrics).
        timings: one row per stage (see :func:`edgecnn.pipeline.build`).
        inherited_augmentations: ``data.augment`` settings taken from an ``extends:``
            parent, as ``{"key", "value", "from"}`` rows (listed in the data section).

    The manifest's ``artifacts`` are the stages' outputs (by short name: role, kind,
    precision, runtime, path, sha256, size), whose bytes depend only on
    their inputs (two builds of one recipe on one machine list the same sha256s); the
    reports, which carry this build's date and timings, are listed apart under
    ``reports``.
    """
    out = ctx.out_dir
    models = collect_models(ctx)
    dataset_artifact = ctx.artifacts.get("dataset")
    dataset_info = _read_json(dataset_artifact.path if dataset_artifact else None)
    # Splits and class count come from dataset.json, the data stage's artifact.
    data_summary = {"splits": dataset_info["splits"], "num_classes": len(dataset_info.get("class_names", []))} \
        if "splits" in dataset_info else {}
    report = {
        "recipe": recipe.name,
        "recipe_hash": recipe.recipe_hash,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "dataset": {**data_summary, "augment": recipe.to_dict()["data"].get("augment"),
                    "inherited_augmentations": list(inherited_augmentations or [])},
        # What the device side needs to feed the model the way it was trained.
        "preprocessing": {k: dataset_info.get(k) for k in ("input_shape", "normalization", "class_names")},
        "models": models,
        "summary": summarize(models),
        "stages": timings,
        "total_wall_s": round(sum(t["wall_s"] for t in timings), 3),
        # what the artifacts cost when they were computed (equals total_wall_s with no cache hits)
        "total_compute_s": round(sum(t["compute_wall_s"] for t in timings), 3),
        "bench": ctx.metrics.get("bench", {}).get("results", []),
        # quantize.max_drop: per int8 file, its drop, what was tried, what stayed float and its cost.
        "gate": ctx.metrics.get("gate", {}).get("models", []),
        # quantize.mixed: which layers each mixed-precision file holds at which precision.
        "mixed_precision": ctx.metrics.get("mixed", {}).get("models", []),
        # Stages the recipe asks for that made nothing on this host, with why (a missing tool).
        "skipped": [{"stage": t["stage"], "reason": t["skipped"]} for t in timings if t.get("skipped")],
        # Model files whose Python code the recipe chose to run (the opt-in, e.g. teacher.trust_code).
        "trusted_code": [{"key": "teacher.path", "path": str(recipe.teacher.path)}]
        if recipe.teacher.path is not None and recipe.teacher.trust_code else [],
    }
    plots = _write_plots(ctx, models)
    report["plots"] = [p.name for p in plots]
    report_path = write_json_atomic(out / REPORT_FILE, report)
    md_path = write_text_atomic(out / REPORT_MD_FILE, render_markdown(report))
    artifacts = {a.name: a.to_record(out, path_size(a.path)) for a in sorted(ctx.artifacts, key=lambda a: a.name)}
    reports = {path.stem: {"path": path.name, "sha256": sha256_file(path), "size_bytes": path_size(path)}
               for path in (report_path, md_path, *plots)}
    manifest = {
        "recipe": recipe.to_dict(),
        "recipe_hash": recipe.recipe_hash,
        "versions": package_versions(),
        "platform": {"machine": platform.machine(), "system": platform.system()},
        "artifacts": artifacts,
        "reports": reports,
    }
    manifest_path = write_json_atomic(out / MANIFEST_FILE, manifest)
    return {"report": report_path, "report_md": md_path, "manifest": manifest_path, "data": report}


def _read_json(path: Path | None) -> dict:
    return json.loads(path.read_text()) if path else {}


def _write_plots(ctx: "BuildContext", models: list[dict]) -> list[Path]:
    from edgecnn.plots import accuracy_cost_chart, accuracy_size_chart, training_curves_chart

    written = [write_text_atomic(ctx.out_dir / ACCURACY_PLOT_FILE, accuracy_size_chart(models))]
    cost = accuracy_cost_chart(models)
    if cost is not None:
        written.append(write_text_atomic(ctx.out_dir / COST_PLOT_FILE, cost))
    curves = {a.name: ctx.metrics_of(a).get("val_accuracy_per_epoch") for a in ctx.artifacts.all(kind="keras")}
    if any(curves.values()):
        written.append(write_text_atomic(ctx.out_dir / CURVES_PLOT_FILE, training_curves_chart(curves)))
    return written


def _pct(value) -> str:
    return f"{value * 100:.2f} %" if value is not None else "-"


def _count(n) -> str:
    """1234567 -> 1.23 M: parameters and MACs at a glance."""
    if n is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return str(n)


def _size_text(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MiB"


def _gate_lines(gate: list[dict]) -> list[str]:
    """The accuracy gate's section: each int8 file's drop, and what the gate kept float."""
    if not gate:
        return []
    lines = ["", "## Accuracy gate", ""]
    for g in gate:
        head = (f"- `{g['model']}`: {g['int8_drop_points']:+.2f} points against its float model on "
                f"{g['validation_images']} validation images (budget {g['max_drop_points']:g})")
        if not g.get("gated_model"):
            lines.append(head + ": within budget, no layer kept float")
            continue
        last = g["attempts"][-1]
        lines.append(head + f"; `{g['gated_model']}` keeps **{', '.join(g['kept_float'])}** float: "
                     f"{last['drop_points']:+.2f} points, {g['latency_ms_gated']:.3f} ms against "
                     f"{g['latency_ms_full_int8']:.3f} ms full int8 (1 thread, median of 50); per-layer error "
                     f"for Model Explorer: `{g['node_data']}`")
        lines += ["", "  | layers kept float | validation accuracy | drop (points) | latency (ms) |",
                  "  |---|---|---|---|"]
        for a in g["attempts"]:
            lines.append(f"  | {', '.join(a['keep_float']) or 'none'} | {a['accuracy']:.2%} | {a['drop_points']:+.2f} | "
                         f"{a['latency_ms']:.3f} |")
    return lines


def render_markdown(report: dict) -> str:
    """A person's view of ``report``."""
    lines = [f"# edgecnn build: {report['recipe']}", "",
             f"Recipe hash `{report['recipe_hash'][:12]}`, built {report['created_at']}: "
             f"{report['total_wall_s']:.1f} s this build, {report.get('total_compute_s', report['total_wall_s']):.1f} s to compute every stage.",
             "", "## Models", "",
             "| model | file | precision | I/O | size | gzip | zero weights | parameters | MACs | latency p50 / p90 "
             "| test accuracy | evaluated with |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in report["models"]:
        io = f"{m.get('input_dtype')}/{m.get('output_dtype')}" if m.get("input_dtype") else "float32"
        gz = _size_text(m["gzip_bytes"]) if m.get("gzip_bytes") else "-"
        zeros = f"{m['weight_sparsity']:.1%}" if m.get("weight_sparsity") is not None else "-"
        lat = m.get("latency_ms")
        latency = f"{lat['p50']:.3f} / {lat['p90']:.3f} ms" if lat else "-"
        precision = m["precision"] + (", per-tensor weights" if m.get("weight_scales") == "per tensor" else "")
        lines.append(f"| {m['name']} | `{m['path']}` | {precision} | {io} | {_size_text(m['size_bytes'])} | "
                     f"{gz} | {zeros} | {_count(m.get('params'))} | {_count(m.get('macs'))} | {latency} | "
                     f"{_pct(m['accuracy'])} | {m['evaluated_with']} |")
    if any(m.get("latency_ms") for m in report["models"]):
        lines += ["", "Latency: this build host's CPU, 1 thread, batch 1, median and p90 of 50 timed runs after 10 "
                      "untimed: comparable between rows, not a device figure (`edgecnn bench` measures those)."]
    notes = [m for m in report["models"] if m.get("reason")]
    if notes:
        lines.append("")
        lines += [f"- {m['name']}: {m['evaluated_with']}: {m['reason']}" for m in notes]
    for row in report.get("skipped") or []:
        lines += ["", f"**Skipped:** {row['stage']}: {row['reason']}"]
    for row in report.get("trusted_code") or []:
        lines += ["", f"**Trusted code:** {row['key']} `{row['path']}` was loaded with its Python code run "
                      "(teacher.trust_code: true)."]
    summary = report.get("summary", {})
    if summary:
        lines += ["", "## Quantization", ""]
        if "int8_accuracy_drop_points" in summary:
            lines.append(f"- int8 accuracy drop against {summary['int8_drop_reference']}: "
                         f"**{summary['int8_accuracy_drop_points']:.2f} points**")
        if "int8_size_ratio" in summary:
            lines.append(f"- int8 file size: **{summary['int8_size_ratio']:.2f}x** the float32 file")
        others = [v for v in summary.get("variants", []) if v["name"] != "tflite_int8"]
        for v in others:
            size = f", {v['size_ratio']:.2f}x the float32 file" if "size_ratio" in v else ""
            lines.append(f"- {v['name']}: {v['accuracy_drop_points']:.2f} points below {v['reference']}{size}")
        forgot = [m for m in report["models"] if m.get("top1_agreement") is not None]
        if forgot:
            lines += ["", "## What compression forgot", "",
                      "| model | against | top-1 agreement | flipped images (right -> wrong) | worst class change |",
                      "|---|---|---|---|---|"]
            for m in forgot:
                worst = m.get("worst_class") or {}
                lines.append(f"| {m['name']} | {m['reference']} | {m['top1_agreement']:.2%} | {m['flipped']} "
                             f"({m['flipped_to_wrong']}) | {worst.get('class', '-')} "
                             f"{worst.get('change_points', 0):+.2f} points |")
    lines += _gate_lines(report.get("gate") or [])
    for plot in report.get("plots", []):
        lines += ["", f"![{plot}]({plot})"]
    dataset = report.get("dataset") or {}
    if dataset.get("splits") or dataset.get("augment") is not None:
        lines += ["", "## Data", ""]
        splits = dataset.get("splits") or {}
        if splits:
            lines.append("- images: " + ", ".join(f"{n} {name}" for name, n in splits.items()))
        augment = dataset.get("augment")
        if isinstance(augment, dict):
            shown = ", ".join(f"{k} {v}" for k, v in augment.items() if v not in (None, False, 0, 0.0)) or "none"
            lines.append(f"- training augmentation: {shown}")
        for row in dataset.get("inherited_augmentations") or []:
            lines.append(f"- inherited through `extends` from `{row['from']}`: `{row['key']}` = "
                         f"`{json.dumps(row['value'])}`")
    prep = report.get("preprocessing") or {}
    if prep.get("normalization"):
        norm = prep["normalization"]
        lines += ["", "## Input", "",
                  f"- shape {prep.get('input_shape')}, `x = (pixel - {norm.get('mean')}) / {norm.get('std')}` on 0..255 pixels",
                  f"- classes: {', '.join(prep.get('class_names') or [])}"]
    if report.get("bench"):
        lines += ["", "## On-device benchmarks", "", "| target | model | p50 latency | accuracy | status |",
                  "|---|---|---|---|---|"]
        for r in report["bench"]:
            lat = r.get("latency_ms") or {}
            p50 = lat.get("p50") if lat.get("p50") is not None else lat.get("mean")
            status = "ok" if r["status"] == "ok" else f"failed: {r.get('reason')}".replace("|", "/")
            lines.append(f"| {r['target']} | `{Path(r['model']['path']).name}` | "
                         f"{'-' if p50 is None else f'{p50:.3f} ms'} | {_pct(r.get('accuracy'))} | {status} |")
    lines += ["", "## Stages", "", "| stage | this build | when computed | cached |", "|---|---|---|---|"]
    for t in report["stages"]:
        lines.append(f"| {t['stage']} | {t['wall_s']:.1f} s | {t['compute_wall_s']:.1f} s | {'yes' if t['cached'] else 'no'} |")
    return "\n".join(lines) + "\n"
