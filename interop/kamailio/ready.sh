#!/usr/bin/env bash
# Wait until the Kamailio of WORKDIR answers on its control socket.
#   interop/kamailio/ready.sh WORKDIR [TIMEOUT_SECONDS]   (default 10)
# Exit 0 when it answers; 1 (reason and log tail on stderr) if it exited or
# did not answer in time. run.sh calls it; use it yourself with KAM_EXEC=1.
set -uo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then echo "usage: $0 WORKDIR [TIMEOUT]" >&2; exit 2; fi
WORKDIR=$1
TIMEOUT=${2:-10}
LOG=$WORKDIR/kamailio.log
# the socket as kamcmd must name it (see run.sh: a long WORKDIR gets a short one)
CTL=$(sed -n 's/^KAM_CTL=unix://p' "$WORKDIR/kamailio.env" 2>/dev/null)
CTL=${CTL:-$WORKDIR/ctl.sock}

alive() {   # a zombie is not alive (PID 1 here does not reap orphans)
    kill -0 "$1" 2>/dev/null && [ "$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]
}

deadline=$((SECONDS + TIMEOUT))
while :; do
    PID=$(cat "$WORKDIR/kamailio.pid" 2>/dev/null || true)
    if [ -n "$PID" ]; then
        if ! alive "$PID"; then
            echo "ready.sh: kamailio (pid $PID) is not running; log $LOG:" >&2
            tail -n 25 "$LOG" >&2 2>/dev/null
            exit 1
        fi
        if [ -S "$CTL" ] && timeout 2 kamcmd -s "unix:$CTL" core.version >/dev/null 2>&1; then
            exit 0
        fi
    fi
    if [ $SECONDS -ge $deadline ]; then
        echo "ready.sh: kamailio${PID:+ (pid $PID)} did not answer on $CTL within ${TIMEOUT}s; log $LOG:" >&2
        tail -n 25 "$LOG" >&2 2>/dev/null
        exit 1
    fi
    sleep 0.1
done
