#!/usr/bin/env bash
# bench/build.sh: build/ingest benchmark for graven against peer tools.
#
# What it does:
#   1. makes sure the needed tools are installed (ostree, zstd, python3-venv, git),
#   2. creates the reference corpus (a Python virtualenv, ~350 MB, ~14k files)
#      in the work directory if it is not already there,
#   3. builds graven (`cargo build --release`),
#   4. times graven's ingest with a cold store (two variants: the build output
#      hard-links the corpus via `cp -al`, or holds private copies via `cp -a`)
#      and the peers (tar -czf, tar | zstd, ostree commit, tar stream), all on
#      the same tree, in the same run, with a warm page cache,
#   5. measures an incremental build with a warm store (5 files changed),
#   6. prints medians, ratios and PASS/MISS against the issue's targets.
#      The PASS/MISS lines are informational only. The script exits 0 unless
#      something fails to run.
#
# Usage:  bench/build.sh [WORK_DIR]
# Environment:
#   BENCH_WORK=DIR        work directory (default: bench/.work in the repo;
#                         a positional argument takes precedence)
#   BENCH_RUNS=N          runs per measurement, median reported (default 5)
#   BENCH_SKIP_GRAVEN=1   skip building and measuring graven (peers only)
#   BENCH_GRAVEN_BIN=PATH use this graven binary instead of `cargo build --release`
#   BENCH_SETTLE=SECONDS  wait before each graven run (default 35; see SETTLE)
#
# Must run on Linux with GNU tar. Installing missing packages requires root
# (apt-get); everything else works as any user.

set -euo pipefail

RUNS=${BENCH_RUNS:-5}
# Seconds to wait before a timed run that follows mass deletions. ext4
# without a journal skips inodes freed in the last ~30 s when it allocates
# new ones, which slows every tool that creates thousands of files right
# after another run deleted thousands (graven removes its build directory at
# the end of each build). Outputs are kept until the end, and runs of graven
# wait this long, so that each run sees the filesystem a real build would.
SETTLE=${BENCH_SETTLE:-35}
SKIP_GRAVEN=${BENCH_SKIP_GRAVEN:-0}

die() { echo "bench/build.sh: error: $*" >&2; exit 1; }
log() { echo "==> $*" >&2; }

[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer (got '$RUNS')"

# ---------------------------------------------------------------------------
# 1. Tools. apt-get update runs at most once, and only when something is missing.
# ---------------------------------------------------------------------------
missing_pkgs=()
command -v git     >/dev/null 2>&1 || missing_pkgs+=(git)
command -v ostree  >/dev/null 2>&1 || missing_pkgs+=(ostree)
command -v zstd    >/dev/null 2>&1 || missing_pkgs+=(zstd)
command -v python3 >/dev/null 2>&1 || missing_pkgs+=(python3)
# Debian's python3 cannot create a venv with pip without python3-venv (ensurepip).
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then missing_pkgs+=(python3-venv); fi
if ((${#missing_pkgs[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing packages (${missing_pkgs[*]}); install them or run as root"
    command -v apt-get >/dev/null 2>&1 || die "missing packages (${missing_pkgs[*]}) and no apt-get"
    log "installing ${missing_pkgs[*]}"
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing_pkgs[@]}" >&2
fi
for c in git ostree zstd python3 tar gzip; do
    command -v "$c" >/dev/null 2>&1 || die "'$c' not found"
done
tar --version 2>/dev/null | grep -q 'GNU tar' || die "GNU tar required"

# ---------------------------------------------------------------------------
# Locations: repo root, requirements file, work directory.
# ---------------------------------------------------------------------------
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(git -C "$SCRIPT_DIR" rev-parse --show-toplevel 2>/dev/null) \
    || die "$SCRIPT_DIR is not inside a git checkout"
# The reference tree's pinned packages: the same tree as the peers' published figures.
REQS="$REPO/bench/corpus-requirements.txt"
[[ -f "$REQS" ]] || die "corpus requirements not found: $REQS"

WORK=${1:-${BENCH_WORK:-$REPO/bench/.work}}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
CORPUS=$WORK/corpus
CORPUS2=$WORK/corpus2
# Paths go into a TOML basic string and shell commands: keep them simple.
case "$WORK" in *[\"\\\$\`\ ]*) die "work dir path must not contain quotes, backslashes, \$, \` or spaces: $WORK" ;; esac

# Remove a tree that may contain read-only files/dirs (graven store, ostree repo).
rm_tree() {
    if [[ -e "$1" || -L "$1" ]]; then
        chmod -R u+w "$1" 2>/dev/null || true
        rm -rf "$1"
    fi
}

# ---------------------------------------------------------------------------
# 2. Corpus (bench/corpus.sh, shared with bench/materialise.sh).
# ---------------------------------------------------------------------------
# shellcheck source=corpus.sh
. "$SCRIPT_DIR/corpus.sh"
ensure_corpus "$CORPUS" "$REQS"
corpus_bytes=$(du -s --apparent-size -B1 "$CORPUS" | cut -f1)
corpus_files=$(find "$CORPUS" -type f | wc -l)
corpus_entries=$(find "$CORPUS" | wc -l)

# ---------------------------------------------------------------------------
# Timing and statistics helpers.
# ---------------------------------------------------------------------------
declare -A SAMPLES=()   # key -> space-separated seconds

now_ns() { date +%s%N; }
ns_to_s() { awk -v n="$1" 'BEGIN { printf "%.4f", n / 1e9 }'; }
ms_to_s() { awk -v n="$1" 'BEGIN { printf "%.4f", n / 1e3 }'; }
add_sample() { SAMPLES[$1]="${SAMPLES[$1]:-} $2"; }
# median KEY -> seconds, or empty if there are no samples
median() {
    local v=${SAMPLES[$1]:-}
    [[ -n "${v// /}" ]] || { echo ""; return; }
    printf '%s\n' $v | sort -g | awk '{ a[NR] = $1 }
        END { if (NR % 2) printf "%.3f", a[(NR + 1) / 2];
              else printf "%.3f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
# ratio A B -> A/B with two decimals, or n/a
ratio() {
    if [[ -z "$1" || -z "$2" ]]; then echo "n/a"; return; fi
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'
}
# at_least VALUE TARGET -> PASS / MISS / n/a
at_least() {
    if [[ "$1" == "n/a" || -z "$1" ]]; then echo "n/a"; return; fi
    awk -v a="$1" -v t="$2" 'BEGIN { print (a >= t ? "PASS" : "MISS") }'
}

# Read the corpus once so every measurement sees a warm page cache. The pipe
# through cat matters: GNU tar detects an archive that is /dev/null and then
# skips reading file contents altogether.
warm_cache() { tar -cf - -C "$CORPUS" . | cat > /dev/null; }

# bench_peer KEY: time op_KEY RUNS times; pre_KEY / post_KEY (if defined) run
# untimed around it. `sync` before each run so earlier writes are not flushed
# during the timed part.
bench_peer() {
    local key=$1 i t0 t1
    log "timing $key ($RUNS runs)"
    warm_cache
    for ((i = 1; i <= RUNS; i++)); do
        if declare -F "pre_$key" >/dev/null; then "pre_$key" "$i"; fi
        sync
        t0=$(now_ns)
        "op_$key" "$i"
        t1=$(now_ns)
        if declare -F "post_$key" >/dev/null; then "post_$key" "$i"; fi
        add_sample "$key" "$(ns_to_s $((t1 - t0)))"
    done
}

# ---------------------------------------------------------------------------
# Peer operations: the timed part is op_*, all on the same corpus.
# ---------------------------------------------------------------------------
op_targz()  { tar -czf "$WORK/x.tar.gz" -C "$CORPUS" .; }       # gzip -6, one thread
post_targz() { rm -f "$WORK/x.tar.gz"; }

op_tarzstd() { tar -cf - -C "$CORPUS" . | zstd -3 -T0 -q -o "$WORK/x.tar.zst" -f; }
post_tarzstd() { rm -f "$WORK/x.tar.zst"; }

pre_ostree()  { rm_tree "$WORK/ostree-$1"; ostree --repo="$WORK/ostree-$1" init --mode=bare; }
op_ostree()   { ostree --repo="$WORK/ostree-$1" commit --branch=bench --tree=dir="$CORPUS" >/dev/null; }
# Repos are removed at the end (see SETTLE).

op_floor() { tar -cf - -C "$CORPUS" . | cat > /dev/null; }     # I/O floor (see warm_cache)

# The durable-write floor: the corpus's size in one file, written and
# fsynced. graven's ingest ends with the store synced, and a store that
# copies must write every byte; OSTree's commit syncs too.
op_wfloor() {
    dd if=/dev/zero of="$WORK/wfloor-$1" bs=1M count=$(((corpus_bytes + 1048575) / 1048576)) conv=fsync status=none
}
post_wfloor() { rm -f "$WORK/wfloor-$1"; }

# ---------------------------------------------------------------------------
# 3. graven: build, app repos, runs.
# ---------------------------------------------------------------------------
GRAVEN=""
if [[ "$SKIP_GRAVEN" != 1 && -n "${BENCH_GRAVEN_BIN:-}" ]]; then
    GRAVEN=$(cd "$(dirname "$BENCH_GRAVEN_BIN")" && pwd)/$(basename "$BENCH_GRAVEN_BIN")
    [[ -x "$GRAVEN" ]] || die "BENCH_GRAVEN_BIN is not executable: $BENCH_GRAVEN_BIN"
elif [[ "$SKIP_GRAVEN" != 1 ]]; then
    command -v cargo >/dev/null 2>&1 || die "cargo not found (install a Rust toolchain, or set BENCH_SKIP_GRAVEN=1)"
    log "building graven (cargo build --release)"
    (cd "$REPO" && cargo build --release >&2) || die "cargo build --release failed"
    target_dir=${CARGO_TARGET_DIR:-target}
    [[ "$target_dir" == /* ]] || target_dir="$REPO/$target_dir"
    GRAVEN="$target_dir/release/graven"
    [[ -x "$GRAVEN" ]] || die "graven binary not found at $GRAVEN"
fi

# write_app_toml DIR COPY_CMD CORPUS_DIR: graven.toml whose build hard-links
# (cp -al) or copies (cp -a) the corpus into out/venv.
write_app_toml() {
    local dir=$1 cp_cmd=$2 corpus=$3
    cat > "$dir/graven.toml" <<EOF
[app]
name = "bench"
[build]
command = "mkdir -p out && $cp_cmd \\"\$CORPUS\\" out/venv"
output = "out"
# A virtualenv links bin/python* to the interpreter by absolute path, which an
# artifact refuses (it would point outside the tree): leave those links out.
exclude = ["venv/bin/python*"]
env = { CORPUS = "$corpus" }
EOF
}

git_commit() { git -C "$1" -c user.name=bench -c user.email=bench@example.invalid commit -q "${@:2}"; }

# make_app DIR COPY_CMD: a fresh, committed app repo.
make_app() {
    local dir=$1
    rm_tree "$dir"
    mkdir -p "$dir"
    git -C "$dir" init -q
    echo 'web: true' > "$dir/Procfile"
    echo 'out/' > "$dir/.gitignore"      # in case the build runs in the worktree
    write_app_toml "$dir" "$2" "$CORPUS"
    git -C "$dir" add -A
    git_commit "$dir" -m "bench app ($2)"
}

# json_get FILE KEY -> value ("" if absent). Fails if FILE is not one JSON object.
json_get() {
    python3 -c '
import json, sys
with open(sys.argv[1]) as f:
    d = json.load(f)
if not isinstance(d, dict):
    sys.exit("graven --json output is not a JSON object")
v = d.get(sys.argv[2])
print("" if v is None else (str(v).lower() if isinstance(v, bool) else v))
' "$1" "$2"
}

# graven_build APP HOME OUT_JSON [extra build args...]: one build, stdout to
# OUT_JSON, stderr to a log (shown on failure).
graven_build() {
    local app=$1 home=$2 out=$3
    shift 3
    rm_tree "$app/out"
    if ! (cd "$app" && "$GRAVEN" --home "$home" build --json "$@") > "$out" 2> "$WORK/graven.stderr"; then
        echo "--- graven stderr ---" >&2; tail -n 40 "$WORK/graven.stderr" >&2
        echo "--- graven stdout ---" >&2; head -c 4000 "$out" >&2
        die "graven build failed in $app"
    fi
    json_get "$out" ingest_ms >/dev/null || die "graven --json output is not valid JSON: $out"
}

# bench_graven KEY APP [BUILD_ARGS...]: cold-store builds, a fresh --home
# each run.
bench_graven() {
    local key=$1 app=$2 i home t0 t1 out=$WORK/graven-$1.json v
    shift 2
    log "timing graven $key ($RUNS runs, cold store)"
    warm_cache
    for ((i = 1; i <= RUNS; i++)); do
        home=$WORK/home-$key-$i
        rm_tree "$home"
        mkdir -p "$home"
        sync
        sleep "$SETTLE"
        t0=$(now_ns)
        graven_build "$app" "$home" "$out" --force "$@"
        t1=$(now_ns)
        add_sample "$key.wall" "$(ns_to_s $((t1 - t0)))"
        for f in ingest_ms build_command_ms duration_ms; do
            v=$(json_get "$out" "$f")
            [[ -n "$v" ]] || die "graven --json output lacks $f: $out"
            add_sample "$key.${f%_ms}" "$(ms_to_s "$v")"
        done
        if [[ "$i" == 1 ]]; then log "  first run: $(tr -d '\n' < "$out")"; fi
        rm_tree "$app/out"    # homes are removed at the end (see SETTLE)
    done
}

if [[ -n "$GRAVEN" ]]; then
    make_app "$WORK/app" "cp -al"      # build output shares inodes with the corpus
    make_app "$WORK/app-cp" "cp -a"    # build output is private to the build
    # Only a build without the sandbox can hard-link the machine's files
    # into its output: in the sandbox they are on another, read-only mount.
    bench_graven shared "$WORK/app" --no-sandbox
    bench_graven private "$WORK/app-cp"
fi

# ---------------------------------------------------------------------------
# 4. Peers.
# ---------------------------------------------------------------------------
bench_peer targz
bench_peer ostree
bench_peer tarzstd
bench_peer floor
bench_peer wfloor

# ---------------------------------------------------------------------------
# 5. Incremental build with a warm store: corpus2 = corpus with 5 files
#    replaced by modified copies (new inodes; the corpus is never modified).
# ---------------------------------------------------------------------------
inc_changed="" inc_new="" inc_manifest="" inc_reused="" inc_ingest="" inc_files=""
if [[ -n "$GRAVEN" ]]; then
    log "incremental build (warm store, 5 changed files)"
    home=$WORK/home-incr
    rm_tree "$home"; mkdir -p "$home"
    make_app "$WORK/app" "cp -al"
    graven_build "$WORK/app" "$home" "$WORK/graven-incr-base.json" --force --no-sandbox

    rm_tree "$CORPUS2"
    cp -al "$CORPUS" "$CORPUS2"
    # Five regular files of clearly different sizes: the largest, and those at
    # the 90th, 50th, 25th and 5th percentiles of size (distinct sizes, non-empty).
    mapfile -t picked < <(python3 - "$CORPUS" <<'PY'
import os, sys
root = sys.argv[1]
files = []
for d, _, names in os.walk(root):
    for n in names:
        p = os.path.join(d, n)
        st = os.lstat(p)
        if os.path.isfile(p) and not os.path.islink(p) and st.st_size > 0:
            files.append((st.st_size, os.path.relpath(p, root)))
files.sort()
picked, sizes = [], set()
for q in (1.0, 0.9, 0.5, 0.25, 0.05):
    i = min(len(files) - 1, int(q * (len(files) - 1)))
    while files[i][0] in sizes and i > 0:
        i -= 1
    sizes.add(files[i][0])
    picked.append(files[i][1])
print("\n".join(picked))
PY
)
    ((${#picked[@]} == 5)) || die "could not pick 5 files to change"
    inc_changed=0
    for rel in "${picked[@]}"; do
        src=$CORPUS/$rel dst=$CORPUS2/$rel
        mode=$(stat -c %a "$src")
        rm -f "$dst"                                 # drop the link, not the inode
        { cat "$src"; printf '\n# graven bench change\n'; } > "$dst"
        chmod "$mode" "$dst"
        [[ $(stat -c %h "$src") == 1 && $(stat -c %h "$dst") == 1 ]] || die "unexpected link count for $rel"
        inc_changed=$((inc_changed + $(stat -c %s "$dst")))
        inc_files+="$(stat -c %s "$dst") $rel"$'\n'
    done

    write_app_toml "$WORK/app" "cp -al" "$CORPUS2"
    git_commit "$WORK/app" -am "bench: corpus2"
    graven_build "$WORK/app" "$home" "$WORK/graven-incr.json" --no-sandbox
    inc_new=$(json_get "$WORK/graven-incr.json" new_bytes)
    inc_manifest=$(json_get "$WORK/graven-incr.json" new_manifest_bytes)
    inc_reused=$(json_get "$WORK/graven-incr.json" reused)
    inc_ingest=$(json_get "$WORK/graven-incr.json" ingest_ms)
    [[ -n "$inc_new" ]] || die "graven --json output lacks new_bytes"
    log "  incremental: $(tr -d '\n' < "$WORK/graven-incr.json")"
    rm_tree "$home"
    rm_tree "$WORK/app/out"
    rm_tree "$CORPUS2"
fi

# ---------------------------------------------------------------------------
# 6. Report (also saved to $WORK/report.txt).
# ---------------------------------------------------------------------------
ingest_link=$(median shared.ingest)
ingest_copy=$(median private.ingest)
m_targz=$(median targz) m_ostree=$(median ostree) m_zstd=$(median tarzstd) m_floor=$(median floor) m_wfloor=$(median wfloor)

row() { printf '  %-46s %10s\n' "$1" "${2:-n/a}"; }
ratio_row() {   # label, peer median, target (or "" for none)
    local r1 r2
    r1=$(ratio "$2" "$ingest_link") r2=$(ratio "$2" "$ingest_copy")
    if [[ -n "$3" ]]; then
        printf '  %-34s %8s %5s %8s %5s  (target >= %sx)\n' "$1" "$r1" "$(at_least "$r1" "$3")" "$r2" "$(at_least "$r2" "$3")" "$3"
    else
        printf '  %-34s %8s %5s %8s\n' "$1" "$r1" "" "$r2"
    fi
}

{
echo
echo "graven build benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, $(uname -sr)"
echo "corpus: $corpus_bytes bytes, $corpus_files files, $corpus_entries entries; creation: $corpus_create_s"
echo "tools: $(tar --version | head -1); zstd $(zstd -V | grep -o 'v[0-9][0-9.]*' | head -1); ostree $(ostree --version | awk -F"'" '/Version/ { print $2 }')"
echo "medians of $RUNS runs, warm page cache, seconds:"
if [[ -n "$GRAVEN" ]]; then
    row "graven ingest, cp -al output (copy into store)" "$ingest_link"
    row "graven ingest, cp -a output (move into store)" "$ingest_copy"
    row "graven build command, cp -al" "$(median shared.build_command)"
    row "graven build command, cp -a" "$(median private.build_command)"
    row "graven duration_ms, cp -al" "$(median shared.duration)"
    row "graven duration_ms, cp -a" "$(median private.duration)"
    row "graven wall clock incl. process, cp -al" "$(median shared.wall)"
    row "graven wall clock incl. process, cp -a" "$(median private.wall)"
else
    echo "  (graven skipped: BENCH_SKIP_GRAVEN=1)"
fi
row "tar -czf (gzip -6, 1 thread)" "$m_targz"
row "ostree commit (fresh bare repo)" "$m_ostree"
row "tar | zstd -3 -T0" "$m_zstd"
row "tar stream (I/O floor)" "$m_floor"
row "corpus-sized write + fsync (durable floor)" "$m_wfloor"
echo
echo "ratios (peer / graven ingest):      cp -al ingest   cp -a ingest"
ratio_row "tar -czf / graven ingest" "$m_targz" 20
ratio_row "ostree commit / graven ingest" "$m_ostree" 5
ratio_row "tar|zstd / graven ingest" "$m_zstd" ""
printf '  %-34s %8s %5s %8s\n' "graven ingest / I/O floor" "$(ratio "$ingest_link" "$m_floor")" "" "$(ratio "$ingest_copy" "$m_floor")"
printf '  %-34s %8s %5s %8s\n' "graven ingest / durable floor" "$(ratio "$ingest_link" "$m_wfloor")" "" "$(ratio "$ingest_copy" "$m_wfloor")"
echo
if [[ -n "$GRAVEN" ]]; then
    echo "incremental build, warm store, 5 files replaced:"
    printf '%s' "$inc_files" | while read -r size rel; do printf '    %12s  %s\n' "$size" "$rel"; done
    row "bytes changed (sum of the 5 new files)" "$inc_changed"
    row "new_bytes (blobs + manifests)" "$inc_new"
    row "new_manifest_bytes" "${inc_manifest:-not reported}"
    row "new_bytes / bytes changed" "$(ratio "$inc_new" "$inc_changed")"
    row "reused" "$inc_reused"
    row "ingest (s)" "$( [[ -n "$inc_ingest" ]] && ms_to_s "$inc_ingest")"
    if [[ -n "$inc_manifest" ]]; then
        # new_bytes = new blob bytes + new listing bytes: the blobs must be no
        # more than the changed files, and the listings only the changed
        # directories' (a small part of the whole manifest).
        inc_blobs=$((inc_new - inc_manifest))
        full_manifest=$(json_get "$WORK/graven-incr-base.json" new_manifest_bytes)
        verdict=$( ((inc_blobs <= inc_changed)) && echo PASS || echo MISS)
        row "new blob bytes" "$inc_blobs"
        row "whole manifest (cold build's listings)" "$full_manifest"
        echo "  new blob bytes <= changed bytes ($inc_blobs <= $inc_changed): $verdict"
        echo "  new listings: $inc_manifest of $full_manifest manifest bytes ($(ratio "$inc_manifest" "$full_manifest") of the whole)"
    else
        verdict=$( ((inc_new <= inc_changed)) && echo PASS || echo MISS)
        echo "  new_bytes <= changed bytes ($inc_new <= $inc_changed; manifest bytes not reported): $verdict"
    fi
else
    echo "incremental build: skipped (BENCH_SKIP_GRAVEN=1)"
fi
echo
echo "raw samples (s):"
for k in $(printf '%s\n' "${!SAMPLES[@]}" | sort); do printf '  %-22s%s\n' "$k" "${SAMPLES[$k]}"; done
} | tee "$WORK/report.txt"

# Outputs kept for the SETTLE reason above go now, after every timed run.
for dir in "$WORK"/home-* "$WORK"/ostree-*; do rm_tree "$dir"; done
