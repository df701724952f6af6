"""Run one external command (ssh, scp, adb, edgetpu_compiler) with a hard time limit.

The command starts in a new session, so when the limit runs out the whole process group
-- the tool and anything it started (ssh's ProxyCommand, adb's shell) -- is killed, not
only the direct child. Output is captured as text; nothing here interprets it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

__all__ = ["ProcessResult", "run_process", "last_line"]

# After killing the group, how long to wait for the pipes to close.
_REAP_S = 5.0


@dataclass(frozen=True)
class ProcessResult:
    """What a finished (or killed) command left.

    Attributes:
        returncode: exit status; negative for a signal (as ``subprocess`` reports it),
            None when the command could not be started or was killed at the limit.
        stdout: captured standard output (UTF-8, undecodable bytes replaced).
        stderr: captured standard error; the start error when it could not start.
        wall_s: seconds from start to exit (or to the kill).
        timed_out: True when the limit ran out and the group was killed.
    """

    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """Exited on its own with status 0."""
        return self.returncode == 0 and not self.timed_out


def run_process(argv: Sequence[str], timeout_s: float, *, env: Mapping[str, str] | None = None,
                cwd: str | os.PathLike | None = None) -> ProcessResult:
    """Run ``argv`` (no shell) with stdin closed and a wall-clock limit.

    Args:
        argv: the program and its arguments.
        timeout_s: seconds before the process group is killed.
        env: environment (default: this process's).
        cwd: working directory.

    Returns:
        A :class:`ProcessResult`; a program that cannot be started gives
        ``returncode=None`` and the OS error in ``stderr``.
    """
    start = time.monotonic()
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=dict(env) if env is not None else None,
                                cwd=cwd, **new_group_kwargs())
    except OSError as exc:
        return ProcessResult(None, "", f"cannot start {argv[0]}: {exc.strerror or exc}", 0.0)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = drain(proc)
        return ProcessResult(None, _text(out), _text(err), time.monotonic() - start, timed_out=True)
    except BaseException:  # KeyboardInterrupt: do not leave the tool running
        kill_group(proc)
        raise
    return ProcessResult(proc.returncode, _text(out), _text(err), time.monotonic() - start)


def last_line(text: str, limit: int = 300) -> str:
    """The last non-blank line of ``text``, whitespace collapsed, clipped to ``limit``."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    if not lines:
        return ""
    line = " ".join(lines[-1].split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


def new_group_kwargs() -> dict:
    """Popen keyword arguments that start the child in its own process group/session."""
    if os.name == "posix":
        return {"start_new_session": True}
    return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # pragma: no cover (Windows)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group (a runtime may have spawned helpers)."""
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL)  # the session leader's pid is the group id
        else:  # pragma: no cover (Windows)
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def drain(proc: subprocess.Popen) -> tuple[bytes, bytes]:
    """Reap a killed child and return what it had written, waiting a few seconds at most."""
    try:
        return proc.communicate(timeout=_REAP_S)
    except subprocess.TimeoutExpired:  # pragma: no cover (a process stuck in the kernel)
        return b"", b""
