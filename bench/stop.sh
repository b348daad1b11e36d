#!/usr/bin/env bash
# bench/stop.sh: how long `graven run` takes to stop a release with many
# process types, and whether any process is left behind.
#
# An app with BENCH_TYPES process types (default 1,000), one process each,
# in the sandbox. Twice: processes that exit on SIGTERM, then processes
# that ignore it (so each needs its SIGKILL after `[run] stop_timeout`,
# here 5 s). For each it prints the time to start them all (runner start to
# every process up) and the time from SIGTERM to the runner's exit, and
# counts the app's processes still alive after. The target (the run-stage
# issue): every type stopped within stop_timeout + 2 s, none left.
#
# Usage: bench/stop.sh [WORK_DIR]
# Environment: BENCH_TYPES=N (default 1000), BENCH_GRAVEN_BIN=PATH.
set -euo pipefail

TYPES=${BENCH_TYPES:-1000}
STOP_TIMEOUT=5
die() { echo "bench/stop.sh: error: $*" >&2; exit 1; }
log() { echo "==> $*" >&2; }
[[ "$TYPES" =~ ^[1-9][0-9]*$ ]] || die "BENCH_TYPES must be a positive integer (got '$TYPES')"

REPO=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
WORK=${1:-$REPO/bench/.work/stop}
# shellcheck source=common.sh
. "$REPO/bench/common.sh"
graven_binary
export GRAVEN_AUTHOR=bench@example.invalid
# A thousand processes and their pipes.
ulimit -n "$(ulimit -Hn)"

RUNNER=
cleanup() {
    [[ -n "$RUNNER" ]] && kill -KILL "$RUNNER" 2>/dev/null || true
    # Whatever a failed run left: every process whose environment has the mark.
    local environ pid
    for environ in $(grep -l -s -a -z "MARK=graven-stop-bench" /proc/[0-9]*/environ || true); do
        pid=${environ#/proc/} && kill -KILL "${pid%/environ}" 2>/dev/null || true
    done
}
trap cleanup EXIT

# alive MARK: how many live processes have MARK=<mark> in their environment.
alive() { { grep -l -s -a -z -x "MARK=$1" /proc/[0-9]*/environ || true; } | wc -l; }

# now_ms: the wall clock, in milliseconds.
now_ms() { local t=$EPOCHREALTIME; echo $(( ${t%.*} * 1000 + 10#${t#*.} / 1000 )); }

measure() {   # measure LABEL COMMAND: one app, started, then stopped
    local label=$1 command=$2 app=$WORK/$1 port t0 t1 t2 code
    rm -rf "$app" && mkdir -p "$app"
    (
        cd "$app"
        for ((n = 1; n <= TYPES; n++)); do echo "t$n: $command"; done >Procfile
        printf '[run]\nsettle = 0\nstop_timeout = %s\n' "$STOP_TIMEOUT" >graven.toml
        git init -q && git add -A && git -c user.name=bench -c user.email=bench@example.invalid commit -qm app
        "$GRAVEN" build >/dev/null 2>&1 || die "build failed"
        "$GRAVEN" release --env bench >/dev/null 2>&1
        "$GRAVEN" config set "MARK=graven-stop-bench-$label" --env bench >/dev/null 2>&1
    )
    port=$(free_port)
    t0=$(now_ms)
    (cd "$app" && exec "$GRAVEN" run --env bench --port "$port" >"$WORK/$label.log" 2>&1) &
    RUNNER=$!
    until (cd "$app" && "$GRAVEN" status --env bench >/dev/null 2>&1); do
        kill -0 "$RUNNER" 2>/dev/null || die "the runner exited: see $WORK/$label.log"
        sleep 0.2
    done
    local started=$(( $(now_ms) - t0 )) up
    up=$(alive "graven-stop-bench-$label")
    t1=$(now_ms)
    kill -TERM "$RUNNER"
    wait "$RUNNER" && code=0 || code=$?
    t2=$(now_ms)
    RUNNER=
    printf '%-22s %6d types  %6d processes up  start %6.2f s  stop %6.2f s (target < %d s)  exit %d  left %d\n' \
        "$label" "$TYPES" "$up" "$(echo "$started / 1000" | bc -l)" "$(echo "($t2 - $t1) / 1000" | bc -l)" \
        $((STOP_TIMEOUT + 2)) "$code" "$(alive "graven-stop-bench-$label")"
}

log "$TYPES process types, stop_timeout = $STOP_TIMEOUT s, $("$GRAVEN" --version)"
measure exit-on-sigterm 'exec sleep 600'
measure ignore-sigterm "trap '' TERM; exec sleep 600"
