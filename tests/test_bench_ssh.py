"""SSH transport against a real OpenSSH server started on 127.0.0.1 by these tests.

The server (``/usr/sbin/sshd -D -e -f CONFIG``) runs on a free high port with a host key
and a user key made here by ``ssh-keygen``; it needs no root (``UsePAM no``,
``StrictModes no``) and logs in the user running the tests. The "device's" Python is
this test process's interpreter, which has ai-edge-litert. Without openssh-server the
tests that need it skip with the reason (``bash tools/dev.sh test`` installs it).
"""

from __future__ import annotations

import getpass
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from helpers import assert_failed_result, assert_raised_error, free_port, run_edgecnn

from edgecnn.bench.harness import run_benchmark, run_benchmarks
from edgecnn.bench.schema import load_results, validate_result
from edgecnn.bench.ssh import (
    SshOptions,
    check_ssh_options,
    explain_ssh_error,
    remote_run_script,
    scp_command,
    ssh_command,
)
from edgecnn.targets import parse_target
from edgecnn.errors import DeviceError

REPO = Path(__file__).resolve().parents[1]
SSHD = "/usr/sbin/sshd"


# ---------------------------------------------------------------------------- the server


@dataclass(frozen=True)
class SshServer:
    """A running test sshd and what a client needs to use it."""

    target: str
    port: int
    options: SshOptions  # the accepted key, a known_hosts file holding the host key
    other_key: Path  # a key the server does not accept
    host_key_pub: str
    directory: Path


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
                   check=True, capture_output=True, timeout=30)
    return path


def _start_sshd(directory: Path, sftp: bool):
    """Start sshd; returns (process, SshServer). Skips when the pieces are missing."""
    for tool in ("ssh", "scp", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.skip(f"the OpenSSH client ({tool}) is not installed; apt-get install openssh-client")
    if not os.access(SSHD, os.X_OK):
        pytest.skip(f"no OpenSSH server at {SSHD}; 'bash tools/dev.sh test' installs openssh-server "
                    f"(or apt-get install openssh-server)")
    try:
        shell = pwd.getpwuid(os.getuid()).pw_shell
    except KeyError:
        pytest.skip(f"uid {os.getuid()} has no passwd entry, so sshd cannot log it in")
    if shell.endswith(("nologin", "/false")):
        pytest.skip(f"the login shell of {getpass.getuser()} is {shell}, so sshd cannot run commands as it")
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        # sshd started by root insists on its privilege separation directory, which the
        # system service normally creates.
        try:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        except OSError as exc:
            pytest.skip(f"sshd as root needs /run/sshd and it cannot be created ({exc})")
    directory.mkdir(parents=True, exist_ok=True)
    host_key = _keygen(directory / "host_key")
    user_key = _keygen(directory / "user_key")
    other_key = _keygen(directory / "other_key")
    (directory / "authorized_keys").write_text((directory / "user_key.pub").read_text())
    host_pub = (directory / "host_key.pub").read_text().split()
    port = free_port()
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    config = directory / "sshd_config"
    config.write_text("\n".join([
        "ListenAddress 127.0.0.1", f"Port {port}", f"HostKey {host_key}",
        f"AuthorizedKeysFile {directory / 'authorized_keys'}", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", f"PidFile {directory / 'sshd.pid'}",
        "LogLevel ERROR", *(["Subsystem sftp internal-sftp"] if sftp else []), ""]))
    log = open(directory / "sshd.log", "wb")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.close()
            pytest.fail(f"sshd exited with {proc.returncode}: {(directory / 'sshd.log').read_text()[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("sshd did not start listening within 15 s")
    options = SshOptions(remote_python=sys.executable, identity=user_key, known_hosts=known_hosts,
                         connect_timeout_s=5)
    server = SshServer(f"ssh://{getpass.getuser()}@127.0.0.1:{port}", port, options, other_key,
                       " ".join(host_pub[:2]), directory)
    return proc, log, server


def _stop(proc: subprocess.Popen, log) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    log.close()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """An sshd with the SFTP subsystem, as on a Raspberry Pi OS install."""
    proc, log, server = _start_sshd(tmp_path_factory.mktemp("sshd"), sftp=True)
    yield server
    _stop(proc, log)


@pytest.fixture(scope="module")
def sshd_without_sftp(tmp_path_factory):
    """An sshd without SFTP, as on some minimal board images: scp must use its old protocol."""
    proc, log, server = _start_sshd(tmp_path_factory.mktemp("sshd-nosftp"), sftp=False)
    yield server
    _stop(proc, log)


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


# ------------------------------------------------------------------------- end to end


def test_bench_over_ssh_matches_the_local_run(sshd, bench_models):
    settings = dict(runs=30, warmup=3, timeout_s=120, inputs_npz=bench_models["npz"])
    local = run_benchmark(bench_models["int8"], "local", **settings)
    r = run_benchmark(bench_models["int8"], sshd.target, ssh=sshd.options, **settings)
    assert r["status"] == "ok", r["reason"]
    assert validate_result(r) == r and r["target"] == sshd.target
    # The model is named as on this host, and the device saw the same bytes.
    assert r["model"] == local["model"] and r["model"]["path"] == str(bench_models["int8"])
    # Device-side accuracy over SSH equals the local run's, output for output.
    assert r["samples"] == 40 and r["accuracy"] == local["accuracy"]
    assert r["outputs_sha256"] == local["outputs_sha256"]
    # Copy and start-up are measured apart from latency and never leak into it: the
    # latency of this tiny model is microseconds, the copy alone takes far longer.
    assert r["transfer_s"] > 0 and r["startup_s"] > 0 and r["details"]["connect_s"] > 0
    lat = r["latency_ms"]
    assert lat["p50"] < 50 and lat["p50"] / 1000 < r["transfer_s"] / 10
    assert lat["p50"] < 20 * local["latency_ms"]["p50"] + 1.0
    assert r["details"]["transport"] == "ssh" and r["details"]["copy_protocol"] == "sftp"
    assert r["runtime"] == local["runtime"] and r["host"]["python"]
    # The work directory made by mktemp -d on the device is gone.
    remote_dir = r["details"]["remote_dir"]
    assert remote_dir.startswith(("/tmp/edgecnn-bench.", os.environ.get("TMPDIR", "/tmp")))
    assert not os.path.exists(remote_dir)


def test_scp_falls_back_to_the_legacy_protocol_without_sftp(sshd_without_sftp, bench_models):
    r = run_benchmark(bench_models["int8"], sshd_without_sftp.target, runs=5, warmup=0, timeout_s=120,
                      ssh=sshd_without_sftp.options)
    assert r["status"] == "ok", r["reason"]
    assert r["details"]["copy_protocol"] == "scp" and not os.path.exists(r["details"]["remote_dir"])


# ----------------------------------------------------------------- clear failures


def test_refused_key_says_how_to_install_it(sshd, bench_models):
    options = replace(sshd.options, identity=sshd.other_key)
    r = run_benchmark(bench_models["int8"], sshd.target, runs=5, ssh=options)
    assert_failed_result(r, "refused the SSH key", "Permission denied (publickey)",
                         f"ssh-copy-id -p {sshd.port}", "--identity")


def test_unknown_host_key_then_accept_new_host_key(sshd, bench_models, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    options = replace(sshd.options, known_hosts=known_hosts)
    r = run_benchmark(bench_models["int8"], sshd.target, runs=5, ssh=options)
    assert_failed_result(r, "host key", "not in known_hosts", "--accept-new-host-key", f"-p {sshd.port}")
    assert known_hosts.read_text() == ""  # strict checking recorded nothing

    r = run_benchmark(bench_models["int8"], sshd.target, runs=5, warmup=0, timeout_s=120,
                      ssh=replace(options, accept_new_host_key=True))
    assert r["status"] == "ok", r["reason"]
    # ssh recorded the key (hashed or not, as the client's HashKnownHosts says).
    assert sshd.host_key_pub in known_hosts.read_text()
    found = subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{sshd.port}", "-f", str(known_hosts)],
                           capture_output=True, text=True, timeout=30)
    assert found.returncode == 0 and sshd.host_key_pub in found.stdout


def test_changed_host_key_is_refused_even_with_accept_new(sshd, bench_models, tmp_path):
    _keygen(tmp_path / "impostor")
    impostor = (tmp_path / "impostor.pub").read_text().split()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {impostor[0]} {impostor[1]}\n")
    options = replace(sshd.options, known_hosts=known_hosts, accept_new_host_key=True)
    r = run_benchmark(bench_models["int8"], sshd.target, runs=5, ssh=options)
    assert_failed_result(r, "has CHANGED", f"ssh-keygen -R [127.0.0.1]:{sshd.port}")


def test_unreachable_host_is_one_line_within_seconds(sshd, bench_models):
    closed = free_port()  # nothing listens there
    start = time.monotonic()
    r = run_benchmark(bench_models["int8"], f"ssh://{getpass.getuser()}@127.0.0.1:{closed}", runs=5,
                      ssh=sshd.options)
    assert time.monotonic() - start < 10
    assert_failed_result(r, "cannot reach", f"port {closed}", "Connection refused")


def test_missing_remote_python(sshd, bench_models):
    r = run_benchmark(bench_models["int8"], sshd.target, runs=5,
                      ssh=replace(sshd.options, remote_python="/nonexistent/python3"))
    assert_failed_result(r, "'/nonexistent/python3' was not found", "--remote-python")
    assert "remote_dir" not in r["details"]  # checked before anything was copied


def test_missing_runtime_on_the_device_says_what_to_install(sshd, bench_models, tmp_path):
    """A "device" Python where no TFLite runtime imports: real modules are shadowed."""
    hide = tmp_path / "hide"
    hide.mkdir()
    for module in ("ai_edge_litert", "tflite_runtime", "tensorflow"):
        (hide / f"{module}.py").write_text("raise ImportError('hidden by the test')\n")
    python = tmp_path / "python-without-runtime"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={hide} exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    r = run_benchmark(bench_models["int8"], sshd.target, runs=5, timeout_s=120,
                      ssh=replace(sshd.options, remote_python=str(python)))
    assert_failed_result(r, "no TFLite runtime", "pip install ai-edge-litert", "tflite-runtime", "32-bit")
    assert r["transfer_s"] > 0 and not os.path.exists(r["details"]["remote_dir"])


def test_remote_hang_times_out_and_the_next_target_still_runs(sshd, bench_models, tmp_path):
    """Through the CLI: two targets, the SSH runner hangs (hidden test hook), local still runs."""
    out = tmp_path / "results.jsonl"
    opts = sshd.options
    start = time.monotonic()
    proc = run_edgecnn(
        "bench", str(bench_models["int8"]), "--target", sshd.target,
        "--target", "local", "--runs", "5", "--warmup", "0", "--timeout", "3", "--out", str(out),
        "--identity", str(opts.identity), "--known-hosts", str(opts.known_hosts),
        "--remote-python", opts.remote_python, "--debug-hang-target", sshd.target,
        cwd=REPO, timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode == 5, proc.stderr
    assert "1 of 2 targets failed: " + sshd.target in proc.stderr
    hung, local = load_results(out)
    assert_failed_result(hung, "timed out after 3 s")
    assert hung["details"]["run_wall_s"] < 3 + 5, hung["details"]
    assert local["status"] == "ok" and local["target"] == "local"
    assert elapsed < 90
    # The killed runner left nothing behind on the device.
    assert not os.path.exists(hung["details"]["remote_dir"])
    assert not _processes_mentioning(hung["details"]["remote_dir"] + "/runner.py")


def test_bad_ssh_options_fail_before_connecting(bench_models, tmp_path):
    with pytest.raises(DeviceError) as info:
        run_benchmark(bench_models["int8"], "ssh://pi@raspberrypi.invalid",
                      ssh=SshOptions(identity=tmp_path / "missing_key"))
    assert_raised_error(info, DeviceError, "--identity", "missing_key", "no such key file")
    with pytest.raises(DeviceError) as info:
        check_ssh_options(SshOptions(remote_python="-c evil"))
    assert_raised_error(info, DeviceError, "--remote-python")
    with pytest.raises(DeviceError) as info:
        check_ssh_options(SshOptions(known_hosts=tmp_path / "no" / "such" / "known_hosts"))
    assert_raised_error(info, DeviceError, "--known-hosts", "does not exist")


# ---------------------------------------------------------------- pure construction


def test_ssh_and_scp_command_lines():
    target = parse_target("ssh://pi@192.168.1.20:2222")
    argv = ssh_command(target, SshOptions(identity=Path("/k/id"), known_hosts=Path("/k/known hosts")), "true")
    assert argv[:2] == ["ssh", "-T"] and argv[-3:] == ["--", "pi@192.168.1.20", "true"]
    options = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    assert {"BatchMode=yes", "StrictHostKeyChecking=yes", "ConnectTimeout=10", "IdentitiesOnly=yes",
            'UserKnownHostsFile="/k/known hosts"'} <= set(options)
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-i") + 1] == "/k/id"
    accept = ssh_command(target, SshOptions(accept_new_host_key=True), "true")
    assert "StrictHostKeyChecking=accept-new" in accept and "-i" not in accept
    scp = scp_command(parse_target("ssh://root@[fe80::1]:22"), SshOptions(), ["/a/runner.py"], "/tmp/d", legacy=True)
    assert scp[:3] == ["scp", "-q", "-O"] and scp[scp.index("-P") + 1] == "22"
    assert scp[-2:] == ["/a/runner.py", "root@[fe80::1]:/tmp/d/"]
    assert ssh_command(parse_target("ssh://jetson.local"), SshOptions(), "true")[-2] == "jetson.local"


def test_remote_run_script_quotes_everything(tmp_path):
    script = remote_run_script("/tmp/edgecnn-bench.abc", "~/my venv/bin/python",
                               ["/tmp/edgecnn-bench.abc/model.tflite", "--target", "ssh://pi@h;rm -rf /"], 30)
    assert "timeout -s KILL 30" in script and 'rm -rf "$d"' in script
    assert "\"$HOME\"/'my venv/bin/python'" in script
    assert "'ssh://pi@h;rm -rf /'" in script
    # The script is valid POSIX sh (parsed, not run).
    path = tmp_path / "script.sh"
    path.write_text(script)
    assert subprocess.run(["sh", "-n", str(path)], capture_output=True).returncode == 0


@pytest.mark.parametrize("stderr, needles", [
    ("ssh: connect to host 10.0.0.9 port 22: No route to host", ("cannot reach pi@h", "No route to host")),
    ("ssh: Could not resolve hostname raspberrypi: Name or service not known",
     ("cannot reach", "Could not resolve hostname")),
    ("ssh: connect to host 10.0.0.9 port 22: Connection timed out", ("cannot reach", "timed out")),
    ("pi@h: Permission denied (publickey).", ("refused the SSH key", "ssh-copy-id pi@h", "--identity")),
    ("No ED25519 host key is known for h and you have requested strict checking.\nHost key verification failed.",
     ("not in known_hosts", "ssh pi@h", "--accept-new-host-key")),
    ("@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key verification failed.",
     ("has CHANGED", "ssh-keygen -R h")),
    ("kex_exchange_identification: read: Connection reset by peer", ("cannot reach",)),
    ("something new\n", ("ssh to pi@h failed (something new)",)),
])
def test_explain_ssh_error(stderr, needles):
    reason = explain_ssh_error(stderr, parse_target("ssh://pi@h"), SshOptions())
    assert "\n" not in reason
    for needle in needles:
        assert needle in reason, (needle, reason)


def test_several_targets_checked_before_any_runs(bench_models, tmp_path):
    ran = []
    with pytest.raises(DeviceError) as info:
        run_benchmarks(bench_models["int8"], ["local", "ssh://pi@h", "corl"], on_result=ran.append, runs=5)
    assert_raised_error(info, DeviceError, "did you mean 'coral'?")
    assert ran == []
