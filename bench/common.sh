# shellcheck shell=bash
# What the benchmarks share. Sourced after REPO is set and log is defined.

# graven_binary: sets GRAVEN to BENCH_GRAVEN_BIN, or to a release build of
# this tree (`cargo build --release`).
graven_binary() {
    if [[ -n "${BENCH_GRAVEN_BIN:-}" ]]; then
        GRAVEN=$BENCH_GRAVEN_BIN
    else
        log "building graven (cargo build --release)"
        (cd "$REPO" && cargo build --release >&2)
        GRAVEN=${CARGO_TARGET_DIR:-$REPO/target}/release/graven
    fi
}

# free_port: a loopback port nothing listens on now.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
