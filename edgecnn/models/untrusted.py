"""Read a Keras model file's architecture without loading it, and refuse what would run code.

Keras files are programs: a ``Lambda`` layer stores Python bytecode (or the name of a
Python function to import) that ``load_model`` runs, an ``.h5`` file or a SavedModel
runs it even under Keras' ``safe_mode``, and a config may name any class or module that
deserialization imports and calls. So before edgecnn loads a model file it reads the
architecture as plain JSON -- ``model_config`` of an ``.h5`` (through h5py), ``config.json``
in a ``.keras`` zip, the layer records of a SavedModel's ``keras_metadata.pb`` (parsed here
with a 40-line protobuf reader, no TensorFlow) -- and refuses, before any loading:

- ``Lambda`` layers (Python code, whatever form it is stored in);
- ``TFOpLambda``/``SlicingOpLambda`` layers (a TensorFlow op called by name, which the
  functional API records for ``x * 2`` or ``tf.nn.relu6(x)``) whose op is not a plain
  tensor computation: ``tf.io.write_file`` is a TensorFlow op too;
- objects of a class that is not tf_keras', tensorflow-model-optimization's or
  edgecnn's own, or whose ``module`` lies outside those packages.

The opt-in (``teacher.trust_code: true``, Keras' ``safe_mode=False``) skips this check
and lets Keras deserialize the code. What it cannot catch: a SavedModel's traced graphs
(ops such as ``WriteFile`` inside a ``tf.function``) only run when called; see the
README's "Security" section.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import zipfile
from pathlib import Path
from typing import Iterator, Optional

from edgecnn.errors import ModelFileError

# Bounds for what is read before anything is trusted (a config of a large model is ~1 MB).
_MAX_CONFIG_BYTES = 64 * 1024 * 1024

# Packages whose classes a config may name: deserializing those runs their own code only.
_TRUSTED_MODULES = ("keras", "tf_keras", "tensorflow_model_optimization", "edgecnn", "builtins")

# Keras' own encodings of plain values in configs (tuples, arrays, shapes, dtypes).
_VALUE_ENCODINGS = {"__tuple__", "__numpy__", "__bytes__", "__tensor__", "__typespec__", "__tensorshape__",
                    "__ellipsis__", "__slice__", "__dtype__", "__list__", "__ragged_tensor__"}

# Not classes that deserialization instantiates from the file: checked above (the op
# layers), by module (named functions such as activations), or plain values a SavedModel's
# metadata encodes (tf_keras' json_utils: shapes, and type specs looked up in TensorFlow's registry).
_PLAIN_CLASSES = {"TFOpLambda", "SlicingOpLambda", "function", "TensorShape", "TypeSpec"}

# TensorFlow ops that TFOpLambda may call: tensor math only (no file, print or Python ops).
_SAFE_OP_PREFIXES = ("math.", "nn.", "__operators__.", "linalg.", "image.", "compat.v1.nn.", "compat.v1.math.")
_SAFE_OPS = {"reshape", "concat", "stack", "unstack", "transpose", "cast", "clip_by_value", "expand_dims",
             "squeeze", "split", "slice", "strided_slice", "gather", "identity", "pad", "tile", "where",
             "ones_like", "zeros_like", "shape", "maximum", "minimum", "broadcast_to", "reduce_mean",
             "reduce_sum", "reduce_max", "argmax", "one_hot", "sigmoid", "tanh", "add", "multiply",
             "divide", "subtract", "matmul", "einsum", "fill", "range", "convert_to_tensor"}


@dataclasses.dataclass(frozen=True)
class CodeFinding:
    """A place in a model's architecture that would run code when loaded.

    Attributes:
        layer: the layer's name (or where in the config, when no layer holds it).
        class_name: the class the config names.
        reason: why it is refused, in words for the user.
    """

    layer: str
    class_name: str
    reason: str


# --------------------------------------------------------------------------- reading


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _proto_fields(data: bytes) -> Iterator[tuple[int, object]]:
    """(field number, value) of a protobuf message, wire types 0, 1, 2 and 5."""
    i = 0
    while i < len(data):
        tag, i = _varint(data, i)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            if i + size > len(data):
                raise ValueError("truncated field")
            value, i = data[i:i + size], i + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = data[i:i + size], i + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, value


def _saved_model_layers(path: Path) -> list[dict]:
    """The layer records of a SavedModel's ``keras_metadata.pb``.

    ``SavedMetadata { repeated SavedObject nodes = 1; }`` with ``SavedObject
    { string node_path = 3; string identifier = 4; string metadata = 5; }``
    (tf_keras/protobuf/saved_metadata.proto); ``metadata`` is the layer's JSON.
    """
    data = (path / "keras_metadata.pb").read_bytes()
    records = []
    for number, node in _proto_fields(data):
        if number != 1 or not isinstance(node, bytes):
            continue
        fields = {n: v for n, v in _proto_fields(node)}
        metadata = fields.get(5)
        if isinstance(metadata, bytes) and metadata:
            record = json.loads(metadata.decode("utf-8"))
            if isinstance(record, dict):
                record.setdefault("name", (fields.get(3) or b"").decode("utf-8", "replace"))
                records.append(record)
    return records


def read_architecture(path: str | Path, named: Optional[str] = None, what: str = "the model file") -> object:
    """The architecture a Keras model file declares, as plain JSON; nothing in it is run.

    Args:
        path: a ``.keras`` zip, an ``.h5`` file or a SavedModel folder.
        named: how errors name the file (default ``path``; the user's file for a copy).
        what: the recipe key it came from (``teacher.path``), for error messages.

    Returns:
        The config (a dict, or for a SavedModel a list of its layer records).

    Raises:
        ModelFileError: the file holds no readable Keras architecture.
    """
    path = Path(path)
    named = named or str(path)
    try:
        if path.is_dir():
            if not (path / "keras_metadata.pb").is_file():
                raise ModelFileError(f"{named}: not a Keras model (a folder without keras_metadata.pb); "
                                     f"{what} must be a tf_keras model saved with model.save()")
            if (path / "keras_metadata.pb").stat().st_size > _MAX_CONFIG_BYTES:
                raise ModelFileError(f"{named}: keras_metadata.pb is over {_MAX_CONFIG_BYTES >> 20} MB; not a model edgecnn reads")
            return _saved_model_layers(path)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                info = archive.getinfo("config.json")
                if info.file_size > _MAX_CONFIG_BYTES:
                    raise ModelFileError(f"{named}: config.json is over {_MAX_CONFIG_BYTES >> 20} MB; not a model edgecnn reads")
                return json.loads(archive.read(info))
        import h5py  # a dependency of tf_keras

        with h5py.File(path, "r") as handle:
            text = handle.attrs.get("model_config")
        if text is None:
            raise ModelFileError(f"{named}: not a Keras model (an HDF5 file without model_config: weights only?); "
                                 f"{what} must be a whole model saved with model.save()")
        return json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except ModelFileError:
        raise
    except KeyError:
        raise ModelFileError(f"{named}: not a Keras model (a zip without config.json); "
                             f"{what} must be a model saved with model.save()") from None
    except (OSError, ValueError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ModelFileError(f"{named}: not a Keras model ({first}); {what} must be a model saved with "
                             "model.save() (.keras, .h5 or SavedModel folder)") from None


# --------------------------------------------------------------------------- checking


@functools.cache
def known_classes() -> frozenset[str]:
    """Class names a config may name: tf_keras' layers, initializers, regularizers,
    constraints and models, and tensorflow-model-optimization's wrappers and quantizers."""
    import inspect

    from edgecnn._tf import keras

    K = keras()
    names = {"Functional", "Sequential", "Model"}
    for module in (K.layers, K.initializers, K.regularizers, K.constraints, K.mixed_precision, K.optimizers):
        names.update(n for n in dir(module) if inspect.isclass(getattr(module, n, None)))
    import tensorflow_model_optimization as tfmot

    for scope in (tfmot.quantization.keras.quantize_scope(), tfmot.sparsity.keras.prune_scope()):
        for objects in scope.custom_objects:
            names.update(objects)
    # Pruning schedules, quantizers and quantize configs a wrapper's config names.
    for module in (tfmot.sparsity.keras, tfmot.quantization.keras, tfmot.quantization.keras.quantizers,
                   tfmot.quantization.keras.default_8bit, tfmot.quantization.keras.experimental.default_n_bit):
        names.update(n for n in dir(module) if inspect.isclass(getattr(module, n, None)))
    return frozenset(names)


def _safe_op(symbol: object) -> bool:
    if not isinstance(symbol, str):
        return False
    return symbol in _SAFE_OPS or symbol.startswith(_SAFE_OP_PREFIXES)


def find_code(config: object, known: frozenset[str]) -> list[CodeFinding]:
    """Every object in ``config`` that would run code other than Keras' and tfmot's own.

    Pure: walks the JSON, runs nothing. ``known`` is the set of class names that load
    safely (:func:`known_classes`).
    """
    findings: list[CodeFinding] = []

    def walk(node: object, layer: str) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, layer)
            return
        if not isinstance(node, dict):
            return
        class_name = node.get("class_name")
        inner = node.get("config") if isinstance(node.get("config"), dict) else {}
        if isinstance(class_name, str):
            name = inner.get("name") or node.get("name") or layer
            name = name if isinstance(name, str) else layer
            module = node.get("module")
            if class_name == "Lambda":
                findings.append(CodeFinding(name, class_name, "a Lambda layer holds Python code that runs when the model loads"))
            elif class_name in ("TFOpLambda", "SlicingOpLambda") and not _safe_op(inner.get("function")):
                findings.append(CodeFinding(name, class_name, f"it calls TensorFlow op {inner.get('function')!r}, "
                                                              "which is not a tensor computation edgecnn allows"))
            elif class_name.startswith("__") and class_name.endswith("__"):
                if class_name not in _VALUE_ENCODINGS or class_name == "__lambda__":
                    findings.append(CodeFinding(name, class_name, "it is a serialized Python function"))
            elif class_name not in known and class_name not in _PLAIN_CLASSES:
                # "function": a named activation such as relu; its module is checked below.
                findings.append(CodeFinding(name, class_name, "its class is not a Keras, tfmot or edgecnn one "
                                                              "(custom code the file expects you to supply)"))
            if isinstance(module, str) and not module.split(".")[0] in _TRUSTED_MODULES:
                findings.append(CodeFinding(name, class_name, f"it names Python module {module!r}, "
                                                              "which loading would import"))
            registered = node.get("registered_name")
            if isinstance(registered, str) and ">" in registered and \
                    registered.split(">")[0].split(".")[0] not in _TRUSTED_MODULES:
                findings.append(CodeFinding(name, class_name, f"it is the custom object {registered!r}"))
            layer = name
        for key, value in node.items():
            if key != "class_name":
                walk(value, layer)

    walk(config, "(model)")
    unique: dict[tuple[str, str, str], CodeFinding] = {}
    for finding in findings:
        unique.setdefault((finding.layer, finding.class_name, finding.reason), finding)
    return list(unique.values())


def describe_file(path: str | Path, origin: Optional[str | Path] = None) -> str:
    """How errors name a model file: the user's file first when ``path`` is edgecnn's copy of it."""
    return f"{origin} (through edgecnn's copy {path})" if origin else str(path)


def check_model_file(path: str | Path, what: str, opt_in: str, origin: Optional[str | Path] = None) -> None:
    """Refuse a Keras model file that would run code when loaded, before anything loads it.

    Args:
        path: the model file or SavedModel folder.
        what: the recipe key or artifact it came from (``teacher.path``).
        opt_in: the recipe setting that trusts it (``teacher.trust_code: true``).
        origin: for a copy edgecnn wrote, the user's file it came from (named instead).

    Raises:
        ModelFileError: one line naming the file, the first layer (name and class), why,
            and the opt-in.
    """
    where = describe_file(path, origin)
    findings = find_code(read_architecture(path, where, what), known_classes())
    if not findings:
        return
    first = findings[0]
    more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
    raise ModelFileError(
        f"{where}: {what} is refused: layer '{first.layer}' ({first.class_name}){more}: {first.reason}; "
        f"edgecnn does not run code from model files. Re-save the model without it (built-in layers only), "
        f"or, if you trust this file and its author, set {opt_in}")
