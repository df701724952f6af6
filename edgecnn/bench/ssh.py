"""Run the device runner on a Linux board over SSH (Raspberry Pi, Jetson, any Linux host).

Uses the system OpenSSH client (``ssh``, ``scp``); no Python SSH library. One benchmark
is three short connections:

1. **prepare** -- ``mktemp -d`` makes a fresh work directory on the device, and the
   device's Python (``--remote-python``) is looked up, before anything is copied.
2. **copy** -- ``scp`` puts ``runner.py``, the model and the optional inputs ``.npz``
   into it; its wall time is the result's ``transfer_s``. Servers without the SFTP
   subsystem (some embedded images) get the legacy scp protocol (``scp -O``).
3. **run** -- ``sh -c`` on the device runs the runner under ``timeout -s KILL N``
   (when the device has ``timeout``), then removes the work directory. This host also
   enforces ``N`` plus a grace period on the ssh process itself.

When the run does not end normally (local time limit, dropped connection, failed copy), a
fourth connection kills what is left of the runner and removes the work directory.

Host-key checking stays on (``StrictHostKeyChecking=yes``); ``--accept-new-host-key``
(``accept-new``) trusts a host seen for the first time and records its key, but a
*changed* key is still refused. ``BatchMode=yes``: ssh never prompts.

Timing: the latency figures come from the runner on the device (``perf_counter`` around
``invoke()`` only), so neither the copy nor the connection can leak into them.
``transfer_s`` is the copy's wall time measured here. ``startup_s`` is measured on the
device, from the remote shell's launch to the runtime being imported (both ends on the
device's clock, read with ``date +%s.%N``; where ``date`` lacks ``%N`` it is only the
runner's own import time). Connection set-up times go to ``details``.

Errors: bad input raises :class:`~edgecnn.errors.DeviceError` before any connection (no
ssh client, a missing ``--identity`` file, a malformed ``--remote-python``); everything
that happens on the way to or on the device -- unreachable host, refused key, unknown
host key, missing Python, numpy or runtime, a timeout, a crash -- is a result with
``status: "failed"`` and a one-line reason that says what to do, so the next target
still runs.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from edgecnn.bench.local import check_model_for_target
from edgecnn.process import ProcessResult, last_line, run_process
from edgecnn.bench.schema import check_run_settings, failed_result, model_info, validate_result
from edgecnn.targets import Target, require_target
from edgecnn.errors import DeviceError
from edgecnn.runtime import RUNNER_PATH

__all__ = ["SshOptions", "check_ssh_options", "ssh_base_args", "ssh_command", "scp_command",
           "remote_run_script", "explain_ssh_error", "run_ssh"]

# Exit statuses of the prepare script (ssh itself uses 255).
_NO_PYTHON = 127
_NO_WORKDIR = 3
_GRACE_S = 5.0  # on top of the remote limit: connection set-up and result transfer
_PREPARE_S = 30.0  # on top of ConnectTimeout: mktemp and the Python lookup
_WORKDIR = re.compile(r"^/[A-Za-z0-9._/-]{1,255}$")  # what mktemp -d prints; anything else is refused
_REMOTE_MODEL = "model.tflite"
_REMOTE_INPUTS = "inputs.npz"
_REMOTE_RUNNER = "runner.py"


@dataclass(frozen=True)
class SshOptions:
    """How to reach and use an SSH target.

    Attributes:
        remote_python: the device's Python: a name on its PATH (``python3``) or a path
            (``/home/pi/venv/bin/python``; a leading ``~/`` is the remote home).
        identity: private key file (``ssh -i``); only this key is offered when set.
        known_hosts: known-hosts file to check (and, with ``accept_new_host_key``, to
            record) host keys in, instead of ``~/.ssh/known_hosts``.
        accept_new_host_key: trust a host never seen before and record its key
            (``StrictHostKeyChecking=accept-new``); a changed key is still refused.
        connect_timeout_s: ssh ``ConnectTimeout`` (seconds to wait for the TCP connection).
    """

    remote_python: str = "python3"
    identity: Path | None = None
    known_hosts: Path | None = None
    accept_new_host_key: bool = False
    connect_timeout_s: float = 10.0


def check_ssh_options(options: SshOptions) -> None:
    """Check ``options`` on this host before any connection is tried.

    Raises:
        DeviceError: no OpenSSH client, a missing identity file or known-hosts folder, or a
            remote Python that cannot be a command.
    """
    missing = [tool for tool in ("ssh", "scp") if shutil.which(tool) is None]
    if missing:
        raise DeviceError(f"the OpenSSH client ({' and '.join(missing)}) is not installed; "
                          f"install it with 'apt-get install openssh-client'")
    if options.identity is not None:
        key = Path(options.identity).expanduser()
        if not key.is_file():
            raise DeviceError(f"--identity {options.identity}: no such key file; pass your private key "
                              f"(e.g. ~/.ssh/id_ed25519), or leave --identity out to use ssh's defaults")
    if options.known_hosts is not None:
        folder = Path(options.known_hosts).expanduser().parent
        if not folder.is_dir():
            raise DeviceError(f"--known-hosts {options.known_hosts}: the folder {folder} does not exist; "
                              f"create it or pass another file")
    python = options.remote_python
    if not python or python.startswith("-") or any(c in python for c in "\n\r\0") or len(python) > 512:
        raise DeviceError(f"--remote-python {python!r}: expected the device's Python, a name or a path such "
                          f"as python3 or /home/pi/venv/bin/python")
    if not options.connect_timeout_s > 0:
        raise DeviceError(f"the SSH connect timeout must be > 0 seconds, got {options.connect_timeout_s}")


# ---------------------------------------------------------------------- command lines


def _config_value(value: str) -> str:
    # ssh splits -o values on whitespace; a quoted value keeps a path with spaces whole.
    return f'"{value}"' if any(c.isspace() for c in value) else value


def ssh_base_args(options: SshOptions) -> list[str]:
    """The ``-o``/``-i`` options ssh and scp share (no port: ``-p`` vs ``-P``)."""
    args = ["-o", "BatchMode=yes",
            "-o", f"StrictHostKeyChecking={'accept-new' if options.accept_new_host_key else 'yes'}",
            "-o", f"ConnectTimeout={max(1, math.ceil(options.connect_timeout_s))}",
            "-o", "LogLevel=ERROR"]  # errors only: no "Warning: Permanently added" noise
    if options.identity is not None:
        args += ["-i", str(Path(options.identity).expanduser()), "-o", "IdentitiesOnly=yes"]
    if options.known_hosts is not None:
        args += ["-o", f"UserKnownHostsFile={_config_value(str(Path(options.known_hosts).expanduser()))}"]
    return args


def _destination(target: Target, brackets: bool = False) -> str:
    host = f"[{target.host}]" if brackets and ":" in (target.host or "") else target.host
    return f"{target.user}@{host}" if target.user else str(host)


def ssh_command(target: Target, options: SshOptions, remote_command: str) -> list[str]:
    """``ssh`` argv running ``remote_command`` on ``target`` (no tty, no stdin)."""
    port = ["-p", str(target.port)] if target.port else []
    return ["ssh", "-T", *ssh_base_args(options), *port, "--", _destination(target), remote_command]


def scp_command(target: Target, options: SshOptions, files: Sequence[str | os.PathLike], remote_dir: str,
                legacy: bool = False) -> list[str]:
    """``scp`` argv copying ``files`` into ``remote_dir`` on ``target``.

    Args:
        legacy: use the old scp protocol (``-O``) for servers without SFTP.
    """
    port = ["-P", str(target.port)] if target.port else []
    return ["scp", "-q", *(["-O"] if legacy else []), *ssh_base_args(options), *port, "--",
            *map(os.fspath, files), f"{_destination(target, brackets=True)}:{remote_dir}/"]


def _remote_word(path: str) -> str:
    """Shell-quote a remote path, keeping a leading ``~/`` as the remote home."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def _sh(script: str) -> str:
    # The login shell may be fish or csh; run the POSIX script with sh explicitly.
    return "sh -c " + shlex.quote(script)


def _prepare_script(python: str) -> str:
    return (f'd=$(mktemp -d "${{TMPDIR:-/tmp}}/edgecnn-bench.XXXXXX") || exit {_NO_WORKDIR}\n'
            f"if ! command -v {_remote_word(python)} >/dev/null 2>&1; then rm -rf \"$d\"; exit {_NO_PYTHON}; fi\n"
            'echo "$d"\n')


def remote_run_script(workdir: str, python: str, runner_args: Sequence[str], limit_s: int) -> str:
    """The ``sh`` script that runs the runner in ``workdir`` and then removes it.

    Args:
        workdir: the work directory ``mktemp -d`` made on the device.
        python: the device's Python (see :attr:`SshOptions.remote_python`).
        runner_args: runner arguments after the script path (model, ``--threads``, ...).
        limit_s: whole seconds for ``timeout -s KILL`` (used when the device has it).

    Returns:
        The script text (pass it to :func:`ssh_command` through ``sh -c``).
    """
    d = shlex.quote(workdir)
    args = " ".join(shlex.quote(a) for a in runner_args)
    return (f"d={d}\n"
            'cd "$d" || exit 3\n'
            # The launch time on the device's own clock, so start-up time has no clock skew.
            "t=$(date +%s.%N 2>/dev/null); case \"$t\" in *[!0-9.]*|'') t= ;; esac\n"
            f"if command -v timeout >/dev/null 2>&1; then set -- timeout -s KILL {int(limit_s)}; else set --; fi\n"
            f'"$@" {_remote_word(python)} "$d/{_REMOTE_RUNNER}" {args} ${{t:+--spawned-at "$t"}}\n'
            "rc=$?\n"
            'cd / && rm -rf "$d"\n'
            "exit $rc\n")


def _cleanup_script(workdir: str) -> str:
    # "runne[r]" matches the runner's command line but not this script's own.
    return (f"d={shlex.quote(workdir)}\n"
            'if command -v pkill >/dev/null 2>&1; then pkill -KILL -f "$d/runne[r]"; fi\n'
            'rm -rf "$d"\n')


# ---------------------------------------------------------------------------- errors


def _where(target: Target) -> str:
    return _destination(target) + (f" port {target.port}" if target.port else "")


def _ssh_hint_command(target: Target, program: str = "ssh") -> str:
    port = f"-p {target.port} " if target.port else ""
    return f"{program} {port}{_destination(target)}"


_UNREACHABLE = ("Connection refused", "No route to host", "Could not resolve hostname", "Connection timed out",
                "Network is unreachable", "Operation timed out", "Name or service not known",
                "Temporary failure in name resolution", "Connection reset", "Connection closed by remote host")


def explain_ssh_error(stderr: str, target: Target, options: SshOptions) -> str:
    """One line saying why ssh/scp (exit status 255) could not do its job, and the fix.

    Args:
        stderr: what ssh printed.
        target: the target it tried.
        options: the options it ran with (named in the advice).

    Returns:
        The reason, e.g. that the key was refused and how to install it.
    """
    where = _where(target)
    text = " ".join(stderr.split())
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr or "Host key for" in stderr and "has changed" in stderr:
        host = f"[{target.host}]:{target.port}" if target.port else target.host
        return (f"the host key of {where} has CHANGED since it was recorded (a re-installed board, or someone "
                f"in between); if you expect that, remove the old key with 'ssh-keygen -R {host}' and connect "
                f"once by hand with '{_ssh_hint_command(target)}' to check the new one")
    if "Host key verification failed" in stderr or "host key is known" in stderr:
        known = f" ({options.known_hosts})" if options.known_hosts else ""
        return (f"the host key of {where} is not in known_hosts{known} and host-key checking is on; connect once "
                f"by hand with '{_ssh_hint_command(target)}' to check and accept it, or pass "
                f"--accept-new-host-key to trust a host seen for the first time")
    if "Permission denied" in stderr:
        key = f" {options.identity}" if options.identity else ""
        return (f"{where} refused the SSH key{key} (Permission denied (publickey)); install your public key "
                f"there with '{_ssh_hint_command(target, 'ssh-copy-id')}', or pass --identity with a key "
                f"the board accepts")
    for marker in _UNREACHABLE:
        if marker in stderr:
            return (f"cannot reach {where}: {marker}; check the host name and port, that the board is on "
                    f"the network and that sshd runs on it")
    detail = last_line(text, 200) or "no error message"
    return f"ssh to {where} failed ({detail}); try '{_ssh_hint_command(target)}' by hand to see why"


def _python_missing(target: Target, python: str) -> str:
    return (f"the Python {python!r} was not found on {_where(target)}; set --remote-python to the device's "
            f"Python (e.g. /usr/bin/python3, or ~/venv/bin/python for a virtualenv)")


def _install_hint(python: str) -> str:
    return (f"run '{python} -m pip install ai-edge-litert' there (or 'pip install tflite-runtime' on 32-bit "
            f"Raspberry Pi OS, where LiteRT has no wheel), or pass --remote-python with a virtualenv that has it")


# --------------------------------------------------------------------------- running


def run_ssh(model: str | os.PathLike, target: Target, *, threads: int = 1, runs: int = 100,
            warmup: int = 10, timeout_s: float = 300.0, inputs_npz: str | os.PathLike | None = None,
            options: SshOptions | None = None, extra_runner_args: Sequence[str] = ()) -> dict:
    """Benchmark ``model`` on an ``ssh://`` target.

    Args:
        model: the ``.tflite`` file on this host.
        target: a parsed ``ssh://user@host[:port]`` :class:`Target`.
        threads: CPU threads for the interpreter.
        runs: timed invokes.
        warmup: untimed invokes after the first.
        timeout_s: limit for the runner on the device, and for the copy.
        inputs_npz: optional ``.npz`` (``x``, ``y``) for device-side accuracy.
        options: how to connect (default :class:`SshOptions`).
        extra_runner_args: more runner arguments (tests: ``--debug-hang``).

    Returns:
        A validated result: ``model`` names the file on this host, ``transfer_s`` the copy
        time, ``details`` the connection (``transport``, ``remote_dir``, ``connect_s``,
        ``copy_protocol``, ``run_wall_s``, ``remote_python``). Failures on the way or on the
        device give ``status: "failed"`` with a one-line reason.

    Raises:
        DeviceError: bad input found before connecting (see :func:`check_ssh_options`), a
            target that is not ``ssh://``, an Edge TPU model, a missing inputs file.
        ModelFileError: ``model`` is not a TFLite file.
        ValueError: non-positive ``threads``/``runs``/``timeout_s`` or negative ``warmup``.
        TypeError: ``target`` is not a :class:`Target` (e.g. its text).
    """
    require_target(target, "run_ssh")
    options = options or SshOptions()
    if target.kind != "ssh":
        raise DeviceError(f"run_ssh runs ssh:// targets, not {target.text!r}")
    check_run_settings(threads, runs, warmup, timeout_s)
    check_ssh_options(options)
    check_model_for_target(model, target)
    if inputs_npz is not None and not Path(inputs_npz).is_file():
        raise DeviceError(f"{inputs_npz}: no such inputs file; pass an .npz with x (and y)")

    info = model_info(model)
    details: dict = {"transport": "ssh", "remote_python": options.remote_python}
    common = dict(threads=threads, runs=runs, warmup=warmup)

    def fail(reason: str, **fields) -> dict:
        return failed_result(target.text, info, reason, details=details, **common, **fields)

    connect_limit = options.connect_timeout_s + _PREPARE_S
    prepared = run_process(ssh_command(target, options, _sh(_prepare_script(options.remote_python))),
                           connect_limit)
    details["connect_s"] = round(prepared.wall_s, 6)
    if prepared.timed_out:
        return fail(f"no answer from {_where(target)} within {connect_limit:g} s; check that the board is "
                    f"up and not overloaded")
    if prepared.returncode != 0:
        return fail(_prepare_failure(prepared, target, options))
    workdir = prepared.stdout.strip().splitlines()[-1] if prepared.stdout.strip() else ""
    if not _WORKDIR.match(workdir):
        return fail(f"mktemp -d on {_where(target)} printed {last_line(prepared.stdout, 80)!r}, not a "
                    f"directory; check the device's shell start-up files (they must not print)")
    details["remote_dir"] = workdir

    cleaned = False
    try:
        with tempfile.TemporaryDirectory(prefix="edgecnn-ssh-") as staging:
            files = _stage(staging, model, inputs_npz)
            copied, transfer_s = _copy(target, options, files, workdir, timeout_s + options.connect_timeout_s,
                                       details)
        if isinstance(copied, str):
            return fail(copied)

        limit = max(1, math.ceil(timeout_s))
        runner_args = [f"{workdir}/{_REMOTE_MODEL}", "--threads", str(threads), "--runs", str(runs),
                       "--warmup", str(warmup), "--target", target.text]
        if inputs_npz is not None:
            runner_args += ["--inputs", f"{workdir}/{_REMOTE_INPUTS}"]
        runner_args += list(extra_runner_args)
        script = remote_run_script(workdir, options.remote_python, runner_args, limit)
        ran = run_process(ssh_command(target, options, _sh(script)), limit + options.connect_timeout_s + _GRACE_S)
        details["run_wall_s"] = round(ran.wall_s, 6)
        # The script removes the work directory itself unless it was cut short.
        cleaned = not ran.timed_out and ran.returncode not in (None, 255)
        return _result_from_run(ran, target, options, info, fail, timeout_s, limit, transfer_s, details)
    finally:
        if not cleaned:
            _cleanup(target, options, workdir)


def _prepare_failure(proc: ProcessResult, target: Target, options: SshOptions) -> str:
    if proc.returncode is None:
        return f"cannot run ssh ({proc.stderr}); install it with 'apt-get install openssh-client'"
    if proc.returncode == 255:
        return explain_ssh_error(proc.stderr, target, options)
    if proc.returncode == _NO_PYTHON:
        return _python_missing(target, options.remote_python)
    if proc.returncode == _NO_WORKDIR:
        return (f"cannot create a work directory on {_where(target)} (mktemp -d failed: "
                f"{last_line(proc.stderr, 200) or 'no message'}); check that /tmp (or $TMPDIR) is writable")
    return (f"preparing {_where(target)} failed with exit status {proc.returncode}"
            f" ({last_line(proc.stderr, 200) or 'no message'})")


def _stage(staging: str, model, inputs_npz) -> list[Path]:
    """Links (or copies) under the names the remote side expects: scp keeps base names."""
    files = [(RUNNER_PATH, _REMOTE_RUNNER), (Path(model), _REMOTE_MODEL)]
    if inputs_npz is not None:
        files.append((Path(inputs_npz), _REMOTE_INPUTS))
    staged = []
    for src, name in files:
        dst = Path(staging) / name
        try:
            os.symlink(Path(src).resolve(), dst)  # scp copies what a link points to
        except OSError:
            shutil.copy2(src, dst)
        staged.append(dst)
    return staged


def _copy(target, options, files, workdir, limit, details) -> tuple[str | None, float]:
    """scp ``files``; returns (None or the failure reason, seconds the successful copy took)."""
    proc = run_process(scp_command(target, options, files, workdir), limit)
    details["copy_protocol"] = "sftp"
    if not proc.ok and not proc.timed_out:
        # Most likely no SFTP subsystem on the device (a minimal image; scp then says only
        # "Connection closed"): the old protocol needs just an scp binary there. Any other
        # fault fails again and is reported from this second try.
        proc = run_process(scp_command(target, options, files, workdir, legacy=True), limit)
        details["copy_protocol"] = "scp"
    if proc.timed_out:
        return (f"copying the model to {_where(target)} timed out after {limit:g} s; check the network, "
                f"or raise --timeout for a large model"), proc.wall_s
    if proc.returncode == 255:
        return explain_ssh_error(proc.stderr, target, options), proc.wall_s
    if not proc.ok:
        return (f"copying the model to {_where(target)} failed ({last_line(proc.stderr, 200) or 'no message'}); "
                f"check free space in /tmp on the device"), proc.wall_s
    return None, proc.wall_s


def _result_from_run(ran: ProcessResult, target, options, info, fail, timeout_s, limit, transfer_s,
                     details) -> dict:
    extra = {"transfer_s": round(transfer_s, 6)}
    if ran.timed_out:
        return fail(f"timed out after {timeout_s:g} s (the runtime or device hung, or the connection stalled); "
                    f"the runner on the device was killed", **extra)
    if ran.returncode == 255:
        return fail("the connection dropped during the benchmark: " + explain_ssh_error(ran.stderr, target, options),
                    **extra)
    if ran.returncode == 128 + signal.SIGKILL and ran.wall_s >= limit - 0.5:
        return fail(f"timed out after {timeout_s:g} s (the runtime or device hung); the runner was killed on "
                    f"the device", **extra)
    data = _parse_json(ran.stdout)
    if data is None:
        return fail(_no_result_reason(ran, target, options), **extra)
    try:
        result = validate_result(data, f"result from {target.text}")
    except DeviceError as exc:
        return fail(str(exc), **extra)
    if result["model"]["sha256"] and info["sha256"] and result["model"]["sha256"] != info["sha256"]:
        return fail(f"the model arrived changed on {_where(target)} (sha256 differs); run again", **extra)
    result["model"] = info  # the file on this host, not the copy in the removed work directory
    result["transfer_s"] = extra["transfer_s"]
    result["details"] = {**(result.get("details") or {}), **details}
    if result["status"] == "failed" and str(result["reason"]).startswith("no TFLite runtime"):
        result["reason"] = (f"no TFLite runtime for {options.remote_python} on {_where(target)}: "
                            + _install_hint(options.remote_python))
    return validate_result(result, f"result from {target.text}")


def _parse_json(stdout: str) -> dict | None:
    text = stdout.strip()
    for start in (0, text.find("{\n")):  # tolerate lines a start-up file printed first
        if start < 0:
            continue
        try:
            data = json.loads(text[start:])
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    return None


def _no_result_reason(ran: ProcessResult, target: Target, options: SshOptions) -> str:
    code = ran.returncode
    tail = last_line(ran.stderr, 200)
    python = options.remote_python
    if code == 127 or "not found" in tail and python in tail:
        return _python_missing(target, python)
    if "No module named 'numpy'" in ran.stderr:
        return f"numpy is not installed for {python} on {_where(target)}: " + _install_hint(python)
    if code is not None and code > 128:
        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            name = f"signal {code - 128}"
        return f"the runtime crashed with {name} on {_where(target)} (exit {code})" + (f": {tail}" if tail else "")
    return (f"the runner on {_where(target)} exited with code {code} without a result"
            + (f": {tail}" if tail else "") + f"; run it by hand there with {python} to see why")


def _cleanup(target: Target, options: SshOptions, workdir: str) -> None:
    """Best effort: kill a runner left behind and remove the work directory."""
    run_process(ssh_command(target, options, _sh(_cleanup_script(workdir))), options.connect_timeout_s + 10.0)
