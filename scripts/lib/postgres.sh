# shellcheck shell=bash
# A throwaway PostgreSQL cluster from Debian's packages (installed when
# missing, as root): start_postgres starts one on a free loopback port with
# fsync off and password authentication, and sets PG_URL to its postgres
# database (postgres://postgres:PASSWORD@127.0.0.1:PORT/postgres);
# stop_postgres stops and removes it. Sourced by scripts/test and the
# benchmarks; the caller sets the trap.

postgres_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

start_postgres() {
    if [ -z "$(postgres_bin)" ]; then
        # shellcheck source=apt.sh
        . "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
        apt_install postgresql
    fi
    PG_BIN=$(postgres_bin)
    PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/graven-postgres-XXXXXX")
    local port password
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    password=graven-test-$$
    echo "$password" >"$PG_DIR/password"
    chown -R postgres "$PG_DIR"
    echo "==> starting a throwaway PostgreSQL ($PG_BIN, port $port)" >&2
    runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 --pwfile="$PG_DIR/password" >"$PG_DIR/initdb.log"
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
        -o "-c fsync=off -c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$PG_DIR -c max_connections=300" \
        start >/dev/null
    PG_URL="postgres://postgres:$password@127.0.0.1:$port/postgres"
}

stop_postgres() {
    if [ -n "${PG_DIR:-}" ] && [ -f "$PG_DIR/data/postmaster.pid" ]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    [ -n "${PG_DIR:-}" ] && rm -rf "$PG_DIR"
    return 0
}
