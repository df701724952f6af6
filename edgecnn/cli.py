"""The ``edgecnn`` command: parse arguments, call the library, print. No logic lives here.

Strings become typed values here, once: a ``--target`` is a
:class:`~edgecnn.targets.Target` (:class:`TargetParam`), a file or folder argument a
:class:`~pathlib.Path`; the library takes those and never parses them again.

Module-level imports are kept to click and the standard library so ``edgecnn --help``
and ``edgecnn validate`` never import TensorFlow.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import click

from edgecnn.errors import DeviceError, EdgecnnError, FilesystemError
from edgecnn.targets import Target, parse_target

# errno name -> what a person should do about it.
_OS_ERROR_FIXES = {
    "EROFS": "the file system is read-only; choose a writable location",
    "ENOSPC": "the disk is full; free some space or choose another disk",
    "EDQUOT": "the disk quota is exhausted; free some space or choose another disk",
    "EACCES": "permission denied; choose a location you can write to, or fix its permissions",
    "EPERM": "operation not permitted; choose a location you can write to",
    "ENOTDIR": "a path component is a file, not a folder; choose another path",
    "EISDIR": "this is a folder, not a file; give a file path",
    "ENOENT": "no such file or folder; check the path",
    "EEXIST": "already exists; choose another path",
    "ENAMETOOLONG": "the path is too long; choose a shorter one",
    "EMFILE": "too many open files; raise the limit (ulimit -n) and retry",
}

INTERNAL_ERROR_EXIT = 70


def describe_os_error(exc: OSError) -> str:
    """One line: the path, the OS's reason and the fix (for the error line of every command)."""
    import errno as _errno

    name = _errno.errorcode.get(exc.errno or 0, "")
    path = exc.filename if exc.filename is not None else "(unknown path)"
    reason = exc.strerror or str(exc)
    fix = _OS_ERROR_FIXES.get(name, "check the path and retry")
    return f"{path}: {reason}{f' ({name})' if name else ''}; {fix}"


def _stdout_is_gone() -> bool:
    """Whether standard output is a pipe whose reader has closed it (the write end then polls
    as an error); if so, point it at /dev/null so that the interpreter's flush at exit does
    not fail a second time."""
    import os
    import select

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    if not hasattr(select, "poll"):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    if not any(events & select.POLLERR for _, events in poller.poll(0)):
        return False
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    return True


class _Cli(click.Group):
    """Turns :class:`EdgecnnError` into one line on stderr and its exit code."""

    def invoke(self, ctx: click.Context):
        debug = bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except EdgecnnError as exc:
            if debug:
                traceback.print_exc()
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted; finished stages are cached, partial files were discarded", err=True)
            sys.exit(130)
        except click.UsageError as exc:
            # One line like every other bad input (click's own format is three: usage, hint, error).
            where = f"{exc.ctx.command_path}: " if exc.ctx is not None else ""
            click.echo(f"error: {where}{exc.format_message()} (see --help)", err=True)
            sys.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, SystemExit):
            raise
        except BrokenPipeError as exc:
            if not _stdout_is_gone():
                click.echo(f"error: {describe_os_error(exc)}", err=True)
                sys.exit(FilesystemError.exit_code)
            # The reader of the output left (`edgecnn validate r.yaml | head -3`): stop quietly,
            # as other Unix tools do, with the status a shell gives a command SIGPIPE ended.
            sys.exit(128 + 13)
        except OSError as exc:
            # Read-only folders, full disks, permissions, a file where a folder belongs:
            # the user's environment, not an edgecnn bug. One line naming the path.
            if debug:
                traceback.print_exc()
            click.echo(f"error: {describe_os_error(exc)}", err=True)
            sys.exit(FilesystemError.exit_code)
        except Exception as exc:  # an edgecnn bug or an unexpected library failure
            if debug:
                traceback.print_exc()
            else:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                click.echo(f"internal error: {type(exc).__name__}: {first} (run with --debug for the traceback "
                           "and report it)", err=True)
            sys.exit(INTERNAL_ERROR_EXIT)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show Python tracebacks on errors (and native log lines).")
@click.option("-v", "--verbose", is_flag=True, help="Show TensorFlow's and the converter's native log lines.")
@click.version_option(package_name="edgecnn")
def main(debug: bool, verbose: bool) -> None:
    """edgecnn: images and a big model in, a small accurate int8 .tflite out, measured."""
    import os

    if debug:
        os.environ["EDGECNN_DEBUG"] = "1"  # keeps TensorFlow's native log lines visible
    if verbose or debug:
        os.environ["EDGECNN_VERBOSE"] = "1"


class BadTargetError(click.BadParameter):
    """A ``--target`` that does not parse: a usage error naming the option, with the exit
    code of every other target problem (5, :class:`~edgecnn.errors.DeviceError`)."""

    exit_code = DeviceError.exit_code


class TargetParam(click.ParamType):
    """A ``--target`` option: the text is parsed here into a :class:`~edgecnn.targets.Target`
    (:func:`~edgecnn.targets.parse_target`), so the library gets the parsed target and a
    typo fails before anything else is opened or run."""

    name = "target"

    def convert(self, value, param, ctx) -> Target:
        if isinstance(value, Target):
            return value
        try:
            return parse_target(value)
        except DeviceError as exc:
            raise BadTargetError(str(exc), ctx=ctx, param=param) from None


TARGET = TargetParam()


def _ssh_options(command):
    """The SSH connection options bench and verify share (one definition, same help)."""
    options = [
        click.option("--remote-python", default="python3", show_default=True,
                     help="ssh targets: the device's Python (a name on its PATH, or e.g. ~/venv/bin/python)."),
        click.option("--identity", type=click.Path(dir_okay=False, path_type=Path),
                     help="ssh targets: private key file (ssh -i)."),
        click.option("--known-hosts", type=click.Path(dir_okay=False, path_type=Path),
                     help="ssh targets: known-hosts file to check host keys in (default ~/.ssh/known_hosts)."),
        click.option("--accept-new-host-key", is_flag=True,
                     help="ssh targets: trust and record the key of a host never seen before (a changed key is "
                          "still refused)."),
        click.option("--connect-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
                     show_default=True, help="ssh targets: seconds to wait for the connection."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _ssh_settings(remote_python: str, identity: Path | None, known_hosts: Path | None, accept_new_host_key: bool,
                  connect_timeout: float):
    from edgecnn.bench.harness import SshOptions

    return SshOptions(remote_python=remote_python, identity=identity, known_hosts=known_hosts,
                      accept_new_host_key=accept_new_host_key, connect_timeout_s=connect_timeout)


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Run directory (default runs/<recipe name>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value, e.g. --set distill.temperature=2 (repeatable).")
@click.option("-q", "--quiet", is_flag=True, help="No live progress bars; one line per epoch (for CI logs).")
@click.option("--wait/--no-wait", default=False, show_default=True,
              help="When another build holds the run directory: wait for it to finish, or fail at once.")
def build(recipe: str, out_dir: str | None, overrides: tuple[str, ...], quiet: bool, wait: bool) -> None:
    """Run the pipeline of RECIPE: data, teacher, student, export, quantize, evaluate, report.

    The run directory is new, empty or one edgecnn made (a folder of other files is
    refused). One build at a time uses it: another one fails at once (exit 8) or, with
    --wait, waits and then re-uses what the first one built.
    """
    from edgecnn.pipeline import build as run_build
    from edgecnn.progress import Progress

    result = run_build(recipe, out_dir=out_dir, overrides=overrides, progress=Progress(quiet=quiet), wait=wait)
    if result.report.get("worker_only"):
        click.echo(f"run directory: {result.out_dir} (this worker trained; the chief writes the artifacts)")
        return
    click.echo(f"run directory: {result.out_dir}")
    for model in result.report["models"]:
        if model["kind"] == "tflite":
            acc = f"{model['accuracy'] * 100:.2f}%" if model["accuracy"] is not None else "-"
            click.echo(f"  {result.out_dir / model['path']}  ({model['size_bytes']} bytes, test accuracy {acc})")
    click.echo(f"report: {result.report_md_path} (JSON: {result.report_path.name})")


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe value (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the resolved recipe and plan as JSON.")
def validate(recipe: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Check RECIPE and print the resolved plan, without importing TensorFlow."""
    from edgecnn.pipeline import planned_stages
    from edgecnn.recipe import layer_name_keys, load_recipe, recipe_warnings

    r = load_recipe(recipe, overrides)
    plan = planned_stages(r)
    for warning in recipe_warnings(r):
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps({"recipe": r.to_dict(), "recipe_hash": r.recipe_hash,
                               "stages": [{"name": s.name, "does": s.describe(r)} for s in plan]}, indent=2))
        return
    click.echo(f"{recipe}: valid recipe '{r.name}' (hash {r.recipe_hash[:12]})")
    for i, stage in enumerate(plan, start=1):
        click.echo(f"  {i}. {stage.name:<9} {stage.describe(r)}")
    named = layer_name_keys(r)
    if named:
        # Checking them needs the student built in TensorFlow, which validate never imports.
        click.echo(f"  layer names in {', '.join(named)} are checked against the student when the build starts")


@main.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--block", type=click.IntRange(2, 64), default=4, show_default=True,
              help="N of the M:N pattern to check in the sparsity read-back (fewest zeros per N weights).")
def inspect_command(model: str, as_json: bool, block: int) -> None:
    """Show a .tflite file's inputs, outputs, quantization, ops, tensor types and weight sparsity."""
    from edgecnn.tflite.reader import format_summary, inspect_tflite, sparsity_summary, summary_to_dict, weight_sparsity

    summary = inspect_tflite(model)
    meta = None
    if "TFLITE_METADATA" in summary.metadata_names:
        from edgecnn.tflite.metadata import read_metadata

        meta = read_metadata(model)
    weights = weight_sparsity(model, block=block)
    overall = sparsity_summary(weights, min_sparsity=0.3)
    if as_json:
        per_tensor = [{"tensor": w.tensor, "op": w.op, "dtype": w.dtype, "shape": list(w.shape),
                       "elements": w.elements, "zeros": w.zeros, "sparsity": round(w.sparsity, 5),
                       f"min_zeros_per_{block}": w.min_zeros_per_block, "scales": w.scales} for w in weights]
        click.echo(json.dumps({**summary_to_dict(summary), "tflite_metadata": meta,
                               "weight_sparsity": {**overall, "tensors": per_tensor}}, indent=2))
        return
    click.echo(format_summary(summary))
    click.echo(f"weight sparsity (read from the file): {overall['sparsity']:.1%} of {overall['weights']:,} weights zero"
               + (f"; {overall['pruned_tensors']} tensors at >= 30 %: {overall['pruned_sparsity']:.1%} zero"
                  if overall["pruned_tensors"] else ""))
    if overall["per_channel_tensors"] or overall["per_tensor_tensors"]:
        click.echo(f"weight scales: per channel in {overall['per_channel_tensors']} tensors, "
                   f"per tensor in {overall['per_tensor_tensors']}")
    for w in weights:
        if w.sparsity >= 0.3:
            pattern = f", >= {w.min_zeros_per_block} zeros in every {block} along input channels" \
                if w.min_zeros_per_block else ""
            click.echo(f"  {w.op:<17} {w.sparsity:6.1%}  {w.tensor}{pattern}")
    if meta:
        labels = meta.get("labels") or []
        click.echo(f"tflite metadata: {meta.get('name')} v{meta.get('version')}, {meta.get('color_space')} input, "
                   f"mean {meta.get('mean')} std {meta.get('std')}")
        click.echo(f"  labels ({len(labels)}): {', '.join(labels[:10])}{' ...' if len(labels) > 10 else ''}")


@main.group()
def data() -> None:
    """Datasets: find or download them."""


@data.command("download")
@click.argument("name", type=click.Choice(["fashion_mnist"]))
@click.option("--url", metavar="URL", default=None,
              help="Mirror holding the four .gz files (default $EDGECNN_DATA_URL, else the URL Keras uses).")
@click.option("--to", "to", metavar="DIR", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Download the missing files into DIR, without searching for a local copy first.")
def data_download(name: str, url: str | None, to: Path | None) -> None:
    """Make NAME available offline.

    Without --to it finds a local copy first (see `edgecnn build`'s search order), else
    downloads into the Keras cache. Each download is checked against the sha256 of the
    official decompressed files and renamed into place only then.
    """
    from edgecnn.data.fashion_mnist import download_fashion_mnist, locate_fashion_mnist

    folder = download_fashion_mnist(to, base_url=url) if to is not None else locate_fashion_mnist(None, download=True, base_url=url)
    click.echo(f"{name}: {folder}")


@main.command()
def schema() -> None:
    """Print the recipe JSON Schema (for editor completion)."""
    from edgecnn.recipe import recipe_schema

    click.echo(json.dumps(recipe_schema(), indent=2))


@main.command("list")
def list_models() -> None:
    """List the registered students and teachers."""
    from edgecnn.models.registry import list_students, list_teachers

    click.echo("students: " + ", ".join(list_students()))
    click.echo("teachers: " + ", ".join(list_teachers()))


@main.command("bench")
@click.argument("model", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", "targets", type=TARGET, multiple=True, default=("local",), show_default=True,
              help="local, ssh://user@host[:port], coral[:usb|:pci][:N] or android[:SERIAL]; repeat to "
                   "benchmark on several targets in one go.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="CPU threads.")
@click.option("--runs", type=click.IntRange(min=1), default=100, show_default=True, help="Timed inferences.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True,
              help="Untimed inferences before timing.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=300.0,
              show_default=True, help="Seconds before the benchmark process is killed (per target).")
@click.option("--inputs", "inputs_npz", type=click.Path(dir_okay=False, path_type=Path),
              help=".npz with x (and y labels): device-side outputs checksum and accuracy.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (a list for several targets).")
@click.option("--out", "out_path", type=click.Path(path_type=Path),
              help="Append each result to this run directory (bench.jsonl) or .jsonl file.")
@click.option("--compare", "compare_paths", nargs=2, type=click.Path(dir_okay=False), metavar="A B",
              help="Compare two saved results (the last one in each file) instead of running.")
@_ssh_options
@click.option("--benchmark-binary", type=click.Path(dir_okay=False, path_type=Path),
              help="android targets: TFLite benchmark_model for the phone (else /data/local/tmp/benchmark_model).")
@click.option("--android-delegate", type=click.Choice(["none", "xnnpack", "gpu", "nnapi"]), default="none",
              show_default=True, help="android targets: benchmark_model delegate.")
@click.option("--debug-hang-target", "hang_targets", multiple=True, hidden=True)  # test hook: runner sleeps
def bench(model: Path | None, targets: tuple[Target, ...], threads: int, runs: int, warmup: int, timeout_s: float,
          inputs_npz: Path | None, as_json: bool, out_path: Path | None, compare_paths: tuple[str, ...],
          remote_python: str, identity: Path | None, known_hosts: Path | None, accept_new_host_key: bool,
          connect_timeout: float, benchmark_binary: Path | None, android_delegate: str,
          hang_targets: tuple[str, ...]) -> None:
    """Benchmark MODEL.tflite on one or more targets: latency, init, memory, device-side accuracy.

    Every target is checked before the first runs; a target that fails on the device is
    reported and the next one still runs. The exit code is non-zero when any failed.
    """
    if compare_paths:
        from edgecnn.bench.schema import compare, format_compare, load_results

        a, b = (load_results(p) for p in compare_paths)
        if not a or not b:
            raise DeviceError("a results file holds no results; pass files written by 'edgecnn bench --json' or --out")
        rows = compare(a[-1], b[-1])
        click.echo(json.dumps([row.__dict__ for row in rows], indent=2) if as_json
                   else format_compare(rows, *compare_paths))
        return
    if model is None:
        raise click.UsageError("give MODEL.tflite to benchmark, or --compare A.json B.json")
    from edgecnn.bench.harness import AdbOptions, run_benchmarks
    from edgecnn.bench.schema import append_result, format_result

    ssh = _ssh_settings(remote_python, identity, known_hosts, accept_new_host_key, connect_timeout)
    adb = AdbOptions(benchmark_binary=benchmark_binary, delegate=android_delegate)

    if out_path:
        from edgecnn.bench.schema import check_results_target

        check_results_target(out_path)  # a bad --out fails now, not after the benchmark ran

    def report(result: dict) -> None:
        if out_path:
            click.echo(f"result appended to {append_result(out_path, result)}", err=True)
        if not as_json:
            click.echo(format_result(result))

    results = run_benchmarks(model, targets, on_result=report, threads=threads, runs=runs, warmup=warmup,
                             timeout_s=timeout_s, inputs_npz=inputs_npz, ssh=ssh, adb=adb,
                             extra_runner_args={t: ["--debug-hang"] for t in hang_targets})
    if as_json:
        click.echo(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    failed = [r["target"] for r in results if r["status"] != "ok"]
    if failed:
        if len(results) > 1:
            click.echo(f"{len(failed)} of {len(results)} targets failed: {', '.join(failed)}", err=True)
        sys.exit(DeviceError.exit_code)


@main.command("bundle")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Bundle folder to write: new or empty (an edgecnn bundle there needs --force).")
@click.option("--force", is_flag=True, help="Replace an existing bundle edgecnn wrote (never another folder).")
@click.option("--model", "which", type=click.Choice(["int8", "float32", "float16", "all"]), default="int8",
              show_default=True,
              help="Which model(s) of the run to ship.")
@click.option("--samples", type=click.IntRange(min=1), default=32, show_default=True, help="Golden test images per model.")
def bundle(run_dir: str, out_dir: str, force: bool, which: str, samples: int) -> None:
    """Pack RUN_DIR's model, labels, golden samples and the device runner into a checked folder."""
    from edgecnn.export.bundle import write_bundle

    out = write_bundle(run_dir, out_dir, model=which, samples=samples, force=force)
    click.echo(f"bundle: {out} (check it with: edgecnn verify {out})")


@main.command("verify")
@click.argument("bundle_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--target", type=TARGET, default="local", show_default=True,
              help="Where to run the golden inputs: local, coral[:usb|:pci] or ssh://user@host[:port].")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="Interpreter threads.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=300.0, show_default=True,
              help="Seconds before a runner process is killed.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--exact", is_flag=True, help="Require bit-exact outputs (same runtime, version and CPU as the host).")
@click.option("--tolerance-steps", type=click.IntRange(min=0),
              help="int8 models: allowed output deviation in quantization steps, the same for every value "
                   "(default ceil(3*sqrt(operators)), widened near ties where a final softmax is steep).")
@click.option("--float-tolerance", type=click.FloatRange(min=0, min_open=True),
              help="float models: allowed absolute output deviation (default from the model's depth).")
@click.option("--min-top1", type=click.FloatRange(min=0, max=1), default=0.9, show_default=True,
              help="Least share of golden samples whose top-1 class must agree with the host's.")
@_ssh_options
def verify(bundle_dir: Path, target: Target, threads: int, timeout_s: float, as_json: bool, exact: bool,
           tolerance_steps: int | None, float_tolerance: float | None, min_top1: float, remote_python: str,
           identity: Path | None, known_hosts: Path | None, accept_new_host_key: bool, connect_timeout: float) -> None:
    """Check BUNDLE_DIR's sha256s, then run its golden inputs on the target and compare with the host's outputs."""
    from edgecnn.bench.verify import format_verify, verify_bundle

    ssh = _ssh_settings(remote_python, identity, known_hosts, accept_new_host_key, connect_timeout)
    report = verify_bundle(bundle_dir, target=target, timeout_s=timeout_s, threads=threads, ssh=ssh, exact=exact,
                           tolerance_steps=tolerance_steps, float_atol=float_tolerance, min_top1=min_top1)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_verify(report))
    if not report.ok:
        sys.exit(DeviceError.exit_code)


@main.command("demo")
@click.option("--model", required=True, type=click.Path(), help="A .tflite with metadata, or a bundle folder.")
@click.option("--source", required=True, help="Camera index (0), /dev/videoN, a video file or a folder of images.")
@click.option("--top-k", "top", type=click.IntRange(min=1), default=3, show_default=True, help="Labels to show.")
@click.option("--threshold", type=float, default=0.0, show_default=True, help="Hide labels scoring below this.")
@click.option("--threads", type=click.IntRange(min=1), help="Interpreter threads (default: the runtime's).")
@click.option("--delegate", help="'edgetpu' (for *_edgetpu.tflite), or the path of a delegate library.")
@click.option("--headless", is_flag=True, help="No window; use --out and/or --log.")
@click.option("--out", "out_video", type=click.Path(dir_okay=False), help="Write the annotated video (.mp4 or .avi).")
@click.option("--log", "log_path", type=click.Path(dir_okay=False),
              help="Write one JSON line per frame: predictions and timings.")
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop after this many frames.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def demo(model: str, source: str, top: int, threshold: float, threads: int | None, delegate: str | None,
         headless: bool, out_video: str | None, log_path: str | None, max_frames: int | None, as_json: bool) -> None:
    """Classify camera frames live: top-k labels, inference time and FPS on the picture (q or Esc quits)."""
    from edgecnn.demo.app import format_summary, run_demo

    summary = run_demo(model, source, top=top, threshold=threshold, threads=threads, delegate=delegate,
                       headless=headless, out=out_video, log=log_path, max_frames=max_frames)
    click.echo(json.dumps(summary.to_dict(), indent=2) if as_json else format_summary(summary))


@main.command("compile")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", type=click.Choice(["edgetpu"]), default="edgetpu", show_default=True,
              help="Accelerator to compile for (the Coral Edge TPU, with edgetpu_compiler).")
@click.option("--fail-on-cpu-ops", is_flag=True, help="Fail (exit 4) when any operation would run on the CPU.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Output folder (default: the model's).")
def compile_command(model: str, target: str, fail_on_cpu_ops: bool, out_dir: str | None) -> None:
    """Compile MODEL.tflite (full-integer int8) for an accelerator; print where ops run."""
    from edgecnn.export.edgetpu import compile_edgetpu, format_compile_summary

    result = compile_edgetpu(model, out_dir, fail_on_cpu_ops=fail_on_cpu_ops)
    click.echo(format_compile_summary(result.parsed, result.model))
    click.echo(f"report: {result.report}" + (f" (compiler log: {result.log})" if result.log else ""))


@main.group("cache")
def cache_group() -> None:
    """The shared stage cache (stages/ in $EDGECNN_CACHE, default ~/.cache/edgecnn/stages)."""


def _shared_cache():
    from edgecnn.cache import CACHE_ENV, default_cache

    cache = default_cache()
    if cache is None:
        raise click.ClickException(f"the shared stage cache is turned off ({CACHE_ENV}=off)")
    return cache


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


@cache_group.command("info")
def cache_info() -> None:
    """Where the cache is, its entries and objects, and their size by stage."""
    info = _shared_cache().info()
    click.echo(f"location: {info.root}" + ("" if info.exists else " (not created yet)"))
    click.echo(f"entries:  {info.entries}")
    click.echo(f"objects:  {info.objects} ({_mib(info.total_bytes)})")
    if info.work_dirs:
        click.echo(f"unfinished stage work folders: {info.work_dirs}")
    for stage, row in sorted(info.by_stage.items()):
        click.echo(f"  {stage:<10} {row['entries']:>4} entries  {_mib(row['bytes'])}")


@cache_group.command("prune")
@click.option("--older-than", "days", type=click.FloatRange(min=0), metavar="DAYS",
              help="Remove entries unused for DAYS days.")
@click.option("--max-size", "size", metavar="SIZE", help="Then remove least recently used entries until the cache takes at "
                                         "most SIZE (e.g. 500M, 2G).")
@click.option("--dry-run", is_flag=True, help="Only print what would be removed.")
def cache_prune(days: float | None, size: str | None, dry_run: bool) -> None:
    """Trim the cache by age and size (run directories keep their files: hard links or copies)."""
    from edgecnn.cache import parse_size

    try:
        max_bytes = parse_size(size) if size is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-size") from None
    if days is None and max_bytes is None:
        raise click.UsageError("give --older-than DAYS and/or --max-size SIZE")
    result = _shared_cache().prune(days * 86400 if days is not None else None, max_bytes, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for entry in result.entries:
        click.echo(f"{verb} {entry}")
    click.echo(f"{verb} {len(result.entries)} entries, {result.objects} objects ({_mib(result.freed_bytes)} freed; "
               f"objects still linked from run directories stay there), {result.other} stale work folders")


if __name__ == "__main__":  # pragma: no cover
    main()
