#!/usr/bin/env bash
# Stop the baresip started by run.sh in WORKDIR: SIGTERM to its pid (it
# hangs up its calls and, if registered, unregisters), then, after
# BS_STOP_TIMEOUT seconds (default 5), SIGKILL to what is left of it.
# Exits 0 once it is gone (or if it was not running), 1 if it survived.
#   interop/baresip/stop.sh WORKDIR
set -uo pipefail
[ $# -eq 1 ] || { echo "usage: $0 WORKDIR" >&2; exit 2; }
WORKDIR=$1
PIDFILE=$WORKDIR/baresip.pid
TIMEOUT=${BS_STOP_TIMEOUT:-5}

[ -s "$PIDFILE" ] || exit 0
PID=$(cat "$PIDFILE")
case $PID in ''|*[!0-9]*) echo "stop.sh: bad pid file $PIDFILE" >&2; exit 1;; esac

# Live (non-zombie) processes of this baresip: the pid itself and its
# process group (run.sh starts it with setsid: pgid = pid). Zombies do not
# count: PID 1 on these machines does not reap orphans.
members() {
    local f rest pid
    for f in /proc/[0-9]*/stat; do
        rest=$(sed 's/^.*) //' "$f" 2>/dev/null) || continue
        # shellcheck disable=SC2086 # split on purpose: state ppid pgrp ...
        set -- $rest
        [ "${1:-Z}" = Z ] && continue
        pid=${f#/proc/}; pid=${pid%/stat}
        if [ "$pid" = "$PID" ] || [ "${3:-}" = "$PID" ]; then echo "$pid"; fi
    done
}

left=$(members)
if [ -n "$left" ]; then
    kill -TERM "$PID" 2>/dev/null
    deadline=$((SECONDS + TIMEOUT))
    while left=$(members); [ -n "$left" ] && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    if [ -n "$left" ]; then
        echo "stop.sh: baresip $PID still running after ${TIMEOUT}s, SIGKILL to ${left//$'\n'/ }" >&2
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null
        deadline=$((SECONDS + 3))
        while left=$(members); [ -n "$left" ] && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
        if [ -n "$left" ]; then echo "stop.sh: still running after SIGKILL: ${left//$'\n'/ }" >&2; exit 1; fi
    fi
fi
rm -f "$PIDFILE"
exit 0
