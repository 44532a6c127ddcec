#!/usr/bin/env bash
# Start a headless baresip on 127.0.0.1:PORT (SIP over UDP and TCP) with
# ctrl_tcp on 127.0.0.1:CTRLPORT, in the background, and wait until it is
# ready.
#
#   interop/baresip/run.sh PORT CTRLPORT WORKDIR [options]
#
# Options:
#   --auto-answer        answer incoming calls at once with 200 (answermode=auto);
#                        default: manual (send `accept` through ctrl_tcp)
#   --user NAME          user part of the account (default: baresip)
#   --registrar URI      REGISTER to URI (e.g. sip:127.0.0.1:5060) and send
#                        every request through it (outbound proxy); the AoR
#                        becomes sip:USER@DOMAIN. Default: no registration,
#                        the AoR is sip:USER@127.0.0.1:PORT
#   --domain D           with --registrar: the AoR's domain (default example.test)
#   --password PW        with --registrar: digest password (auth_pass)
#   --regint S           with --registrar: registration interval (default 600)
#   --freq HZ            tone of the ausine source, 10..20000 (default 440)
#   --codecs LIST        account's audio_codecs, e.g. PCMA/8000/1,PCMU/8000/1
#                        (default: PCMU then PCMA, both offered)
#   --rtp-ports A-B      local RTP port range (default: baresip's own choice)
#   --record             load sndfile.so: the audio sent and received in each
#                        call is saved as WAV in WORKDIR/rec/ (dump-*-enc.wav
#                        is what was sent, dump-*-dec.wav what was received)
#   --mediaenc MODE      load srtp.so and set the account's mediaenc: srtp
#                        (best effort: RTP/AVP with a=crypto, plain accepted),
#                        srtp-mand (RTP/SAVP, SRTP required), srtp-mandf
#                        (RTP/SAVPF); default: no mediaenc (plain RTP/AVP)
#   --srtp-module        load srtp.so without a mediaenc on the account
#   --address IP         SIP and media on IP instead of 127.0.0.1 (ctrl_tcp
#                        stays on 127.0.0.1), e.g. inside a network namespace
#   --foreground         prepare WORKDIR, then exec baresip in place (this
#                        script's pid becomes baresip's); for a caller that
#                        spawns it as its own child; wait with ready.sh WORKDIR
#
# Prints baresip's pid on stdout and exits 0 once it is ready; exits 1 (with
# the reason and the log's tail on stderr) if it died or was not ready in
# time (BS_START_TIMEOUT seconds, default 10). Files in WORKDIR:
#   config, accounts   rendered from config.template / accounts.template
#   uuid               made by baresip (uuid.so)
#   baresip.pid        pid of baresip (also its process group id)
#   baresip.log        its stdout/stderr (with -s: every SIP message)
#   baresip.env        BS_PID BS_PORT BS_CTRL BS_AOR BS_URI (source it)
#   rec/               with --record
# Stop it with interop/baresip/stop.sh WORKDIR. Talk to it with
# interop/baresip/ctrl.py CTRLPORT COMMAND [PARAMS] (see README.md).
set -euo pipefail

die() { echo "run.sh: $*" >&2; exit 1; }
usage() { echo "usage: $0 PORT CTRLPORT WORKDIR [--auto-answer] [--user NAME] [--registrar URI [--domain D] [--password PW] [--regint S]] [--freq HZ] [--codecs LIST] [--rtp-ports A-B] [--record] [--mediaenc srtp|srtp-mand|srtp-mandf] [--srtp-module] [--address IP] [--foreground]" >&2; exit 2; }

[ $# -ge 3 ] || usage
PORT=$1 CTRL=$2 WD=$3
shift 3
for p in "$PORT" "$CTRL"; do
    case $p in ''|*[!0-9]*) echo "run.sh: bad port '$p'" >&2; exit 2;; esac
    if [ "$p" -lt 1 ] || [ "$p" -gt 65534 ]; then echo "run.sh: bad port '$p'" >&2; exit 2; fi
done
[ "$PORT" != "$CTRL" ] || { echo "run.sh: PORT and CTRLPORT must differ" >&2; exit 2; }

ANSWERMODE=manual
USER_=baresip
REGISTRAR=
DOMAIN=example.test
PASSWORD=
REGINT=600
FREQ=440
CODECS=
RTP_PORTS=
RECORD=
MEDIAENC=
SRTP_MODULE=
ADDRESS=127.0.0.1
FOREGROUND=${BS_EXEC:-}
while [ $# -gt 0 ]; do
    case $1 in
        --auto-answer) ANSWERMODE=auto; shift;;
        --user) [ $# -ge 2 ] || usage; USER_=$2; shift 2;;
        --registrar) [ $# -ge 2 ] || usage; REGISTRAR=$2; shift 2;;
        --domain) [ $# -ge 2 ] || usage; DOMAIN=$2; shift 2;;
        --password) [ $# -ge 2 ] || usage; PASSWORD=$2; shift 2;;
        --regint) [ $# -ge 2 ] || usage; REGINT=$2; shift 2;;
        --freq) [ $# -ge 2 ] || usage; FREQ=$2; shift 2;;
        --codecs) [ $# -ge 2 ] || usage; CODECS=$2; shift 2;;
        --rtp-ports) [ $# -ge 2 ] || usage; RTP_PORTS=$2; shift 2;;
        --record) RECORD=1; shift;;
        --mediaenc) [ $# -ge 2 ] || usage; MEDIAENC=$2; SRTP_MODULE=1; shift 2;;
        --srtp-module) SRTP_MODULE=1; shift;;
        --address) [ $# -ge 2 ] || usage; ADDRESS=$2; shift 2;;
        --foreground) FOREGROUND=1; shift;;
        *) echo "run.sh: unknown option '$1'" >&2; usage;;
    esac
done
case $USER_ in ''|*[!A-Za-z0-9._~-]*) echo "run.sh: bad user '$USER_'" >&2; exit 2;; esac
case $DOMAIN in ''|*[!A-Za-z0-9.-]*) echo "run.sh: bad domain '$DOMAIN'" >&2; exit 2;; esac
case $FREQ in ''|*[!0-9]*) echo "run.sh: bad --freq '$FREQ'" >&2; exit 2;; esac
if [ "$FREQ" -lt 10 ] || [ "$FREQ" -gt 20000 ]; then echo "run.sh: --freq must be 10..20000 (ausine)" >&2; exit 2; fi
case $REGINT in ''|*[!0-9]*) echo "run.sh: bad --regint '$REGINT'" >&2; exit 2;; esac
case $CODECS in *[!A-Za-z0-9/,._-]*) echo "run.sh: bad --codecs '$CODECS'" >&2; exit 2;; esac
case $RTP_PORTS in ''|[0-9]*-[0-9]*) ;; *) echo "run.sh: bad --rtp-ports '$RTP_PORTS' (want A-B)" >&2; exit 2;; esac
case $MEDIAENC in ''|srtp|srtp-mand|srtp-mandf) ;; *) echo "run.sh: bad --mediaenc '$MEDIAENC' (srtp, srtp-mand or srtp-mandf)" >&2; exit 2;; esac
case $ADDRESS in ''|*[!0-9.]*) echo "run.sh: bad --address '$ADDRESS' (an IPv4 address)" >&2; exit 2;; esac
case $REGISTRAR in ''|sip:*) ;; *) echo "run.sh: --registrar wants a sip: URI" >&2; exit 2;; esac
case $REGISTRAR$PASSWORD in *[\"\;\<\>[:space:]]*) echo "run.sh: no quotes, ';', '<', '>' or spaces in --registrar/--password" >&2; exit 2;; esac

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
command -v baresip >/dev/null || die "baresip not installed (run interop/install.sh as root)"
for f in config.template accounts.template; do [ -r "$HERE/$f" ] || die "no $HERE/$f"; done

mkdir -p "$WD"
WORKDIR=$(cd "$WD" && pwd)
case $WORKDIR in *[\"\\[:space:]]*) die "WORKDIR must not contain quotes, backslashes or spaces: $WORKDIR";; esac
PIDFILE=$WORKDIR/baresip.pid
LOG=$WORKDIR/baresip.log

alive() {   # a zombie is not alive (PID 1 here does not reap orphans)
    kill -0 "$1" 2>/dev/null && [ "$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]
}
if [ -s "$PIDFILE" ]; then
    old=$(cat "$PIDFILE")
    if alive "$old"; then die "already running with pid $old (stop.sh $WORKDIR first)"; fi
    rm -f "$PIDFILE"
fi

# ---- config
DEVICE=siproam-$PORT
sed -e "s|@SIP_PORT@|$PORT|g" -e "s|@CTRL_PORT@|$CTRL|g" \
    -e "s|@FREQ@|$FREQ|g" -e "s|@DEVICE@|$DEVICE|g" -e "s|@ADDRESS@|$ADDRESS|g" \
    "$HERE/config.template" > "$WORKDIR/config.tmp"
{
    [ -z "$RTP_PORTS" ] || printf 'rtp_ports\t\t%s\n' "$RTP_PORTS"
    if [ -n "$RECORD" ]; then
        mkdir -p "$WORKDIR/rec"
        printf 'module\t\t\tsndfile.so\n'
        printf 'snd_path\t\t%s\n' "$WORKDIR/rec"
    fi
    [ -z "$SRTP_MODULE" ] || printf 'module\t\t\tsrtp.so\n'
} >> "$WORKDIR/config.tmp"
mv "$WORKDIR/config.tmp" "$WORKDIR/config"

# ---- account
if [ -n "$REGISTRAR" ]; then
    AOR="sip:$USER_@$DOMAIN"
    PARAMS=";regint=$REGINT"
    [ -z "$PASSWORD" ] || PARAMS="$PARAMS;auth_user=$USER_;auth_pass=$PASSWORD"
    PARAMS="$PARAMS;outbound=\"$REGISTRAR\""
    URI="sip:$USER_@$ADDRESS:$PORT"
else
    AOR="sip:$USER_@$ADDRESS:$PORT"
    PARAMS=";regint=0"
    URI=$AOR
fi
PARAMS="$PARAMS;answermode=$ANSWERMODE"
[ -z "$CODECS" ] || PARAMS="$PARAMS;audio_codecs=$CODECS"
[ -z "$MEDIAENC" ] || PARAMS="$PARAMS;mediaenc=$MEDIAENC"
# awk, not sed: the values may hold characters special to sed
awk -v aor="$AOR" -v params="$PARAMS" '{ gsub(/@AOR@/, aor); gsub(/@PARAMS@/, params); print }' \
    "$HERE/accounts.template" > "$WORKDIR/accounts.tmp"
mv "$WORKDIR/accounts.tmp" "$WORKDIR/accounts"

write_env() {
    cat > "$WORKDIR/baresip.env" <<ENV
BS_PID=$1
BS_PORT=$PORT
BS_CTRL=$CTRL
BS_AOR=$AOR
BS_URI=$URI
ENV
}

# A log of an earlier run must not make ready.sh believe this one is ready.
rm -f "$LOG"

# -f: config dir; -s: SIP trace into the log. No -d (daemon): we keep the pid.
CMD=(baresip -f "$WORKDIR" -s)

if [ -n "$FOREGROUND" ]; then
    echo "$$" > "$PIDFILE"
    write_env "$$"
    exec "${CMD[@]}" </dev/null >"$LOG" 2>&1
fi

# setsid: its own process group (pgid = pid). Its output goes to the log
# only, never to our stdout/stderr (a caller reading run.sh's output to the
# end must not wait for baresip).
setsid "${CMD[@]}" </dev/null >"$LOG" 2>&1 &
PID=$!
echo "$PID" > "$PIDFILE"
write_env "$PID"

if ! "$HERE/ready.sh" "$WORKDIR" "${BS_START_TIMEOUT:-10}"; then
    "$HERE/stop.sh" "$WORKDIR" >&2 || true
    exit 1
fi
echo "$PID"
