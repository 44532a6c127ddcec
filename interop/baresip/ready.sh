#!/usr/bin/env bash
# Wait until the baresip of WORKDIR is ready: it logged "baresip is ready."
# and its ctrl_tcp port accepts connections.
#   interop/baresip/ready.sh WORKDIR [TIMEOUT_SECONDS]   (default 10)
# Exit 0 when ready; 1 (reason and log tail on stderr) if it exited or was
# not ready in time. run.sh calls it; call it yourself after
# run.sh --foreground (or BS_EXEC=1).
set -uo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then echo "usage: $0 WORKDIR [TIMEOUT]" >&2; exit 2; fi
WORKDIR=$1
TIMEOUT=${2:-10}
LOG=$WORKDIR/baresip.log

alive() {   # a zombie is not alive (PID 1 here does not reap orphans)
    kill -0 "$1" 2>/dev/null && [ "$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]
}
ctrl_open() {   # something accepts TCP connections on 127.0.0.1:$1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

deadline=$((SECONDS + TIMEOUT))
while :; do
    PID=$(cat "$WORKDIR/baresip.pid" 2>/dev/null || true)
    CTRL=$(sed -n 's/^BS_CTRL=//p' "$WORKDIR/baresip.env" 2>/dev/null)
    if [ -n "$PID" ]; then
        if ! alive "$PID"; then
            echo "ready.sh: baresip (pid $PID) is not running; log $LOG:" >&2
            tail -n 25 "$LOG" >&2 2>/dev/null
            exit 1
        fi
        if grep -q 'baresip is ready' "$LOG" 2>/dev/null && [ -n "$CTRL" ] && ctrl_open "$CTRL"; then
            exit 0
        fi
    fi
    if [ $SECONDS -ge $deadline ]; then
        echo "ready.sh: baresip${PID:+ (pid $PID)} not ready within ${TIMEOUT}s (ctrl_tcp port ${CTRL:-?}); log $LOG:" >&2
        tail -n 25 "$LOG" >&2 2>/dev/null
        exit 1
    fi
    sleep 0.1
done
