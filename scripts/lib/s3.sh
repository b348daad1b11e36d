# shellcheck shell=bash
# A throwaway S3 API server: moto's, from PyPI, in a virtualenv kept under
# the user's cache directory (created when missing; python3-venv installed
# from Debian's packages when needed, as root). start_s3 starts one on a
# free loopback port and sets S3_ENDPOINT to its URL and MOTO_SERVER to the
# program, for tests that need a server of their own; stop_s3 stops it.
# Sourced by scripts/test and the benchmarks; the caller sets the trap.

MOTO_VERSION=5.2.5

moto_venv() { echo "${XDG_CACHE_HOME:-$HOME/.cache}/graven-test/moto-$MOTO_VERSION"; }

install_moto() {
    local venv
    venv=$(moto_venv)
    [ -x "$venv/bin/moto_server" ] && return 0
    echo "==> installing moto $MOTO_VERSION (an S3 API server) into $venv" >&2
    if ! python3 -c 'import ensurepip' 2>/dev/null; then
        # shellcheck source=apt.sh
        . "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
        apt_install python3-venv
    fi
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
}

start_s3() {
    install_moto
    MOTO_SERVER="$(moto_venv)/bin/moto_server"
    S3_DIR=$(mktemp -d "${TMPDIR:-/tmp}/graven-s3-XXXXXX")
    local port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    echo "==> starting a throwaway S3 server (moto, port $port)" >&2
    "$MOTO_SERVER" -H 127.0.0.1 -p "$port" >"$S3_DIR/server.log" 2>&1 &
    S3_PID=$!
    S3_ENDPOINT="http://127.0.0.1:$port"
    if ! python3 - "$port" <<'PY'; then
import socket, sys, time
deadline = time.time() + 30
while time.time() < deadline:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
PY
        echo "error: the S3 server did not start; its log:" >&2
        cat "$S3_DIR/server.log" >&2
        return 1
    fi
}

stop_s3() {
    if [ -n "${S3_PID:-}" ]; then
        kill "$S3_PID" 2>/dev/null || true
        wait "$S3_PID" 2>/dev/null || true
    fi
    [ -n "${S3_DIR:-}" ] && rm -rf "$S3_DIR"
    return 0
}
