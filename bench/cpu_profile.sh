#!/bin/sh
# cpu_profile.sh: load-independent cost of one proxied request (scenario 1's body, 0-ms mock)
# for llmuxd and nginx — callgrind instructions and heap allocations, syscalls (strace -c) per
# request.
#
# usage: sh bench/cpu_profile.sh [BUILD]   (BUILD holds llmuxd and mock_upstream; default build)
# Environment: PROFILE_TARGETS ("llmuxd nginx"), PROFILE_MEASURES ("ir sys"),
# PROFILE_SECONDS (per measured wrk run, 5), PROFILE_CONNS (8), PROFILE_OUT (the report file,
# default BUILD/bench/profile.md), PROFILE_KEEP=DIR (keep the callgrind files there),
# PROFILE_TLS=1 (the upstream is nghttpx over TLS, llmuxd with `http: 2`, nginx with https
# keep-alive, as bench scenario t3).
# Each measure runs the target alone under its tool; the figures are totals over a wrk run
# divided by the requests wrk saw answered, with a warm-up run outside the count. Under
# valgrind the target is ~50× slower, so these runs are small; the ratios are what matters.
set -u

BUILD=${1:-build}
case $BUILD in /*) ;; *) BUILD=$(pwd)/$BUILD ;; esac
HERE=$(cd "$(dirname "$0")" && pwd)
TARGETS=${PROFILE_TARGETS:-llmuxd nginx}
MEASURES=${PROFILE_MEASURES:-ir sys}
SECS=${PROFILE_SECONDS:-5}
CONNS=${PROFILE_CONNS:-8}
OUT=${PROFILE_OUT:-$BUILD/bench/profile.md}
TLS=${PROFILE_TLS:-0}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
PIDS=""
T=$(mktemp -d /tmp/llmux-profile.XXXXXX) || exit 1

log() { printf 'profile: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

. "$HERE/procs.sh"

start_mock() {
    "$BUILD/mock_upstream" --listen 127.0.0.1:0 --quiet >"$T/mock.out" 2>"$T/mock.err" &
    MOCK_PID=$!
    PIDS="$PIDS $MOCK_PID"
    sm_i=0
    while [ $sm_i -lt 100 ] && ! grep -q '^LISTENING' "$T/mock.out"; do
        sleep 0.05
        sm_i=$((sm_i + 1))
    done
    MOCK_PORT=$(awk '/^LISTENING/ { print $2 }' "$T/mock.out")
    [ -n "$MOCK_PORT" ] || die "mock_upstream did not start"
    UP_PORT=$MOCK_PORT UP_SCHEME=http UP_HTTP=auto
    [ "$TLS" = 1 ] || return 0
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
        -addext subjectAltName=IP:127.0.0.1 -keyout "$T/key.pem" -out "$T/cert.pem" \
        >/dev/null 2>&1 || die "openssl req failed"
    UP_PORT=$(free_port) UP_SCHEME=https UP_HTTP=2
    nghttpx --conf=/dev/null --workers=1 --no-ocsp -f"127.0.0.1,$UP_PORT" \
        -b"127.0.0.1,$MOCK_PORT" --backend-keep-alive-timeout=300s \
        --errorlog-file="$T/ng.err" "$T/key.pem" "$T/cert.pem" 2>>"$T/ng.err" &
    NG_PID=$!
    PIDS="$PIDS $NG_PID"
    wait_port "$UP_PORT" "$NG_PID" || die "nghttpx did not start"
}

llmuxd_config() {
    cat <<EOF
listen: ["127.0.0.1:$SRV_PORT"]
workers: 1
upstreams:
  - name: mock
    provider: openai
    base_url: $UP_SCHEME://127.0.0.1:$UP_PORT/v1
    api_key: sk-bench
    http: "$UP_HTTP"
EOF
    [ "$TLS" = 1 ] && echo "    ca_file: $T/cert.pem"
    cat <<EOF
models:
  - name: m
    retries: 0
    targets: [{upstream: mock, model: mock-gpt}]
log:
  level: warn
  access: false
EOF
}

# start_target TARGET TOOL... — the server under the tool given (valgrind, strace); sets SRV_PID
# (the process to stop) and SRV_PORT.
start_target() {
    st_t=$1
    shift
    SRV_PORT=$(free_port)
    if [ "$st_t" = llmuxd ]; then
        llmuxd_config >"$T/llmux.yaml"
        "$@" "$BUILD/llmuxd" -c "$T/llmux.yaml" >"$T/target.log" 2>&1 &
    else
        mkdir -p "$T/nginx"
        sed -e "s|@PREFIX@|$T/nginx|g" -e "s|@PORT@|$SRV_PORT|g" \
            -e "s|@MOCK_PORT@|$UP_PORT|g" -e "s|@SCHEME@|$UP_SCHEME|g" \
            -e "s|@NOFILE@|4096|g" -e "s|@WORKER_CONNECTIONS@|4096|g" \
            -e 's|^master_process on;|master_process off;|' \
            "$HERE/nginx.conf" >"$T/nginx/nginx.conf"
        "$@" "$NGINX" -p "$T/nginx" -c "$T/nginx/nginx.conf" -e "$T/nginx/error.log" \
            >"$T/target.log" 2>&1 &
    fi
    SRV_PID=$!
    PIDS="$PIDS $SRV_PID"
    wait_port "$SRV_PORT" "$SRV_PID" 60 || die "$st_t did not start: $(tail -5 "$T/target.log")"
}

# wrk_n SECONDS — one wrk run at the target; prints the requests answered.
wrk_n() {
    timeout -k 5 $(($1 + 60)) wrk -t1 -c"$CONNS" -d"$1"s --timeout 30s -s "$HERE/chat.lua" \
        "http://127.0.0.1:$SRV_PORT/v1/chat/completions" -- 0 >"$T/wrk.out" 2>&1
    grep '^RESULT' "$T/wrk.out" | sed 's/.*requests=\([0-9]*\).*/\1/'
}

per_req() { awk -v a="$1" -v n="$2" 'BEGIN { if (n > 0) printf "%.0f", a / n; else print "-" }'; }

# Instructions per request: callgrind counts only while instrumentation is on (the measured run).
measure_ir() {
    start_target "$1" valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$T/cg.$1" --dump-instr=no
    wrk_n 2 >/dev/null
    callgrind_control -i on "$SRV_PID" >/dev/null
    mi_n=$(wrk_n "$SECS")
    # dumped now: nginx under valgrind does not leave epoll_wait for SIGTERM
    callgrind_control -d "$SRV_PID" >/dev/null
    stop_pid "$SRV_PID"
    mi_f=$(ls "$T/cg.$1".* | head -1)
    mv "$mi_f" "$T/cg.$1"
    [ -n "${PROFILE_KEEP:-}" ] && cp "$T/cg.$1" "$PROFILE_KEEP/"
    callgrind_annotate --inclusive=yes "$T/cg.$1" 2>/dev/null |
        awk '/PROGRAM TOTALS/ { f = 1 } f && NF' | head -80 >"$T/annot.$1"
    callgrind_annotate "$T/cg.$1" 2>/dev/null |
        awk '/PROGRAM TOTALS/ { f = 1 } f && NF' | sed -n '3,40p' >"$T/self.$1"
    mi_ir=$(awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }' "$T/annot.$1")
    echo "| $1 | instructions (user) | $(per_req "${mi_ir:-0}" "${mi_n:-0}") | $mi_n |" >>"$T/rows"
    mi_al=$(python3 "$HERE/cg_allocs.py" "$T/cg.$1")
    echo "| $1 | heap allocations | $(per_req "${mi_al:-0}" "${mi_n:-0}") | $mi_n |" >>"$T/rows"
    # per request, so runs of different lengths compare
    for mi_f in annot self; do
        awk -v n="$mi_n" '{ x = $1; gsub(",", "", x); if (x ~ /^[0-9]+$/ && n > 0)
            $1 = sprintf("%8.0f", x / n); print }' "$T/$mi_f.$1" >"$T/$mi_f.tmp"
        mv "$T/$mi_f.tmp" "$T/$mi_f.$1"
    done
}

# Syscalls per request: strace -c over the measured run only (attached after the warm-up).
measure_sys() {
    start_target "$1"
    wrk_n 1 >/dev/null
    strace -c -f -q -o "$T/strace.$1" -p "$SRV_PID" &
    ms_tr=$!
    sleep 1
    ms_n=$(wrk_n "$SECS")
    kill -INT "$ms_tr"
    wait "$ms_tr" 2>/dev/null
    stop_pid "$SRV_PID"
    # rows: % time, seconds, usecs/call, calls, [errors,] syscall
    awk -v n="$ms_n" '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" {
        printf "    %-16s %.2f\n", $NF, $4 / n }' "$T/strace.$1" >>"$T/sys.$1"
    ms_all=$(awk '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" { s += $4 } END { print s + 0 }' \
        "$T/strace.$1")
    ms_pr=$(awk -v a="$ms_all" -v n="${ms_n:-0}" 'BEGIN { if (n > 0) printf "%.2f", a / n }')
    echo "| $1 | syscalls | ${ms_pr:--} | $ms_n |" >>"$T/rows"
}

start_mock
for tg in $TARGETS; do
    for ms in $MEASURES; do
        log "$tg: $ms"
        "measure_$ms" "$tg"
    done
done

mkdir -p "$(dirname "$OUT")"
{
    echo "# llmux per-request profile — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "- llmuxd $(git -C "$HERE/.." rev-parse --short HEAD 2>/dev/null), $CONNS conns," \
        "wrk ${SECS} s per measure, upstream $UP_SCHEME ($UP_HTTP), 0-ms mock, 300-byte body"
    echo
    echo "| target | measure | per request | requests |"
    echo "|---|---|--:|--:|"
    cat "$T/rows"
    for tg in $TARGETS; do
        [ -f "$T/sys.$tg" ] && { echo; echo "$tg syscalls per request:"; echo; \
            cat "$T/sys.$tg"; }
        [ -f "$T/annot.$tg" ] && { echo; echo "$tg callgrind per request, inclusive:"; \
            echo; sed 's/^/    /' "$T/annot.$tg"; echo; \
            echo "$tg callgrind per request, self:"; echo; sed 's/^/    /' "$T/self.$tg"; }
    done
} >"$OUT"
log "report: $OUT"
cat "$T/rows"
