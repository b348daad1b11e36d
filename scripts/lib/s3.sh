# shellcheck shell=bash
# A throwaway S3 API server: moto's, from PyPI, in a virtualenv kept under
# the user's cache directory (created when missing; python3-venv installed
# from Debian's packages when needed, as root). start_s3 starts one on a
# free loopback port and sets S3_ENDPOINT to its URL and MOTO_SERVER to the
# program, for tests that need a server of their own; stop_s3 stops it.
# Sourced by scripts/test and the benchmarks; the caller sets the trap.

MOTO_VERSION=5.2.5

# shellcheck source=venv.sh
. "$(dirname "${BASH_SOURCE[0]}")/venv.sh"

# The virtualenv moto is in (its python has boto3: bench/team.sh uses it).
moto_venv() { echo "${XDG_CACHE_HOME:-$HOME/.cache}/graven-test/moto-$MOTO_VERSION"; }

install_moto() {
    venv_tool "moto-$MOTO_VERSION" "moto[server]==$MOTO_VERSION" moto_server
    MOTO_SERVER=$VENV_TOOL
}

start_s3() {
    install_moto
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
