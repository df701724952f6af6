#!/usr/bin/env bash
# An emulated 64-bit Raspberry Pi on any x86-64 Debian/Ubuntu machine, for device_tests/.
#
#   sudo bash tools/emulated_pi.sh build    # once, a few minutes: arm64 Debian + two runtimes
#   sudo bash tools/emulated_pi.sh start    # bind-mount /proc /sys /dev, start its sshd
#   bash tools/emulated_pi.sh status        # what runs, and the settings device_tests/ read
#   sudo bash tools/emulated_pi.sh stop     # stop sshd, unmount
#   sudo bash tools/emulated_pi.sh destroy  # stop, then delete the folder (only one this script made)
#
# What it is: an arm64 Debian bookworm root filesystem made by `debootstrap --arch=arm64`
# from Debian's own packages, run under qemu-user (static qemu-aarch64) through the kernel's
# binfmt_misc, so every program in it -- python, numpy, the TFLite runtimes, sshd itself --
# is the real aarch64 build executing aarch64 instructions. Inside are two venvs:
#   /opt/edgecnn/litert   ai-edge-litert 2.3 + numpy        (what a Pi 4/5 on 64-bit OS runs)
#   /opt/edgecnn/tflite   tflite-runtime 2.14 + numpy<2     (the older tflite-runtime set-up)
# and an sshd (aarch64, its own config) listening on 127.0.0.1 only, with a generated host
# key and a generated client key for the user `pi`.
#
# What it proves: that edgecnn's SSH path, the stdlib+numpy device runner and `verify` work
# on an aarch64 Python with the real aarch64 wheels, and what those kernels compute
# (correctness is real). Latency is emulated and meaningless.
#
# Needs: root (debootstrap, chroot, mounts, binfmt_misc registration), the Debian packages
# debootstrap, file and openssh-client (build installs them with apt-get when absent,
# saying so), a static qemu-aarch64 >= 10 (the host's qemu-user-static when new enough,
# else build fetches qemu-user from Debian bookworm-backports into $DIR/qemu through apt,
# installing nothing), network access to a Debian mirror and to PyPI, ~700 MB of disk.
#
# Settings (environment):
#   EDGECNN_EMULATED_PI_DIR   folder to build in (default ~/.cache/edgecnn/emulated-pi)
#   EDGECNN_EMULATED_PI_PORT  sshd port on 127.0.0.1 (default 2322)
#   EDGECNN_DEBIAN_MIRROR     Debian mirror (default http://deb.debian.org/debian)
#   EDGECNN_EMULATED_PI_CPU   CPU qemu emulates for SSH sessions (default cortex-a72, a
#                             Pi 4; cortex-a76 for a Pi 5; max); applied by start
#   EDGECNN_QEMU_AARCH64      a static qemu-aarch64 >= 10 to use instead
#   EDGECNN_PIP_INDEX_URL     optional PyPI mirror for the pip installs inside
#   EDGECNN_PIP_CERT          CA bundle pip inside trusts (default: the host's
#                             /etc/ssl/certs/ca-certificates.crt, copied in)
#
# `start` writes $DIR/device.env (shell syntax) with EDGECNN_EMULATED_PI_HOST, _IDENTITY,
# _KNOWN_HOSTS, _LITERT_PYTHON, _TFLITE_PYTHON; device_tests/test_emulated_pi.py reads it.
set -euo pipefail

# Under sudo, the folder and the client key belong to the user who ran sudo: the tests
# run as that user and read its ~/.cache.
INVOKER=${SUDO_USER:-}
[ "$INVOKER" = root ] && INVOKER=
INVOKER_HOME=$HOME
[ -n "$INVOKER" ] && INVOKER_HOME=$(getent passwd "$INVOKER" | cut -d: -f6)
DIR=${EDGECNN_EMULATED_PI_DIR:-$INVOKER_HOME/.cache/edgecnn/emulated-pi}
PORT=${EDGECNN_EMULATED_PI_PORT:-2322}
MIRROR=${EDGECNN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# The CPU qemu presents to programs started over SSH: a Raspberry Pi 4's Cortex-A72
# (ARMv8.0: no dot-product, no SVE) by default, so XNNPACK picks the kernels a Pi 4 runs;
# cortex-a76 for a Pi 5, max for every feature qemu knows.
CPU=${EDGECNN_EMULATED_PI_CPU:-cortex-a72}
ROOT="$DIR/rootfs"
MARKER="$DIR/.edgecnn-emulated-pi"
USER_NAME=pi
LITERT_PY=/opt/edgecnn/litert/bin/python
TFLITE_PY=/opt/edgecnn/tflite/bin/python
LITERT_REQ="ai-edge-litert==2.3.* numpy"
TFLITE_REQ="tflite-runtime==2.14.* numpy<2"
SSHD_CONFIG=/etc/ssh/sshd_config_edgecnn
SSHD_PID=/run/sshd-edgecnn.pid

hand_over() { [ -z "$INVOKER" ] || chown "$INVOKER:" "$@"; }

say() { printf 'emulated-pi: %s\n' "$*"; }
die() { printf 'emulated-pi: error: %s\n' "$*" >&2; exit 1; }

need_root() {
    [ "$(id -u)" = 0 ] || die "'$1' needs root (debootstrap, chroot, mounts, binfmt_misc); run: sudo bash $0 $1"
}

# Refuse a folder this script did not make: never build into (or delete) a user's files.
claim_dir() {
    if [ -e "$DIR" ] && [ ! -e "$MARKER" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
        die "$DIR exists and was not made by this script; choose another EDGECNN_EMULATED_PI_DIR"
    fi
    mkdir -p "$DIR"
    touch "$MARKER"
}

ensure_host_packages() {
    local missing=()
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v file >/dev/null || missing+=(file)
    command -v ssh-keygen >/dev/null || missing+=(openssh-client)
    if [ ${#missing[@]} -gt 0 ]; then
        command -v apt-get >/dev/null || die "install ${missing[*]} first (no apt-get here)"
        say "installing Debian packages on this host: ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" \
            || die "apt-get install ${missing[*]} failed (run 'apt-get update' first?)"
    fi
}

# qemu-user 7.2 (Debian bookworm's qemu-user-static) crashes ai-edge-litert 2.3 with
# SIGSEGV while creating the interpreter; 10.0 (bookworm-backports) runs it. An older
# qemu on the host is left alone: a qemu-aarch64 10.x of our own goes into $DIR/qemu.
QEMU_MIN_MAJOR=10
QEMU_SUITE=bookworm-backports
BINFMT_NAME=edgecnn-qemu-aarch64
AARCH64_MAGIC='\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
AARCH64_MASK='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'

qemu_major() { "$1" --version 2>/dev/null | sed -n '1s/.*version \([0-9]*\)\..*/\1/p'; }

# A static qemu-aarch64 (the chroot has no x86 libraries) of at least QEMU_MIN_MAJOR?
good_qemu() {
    [ -n "$1" ] && [ -x "$1" ] || return 1
    file -L "$1" 2>/dev/null | grep -q 'static' || return 1
    local major
    major=$(qemu_major "$1")
    [ -n "$major" ] && [ "$major" -ge "$QEMU_MIN_MAJOR" ]
}

pick_qemu() {
    local q
    for q in "${EDGECNN_QEMU_AARCH64:-}" /usr/bin/qemu-aarch64-static "$DIR/qemu/usr/bin/qemu-aarch64"; do
        good_qemu "$q" && { echo "$q"; return 0; }
    done
    return 1
}

# qemu-user from Debian's $QEMU_SUITE, through apt with a private source list and state
# (signatures checked with the host's debian-archive-keyring), unpacked into $DIR/qemu;
# nothing is installed on the host.
fetch_qemu() {
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg apt="$DIR/apt"
    [ -r "$keyring" ] || die "the host's qemu-aarch64 is older than $QEMU_MIN_MAJOR.0 and $keyring is missing to fetch one; install qemu-user-static >= $QEMU_MIN_MAJOR.0 or set EDGECNN_QEMU_AARCH64 to a static qemu-aarch64 >= $QEMU_MIN_MAJOR.0"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/deb"
    echo "deb [arch=amd64 signed-by=$keyring] $MIRROR $QEMU_SUITE main" > "$apt/sources.list"
    local opts=(-o Dir::Etc::SourceList="$apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent
                -o Dir::State::Lists="$apt/lists" -o Dir::Cache="$apt/cache" -o Debug::NoLocking=1 -o APT::Sandbox::User=root -q)
    say "fetching qemu-user from Debian $QEMU_SUITE into $DIR/qemu (the host's qemu is older than $QEMU_MIN_MAJOR.0)"
    apt-get "${opts[@]}" update || die "apt-get update of $QEMU_SUITE ($MIRROR) failed"
    (cd "$apt/deb" && rm -f ./*.deb && apt-get "${opts[@]}" download "qemu-user/$QEMU_SUITE") \
        || die "apt-get download qemu-user/$QEMU_SUITE failed"
    rm -rf "$DIR/qemu" "$DIR/qemu.tmp"
    dpkg-deb -x "$apt/deb"/qemu-user_*.deb "$DIR/qemu.tmp"
    # Only the aarch64 emulator is needed (the package holds every target, ~360 MB).
    install -D -m 755 "$DIR/qemu.tmp/usr/bin/qemu-aarch64" "$DIR/qemu/usr/bin/qemu-aarch64"
    rm -rf "$DIR/qemu.tmp" "$apt/deb"
}

ensure_binfmt() {
    local bm=/proc/sys/fs/binfmt_misc
    if [ ! -e "$bm/status" ]; then
        say "mounting binfmt_misc on $bm"
        mount -t binfmt_misc binfmt_misc "$bm" \
            || die "cannot mount binfmt_misc ('mount -t binfmt_misc binfmt_misc $bm' failed): this sandbox or container forbids it; run on a host or VM where root may mount it"
    fi
    local qemu=""
    if [ -e "$bm/$BINFMT_NAME" ]; then
        # Registered before (by this or another emulated Pi folder): keep it while it is good.
        qemu=$(sed -n 's/^interpreter //p' "$bm/$BINFMT_NAME")
        good_qemu "$qemu" || { echo -1 > "$bm/$BINFMT_NAME"; qemu=""; }
    fi
    if [ -z "$qemu" ]; then
        if ! qemu=$(pick_qemu); then
            fetch_qemu
            qemu=$(pick_qemu) || die "$DIR/qemu/usr/bin/qemu-aarch64 is not a static qemu >= $QEMU_MIN_MAJOR.0"
        fi
        # F: the kernel opens the interpreter now, so it need not exist inside the chroot.
        # The newest registration is matched first, so this one precedes an older
        # qemu-aarch64 entry of the host's for every aarch64 binary.
        say "registering $qemu ($("$qemu" --version | head -1)) with binfmt_misc as $BINFMT_NAME"
        printf ':%s:M::%s:%s:%s:OCF' "$BINFMT_NAME" "$AARCH64_MAGIC" "$AARCH64_MASK" "$qemu" > "$bm/register" \
            || die "writing to $bm/register failed: this kernel or sandbox forbids binfmt_misc registration"
    fi
    grep -q '^enabled' "$bm/$BINFMT_NAME" || die "$bm/$BINFMT_NAME is disabled: echo 1 > $bm/$BINFMT_NAME"
    QEMU=$qemu
}

# Which interpreter the kernel really picks for the chroot's binaries (another handler
# registered later would win): the running process's executable seen from the host.
check_interpreter() {
    chroot "$ROOT" /bin/sleep 3 &
    local pid=$! exe
    sleep 1
    exe=$(readlink "/proc/$pid/exe" || true)
    wait "$pid" || true
    [ "$exe" = "$QEMU" ] || die "aarch64 binaries run under ${exe:-?}, not $QEMU (another binfmt_misc handler takes precedence; disable it with: echo 0 > /proc/sys/fs/binfmt_misc/NAME)"
}

run_in() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }

is_mounted() { mountpoint -q "$1"; }

mount_system() {
    for fs in proc sys dev; do
        is_mounted "$ROOT/$fs" && continue
        case $fs in
            proc) mount -t proc proc "$ROOT/proc" || die "mount -t proc proc $ROOT/proc failed" ;;
            # rslave: unmounting inside never propagates back to the host's /sys or /dev.
            *) mount --rbind "/$fs" "$ROOT/$fs" && mount --make-rslave "$ROOT/$fs" \
                   || die "mount --rbind /$fs $ROOT/$fs failed" ;;
        esac
    done
}

umount_system() {
    for fs in dev sys proc; do
        if is_mounted "$ROOT/$fs"; then
            umount -R "$ROOT/$fs" 2>/dev/null || umount -R -l "$ROOT/$fs"
        fi
    done
}

step_done() { [ -e "$DIR/.done-$1" ]; }
mark_done() { touch "$DIR/.done-$1"; say "step $1 done ($(( $(date +%s) - T0 )) s since start)"; }

build() {
    need_root build
    ensure_host_packages
    claim_dir
    ensure_binfmt
    T0=$(date +%s)
    if ! step_done debootstrap; then
        if [ -e "$ROOT" ]; then
            umount_system
            say "removing the unfinished root filesystem $ROOT"
            rm -rf --one-file-system "$ROOT"
        fi
        say "debootstrap --arch=arm64 $SUITE from $MIRROR (first stage, downloads ~100 MB)"
        debootstrap --arch=arm64 --foreign --variant=minbase \
            --include=python3,python3-venv,openssh-server,openssh-sftp-server,ca-certificates,procps \
            "$SUITE" "$ROOT" "$MIRROR"
        say "debootstrap second stage, under qemu-aarch64"
        run_in /debootstrap/debootstrap --second-stage
        mark_done debootstrap
    fi
    check_interpreter
    cp -f /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
    mount_system
    local pipargs=(--disable-pip-version-check --no-input --prefer-binary --only-binary=:all:)
    [ -n "${EDGECNN_PIP_INDEX_URL:-}" ] && pipargs+=(--index-url "$EDGECNN_PIP_INDEX_URL")
    # pip inside trusts the host's CA bundle: where HTTPS goes through a proxy with its
    # own CA (corporate networks, sandboxes), the chroot's stock bundle would refuse PyPI.
    local ca=${EDGECNN_PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
    if [ -r "$ca" ]; then
        install -D -m 644 "$ca" "$ROOT/etc/edgecnn/host-ca-certificates.crt"
        pipargs+=(--cert /etc/edgecnn/host-ca-certificates.crt)
    fi
    if ! step_done litert; then
        say "venv /opt/edgecnn/litert: $LITERT_REQ (aarch64 wheels from PyPI)"
        rm -rf "$ROOT/opt/edgecnn/litert"
        run_in python3 -m venv /opt/edgecnn/litert
        # shellcheck disable=SC2086
        run_in /opt/edgecnn/litert/bin/pip install "${pipargs[@]}" $LITERT_REQ
        run_in "$LITERT_PY" -c 'from ai_edge_litert.interpreter import Interpreter; import numpy'
        mark_done litert
    fi
    if ! step_done tflite; then
        say "venv /opt/edgecnn/tflite: $TFLITE_REQ (aarch64 wheels from PyPI)"
        rm -rf "$ROOT/opt/edgecnn/tflite"
        run_in python3 -m venv /opt/edgecnn/tflite
        run_in /opt/edgecnn/tflite/bin/pip install "${pipargs[@]}" "tflite-runtime==2.14.*" "numpy<2"
        run_in "$TFLITE_PY" -c 'from tflite_runtime.interpreter import Interpreter; import numpy'
        mark_done tflite
    fi
    if ! step_done ssh; then
        say "user $USER_NAME, keys, sshd config on 127.0.0.1:$PORT"
        run_in sh -c "id -u $USER_NAME >/dev/null 2>&1 || useradd -m -s /bin/bash $USER_NAME"
        # '*': no password can match, but the account is not locked ('!'), which sshd
        # without PAM would refuse even with a valid key.
        run_in usermod -p '*' "$USER_NAME"
        rm -f "$DIR/id_ed25519" "$DIR/id_ed25519.pub" "$ROOT/etc/ssh/edgecnn_host_ed25519_key"*
        ssh-keygen -q -t ed25519 -N '' -C "edgecnn-emulated-pi-client" -f "$DIR/id_ed25519"
        hand_over "$DIR/id_ed25519" "$DIR/id_ed25519.pub"
        ssh-keygen -q -t ed25519 -N '' -C "edgecnn-emulated-pi-host" -f "$ROOT/etc/ssh/edgecnn_host_ed25519_key"
        install -d -m 700 "$ROOT/home/$USER_NAME/.ssh"
        install -m 600 "$DIR/id_ed25519.pub" "$ROOT/home/$USER_NAME/.ssh/authorized_keys"
        run_in chown -R "$USER_NAME:$USER_NAME" "/home/$USER_NAME/.ssh"
        mark_done ssh
    fi
    write_sshd_config
    write_known_hosts
    umount_system
    say "built in $DIR; now: sudo bash $0 start"
}

write_sshd_config() {
    # UsePAM no: no PAM stack in a minbase root; the only way in is the generated key.
    cat > "$ROOT$SSHD_CONFIG" <<EOF
# written by edgecnn tools/emulated_pi.sh
Port $PORT
ListenAddress 127.0.0.1
HostKey /etc/ssh/edgecnn_host_ed25519_key
PidFile $SSHD_PID
PermitRootLogin no
AllowUsers $USER_NAME
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PrintMotd no
Subsystem sftp /usr/lib/openssh/sftp-server
# qemu-user reads QEMU_CPU at every exec: sessions and everything they start run on it.
SetEnv QEMU_CPU=$CPU
EOF
}

write_known_hosts() {
    local key
    key=$(cut -d' ' -f1,2 "$ROOT/etc/ssh/edgecnn_host_ed25519_key.pub")
    printf '[127.0.0.1]:%s %s\n' "$PORT" "$key" > "$DIR/known_hosts"
    hand_over "$DIR/known_hosts"
}

sshd_pid() {
    local pidfile="$ROOT$SSHD_PID"
    [ -s "$pidfile" ] || return 1
    local pid
    pid=$(cat "$pidfile")
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

print_settings() {
    cat <<EOF
ssh target:     ssh://$USER_NAME@127.0.0.1:$PORT
emulated CPU:   $(sed -n 's/^SetEnv QEMU_CPU=//p' "$ROOT$SSHD_CONFIG" 2>/dev/null)
identity:       $DIR/id_ed25519
known hosts:    $DIR/known_hosts
remote python:  $LITERT_PY   (ai-edge-litert 2.3)
remote python:  $TFLITE_PY   (tflite-runtime 2.14, numpy<2)
settings file:  $DIR/device.env
by hand:        ssh -i $DIR/id_ed25519 -o UserKnownHostsFile=$DIR/known_hosts -p $PORT $USER_NAME@127.0.0.1 uname -m
EOF
}

start() {
    need_root start
    [ -e "$DIR/.done-ssh" ] || die "$DIR is not built; run: sudo bash $0 build"
    ensure_binfmt
    check_interpreter
    mount_system
    mkdir -p "$ROOT/run/sshd" "$ROOT/tmp"
    chmod 1777 "$ROOT/tmp"
    write_sshd_config
    write_known_hosts
    if ! sshd_pid >/dev/null; then
        run_in /usr/sbin/sshd -t -f "$SSHD_CONFIG" || die "sshd -t rejected $ROOT$SSHD_CONFIG"
        say "starting the emulated Pi's sshd (aarch64, under qemu) on 127.0.0.1:$PORT"
        run_in /usr/sbin/sshd -f "$SSHD_CONFIG" -E /var/log/sshd-edgecnn.log \
            || die "sshd did not start; see $ROOT/var/log/sshd-edgecnn.log"
    fi
    local i
    for i in $(seq 1 60); do
        if ssh -i "$DIR/id_ed25519" -o UserKnownHostsFile="$DIR/known_hosts" -o StrictHostKeyChecking=yes \
               -o BatchMode=yes -o ConnectTimeout=10 -p "$PORT" "$USER_NAME@127.0.0.1" true 2>/dev/null; then
            break
        fi
        [ "$i" = 60 ] && die "sshd on 127.0.0.1:$PORT does not accept the key after 60 s; see $ROOT/var/log/sshd-edgecnn.log"
        sleep 1
    done
    local tmp="$DIR/device.env.tmp"
    cat > "$tmp" <<EOF
# written by edgecnn tools/emulated_pi.sh start; read by device_tests/test_emulated_pi.py
EDGECNN_EMULATED_PI_HOST=ssh://$USER_NAME@127.0.0.1:$PORT
EDGECNN_EMULATED_PI_IDENTITY=$DIR/id_ed25519
EDGECNN_EMULATED_PI_KNOWN_HOSTS=$DIR/known_hosts
EDGECNN_EMULATED_PI_LITERT_PYTHON=$LITERT_PY
EDGECNN_EMULATED_PI_TFLITE_PYTHON=$TFLITE_PY
EOF
    hand_over "$tmp"
    mv -f "$tmp" "$DIR/device.env"
    say "running; machine: $(ssh -i "$DIR/id_ed25519" -o UserKnownHostsFile="$DIR/known_hosts" -o BatchMode=yes -p "$PORT" "$USER_NAME@127.0.0.1" uname -m)"
    print_settings
}

stop() {
    need_root stop
    local pid
    if pid=$(sshd_pid); then
        say "stopping sshd (pid $pid)"
        kill "$pid"
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    rm -f "$DIR/device.env"
    [ -d "$ROOT" ] && umount_system
    say "stopped"
}

status() {
    if [ ! -e "$DIR/.done-ssh" ]; then
        say "not built (in $DIR); run: sudo bash $0 build"
        return 3
    fi
    local pid
    if pid=$(sshd_pid 2>/dev/null); then
        say "running (sshd pid $pid, 127.0.0.1:$PORT)"
        print_settings
        return 0
    fi
    say "built, not running; run: sudo bash $0 start"
    return 2
}

destroy() {
    need_root destroy
    [ -e "$MARKER" ] || die "$DIR was not made by this script; not deleting it"
    stop
    is_mounted "$ROOT/proc" || is_mounted "$ROOT/sys" || is_mounted "$ROOT/dev" \
        && die "something is still mounted under $ROOT; not deleting"
    local entry=/proc/sys/fs/binfmt_misc/$BINFMT_NAME
    if [ -e "$entry" ] && grep -q "^interpreter $DIR/" "$entry"; then
        say "unregistering $BINFMT_NAME (its qemu is in $DIR)"
        echo -1 > "$entry"
    fi
    rm -rf --one-file-system "$DIR"
    say "deleted $DIR"
}

case "${1:-}" in
    build) build ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    destroy) destroy ;;
    *) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 64 ;;
esac
