"""Small, listable registries of model builders, in the manner of timm's ``_registry``.

A builder is registered by name with ``@STUDENTS.register`` / ``@TEACHERS.register`` and
called as ``builder(input_shape, num_classes, cfg)``. Builders import TensorFlow inside
their bodies, so listing or checking names (``edgecnn validate``) stays TensorFlow-free.
"""

from __future__ import annotations

import difflib
from typing import Callable

from edgecnn.errors import RecipeError

Builder = Callable[..., object]

# keras.applications constructors a teacher may name. Kept as a static table so that
# recipe validation does not import TensorFlow to know them.
KERAS_APPLICATIONS = (
    "ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtSmall", "ConvNeXtTiny", "ConvNeXtXLarge",
    "DenseNet121", "DenseNet169", "DenseNet201",
    "EfficientNetB0", "EfficientNetB1", "EfficientNetB2", "EfficientNetB3",
    "EfficientNetB4", "EfficientNetB5", "EfficientNetB6", "EfficientNetB7",
    "EfficientNetV2B0", "EfficientNetV2B1", "EfficientNetV2B2", "EfficientNetV2B3",
    "EfficientNetV2L", "EfficientNetV2M", "EfficientNetV2S",
    "InceptionResNetV2", "InceptionV3", "MobileNet", "MobileNetV2",
    "MobileNetV3Large", "MobileNetV3Small", "NASNetLarge", "NASNetMobile",
    "RegNetX002", "RegNetY002", "ResNet101", "ResNet101V2", "ResNet152", "ResNet152V2",
    "ResNet50", "ResNet50V2", "ResNetRS50", "VGG16", "VGG19", "Xception",
)


class Registry:
    """A name -> builder table that can list itself. Tests may build fresh ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._builders: dict[str, Builder] = {}

    def register(self, fn: Builder | None = None, *, name: str | None = None):
        """Decorator: register ``fn`` under ``name`` (default: the function's name)."""

        def add(f: Builder) -> Builder:
            key = name or f.__name__
            if key in self._builders:
                raise ValueError(f"{self.kind} '{key}' is already registered")
            self._builders[key] = f
            return f

        return add(fn) if fn is not None else add

    def names(self) -> list[str]:
        return sorted(self._builders)

    def get(self, name: str) -> Builder | None:
        return self._builders.get(name)


STUDENTS = Registry("student")
TEACHERS = Registry("teacher")


def _load_builders() -> None:
    # Importing the modules runs their @register decorators; they import no TensorFlow.
    import edgecnn.models.students  # noqa: F401
    import edgecnn.models.teachers  # noqa: F401


def list_students() -> list[str]:
    """Names accepted by ``student.architecture``."""
    _load_builders()
    return STUDENTS.names()


def list_teachers() -> list[str]:
    """Names accepted by ``teacher.architecture``: registered ones plus keras.applications."""
    _load_builders()
    return TEACHERS.names() + list(KERAS_APPLICATIONS)


def _unknown(kind: str, name: str, known: list[str]) -> RecipeError:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'?" if close else f"choose one of: {', '.join(known[:12])}{' ...' if len(known) > 12 else ''}"
    return RecipeError(f"{kind}.architecture '{name}' is not known; {hint}")


def check_student_name(name: str) -> None:
    """Raise a :class:`RecipeError` with a suggestion when no student has this name."""
    if name not in list_students():
        raise _unknown("student", name, list_students())


def check_teacher_name(name: str) -> None:
    """Raise a :class:`RecipeError` with a suggestion when no teacher has this name."""
    if name not in list_teachers():
        raise _unknown("teacher", name, list_teachers())


def create_student(name: str, input_shape: tuple[int, int, int], num_classes: int, cfg) -> object:
    """Build the registered student ``name`` as a plain functional tf_keras model."""
    check_student_name(name)
    return STUDENTS.get(name)(input_shape, num_classes, cfg)


def create_teacher(name: str, input_shape: tuple[int, int, int], num_classes: int, cfg) -> object:
    """Build teacher ``name``: a registered builder, else the keras.applications backbone."""
    check_teacher_name(name)
    _load_builders()
    builder = TEACHERS.get(name)
    if builder is not None:
        return builder(input_shape, num_classes, cfg)
    from edgecnn.models.teachers import build_keras_application

    return build_keras_application(name, input_shape, num_classes, cfg)
