#!/bin/sh
# run.sh: llmux's bounded benchmark (`make bench`, about 3 minutes) — wrk against the mock
# directly, llmuxd in front of it and nginx proxy_pass in front of it, all on 127.0.0.1; writes
# bench/results/<date>-<host>.md and the latest table into bench/README.md. See bench/README.md.
#
# usage: sh bench/run.sh [BUILD]   (BUILD holds llmuxd and mock_upstream; default "build")
# Environment: BENCH_SECONDS (per wrk run, default 10), BENCH_S3_CONNS (10000),
# BENCH_IDLE_CONNS (50000), BENCH_SCENARIOS ("1 1b 2 3 4 t1 t2 t3"), BENCH_OUT (the report file),
# BENCH_PERF=1 (perf record llmuxd in scenario 1, into the report), BENCH_TARGETS (only these
# targets, e.g. "llmuxd-h2 nginx"). Setting any of the first four or BENCH_TARGETS makes a
# partial run: its report goes to BUILD/bench/report.md, the README is left alone.
set -u

BUILD=${1:-build}
case $BUILD in /*) ;; *) BUILD=$(pwd)/$BUILD ;; esac
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
SECS=${BENCH_SECONDS:-10}
S3_WANT=${BENCH_S3_CONNS:-10000}
S4_WANT=${BENCH_IDLE_CONNS:-50000}
SCENARIOS=${BENCH_SCENARIOS:-1 1b 2 3 4 t1 t2 t3}
ONLY=${BENCH_TARGETS:-}
HOST=$(hostname -s 2>/dev/null || hostname)
DAY=$(date +%Y-%m-%d)
# Only a full run with the default sizes goes to results/ and the README; other runs report into
# the build directory unless BENCH_OUT says where.
FULL=1
[ -n "${BENCH_SECONDS:-}${BENCH_SCENARIOS:-}${BENCH_S3_CONNS:-}${BENCH_IDLE_CONNS:-}$ONLY" ] &&
    FULL=0
if [ $FULL = 1 ]; then
    OUT=${BENCH_OUT:-$HERE/results/$DAY-$HOST.md}
else
    OUT=${BENCH_OUT:-$BUILD/bench/report.md}
fi
TICK=$(getconf CLK_TCK)
START=$(date +%s)
PIDS=""
T=$(mktemp -d /tmp/llmux-bench.XXXXXX) || exit 1

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# --- processes: alive, stop_pid, cleanup (the EXIT trap), free_port, wait_port -------------

. "$HERE/procs.sh"

# --- /proc readings ----------------------------------------------------------------------------

children() { pgrep -P "$1" 2>/dev/null | tr '\n' ' '; }

# utime+stime in clock ticks, summed over the pids given.
ticks() {
    for tk_p in "$@"; do sed 's/.*) //' "/proc/$tk_p/stat" 2>/dev/null; done |
        awk '{ s += $12 + $13 } END { print s + 0 }'
}

# Sum of one /proc/PID/status field (kB) over the pids given.
status_kb() {
    st_f=$1
    shift
    for st_p in "$@"; do cat "/proc/$st_p/status" 2>/dev/null; done |
        awk -v f="$st_f:" '$1 == f { s += $2 } END { print s + 0 }'
}

# --- the servers -------------------------------------------------------------------------------

# Output files of background processes are removed first: the child opens them after the fork,
# so a stale one from the previous row could be read before it is truncated.
start_mock() {
    rm -f "$T/mock.out"
    "$BUILD/mock_upstream" --listen 127.0.0.1:0 --quiet >"$T/mock.out" 2>"$T/mock.err" &
    MOCK_PID=$!
    PIDS="$PIDS $MOCK_PID"
    sm_i=0
    while [ $sm_i -lt 200 ] && ! grep -q '^LISTENING' "$T/mock.out" 2>/dev/null; do
        alive "$MOCK_PID" || die "mock_upstream exited: $(cat "$T/mock.err")"
        sleep 0.05
        sm_i=$((sm_i + 1))
    done
    MOCK_PORT=$(awk '/^LISTENING/ { print $2 }' "$T/mock.out")
    [ -n "$MOCK_PORT" ] || die "mock_upstream did not report its port"
}

llmuxd_config() {
    cat <<EOF
listen: ["127.0.0.1:$1"]
workers: $2
limits:
  max_connections: 60000
  max_inflight: 20000
  queue: 20000
  max_body_bytes: 1m
  header_timeout: 60s
  body_timeout: 60s
  idle_timeout: 300s
timeouts:
  default: 120s
  max: 10m
  connect: 10s
upstreams:
  - name: mock
    provider: openai
    base_url: $UP_URL
    api_key: sk-bench
    max_connections: 10000      # one per in-flight call (HTTP/1.1); with 10k clients, the rest
                                # of the 20k descriptor limit
    timeout: 120s
    http: "$UP_HTTP"
    ca_file: $T/cert.pem
models:
  - name: m
    retries: 0
    targets: [{upstream: mock, model: mock-gpt}]
health:
  failures: 1000000
  cooldown: 1s
gather:
  max_items: 10000
  max_concurrency: 10000
log:
  level: warn
  format: json
  access: false
EOF
}

# Sets SRV_PORT, SRV_PID (to stop), CPU_PIDS (CPU is summed over them), MEM_PIDS (RSS),
# IDLE_PATH (a cheap GET for the idle-connection scenario).
start_target() {
    case $1 in
    direct)
        SRV_PORT=$MOCK_PORT SRV_PID="" CPU_PIDS=$MOCK_PID MEM_PIDS=$MOCK_PID
        IDLE_PATH=/__stats
        ;;
    llmuxd*)
        SRV_PORT=$(free_port)
        st_w=1
        UP_URL=http://127.0.0.1:$MOCK_PORT/v1 UP_HTTP=auto
        case $1 in
        llmuxd-w*) st_w=${1#llmuxd-w} ;;
        llmuxd-h1) UP_URL=https://127.0.0.1:$NG_PORT/v1 UP_HTTP=1.1 ;;
        llmuxd-h2) UP_URL=https://127.0.0.1:$NG_PORT/v1 UP_HTTP=2 ;;
        esac
        llmuxd_config "$SRV_PORT" "$st_w" >"$T/llmux.yaml"
        "$BUILD/llmuxd" -c "$T/llmux.yaml" >"$T/llmuxd.log" 2>&1 &
        SRV_PID=$!
        PIDS="$PIDS $SRV_PID"
        wait_port "$SRV_PORT" "$SRV_PID" || die "llmuxd did not start: $(tail -5 "$T/llmuxd.log")"
        CPU_PIDS=$SRV_PID MEM_PIDS=$SRV_PID IDLE_PATH=/healthz
        ;;
    nginx)
        SRV_PORT=$(free_port)
        rm -rf "$T/nginx"
        mkdir -p "$T/nginx"
        st_up=$MOCK_PORT st_scheme=http
        [ -n "$NG_PID" ] && st_up=$NG_PORT st_scheme=https
        sed -e "s|@PREFIX@|$T/nginx|g" -e "s|@PORT@|$SRV_PORT|g" -e "s|@MOCK_PORT@|$st_up|g" \
            -e "s|@SCHEME@|$st_scheme|g" \
            -e "s|@NOFILE@|$NOFILE|g" -e "s|@WORKER_CONNECTIONS@|$((NOFILE * 2))|g" \
            "$HERE/nginx.conf" >"$T/nginx/nginx.conf"
        "$NGINX" -p "$T/nginx" -c "$T/nginx/nginx.conf" -e "$T/nginx/error.log" \
            >"$T/nginx/stderr" 2>&1 &
        SRV_PID=$!
        PIDS="$PIDS $SRV_PID"
        wait_port "$SRV_PORT" "$SRV_PID" || die "nginx did not start: $(cat "$T/nginx/stderr" \
            "$T/nginx/error.log" 2>/dev/null | tail -5)"
        st_i=0
        while [ $st_i -lt 50 ] && [ -z "$(children "$SRV_PID")" ]; do
            sleep 0.1
            st_i=$((st_i + 1))
        done
        MEM_PIDS=$(children "$SRV_PID")
        CPU_PIDS="$SRV_PID $MEM_PIDS"
        IDLE_PATH=/__stats
        ;;
    esac
}

# nghttpx (TLS, HTTP/2 and HTTP/1.1 by ALPN, a self-signed certificate) in front of the mock,
# as hosted providers serve; its access log keeps each request's client port, so the distinct
# ports are the upstream connections the target opened. Sets NG_PORT, NG_PID.
start_nghttpx() {
    NG_PORT=$(free_port)
    rm -f "$T/ng.access"
    nghttpx --conf=/dev/null --workers=1 --no-ocsp --rlimit-nofile="$NOFILE" \
        -f"127.0.0.1,$NG_PORT" -b"127.0.0.1,$MOCK_PORT" --backend-keep-alive-timeout=300s \
        --accesslog-file="$T/ng.access" --accesslog-format='$remote_port' \
        --errorlog-file="$T/ng.err" "$T/key.pem" "$T/cert.pem" 2>>"$T/ng.err" &
    NG_PID=$!
    PIDS="$PIDS $NG_PID"
    wait_port "$NG_PORT" "$NG_PID" || die "nghttpx did not start: $(tail -5 "$T/ng.err")"
}

# Stops the target and the upstream behind it.
stop_all() {
    [ -n "$SRV_PID" ] && stop_pid "$SRV_PID"
    [ -n "$NG_PID" ] && stop_pid "$NG_PID"
    NG_PID=""
    stop_pid "$MOCK_PID"
}

# --- one measured row --------------------------------------------------------------------------

# row SCENARIO TARGET CONNS RPS P50 P99 ERRORS CPU10K HWM_MB MEMORY [UPSTREAM_CONNS] — one
# table line, and the same figures as key=value lines for the target checks.
row() {
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" \
        "$5" "$6" "$7" "$8" "$9" "${10}" "${11:--}" >>"$T/rows"
    printf '%s.%s.rps=%s\n%s.%s.p99=%s\n%s.%s.errors=%s\n%s.%s.cpu=%s\n%s.%s.hwm=%s\n' \
        "$1" "$2" "$4" "$1" "$2" "$6" "$1" "$2" "$7" "$1" "$2" "$8" "$1" "$2" "$9" >>"$T/kv"
    printf '%s.%s.mem=%s\n%s.%s.conns=%s\n' "$1" "$2" "${10}" "$1" "$2" "$3" >>"$T/kv"
}

# wrk_run CONNS DELAY_MS SECONDS TIMEOUT_S [DIRECTIVES] — runs wrk once at the target; sets the
# RESULT fields as w_requests, w_duration_us, w_connect, w_read, w_write, w_status, w_timeout,
# w_p50_us...
wrk_run() {
    w_requests=0 w_duration_us=1 w_connect=0 w_read=0 w_write=0 w_status=0 w_timeout=0
    w_p50_us=0 w_p99_us=0 w_body_bytes=300
    timeout -k 5 $(($3 + $4 + 60)) wrk -t1 -c"$1" -d"$3"s --timeout "$4"s -s "$HERE/chat.lua" \
        "http://127.0.0.1:$SRV_PORT/v1/chat/completions" -- "$2" ${5:+"$5"} >"$T/wrk.out" 2>&1
    wr_line=$(grep '^RESULT' "$T/wrk.out")
    [ -n "$wr_line" ] || log "wrk gave no result: $(tail -3 "$T/wrk.out")"
    eval "$(printf '%s\n' "$wr_line" | tr ' ' '\n' | grep -E '^[a-z0-9_]+=[0-9]+$' | sed 's/^/w_/')"
}

# measure SCENARIO TARGET CONNS DELAY_MS SECONDS TIMEOUT_S [per-inflight|-] [DIRECTIVES] — a
# fresh mock (behind nghttpx for the t* scenarios) and target, one wrk run, one row.
measure() {
    start_mock
    case $1 in t*) start_nghttpx ;; esac
    start_target "$2"
    sleep 0.3
    me_base=$(status_kb VmRSS $MEM_PIDS)
    if [ "$1" = 1 ] || [ "$1" = t3 ]; then
        wrk_run 16 0 1 5           # warm-up (not measured): connection pools, page faults
    fi
    if [ "$2" = llmuxd ] && [ "$1" = 1 ] && [ "${BENCH_PERF:-0}" = 1 ]; then
        perf record -g -F 999 -p "$SRV_PID" -o "$T/perf.data" >"$T/perf.log" 2>&1 &
        PERF_PID=$!
        PIDS="$PIDS $PERF_PID"
        sleep 0.5
    fi
    me_t0=$(ticks $CPU_PIDS)
    wrk_run "$3" "$4" "$5" "$6" "${8:-}"
    me_t1=$(ticks $CPU_PIDS)
    me_hwm=$(status_kb VmHWM $MEM_PIDS)
    me_up=-
    [ -n "$NG_PID" ] && me_up=$(sort -u "$T/ng.access" | wc -l)
    if [ -n "${PERF_PID:-}" ]; then
        kill -INT "$PERF_PID"
        wait "$PERF_PID" 2>/dev/null
        untrack "$PERF_PID"
        PERF_PID=""
        for me_sort in dso dso,symbol; do
            perf report -i "$T/perf.data" --stdio --no-children -g none --sort "$me_sort" \
                2>/dev/null | grep -E '^ +[0-9]' | sed 's/[ -]*$//' | head -30
            echo
        done >"$T/perf.top"
    fi
    me_mem=-
    if [ "${7:--}" = per-inflight ]; then
        me_mem=$(awk -v h="$me_hwm" -v b="$me_base" -v c="$3" \
            'BEGIN { printf "%.1f KB/in-flight", (h - b) / c }')
    fi
    stop_all
    awk -v r="$w_requests" -v d="$w_duration_us" -v p50="$w_p50_us" -v p99="$w_p99_us" \
        -v e=$((w_connect + w_read + w_write + w_status + w_timeout)) -v t=$((me_t1 - me_t0)) \
        -v hz="$TICK" -v h="$me_hwm" '
        BEGIN {
            printf "%.0f %.2f %.2f %d %s %.1f\n", r / (d / 1e6), p50 / 1000, p99 / 1000, e,
                (r >= 100 ? sprintf("%.3f", t / hz / r * 10000) : "-"), h / 1024
        }' >"$T/fig"
    read -r me_rps me_p50 me_p99 me_err me_cpu me_mb <"$T/fig" || die "no figures for $1 $2"
    row "$1" "$2" "$3" "$me_rps" "$me_p50" "$me_p99" "$me_err" "$me_cpu" "$me_mb" "$me_mem" \
        "$me_up"
    log "scenario $1 $2: $me_rps req/s, p50 $me_p50 ms, p99 $me_p99 ms, $me_err errors," \
        "$me_cpu CPU-s/10k, peak RSS $me_mb MB $me_mem, upstream connections $me_up"
}

# idle SCENARIO TARGET COUNT — COUNT idle keep-alive connections; RSS growth per connection.
idle() {
    start_mock
    start_target "$2"
    sleep 0.3
    id_base=$(status_kb VmRSS $MEM_PIDS)
    rm -f "$T/idle.out"
    "$BUILD/bench/idle_conns" "$SRV_PORT" "$3" "$IDLE_PATH" >"$T/idle.out" 2>"$T/idle.err" &
    id_pid=$!
    PIDS="$PIDS $id_pid"
    id_i=0
    while [ $id_i -lt 900 ] && ! grep -q '^READY' "$T/idle.out" 2>/dev/null && alive "$id_pid"
    do
        sleep 0.1
        id_i=$((id_i + 1))
    done
    sleep 1
    id_rss=$(status_kb VmRSS $MEM_PIDS)
    id_hwm=$(status_kb VmHWM $MEM_PIDS)
    read -r id_tag id_open id_failed <"$T/idle.out" || { id_open=0 id_failed=$3; }
    [ "${id_tag:-}" = READY ] || log "idle_conns did not get ready: $(cat "$T/idle.err")"
    [ -s "$T/idle.err" ] && log "idle_conns: $(head -3 "$T/idle.err")"
    stop_pid "$id_pid"
    stop_all
    id_kb=$(awk -v a="$id_rss" -v b="$id_base" -v n="$id_open" \
        'BEGIN { if (n > 0) printf "%.2f KB/idle conn", (a - b) / n; else print "-" }')
    id_mb=$(awk -v h="$id_hwm" 'BEGIN { printf "%.1f", h / 1024 }')
    row "$1" "$2" "$3" - - - "$id_failed" - "$id_mb" "$id_kb"
    log "scenario $1 $2: $id_open open, $id_failed failed, RSS +$((id_rss - id_base)) kB, $id_kb"
}

# --- set-up ------------------------------------------------------------------------------------

[ -x "$BUILD/llmuxd" ] && [ -x "$BUILD/mock_upstream" ] ||
    die "$BUILD/llmuxd or $BUILD/mock_upstream missing: run make all first"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if ! command -v wrk >/dev/null || [ ! -x "$NGINX" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing wrk and nginx-light"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk nginx-light >&2 ||
            { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -q wrk nginx-light >&2; }
    fi
fi
command -v wrk >/dev/null || die "wrk is missing (apt-get install wrk)"
command -v python3 >/dev/null || die "python3 is missing"
[ -x "$NGINX" ] || { log "nginx is missing: the nginx rows are skipped"; NGINX=""; }

# 10k in-flight requests need 20k descriptors in a proxy (client + upstream side), 50k idle
# ones 50k: raise the limit as far as this environment allows and fit the scenarios to it.
# shellcheck disable=SC3045  # dash and bash both have ulimit -n and -H
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null
# shellcheck disable=SC3045
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
S3_CONNS=$S3_WANT
[ $S3_CONNS -gt $(((NOFILE - 128) / 2)) ] && S3_CONNS=$(((NOFILE - 128) / 2))
S4_CONNS=$S4_WANT
[ $S4_CONNS -gt $((NOFILE - 128)) ] && S4_CONNS=$((NOFILE - 128))

mkdir -p "$BUILD/bench"
cc -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -o "$BUILD/bench/idle_conns" "$HERE/idle_conns.c" ||
    die "cannot compile bench/idle_conns.c"

TARGETS="direct llmuxd"
[ -n "$NGINX" ] && TARGETS="$TARGETS nginx"
NG_PID=""
case " $SCENARIOS " in *" t"[123]" "*)
    command -v nghttpx >/dev/null || die "nghttpx is missing (apt-get install nghttp2-proxy)"
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -keyout "$T/key.pem" -out "$T/cert.pem" \
        -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null ||
        die "openssl could not make the test certificate"
    ;;
esac
# Scenario t1 fits nghttpx too: a client and a backend descriptor per call under nginx.
T1_CONNS=$((S3_CONNS - 64))
log "open files limit $NOFILE; scenario 3 at $S3_CONNS connections, scenario 4 at $S4_CONNS"
: >"$T/rows"
: >"$T/kv"

# --- the scenarios -----------------------------------------------------------------------------

for sc in $SCENARIOS; do
    sc_targets=$TARGETS
    case $sc in t*) sc_targets="llmuxd-h1 llmuxd-h2${NGINX:+ nginx}" ;; esac
    for tg in $sc_targets; do
        [ -n "$ONLY" ] && case " $ONLY " in *" $tg "*) ;; *) continue ;; esac
        case $sc in
        1) measure 1 "$tg" 64 0 "$SECS" 5 ;;
        1b) measure 1b "$tg" 1 0 $(((SECS + 1) / 2)) 5 ;;
        2) measure 2 "$tg" 1000 50 "$SECS" 10 ;;
        3) measure 3 "$tg" "$S3_CONNS" 1000 "$SECS" 30 per-inflight ;;
        4) idle 4 "$tg" "$S4_CONNS" ;;
        t1) measure t1 "$tg" "$T1_CONNS" 1000 "$SECS" 30 per-inflight ;;
        t2) measure t2 "$tg" 1000 0 13 30 - stream=100,interval=100 ;;
        t3) measure t3 "$tg" 64 0 "$SECS" 5 ;;
        *) die "unknown scenario $sc" ;;
        esac
    done
    [ "$sc" = 1 ] && case " ${ONLY:-llmuxd-w2} " in *" llmuxd-w2 "*)
        measure 1 llmuxd-w2 64 0 "$SECS" 5 ;;
    esac
done

# --- the report --------------------------------------------------------------------------------

kv() { awk -F= -v k="$1" '$1 == k { v = $2 } END { print v }' "$T/kv"; }

# check LABEL A OP B — one target line: A OP B with both figures shown.
check() {
    ck_ok=$(awk -v a="$2" -v b="$4" -v op="$3" 'BEGIN {
        if (a == "" || a == "-" || b == "" || b == "-") { print "n/a"; exit }
        ok = op == "<=" ? a + 0 <= b + 0 : op == ">=" ? a + 0 >= b + 0 : a + 0 == b + 0
        print ok ? "met" : "MISSED" }')
    printf -- '- %s: %s %s %s — **%s**\n' "$1" "$2" "$3" "$4" "$ck_ok"
}

targets_md() {
    check "scenario 1, llmuxd CPU-s per 10k requests ≤ nginx's" "$(kv 1.llmuxd.cpu)" "<=" \
        "$(kv 1.nginx.cpu)"
    ad=$(awk -v a="$(kv 1.llmuxd.p99)" -v b="$(kv 1.direct.p99)" 'BEGIN { printf "%.2f", a - b }')
    check "scenario 1 (saturated), llmuxd p99 minus direct p99 (ms) ≤ 0.1" "$ad" "<=" 0.1
    ad=$(awk -v a="$(kv 1b.llmuxd.p99)" -v b="$(kv 1b.direct.p99)" 'BEGIN { printf "%.2f", a - b }')
    check "scenario 1b (1 connection), llmuxd p99 minus direct p99 (ms) ≤ 0.1" "$ad" "<=" 0.1
    check "scenario 3, llmuxd errors at $S3_CONNS in flight" "$(kv 3.llmuxd.errors)" "==" 0
    check "scenario 3, llmuxd peak RSS (MB) ≤ 100" "$(kv 3.llmuxd.hwm)" "<=" 100
    check "scenario 4, llmuxd KB per idle connection ≤ 2" \
        "$(kv 4.llmuxd.mem | awk '{ print $1 }')" "<=" 2
    half() { awk -v a="$1" -v f="$2" 'BEGIN { if (a == "") print ""; else printf "%.1f", a * f }'; }
    check "scenario 1, llmuxd CPU-s per 10k ≤ 1.5 × nginx's" "$(kv 1.llmuxd.cpu)" "<=" \
        "$(half "$(kv 1.nginx.cpu)" 1.5)"
    check "scenario 2, llmuxd req/s ≥ 0.9 × nginx's" "$(kv 2.llmuxd.rps)" ">=" \
        "$(half "$(kv 2.nginx.rps)" 0.9)"
    check "scenario 3, llmuxd p99 (ms) ≤ nginx's" "$(kv 3.llmuxd.p99)" "<=" "$(kv 3.nginx.p99)"
    check "scenario t1, llmuxd-h2 errors at $T1_CONNS in flight" "$(kv t1.llmuxd-h2.errors)" "==" 0
    check "scenario t1, llmuxd-h2 peak RSS (MB) ≤ 100" "$(kv t1.llmuxd-h2.hwm)" "<=" 100
    check "scenario t1, llmuxd-h2 peak RSS (MB) ≤ 0.5 × nginx's" "$(kv t1.llmuxd-h2.hwm)" "<=" \
        "$(half "$(kv t1.nginx.hwm)" 0.5)"
    check "scenario t1, llmuxd-h2 p99 (ms) ≤ 1100" "$(kv t1.llmuxd-h2.p99)" "<=" 1100
    check "scenario t1, llmuxd-h1 peak RSS (MB) ≤ nginx's" "$(kv t1.llmuxd-h1.hwm)" "<=" \
        "$(kv t1.nginx.hwm)"
}

table_md() {
    printf '| # | target | conns | req/s | p50 ms | p99 ms | errors | CPU-s/10k req |'
    echo ' peak RSS MB | memory | upstream conns |'
    echo "|---|---|--:|--:|--:|--:|--:|--:|--:|---|--:|"
    cat "$T/rows"
}

CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null | head -1)" ] && REV="$REV+changes"
NGV=$([ -n "$NGINX" ] && "$NGINX" -v 2>&1 | sed 's/.*version: //')
MEMGB=$(awk '/^MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)
{
    echo "# llmux bench — $DAY, $HOST"
    echo
    echo "- machine: \`$HOST\`, $(nproc) CPUs (nproc), $CPU, ${MEMGB} GB RAM, Linux $(uname -r)"
    echo "- llmuxd $REV (workers 1 unless \`-w2\`, log.access off), mock_upstream (C, libev),"
    echo "  ${NGV:-no nginx} (1 worker, upstream keepalive 256), wrk -t1, open files limit $NOFILE"
    echo "- every row: a fresh mock and server; wrk POSTs a ${w_body_bytes:-300}-byte" \
        "chat body to /v1/chat/completions"
    echo "  for ${SECS} s (1b: $(((SECS + 1) / 2)) s); CPU = utime+stime of the server from /proc" \
        "(nginx: master + worker);"
    echo "  peak RSS = VmHWM (nginx: the worker); memory = RSS growth / connections"
    echo "- scenarios: 1 = delay 0, 64 conns; 1b = delay 0, 1 conn (unloaded latency);"
    echo "  2 = delay 50 ms, 1000 conns; 3 = delay 1000 ms, $S3_CONNS conns;" \
        "4 = $S4_CONNS idle keep-alive conns;"
    echo "  t1–t3: the upstream is nghttpx (TLS, HTTP/2 or HTTP/1.1 by ALPN, 1 worker, 100"
    echo "  streams per connection) in front of the mock; llmuxd-h1 = \`http: 1.1\`,"
    echo "  llmuxd-h2 = \`http: 2\`,"
    echo "  nginx = \`proxy_pass https://\` with keepalive; t1 = delay 1000 ms, $T1_CONNS conns;"
    echo "  t2 = 1000 streams of 100 chunks every 100 ms (10 s each), one per connection, 13 s;"
    echo "  t3 = delay 0, 64 conns; upstream conns = connections nghttpx saw from the target"
    echo
    table_md
    echo
    echo "Targets:"
    echo
    targets_md
    case " $SCENARIOS " in *" 3 "* | *" 4 "*) ;; *) S3_WANT=$S3_CONNS S4_WANT=$S4_CONNS ;; esac
    if [ "$S3_CONNS" != "$S3_WANT" ] || [ "$S4_CONNS" != "$S4_WANT" ]; then
        echo
        echo "Scenarios 3 and 4 ran at $S3_CONNS and $S4_CONNS connections instead of" \
            "$S3_WANT and $S4_WANT:"
        echo "the open files limit here is $NOFILE and cannot be raised (no CAP_SYS_RESOURCE);"
        echo "a proxy holds two descriptors per in-flight request."
    fi
    if [ -s "$T/perf.top" ]; then
        echo
        echo "perf (llmuxd, scenario 1, self time: by library, then the top 30 symbols):"
        echo
        echo '```'
        cat "$T/perf.top"
        echo '```'
    fi
} >"$T/report.md"
mkdir -p "$(dirname "$OUT")"
cp "$T/report.md" "$OUT"

# The README keeps everything outside its markers, such as other sections.
README=$HERE/README.md
if [ $FULL = 1 ] && [ -z "${BENCH_OUT:-}" ] &&
    grep -q '<!-- bench:latest:begin -->' "$README" 2>/dev/null; then
    awk -v rep="$T/report.md" -v name="results/$DAY-$HOST.md" '
        /<!-- bench:latest:begin -->/ {
            print; print ""; print "From [" name "](" name "):"; print ""
            while ((getline l < rep) > 0) if (l !~ /^# /) print l
            skip = 1; next
        }
        /<!-- bench:latest:end -->/ { skip = 0 }
        !skip' "$README" >"$T/README.md" && cat "$T/README.md" >"$README"
fi

cat "$T/report.md"
log "results in $OUT ($(($(date +%s) - START)) s)"
