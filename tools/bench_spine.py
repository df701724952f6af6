"""Issue #11 (spine) figures in one run: layer contracts, the two-worker test, the resume tests.

    python tools/bench_spine.py [--model runs/quickstart/student_int8.tflite ...]

Prints, each with the command it ran:

* ``lint-imports``: the layer contracts of pyproject.toml, kept/broken;
* the two-worker MultiWorkerMirroredStrategy test (two real processes on 127.0.0.1 with
  ``TF_CONFIG``): its wall time (target <= 120 s in CI);
* the two SIGKILL resume tests (a real training process killed in epoch 3 of 4, and a
  real ``edgecnn build`` killed after student epoch 2 of 4): pass/fail, wall time, and the
  accuracies they print (resumed vs uninterrupted).

* with ``--model``: how many tensors of each model carry -1 (a dynamic size) in their
  ``shape_signature`` (target 0: ``edgetpu_compiler`` only takes static shapes).

The second-build-into-a-new---out figure is ``tools/bench_quickstart.py --second-out``.
Run it on an otherwise idle machine: on two cores a concurrent job doubles every time.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TESTS = {
    "two-worker MultiWorkerMirroredStrategy distillation":
        "tests/test_distribute.py::test_two_workers_distill_to_identical_weights_and_only_the_chief_writes",
    "training process SIGKILLed in epoch 3/4, resumed":
        "tests/test_engine.py::test_a_run_killed_in_epoch_3_resumes_there_and_matches_an_uninterrupted_run",
    "edgecnn build SIGKILLed after student epoch 2/4, resumed":
        "tests/test_build.py::test_a_build_killed_during_student_training_resumes_at_the_last_finished_epoch",
}


def run(argv: list[str]) -> tuple[int, str, float]:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start


def dynamic_tensors(model: str) -> tuple[int, int]:
    """(tensors with -1 in their shape_signature, all tensors) of a .tflite."""
    from edgecnn.runtime.interpreter import make_interpreter

    tensors = make_interpreter(model).get_tensor_details()
    return sum(1 for t in tensors if -1 in t["shape_signature"]), len(tensors)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="a .tflite to count dynamic tensors of")
    args = parser.parse_args(argv)
    failed = 0
    for model in args.model:
        dynamic, total = dynamic_tensors(model)
        print(f"{model}: {dynamic} of {total} tensors with -1 in shape_signature (target 0)")
        failed += dynamic != 0
    code, out, secs = run([str(BIN / "lint-imports"), "--no-cache"])
    summary = re.search(r"Contracts: (\d+) kept, (\d+) broken", out)
    print(f"$ lint-imports --no-cache\n  {summary.group(0) if summary else out.strip()[-300:]} ({secs:.1f} s)")
    failed += code != 0
    for label, node in TESTS.items():
        argv = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", node]
        code, out, secs = run(argv)
        status = "passed" if code == 0 else f"FAILED (exit {code})"
        print(f"$ python -m pytest -q -s {node}\n  {label}: {status} in {secs:.1f} s (whole process)")
        for line in out.splitlines():
            if "accuracy" in line and ("resumed" in line or "uninterrupted" in line):
                print(f"  {line.strip()}")
        if code != 0:
            print("\n".join("  | " + ln for ln in out.splitlines()[-15:]))
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
