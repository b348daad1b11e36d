#!/usr/bin/env bash
# bench/switch.sh: availability of examples/hello under continuous HTTP load
# while it goes through a config change, a deploy and a rollback, run by
# `graven run` (zero-downtime switch behind its proxy) and, side by side, by
# honcho (the Procfile runner a team would use today) with a restart-based
# redeploy: stop honcho, change the config or code, start honcho again.
#
# For each it prints: failed requests (connection errors or non-200), the
# longest gap between successful responses, and the time from each switch
# command returning to the first response of the new release (the rollback's
# is the one the issue sets a target for). Nothing is asserted: it exits 0
# unless something fails to run.
#
# Usage: bench/switch.sh
# (then the same switches with 1,000 keep-alive clients; see "keep-alive" below)
# Environment: BENCH_DURATION=S     seconds of load per runner (default and least 20)
#              BENCH_CONNECTIONS=N  concurrent connections (default 8)
#              BENCH_KEEPALIVE_CLIENTS=N  keep-alive clients of the second part (default 1000)
#              BENCH_GRAVEN_BIN=PATH  use this binary instead of building one
# Everything listens on and is sent to loopback (127.0.0.1) only. Work files
# and the honcho virtualenv are kept in bench/.work/; the report is also
# written to bench/.work/switch-report.txt.
set -euo pipefail

DURATION=${BENCH_DURATION:-20}
CONNECTIONS=${BENCH_CONNECTIONS:-8}
die() { echo "bench/switch.sh: error: $*" >&2; exit 1; }
log() { echo "==> $*" >&2; }
[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || die "BENCH_DURATION must be a positive integer of seconds (got '$DURATION')"
[[ "$CONNECTIONS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_CONNECTIONS must be a positive integer (got '$CONNECTIONS')"
# The switches are a quarter of the run apart, and each takes the rollout's
# settle period (3 s) and the app's start: shorter, each is superseded by
# the next before it serves.
(( DURATION >= 20 )) || die "BENCH_DURATION must be at least 20 s, for each switch to serve before the next (got $DURATION)"

REPO=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
BENCH=$REPO/bench
LOAD=$BENCH/load.py
WORK=$BENCH/.work/switch
REPORT=$BENCH/.work/switch-report.txt
VENV=$BENCH/.work/honcho-venv
export GRAVEN_AUTHOR=bench@example.invalid   # so graven never needs git config
BENCH_START=$SECONDS

# The three switches happen at these offsets into the load: t≈4, 9 and 14 s
# of the default 20 s (20%, 45% and 70% of the duration).
T_CONFIG=$(awk -v d="$DURATION" 'BEGIN { printf "%.1f", d * 0.20 }')
T_DEPLOY=$(awk -v d="$DURATION" 'BEGIN { printf "%.1f", d * 0.45 }')
T_ROLLBACK=$(awk -v d="$DURATION" 'BEGIN { printf "%.1f", d * 0.70 }')

# ---------------------------------------------------------------- tools

if [[ -n "${BENCH_GRAVEN_BIN:-}" ]]; then
    # A name on PATH or a path; made absolute, as graven is run from other directories.
    GRAVEN=$(command -v -- "$BENCH_GRAVEN_BIN") && GRAVEN=$(realpath -- "$GRAVEN") \
        || die "BENCH_GRAVEN_BIN=$BENCH_GRAVEN_BIN: no such executable"
else
    log "building graven (cargo build --release)"
    (cd "$REPO" && cargo build --release >&2)
    GRAVEN=$REPO/target/release/graven
fi
[[ -x "$GRAVEN" ]] || die "$GRAVEN is not an executable graven binary (check BENCH_GRAVEN_BIN)"

HONCHO=$VENV/bin/honcho
if [[ ! -x "$HONCHO" ]]; then
    log "installing honcho from PyPI into bench/.work/honcho-venv"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet honcho >&2
fi
log "using $("$GRAVEN" --version) and honcho $("$HONCHO" --version 2>&1 | awk '{print $NF}')"

# ---------------------------------------------------------------- cleanup
# Every process this script starts is recorded here and stopped on exit,
# whatever the exit: graven run and honcho get SIGTERM (they stop their own
# children), then SIGKILL after 15 s; honcho runs in its own session so its
# whole process group can be killed too. Last, any process still running in
# the work directory (an app process either of them left behind) is killed
# by its pid and reported.
GRAVEN_PID= HONCHO_PID= LOAD_PID=

stop_pid() {   # stop_pid PID [GROUP]: SIGTERM, wait up to 15 s, then SIGKILL
    local pid=$1 group=${2:-} i
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid did not stop within 15 s of SIGTERM: sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    [[ -n "$group" ]] && kill -KILL -- "-$group" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

leftovers() {  # pids of processes whose working directory is under $WORK
    local link pid
    for link in /proc/[0-9]*/cwd; do
        pid=${link#/proc/}; pid=${pid%/cwd}
        [[ "$(readlink "$link" 2>/dev/null)" == "$WORK"* ]] && [[ $pid != $$ ]] && echo "$pid"
    done
    return 0
}

cleanup() {
    local status=$? pids
    trap - EXIT INT TERM
    stop_pid "$LOAD_PID"
    stop_pid "$GRAVEN_PID"
    stop_pid "$HONCHO_PID" "$HONCHO_PID"
    pids=$(leftovers)
    if [[ -n "$pids" ]]; then
        log "processes left running in the work directory, killing them: $(echo $pids)"
        kill -KILL $pids 2>/dev/null || true
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

git_commit() {  # git_commit MESSAGE: commit everything tracked or new in the cwd's repo
    git add -A
    git -c user.name=bench -c user.email=bench@example.invalid commit -qm "$1"
}

# make_app DIR: examples/hello as a fresh one-commit git repository (no
# build outputs: __pycache__ and static/ are what build.py makes).
make_app() {
    local dir=$1
    mkdir -p "$dir"
    (cd "$REPO/examples/hello" && tar -cf - --exclude=__pycache__ --exclude=static .) | tar -xf - -C "$dir"
    (cd "$dir" && git init -q && git_commit "hello")
}

# edit_app: the code change the deploy ships (one template line).
edit_app() {
    sed -i 's|<dt>Built</dt>|<dt>Built on</dt>|' templates/index.html.in
    git_commit "Say when it was built"
}

# The load, and switches at fixed offsets into it. start_load starts the
# load in the background and waits until it has begun; at T NAME MARKER CMD...
# waits until T seconds into the load, runs CMD in this shell, and records
# when it started and returned, and the body text (MARKER) by which the new
# release's responses are recognised, in actions.tsv.
start_load() {  # start_load DIR PORT
    local dir=$1 port=$2 i
    rm -f "$dir/t0"
    python3 "$LOAD" run --port "$port" --duration "$DURATION" --connections "$CONNECTIONS" \
        --out "$dir/results.json" --t0-file "$dir/t0" &
    LOAD_PID=$!
    for ((i = 0; i < 100; i++)); do [[ -s "$dir/t0" ]] && break; sleep 0.05; done
    [[ -s "$dir/t0" ]] || die "the load did not start"
    T0=$(<"$dir/t0")
    ACTIONS=$dir/actions.tsv
    : > "$ACTIONS"
}

at() {  # at T NAME MARKER CMD...
    local t=$1 name=$2 marker=$3 delay start end
    shift 3
    delay=$(awk -v t0="$T0" -v t="$t" -v now="$EPOCHREALTIME" \
        'BEGIN { d = t0 + t - now; if (d < 0) d = 0; printf "%.3f", d }')
    sleep "$delay"
    log "t≈${t} s: $name"
    start=$EPOCHREALTIME
    "$@"
    end=$EPOCHREALTIME
    printf '%s\t%s\t%s\t%s\n' "$name" "$start" "$end" "$marker" >> "$ACTIONS"
}

finish_load() {
    wait "$LOAD_PID" || die "the load generator failed"
    LOAD_PID=
}

rm -rf "$WORK"
mkdir -p "$WORK"

# ================================================================ graven
# One repo, one home (ledger + store); v1 is released before the runner
# starts. `graven run` proxies the public port to the web process; each
# release made by another process is picked up, started, health-checked
# (graven.toml [run] health = "/healthz") and switched to. Only the web
# process runs, as with `honcho start web` below.
G=$WORK/graven
make_app "$G/app"
gv() { (cd "$G/app" && "$GRAVEN" --home "$G/home" "$@"); }   # in the app's repo

log "graven: build and release v1"
gv build >"$G/build-v1.log" 2>&1 || die "graven build failed: see $G/build-v1.log"
gv release --env production >/dev/null
G_PORT=$(free_port)
log "graven: run --env production --port $G_PORT"
# The runner needs only the ledger and the store, not the repo (and is not
# in a subshell, so that $! is graven's own pid).
"$GRAVEN" --home "$G/home" --app hello run --env production --port "$G_PORT" --formation web=1 \
    >"$G/run.log" 2>&1 &
GRAVEN_PID=$!
python3 "$LOAD" wait --port "$G_PORT" --marker "Hello from hello v1" --timeout 60 >/dev/null \
    || die "graven run did not serve v1: see $G/run.log"

graven_config()   { gv config set GREETING=Hi --env production >/dev/null; }
graven_deploy()   { (cd "$G/app" && edit_app) && gv build >"$G/build-v3.log" 2>&1 && gv release --env production >/dev/null; }
graven_rollback() { gv rollback --env production >/dev/null; }

log "graven: ${DURATION} s of load, ${CONNECTIONS} connections"
start_load "$G" "$G_PORT"
at "$T_CONFIG"   config   "Hi from hello v2" graven_config
at "$T_DEPLOY"   deploy   "Hi from hello v3" graven_deploy
at "$T_ROLLBACK" rollback "Hi from hello v4" graven_rollback
finish_load
gv status --env production >"$G/status.txt" 2>&1 || true
stop_pid "$GRAVEN_PID"; GRAVEN_PID=

# ================================================================ honcho
# The same app in its own checkout, built in place by its build.py, run by
# `honcho start web` on the public port. Config comes from an env file
# (honcho -e). GRAVEN_RELEASE there is only a label the app prints, so its
# responses name the version (v1..v4) exactly as graven's do and both columns
# are measured the same way. A switch is what a team does today: stop honcho
# (SIGTERM, which stops the app gracefully), change the config or check out
# the code and run the build and the release phase (Procfile `release:`),
# start honcho again.
H=$WORK/honcho
make_app "$H/app"
H_PORT=$(free_port)

honcho_build() {   # build.py and the release phase, as graven would run them
    (cd "$H/app" &&
        SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) GRAVEN_COMMIT=$(git rev-parse HEAD) \
            python3 build.py >>"$H/build.log" 2>&1 &&
        python3 release.py >>"$H/build.log" 2>&1) || die "honcho side: build failed: see $H/build.log"
}
honcho_start() {
    # In the checkout (honcho runs its processes in its own working
    # directory); exec, so that $! is honcho's pid, in a session of its own.
    (cd "$H/app" && PORT=$H_PORT exec setsid "$HONCHO" -e "$H/env" start web) >>"$H/honcho.log" 2>&1 &
    HONCHO_PID=$!
}
honcho_stop() { stop_pid "$HONCHO_PID" "$HONCHO_PID"; HONCHO_PID=; }

honcho_build
printf 'GRAVEN_RELEASE=v1\n' >"$H/env"
log "honcho: measuring the app's own start time (python3 app.py -> /healthz answers)"
APP_START_MS=$(python3 "$LOAD" appstart --dir "$H/app" --runs 5)
log "honcho: start web on port $H_PORT"
honcho_start
python3 "$LOAD" wait --port "$H_PORT" --marker "Hello from hello v1" --timeout 60 >/dev/null \
    || die "honcho did not serve v1: see $H/honcho.log"
V2_COMMIT=$(git -C "$H/app" rev-parse HEAD)

honcho_config() {
    honcho_stop
    printf 'GREETING=Hi\nGRAVEN_RELEASE=v2\n' >"$H/env"
    honcho_start
}
honcho_deploy() {
    honcho_stop
    (cd "$H/app" && edit_app)
    honcho_build
    printf 'GREETING=Hi\nGRAVEN_RELEASE=v3\n' >"$H/env"
    honcho_start
}
honcho_rollback() {   # back to v2: its commit and its config
    honcho_stop
    git -C "$H/app" checkout -q "$V2_COMMIT"
    honcho_build
    printf 'GREETING=Hi\nGRAVEN_RELEASE=v4\n' >"$H/env"
    honcho_start
}

log "honcho: ${DURATION} s of load, ${CONNECTIONS} connections"
start_load "$H" "$H_PORT"
at "$T_CONFIG"   config   "Hi from hello v2" honcho_config
at "$T_DEPLOY"   deploy   "Hi from hello v3" honcho_deploy
at "$T_ROLLBACK" rollback "Hi from hello v4" honcho_rollback
finish_load
honcho_stop

# ================================================================ report
{
    echo "switch benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, ${DURATION} s of load per runner,"
    echo "  ${CONNECTIONS} connections, a new TCP connection per request (GET /?format=text on 127.0.0.1);"
    echo "  config change at t≈${T_CONFIG} s, deploy at t≈${T_DEPLOY} s, rollback at t≈${T_ROLLBACK} s"
    python3 "$LOAD" report --app-start "$APP_START_MS" "graven run=$G" "honcho restart=$H"
} | tee "$REPORT"

# ================================================================ keep-alive
# The same three switches with BENCH_KEEPALIVE_CLIENTS (default 1,000)
# keep-alive clients, each sending GET / every 50 ms on one connection, to
# a web process fast enough that the switch is what is measured: nginx
# answering "release $GRAVEN_RELEASE". graven routes every request, so each
# client's next request after a switch goes to the new release; honcho
# restarts nginx, which closes every connection.
KA_CLIENTS=${BENCH_KEEPALIVE_CLIENTS:-1000}
[[ "$KA_CLIENTS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_KEEPALIVE_CLIENTS must be a positive integer (got '$KA_CLIENTS')"
. "$REPO/scripts/lib/apt.sh"
command -v nginx >/dev/null || apt_install nginx-light || die "needs nginx (apt-get install nginx-light)"
log "building the load generator (bench/loadgen)"
cargo build --release --quiet --manifest-path "$BENCH/loadgen/Cargo.toml" --target-dir "$BENCH/.work/loadgen-target" >&2
LOADGEN=$BENCH/.work/loadgen-target/release/graven-loadgen
# A thousand client sockets, and as many through the proxy.
ulimit -n "$(ulimit -Hn)"

make_nginx_app() {
    mkdir -p "$1"
    cp "$BENCH/nginx-release.sh" "$1/serve.sh"
    echo 'web: sh serve.sh' >"$1/Procfile"
    (cd "$1" && git init -q && git_commit "nginx answering with its release")
}

ka_run() {   # ka_run DIR PORT SWITCH_CONFIG SWITCH_DEPLOY SWITCH_ROLLBACK
    local dir=$1 port=$2 t0 step
    "$LOADGEN" keepalive --port "$port" --clients "$KA_CLIENTS" --interval-ms 50 --duration "$DURATION" \
        --out "$dir/keepalive.tsv" 2>"$dir/loadgen.log" &
    LOAD_PID=$!
    t0=$EPOCHREALTIME
    for step in "$T_CONFIG:$3" "$T_DEPLOY:$4" "$T_ROLLBACK:$5"; do
        sleep "$(awk -v t0="$t0" -v t="${step%%:*}" -v now="$EPOCHREALTIME" \
            'BEGIN { d = t0 + t - now; printf "%.3f", d < 0 ? 0 : d }')"
        log "t≈${step%%:*} s: ${step#*:}"
        "${step#*:}"
    done
    wait "$LOAD_PID" || die "the load generator failed: see $dir/loadgen.log"
    LOAD_PID=
}

KG=$WORK/keepalive-graven
make_nginx_app "$KG/app"
kgv() { (cd "$KG/app" && "$GRAVEN" --home "$KG/home" "$@"); }
kgv build >"$KG/build.log" 2>&1 || die "graven build failed: see $KG/build.log"
kgv release --env production >/dev/null
KG_PORT=$(free_port)
(cd "$KG/app" && exec "$GRAVEN" --home "$KG/home" run --env production --port "$KG_PORT") >"$KG/run.log" 2>&1 &
GRAVEN_PID=$!
until curl -fs "http://127.0.0.1:$KG_PORT/" | grep -q "release v1"; do
    kill -0 "$GRAVEN_PID" 2>/dev/null || die "graven run exited: see $KG/run.log"
    sleep 0.2
done
ka_graven_config() { kgv config set A=1 --env production --wait >>"$KG/switches.log" 2>&1; }
ka_graven_deploy() {
    (cd "$KG/app" && echo change >>NOTES && git_commit "A change") &&
        kgv build >>"$KG/build.log" 2>&1 && kgv release --env production --wait >>"$KG/switches.log" 2>&1
}
ka_graven_rollback() { kgv rollback --env production --wait >>"$KG/switches.log" 2>&1; }
log "graven: ${DURATION} s of $KA_CLIENTS keep-alive clients"
ka_run "$KG" "$KG_PORT" ka_graven_config ka_graven_deploy ka_graven_rollback
stop_pid "$GRAVEN_PID"; GRAVEN_PID=

KH=$WORK/keepalive-honcho
make_nginx_app "$KH/app"
KH_PORT=$(free_port)
ka_honcho_start() {
    (cd "$KH/app" && PORT=$KH_PORT TMPDIR=$KH exec setsid "$HONCHO" -e "$KH/env" start web) >>"$KH/honcho.log" 2>&1 &
    HONCHO_PID=$!
    until curl -fs "http://127.0.0.1:$KH_PORT/" >/dev/null; do sleep 0.05; done
}
ka_honcho_switch() { honcho_stop; printf 'GRAVEN_RELEASE=%s\n' "$1" >"$KH/env"; ka_honcho_start; }
ka_honcho_config() { ka_honcho_switch v2; }
ka_honcho_deploy() { ka_honcho_switch v3; }
ka_honcho_rollback() { ka_honcho_switch v4; }
printf 'GRAVEN_RELEASE=v1\n' >"$KH/env"
ka_honcho_start
log "honcho: ${DURATION} s of $KA_CLIENTS keep-alive clients"
ka_run "$KH" "$KH_PORT" ka_honcho_config ka_honcho_deploy ka_honcho_rollback
honcho_stop

{
    echo
    echo "keep-alive: $KA_CLIENTS clients, each GET / every 50 ms on one connection, nginx as the web process"
    python3 "$BENCH/keepalive_report.py" "graven run=$KG/keepalive.tsv" "honcho restart=$KH/keepalive.tsv" \
        --switches "release v2,release v3,release v4"
} | tee -a "$REPORT"
log "report written to bench/.work/switch-report.txt; logs in bench/.work/switch/ ($((SECONDS - BENCH_START)) s in all)"
