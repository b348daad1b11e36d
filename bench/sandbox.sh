#!/usr/bin/env bash
# bench/sandbox.sh: what the sandbox costs.
#
#   1. `graven build --force` of examples/hello in the sandbox (bubblewrap,
#      the checkout at /app) and with --no-sandbox, medians;
#   2. a process start with its tree read-only at /app and without:
#      `graven exec --env bench -- true` with and without --no-sandbox
#      (the whole command: ledger, tree check, then the process).
#
# Targets (the hermetic-stages issue): under 20 ms added per build, under
# 5 ms per process start.
#
# Usage: bench/sandbox.sh [WORK_DIR]
# Environment: BENCH_RUNS=N (default 21), BENCH_GRAVEN_BIN=PATH.
set -euo pipefail

RUNS=${BENCH_RUNS:-21}
die() { echo "bench/sandbox.sh: error: $*" >&2; exit 1; }
log() { echo "==> $*" >&2; }
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer (got '$RUNS')"
command -v bwrap >/dev/null || die "bwrap not found: apt-get install bubblewrap"

REPO=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
WORK=${1:-$REPO/bench/.work/sandbox}
# shellcheck source=common.sh
. "$REPO/bench/common.sh"
graven_binary

rm -rf "$WORK" && mkdir -p "$WORK/app"
cp -r "$REPO/examples/hello/." "$WORK/app/"
cd "$WORK/app"
git init -q && git add -A && git -c user.name=bench -c user.email=bench@example.invalid commit -qm app
export GRAVEN_AUTHOR=bench@example.invalid
"$GRAVEN" build >/dev/null 2>&1
"$GRAVEN" release --env bench >/dev/null 2>&1
"$GRAVEN" exec --env bench -- true   # lays the tree out

# median_ms CMD...: the median wall time of RUNS runs of CMD, in ms.
median_ms() {
    local i t0 t1 samples=()
    for ((i = 0; i < RUNS; i++)); do
        t0=$(date +%s%N)
        "$@" >/dev/null 2>&1
        t1=$(date +%s%N)
        samples+=("$(((t1 - t0) / 1000))")
    done
    printf '%s\n' "${samples[@]}" | sort -n | awk '{ a[NR] = $1 } END { printf "%.1f", a[int((NR + 1) / 2)] / 1000 }'
}

log "timing builds ($RUNS runs each, interleaved)"
build_in=$(median_ms "$GRAVEN" build --force)
build_out=$(median_ms "$GRAVEN" build --force --no-sandbox)
log "timing process starts ($RUNS runs each)"
exec_in=$(median_ms "$GRAVEN" exec --env bench -- true)
exec_out=$(median_ms "$GRAVEN" exec --no-sandbox --env bench -- true)

diff() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f", a - b }'; }
cat <<EOF

graven's sandbox: examples/hello, medians of $RUNS (ms)

| | in the sandbox | without | added |
| --- | --- | --- | --- |
| graven build --force | $build_in | $build_out | $(diff "$build_in" "$build_out") (target < 20) |
| graven exec -- true | $exec_in | $exec_out | $(diff "$exec_in" "$exec_out") (target < 5) |
EOF
