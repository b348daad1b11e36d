#!/usr/bin/env bash
# bench/oci.sh: graven's OCI image export against its peers, on the
# reference tree (bench/corpus-requirements.txt's virtualenv, ~350 MB) as
# an app whose `.venv` is a layer of its own.
#
# Measured in one run, with a warm page cache, medians of BENCH_RUNS:
#   - the first export (`graven export --format oci`, layer cache emptied
#     before each run) against `tar -czf` of the same tree and against
#     `buildah bud` of a one-line `COPY . /app` Dockerfile of it;
#   - the second export of the same artifact (layers cached);
#   - the export after a 5-file change outside the venv (its layer reused);
#   - `graven push` to a loopback registry (Debian's docker-registry): the
#     first push, then the push after that 5-file change.
# Targets: first export >= 3x faster than tar -czf; second under 100 ms;
# the push after the change sends under 5% of the first push's bytes.
# The PASS/MISS lines are informational; the script exits 0 unless
# something fails to run.
#
# Usage:  bench/oci.sh [WORK_DIR]
# Environment: BENCH_WORK, BENCH_RUNS (default 3), BENCH_GRAVEN_BIN, as in
# bench/build.sh.

set -euo pipefail

RUNS=${BENCH_RUNS:-3}
die() { echo "bench/oci.sh: error: $*" >&2; exit 1; }
log() { echo "==> $*" >&2; }
rm_tree() { [[ -e "$1" ]] && { chmod -R u+w "$1" 2>/dev/null || true; rm -rf "$1"; }; return 0; }

missing=()
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if ((${#missing[@]})); then
    [[ $(id -u) -eq 0 ]] || die "missing packages (${missing[*]}); install them or run as root"
    log "installing ${missing[*]}"
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >&2
fi

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(git -C "$SCRIPT_DIR" rev-parse --show-toplevel)
WORK=${1:-${BENCH_WORK:-$REPO/bench/.work}}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
# shellcheck source=bench/common.sh
. "$REPO/bench/common.sh"
# shellcheck source=bench/corpus.sh
. "$REPO/bench/corpus.sh"
ensure_corpus "$WORK/corpus" "$REPO/bench/corpus-requirements.txt"
graven_binary

now() { date +%s%N; }
# median_s CMD...: runs CMD (after `before`, untimed) RUNS times; prints the
# median in seconds.
median_s() {
    local times=() t0 t1
    for _ in $(seq "$RUNS"); do
        before
        t0=$(now); "$@" >/dev/null 2>&1 || die "failed: $*"; t1=$(now)
        times+=("$(( t1 - t0 ))")
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 } END { printf "%.3f", a[int((NR + 1) / 2)] / 1e9 }'
}

# The app: the corpus as its .venv, and a few files of code.
APP=$WORK/oci-app
rm_tree "$APP"
mkdir -p "$APP"
git -C "$APP" init -q --initial-branch=main
git -C "$APP" config user.email bench@example.com
git -C "$APP" config user.name bench
printf '/.graven/\n' > "$APP/.gitignore"
printf 'web: .venv/bin/python app.py\n' > "$APP/Procfile"
for n in 1 2 3 4 5; do printf 'print("module %s")\n' "$n" > "$APP/module$n.py"; done
printf 'import module1\n' > "$APP/app.py"
cat > "$APP/graven.toml" <<EOF
[app]
name = "oci-bench"

[build]
command = "cp -a $WORK/corpus .venv"

[image]
layers = [".venv"]
EOF
git -C "$APP" add -A && git -C "$APP" commit -qm "The bench app"
log "building the app"
(cd "$APP" && "$GRAVEN" build >&2)

OUT=$WORK/oci-out
CACHE=$APP/.graven/cache/.image-layers
export_once() { rm_tree "$OUT"; (cd "$APP" && "$GRAVEN" export HEAD --format oci -o "$OUT"); }

# The same tree the image holds: the artifact, materialised.
TREE=$WORK/oci-tree
rm_tree "$TREE"
mkdir -p "$TREE"
(cd "$APP" && "$GRAVEN" export HEAD --format tar -o - | tar -x -C "$TREE")

log "first export (layer cache emptied before each run)"
before() { rm_tree "$CACHE"; }
first=$(median_s export_once)
log "second export (layers cached)"
before() { :; }
second=$(median_s export_once)

log "tar -czf of the same tree"
before() { rm -f "$WORK/oci-tree.tar.gz"; }
tar_s=$(median_s tar -czf "$WORK/oci-tree.tar.gz" -C "$TREE" .)

log "buildah bud of a one-line COPY Dockerfile"
BROOT=$WORK/buildah
printf 'FROM scratch\nCOPY . /app\n' > "$WORK/oci-tree.Dockerfile"
buildah_bud() {
    buildah --root "$BROOT/root" --runroot "$BROOT/run" --storage-driver vfs \
        bud --layers=false -f "$WORK/oci-tree.Dockerfile" -t oci-bench "$TREE"
}
before() { buildah --root "$BROOT/root" --runroot "$BROOT/run" --storage-driver vfs rmi -a -f >/dev/null 2>&1 || true; }
buildah_s=$(median_s buildah_bud)
before

log "first push to a loopback registry"
REG=$WORK/oci-registry
rm_tree "$REG"
mkdir -p "$REG"
REG_PORT=$(free_port)
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$REG/data" "$REG_PORT" > "$REG/config.yml"
docker-registry serve "$REG/config.yml" >"$REG/log" 2>&1 &
REG_PID=$!
trap 'kill "$REG_PID" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$REG_PORT/v2/" >/dev/null 2>&1 && break
    sleep 0.1
done
t0=$(now); (cd "$APP" && "$GRAVEN" push HEAD "127.0.0.1:$REG_PORT/oci-bench" --json) > "$WORK/oci-push1.json"; t1=$(now)
push1_s=$(awk -v n=$((t1 - t0)) 'BEGIN { printf "%.3f", n / 1e9 }')
push1_bytes=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sent"]["bytes"])' "$WORK/oci-push1.json")

log "export after a 5-file change outside the venv"
for n in 1 2 3 4 5; do printf 'print("module %s, changed")\n' "$n" > "$APP/module$n.py"; done
git -C "$APP" commit -qam "Five files changed"
(cd "$APP" && "$GRAVEN" build >&2)
rm_tree "$OUT"
t0=$(now); (cd "$APP" && "$GRAVEN" export HEAD --format oci -o "$OUT" --json) > "$WORK/oci-changed.json"; t1=$(now)
changed=$(awk -v n=$((t1 - t0)) 'BEGIN { printf "%.3f", n / 1e9 }')
reused=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sum(l["size"] for l in d["layers"] if l["reused"]), sum(l["size"] for l in d["layers"]))' "$WORK/oci-changed.json")

log "push after the 5-file change"
t0=$(now); (cd "$APP" && "$GRAVEN" push HEAD "127.0.0.1:$REG_PORT/oci-bench" --json) > "$WORK/oci-push2.json"; t1=$(now)
push2_s=$(awk -v n=$((t1 - t0)) 'BEGIN { printf "%.3f", n / 1e9 }')
push2_bytes=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sent"]["bytes"])' "$WORK/oci-push2.json")
tgz_bytes=$(stat -c %s "$WORK/oci-tree.tar.gz")
image_bytes=$(python3 -c 'import json,sys; print(sum(l["size"] for l in json.load(open(sys.argv[1]))["layers"]))' "$WORK/oci-changed.json")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
verdict() { awk -v x="$1" -v t="$2" -v dir="$3" 'BEGIN { ok = (dir == "min") ? (x >= t) : (x <= t); print ok ? "PASS" : "MISS" }'; }
echo
echo "OCI export of the reference tree (${RUNS} runs, medians)"
printf '  %-44s %8s s\n' "graven export --format oci (first)" "$first"
printf '  %-44s %8s s\n' "tar -czf" "$tar_s"
printf '  %-44s %8s s\n' "buildah bud (COPY . /app)" "$buildah_s"
printf '  %-44s %8s s\n' "graven export (second, cached)" "$second"
printf '  %-44s %8s s   (bytes reused / all: %s)\n' "graven export after 5 files changed" "$changed" "$reused"
speedup=$(ratio "$tar_s" "$first")
echo
echo "  first export vs tar -czf:   ${speedup}x faster   target >= 3x: $(verdict "$speedup" 3 min)"
echo "  first export vs buildah:    $(ratio "$buildah_s" "$first")x faster"
echo "  second export:              ${second} s          target < 0.100 s: $(verdict "$second" 0.1 max)"
printf '  %-44s %8s s   (%s bytes sent)\n' "graven push (first)" "$push1_s" "$push1_bytes"
printf '  %-44s %8s s   (%s bytes sent)\n' "graven push after 5 files changed" "$push2_s" "$push2_bytes"
share=$(awk -v a="$push2_bytes" -v b="$push1_bytes" 'BEGIN { printf "%.3f", 100 * a / b }')
echo "  push after a 5-file change:  ${share}% of the first push's bytes   target < 5%: $(verdict "$share" 5 max)"
echo "  sizes: image layers ${image_bytes} bytes (gzip level 1), tar -czf ${tgz_bytes} bytes (gzip -6)"
