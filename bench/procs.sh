# procs.sh: process helpers sourced by bench/run.sh and bench/cpu_profile.sh — every process
# they start is tracked by PID in $PIDS and stopped by PID; $T is their temporary directory,
# removed on exit. The sourcing script defines log() first.

alive() {
    al_st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
    [ -n "$al_st" ] && [ "$al_st" != Z ]
}

untrack() { PIDS=$(printf ' %s ' "$PIDS" | sed "s/ $1 / /g"); }

# SIGTERM, up to 5 s, then SIGKILL; reaps it.
stop_pid() {
    sp_i=0
    kill -TERM "$1" 2>/dev/null
    while [ $sp_i -lt 50 ] && alive "$1"; do sleep 0.1; sp_i=$((sp_i + 1)); done
    if alive "$1"; then
        log "pid $1 ignored SIGTERM for 5 s; killing it"
        kill -KILL "$1" 2>/dev/null
    fi
    wait "$1" 2>/dev/null
    untrack "$1"
}

cleanup() {
    for cl_p in $PIDS; do stop_pid "$cl_p"; done
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0));
print(s.getsockname()[1])'
}

# Waits until 127.0.0.1:$1 accepts, while pid $2 lives; $3 seconds at most (default 10).
wait_port() {
    python3 - "$1" "$2" "${3:-10}" <<'EOF'
import os, socket, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.02)
    try:
        with open("/proc/%d/stat" % pid) as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                sys.exit(1)
    except OSError:
        sys.exit(1)
sys.exit(1)
EOF
}
