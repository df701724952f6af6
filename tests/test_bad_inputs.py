"""The bad-input corpus: what a new user gets wrong, tried on the real CLI, case by case.

Every case asserts the contract of every edgecnn command with bad input:

* a non-zero exit code, and the documented one (2 recipe, 3 data, 4 model file,
  5 device, 6 missing dependency, 7 filesystem);
* exactly one ``error:`` line on stderr (``build`` also prints its progress on stderr:
  the error is then the last line and the only one that is not progress), no
  ``Traceback``, no ``internal error``;
* nothing lost: every file the user had in the case's folder is byte for byte the same
  afterwards (hashed before and after), and nothing half-written: no ``.tmp-*`` left and
  no new file outside a folder edgecnn marked as its own.

Commands that stay light (``validate``, ``inspect``, ``bundle``, ``verify``, ``bench``,
``compile``, ``demo``) run as real subprocesses; ``build`` cases that reach a stage
importing TensorFlow run in-process through click's ``CliRunner`` (the same
``edgecnn.cli.main``, the same output), so the corpus pays for one TensorFlow import.

Cases that fail today are marked ``xfail(strict=False)`` with the defect and the change
it needs; remove the mark when the fix lands.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner
from helpers import error_lines, run_edgecnn

REPO = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")

RECIPE, DATA, MODEL, DEVICE, MISSING, FILESYSTEM = 2, 3, 4, 5, 6, 7

# A command-line path of the wrong kind (a folder for a file, a file for a folder) is a
# usage error: click's check, turned into one line by the CLI, exit 2.
USAGE = 2


# --------------------------------------------------------------------------- the cases


@dataclass
class Workspace:
    """The case's own folder and the shared, read-only inputs it may copy from."""

    root: Path
    shared: dict

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
        return path

    def copy(self, key: str, name: str | None = None) -> Path:
        src = Path(self.shared[key])
        dst = self.root / (name or src.name)
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
        return dst

    def recipe(self, body: str, name: str = "r.yaml") -> Path:
        return self.write(name, body)

    def tiny_recipe(self, extra: str = "", name: str = "r.yaml") -> Path:
        from helpers import TINY_RECIPE

        return self.write(name, TINY_RECIPE + extra)

    def folder_recipe(self, folder: Path, name: str = "r.yaml") -> Path:
        """The tiny recipe reading an image folder (32x32 gray keeps decoding cheap)."""
        from helpers import TINY_RECIPE

        text = TINY_RECIPE.replace("data:\n", f"data:\n  source: image_folder\n  path: {folder}\n"
                                             "  image_size: 32\n  channels: 1\n", 1)
        return self.write(name, text)

    def images(self, folder: str, classes: dict[str, int], fmt: str = ".png") -> Path:
        """``classes``: class name -> number of small real PNG images to write."""
        import numpy as np

        png = self.shared["png"]
        for cls, n in classes.items():
            (self.root / folder / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (self.root / folder / cls / f"{i}{fmt}").write_bytes(png)
        return self.root / folder


@dataclass
class Case:
    id: str
    code: int
    argv: Callable[[Workspace], list]
    needles: tuple[str, ...] = ()
    inproc: bool = False  # run in this process (build cases that import TensorFlow)
    xfail: str | None = None
    env: dict = field(default_factory=dict)


CASES: list[Case] = []


def case(id: str, code: int, *needles: str, inproc: bool = False, xfail: str | None = None, env=None):
    def register(fn):
        CASES.append(Case(id, code, fn, needles, inproc, xfail, env or {}))
        return fn

    return register


def validate(ws: Workspace, body: str, *extra: str) -> list:
    return ["validate", ws.recipe(body), *extra]


GOOD = "name: ok\n"


# ----------------------------------------------------------------- recipes (validate)

def _recipe_case(id, body, *needles, code=RECIPE, extra=(), xfail=None):
    case(f"recipe-{id}", code, *needles, xfail=xfail)(lambda ws: validate(ws, body, *extra))


_recipe_case("yaml-unclosed-bracket", "name: a\ndata: {train_limit: 10\n", "malformed YAML")
_recipe_case("yaml-bad-indent", "name: a\ndata:\n  train_limit: 10\n bad: 1\n", "malformed YAML")
_recipe_case("yaml-tab-indent", "name: a\ndata:\n\ttrain_limit: 10\n", "malformed YAML")
_recipe_case("yaml-unclosed-quote", 'name: "a\n', "r.yaml")
_recipe_case("yaml-python-tag", "name: !!python/object/apply:os.system ['true']\n", "r.yaml")
_recipe_case("yaml-custom-tag", "name: !secret a\n", "r.yaml")
_recipe_case("empty-file", "", "empty")
_recipe_case("only-comments", "# nothing here\n", "r.yaml")
_recipe_case("top-level-list", "- name: a\n", "r.yaml")
_recipe_case("top-level-scalar", "hello\n", "r.yaml")
_recipe_case("missing-name", "seed: 1\n", "name")
_recipe_case("bad-name-characters", "name: 'a b/c'\n", "name")
_recipe_case("name-too-long", f"name: {'a' * 200}\n", "name")
_recipe_case("unknown-top-level-key", "name: a\ntempreature: 2\n", "tempreature")
_recipe_case("unknown-nested-key", "name: a\ndistill: {temprature: 2}\n", "temprature", "temperature")
_recipe_case("unknown-deep-key", "name: a\nteacher: {train: {epoch: 2}}\n", "epoch")
_recipe_case("seed-not-a-number", "name: a\nseed: abc\n", "seed")
_recipe_case("seed-negative", "name: a\nseed: -1\n", "seed")
_recipe_case("temperature-text", "name: a\ndistill: {temperature: hot}\n", "temperature")
_recipe_case("temperature-zero", "name: a\ndistill: {temperature: 0}\n", "temperature")
_recipe_case("alpha-above-one", "name: a\ndistill: {alpha: 2}\n", "alpha")
_recipe_case("epochs-negative", "name: a\nteacher: {train: {epochs: -1}}\n", "epochs")
_recipe_case("section-is-a-list", "name: a\ndata: [1, 2]\n", "data")
_recipe_case("section-is-a-number", "name: a\nstudent: 3\n", "student")
_recipe_case("io-dtype-unknown", "name: a\nquantize: {io_dtype: int4}\n", "io_dtype")
_recipe_case("export-format-unknown", "name: a\nexport: {formats: [int2]}\n", "formats")
_recipe_case("edgetpu-without-int8", "name: a\nexport: {formats: [edgetpu]}\nquantize: {int8: false}\n", "quantize.int8",
             "remove edgetpu")
_recipe_case("student-unknown", "name: a\nstudent: {architecture: mobilenet_v9}\n", "mobilenet_v9")
_recipe_case("teacher-unknown", "name: a\nteacher: {architecture: resnet9000}\n", "resnet9000")
_recipe_case("data-source-unknown", "name: a\ndata: {source: imagenet}\n", "source")
_recipe_case("image-folder-without-path", "name: a\ndata: {source: image_folder}\n", "data.path")
_recipe_case("data-path-missing", "name: a\ndata: {source: image_folder, path: /nonexistent/images}\n",
             "/nonexistent/images")
_recipe_case("teacher-path-missing", "name: a\nteacher: {path: /nonexistent/teacher.keras}\n",
             "/nonexistent/teacher.keras")
_recipe_case("channels-two", "name: a\ndata: {channels: 2}\n", "channels")
_recipe_case("prune-sparsity-one", "name: a\nprune: {sparsity: 1.0}\n", "prune.sparsity")
_recipe_case("prune-ends-before-it-begins", "name: a\nprune: {begin: 0.5, end: 0.2}\n", "end > begin")
_recipe_case("prune-m-by-n-backwards", "name: a\nprune: {m_by_n: [4, 2]}\n", "m_by_n")
_recipe_case("prune-channel-ratio-one", "name: a\nprune: {method: channels, ratio: 1.0}\n", "prune.ratio")
_recipe_case("max-drop-negative", "name: a\nquantize: {max_drop: -1}\n", "max_drop")
_recipe_case("max-drop-with-uint8-io", "name: a\nquantize: {max_drop: 0.5, io_dtype: uint8}\n", "quantize.max_drop",
             "io_dtype: int8")
_recipe_case("max-drop-without-validation", "name: a\nquantize: {max_drop: 0.5}\ndata: {validation_fraction: 0}\n",
             "data.validation_fraction")
_recipe_case("max-drop-without-int8", "name: a\nquantize: {max_drop: 0.5, int8: false}\n", "quantize.int8")
_recipe_case("weights-without-int8", "name: a\nquantize: {weights: per_tensor, int8: false}\n", "quantize.int8")
_recipe_case("weights-unknown", "name: a\nquantize: {weights: per_row}\n", "per_tensor")
_recipe_case("gate-attempts-zero", "name: a\nquantize: {max_drop: 0.5, gate_attempts: 0}\n", "gate_attempts")
_recipe_case("edgetpu-with-int4", "name: a\nexport: {formats: [edgetpu, int4]}\n", "edgetpu cannot run int4",
             "recipe of their own")
_recipe_case("edgetpu-with-int16x8", "name: a\nexport: {formats: [int16x8, edgetpu]}\n", "edgetpu cannot run int16x8")
_recipe_case("edgetpu-with-mixed-int16", "name: a\nexport: {formats: [edgetpu]}\nquantize: {mixed: {Conv1: int16x8}}\n",
             "quantize.mixed int16x8")
_recipe_case("bench-target-scheme", "name: a\nbench: [{target: 'ftp://pi'}]\n", "ftp://pi")
_recipe_case("bench-target-not-a-list", "name: a\nbench: {target: local}\n", "bench")
_recipe_case("bench-runs-zero", "name: a\nbench: [{target: local, runs: 0}]\n", "runs")
_recipe_case("set-without-equals", GOOD, "seed", extra=("--set", "seed"))
_recipe_case("set-unknown-key", GOOD, "distill.temprature", extra=("--set", "distill.temprature=2"))
_recipe_case("set-wrong-type", GOOD, "seed", extra=("--set", "seed=abc"))
_recipe_case("set-malformed-value", GOOD, "data.augment", extra=("--set", "data.augment={"))
_recipe_case("set-empty-key", GOOD, "--set", extra=("--set", "=3"))
_recipe_case("set-into-a-scalar", GOOD, "seed", extra=("--set", "seed.x=1"))
_recipe_case("deep-nesting", "name: a\nx: " + "[" * 5000 + "]" * 5000 + "\n", "r.yaml")
_recipe_case("huge-document", "name: a\n" + "".join(f"# {'x' * 100}\n" for _ in range(120_000)), "r.yaml")
_recipe_case("alias-bomb",
             "name: a\nx0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
             + "".join(f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)),
             "r.yaml")
_recipe_case("two-unknown-keys", "name: a\nbase: &b {seed: 1}\nother: {<<: [*b, *b, *b]}\n", "base")


@case("recipe-not-utf8", RECIPE, "r.yaml")
def _(ws):
    return ["validate", ws.write("r.yaml", b"name: \xff\xfe\x00\x00 binary\n")]


@case("recipe-file-missing", RECIPE, "nope.yaml")
def _(ws):
    return ["validate", ws.root / "nope.yaml"]


@case("recipe-is-a-folder", USAGE, "folder.yaml")
def _(ws):
    (ws.root / "folder.yaml").mkdir()
    return ["validate", ws.root / "folder.yaml"]


@case("extends-missing-file", RECIPE, "base.yaml")
def _(ws):
    return validate(ws, "extends: base.yaml\nname: a\n")


@case("extends-cycle", RECIPE, "a.yaml")
def _(ws):
    ws.recipe("extends: b.yaml\nname: a\n", "a.yaml")
    ws.recipe("extends: a.yaml\nname: b\n", "b.yaml")
    return ["validate", ws.root / "a.yaml"]


@case("extends-itself", RECIPE, "self.yaml")
def _(ws):
    return ["validate", ws.recipe("extends: self.yaml\nname: a\n", "self.yaml")]


@case("extends-not-a-string", RECIPE, "extends")
def _(ws):
    return validate(ws, "extends: 5\nname: a\n")


@case("extends-malformed-parent", RECIPE, "base.yaml", "malformed YAML")
def _(ws):
    ws.recipe("data: {train_limit: 1\n", "base.yaml")
    return validate(ws, "extends: base.yaml\nname: a\n")


@case("extends-unknown-key-in-parent", RECIPE, "colour")
def _(ws):
    ws.recipe("name: base\ncolour: red\n", "base.yaml")
    return validate(ws, "extends: base.yaml\nname: a\n")


@case("build-bad-recipe", RECIPE, "tempreature")
def _(ws):
    return ["build", ws.recipe("name: a\ntempreature: 2\n"), "--out", ws.root / "run"]


@case("build-recipe-missing", RECIPE, "missing.yaml")
def _(ws):
    return ["build", ws.root / "missing.yaml", "--out", ws.root / "run"]


# -------------------------------------------------------------- data folders (build)

def _data_case(id, make, *needles, code=DATA, xfail=None):
    def argv(ws):
        return ["build", ws.folder_recipe(make(ws)), "--out", ws.root / "run", "-q"]

    case(f"data-{id}", code, *needles, inproc=True, xfail=xfail)(argv)


def _empty(ws):
    (ws.root / "images").mkdir()
    return ws.root / "images"


def _macosx_only(ws):
    ws.images("images", {"__MACOSX": 12, ".hidden": 12})
    return ws.root / "images"


def _non_images(ws):
    for cls in ("cats", "dogs"):
        for i in range(12):
            ws.write(f"images/{cls}/{i}.txt", "not an image")
    return ws.root / "images"


def _corrupt_png(ws):
    folder = ws.images("images", {"cats": 12, "dogs": 12})
    (folder / "dogs" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    return folder


def _truncated_png(ws):
    folder = ws.images("images", {"cats": 12, "dogs": 12})
    png = folder / "cats" / "5.png"
    png.write_bytes(png.read_bytes()[:40])
    return folder


def _text_named_png(ws):
    folder = ws.images("images", {"cats": 12, "dogs": 12})
    (folder / "cats" / "notes.png").write_text("this is my shopping list")
    return folder


def _test_class_unknown(ws):
    ws.images("images/train", {"cats": 12, "dogs": 12})
    ws.images("images/test", {"cats": 3, "birds": 3})
    return ws.root / "images"


def _empty_class(ws):
    folder = ws.images("images", {"cats": 12, "dogs": 12})
    (folder / "birds").mkdir()
    return folder


_data_case("empty-folder", _empty, "images")
_data_case("one-class", lambda ws: ws.images("images", {"cats": 20}), "2 class")
_data_case("macosx-and-hidden-only", _macosx_only, "images")
_data_case("non-image-files", _non_images, "images")
_data_case("too-few-images", lambda ws: ws.images("images", {"cats": 2, "dogs": 2}), "fewer than")
_data_case("empty-class-folder", _empty_class, "birds")
_data_case("corrupt-png", _corrupt_png, "3.png")
_data_case("truncated-png", _truncated_png, "5.png")
_data_case("text-file-named-png", _text_named_png, "notes.png")
_data_case("test-class-not-in-train", _test_class_unknown, "birds")


@case("data-path-is-a-file", DATA, "images.zip", inproc=True)
def _(ws):
    return ["build", ws.folder_recipe(ws.write("images.zip", b"PK\x03\x04 not really")), "--out", ws.root / "run",
            "-q"]


@case("data-fashion-mnist-garbage-files", DATA, "fm", inproc=True)
def _(ws):
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        ws.write(f"fm/{name}", b"\x1f\x8b garbage, not gzip")
    return ["build", ws.tiny_recipe(), "--set", f"data.path={ws.root / 'fm'}", "--out", ws.root / "run", "-q"]


# ---------------------------------------------------------------- model files

# The fake edgetpu_compiler (tests/fakes, see its docstring) first on PATH, so that
# compile gets as far as reading the model; without it compile stops at the missing compiler.
FAKE_COMPILER_ENV = {"EDGECNN_CORPUS_FAKE_COMPILER": "1"}

BAD_MODELS: dict[str, Callable[[Workspace], Path]] = {
    "missing": lambda ws: ws.root / "missing.tflite",
    "zero-byte": lambda ws: ws.write("empty.tflite", b""),
    "text": lambda ws: ws.write("notes.tflite", "this is not a model\n"),
    "truncated": lambda ws: ws.write("cut.tflite", Path(ws.shared["int8"]).read_bytes()[:300]),
    "png": lambda ws: ws.write("photo.tflite", b"\x89PNG\r\n\x1a\n" + b"\0" * 64),
    "keras-zip": lambda ws: ws.copy("teacher_small", "model.tflite"),
    "bad-offsets": lambda ws: ws.write("bad.tflite", b"\xff\xff\xff\x7fTFL3" + b"\x01" * 200),
    "folder": lambda ws: (ws.root / "dir.tflite").mkdir() or ws.root / "dir.tflite",
}


def _model_cases():
    for kind, make in BAD_MODELS.items():
        code = USAGE if kind == "folder" else MODEL
        case(f"inspect-{kind}", code)(lambda ws, make=make: ["inspect", make(ws)])
        case(f"bench-{kind}", code)(lambda ws, make=make: ["bench", make(ws), "--runs", "1",
                                                                         "--warmup", "0"])
        case(f"compile-{kind}", code, env=FAKE_COMPILER_ENV)(
            lambda ws, make=make: ["compile", make(ws)])
        case(f"demo-{kind}", MODEL)(lambda ws, make=make: ["demo", "--headless", "--model", make(ws), "--source",
                                                           ws.images("frames", {"x": 1}) / "x"])


_model_cases()


@case("compile-without-compiler", MISSING, "edgetpu_compiler", env={"PATH": os.path.dirname(sys.executable)})
def _(ws):
    return ["compile", ws.copy("int8")]


@case("demo-model-without-labels", MODEL, "labels")
def _(ws):
    return ["demo", "--headless", "--model", ws.copy("int8_nometa", "m.tflite"), "--source",
            ws.images("frames", {"x": 1}) / "x"]


@case("demo-folder-not-a-bundle", MODEL, "bundle")
def _(ws):
    (ws.root / "models").mkdir()
    return ["demo", "--headless", "--model", ws.root / "models", "--source", ws.images("frames", {"x": 1}) / "x"]


@case("demo-source-missing", DATA, "nowhere")
def _(ws):
    return ["demo", "--headless", "--model", ws.copy("int8"), "--source", ws.root / "nowhere"]


@case("demo-source-not-a-video", DATA, "clip.mp4")
def _(ws):
    return ["demo", "--headless", "--model", ws.copy("int8"), "--source", ws.write("clip.mp4", "not a video")]


@case("demo-source-empty-folder", DATA, "frames")
def _(ws):
    (ws.root / "frames").mkdir()
    return ["demo", "--headless", "--model", ws.copy("int8"), "--source", ws.root / "frames"]


@case("demo-camera-absent", DEVICE, "camera 9")
def _(ws):
    return ["demo", "--headless", "--model", ws.copy("int8"), "--source", "9"]


@case("demo-delegate-missing", DEVICE, "delegate")
def _(ws):
    return ["demo", "--headless", "--model", ws.copy("int8"), "--source", ws.images("frames", {"x": 1}) / "x",
            "--delegate", str(ws.root / "libnothere.so")]


@case("bench-inputs-npz-missing", DEVICE, "samples.npz")
def _(ws):
    return ["bench", ws.copy("int8"), "--runs", "1", "--warmup", "0", "--inputs", ws.root / "samples.npz"]


@case("bench-inputs-npz-junk", DEVICE, "samples.npz")
def _(ws):
    return ["bench", ws.copy("int8"), "--runs", "1", "--warmup", "0", "--inputs", ws.write("samples.npz", "junk")]


@case("bench-compare-missing", DEVICE, "a.jsonl")
def _(ws):
    return ["bench", "--compare", ws.root / "a.jsonl", ws.root / "b.jsonl"]


@case("bench-compare-junk", DEVICE, "a.jsonl")
def _(ws):
    return ["bench", "--compare", ws.write("a.jsonl", "{not json"), ws.write("b.jsonl", "[]")]


# ---------------------------------------------------------------- run directories (bundle)


@case("bundle-run-missing", MODEL, "norun")
def _(ws):
    return ["bundle", ws.root / "norun", "--out", ws.root / "b"]


@case("bundle-run-empty-folder", MODEL, "empty")
def _(ws):
    (ws.root / "empty").mkdir()
    return ["bundle", ws.root / "empty", "--out", ws.root / "b"]


@case("bundle-run-user-folder", MODEL, "photos")
def _(ws):
    ws.write("photos/cat.jpg", b"\xff\xd8 a photo")
    return ["bundle", ws.root / "photos", "--out", ws.root / "b"]


@case("bundle-run-is-a-file", USAGE, "run.txt")
def _(ws):
    return ["bundle", ws.write("run.txt", "x"), "--out", ws.root / "b"]


@case("bundle-run-without-models", MODEL, "run")
def _(ws):
    ws.write("run/.edgecnn-owned", '{"created_by": "edgecnn", "kind": "run", "edgecnn": "0"}')
    ws.write("run/stages/data.json", "{}")
    return ["bundle", ws.root / "run", "--out", ws.root / "b"]


@case("bundle-run-corrupt-records", MODEL, "run")
def _(ws):
    ws.write("run/.edgecnn-owned", '{"created_by": "edgecnn", "kind": "run", "edgecnn": "0"}')
    ws.write("run/stages/data.json", "[1, 2, 3]")
    ws.write("run/manifest.json", "null")
    ws.copy("int8", "run/student_int8.tflite")
    return ["bundle", ws.root / "run", "--out", ws.root / "b"]


# ---------------------------------------------------------------- bundles (verify)


def _bundle(ws: Workspace, name: str = "bundle") -> Path:
    """A real bundle folder: the tiny int8 model, its golden outputs, labels, bundle.json."""
    return ws.copy("bundle", name)


def _edit_manifest(bundle: Path, edit) -> None:
    path = bundle / "bundle.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps(edit(data)))


def _verify_case(id, prepare, *needles, code=MODEL, xfail=None):
    def argv(ws):
        bundle = _bundle(ws)
        prepare(bundle)
        return ["verify", bundle]

    case(f"verify-{id}", code, *needles, xfail=xfail)(argv)


def _junk_golden(bundle: Path) -> None:
    golden = bundle / "golden_int8.npz"
    golden.write_bytes(b"not an npz")
    _edit_manifest(bundle, lambda m: {**m, "files": {**m["files"], golden.name: {
        "sha256": hashlib.sha256(golden.read_bytes()).hexdigest(), "size_bytes": golden.stat().st_size}}})


def _golden_without_outputs(bundle: Path) -> None:
    import numpy as np

    golden = bundle / "golden_int8.npz"
    with open(golden, "wb") as fh:
        np.savez(fh, x=np.zeros((1, 32, 32, 3), np.int8))
    _edit_manifest(bundle, lambda m: {**m, "files": {**m["files"], golden.name: {
        "sha256": hashlib.sha256(golden.read_bytes()).hexdigest(), "size_bytes": golden.stat().st_size}}})


def _missing_golden(bundle: Path) -> None:
    (bundle / "golden_int8.npz").unlink()
    _edit_manifest(bundle, lambda m: {**m, "files": {k: v for k, v in m["files"].items() if k != "golden_int8.npz"}})


def _tamper(bundle: Path) -> None:
    model = bundle / "tiny_int8.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))


_verify_case("bundle-json-missing", lambda b: (b / "bundle.json").unlink(), "bundle.json")
_verify_case("bundle-json-list", lambda b: (b / "bundle.json").write_text("[1, 2]"), "bundle.json")
_verify_case("bundle-json-null", lambda b: (b / "bundle.json").write_text("null"), "bundle.json")
_verify_case("bundle-json-garbage", lambda b: (b / "bundle.json").write_text("{oops"), "bundle.json")
_verify_case("bundle-json-no-models", lambda b: _edit_manifest(b, lambda m: {k: v for k, v in m.items()
                                                                           if k != "models"}),
             "models")
_verify_case("bundle-json-models-not-a-list", lambda b: _edit_manifest(b, lambda m: {**m, "models": "x"}),
             "models")
_verify_case("bundle-json-no-files", lambda b: _edit_manifest(b, lambda m: {**m, "files": {}}), "bundle.json")
_verify_case("bundle-json-path-escape", lambda b: _edit_manifest(b, lambda m: {**m, "files": {
    **m["files"], "../outside.txt": {"sha256": "0" * 64, "size_bytes": 1}}}), "outside.txt")
_verify_case("golden-missing", _missing_golden, "golden_int8.npz")
_verify_case("golden-junk", _junk_golden, "golden_int8.npz")
_verify_case("golden-without-outputs", _golden_without_outputs, "golden_int8.npz")
_verify_case("model-tampered", _tamper, "sha256 mismatch")
_verify_case("model-deleted", lambda b: (b / "tiny_int8.tflite").unlink(), "tiny_int8.tflite")


@case("verify-folder-missing", MODEL, "nobundle")
def _(ws):
    return ["verify", ws.root / "nobundle"]


@case("verify-run-directory-instead", MODEL, "bundle.json")
def _(ws):
    ws.write("run/.edgecnn-owned", '{"created_by": "edgecnn", "kind": "run", "edgecnn": "0"}')
    return ["verify", ws.root / "run"]


# ---------------------------------------------------------------- targets


def _bench_target(target: str):
    return lambda ws: ["bench", ws.copy("int8"), "--runs", "1", "--warmup", "0", "--target", target]


for _id, _target, _needle in (
    ("empty-ssh", "ssh://", "ssh://"),
    ("ssh-bad-port", "ssh://pi@127.0.0.1:notaport", "notaport"),
    ("ssh-port-out-of-range", "ssh://pi@127.0.0.1:99999", "99999"),
    ("unknown-scheme", "ftp://pi", "ftp://pi"),
    ("unknown-name", "gpu", "gpu"),
    ("coral-bad-kind", "coral:firewire", "coral:firewire"),
):
    case(f"bench-target-{_id}", DEVICE, _needle)(_bench_target(_target))

case("verify-target-unknown-scheme", DEVICE, "ftp://pi")(lambda ws: ["verify", _bundle(ws), "--target", "ftp://pi"])
case("verify-target-android", DEVICE, "android")(lambda ws: ["verify", _bundle(ws), "--target", "android"])
case("verify-target-bad-port", DEVICE, "notaport")(
    lambda ws: ["verify", _bundle(ws), "--target", "ssh://pi@127.0.0.1:notaport"])


@case("bench-android-without-adb", DEVICE, "adb", env={"PATH": os.path.dirname(sys.executable)})
def _(ws):
    return ["bench", ws.copy("int8"), "--runs", "1", "--warmup", "0", "--target", "android"]


# ---------------------------------------------------------------- output paths


@case("bench-out-user-file", FILESYSTEM, "notes.jsonl")
def _(ws):
    return ["bench", ws.copy("int8"), "--runs", "1", "--warmup", "0", "--out", ws.write("notes.jsonl", "mine\n")]


@case("bench-out-user-json", FILESYSTEM, "data.json")
def _(ws):
    return ["bench", ws.copy("int8"), "--runs", "1", "--warmup", "0", "--out", ws.write("data.json", '{"a": 1}')]


@case("bench-out-under-a-file", FILESYSTEM, "ENOTDIR")
def _(ws):
    return ["bench", ws.copy("int8"), "--runs", "1", "--warmup", "0", "--out", ws.write("f", "x") / "r.jsonl"]


@case("bench-out-a-plain-file", FILESYSTEM, "notes.txt")
def _(ws):
    return ["bench", ws.copy("int8"), "--runs", "1", "--warmup", "0", "--out", ws.write("notes.txt", "x")]


@case("build-out-a-file", USAGE, "out.txt")
def _(ws):
    return ["build", ws.tiny_recipe(), "--out", ws.write("out.txt", "mine")]


@case("build-out-under-a-file", FILESYSTEM, "out.txt")
def _(ws):
    return ["build", ws.tiny_recipe(), "--out", ws.write("out.txt", "mine") / "run"]


@case("build-out-user-folder", FILESYSTEM, "photos")
def _(ws):
    ws.write("photos/cat.jpg", b"\xff\xd8 a photo")
    return ["build", ws.tiny_recipe(), "--out", ws.root / "photos"]


@case("build-out-a-bundle", FILESYSTEM, "bundle")
def _(ws):
    return ["build", ws.tiny_recipe(), "--out", _bundle(ws)]


# bundle reads the run before it looks at --out, and a real finished run costs a build
# (a minute): with a marked but empty run these cases prove only that --out is untouched.
@case("bundle-out-user-folder", MODEL, "dataset.json")
def _(ws):
    ws.write("photos/cat.jpg", b"\xff\xd8 a photo")
    return ["bundle", _fake_run(ws), "--out", ws.root / "photos"]


@case("bundle-out-a-file", USAGE, "out.txt")
def _(ws):
    return ["bundle", _fake_run(ws), "--out", ws.write("out.txt", "mine")]


@case("bundle-out-existing-bundle-without-force", MODEL, "dataset.json")
def _(ws):
    return ["bundle", _fake_run(ws), "--out", _bundle(ws)]


@case("demo-log-user-file", FILESYSTEM, "frames.jsonl")
def _(ws):
    return ["demo", "--headless", "--model", ws.copy("int8"), "--source", ws.images("frames", {"x": 1}) / "x",
            "--log", ws.write("frames.jsonl", "my notes\n")]


@case("demo-out-user-video", FILESYSTEM, "holiday.mp4")
def _(ws):
    return ["demo", "--headless", "--model", ws.copy("int8"), "--source", ws.images("frames", {"x": 1}) / "x",
            "--out", ws.write("holiday.mp4", b"\0\0\0\x18ftypmp42 my holiday")]


@case("demo-log-is-the-model", FILESYSTEM, "tiny_int8.tflite")
def _(ws):
    model = ws.copy("int8")
    return ["demo", "--headless", "--model", model, "--source", ws.images("frames", {"x": 1}) / "x", "--log", model]


@case("demo-log-under-a-file", FILESYSTEM, "ENOTDIR")
def _(ws):
    return ["demo", "--headless", "--model", ws.copy("int8"), "--source", ws.images("frames", {"x": 1}) / "x",
            "--log", ws.write("f", "x") / "log.jsonl"]


@case("demo-out-and-log-same-file", FILESYSTEM, "same.avi")
def _(ws):
    return ["demo", "--headless", "--model", ws.copy("int8"), "--source", ws.images("frames", {"x": 1}) / "x",
            "--log", ws.root / "same.avi", "--out", ws.root / "same.avi"]


@case("compile-out-a-file", USAGE, "out.txt")
def _(ws):
    return ["compile", ws.copy("int8"), "--out", ws.write("out.txt", "mine")]


def _read_only_case(id, argv_for, code=FILESYSTEM, needle="ro"):
    def argv(ws):
        folder = ws.root / "ro"
        folder.mkdir()
        ws.shared["read_only"].append(folder)
        return argv_for(ws, folder)

    case(f"read-only-{id}", code, needle)(argv)


_read_only_case("bench-out", lambda ws, ro: ["bench", ws.copy("int8"), "--runs", "1", "--warmup", "0", "--out",
                                             ro / "r.jsonl"])
_read_only_case("build-out", lambda ws, ro: ["build", ws.tiny_recipe(), "--out", ro / "run"])
_read_only_case("demo-log", lambda ws, ro: ["demo", "--headless", "--model", ws.copy("int8"), "--source",
                                            ws.images("frames", {"x": 1}) / "x", "--log", ro / "f.jsonl"])
_read_only_case("bundle-out", lambda ws, ro: ["bundle", _fake_run(ws), "--out", ro / "b"], MODEL, "dataset.json")


def _fake_run(ws: Workspace) -> Path:
    """A run directory by edgecnn's marker, but without a build in it (enough to reach --out checks)."""
    ws.write("run/.edgecnn-owned", '{"created_by": "edgecnn", "kind": "run", "edgecnn": "0"}')
    return ws.root / "run"


# ---------------------------------------------------------------- teacher files


def _teacher_case(id, make, *needles, xfail=None, code=MODEL):
    def argv(ws):
        return ["build", ws.tiny_recipe(), "--set", f"teacher.path={make(ws)}", "--out", ws.root / "run", "-q"]

    case(f"teacher-{id}", code, *needles, inproc=True, xfail=xfail)(argv)


_teacher_case("keras3-model", lambda ws: ws.copy("keras3"), "Keras 3")
_teacher_case("text-file", lambda ws: ws.write("teacher.keras", "not a model"), "teacher.keras")
_teacher_case("png-file", lambda ws: ws.write("teacher.h5", b"\x89PNG\r\n\x1a\n" + b"\0" * 64), "teacher.h5")
_teacher_case("empty-zip", lambda ws: _empty_zip(ws.root / "teacher.keras"), "teacher.keras")
_teacher_case("folder-not-savedmodel", lambda ws: (ws.root / "t").mkdir() or ws.root / "t", "t")
_teacher_case("wrong-input-shape", lambda ws: ws.copy("teacher_small"), "input")
_teacher_case("tflite-as-teacher", lambda ws: ws.copy("int8"), "tiny_int8.tflite")


def _empty_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w"):
        pass
    return path


# --------------------------------------------------------------------- shared inputs


@pytest.fixture(autouse=True)
def _own_stage_cache(tmp_path, monkeypatch):
    """Builds here use a stage cache of their own, never the user's ~/.cache/edgecnn."""
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "stage-cache"))



@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Real model files the cases copy: a tiny int8 classifier (with and without
    metadata), a tiny tf_keras model with a 28x28x1 input, a Keras 3 model (saved by the
    real Keras 3 in a subprocess) and a real bundle of the int8 classifier."""
    from helpers import build_tiny_classifier

    root = tmp_path_factory.mktemp("corpus-shared")
    paths: dict = {"read_only": [], "png": _png_bytes()}
    paths["int8"] = build_tiny_classifier(root, io_dtype="int8")
    (root / "nometa").mkdir()
    paths["int8_nometa"] = build_tiny_classifier(root / "nometa", io_dtype="int8", metadata=False)

    from edgecnn._tf import keras

    k = keras()
    small = k.Sequential([k.layers.Input((28, 28, 1)), k.layers.Flatten(), k.layers.Dense(10)])
    paths["teacher_small"] = root / "teacher_small.keras"
    small.save(paths["teacher_small"])

    keras3 = root / "keras3.keras"
    code = ("import keras; m = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), "
            f"keras.layers.Dense(10)]); m.save({str(keras3)!r})")
    env = {k_: v for k_, v in os.environ.items() if k_ != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    if proc.returncode == 0:
        paths["keras3"] = keras3
    paths["bundle"] = _write_bundle(root / "bundle", paths["int8"])
    return paths


def _png_bytes() -> bytes:
    """One real 24x24 gray PNG (zlib-compressed rows, written with the standard library)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + bytes((x * 7 + y * 3) % 256 for x in range(24)) for y in range(24))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 24, 24, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _write_bundle(folder: Path, model: Path) -> Path:
    """The files ``edgecnn bundle`` writes, for one int8 model (golden outputs from the real runtime)."""
    import numpy as np

    from edgecnn.bundle_layout import BUNDLE_SCHEMA
    from edgecnn.runtime.interpreter import input_specs, make_interpreter, quantize_input

    folder.mkdir()
    shutil.copy2(model, folder / model.name)
    interpreter = make_interpreter(folder / model.name)
    spec = input_specs(interpreter)[0]
    x = quantize_input(np.random.RandomState(0).uniform(-1, 1, (4, *spec.shape[1:])).astype(np.float32), spec)
    outputs = []
    for sample in x:
        interpreter.set_tensor(spec.index, sample[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])
    np.savez(folder / "golden_int8.npz", x=x, y=np.zeros(len(x), np.int64), outputs=np.stack(outputs))
    (folder / "labels.txt").write_text("\n".join(str(i) for i in range(10)) + "\n")
    files = {p.name: {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "size_bytes": p.stat().st_size}
             for p in sorted(folder.iterdir())}
    (folder / "bundle.json").write_text(json.dumps({"schema": BUNDLE_SCHEMA, "models": [
        {"file": model.name, "golden": "golden_int8.npz"}], "files": files}))
    (folder / ".edgecnn-owned").write_text('{"created_by": "edgecnn", "kind": "bundle", "edgecnn": "0"}')
    return folder


# ------------------------------------------------------------------------ the check


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def _owned(path: Path, root: Path) -> bool:
    for parent in path.parents:
        if (parent / ".edgecnn-owned").is_file():
            return True
        if parent == root:
            return False
    return False


def _run(argv: list, inproc: bool, env: dict, cwd: Path) -> tuple[int, str]:
    argv = [str(a) for a in argv]
    if inproc:
        from edgecnn.cli import main

        old = os.getcwd()
        os.chdir(cwd)
        try:
            result = CliRunner().invoke(main, argv, catch_exceptions=True)
        finally:
            os.chdir(old)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            import traceback

            return 99, "Traceback (escaped the CLI)\n" + "".join(traceback.format_exception(result.exception))
        return result.exit_code, result.stderr
    env = dict(env)
    if env.pop("EDGECNN_CORPUS_FAKE_COMPILER", None):
        env["PATH"] = f"{_fake_compiler_dir(cwd)}{os.pathsep}{os.environ['PATH']}"
    proc = run_edgecnn(*map(str, argv), cwd=cwd, timeout=120, env=env)
    return proc.returncode, proc.stderr


def _fake_compiler_dir(cwd: Path) -> Path:
    folder = cwd.parent / "fakebin"  # outside the case folder: not one of the user's files
    folder.mkdir(exist_ok=True)
    script = folder / "edgetpu_compiler"
    fake = Path(__file__).resolve().parent / "fakes" / "edgetpu_compiler.py"
    script.write_text(f"#!/bin/sh\nexec '{sys.executable}' '{fake}' \"$@\"\n")
    script.chmod(0o755)
    return folder


def _params():
    return [_param(c) for c in CASES]


def _param(c: Case):
    marks = [pytest.mark.xfail(strict=False, reason=c.xfail)] if c.xfail else []
    return pytest.param(c, id=c.id, marks=marks)


def test_the_corpus_has_more_than_100_cases():
    assert len(CASES) > 100, len(CASES)
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("bad", _params())
def test_bad_input(bad: Case, shared, tmp_path):
    if bad.id.startswith("teacher-keras3") and "keras3" not in shared:
        pytest.skip("Keras 3 is not installed, so no Keras 3 model can be written")
    ws = Workspace(tmp_path / "case", shared)
    ws.root.mkdir()
    shared["read_only"].clear()
    argv = bad.argv(ws)
    before = _snapshot(ws.root)
    from test_filesystem_errors import read_only

    if shared["read_only"]:
        with read_only(shared["read_only"][0]):
            code, stderr = _run(argv, bad.inproc, bad.env, ws.root)
    else:
        code, stderr = _run(argv, bad.inproc, bad.env, ws.root)
    after = _snapshot(ws.root)

    assert "Traceback" not in stderr, stderr
    assert "internal error" not in stderr, stderr
    lines = error_lines(stderr, build=argv[0] == "build")
    if os.environ.get("EDGECNN_CORPUS_REPORT"):  # a table of what each case printed, for reviews
        with open(os.environ["EDGECNN_CORPUS_REPORT"], "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"case": bad.id, "exit": code, "stderr": lines}) + "\n")
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert code == bad.code, (code, lines[0])
    for needle in bad.needles:
        assert needle in lines[0], (needle, lines[0])
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    assert not changed, f"changed or removed: {changed}"
    left = [name for name in after if Path(name).name.startswith(".tmp-") or "/.tmp-" in name]
    assert not left, f"half-written: {left}"
    new = [name for name in after if name not in before and not _owned(ws.root / name, ws.root)]
    assert not new, f"new files outside edgecnn's folders: {new}"
