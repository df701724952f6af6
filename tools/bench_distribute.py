"""What each way of starting a multi-worker cluster costs (issue: training across machines).

    python tools/bench_distribute.py [--recipe recipes/quickstart.yaml] [--repeat 3]

``MultiWorkerMirroredStrategy`` must be made before the process runs any TensorFlow op.
Two ways satisfy that: join the cluster at the start of the build (what edgecnn does), or
run each distributed stage in a process of its own. This prints, each the median of
``--repeat`` fresh processes:

* ``join``: making the strategy first thing in a process, after TensorFlow's import (a
  one-worker cluster on a free 127.0.0.1 port, so no peer's start-up is counted): the
  only cost of joining at start-up;
* ``process``: what a stage in its own process pays before it can train: the Python and
  TensorFlow import and loading the recipe's dataset (the parent has both already).

It also runs the distributed-build tests (two real ``edgecnn build`` workers) and prints
their wall times.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

JOIN = """
import json, os, socket, sys, time
from edgecnn._tf import tensorflow
tensorflow()  # the import only: no op may run before the strategy exists
from edgecnn.compress.distribute import make_strategy
t0 = time.perf_counter()
make_strategy("multi_worker", timeout_s=30)
print(json.dumps({"join_s": time.perf_counter() - t0}))
"""

STAGE_PROCESS = """
import json, sys, time
t0 = time.perf_counter()
from edgecnn._tf import tensorflow
tensorflow().constant(1)
t1 = time.perf_counter()
from edgecnn.recipe import load_recipe
from edgecnn.data import load_dataset
r = load_recipe(sys.argv[1])
load_dataset(r.data, r.seed)
print(json.dumps({"import_s": t1 - t0, "data_s": time.perf_counter() - t1}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _python(code: str, *args: str, env: dict | None = None) -> tuple[dict, float]:
    import os

    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})}, timeout=600)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/quickstart.yaml")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-tests", action="store_true", help="skip the two-worker build tests")
    args = parser.parse_args()

    joins, imports, datas, walls = [], [], [], []
    for _ in range(args.repeat):
        tf_config = json.dumps({"cluster": {"worker": [f"127.0.0.1:{_free_port()}"]},
                                "task": {"type": "worker", "index": 0}})
        result, _ = _python(JOIN, env={"TF_CONFIG": tf_config})
        joins.append(result["join_s"])
        result, wall = _python(STAGE_PROCESS, args.recipe)
        imports.append(result["import_s"])
        datas.append(result["data_s"])
        walls.append(wall)
    med = statistics.median
    print(f"join the cluster at start-up (strategy first thing in the process): {med(joins):.2f} s once per build")
    print(f"a stage in its own process: TensorFlow import {med(imports):.2f} s + dataset of {args.recipe} "
          f"{med(datas):.2f} s = {med(imports) + med(datas):.2f} s per distributed stage "
          f"(whole process {med(walls):.2f} s)")
    if args.no_tests:
        return
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-q", "tests/test_distributed_build.py", "-p", "no:cacheprovider"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    print(f"$ {' '.join(cmd[2:])}\n  {tail}  ({time.perf_counter() - start:.0f} s wall)")


if __name__ == "__main__":
    main()
