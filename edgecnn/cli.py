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


if __name__ == "__main__":  # pragma: no cover
    main()
