"""Start-up latency of the CLI commands that must never import TensorFlow.

    python tools/bench_cli.py [--runs 10]

Targets (issue #2): ``edgecnn --help`` <= 0.5 s and ``edgecnn validate`` <= 1 s, wall
time of the whole process as a person sees it (median of ``--runs``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "edgecnn --help": (["--help"], 0.5),
    "edgecnn validate recipes/quickstart.yaml": (["validate", "recipes/quickstart.yaml"], 1.0),
}


def time_command(argv: list[str], runs: int) -> list[float]:
    edgecnn = str(Path(sys.executable).with_name("edgecnn"))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([edgecnn, *argv], cwd=REPO, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    ok, results = True, {}
    for label, (argv, target) in COMMANDS.items():
        times = time_command(argv, args.runs)
        median = statistics.median(times)
        passed = median <= target
        ok &= passed
        results[label] = {"median_s": round(median, 3), "min_s": round(min(times), 3), "max_s": round(max(times), 3),
                          "target_s": target, "pass": passed}
        print(f"{label:<42} median {median:.3f}s  (min {min(times):.3f}, max {max(times):.3f})  "
              f"target <= {target}s  {'PASS' if passed else 'MISS'}")
    print(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
