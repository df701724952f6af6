#!/usr/bin/env bash
# One entry point for people and CI: sets everything up, then runs what you ask.
#   bash tools/dev.sh quickstart [edgecnn build options]   # set up, then build recipes/quickstart.yaml
#   bash tools/dev.sh test [pytest options]                # set up, then run the test suite
#   bash tools/dev.sh setup                                # set up only
# Set-up is idempotent: a virtualenv in .venv with edgecnn installed (editable), and the
# Fashion-MNIST files (Debian package dataset-fashion-mnist, else a download).
#
# System packages: where something is missing it says, before installing, which Debian
# packages it will install with apt-get (as root, or with sudo that needs no password)
# and why: python3.11-venv (to create .venv), dataset-fashion-mnist (the data set),
# and for `test` openssh-server, openssh-client, adb (the SSH and adb transport tests
# use the real programs) and gcc (the delegate tests build a stand-in delegate library).
# With CI set (as .ci/run does) a test that skips for want of any of these fails. EDGECNN_NO_SYSTEM_PACKAGES=1 installs none: the data
# set is then downloaded into ~/.keras/datasets, and tests that need a missing program
# skip with their reason.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"

say() { printf '[edgecnn setup] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi
}

# apt_install WHY PACKAGE...: say what will be installed and why, then install it.
apt_install() {
  local why=$1
  shift
  if [ "${EDGECNN_NO_SYSTEM_PACKAGES:-}" = 1 ]; then
    say "not installing system package(s) $* ($why): EDGECNN_NO_SYSTEM_PACKAGES=1"
    return 1
  fi
  command -v apt-get >/dev/null || { say "cannot install $* ($why): no apt-get on this machine"; return 1; }
  say "installing system package(s) $* with apt-get, $why (set EDGECNN_NO_SYSTEM_PACKAGES=1 to skip this)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 && return 0
  as_root apt-get update -q >/dev/null 2>&1 || return 1
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1
}

find_python() {
  for c in "${PYTHON:-}" python3.11 python3; do
    [ -n "$c" ] && command -v "$c" >/dev/null || continue
    if "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then echo "$c"; return 0; fi
  done
  return 1
}

setup_venv() {
  local py stamp want
  py=$(find_python) || { say "Python 3.11 is required (apt-get install python3.11 python3.11-venv, or set PYTHON=...)"; exit 1; }
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV with $py"
    if ! "$py" -m venv "$VENV" 2>/dev/null; then
      rm -rf "$VENV"
      say "the Python venv module is missing"
      apt_install "to create the virtualenv $VENV" python3.11-venv \
        || apt_install "to create the virtualenv $VENV" python3-venv \
        || { say "install python3.11-venv (or set PYTHON=... to a Python 3.11 with venv) and retry"; exit 1; }
      "$py" -m venv "$VENV"
    fi
  fi
  stamp="$VENV/.edgecnn-installed"
  want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "installing edgecnn and its dependencies into $VENV (first time: a few minutes)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[test,demo,quantize]"
    echo "$want" > "$stamp"
  fi
}

setup_data() {
  local sys_dir=/usr/share/datasets/fashion-mnist
  if [ -n "${EDGECNN_DATA:-}" ] || [ -f "$sys_dir/t10k-labels-idx1-ubyte.gz" ]; then return 0; fi
  if apt_install "for the Fashion-MNIST data set the quickstart and the tests use" dataset-fashion-mnist \
    && [ -f "$sys_dir/t10k-labels-idx1-ubyte.gz" ]; then return 0; fi
  say "downloading Fashion-MNIST into ~/.keras/datasets/fashion-mnist instead (sha256-checked)"
  "$VENV/bin/edgecnn" data download fashion_mnist
}

setup_test_tools() {
  # The SSH and adb transport tests run a real sshd on 127.0.0.1 and the real adb binary;
  # without them those tests skip (with the reason), the rest still runs.
  local missing=()
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  command -v ssh >/dev/null && command -v scp >/dev/null || missing+=(openssh-client)
  command -v adb >/dev/null || missing+=(adb)
  command -v cc >/dev/null || missing+=(gcc)   # builds the stand-in Edge TPU delegate library the delegate tests load
  [ ${#missing[@]} -eq 0 ] && return 0
  apt_install "for the SSH, adb and delegate tests (a real sshd on 127.0.0.1, the real adb, a C compiler)" "${missing[@]}" \
    || say "note: without ${missing[*]} the tests that need them skip, with the reason"
}

cmd=${1:-}
shift || true
case "$cmd" in
  setup) setup_venv; setup_data ;;
  quickstart) setup_venv; setup_data; exec "$VENV/bin/edgecnn" build recipes/quickstart.yaml "$@" ;;
  # The layer contracts (pyproject.toml [tool.importlinter]) first: a back-edge fails in seconds.
  test) setup_venv; setup_data; setup_test_tools; "$VENV/bin/lint-imports" --no-cache >&2
        exec "$VENV/bin/python" -m pytest -q "$@" ;;
  *) echo "usage: bash tools/dev.sh {quickstart|test|setup} [args...]" >&2; exit 2 ;;
esac
