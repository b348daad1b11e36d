#!/usr/bin/env bash
# bench/release.sh: how long `graven release` and `graven releases --json
# --limit 50` take with 100 and with 10,000 releases in the ledger. Both
# should be dominated by process start, not by the ledger's size.
#
# Usage: bench/release.sh [WORK_DIR]
# Environment: BENCH_RUNS=N (timed runs per figure, default 30),
#              BENCH_GRAVEN_BIN=PATH (use this binary instead of building one),
#              BENCH_LEDGER=postgres (the PostgreSQL ledger, on a throwaway
#              server this script starts and stops; default: SQLite).
# Last, 10 releasers from two homes change the config at once: all must
# succeed, and the numbers must have no gap.
set -euo pipefail

RUNS=${BENCH_RUNS:-30}
die() { echo "bench/release.sh: error: $*" >&2; exit 1; }
log() { echo "==> $*" >&2; }
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer (got '$RUNS')"

REPO=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
WORK=${1:-$REPO/bench/.work/release}
if [[ -n "${BENCH_GRAVEN_BIN:-}" ]]; then
    GRAVEN=$BENCH_GRAVEN_BIN
else
    log "building graven (cargo build --release)"
    (cd "$REPO" && cargo build --release >&2)
    GRAVEN=$REPO/target/release/graven
fi

LEDGER=${BENCH_LEDGER:-sqlite}
case "$LEDGER" in
    sqlite) ;;
    postgres)
        # shellcheck source=../scripts/lib/postgres.sh
        . "$REPO/scripts/lib/postgres.sh"
        trap stop_postgres EXIT
        start_postgres
        ;;
    *) die "BENCH_LEDGER must be sqlite or postgres (got '$LEDGER')" ;;
esac

# ledger_for NAME: GRAVEN_LEDGER for the ledger called NAME ('' for SQLite:
# the home's own).
ledger_for() {
    [ "$LEDGER" = postgres ] || { echo ""; return; }
    local db=bench_$1
    PGOPTIONS=--client-min-messages=warning psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
    echo "${PG_URL%/*}/$db"
}

# One app repo with one build; one ledger per size.
rm -rf "$WORK" && mkdir -p "$WORK/app"
cd "$WORK/app"
git init -q
printf 'web: python3 -m http.server $PORT\n' > Procfile
printf '[app]\nname = "bench"\n' > graven.toml
git add -A && git -c user.name=bench -c user.email=bench@example.invalid commit -qm app
export GRAVEN_AUTHOR=bench@example.invalid

# fill HOME N: a ledger with N releases (one deploy, then config changes:
# each `config set` is one config version and one release).
fill() {
    local home=$1 n=$2
    export GRAVEN_LEDGER
    GRAVEN_LEDGER=$(ledger_for "$n")
    "$GRAVEN" --home "$home" build >/dev/null 2>&1
    "$GRAVEN" --home "$home" release --env production >/dev/null 2>&1
    log "filling $home with $n releases"
    python3 - "$GRAVEN" "$home" "$n" <<'PY'
import subprocess, sys
graven, home, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(2, n + 1):
    subprocess.run([graven, "--home", home, "config", "set", f"N={i}", "--env", "production"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
PY
}

# median_ms RUNS CMD...: median wall time of CMD in milliseconds.
median_ms() {
    python3 - "$@" <<'PY'
import statistics, subprocess, sys, time
runs, cmd = int(sys.argv[1]), sys.argv[2:]
times = []
for _ in range(runs):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times.append((time.perf_counter() - t) * 1000)
print(f"{statistics.median(times):.1f}")
PY
}

declare -A RESULT
for size in 100 10000; do
    home=$WORK/home-$size
    fill "$home" "$size"
    log "timing with $size releases ($RUNS runs each)"
    RESULT[release-$size]=$(median_ms "$RUNS" "$GRAVEN" --home "$home" release --env production -m bench)
    RESULT[releases-$size]=$(median_ms "$RUNS" "$GRAVEN" --home "$home" releases --env production --json --limit 50)
    RESULT[version-$size]=$(median_ms "$RUNS" "$GRAVEN" --version)
    count=$("$GRAVEN" --home "$home" releases --env production --json --limit 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["number"])')
    RESULT[count-$size]=$count
done

# 10 releasers from two homes at once, on one ledger and one store.
log "10 concurrent releasers from two homes"
if [ "$LEDGER" = postgres ]; then
    GRAVEN_LEDGER=$(ledger_for concurrent)
else
    GRAVEN_LEDGER=sqlite:$WORK/concurrent.sqlite
fi
export GRAVEN_LEDGER GRAVEN_STORE=file:$WORK/concurrent-store
"$GRAVEN" --home "$WORK/home-a" build >/dev/null 2>&1
"$GRAVEN" --home "$WORK/home-a" release --env production >/dev/null 2>&1
start=$(date +%s%N)
pids=()
for i in 0 1 2 3 4 5 6 7 8 9; do
    home=$WORK/home-a
    [ $((i % 2)) -eq 1 ] && home=$WORK/home-b
    "$GRAVEN" --home "$home" config set "K$i=$i" --env production >/dev/null 2>"$WORK/concurrent-$i.err" &
    pids+=("$!")
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done
CONCURRENT_MS=$(( ($(date +%s%N) - start) / 1000000 ))
NUMBERS=$("$GRAVEN" --home "$WORK/home-b" releases --env production --json | python3 -c 'import json,sys; print(" ".join(str(r["number"]) for r in reversed(json.load(sys.stdin))))')
[ "$failed" -eq 0 ] || die "$failed of 10 concurrent releasers failed: $(cat "$WORK"/concurrent-*.err)"
[ "$NUMBERS" = "1 2 3 4 5 6 7 8 9 10 11" ] || die "the numbers have gaps or duplicates: $NUMBERS"

echo
echo "graven release benchmark ($LEDGER ledger): $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, medians of $RUNS runs (ms)"
printf '  %-44s %12s %12s\n' "" "100 releases" "10,000 releases"
printf '  %-44s %12s %12s\n' "releases in the ledger at the end" "${RESULT[count-100]}" "${RESULT[count-10000]}"
printf '  %-44s %12s %12s\n' "graven release (whole process)" "${RESULT[release-100]}" "${RESULT[release-10000]}"
printf '  %-44s %12s %12s\n' "graven releases --json --limit 50" "${RESULT[releases-100]}" "${RESULT[releases-10000]}"
printf '  %-44s %12s %12s\n' "graven --version (process start floor)" "${RESULT[version-100]}" "${RESULT[version-10000]}"
echo "  target: under 20 ms each, and no growth from 100 to 10,000 releases"
echo "  10 releasers from two homes at once: all succeeded in $CONCURRENT_MS ms, numbered $NUMBERS"
