#!/usr/bin/env bash
# An "old Pi" software set-up on this x86-64 machine, reachable as an SSH device:
# a venv with tflite-runtime 2.14 and numpy<2 (what many Raspberry Pi deployments still
# run), and an sshd of its own on 127.0.0.1 that logs in the user running this script.
#
#   bash tools/tflite_runtime_x86.sh build    # the venv (PyPI: tflite-runtime 2.14, numpy<2)
#   bash tools/tflite_runtime_x86.sh start    # host key, client key, sshd on 127.0.0.1:$PORT
#   bash tools/tflite_runtime_x86.sh status
#   bash tools/tflite_runtime_x86.sh stop
#
# What it proves: that `edgecnn bench`/`verify` over SSH work with the older runtime
# (tflite_runtime module, numpy 1.x) and what its x86 kernels compute, compared with the
# host's ai-edge-litert. It needs no root when run as a user with a login shell; as root
# sshd needs /run/sshd (created here). tflite-runtime 2.14 publishes x86-64 wheels for
# CPython 3.9-3.11 only: PYTHON must be one of those (default python3.11, else python3).
#
# Settings (environment):
#   EDGECNN_X86_TFLITE_DIR   folder (default ~/.cache/edgecnn/x86-tflite-runtime)
#   EDGECNN_X86_TFLITE_PORT  sshd port on 127.0.0.1 (default 2323)
#   PYTHON                   the interpreter to make the venv with
#
# `start` writes $DIR/device.env with EDGECNN_X86_TFLITE_HOST, _IDENTITY, _KNOWN_HOSTS,
# _PYTHON; device_tests/test_emulated_pi.py reads it.
set -euo pipefail

DIR=${EDGECNN_X86_TFLITE_DIR:-$HOME/.cache/edgecnn/x86-tflite-runtime}
PORT=${EDGECNN_X86_TFLITE_PORT:-2323}
MARKER="$DIR/.edgecnn-x86-tflite-runtime"
VENV="$DIR/venv"
SSHD=/usr/sbin/sshd

say() { printf 'x86-tflite-runtime: %s\n' "$*"; }
die() { printf 'x86-tflite-runtime: error: %s\n' "$*" >&2; exit 1; }

pick_python() {
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
    command -v python3.11 >/dev/null && { echo python3.11; return; }
    echo python3
}

claim_dir() {
    if [ -e "$DIR" ] && [ ! -e "$MARKER" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
        die "$DIR exists and was not made by this script; choose another EDGECNN_X86_TFLITE_DIR"
    fi
    mkdir -p "$DIR"
    touch "$MARKER"
}

build() {
    claim_dir
    local py
    py=$(pick_python)
    local ver
    ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || die "cannot run $py"
    case $ver in 3.9|3.10|3.11) ;; *) die "$py is Python $ver; tflite-runtime 2.14 has x86-64 wheels for 3.9-3.11 only: set PYTHON=python3.11" ;; esac
    if [ ! -e "$DIR/.done-venv" ]; then
        rm -rf "$VENV"
        say "venv $VENV ($py, Python $ver): tflite-runtime==2.14.* numpy<2"
        "$py" -m venv "$VENV"
        "$VENV/bin/pip" install --disable-pip-version-check --no-input --only-binary=:all: \
            "tflite-runtime==2.14.*" "numpy<2"
        "$VENV/bin/python" -c 'from tflite_runtime.interpreter import Interpreter; import numpy'
        touch "$DIR/.done-venv"
    fi
    say "built: $VENV/bin/python has $("$VENV/bin/python" -c 'import tflite_runtime, numpy; print("tflite-runtime", tflite_runtime.__version__, "numpy", numpy.__version__)')"
}

sshd_pid() {
    [ -s "$DIR/sshd.pid" ] || return 1
    local pid
    pid=$(cat "$DIR/sshd.pid")
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

start() {
    [ -e "$DIR/.done-venv" ] || die "$DIR is not built; run: bash $0 build"
    [ -x "$SSHD" ] || die "no OpenSSH server at $SSHD: apt-get install openssh-server"
    if [ "$(id -u)" = 0 ] && [ ! -d /run/sshd ]; then
        # sshd started by root insists on its privilege separation directory.
        mkdir -p -m 755 /run/sshd
    fi
    [ -e "$DIR/host_key" ] || ssh-keygen -q -t ed25519 -N '' -C edgecnn-x86-tflite-host -f "$DIR/host_key"
    [ -e "$DIR/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C edgecnn-x86-tflite-client -f "$DIR/id_ed25519"
    cp "$DIR/id_ed25519.pub" "$DIR/authorized_keys"
    printf '[127.0.0.1]:%s %s\n' "$PORT" "$(cut -d' ' -f1,2 "$DIR/host_key.pub")" > "$DIR/known_hosts"
    # UsePAM no + StrictModes no: a private sshd that needs no system configuration; the
    # only way in is the generated key, and it listens on loopback only.
    cat > "$DIR/sshd_config" <<EOF
# written by edgecnn tools/tflite_runtime_x86.sh
Port $PORT
ListenAddress 127.0.0.1
HostKey $DIR/host_key
PidFile $DIR/sshd.pid
AuthorizedKeysFile $DIR/authorized_keys
AllowUsers $(id -un)
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
Subsystem sftp internal-sftp
EOF
    if ! sshd_pid >/dev/null; then
        "$SSHD" -t -f "$DIR/sshd_config" || die "sshd -t rejected $DIR/sshd_config"
        say "starting sshd on 127.0.0.1:$PORT"
        "$SSHD" -f "$DIR/sshd_config" -E "$DIR/sshd.log" || die "sshd did not start; see $DIR/sshd.log"
    fi
    local i
    for i in $(seq 1 30); do
        ssh -i "$DIR/id_ed25519" -o UserKnownHostsFile="$DIR/known_hosts" -o StrictHostKeyChecking=yes \
            -o BatchMode=yes -o ConnectTimeout=5 -p "$PORT" "$(id -un)@127.0.0.1" true 2>/dev/null && break
        [ "$i" = 30 ] && die "sshd on 127.0.0.1:$PORT does not accept the key; see $DIR/sshd.log"
        sleep 0.5
    done
    cat > "$DIR/device.env.tmp" <<EOF
# written by edgecnn tools/tflite_runtime_x86.sh start; read by device_tests/test_emulated_pi.py
EDGECNN_X86_TFLITE_HOST=ssh://$(id -un)@127.0.0.1:$PORT
EDGECNN_X86_TFLITE_IDENTITY=$DIR/id_ed25519
EDGECNN_X86_TFLITE_KNOWN_HOSTS=$DIR/known_hosts
EDGECNN_X86_TFLITE_PYTHON=$VENV/bin/python
EOF
    mv -f "$DIR/device.env.tmp" "$DIR/device.env"
    print_settings
}

print_settings() {
    cat <<EOF
ssh target:     ssh://$(id -un)@127.0.0.1:$PORT
identity:       $DIR/id_ed25519
known hosts:    $DIR/known_hosts
remote python:  $VENV/bin/python   (tflite-runtime 2.14, numpy<2, x86_64)
settings file:  $DIR/device.env
EOF
}

stop() {
    local pid
    if pid=$(sshd_pid); then
        say "stopping sshd (pid $pid)"
        kill "$pid"
    fi
    rm -f "$DIR/device.env"
    say "stopped"
}

status() {
    [ -e "$DIR/.done-venv" ] || { say "not built (in $DIR); run: bash $0 build"; return 3; }
    local pid
    if pid=$(sshd_pid); then
        say "running (sshd pid $pid)"
        print_settings
        return 0
    fi
    say "built, not running; run: bash $0 start"
    return 2
}

case "${1:-}" in
    build) build ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 64 ;;
esac
