#!/usr/bin/env bash
# bench/slowloris.sh: `graven run` under a slowloris attack, with systemd's
# default open-file limit.
#
# The runner starts under `ulimit -n 1024` (soft and hard, so it cannot
# raise it), serving nginx as its web process (bench/nginx-release.sh).
# Then BENCH_ATTACKERS (default 5,000) connections each send a request head
# one header line every 5 s and never finish it (reopened a second after
# they are closed), for BENCH_DURATION seconds. Meanwhile:
#   - normal requests, 50 a second on fresh connections: their p99 and
#     failures, before the attack and during it;
#   - a rollout (`config set --wait`) in the middle of the attack;
#   - the runner's thread count and resident memory, sampled each second.
# Targets (the run-stage issue): p99 under 50 ms during the attack, the
# rollout succeeds, the thread count stays constant, memory under 100 MB.
# The peer: nginx as a reverse proxy to the same app, under the same limit
# (worker_connections 1024) and the same attack.
#
# Usage: bench/slowloris.sh [WORK_DIR]
# Environment: BENCH_ATTACKERS=N (default 5000), BENCH_DURATION=S (default 30),
#              BENCH_GRAVEN_BIN=PATH.
# Loopback only.
set -euo pipefail

ATTACKERS=${BENCH_ATTACKERS:-5000}
DURATION=${BENCH_DURATION:-30}
die() { echo "bench/slowloris.sh: error: $*" >&2; exit 1; }
log() { echo "==> $*" >&2; }
[[ "$ATTACKERS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_ATTACKERS must be a positive integer (got '$ATTACKERS')"
[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] && ((DURATION >= 20)) || die "BENCH_DURATION must be at least 20 s (got '$DURATION')"

REPO=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
BENCH=$REPO/bench
WORK=${1:-$BENCH/.work/slowloris}
# shellcheck source=common.sh
. "$BENCH/common.sh"
. "$REPO/scripts/lib/apt.sh"
command -v nginx >/dev/null || apt_install nginx-light || die "needs nginx (apt-get install nginx-light)"
graven_binary
log "building the load generator (bench/loadgen)"
cargo build --release --quiet --manifest-path "$BENCH/loadgen/Cargo.toml" --target-dir "$BENCH/.work/loadgen-target" >&2
LOADGEN=$BENCH/.work/loadgen-target/release/graven-loadgen
export GRAVEN_AUTHOR=bench@example.invalid
# The attackers' own sockets.
ulimit -n "$(ulimit -Hn)"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

rm -rf "$WORK" && mkdir -p "$WORK/app"
cp "$BENCH/nginx-release.sh" "$WORK/app/serve.sh"
echo 'web: sh serve.sh' >"$WORK/app/Procfile"
cd "$WORK/app"
git init -q && git add -A && git -c user.name=bench -c user.email=bench@example.invalid commit -qm app
"$GRAVEN" build >/dev/null 2>&1 || die "graven build failed"
"$GRAVEN" release --env production >/dev/null 2>&1

G_PORT=$(free_port)
bash -c 'ulimit -n 1024 && exec "$@"' sh "$GRAVEN" run --env production --port "$G_PORT" >"$WORK/run.log" 2>&1 &
RUNNER=$!
PIDS+=("$RUNNER")
until curl -fs "http://127.0.0.1:$G_PORT/" | grep -q "release v1"; do
    kill -0 "$RUNNER" 2>/dev/null || die "graven run exited: see $WORK/run.log"
    sleep 0.2
done

# The peer: nginx as a reverse proxy to the same app, started on its own.
APP_PORT=$(free_port)
mkdir -p "$WORK/peer-app"
PORT=$APP_PORT TMPDIR=$WORK/peer-app GRAVEN_RELEASE=v1 sh "$BENCH/nginx-release.sh" 2>"$WORK/peer-app/stderr" &
PIDS+=($!)
N_PORT=$(free_port)
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log stderr error;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    upstream app { server 127.0.0.1:$APP_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$N_PORT;
        location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
EOF
bash -c 'ulimit -n 1024 && exec nginx -c "$1"' sh "$WORK/nginx/nginx.conf" 2>"$WORK/nginx/stderr" &
PIDS+=($!)
until curl -fs "http://127.0.0.1:$N_PORT/" >/dev/null; do sleep 0.1; done

sample() {   # sample PID OUT: threads and resident kB, each second
    while kill -0 "$1" 2>/dev/null; do
        awk '/^Threads:/ {t=$2} /^VmRSS:/ {r=$2} END {print t, r}' "/proc/$1/status" >>"$2" 2>/dev/null || break
        sleep 1
    done
}

attack() {   # attack LABEL PORT [ROLLOUT]
    local label=$1 port=$2 rollout=${3:-} before during
    before=$("$LOADGEN" latency --port "$port" --rate 50 --duration 5)
    "$LOADGEN" slowloris --port "$port" --connections "$ATTACKERS" --duration "$DURATION" >"$WORK/$label-attack.tsv" &
    local attacker=$!
    PIDS+=("$attacker")
    sleep 5
    if [[ -n "$rollout" ]]; then
        ( sleep $((DURATION / 3)); "$GRAVEN" config set A=1 --env production --wait --wait-timeout 60 \
            >"$WORK/rollout.txt" 2>&1 && echo ok >>"$WORK/rollout.txt" || echo FAILED >>"$WORK/rollout.txt" ) &
        PIDS+=($!)
    fi
    during=$("$LOADGEN" latency --port "$port" --rate 50 --duration $((DURATION - 10)))
    wait "$attacker" || true
    printf '%-26s before: %s\n%-26s during: %s\n' "$label" "$before" "" "$during"
    printf '%-26s attackers held open at the end: %s, closed by the server: %s\n' "" \
        "$(tail -1 "$WORK/$label-attack.tsv" | cut -f2)" "$(tail -1 "$WORK/$label-attack.tsv" | cut -f3)"
}

log "$ATTACKERS slowloris connections for $DURATION s against graven run (ulimit -n 1024)"
sample "$RUNNER" "$WORK/graven-samples.txt" &
PIDS+=($!)
{
    echo "slowloris: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, $ATTACKERS attackers, $DURATION s, ulimit -n 1024,"
    echo "  normal requests: 50/s on fresh connections (GET /, nginx answering behind the proxy)"
    attack "graven run" "$G_PORT" rollout
    echo "$(printf '%-26s' '') rollout during the attack: $(tail -1 "$WORK/rollout.txt") ($(grep -m1 -E 'serves|failed|has not' "$WORK/rollout.txt" || true))"
    awk 'NR == 1 || $1 < tmin { tmin = $1 } $1 > tmax { tmax = $1 } $2 > rmax { rmax = $2 }
         END { printf "%-26s threads %d to %d, resident memory at most %.1f MB\n", "", tmin, tmax, rmax / 1024 }' \
        "$WORK/graven-samples.txt"
    log "the same against nginx (reverse proxy, worker_connections 1024)"
    attack "nginx (reverse proxy)" "$N_PORT"
} | tee "$BENCH/.work/slowloris-report.txt"
