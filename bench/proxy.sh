#!/usr/bin/env bash
# bench/proxy.sh: graven's proxy against nginx's, with wrk.
#
# The app is nginx itself answering a fixed body (a Python server tops out
# near a thousand requests/s here, for every proxy, which would measure
# the app), run once as the web process of `graven run`, and once beside
# it for the peers. wrk (2 threads, BENCH_CONNECTIONS keep-alive
# connections, BENCH_DURATION seconds a window) then measures:
#
#   direct:   the app itself;
#   tcp:      through `graven run` with `[run] proxy = "tcp"` (bytes);
#   graven:   through `graven run`'s proxy (HTTP, routed per request),
#   nginx:    and through nginx as a reverse proxy to the same app
#             (upstream keepalive, HTTP/1.1, a worker per core: as a team
#             would configure it, and as Debian's nginx.conf does), these
#             two in turns for BENCH_ROUNDS rounds, with the CPU each
#             proxy spent a request and the part of it in the kernel
#             (most of it: the same four TCP segments a request go over
#             loopback through either proxy).
#
# Targets (the run-stage issue): graven's requests/s at least nginx's,
# graven's p99 at most nginx's, both as the median of the rounds' ratios
# (on a machine others share, one window against the next can differ by
# a quarter). Everything is on loopback.
#
# Usage: bench/proxy.sh [WORK_DIR]
# Environment: BENCH_DURATION=S (default 20), BENCH_CONNECTIONS=N (default
#              64), BENCH_ROUNDS=N (default 3), BENCH_GRAVEN_BIN=PATH.
set -euo pipefail

DURATION=${BENCH_DURATION:-20}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
ROUNDS=${BENCH_ROUNDS:-3}
die() { echo "bench/proxy.sh: error: $*" >&2; exit 1; }
log() { echo "==> $*" >&2; }
[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || die "BENCH_DURATION must be a positive integer (got '$DURATION')"
[[ "$CONNECTIONS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_CONNECTIONS must be a positive integer (got '$CONNECTIONS')"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer (got '$ROUNDS')"

REPO=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
# shellcheck source=../scripts/lib/apt.sh
. "$REPO/scripts/lib/apt.sh"
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v curl >/dev/null || missing+=(curl)
((${#missing[@]} == 0)) || apt_install "${missing[@]}" || die "needs ${missing[*]}"
NGINX=$(command -v nginx)

WORK=${1:-$REPO/bench/.work/proxy}
# shellcheck source=common.sh
. "$REPO/bench/common.sh"
graven_binary

rm -rf "$WORK" && mkdir -p "$WORK/app"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# nginx_conf FILE DIR SERVER_BLOCK [WORKERS]: a foreground nginx, its files
# in DIR, with WORKERS worker processes (default 1, as the app has).
nginx_conf() {
    cat >"$1" <<EOF
worker_processes ${4:-1};
daemon off;
pid $2/nginx.pid;
error_log stderr error;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $2/body;
    proxy_temp_path $2/proxy;
    fastcgi_temp_path $2/fastcgi;
    uwsgi_temp_path $2/uwsgi;
    scgi_temp_path $2/scgi;
    keepalive_requests 1000000;
$3
}
EOF
}
# The same answer as the web process's (bench/nginx-release.sh, v1).
APP_BLOCK='server { listen 127.0.0.1:PORT; location / { return 200 "release v1\n"; } }'

# The app as graven runs it: its config made at start, for its $PORT.
cd "$WORK/app"
git init -q
cp "$REPO/bench/nginx-release.sh" serve.sh
echo 'web: sh serve.sh' >Procfile
export GRAVEN_AUTHOR=bench@example.invalid
git add -A && git -c user.name=bench -c user.email=bench@example.invalid commit -qm app
# Two environments of it, one per proxy mode.
"$GRAVEN" build >/dev/null 2>&1 || die "graven build failed"
"$GRAVEN" release --env http >/dev/null 2>&1 || die "graven release failed"
printf '[run]\nproxy = "tcp"\n' >graven.toml
git add -A && git -c user.name=bench -c user.email=bench@example.invalid commit -qm "tcp mode"
"$GRAVEN" build >/dev/null 2>&1 || die "graven build failed"
"$GRAVEN" release --env tcp >/dev/null 2>&1 || die "graven release failed"
HTTP_PORT=$(free_port)
TCP_PORT=$(free_port)
"$GRAVEN" run --env http --port "$HTTP_PORT" >"$WORK/graven-http.log" 2>&1 &
PIDS+=($!)
HTTP_PID=$!
"$GRAVEN" run --env tcp --port "$TCP_PORT" >"$WORK/graven-tcp.log" 2>&1 &
PIDS+=($!)
TCP_PID=$!

# The same app beside it, and nginx proxying to it.
APP_PORT=$(free_port)
PROXY_PORT=$(free_port)
mkdir -p "$WORK/direct" "$WORK/nginx-proxy"
nginx_conf "$WORK/direct/nginx.conf" "$WORK/direct" "${APP_BLOCK/PORT/$APP_PORT}"
nginx_conf "$WORK/nginx-proxy/nginx.conf" "$WORK/nginx-proxy" "
    upstream app { server 127.0.0.1:$APP_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$PROXY_PORT;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        }
    }" auto
"$NGINX" -c "$WORK/direct/nginx.conf" 2>"$WORK/direct/stderr" &
PIDS+=($!)
"$NGINX" -c "$WORK/nginx-proxy/nginx.conf" 2>"$WORK/nginx-proxy/stderr" &
PIDS+=($!)
NGINX_PID=$!

wait_up() {
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$1/" | grep -q "release v1" && return 0
        sleep 0.2
    done
    die "nothing answers on port $1 ($2)"
}
wait_up "$APP_PORT" "the app"
wait_up "$PROXY_PORT" "nginx's proxy"
wait_up "$HTTP_PORT" "graven run (see $WORK/graven-http.log)"
wait_up "$TCP_PORT" "graven run (see $WORK/graven-tcp.log)"

# cpu_ticks PID...: the CPU time these processes used so far, as "user
# system" (in clock ticks), the app's processes not among them.
cpu_ticks() {
    local user=0 system=0 pid stat fields
    for pid in "$@"; do
        stat=$(<"/proc/$pid/stat") || continue
        # After "pid (name) ", utime and stime are the 12th and 13th.
        read -r -a fields <<<"${stat##*) }"
        user=$((user + fields[11]))
        system=$((system + fields[12]))
    done
    echo "$user $system"
}
TICKS=$(getconf CLK_TCK)

# measure LABEL PORT [PID...]: one wrk run; prints "requests/s p99
# cpu kernel errors", cpu being the PIDs' CPU time a request in
# microseconds and kernel the part of it spent in the kernel, in percent
# ("-" without PIDs). On a machine others share, requests/s moves with
# their load from one run to the next; the CPU a request costs moves less.
measure() {
    local label=$1 port=$2
    shift 2
    log "wrk: $label (${DURATION} s, $CONNECTIONS connections)"
    local out user0 system0 user1 system1
    read -r user0 system0 <<<"$(cpu_ticks "$@")"
    out=$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$port/")
    read -r user1 system1 <<<"$(cpu_ticks "$@")"
    echo "$out" >"$WORK/wrk-$label.txt"
    local rps p99 errors requests cpu=- kernel=-
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
    requests=$(awk '/ requests in / { print $1 }' <<<"$out")
    errors=$(awk '/Non-2xx|Socket errors/ { print }' <<<"$out" | tr '\n' ' ')
    if (($# > 0 && requests > 0)); then
        local user=$((user1 - user0)) system=$((system1 - system0))
        cpu=$(awk -v t=$((user + system)) -v hz="$TICKS" -v n="$requests" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
        kernel=$(awk -v s=$system -v t=$((user + system)) 'BEGIN { printf "%.0f", t ? 100 * s / t : 0 }')
    fi
    echo "$rps $p99 $cpu $kernel ${errors:-none}"
}
# nginx's proxy is its master and its workers.
mapfile -t NGINX_PIDS < <(echo "$NGINX_PID"; pgrep -P "$NGINX_PID")
read -r direct_rps direct_p99 direct_cpu _ direct_err <<<"$(measure direct "$APP_PORT")"
read -r tcp_rps tcp_p99 tcp_cpu tcp_kernel tcp_err <<<"$(measure graven-tcp "$TCP_PORT" "$TCP_PID")"

# ms P: a wrk latency ("3.10ms", "850.00us", "1.02s") in ms.
ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /[0-9]s$/ && v !~ /ms$/) n *= 1000; printf "%.2f", n }'; }
# over A B: A / B, two decimals.
over() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# median X...: the middle one (of an even count, the lower of the two).
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# graven's HTTP proxy and nginx's in turns, each round's pair side by
# side in time (graven first in odd rounds, nginx first in even ones), so
# that load from outside that comes and goes falls on both alike.
ROWS=""
RPS_RATIOS=()
P99_RATIOS=()
CPU_RATIOS=()
G_KERNEL=()
N_KERNEL=()
for ((round = 1; round <= ROUNDS; round++)); do
    order=(graven nginx)
    ((round % 2)) || order=(nginx graven)
    for proxy in "${order[@]}"; do
        if [[ $proxy == graven ]]; then
            read -r g_rps g_p99 g_cpu g_kernel g_err <<<"$(measure "graven-$round" "$HTTP_PORT" "$HTTP_PID")"
        else
            read -r n_rps n_p99 n_cpu n_kernel n_err <<<"$(measure "nginx-$round" "$PROXY_PORT" "${NGINX_PIDS[@]}")"
        fi
    done
    RPS_RATIOS+=("$(over "$g_rps" "$n_rps")")
    P99_RATIOS+=("$(over "$(ms "$g_p99")" "$(ms "$n_p99")")")
    CPU_RATIOS+=("$(over "$g_cpu" "$n_cpu")")
    G_KERNEL+=("$g_kernel")
    N_KERNEL+=("$n_kernel")
    errors=""
    [[ $g_err == none && $n_err == none ]] || errors=" (errors: graven $g_err, nginx $n_err)"
    ROWS+="| $round | $g_rps, $g_p99, $g_cpu ($g_kernel %) | $n_rps, $n_p99, $n_cpu ($n_kernel %) | ${RPS_RATIOS[-1]}x | ${P99_RATIOS[-1]}x | ${CPU_RATIOS[-1]}x$errors |"$'\n'
done
rps_ratio=$(median "${RPS_RATIOS[@]}")
p99_ratio=$(median "${P99_RATIOS[@]}")
cpu_ratio=$(median "${CPU_RATIOS[@]}")
rps_verdict=$(awk -v r="$rps_ratio" 'BEGIN { print (r >= 1 ? "PASS" : "MISS") }')
p99_verdict=$(awk -v r="$p99_ratio" 'BEGIN { print (r <= 1 ? "PASS" : "MISS") }')
cat <<EOF

wrk -t2 -c$CONNECTIONS -d${DURATION}s, a fixed body from nginx as the app

| | requests/s | p99 | proxy's CPU a request (µs) | errors |
| --- | --- | --- | --- | --- |
| the app directly | $direct_rps | $direct_p99 | $direct_cpu | $direct_err |
| through graven run, \`[run] proxy = "tcp"\` | $tcp_rps | $tcp_p99 | $tcp_cpu ($tcp_kernel % in the kernel) | $tcp_err |

graven run's HTTP proxy and nginx's (reverse proxy, upstream keepalive), $ROUNDS rounds in turns;
CPU a request: the runner's threads, and nginx's master and workers (in
brackets, the part of it spent in the kernel: the sockets' system calls,
and loopback TCP, which both proxies pay alike)

| round | graven: requests/s, p99, CPU a request (µs) | nginx | graven / nginx requests/s | p99 | CPU a request |
| --- | --- | --- | --- | --- | --- |
${ROWS%$'\n'}

median of the rounds, graven / nginx: requests/s ${rps_ratio}x (target >= 1.0: $rps_verdict); p99 ${p99_ratio}x (target <= 1.0: $p99_verdict); CPU a request ${cpu_ratio}x;
the kernel's part of it, medians: graven $(median "${G_KERNEL[@]}") %, nginx $(median "${N_KERNEL[@]}") %
EOF
