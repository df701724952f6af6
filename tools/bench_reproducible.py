"""Reproducibility: build one recipe twice into two new directories, compare every file's sha256.

    python tools/bench_reproducible.py [--recipe recipes/quickstart.yaml] [--out /tmp/edgecnn-repro]
                                       [--set KEY=VALUE ...]

Target (issue #10): every deterministic artifact has the same sha256 in both builds. The
two builds run one after the other, each in its own process (``edgecnn build``), so a
result that depends on process state (seeds, dates, thread pools) shows up as a
difference. Files that record this build rather than its result differ by design and are
listed as such, not counted: the reports (``report.json``, ``report.md``: build date and
wall times), the stage records and the build log (finish times), the input-hash cache
(inode numbers and change times), the lock file (PID); for ``manifest.json`` its
``artifacts`` section is compared instead of its bytes.

Exit status 0 when every deterministic file matches, 1 otherwise. The quickstart takes
about five minutes of CPU per build; the output directories are deleted first when
edgecnn made them (``.edgecnn-owned``), and the script refuses any other existing folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Files whose content is about the build (dates, timings, PIDs, inodes), not its result.
_RECORDS = {
    "report.json": "build date and wall times",
    "report.md": "build date and wall times",
    "manifest.json": "lists the reports' sha256 (its 'artifacts' section is compared below)",
    "logs/build.log": "progress with wall times",
    ".edgecnn-lock": "PID of the last build",
    "stages/input_hashes.json": "inode numbers and change times of input files",
}


def _why_not_compared(rel: str) -> str | None:
    if rel in _RECORDS:
        return _RECORDS[rel]
    if rel.startswith("stages/") and rel.endswith(".json"):
        return "stage record: finish time and wall time"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(run: Path) -> dict[str, str]:
    return {p.relative_to(run).as_posix(): _sha256(p) for p in sorted(run.rglob("*")) if p.is_file()}


def _fresh(out: Path) -> None:
    if out.exists():
        if not (out / ".edgecnn-owned").is_file():
            sys.exit(f"{out}: exists and edgecnn did not create it; choose another --out")
        shutil.rmtree(out)


def _build(recipe: str, out: Path, overrides: list[str]) -> float:
    """One ``edgecnn build`` in its own process; its output goes to ``<out>.log``."""
    edgecnn = str(Path(sys.executable).with_name("edgecnn"))
    command = [edgecnn, "build", recipe, "--out", str(out), "--quiet"]
    for item in overrides:
        command += ["--set", item]
    log = out.with_name(out.name + ".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    # No shared stage cache: the second build must compute every stage itself, or it would
    # only restore the first build's files and prove nothing.
    env = {**os.environ, "EDGECNN_CACHE": "off"}
    with open(log, "w") as fh:
        proc = subprocess.run(command, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        sys.exit(f"edgecnn build {recipe} --out {out} failed ({proc.returncode}); see {log}")
    return time.perf_counter() - start


def compare_runs(a: Path, b: Path) -> tuple[list[dict], bool]:
    """One row per file of either run: its sha256 in each and whether it counts.

    Returns:
        ``(rows, ok)``: ok when every compared file matches and both runs hold the same files.
    """
    fa, fb = _files(a), _files(b)
    rows, ok = [], True
    for rel in sorted(set(fa) | set(fb)):
        why = _why_not_compared(rel)
        same = fa.get(rel) == fb.get(rel)
        if why is None and not same:
            ok = False
        rows.append({"file": rel, "a": fa.get(rel), "b": fb.get(rel), "same": same, "compared": why is None,
                     "not_compared_because": why})
    ma, mb = (json.loads((run / "manifest.json").read_text()).get("artifacts") for run in (a, b))
    same = ma == mb
    ok = ok and same
    rows.append({"file": "manifest.json#artifacts", "a": None, "b": None, "same": same, "compared": True,
                 "not_compared_because": None})
    return rows, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/quickstart.yaml")
    parser.add_argument("--out", default="/tmp/edgecnn-repro", help="parent of the two run directories a/ and b/")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    base = Path(args.out)
    runs = [base / "a", base / "b"]
    walls = []
    for run in runs:
        _fresh(run)
        walls.append(_build(args.recipe, run, args.overrides))
    rows, ok = compare_runs(*runs)
    if args.json:
        print(json.dumps({"recipe": args.recipe, "build_s": [round(w, 1) for w in walls], "identical": ok,
                          "files": rows}, indent=2))
        return 0 if ok else 1
    print(f"{args.recipe}: built twice ({walls[0]:.1f} s, {walls[1]:.1f} s) into {runs[0]} and {runs[1]}")
    for row in rows:
        if row["compared"]:
            mark = "same     " if row["same"] else "DIFFERENT"
            digest = (row["a"] or "-")[:16] if row["same"] else f"{(row['a'] or '-')[:16]} vs {(row['b'] or '-')[:16]}"
            print(f"  {mark} {row['file']:<40} {digest if row['a'] or row['b'] else ''}")
    for row in rows:
        if not row["compared"]:
            print(f"  (not compared) {row['file']:<32} {'same' if row['same'] else 'differs'}: "
                  f"{row['not_compared_because']}")
    print("every deterministic artifact is identical" if ok else "SOME DETERMINISTIC ARTIFACTS DIFFER")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
