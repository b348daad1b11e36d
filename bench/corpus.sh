# shellcheck shell=bash
# The reference tree of the build and materialise benchmarks: a Python
# virtualenv of bench/corpus-requirements.txt's pinned packages (~350 MB,
# ~14k files). Sourced; the caller defines log and rm_tree.
#
# ensure_corpus DIR REQS: makes DIR the corpus, unless it already is. A
# marker beside it (DIR.ok) records a complete install and the requirements
# it was made from; anything else is made again from scratch. Sets
# corpus_create_s to how long that took, or "(existing)".
ensure_corpus() {
    local dir=$1 reqs=$2 mark="$1.ok" sum t0 t1
    sum=$(sha256sum "$reqs" | cut -d' ' -f1)
    corpus_create_s="(existing)"
    if [[ -x "$dir/bin/python" && -f "$mark" && "$(cat "$mark")" == "$sum" ]]; then
        log "corpus present: $dir"
        return
    fi
    log "creating corpus in $dir (downloads ~350 MB of packages)"
    rm_tree "$dir"
    rm -f "$mark"
    t0=$(date +%s%N)
    python3 -m venv "$dir" >&2
    "$dir/bin/pip" install -r "$reqs" >&2     # progress to stderr; stdout is the report
    t1=$(date +%s%N)
    corpus_create_s=$(awk -v n=$((t1 - t0)) 'BEGIN { printf "%.1f s", n / 1e9 }')
    echo "$sum" > "$mark"
    log "corpus created in $corpus_create_s"
}
