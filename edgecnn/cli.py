"""The ``edgecnn`` command: parse arguments, call the library, print. No logic lives here.

Module-level imports are kept to click and the standard library so ``edgecnn --help``
and ``edgecnn validate`` never import TensorFlow.
"""

from __future__ import annotations

import json
import sys
import traceback

import click

from edgecnn.errors import EdgecnnError

INTERNAL_ERROR_EXIT = 70


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
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, SystemExit):
            raise
        except Exception as exc:  # an edgecnn bug or an unexpected library failure
            if debug:
                traceback.print_exc()
            else:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                click.echo(f"internal error: {type(exc).__name__}: {first} (run with --debug for the traceback "
                           "and report it)", err=True)
            sys.exit(INTERNAL_ERROR_EXIT)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show Python tracebacks on errors.")
@click.version_option(package_name="edgecnn")
def main(debug: bool) -> None:
    """edgecnn: images and a big model in, a small accurate int8 .tflite out, measured."""
    if debug:
        import os

        os.environ["EDGECNN_DEBUG"] = "1"  # keeps TensorFlow's native log lines visible


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Run directory (default runs/<recipe name>).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value, e.g. --set distill.temperature=2 (repeatable).")
@click.option("-q", "--quiet", is_flag=True, help="No live progress bars; one line per epoch (for CI logs).")
def build(recipe: str, out_dir: str | None, overrides: tuple[str, ...], quiet: bool) -> None:
    """Run the pipeline of RECIPE: data, teacher, student, export, quantize, evaluate, report."""
    from edgecnn.pipeline import build as run_build
    from edgecnn.progress import Progress

    result = run_build(recipe, out_dir=out_dir, overrides=overrides, progress=Progress(quiet=quiet))
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
    from edgecnn.recipe import load_recipe

    r = load_recipe(recipe, overrides)
    plan = planned_stages(r)
    if as_json:
        click.echo(json.dumps({"recipe": r.to_dict(), "recipe_hash": r.recipe_hash,
                               "stages": [{"name": s.name, "does": s.describe(r)} for s in plan]}, indent=2))
        return
    click.echo(f"{recipe}: valid recipe '{r.name}' (hash {r.recipe_hash[:12]})")
    for i, stage in enumerate(plan, start=1):
        click.echo(f"  {i}. {stage.name:<9} {stage.describe(r)}")


@main.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect_command(model: str, as_json: bool) -> None:
    """Show a .tflite file's inputs, outputs, quantization, ops and tensor types."""
    from edgecnn.export.inspect_tflite import format_summary, inspect_tflite, summary_to_dict

    summary = inspect_tflite(model)
    click.echo(json.dumps(summary_to_dict(summary), indent=2) if as_json else format_summary(summary))


@main.group()
def data() -> None:
    """Datasets: find or download them."""


@data.command("download")
@click.argument("name", type=click.Choice(["fashion_mnist"]))
def data_download(name: str) -> None:
    """Make NAME available offline (finds a local copy first, else downloads and verifies sha256)."""
    from edgecnn.data.fashion_mnist import locate_fashion_mnist

    click.echo(f"{name}: {locate_fashion_mnist(None, download=True)}")


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
@click.argument("model", required=False, type=click.Path(dir_okay=False))
@click.option("--target", default="local", show_default=True,
              help="local, ssh://user@host[:port], coral[:usb|:pci][:N] or android[:SERIAL].")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="CPU threads.")
@click.option("--runs", type=click.IntRange(min=1), default=100, show_default=True, help="Timed inferences.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True,
              help="Untimed inferences before timing.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=300.0,
              show_default=True, help="Seconds before the benchmark process is killed.")
@click.option("--inputs", "inputs_npz", type=click.Path(dir_okay=False),
              help=".npz with x (and y labels): device-side outputs checksum and accuracy.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--out", "out_path", type=click.Path(),
              help="Append the result to this run directory (bench.jsonl) or .jsonl file.")
@click.option("--compare", "compare_paths", nargs=2, type=click.Path(dir_okay=False), metavar="A B",
              help="Compare two saved results (the last one in each file) instead of running.")
def bench(model: str | None, target: str, threads: int, runs: int, warmup: int, timeout_s: float,
          inputs_npz: str | None, as_json: bool, out_path: str | None, compare_paths: tuple[str, ...]) -> None:
    """Benchmark MODEL.tflite on a target: latency, init, memory, device-side accuracy."""
    from edgecnn.errors import DeviceError

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
    from edgecnn.bench.harness import run_benchmark
    from edgecnn.bench.schema import append_result, format_result

    result = run_benchmark(model, target, threads=threads, runs=runs, warmup=warmup,
                           timeout_s=timeout_s, inputs_npz=inputs_npz)
    if out_path:
        click.echo(f"result appended to {append_result(out_path, result)}", err=True)
    click.echo(json.dumps(result, indent=2) if as_json else format_result(result))
    if result["status"] != "ok":
        sys.exit(DeviceError.exit_code)


if __name__ == "__main__":  # pragma: no cover
    main()
