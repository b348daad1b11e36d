#!/usr/bin/env bash
# bench/release.sh: how long `graven release` and `graven releases --json
# --limit 50` take with 100 and with 10,000 releases in the ledger. Both
# should be dominated by process start, not by the ledger's size.
#
# Usage: bench/release.sh [WORK_DIR]
# Environment: BENCH_RUNS=N (timed runs per figure, default 30),
#              BENCH_GRAVEN_BIN=PATH (use this binary instead of building one).
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

echo
echo "graven release benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, medians of $RUNS runs (ms)"
printf '  %-44s %12s %12s\n' "" "100 releases" "10,000 releases"
printf '  %-44s %12s %12s\n' "releases in the ledger at the end" "${RESULT[count-100]}" "${RESULT[count-10000]}"
printf '  %-44s %12s %12s\n' "graven release (whole process)" "${RESULT[release-100]}" "${RESULT[release-10000]}"
printf '  %-44s %12s %12s\n' "graven releases --json --limit 50" "${RESULT[releases-100]}" "${RESULT[releases-10000]}"
printf '  %-44s %12s %12s\n' "graven --version (process start floor)" "${RESULT[version-100]}" "${RESULT[version-10000]}"
echo "  target: under 20 ms each, and no growth from 100 to 10,000 releases"
