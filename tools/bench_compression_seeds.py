"""edgecnn against plain tfmot over several seeds: runs of tools/bench_compression.py side by side.

    python tools/bench_compression.py --out bench_out/compression_teacher18             # seed 0 (the recipe's)
    python tools/bench_compression.py --set seed=1 --out bench_out/seed1
    python tools/bench_compression_seeds.py bench_out/compression_teacher18 bench_out/seed1 --out bench_out/seeds

One seed is one draw: the seed sets the validation split, the initial weights of teacher and
student, the augmentation and the order of the training images, of both arms (the tfmot arm
starts from the student that seed's edgecnn build distilled). This script reads each run's
``compression.json``, checks that the runs differ only in their seed (same base recipe, the
same ``--set`` overrides besides ``seed``, the same fine-tune epochs and batch sizes, the
same test images), and prints, for each mode, each seed's difference (edgecnn - tfmot, in
points of int8 top-1 accuracy), each arm's mean accuracy, the differences' mean, sample
standard deviation and smallest. Output: a table on stdout and
``OUT/compression_seeds.json`` + ``OUT/compression_seeds.md`` (written atomically).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.bench_compression import render_table  # noqa: E402  (the same table layout as one run's)


def _seed_of(report: dict) -> int:
    """The run's seed: recorded since the seed was part of the report, else its ``--set seed=``, else the recipe's."""
    if "seed" in report:
        return int(report["seed"])
    from edgecnn.recipe import load_recipe

    return load_recipe(Path(report["base_recipe"]), tuple(report.get("overrides", ()))).seed


def _same_but_seed(report: dict) -> dict:
    """What must match across the runs for their differences to be draws of one comparison."""
    return {"base_recipe": report["base_recipe"], "test_images": report["test_images"],
            "overrides": sorted(o for o in report.get("overrides", ()) if not o.startswith("seed=")),
            "prune_train": {k: report["prune_train"][k] for k in ("epochs", "batch_size")},
            "qat_train": {k: report["qat_train"][k] for k in ("epochs", "batch_size")},
            "modes": [row["mode"] for row in report["rows"]]}


def combine(runs: list[Path]) -> dict:
    reports = []
    for run in runs:
        path = run / "compression.json"
        if not path.is_file():
            raise SystemExit(f"{path}: not found; run tools/bench_compression.py --out {run} first")
        reports.append(json.loads(path.read_text()))
    seeds = [_seed_of(r) for r in reports]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"runs share a seed ({', '.join(f'{run}: {s}' for run, s in zip(runs, seeds))}); "
                         "each run must be another seed")
    reference = _same_but_seed(reports[0])
    for run, report in zip(runs[1:], reports[1:]):
        other = _same_but_seed(report)
        differing = [key for key in reference if reference[key] != other[key]]
        if differing:
            raise SystemExit(f"{run} differs from {runs[0]} in more than its seed: {', '.join(differing)}")
    rows = []
    for i, row in enumerate(reports[0]["rows"]):
        per_seed = [{"seed": seed, "tfmot": r["rows"][i]["tfmot"]["accuracy"],
                     "edgecnn": r["rows"][i]["edgecnn"]["accuracy"],
                     "difference_points": r["rows"][i]["difference_points"]} for seed, r in zip(seeds, reports)]
        differences = [s["difference_points"] for s in per_seed]
        rows.append({"mode": row["mode"], "epochs": row["epochs"], "seeds": per_seed,
                     "mean_tfmot": round(statistics.fmean(s["tfmot"] for s in per_seed), 5),
                     "mean_edgecnn": round(statistics.fmean(s["edgecnn"] for s in per_seed), 5),
                     "mean_difference_points": round(statistics.fmean(differences), 3),
                     # Sample standard deviation (n - 1) of the per-seed differences: how far one
                     # seed's difference strays, so whether the mean can be told from a target.
                     "sd_difference_points": round(statistics.stdev(differences), 3),
                     "min_difference_points": min(differences)})
    return {"what": "edgecnn - plain tfmot, points of int8 top-1 accuracy on ai-edge-litert, one row per mode, "
                    "one column per seed (tools/bench_compression.py runs)",
            "runs": [str(r) for r in runs], "seeds": seeds, **reference, "rows": rows}


def make_table(report: dict) -> tuple[str, str]:
    head = ("mode", "epochs", *(f"seed {s}: tfmot / edgecnn (diff)" for s in report["seeds"]),
            "mean: tfmot / edgecnn", "mean diff", "sd", "smallest diff")
    body = [(row["mode"], row["epochs"],
             *(f"{100 * s['tfmot']:.2f} / {100 * s['edgecnn']:.2f} ({s['difference_points']:+.2f})" for s in row["seeds"]),
             f"{100 * row['mean_tfmot']:.2f} / {100 * row['mean_edgecnn']:.2f}",
             f"{row['mean_difference_points']:+.2f}", f"{row['sd_difference_points']:.2f}",
             f"{row['min_difference_points']:+.2f}") for row in report["rows"]]
    return render_table(head, body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="output folders of tools/bench_compression.py, one per seed")
    parser.add_argument("--out", type=Path, default=ROOT / "bench_out" / "compression_seeds", help="output folder")
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        parser.error("give at least two runs (one per seed)")

    from edgecnn.fileio import make_dirs, write_json_atomic, write_text_atomic

    report = combine(args.runs)
    text, md = make_table(report)
    make_dirs(args.out)
    write_json_atomic(args.out / "compression_seeds.json", report)
    write_text_atomic(args.out / "compression_seeds.md",
                      f"# edgecnn vs plain tfmot over seeds {', '.join(map(str, report['seeds']))} "
                      f"({Path(report['base_recipe']).name}, {report['test_images']} test images, int8 on ai-edge-litert)"
                      f"\n\n{md}\n\nDifference = edgecnn - tfmot (points); sd = sample standard deviation of the differences. Runs: "
                      f"{', '.join(f'`{r}`' for r in report['runs'])}.\n")
    print(f"{text}\n\nwritten {args.out / 'compression_seeds.json'} and {args.out / 'compression_seeds.md'}")


if __name__ == "__main__":
    main()
