#!/usr/bin/env bash
# Self-test of the interop setup, end to end, on 127.0.0.1 only:
#   start Kamailio (kamailio/run.sh) on a free high port,
#   OPTIONS ping (SIPp, UDP) -> 200,
#   REGISTER alice with digest over UDP and over TCP (SIPp register_auth.xml),
#   REGISTER bob with a wrong password -> must fail, no binding,
#   ul.lookup (kamailio/bindings.sh) lists exactly alice's two contacts,
#   stop Kamailio (kamailio/stop.sh).
# Exits 0 if all checks pass, 1 otherwise (saying why), 2 if a tool is missing.
# Every wait is bounded; the whole run takes a few seconds.
# KEEP=1 keeps the work directory (logs, SIPp traces) for a look afterwards.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KAM=$HERE/kamailio
SCEN=$HERE/sipp
SIPP_TIMEOUT=15      # SIPp's own global timeout, seconds
HARD_TIMEOUT=30      # kill SIPp after this, seconds

for t in kamailio kamcmd sipp ss timeout setsid; do
    command -v "$t" >/dev/null || { echo "check.sh: '$t' not found; run interop/install.sh as root" >&2; exit 2; }
done

WORKDIR=$(mktemp -d /tmp/siproam-interop.XXXXXX)
cleanup() {
    "$KAM/stop.sh" "$WORKDIR" >/dev/null 2>&1
    if [ "${KEEP:-}" = 1 ]; then echo "check.sh: kept $WORKDIR"; else rm -rf -- "$WORKDIR"; fi
}
trap cleanup EXIT

passed=0
failed=0
ok()   { passed=$((passed + 1)); echo "ok   - $*"; }
fail() { failed=$((failed + 1)); echo "FAIL - $*"; }
summary() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}
show_log() {
    echo "--- $1 (last ${2:-20} lines)"
    tail -n "${2:-20}" "$1" 2>/dev/null | awk '{ print "    " $0 }'
}

# A port with nothing bound on it, UDP or TCP, on any address.
port_in_use() { [ -n "$(ss -Hlnut "sport = :$1" 2>/dev/null)" ]; }
free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 40000))
        port_in_use "$p" || { echo "$p"; return 0; }
    done
    return 1
}

# sipp SCENARIO NAME ARGS... : run one SIPp call in WORKDIR; output in WORKDIR/NAME.out
sipp_run() {
    local scen=$1 name=$2; shift 2
    (cd "$WORKDIR" && timeout -k 2 "$HARD_TIMEOUT" sipp -sf "$SCEN/$scen" -m 1 -nostdin \
        -timeout "${SIPP_TIMEOUT}s" -timeout_error -trace_err -trace_msg \
        -message_file "$WORKDIR/$name.msg.log" -error_file "$WORKDIR/$name.err.log" \
        -i 127.0.0.1 "$@" >"$WORKDIR/$name.out" 2>&1)
}
sipp_why() {
    show_log "$WORKDIR/$1.out" 8
    show_log "$WORKDIR/$1.err.log" 20
}

# ---- start Kamailio (retry on another port if the one picked was taken meanwhile)
PORT=
for _ in 1 2 3; do
    p=$(free_port) || { fail "no free port found"; summary; exit 1; }
    if "$KAM/run.sh" "$p" "$WORKDIR" >"$WORKDIR/run.out" 2>&1; then PORT=$p; break; fi
    if ! grep -q 'Address already in use' "$WORKDIR/kamailio.log" 2>/dev/null; then break; fi
done
if [ -z "$PORT" ]; then
    fail "kamailio did not start"
    show_log "$WORKDIR/run.out" 30
    summary; exit 1
fi
ok "$(kamcmd -s "$(sed -n 's/^KAM_CTL=//p' "$WORKDIR/kamailio.env")" core.version 2>/dev/null | tr -d '\n') pid $(cat "$WORKDIR/kamailio.pid") on udp+tcp 127.0.0.1:$PORT"

# ---- OPTIONS ping
P0=$(free_port)
if sipp_run options.xml options -p "$P0" -t u1 "127.0.0.1:$PORT"; then
    ok "OPTIONS over UDP answered 200"
else
    fail "OPTIONS over UDP: SIPp exit $?"; sipp_why options
fi

# ---- REGISTER alice over UDP and TCP
PU=$(free_port)
if sipp_run register_auth.xml reg_udp -au alice -ap alicepw -s alice -p "$PU" -t u1 "127.0.0.1:$PORT"; then
    ok "REGISTER alice over UDP: 401 challenge, then 200"
else
    fail "REGISTER alice over UDP: SIPp exit $?"; sipp_why reg_udp
fi
PT=$(free_port)
while [ "$PT" = "$PU" ]; do PT=$(free_port); done
if sipp_run register_auth.xml reg_tcp -au alice -ap alicepw -s alice -p "$PT" -t t1 "127.0.0.1:$PORT"; then
    ok "REGISTER alice over TCP: 401 challenge, then 200"
else
    fail "REGISTER alice over TCP: SIPp exit $?"; sipp_why reg_tcp
fi

# ---- wrong password: must not register
PB=$(free_port)
if sipp_run register_auth.xml reg_bad -au bob -ap wrong -s bob -p "$PB" -t u1 "127.0.0.1:$PORT"; then
    fail "REGISTER bob with a wrong password succeeded"
else
    ok "REGISTER bob with a wrong password refused (SIPp exit $?)"
fi

# ---- the location table
if got=$("$KAM/bindings.sh" "$WORKDIR" alice@example.test Address,Socket 2>"$WORKDIR/bindings.err"); then
    want=$(printf 'sip:alice@127.0.0.1:%s;transport=TCP\ttcp:127.0.0.1:%s\nsip:alice@127.0.0.1:%s;transport=UDP\tudp:127.0.0.1:%s\n' "$PT" "$PORT" "$PU" "$PORT" | LC_ALL=C sort)
    if [ "$(printf '%s\n' "$got" | LC_ALL=C sort)" = "$want" ]; then
        ok "ul.lookup alice@example.test: the UDP and the TCP contact, on the right sockets"
    else
        fail "ul.lookup alice@example.test: want"
        printf '%s\n' "$want" | sed 's/^/    /'
        echo "  got"
        printf '%s\n' "$got" | sed 's/^/    /'
    fi
else
    fail "bindings.sh alice: $(cat "$WORKDIR/bindings.err")"
fi
if got=$("$KAM/bindings.sh" "$WORKDIR" bob 2>"$WORKDIR/bindings.err"); then
    if [ -z "$got" ]; then ok "no binding for bob"; else fail "bob has bindings: $got"; fi
else
    fail "bindings.sh bob: $(cat "$WORKDIR/bindings.err")"
fi

# ---- stop
pid=$(cat "$WORKDIR/kamailio.pid")
if "$KAM/stop.sh" "$WORKDIR"; then
    if port_in_use "$PORT"; then fail "port $PORT still bound after stop.sh"; else ok "kamailio $pid stopped, port $PORT free"; fi
else
    fail "stop.sh failed for pid $pid"
fi

if [ "$failed" -ne 0 ]; then show_log "$WORKDIR/kamailio.log" 30; fi
summary
