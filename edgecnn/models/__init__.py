"""Teacher and student model registries and builders (TensorFlow is imported lazily)."""

from edgecnn.models.registry import create_student, create_teacher, list_students, list_teachers

__all__ = ["create_student", "create_teacher", "list_students", "list_teachers"]
