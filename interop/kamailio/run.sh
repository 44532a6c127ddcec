#!/usr/bin/env bash
# Start the interop Kamailio on 127.0.0.1:PORT (UDP and TCP) in the background
# and wait until it answers on its control socket.
#
#   interop/kamailio/run.sh PORT WORKDIR
#
# Prints Kamailio's pid on stdout and exits 0 once it is ready; exits 1 (with
# the reason and the log's tail on stderr) if it died or did not answer in
# time. Files in WORKDIR:
#   kamailio.pid   pid of the main process (also its process group id)
#   kamailio.log   its stderr/stdout (-E)
#   kamailio.env   KAM_PID, KAM_PORT, KAM_DOMAIN, KAM_CTL (source it)
#   ctl.sock       binrpc socket: kamcmd -s unix:WORKDIR/ctl.sock ul.dump
#                  (for a WORKDIR over ~90 characters, a link to a socket in
#                  /tmp/kamctl.*, because kamcmd refuses paths over 104 bytes
#                  even through a link: use KAM_CTL from kamailio.env)
#   db/htable      the users (db_text), made from the users file
#   run/           Kamailio's runtime dir (-Y)
# Stop it with interop/kamailio/stop.sh WORKDIR.
#
# Environment (all optional):
#   KAM_USERS          user:password file (default: users.txt beside this script)
#   KAM_DOMAIN         served domain and digest realm (default: example.test)
#   KAM_START_TIMEOUT  seconds to wait for readiness (default: 10)
#   KAM_ARGS           extra kamailio arguments, word-split, e.g.
#                      "-A OUTBOUND_MODE=2 -A FLOW_TIMER=30 -A NO_CALL_AUTH"
#   KAM_CFG            another config file (default: kamailio.cfg beside this script)
#   KAM_EXEC=1         prepare WORKDIR, then exec Kamailio in the foreground
#                      (run.sh's pid becomes Kamailio's); for a caller that
#                      spawns it as its own child; then wait with ready.sh WORKDIR
set -euo pipefail

die() { echo "run.sh: $*" >&2; exit 1; }

[ $# -eq 2 ] || { echo "usage: $0 PORT WORKDIR" >&2; exit 2; }
PORT=$1
case $PORT in ''|*[!0-9]*) echo "run.sh: bad port '$PORT'" >&2; exit 2;; esac
if [ "$PORT" -lt 1 ] || [ "$PORT" -gt 65535 ]; then echo "run.sh: bad port '$PORT'" >&2; exit 2; fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CFG=${KAM_CFG:-$HERE/kamailio.cfg}
USERS=${KAM_USERS:-$HERE/users.txt}
DOMAIN=${KAM_DOMAIN:-example.test}
TIMEOUT=${KAM_START_TIMEOUT:-10}

command -v kamailio >/dev/null || die "kamailio not installed (run interop/install.sh as root)"
command -v kamcmd >/dev/null || die "kamcmd not installed (run interop/install.sh as root)"
[ -r "$CFG" ] || die "no config $CFG"
[ -r "$USERS" ] || die "no users file $USERS"
case $DOMAIN in *[!A-Za-z0-9.-]*|'') die "bad domain '$DOMAIN'";; esac

mkdir -p "$2"
WORKDIR=$(cd "$2" && pwd)
case $WORKDIR in *[\"\\[:space:]]*) die "WORKDIR must not contain quotes, backslashes or spaces: $WORKDIR";; esac
PIDFILE=$WORKDIR/kamailio.pid
LOG=$WORKDIR/kamailio.log

if [ -s "$PIDFILE" ]; then
    old=$(cat "$PIDFILE")
    if kill -0 "$old" 2>/dev/null && [ "$(sed 's/^.*) //' "/proc/$old/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]; then
        die "already running with pid $old (stop.sh $WORKDIR first)"
    fi
    rm -f "$PIDFILE"
fi

mkdir -p "$WORKDIR/run" "$WORKDIR/db"

esc() { local s=${1//\\/\\\\}; s=${s//:/\\:}; printf '%s' "$s"; }

# Users -> db_text table read by the htable module (users=>NAME = password).
# db_text escapes: backslash, colon, newline.
{
    echo 'id(int,auto) key_name(string) key_type(int) value_type(int) key_value(string) expires(int) '
    n=0
    while IFS= read -r line || [ -n "$line" ]; do
        line=${line%$'\r'}
        case $line in ''|'#'*) continue;; esac
        user=${line%%:*}
        pass=${line#*:}
        if [ "$user" = "$line" ] || [ -z "$user" ]; then die "bad line in $USERS: '$line' (want user:password)"; fi
        n=$((n + 1))
        printf '%d:%s:0:0:%s:0\n' "$n" "$(esc "$user")" "$(esc "$pass")"
    done < "$USERS"
} > "$WORKDIR/db/htable.tmp"
mv "$WORKDIR/db/htable.tmp" "$WORKDIR/db/htable"
printf 'id(int,auto) table_name(string) table_version(int) \n1:htable:2\n' > "$WORKDIR/db/version"

# A unix socket path must fit in sun_path (108 bytes): for a long WORKDIR the
# socket lives in a short directory under /tmp, with WORKDIR/ctl.sock linking to it.
CTL=$WORKDIR/ctl.sock
rm -f "$CTL"
if [ -s "$WORKDIR/ctl.dir" ]; then rm -rf -- "$(cat "$WORKDIR/ctl.dir")"; rm -f "$WORKDIR/ctl.dir"; fi
if [ ${#CTL} -gt 100 ]; then
    d=$(mktemp -d /tmp/kamctl.XXXXXX)
    echo "$d" > "$WORKDIR/ctl.dir"
    ln -s "$d/ctl.sock" "$CTL"
    REAL_CTL=$d/ctl.sock
else
    REAL_CTL=$CTL
fi

# The kamailio command line (Kamailio's own output goes to the log only,
# never to our stdout/stderr: a caller reading run.sh's output to the end
# must not wait for Kamailio).
# shellcheck disable=SC2206
CMD=(kamailio -f "$CFG" -DD -E -n 1 -Y "$WORKDIR/run"
    -A "SIP_PORT=$PORT"
    -A "SIP_DOMAIN=\"$DOMAIN\""
    -A "CTL_SOCK=\"unix:$REAL_CTL\""
    -A "USERS_DB=\"text://$WORKDIR/db\""
    ${KAM_ARGS:-})

write_env() {
    cat > "$WORKDIR/kamailio.env" <<ENV
KAM_PID=$1
KAM_PORT=$PORT
KAM_DOMAIN=$DOMAIN
KAM_CTL=unix:$REAL_CTL
ENV
}

if [ "${KAM_EXEC:-}" = 1 ]; then
    # Become Kamailio (same pid), for a caller that wants it as its own
    # child (to reap it); wait for it with ready.sh WORKDIR.
    echo "$$" > "$PIDFILE"
    write_env "$$"
    exec "${CMD[@]}" </dev/null >"$LOG" 2>&1
fi

# setsid: its own process group (pgid = pid), so stop.sh can end it and its
# children together.
setsid "${CMD[@]}" </dev/null >"$LOG" 2>&1 &
PID=$!
echo "$PID" > "$PIDFILE"
write_env "$PID"

if ! "$HERE/ready.sh" "$WORKDIR" "$TIMEOUT"; then
    "$HERE/stop.sh" "$WORKDIR" >&2 || true
    exit 1
fi
echo "$PID"
