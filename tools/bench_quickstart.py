"""Quickstart wall time: a cold build, then an unchanged rebuild.

    python tools/bench_quickstart.py [--out /tmp/edgecnn-quickstart-bench]

Targets (issue #2): the whole quickstart build <= 180 s on a 2-core CPU, an unchanged
rebuild <= 15 s. The run directory is deleted first so the first build is cold. Run it on
an otherwise idle machine: a concurrent training job doubles the figure on two cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed_build(out: Path) -> float:
    edgecnn = str(Path(sys.executable).with_name("edgecnn"))
    start = time.perf_counter()
    subprocess.run([edgecnn, "build", "recipes/quickstart.yaml", "--out", str(out), "--quiet"], cwd=REPO, check=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/edgecnn-quickstart-bench")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    cold = timed_build(out)
    warm = timed_build(out)
    report = json.loads((out / "report.json").read_text())
    rebuilt = [s["stage"] for s in report["stages"] if not s["cached"]]
    results = {
        "cold_build_s": round(cold, 1), "cold_target_s": 180, "cold_pass": cold <= 180,
        "unchanged_rebuild_s": round(warm, 2), "rebuild_target_s": 15, "rebuild_pass": warm <= 15,
        "stages_rerun_on_rebuild": rebuilt,
        "int8_accuracy": next(m["accuracy"] for m in report["models"] if m["name"] == "tflite_int8"),
    }
    print(f"quickstart cold build     {cold:7.1f} s  target <= 180 s  {'PASS' if results['cold_pass'] else 'MISS'}")
    print(f"unchanged rebuild         {warm:7.2f} s  target <= 15 s   {'PASS' if results['rebuild_pass'] else 'MISS'}"
          f"  (stages re-run: {rebuilt or 'none'})")
    print(json.dumps(results, indent=2))
    return 0 if results["cold_pass"] and results["rebuild_pass"] and not rebuilt else 1


if __name__ == "__main__":
    sys.exit(main())
