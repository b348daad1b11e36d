#!/usr/bin/env bash
# bench/materialise.sh: laying the reference tree out as a release, cold
# (nothing of it laid out yet), against `ostree checkout -H` and `cp -al`
# of the same tree.
#
#   graven: the corpus built once into an artifact and released; each run
#           removes the release's tree and times `graven exec --no-sandbox
#           --env bench -- true`, which lays the tree out (hard links into
#           the store, read-only, checked) and runs `true` in it;
#   ostree: the corpus committed once to a bare repository; each run times
#           `ostree checkout -H` (hard links into the repository) into a
#           new directory;
#   cp -al: each run hard-links the corpus itself into a new directory.
#
# Target (the hermetic-stages issue): graven at most `ostree checkout -H`'s
# time. Runs alternate between the three; before each, the last run's
# output is removed and the filesystem given BENCH_SETTLE seconds (see
# bench/build.sh's SETTLE: ext4 is slow to reuse inodes freed moments ago).
#
# Usage: bench/materialise.sh [WORK_DIR]
# Environment: BENCH_RUNS=N (default 5), BENCH_SETTLE=SECONDS (default 35),
#              BENCH_GRAVEN_BIN=PATH.
set -euo pipefail

RUNS=${BENCH_RUNS:-5}
SETTLE=${BENCH_SETTLE:-35}
die() { echo "bench/materialise.sh: error: $*" >&2; exit 1; }
log() { echo "==> $*" >&2; }
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer (got '$RUNS')"
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(git -C "$SCRIPT_DIR" rev-parse --show-toplevel)
# shellcheck source=../scripts/lib/apt.sh
. "$REPO/scripts/lib/apt.sh"
command -v ostree >/dev/null || apt_install ostree || die "ostree not found: apt-get install ostree"
python3 -c 'import ensurepip, venv' 2>/dev/null || die "python3 cannot make a virtualenv: apt-get install python3-venv"
WORK=${1:-$REPO/bench/.work}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
case "$WORK" in *[\"\\\$\`\ ]*) die "work dir path must not contain quotes, backslashes, \$, \` or spaces: $WORK" ;; esac
# shellcheck source=common.sh
. "$REPO/bench/common.sh"
graven_binary

rm_tree() {
    if [[ -e "$1" || -L "$1" ]]; then
        chmod -R u+w "$1" 2>/dev/null || true
        rm -rf "$1"
    fi
}
# rm_links DIR: removes a tree of hard links into a store. Only its
# directories are made writable: a chmod of a file would change the
# store's inode too.
rm_links() {
    if [[ -e "$1" ]]; then
        find "$1" -type d -exec chmod u+w {} +
        rm -rf "$1"
    fi
}
# shellcheck source=corpus.sh
. "$SCRIPT_DIR/corpus.sh"
CORPUS=$WORK/corpus
ensure_corpus "$CORPUS" "$REPO/bench/corpus-requirements.txt"
files=$(find "$CORPUS" -type f | wc -l)
bytes=$(du -s --apparent-size -B1 "$CORPUS" | cut -f1)

M=$WORK/materialise
rm_tree "$M" && mkdir -p "$M/app"
log "building the corpus into an artifact, and committing it to OSTree (untimed)"
cd "$M/app"
git init -q
echo 'web: true' >Procfile
cat >graven.toml <<EOF
[app]
name = "bench"
[build]
command = "mkdir -p out && cp -a \\"\$CORPUS\\" out/venv"
output = "out"
env = { CORPUS = "$CORPUS" }
EOF
git add -A && git -c user.name=bench -c user.email=bench@example.invalid commit -qm app
export GRAVEN_AUTHOR=bench@example.invalid
"$GRAVEN" build >/dev/null 2>&1 || die "graven build failed"
"$GRAVEN" release --env bench >/dev/null 2>&1 || die "graven release failed"
"$GRAVEN" exec --no-sandbox --env bench -- true || die "graven exec failed"
# The same tree as graven lays out: commit the laid-out release.
TREE=$(find "$M/app/.graven/releases/bench/bench" -mindepth 1 -maxdepth 1 -type d | head -n 1)
[[ -n "$TREE" ]] || die "no release tree laid out"
ostree --repo="$M/ostree" init --mode=bare
ostree --repo="$M/ostree" commit --branch=bench --tree=dir="$TREE" >/dev/null
layout=$(basename "$TREE")

declare -A SAMPLES=()
add_sample() { SAMPLES[$1]="${SAMPLES[$1]:-} $2"; }
median() { printf '%s\n' ${SAMPLES[$1]} | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
time_ms() {
    local t0 t1
    sync
    sleep "$SETTLE"
    t0=$(date +%s%N)
    "$@" >/dev/null 2>&1 || die "failed: $*"
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
}

op_graven() { "$GRAVEN" exec --no-sandbox --env bench -- true; }
op_ostree() { ostree --repo="$M/ostree" checkout -H bench "$M/out-ostree"; }
op_cpal() { cp -al "$TREE" "$M/out-cpal"; }

for ((i = 1; i <= RUNS; i++)); do
    log "run $i of $RUNS (each after ${SETTLE} s)"
    rm_links "$M/app/.graven/releases/bench/bench/$layout"
    add_sample graven "$(time_ms op_graven)"
    [[ -d "$M/app/.graven/releases/bench/bench/$layout" ]] || die "graven exec laid out no tree"
    rm_links "$M/out-ostree"
    add_sample ostree "$(time_ms op_ostree)"
    rm_links "$M/out-cpal"
    add_sample cpal "$(time_ms op_cpal)"
done

g=$(median graven)
o=$(median ostree)
c=$(median cpal)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
verdict=$(awk -v g="$g" -v o="$o" 'BEGIN { print (g <= o ? "PASS" : "MISS") }')
cat <<EOF

Laying out the reference tree ($files files, $bytes bytes), cold, medians of $RUNS (ms)

| | ms | / ostree checkout -H |
| --- | --- | --- |
| graven exec --no-sandbox -- true (lays the release out) | $g | $(ratio "$g" "$o") |
| ostree checkout -H | $o | 1.00 |
| cp -al | $c | $(ratio "$c" "$o") |

graven at most ostree checkout -H: $verdict
EOF
