"""Progress output: stage banners with elapsed time, epoch bars, and a quiet mode for CI logs.

Everything printed is also appended to the run's log file, so a CI log and the run
directory tell the same story.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Iterator, TextIO


class Progress:
    """Prints progress for people; ``quiet`` keeps only stage lines and one line per epoch.

    Args:
        quiet: suppress the live epoch bar (for CI logs).
        stream: where to print (stderr by default, so stdout stays machine-readable).
    """

    def __init__(self, quiet: bool = False, stream: TextIO | None = None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self._log: TextIO | None = None
        self._start = time.monotonic()
        self._interactive = bool(getattr(self.stream, "isatty", lambda: False)()) and not quiet

    def attach_log(self, path: Path) -> None:
        """Also append every line to ``path``.

        Raises:
            OSError: the log cannot be created (read-only run directory, full disk),
                naming ``path``; the CLI prints it as one line.
        """
        from edgecnn.fileio import make_dirs

        make_dirs(path.parent)
        self._log = open(path, "a", encoding="utf-8")
        self._log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n")

    def close(self) -> None:
        if self._log:
            self._log.close()
            self._log = None

    def line(self, text: str) -> None:
        """Print one permanent line."""
        print(text, file=self.stream, flush=True)
        if self._log:
            self._log.write(text + "\n")
            self._log.flush()

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    @contextlib.contextmanager
    def stage(self, index: int, total: int, name: str, detail: str = "") -> Iterator[dict]:
        """Banner before a stage and its wall time after; yields a dict the stage may fill."""
        self.line(f"==> [{index}/{total}] {name}{(': ' + detail) if detail else ''}  (t+{self.elapsed():.0f}s)")
        info: dict = {}
        start = time.monotonic()
        yield info
        took = time.monotonic() - start
        note = info.get("note", "")
        self.line(f"    {name} {'re-used from cache' if info.get('cached') else 'done'} in {took:.1f}s{('  ' + note) if note else ''}")

    def bar(self, label: str, step: int, total: int, metrics: str) -> None:
        """Redraw a live progress bar (interactive terminals only)."""
        if not self._interactive or total <= 0:
            return
        width = 24
        filled = int(width * step / total)
        text = f"\r    {label} [{'=' * filled}{'>' if filled < width else ''}{' ' * (width - filled - 1)}] {step}/{total} {metrics}"
        print(text, end="", file=self.stream, flush=True)

    def end_bar(self, text: str) -> None:
        """Finish a bar with a permanent line."""
        if self._interactive:
            print("\r\033[K", end="", file=self.stream)
        self.line(text)


def keras_progress_callback(progress: Progress, label: str, epochs: int, steps_per_epoch: int):
    """A tf_keras callback drawing an epoch bar and writing one line per epoch."""
    from edgecnn._tf import keras

    K = keras()

    class _EpochBar(K.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch
            self._t0 = time.monotonic()

        def on_train_batch_end(self, batch, logs=None):
            if batch % 5 == 0 or batch + 1 == steps_per_epoch:
                shown = " ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items() if k in ("loss", "accuracy"))
                progress.bar(f"{label} epoch {self._epoch + 1}/{epochs}", batch + 1, steps_per_epoch, shown)

        def on_epoch_end(self, epoch, logs=None):
            shown = " ".join(f"{k} {v:.4f}" for k, v in sorted((logs or {}).items()) if k != "lr")
            progress.end_bar(f"    {label} epoch {epoch + 1}/{epochs}  {time.monotonic() - self._t0:.1f}s  {shown}")

    return _EpochBar()
