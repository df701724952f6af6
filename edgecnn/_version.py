"""The package version: one place, read by pyproject.toml, the CLI and every file edgecnn stamps."""

__version__ = "0.1.0"
