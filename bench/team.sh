#!/usr/bin/env bash
# bench/team.sh: graven's S3 store against the seed's way of shipping a
# build (`tar -czf`, then one upload of the archive), on the same S3 server
# (moto's, on loopback, started and stopped here) and the same tree (the
# build benchmark's corpus, `../shared/bench/`), in one run:
#
#   1. first push: graven's ingest + upload of the corpus into an empty
#      bucket, against tar -czf + one upload (boto3's upload_file, as
#      `aws s3 cp` does it: multipart, in parallel); time and requests;
#   2. push after 5 files change: bytes graven sends, against the changed
#      bytes and listings (the seed's way sends the whole archive again);
#   3. pull: a server with an empty local store fetching and laying out the
#      tree (`graven exec -- true`: fetch, materialise, check), against one
#      download (boto3's download_file) + tar -xzf;
#   4. how soon a runner's watch wakes after a change made on another
#      connection, through PostgreSQL's LISTEN/NOTIFY (target: 100 ms);
#   5. the release figures on PostgreSQL (bench/release.sh with
#      BENCH_LEDGER=postgres): 100 against 10,000 releases, and 10
#      concurrent releasers from two homes.
#
# Usage: bench/team.sh [WORK_DIR]
# Environment: BENCH_RUNS=N (runs per figure, median reported; default 3),
#              BENCH_GRAVEN_BIN=PATH (this binary instead of building one),
#              BENCH_SKIP_RELEASE=1 (skip step 5),
#              BENCH_SETTLE=SECONDS (wait before each pull, default 35: see
#              bench/build.sh's SETTLE; the build before it has just
#              deleted 14,000 files, and ext4 without a journal makes the
#              next 14,000 file creations slow for about 30 s).
set -euo pipefail

RUNS=${BENCH_RUNS:-3}
SETTLE=${BENCH_SETTLE:-35}
die() { echo "bench/team.sh: error: $*" >&2; exit 1; }
log() { echo "==> $*" >&2; }
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer (got '$RUNS')"

REPO=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
WORK=${1:-$REPO/bench/.work/team}
CORPUS=$REPO/bench/.work/corpus
REQS=$REPO/bench/corpus-requirements.txt
case "$WORK" in *[\"\\\$\`\ ]*) die "work dir path must not contain quotes, backslashes, \$, \` or spaces: $WORK" ;; esac

if [[ -n "${BENCH_GRAVEN_BIN:-}" ]]; then
    GRAVEN=$BENCH_GRAVEN_BIN
else
    log "building graven (cargo build --release)"
    (cd "$REPO" && cargo build --release >&2)
    GRAVEN=$REPO/target/release/graven
fi

# The corpus, as bench/build.sh makes it.
if [[ ! -x "$CORPUS/bin/python" || "$(cat "$REPO/bench/.work/corpus.ok" 2>/dev/null)" != "$(sha256sum "$REQS" | cut -d' ' -f1)" ]]; then
    log "creating the corpus in $CORPUS (downloads ~350 MB of packages)"
    rm -rf "$CORPUS"
    python3 -m venv "$CORPUS" >&2
    "$CORPUS/bin/pip" install -q -r "$REQS" >&2
    sha256sum "$REQS" | cut -d' ' -f1 > "$REPO/bench/.work/corpus.ok"
fi

# shellcheck source=../scripts/lib/s3.sh
. "$REPO/scripts/lib/s3.sh"
trap stop_s3 EXIT
start_s3
PY=$(moto_venv)/bin/python   # has boto3: moto depends on it
export AWS_ENDPOINT_URL=$S3_ENDPOINT AWS_ALLOW_HTTP=true AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret
export GRAVEN_AUTHOR=bench@example.invalid

rm_tree() { if [[ -e "$1" ]]; then chmod -R u+w "$1" 2>/dev/null || true; rm -rf "$1"; fi; }
rm_tree "$WORK"
mkdir -p "$WORK"

# s3 OP ARGS...: boto3, the library under `aws s3 cp`.
s3() {
    "$PY" - "$@" <<'PY'
import sys, boto3
from boto3.s3.transfer import TransferConfig
op, *args = sys.argv[1:]
s3 = boto3.client("s3")
config = TransferConfig(max_concurrency=8)
if op == "mb":
    s3.create_bucket(Bucket=args[0])
elif op == "cp-up":
    s3.upload_file(args[0], args[1], args[2], Config=config)
elif op == "cp-down":
    s3.download_file(args[0], args[1], args[2], Config=config)
PY
}

declare -A SAMPLES=()
add_sample() { SAMPLES[$1]="${SAMPLES[$1]:-} $2"; }
median() {
    printf '%s\n' ${SAMPLES[$1]} | sort -g | awk '{ a[NR] = $1 }
        END { if (NR % 2) printf "%.3f", a[(NR + 1) / 2]; else printf "%.3f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
now_ns() { date +%s%N; }
secs() { awk -v n="$1" 'BEGIN { printf "%.3f", n / 1e9 }'; }
json() { "$PY" -c "import json, sys; d = json.load(sys.stdin); print($1)"; }

# The app: its build copies the corpus (private files: moved into the
# store), leaving out the interpreter links a virtualenv makes.
APP=$WORK/app
mkdir -p "$APP"
git -C "$APP" init -q
echo 'web: true' > "$APP/Procfile"
write_toml() {
    cat > "$APP/graven.toml" <<EOF
[app]
name = "bench"
[build]
command = "mkdir -p out && cp -a \\"\$CORPUS\\" out/venv$1"
output = "out"
exclude = ["venv/bin/python*"]
env = { CORPUS = "$CORPUS" }
EOF
    git -C "$APP" add -A
    git -C "$APP" -c user.name=bench -c user.email=bench@example.invalid commit -qm "$2"
}
write_toml "" "The corpus"
# Five files of the corpus that the second commit changes.
mapfile -t FIVE < <(cd "$CORPUS" && find lib -name '*.py' -size +2k | sort | head -n 5)
change=""
for f in "${FIVE[@]}"; do change+=" && echo changed >> out/venv/$f"; done
changed_bytes=0
for f in "${FIVE[@]}"; do changed_bytes=$((changed_bytes + $(stat -c %s "$CORPUS/$f") + 8)); done

files=$(find "$CORPUS" -type f ! -path "$CORPUS/bin/python*" | wc -l)
tar -cf - -C "$CORPUS" . | cat >/dev/null   # a warm page cache for everyone

for ((i = 1; i <= RUNS; i++)); do
    log "run $i of $RUNS"
    bucket=bench-$i
    s3 mb "$bucket"
    home=$WORK/ci-$i
    ledger=sqlite:$WORK/ledger-$i.sqlite
    ci() { GRAVEN_HOME=$home GRAVEN_LEDGER=$ledger GRAVEN_STORE=s3://$bucket/bench "$GRAVEN" "$@"; }

    # 1. First push. graven: ingest (to a durable local store) + upload.
    out=$(cd "$APP" && ci build --json)
    add_sample push_graven "$(echo "$out" | json 'd["ingest_ms"] / 1000 + d["upload"]["duration_ms"] / 1000')"
    add_sample push_requests "$(echo "$out" | json 'd["upload"]["requests"]')"
    add_sample push_bytes "$(echo "$out" | json 'd["upload"]["bytes"]')"
    # The seed's way: tar -czf, then one upload.
    t0=$(now_ns)
    tar -czf "$WORK/seed-$i.tar.gz" -C "$CORPUS" --exclude './bin/python*' .
    s3 cp-up "$WORK/seed-$i.tar.gz" "$bucket" seed.tar.gz
    t1=$(now_ns)
    add_sample push_seed "$(secs $((t1 - t0)))"
    archive_bytes=$(stat -c %s "$WORK/seed-$i.tar.gz")

    # 3. Pull: a server with an empty local store lays the tree out.
    (cd "$APP" && ci release --env bench >/dev/null)
    server=$WORK/server-$i
    sleep "$SETTLE"
    sync
    t0=$(now_ns)
    GRAVEN_HOME=$server GRAVEN_LEDGER=$ledger GRAVEN_STORE=s3://$bucket/bench "$GRAVEN" --app bench exec --env bench -- true
    t1=$(now_ns)
    add_sample pull_graven "$(secs $((t1 - t0)))"
    mkdir -p "$WORK/seed-out-$i"
    sleep "$SETTLE"
    sync
    t0=$(now_ns)
    s3 cp-down "$bucket" seed.tar.gz "$WORK/seed-down-$i.tar.gz"
    tar -xzf "$WORK/seed-down-$i.tar.gz" -C "$WORK/seed-out-$i"
    t1=$(now_ns)
    add_sample pull_seed "$(secs $((t1 - t0)))"
    rm -f "$WORK/seed-$i.tar.gz" "$WORK/seed-down-$i.tar.gz"
done

# 2. A push after 5 files change (once: the bytes do not vary).
write_toml "$change" "Five files change"
out=$(cd "$APP" && GRAVEN_HOME=$WORK/ci-1 GRAVEN_LEDGER=sqlite:$WORK/ledger-1.sqlite GRAVEN_STORE=s3://bench-1/bench "$GRAVEN" build --json)
inc_bytes=$(echo "$out" | json 'd["upload"]["bytes"]')
inc_objects=$(echo "$out" | json 'd["upload"]["objects"]')
inc_requests=$(echo "$out" | json 'd["upload"]["requests"]')
inc_listing_bytes=$((inc_bytes - changed_bytes))

push_g=$(median push_graven); push_s=$(median push_seed)
pull_g=$(median pull_graven); pull_s=$(median pull_seed)
requests=$(median push_requests)
cat <<EOF

graven's S3 store against tar -czf + one upload, same moto server, same tree
tree: $files files; runs: $RUNS (medians)

| operation | graven | the seed's way | ratio (seed / graven) |
| --- | --- | --- | --- |
| first push: time | ${push_g} s | ${push_s} s | $(ratio "$push_s" "$push_g")x |
| first push: requests | ${requests%.*} (target <= $((files / 100)) + a small constant) | 2+ (multipart parts) | |
| first push: bytes sent | $(median push_bytes | cut -d. -f1) | $archive_bytes (gzip -6) | |
| push after 5 files change: bytes | $inc_bytes ($inc_objects objects, $inc_requests requests) | $archive_bytes | $(ratio "$archive_bytes" "$inc_bytes")x |
| pull and lay out, empty cache | ${pull_g} s | ${pull_s} s | $(ratio "$pull_s" "$pull_g")x |

the 5 changed files hold $changed_bytes bytes; the rest of what was sent
($inc_listing_bytes bytes) is the listings above them and the record.
EOF

log "LISTEN/NOTIFY latency (crates/graven/examples/notify_latency.rs)"
(cd "$REPO" && cargo build --release --example notify_latency >&2)
# shellcheck source=../scripts/lib/postgres.sh
. "$REPO/scripts/lib/postgres.sh"
trap 'stop_s3; stop_postgres' EXIT
start_postgres
"${CARGO_TARGET_DIR:-$REPO/target}/release/examples/notify_latency" "$PG_URL" 100
stop_postgres

if [[ "${BENCH_SKIP_RELEASE:-0}" != 1 ]]; then
    log "release figures on PostgreSQL (bench/release.sh)"
    BENCH_LEDGER=postgres BENCH_GRAVEN_BIN=$GRAVEN BENCH_RUNS=${BENCH_RELEASE_RUNS:-15} "$REPO/bench/release.sh" "$WORK/release"
fi
