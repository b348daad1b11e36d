#!/usr/bin/env bash
# bench/cache.sh: a pip-installing build with its build cache warm, against
# the same build with it cold.
#
# The app is a small Flask app with the recipe `graven init` writes for a
# requirements.txt: a virtualenv at /app/.venv, `pip install -r`, every
# module compiled, `[build] cache = ["~/.cache/pip"]`. Its packages come
# from an index on loopback (bench/pyindex.py) that answers with PyPI's
# cache headers, so that pip's cache behaves as against pypi.org whatever
# network this machine has (pip caches what an https index or a trusted
# host sends; the index is named trusted), and that sends files at a set
# rate: the cost of downloading them. Each run is a `graven build --force` (the command
# runs again, in the sandbox):
#
#   cold: after `graven gc --caches`, so pip downloads every package;
#   warm: with the cache the previous build left.
#
# Runs alternate, cold then warm, for each rate of BENCH_INDEX_RATES. The
# index counts the files it sends during each build.
#
# Target (the hermetic-stages issue): the warm build downloads nothing and
# is at least 3x faster.
#
# Needs PyPI once, to fetch the wheels (kept in bench/.work/cache-wheels).
# Usage: bench/cache.sh [WORK_DIR]
# Environment: BENCH_RUNS=N (default 5), BENCH_GRAVEN_BIN=PATH,
#              BENCH_INDEX_RATES="0 1000000 250000" (bytes/s; 0 is
#              loopback's own speed; default: those three).
set -euo pipefail

RUNS=${BENCH_RUNS:-5}
RATES=${BENCH_INDEX_RATES:-0 1000000 250000}
die() { echo "bench/cache.sh: error: $*" >&2; exit 1; }
log() { echo "==> $*" >&2; }
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer (got '$RUNS')"
command -v bwrap >/dev/null || die "bwrap not found: apt-get install bubblewrap"
command -v curl >/dev/null || die "curl not found: apt-get install curl"
python3 -c 'import ensurepip, venv' 2>/dev/null || die "python3 cannot make a virtualenv: apt-get install python3-venv"

REPO=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
WORK=${1:-$REPO/bench/.work/cache}
WHEELS=$REPO/bench/.work/cache-wheels
# shellcheck source=common.sh
. "$REPO/bench/common.sh"
graven_binary

rm -rf "$WORK" && mkdir -p "$WORK/app"
cd "$WORK/app"
git init -q
printf '%s\n' flask==3.0.3 requests==2.32.3 sqlalchemy==2.0.36 jinja2==3.1.4 >requirements.txt
printf '%s\n' 'import os' 'from flask import Flask' 'app = Flask(__name__)' '' '@app.get("/")' \
    'def index():' '    return "hello"' '' 'if __name__ == "__main__":' \
    '    app.run(host="0.0.0.0", port=int(os.environ["PORT"]))' >app.py

sum=$(sha256sum requirements.txt | cut -d' ' -f1)
if [[ "$(cat "$WHEELS.ok" 2>/dev/null)" != "$sum" ]]; then
    log "fetching the wheels from PyPI into $WHEELS"
    rm -rf "$WHEELS"
    python3 -m venv "$WORK/dl" >&2
    "$WORK/dl/bin/pip" download --only-binary=:all: -d "$WHEELS" -r requirements.txt >&2
    echo "$sum" >"$WHEELS.ok"
fi
wheel_bytes=$(du -cb "$WHEELS"/*.whl | tail -n 1 | cut -f1)
wheel_count=$(find "$WHEELS" -name '*.whl' | wc -l)

export GRAVEN_AUTHOR=bench@example.invalid
"$GRAVEN" init >/dev/null 2>&1
grep -q 'cache = \["~/.cache/pip"\]' graven.toml || die "graven init wrote no pip cache"

INDEX_PID=""
stop_index() {
    if [[ -n "$INDEX_PID" ]]; then
        kill "$INDEX_PID" 2>/dev/null || true
        wait "$INDEX_PID" 2>/dev/null || true
        INDEX_PID=""
    fi
}
trap stop_index EXIT
# start_index RATE: the index on a free port, and the recipe pointed at it.
start_index() {
    stop_index
    PORT=$(free_port)
    python3 "$REPO/bench/pyindex.py" "$WHEELS" "$PORT" "$1" &
    INDEX_PID=$!
    for _ in $(seq 50); do
        curl -fs "http://127.0.0.1:$PORT/stats" >/dev/null && break
        sleep 0.1
    done
    local url="http://127.0.0.1:$PORT/simple/"
    sed -i "s|^env = .*|env = { PIP_DISABLE_PIP_VERSION_CHECK = \"1\", PIP_INDEX_URL = \"$url\", PIP_TRUSTED_HOST = \"127.0.0.1\" }|" graven.toml
    grep -q "$url" graven.toml || die "could not point the recipe at the index"
    git add -A && git -c user.name=bench -c user.email=bench@example.invalid commit -qm "the index at $PORT"
}
sent() { curl -fs "http://127.0.0.1:$PORT/stats" | cut -d' ' -f1; }

# run_build FILE: one `graven build --force`; appends "ms files-sent" to FILE.
run_build() {
    local t0 t1 before out=$WORK/last-build.txt
    before=$(sent)
    t0=$(date +%s%N)
    "$GRAVEN" build --force >"$out" 2>&1 || { cat "$out" >&2; die "the build failed"; }
    t1=$(date +%s%N)
    echo "$(((t1 - t0) / 1000000)) $(($(sent) - before))" >>"$1"
}
median() { cut -d' ' -f"$2" "$1" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

rows=""
for rate in $RATES; do
    start_index "$rate"
    if [[ "$rate" == 0 ]]; then label="loopback speed"; else label=$(awk -v r="$rate" 'BEGIN { printf "%.2f MB/s", r / 1e6 }'); fi
    : >"$WORK/cold-$rate"
    : >"$WORK/warm-$rate"
    log "index at $label: one build to warm the machine's page cache (not counted)"
    run_build "$WORK/warmup"
    for ((i = 1; i <= RUNS; i++)); do
        log "index at $label: run $i of $RUNS, cold then warm"
        "$GRAVEN" gc --caches >/dev/null
        run_build "$WORK/cold-$rate"
        run_build "$WORK/warm-$rate"
    done
    cold=$(median "$WORK/cold-$rate" 1)
    warm=$(median "$WORK/warm-$rate" 1)
    ratio=$(awk -v c="$cold" -v w="$warm" 'BEGIN { printf "%.2f", c / w }')
    rows+="| $label | $cold | $(median "$WORK/cold-$rate" 2) | $warm | $(median "$WORK/warm-$rate" 2) | ${ratio}x |"$'\n'
done

cat <<EOF

graven build --force of a Flask app: $wheel_count wheels, $wheel_bytes bytes; medians of $RUNS

| index | cold (ms) | files downloaded | warm (ms) | files downloaded | cold / warm |
| --- | --- | --- | --- | --- | --- |
${rows}
Target: the warm build downloads 0 files, and is at least 3x faster.
EOF
